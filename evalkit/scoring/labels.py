"""Human labels for calibrating judge scores: a CSV of ``model,sample_id,value`` (and optionally
``suite``), read strictly (one line, FILE:LINE, for anything wrong). ``evalkit calibrate`` and a
``mean`` gate with ``calibrate:`` read them.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError

MIN_LABELS = 10  # per model: fewer cannot estimate the judge-human covariance the power tuning needs
_COLUMNS = ("model", "sample_id", "value")


@dataclass(frozen=True)
class Label:
    model: str
    sample_id: str
    suite: str | None
    value: float
    line: int


def read_labels(path: str | Path) -> list[Label]:
    """The labels CSV, checked line by line: a bad line raises DataError naming FILE:LINE."""
    p = Path(path)
    if not p.is_file():
        raise DataError("labels file not found", where=p)
    lines: list[tuple[int, str]] = []
    for n, raw in enumerate(p.read_bytes().splitlines(keepends=True), start=1):  # strict UTF-8, no NUL
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError(f"not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1}); save the file as UTF-8", where=p, line=n) from None
        if "\x00" in text:
            raise DataError("a NUL byte: not a text file", where=p, line=n)
        lines.append((n, text.lstrip("\ufeff") if n == 1 else text))  # a spreadsheet's BOM is fine
    header = next(csv.reader(io.StringIO(lines[0][1])), None) if lines else None
    if header is None:
        raise DataError("the labels file is empty (expected a header: model,sample_id,value)", where=p)
    cols = [h.strip() for h in header]
    missing = [c for c in _COLUMNS if c not in cols]
    unknown = [c for c in cols if c not in (*_COLUMNS, "suite")]
    if missing or unknown:
        raise DataError(f"header must name model, sample_id, value (and optionally suite); got {','.join(cols)}", where=p, line=1)
    at = {c: cols.index(c) for c in cols}
    out: list[Label] = []
    seen: dict[tuple[str, str | None, str], int] = {}
    for lineno, text in lines[1:]:
        row = next(csv.reader(io.StringIO(text)), [])
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(cols):
            raise DataError(f"{len(row)} fields, the header has {len(cols)}", where=p, line=lineno)
        cell = row[at["value"]].strip()
        try:
            value = float(cell)
        except ValueError:
            raise DataError(f"value {cell!r} is not a number", where=p, line=lineno) from None
        if not math.isfinite(value):
            raise DataError(f"value {cell!r} is not a finite number", where=p, line=lineno)
        label = Label(row[at["model"]].strip(), row[at["sample_id"]].strip(), row[at["suite"]].strip() if "suite" in at else None, value, lineno)
        key = (label.model, label.suite, label.sample_id)
        if key in seen:
            raise DataError(f"a second label for model '{label.model}', item '{label.sample_id}' (first on line {seen[key]})", where=p, line=lineno)
        seen[key] = lineno
        out.append(label)
    if not out:
        raise DataError("no labels (only a header)", where=p)
    return out
