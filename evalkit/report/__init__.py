"""Report writers: summary.json, items.jsonl, report.md, report.html, junit.xml, and exports.

Everything is rendered from the typed run record (``evalkit.record.RunSummary``, summary.json) and
the run's ``RunItem``s, which the store keeps, so ``evalkit report RUN`` rebuilds every file later
without the models. A summary.json dict is read into a RunSummary once, at the door.

Offers:
- :func:`write_reports` — write all five files atomically (temp files, then renames);
- :func:`console_summary` — a few lines for the terminal;
- :func:`item_record` — one items.jsonl line;
- :func:`render_markdown`, :func:`render_junit`, :func:`render_html` — the renderers;
- :func:`export_items` (in ``exports``) — CSV / Parquet / JSONL through pandas.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

from .._util.fs import write_files_atomic
from .._util.text import displayable, encodable, terminal_safe
from ..record import RunItem, RunSummary
from ..store import Store
from .junit import render_junit
from .markdown import candidate_lines, early_stop_line, render_markdown, verdict_line

REPORT_FILES = ("summary.json", "items.jsonl", "report.md", "report.html", "junit.xml")

__all__ = ["write_reports", "console_summary", "item_record", "render_markdown", "render_junit", "render_html", "REPORT_FILES"]


def render_html(summary: RunSummary | dict[str, Any], items: Sequence[RunItem], *, store: Store | None = None, history: list | None = None) -> str:
    from .html import render_html as _render

    return _render(summary, items, store=store, history=history)


def item_record(item: RunItem) -> dict[str, Any]:
    """One items.jsonl line (the contract's fields)."""
    return {
        "model": item.model,
        "suite": item.suite,
        "suite_version": item.suite_version,
        "sample_id": item.sample_id,
        "tags": list(item.sample.get("tags") or []),
        "output": item.output,
        "error": item.error,
        "finish_reason": item.finish_reason,
        "truncated": item.truncated,
        "reasoning": item.reasoning,
        "scores": {name: s.as_dict() for name, s in item.scores.items()},
        **({"samples": [d.as_dict() for d in item.samples]} if item.draws else {}),
        # a multiple-choice item: each choice's summed log-probability; a perplexity text: its rolling log-likelihood
        **({"choice_logprobs": list(item.choice_logprobs)} if item.choice_logprobs is not None else {}),
        **({"loglikelihood": item.loglikelihoods[0]} if item.loglikelihoods and item.sample.get("text") is not None else {}),
    }


def _json_default(o: Any) -> Any:
    if hasattr(o, "as_dict"):
        return o.as_dict()
    if isinstance(o, (set, tuple)):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    return str(o)


def write_reports(
    out_dir: Path,
    summary: RunSummary | dict[str, Any],
    items: Sequence[RunItem],
    *,
    store: Store | None = None,
    step_summary: bool = True,
) -> list[Path]:
    """Write summary.json, items.jsonl, report.md, report.html and junit.xml into ``out_dir``.

    Atomic: every file is rendered into a temp file in ``out_dir`` first and only then renamed
    into place, so an error (or a kill) never leaves a half-written report beside whole ones.
    ``store`` (optional) adds the trend over accepted runs to the HTML. With ``step_summary`` and
    ``$GITHUB_STEP_SUMMARY`` set, report.md is appended there too. Returns the paths written.
    """
    summary = RunSummary.of(summary)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # the store's order, so a rebuild from the store writes byte-identical files
    items = sorted(items, key=lambda it: (it.suite, it.sample_id, it.model))
    md = render_markdown(summary)
    rendered: dict[str, str] = {
        "summary.json": _json_text(summary.to_json(), indent=2) + "\n",
        "items.jsonl": "".join(_json_text(item_record(it)) + "\n" for it in items),
        "report.md": displayable(md),
        "report.html": displayable(render_html(summary, items, store=store)),
        "junit.xml": displayable(render_junit(summary)),
    }
    written = write_files_atomic(out_dir, rendered)
    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if step_summary and target:
        with open(target, "a", encoding="utf-8") as f:
            f.write(md + "\n")
    return written


def _json_text(obj: Any, indent: int | None = None) -> str:
    """JSON as UTF-8 text; where a value holds a lone surrogate (untrusted model output), that
    document is written with ASCII escapes instead, which JSON readers turn back into the same str.
    """
    text = json.dumps(obj, indent=indent, ensure_ascii=False, default=_json_default)
    return text if encodable(text) else json.dumps(obj, indent=indent, ensure_ascii=True, default=_json_default)


def console_summary(summary: RunSummary | dict[str, Any], out_dir: str | Path | None = None) -> str:
    """A few lines for the terminal: the verdict, one line per gate result, where the reports are."""
    summary = RunSummary.of(summary)
    mark = {"pass": "PASS", "fail": "FAIL", "no_decision": "UNDECIDED", "warn": "WARN"}
    lines = [("PASS  " if summary.passed else "FAIL  ") + verdict_line(summary)]
    lines += [f"  per candidate: {line}" for line in candidate_lines(summary)]
    if summary.early_stop is not None:
        lines.append(f"  {early_stop_line(summary)}")
    gates = summary.gates
    if gates:
        w_name = max(len(g.name) for g in gates)
        w_model = max(len(g.model or "") for g in gates)
        for g in gates:
            nums = f"{_short(g.observed)} vs {_short(g.threshold)}" if g.threshold is not None else _short(g.observed)
            lines.append(f"  {mark.get(g.outcome, '?'):<9} {g.name:<{w_name}}  {(g.model or ''):<{w_model}}  {nums:<16} {g.detail}")
    where = out_dir or getattr(summary, "out_dir", None)
    if where:
        lines.append(f"reports: {Path(where) / 'report.html'} (also report.md, junit.xml, summary.json, items.jsonl)")
    return "\n".join(terminal_safe(line, one_line=True) for line in lines)


def _short(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
