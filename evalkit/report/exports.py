"""Exports of a run's items through pandas: CSV, Parquet (pyarrow) and JSONL.

One row per model x suite x sample; every scorer becomes three columns: ``<scorer>.value``,
``<scorer>.passed`` and ``<scorer>.error``. Prompt and reference are included so the file stands
on its own in a notebook or a spreadsheet.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from ..errors import UserError, missing_extra
from ..store import RunItem
from .analysis import prompt_text, scorer_names

FORMATS = ("csv", "parquet", "jsonl")


def items_frame(items: Sequence[RunItem]):
    """A pandas DataFrame of the items (flat columns, scorer columns in a stable order)."""
    import pandas as pd

    names = scorer_names(items)
    rows: list[dict[str, Any]] = []
    for it in items:
        row: dict[str, Any] = {
            "run_id": it.run_id,
            "model": it.model,
            "model_id": it.model_id,
            "suite": it.suite,
            "suite_version": it.suite_version,
            "sample_id": it.sample_id,
            "tags": ",".join(str(t) for t in it.sample.get("tags") or []),
            "prompt": prompt_text(it.sample),
            "reference": it.sample.get("reference"),
            "output": it.output,
            "error": it.error,
        }
        for n in names:
            s = it.scores.get(n)
            row[f"{n}.value"] = s.value if s is not None else None
            row[f"{n}.passed"] = s.passed if s is not None else None
            row[f"{n}.error"] = s.error if s is not None else None
        rows.append(row)
    df = pd.DataFrame(rows)
    for n in names:
        if f"{n}.value" in df:
            df[f"{n}.value"] = df[f"{n}.value"].astype("float64")
        if f"{n}.passed" in df:
            df[f"{n}.passed"] = df[f"{n}.passed"].astype("boolean")
    return df


def format_for(path: Path, fmt: str | None) -> str:
    if fmt:
        fmt = fmt.lower()
    else:
        suffix = path.suffix.lower().lstrip(".")
        fmt = {"csv": "csv", "parquet": "parquet", "pq": "parquet", "jsonl": "jsonl", "ndjson": "jsonl"}.get(suffix, "")
    if fmt not in FORMATS:
        raise UserError(f"unknown export format '{fmt or path.suffix}'; use one of: {', '.join(FORMATS)} (or a file ending in .csv, .parquet, .jsonl)", where=path)
    return fmt


def export_items(items: Sequence[RunItem], path: str | Path, fmt: str | None = None) -> Path:
    """Write the items to ``path`` as CSV, Parquet or JSONL (chosen by ``fmt`` or the suffix)."""
    path = Path(path)
    fmt = format_for(path, fmt)
    df = items_frame(items)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        if fmt == "csv":
            df.to_csv(tmp, index=False)
        elif fmt == "jsonl":
            df.to_json(tmp, orient="records", lines=True, force_ascii=False)
        else:
            try:
                import pyarrow  # noqa: F401
            except ImportError as e:
                raise missing_extra("Parquet export", "export", e) from None
            df.to_parquet(tmp, index=False, engine="pyarrow")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
