"""``evalkit data validate``: every problem of a chat JSONL file as ``FILE:LINE: message``, in one pass.

Reads line by line; memory grows by ~12 bytes per line (a 64-bit id hash and a line number for the
duplicate-id check) plus a histogram of lengths, so a file of a million lines validates in well
under 100 MB.
"""

from __future__ import annotations

import bisect
import json
from array import array
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import UserError
from . import _fastchat
from ._chat import check_example, preview, system_prompt
from ._io import line_problem, progress_bar

MAX_SYSTEM_VARIANTS = 1000  # distinct system prompts tracked per file (the rest are counted as "other")


@dataclass(frozen=True)
class Problem:
    path: str
    line: int
    kind: str
    message: str

    def __str__(self) -> str:
        if self.line <= 0:  # a whole-file problem
            return f"{self.path}: {self.message}"
        return f"{self.path}:{self.line}: {self.message}"


@dataclass(frozen=True)
class SystemVariant:
    text: str
    count: int
    first_line: int


@dataclass(frozen=True)
class LengthStats:
    unit: str
    count: int
    min: int
    mean: float
    p50: int
    p90: int
    p99: int
    max: int

    @staticmethod
    def from_histogram(hist: Counter, unit: str) -> "LengthStats":
        n = sum(hist.values())
        if n == 0:
            return LengthStats(unit, 0, 0, 0.0, 0, 0, 0, 0)
        keys = sorted(hist)
        total = sum(k * c for k, c in hist.items())

        def pct(q: float) -> int:
            target = q * n
            seen = 0
            for k in keys:
                seen += hist[k]
                if seen >= target:
                    return k
            return keys[-1]

        return LengthStats(unit, n, keys[0], total / n, pct(0.5), pct(0.9), pct(0.99), keys[-1])


@dataclass(frozen=True)
class FileSummary:
    path: str
    lines: int
    examples: int
    valid: int
    problems: int
    problems_by_kind: dict[str, int]
    lengths: LengthStats
    system_variants: tuple[SystemVariant, ...]
    without_system: int
    other_system_variants: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "lines": self.lines,
            "examples": self.examples,
            "valid": self.valid,
            "problems": self.problems,
            "problems_by_kind": dict(self.problems_by_kind),
            "lengths": self.lengths.__dict__,
            "system_prompts": {
                "variants": [v.__dict__ for v in self.system_variants],
                "without_system": self.without_system,
                "other_variants": self.other_system_variants,
            },
        }

    def render(self) -> str:
        L = self.lengths
        lines = [
            f"{self.path}: {self.lines} lines, {self.examples} examples, {self.valid} valid, {self.problems} problems",
        ]
        if self.problems_by_kind:
            kinds = ", ".join(f"{k} {v}" for k, v in sorted(self.problems_by_kind.items(), key=lambda kv: -kv[1]))
            lines.append(f"  problems by kind: {kinds}")
        if L.count:
            lines.append(
                f"  length ({L.unit}): min {L.min}  p50 {L.p50}  p90 {L.p90}  p99 {L.p99}  max {L.max}  mean {L.mean:.1f}"
            )
        n_var = len(self.system_variants) + self.other_system_variants
        lines.append(f"  system prompts: {n_var} variant(s), {self.without_system} example(s) without one")
        for v in self.system_variants[:5]:
            lines.append(f"    {v.count:>8}x  (first line {v.first_line}) {preview(v.text, 70)!r}")
        if len(self.system_variants) > 5:
            lines.append(f"    ... {len(self.system_variants) - 5 + self.other_system_variants} more")
        return "\n".join(lines)


@dataclass(frozen=True)
class ValidationResult:
    problems: tuple[Problem, ...]
    summaries: tuple[FileSummary, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "problems": [{"path": p.path, "line": p.line, "kind": p.kind, "message": p.message} for p in self.problems],
            "files": [s.as_dict() for s in self.summaries],
        }


LengthFn = Callable[[list[dict]], int]


def whitespace_length(messages: list[dict]) -> int:
    return sum(len(m["content"].split()) for m in messages)


def load_tokenizer_length(path: str | Path) -> tuple[LengthFn, str]:
    """A length function counting tokens of the rendered chat (chat template when the tokenizer has one)."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"--tokenizer: not found: {p}")
    try:
        from transformers import AutoTokenizer
    except ImportError as e:  # pragma: no cover - depends on the install
        from ..errors import missing_extra

        raise missing_extra("--tokenizer", "hf", e) from None
    try:
        tok = AutoTokenizer.from_pretrained(str(p))
    except Exception as e:  # transformers raises many kinds for a bad folder
        raise UserError(f"--tokenizer: cannot load a tokenizer from {p}: {e}") from None
    has_template = bool(getattr(tok, "chat_template", None))

    def length(messages: list[dict]) -> int:
        if has_template:
            ids: Any = tok.apply_chat_template(messages, tokenize=True)
            if hasattr(ids, "keys"):
                ids = ids["input_ids"]
            return len(ids)
        return sum(len(tok(m["content"], add_special_tokens=False)["input_ids"]) for m in messages)

    return length, f"tokens ({p.name})"


_BLOCK_BYTES = 1 << 19  # read ~512 KB of lines at a time: token counts are computed a block at a time


class _FileAcc:
    """What validating one file accumulates: problems, id hashes, the length histogram, system prompts."""

    def __init__(self, path: str, length_fn: LengthFn, unit: str, max_tokens: int | None, require_assistant: bool):
        self.path, self.length_fn, self.unit = path, length_fn, unit
        self.max_tokens, self.require_assistant = max_tokens, require_assistant
        self.problems: list[Problem] = []
        self.kinds: Counter = Counter()
        self.id_hashes = array("Q")
        self.id_lines = array("I")
        self.hist: Counter = Counter()
        self.sys_variants: dict[str, list[int]] = {}  # text -> [count, first_line]
        self.other_variants = self.without_system = 0
        self.n_examples = self.n_valid = 0
        self.no_id: set[int] = set()  # lines whose id the fast path already counted

    def add(self, line: int, kind: str, message: str) -> None:
        self.problems.append(Problem(self.path, line, kind, message))
        self.kinds[kind] += 1

    def add_block(self, block: _fastchat.Block) -> None:
        """The fast path's lines of a block, vectorised; its other lines one by one (slow path)."""
        self.id_hashes.extend(block.id_hashes)
        self.id_lines.extend(block.id_lines)
        if block.lines:
            lengths, has_empty = _fastchat.example_lengths(block)
            lines, systems = block.lines, block.systems
            if has_empty.any():  # an empty content: the slow path names it (its id is counted above)
                empty = np.flatnonzero(has_empty).tolist()
                block.slow.extend((lines[i], block.raws[lines[i] - block.first]) for i in empty)
                for i in empty:
                    self.no_id.add(lines[i])
                keep = ~has_empty
                lines = [ln for ln, k in zip(lines, keep) if k]
                systems = [s for s, k in zip(systems, keep) if k]
                lengths = lengths[keep]
            self.n_examples += len(lines)
            self.n_valid += len(lines)
            freq = np.bincount(lengths)
            values = np.flatnonzero(freq)
            self.hist.update(dict(zip(values.tolist(), freq[values].tolist())))
            if self.max_tokens is not None:
                for i in np.flatnonzero(lengths > self.max_tokens).tolist():
                    self.add(lines[i], "too_long", f"example is {int(lengths[i])} {self.unit} long, over --max-tokens {self.max_tokens}")
            for sp, n in Counter(systems).items():
                if sp is None:
                    self.without_system += n
                elif sp in self.sys_variants:
                    self.count_system(sp, self.sys_variants[sp][1], n)
                else:  # a new prompt: its first line in this block (a C-level scan, rare)
                    self.count_system(sp, lines[systems.index(sp)], n)
        for lineno, raw in block.slow:
            self.slow_line(lineno, raw)

    def slow_line(self, lineno: int, raw: bytes) -> None:
        problem = line_problem(raw)
        if problem is not None:
            self.n_examples += 1
            self.add(lineno, "encoding", problem)
            return
        text = raw.decode("utf-8")
        if not text.strip():
            return
        self.n_examples += 1
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            self.add(lineno, "invalid_json", f"invalid JSON: {e.msg} (column {e.colno})")
            return
        found = check_example(obj, require_assistant=self.require_assistant)
        for kind, msg in found:
            self.add(lineno, kind, msg)
        if isinstance(obj, dict) and isinstance(obj.get("id"), (str, int)) and not isinstance(obj.get("id"), bool) and lineno not in self.no_id:
            self.id_hashes.append(_fastchat.id_hash(obj["id"]))
            self.id_lines.append(lineno)
        if not found:
            msgs = obj["messages"]
            self.valid(lineno, self.length_fn(msgs), system_prompt(msgs))

    def valid(self, lineno: int, n: int, sp: str | None) -> None:
        self.n_valid += 1
        self.hist[n] += 1
        if self.max_tokens is not None and n > self.max_tokens:
            self.add(lineno, "too_long", f"example is {n} {self.unit} long, over --max-tokens {self.max_tokens}")
        if sp is None:
            self.without_system += 1
        else:
            self.count_system(sp, lineno, 1)

    def count_system(self, sp: str, first_line: int, n: int) -> None:
        got = self.sys_variants.get(sp)
        if got is not None:
            got[0] += n
            got[1] = min(got[1], first_line)  # blocks take their slow lines after their fast ones
        elif len(self.sys_variants) < MAX_SYSTEM_VARIANTS:
            self.sys_variants[sp] = [n, first_line]
        else:
            self.other_variants += n


def validate_file(
    path: str | Path,
    *,
    max_tokens: int | None = None,
    length_fn: LengthFn | None = None,
    unit: str = "whitespace tokens",
    require_assistant: bool = True,
    progress: bool = False,
) -> tuple[list[Problem], FileSummary]:
    """Check every line of one file; return all its problems (in line order) and a summary.

    Lines are read as bytes in blocks. With the default length (whitespace tokens), well-formed lines
    take the fast path (:mod:`._fastchat`: decoded and checked in C, token counts by numpy for the
    whole block); every other line, and every line when a tokenizer measures length, takes the slow
    path, which names each problem. Both paths report the same problems.
    """
    spath = str(path)
    p = Path(path)
    if not p.is_file():
        raise UserError("file not found", where=p)
    length_fn = length_fn or whitespace_length
    acc = _FileAcc(spath, length_fn, unit, max_tokens, require_assistant)
    read = _fastchat.make_reader(require_assistant) if length_fn is whitespace_length and _fastchat.available() else None

    bar = progress_bar(None, f"validate {p.name}", progress)
    n_lines = 0
    blocks: list[tuple[int, int]] = []  # (first line, byte offset) of each block: duplicate ids are named by re-reading only their blocks
    with p.open("rb") as fh:
        while True:
            blocks.append((n_lines + 1, fh.tell()))
            raws = fh.readlines(_BLOCK_BYTES)
            if not raws:
                break
            if read is not None:
                block = read(raws, n_lines + 1)
            else:
                block = _fastchat.Block(raws, n_lines + 1)
                block.slow.extend(enumerate(raws, n_lines + 1))
            acc.add_block(block)
            n_lines += len(raws)
            bar.update(len(raws))
    bar.close()
    problems, kinds, id_hashes, id_lines, hist = acc.problems, acc.kinds, acc.id_hashes, acc.id_lines, acc.hist
    sys_variants, other_variants, without_system = acc.sys_variants, acc.other_variants, acc.without_system
    n_examples, n_valid = acc.n_examples, acc.n_valid

    for line, first in _duplicate_lines(id_hashes, id_lines):
        problems.append(Problem(spath, line, "duplicate_id", f"duplicate id (first on line {first})"))
        kinds["duplicate_id"] += 1
    if problems and any(p.kind == "duplicate_id" for p in problems):
        problems.sort(key=lambda p: p.line)
        _name_duplicate_ids(path, problems, blocks)
    problems.sort(key=lambda p: p.line)  # stable: a line's own problems keep their order

    variants = tuple(
        SystemVariant(text, c, first) for text, (c, first) in sorted(sys_variants.items(), key=lambda kv: (-kv[1][0], kv[1][1]))
    )
    summary = FileSummary(
        path=spath,
        lines=n_lines,
        examples=n_examples,
        valid=n_valid,
        problems=len(problems),
        problems_by_kind=dict(kinds),
        lengths=LengthStats.from_histogram(hist, unit),
        system_variants=variants,
        without_system=without_system,
        other_system_variants=other_variants,
    )
    return problems, summary


def _duplicate_lines(hashes: array, lines: array) -> list[tuple[int, int]]:
    """``(line, first_line)`` for every line whose id hash was seen on an earlier line.

    Memory stays near one sorted copy of the hashes: the hashes that repeat are found first, and
    only their (few) rows are sorted with their line numbers.
    """
    if len(hashes) < 2:
        return []
    h = np.frombuffer(hashes, dtype=np.uint64)
    ln = np.frombuffer(lines, dtype=np.uint32)
    hs = np.sort(h)
    repeated = hs[1:][hs[1:] == hs[:-1]]
    del hs
    if not len(repeated):
        return []
    repeated = np.unique(repeated)
    step = 1 << 18  # in chunks, so no temporary grows with the file
    parts = []
    for i in range(0, len(h), step):
        chunk = h[i : i + step]
        at = np.searchsorted(repeated, chunk)
        np.minimum(at, len(repeated) - 1, out=at)
        parts.append(np.flatnonzero(repeated[at] == chunk) + i)
    rows = np.concatenate(parts)
    sub_h, sub_l = h[rows], ln[rows]
    order = np.lexsort((sub_l, sub_h))
    sub_h, sub_l = sub_h[order], sub_l[order]
    same = np.zeros(len(sub_h), dtype=bool)
    same[1:] = sub_h[1:] == sub_h[:-1]
    # the index of each row's group start (its first line), carried forward over the group
    group_start = np.where(same, 0, np.arange(len(same)))
    np.maximum.accumulate(group_start, out=group_start)
    dup = np.flatnonzero(same)
    return list(zip(sub_l[dup].tolist(), sub_l[group_start[dup]].tolist()))


def _name_duplicate_ids(path: str | Path, problems: list[Problem], blocks: Sequence[tuple[int, int]]) -> None:
    """Put the id itself into duplicate-id messages, re-reading only the blocks that hold them."""
    wanted = {p.line: i for i, p in enumerate(problems) if p.kind == "duplicate_id"}
    if not wanted or len(wanted) > 100_000:
        return
    firsts = [first for first, _ in blocks]
    by_block: dict[int, list[int]] = {}
    for lineno in wanted:
        by_block.setdefault(bisect.bisect_right(firsts, lineno) - 1, []).append(lineno)
    with Path(path).open("rb") as fh:
        for b, linenos in sorted(by_block.items()):
            first, offset = blocks[b]
            fh.seek(offset)
            # the block's bytes as the first pass read them; its lines found by a numpy newline scan
            size = blocks[b + 1][1] - offset if b + 1 < len(blocks) else -1
            data = fh.read(size)
            ends = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10)
            for lineno in linenos:
                k = lineno - first
                start = int(ends[k - 1]) + 1 if k > 0 else 0
                end = int(ends[k]) if k < len(ends) else len(data)
                try:
                    sid = json.loads(data[start:end]).get("id")
                except Exception:
                    continue
                i = wanted[lineno]
                p = problems[i]
                problems[i] = Problem(p.path, p.line, p.kind, p.message.replace("duplicate id", f"duplicate id {str(sid)!r}"))


def validate_files(
    paths: Sequence[str | Path],
    *,
    max_tokens: int | None = None,
    tokenizer: str | Path | None = None,
    require_assistant: bool = True,
    progress: bool = False,
) -> ValidationResult:
    """Validate several files; ids must be unique within each file."""
    if tokenizer is not None:
        length_fn, unit = load_tokenizer_length(tokenizer)
    else:
        length_fn, unit = whitespace_length, "whitespace tokens"
    problems: list[Problem] = []
    summaries = []
    for p in paths:
        if not Path(p).is_file():
            problems.append(Problem(str(p), 0, "not_found", "file not found"))
            continue
        probs, summary = validate_file(
            p, max_tokens=max_tokens, length_fn=length_fn, unit=unit, require_assistant=require_assistant, progress=progress
        )
        problems.extend(probs)
        summaries.append(summary)
    return ValidationResult(tuple(problems), tuple(summaries))
