"""``evalkit data validate``: every problem of a chat JSONL file as ``FILE:LINE: message``, in one pass.

Reads line by line; memory grows by ~12 bytes per line (a 64-bit id hash and a line number for the
duplicate-id check) plus a histogram of lengths, so a file of a million lines validates in well
under 100 MB.
"""

from __future__ import annotations

import hashlib
import json
from array import array
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import UserError
from ._chat import check_example, preview, system_prompt
from ._io import iter_raw_lines, progress_bar

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
            ids = tok.apply_chat_template(messages, tokenize=True)
            if hasattr(ids, "keys"):
                ids = ids["input_ids"]
            return len(ids)
        return sum(len(tok(m["content"], add_special_tokens=False)["input_ids"]) for m in messages)

    return length, f"tokens ({p.name})"


def validate_file(
    path: str | Path,
    *,
    max_tokens: int | None = None,
    length_fn: LengthFn | None = None,
    unit: str = "whitespace tokens",
    require_assistant: bool = True,
    progress: bool = False,
) -> tuple[list[Problem], FileSummary]:
    """Check every line of one file; return all its problems (in line order) and a summary."""
    spath = str(path)
    length_fn = length_fn or whitespace_length
    problems: list[Problem] = []
    kinds: Counter = Counter()
    id_hashes = array("Q")
    id_lines = array("I")
    hist: Counter = Counter()
    sys_variants: dict[str, list[int]] = {}  # text -> [count, first_line]
    other_variants = 0
    without_system = 0
    n_lines = n_examples = n_valid = 0

    def add(line: int, kind: str, message: str) -> None:
        problems.append(Problem(spath, line, kind, message))
        kinds[kind] += 1

    bar = progress_bar(None, f"validate {Path(spath).name}", progress)
    for lineno, raw in iter_raw_lines(path):
        n_lines = lineno
        bar.update(1)
        if not raw.strip():
            continue
        n_examples += 1
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as e:
            add(lineno, "invalid_json", f"invalid JSON: {e.msg} (column {e.colno})")
            continue
        found = check_example(obj, require_assistant=require_assistant)
        for kind, msg in found:
            add(lineno, kind, msg)
        if isinstance(obj, dict) and isinstance(obj.get("id"), (str, int)) and not isinstance(obj.get("id"), bool):
            key = hashlib.blake2b(str(obj["id"]).encode("utf-8"), digest_size=8).digest()
            id_hashes.append(int.from_bytes(key, "little"))
            id_lines.append(lineno)
        if found:
            continue
        n_valid += 1
        msgs = obj["messages"]
        n = length_fn(msgs)
        hist[n] += 1
        if max_tokens is not None and n > max_tokens:
            add(lineno, "too_long", f"example is {n} {unit} long, over --max-tokens {max_tokens}")
        sp = system_prompt(msgs)
        if sp is None:
            without_system += 1
        elif sp in sys_variants:
            sys_variants[sp][0] += 1
        elif len(sys_variants) < MAX_SYSTEM_VARIANTS:
            sys_variants[sp] = [1, lineno]
        else:
            other_variants += 1
    bar.close()

    for line, first in _duplicate_lines(id_hashes, id_lines):
        problems.append(Problem(spath, line, "duplicate_id", f"duplicate id (first on line {first})"))
        kinds["duplicate_id"] += 1
    if problems and any(p.kind == "duplicate_id" for p in problems):
        problems.sort(key=lambda p: p.line)
        _name_duplicate_ids(path, problems)

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
    """``(line, first_line)`` for every line whose id hash was seen on an earlier line."""
    if len(hashes) < 2:
        return []
    h = np.frombuffer(hashes, dtype=np.uint64)
    ln = np.frombuffer(lines, dtype=np.uint32)
    order = np.lexsort((ln, h))
    hs, ls = h[order], ln[order]
    same = hs[1:] == hs[:-1]
    if not same.any():
        return []
    out = []
    first = int(ls[0])
    for i in range(1, len(hs)):
        if hs[i] == hs[i - 1]:
            out.append((int(ls[i]), first))
        else:
            first = int(ls[i])
    return out


def _name_duplicate_ids(path: str | Path, problems: list[Problem]) -> None:
    """Put the id itself into duplicate-id messages (a second, targeted read of just those lines)."""
    wanted = {p.line: i for i, p in enumerate(problems) if p.kind == "duplicate_id"}
    if not wanted or len(wanted) > 100_000:
        return
    for lineno, raw in iter_raw_lines(path):
        i = wanted.get(lineno)
        if i is None:
            continue
        try:
            sid = json.loads(raw).get("id")
        except Exception:
            continue
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
