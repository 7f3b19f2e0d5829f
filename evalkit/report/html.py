"""The self-contained HTML report (Jinja2, autoescape on): inline CSS, inline SVG plots, no scripts,
no network. Model output is untrusted: it only ever reaches the page through autoescaped ``{{ }}``
inside ``<pre>``, so ``<script>`` or ``<img onerror>`` in an output shows as text.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Sequence

from .._util.text import visible_controls
from ..record import RunItem, RunSummary
from ..store import Store
from . import analysis, svg
from .markdown import candidate_lines, early_stop_line, plain_num, verdict_line

_TEMPLATES = Path(__file__).parent / "templates"


def _env():
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(_TEMPLATES)),
        autoescape=True,  # every {{ }} is escaped, whatever the file name
        undefined=jinja2.ChainableUndefined,  # a summary missing a key (an older run) still renders
        trim_blocks=True,
        lstrip_blocks=True,
        # every {{ }} string (names from a config, model output) shows its control characters as symbols
        finalize=lambda v: visible_controls(v) if isinstance(v, str) else v,
    )
    env.filters["num"] = _num
    env.filters["pct"] = _pct
    env.filters["clip"] = clip
    return env


CLIP_CHARS = 20_000


def clip(text: Any, limit: int = CLIP_CHARS) -> str:
    """Long untrusted text cut for the page (a 1 MB output would bloat the report); items.jsonl keeps it whole."""
    s = "" if text is None else str(text)
    if len(s) <= limit:
        return visible_controls(s)
    return visible_controls(s[:limit]) + f"\n… [{len(s) - limit:,} more characters not shown; the full text is in items.jsonl]"


_num = plain_num  # the template escapes; Markdown's own cell escaping is not wanted here


def _pct(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{100 * float(v):.1f}%"


def history_points(store: Store | None, summary: RunSummary, limit: int = 12) -> list[tuple[str, dict[str, float]]]:
    """The trend over accepted runs (oldest first) and this run last: for each, the pass rate of its
    candidate on every suite x validator (judge means scaled to 0-1 by /5).
    """
    if store is None:
        return []
    runs = [r for r in store.list_runs(limit=500) if r.accepted and r.run_id != summary.run_id and r.summary]
    if summary.name:
        same = [r for r in runs if r.name == summary.name]
        runs = same or runs
    runs = list(reversed(runs[:limit]))
    # labels: the run id's date and its random suffix (ids share their prefix within a day)
    points = [(_short_id(r.run_id), _series(RunSummary.load(r.summary))) for r in runs if r.summary]
    points.append((_short_id(summary.run_id or "this run") + "*", _series(summary)))
    return points


def _short_id(run_id: str) -> str:
    parts = run_id.split("-")
    return f"{parts[0][4:8]}-{parts[-1][:4]}" if len(parts) >= 3 else run_id[-9:]


def _series(summary: RunSummary) -> dict[str, float]:
    model = summary.candidates[0] if summary.candidates else summary.baseline
    out: dict[str, float] = {}
    for m in summary.metrics:
        if m.model != model or m.value is None:
            continue
        v = float(m.value)
        if m.metric == "mean" and m.scorer.startswith("judge."):
            v = v / 5.0
        elif m.metric != "pass_rate":
            continue
        out[f"{m.suite} {m.scorer}"] = v
    return out


_RELIABILITY_KEYS = {
    "mode", "judge_models", "judged", "errors", "skipped", "failed_judgments", "verdict_retries", "position_bias_rate",
    "first_position_preference", "ensemble_agreement", "ensemble_mean_abs_spread", "repeat_std_mean", "repeat_std_max",
}


def _reliability_rows(stage: dict[str, Any]) -> list[tuple[str, Any]]:
    """The judge stage's statistics that speak to reliability: errors, position bias, length bias
    (Spearman of score vs length), agreement, noise between repeats. Unknown shapes pass through.
    """
    rows = []
    for key, v in analysis.flatten(stage):
        last = key.rsplit(".", 1)[-1]
        if any(f".{part}." in f".{key}." for part in ("providers", "tokens", "noise", "position_bias")):  # position_bias: its own table
            continue
        if last in _RELIABILITY_KEYS or ("length_bias" in key and last in ("spearman", "p_value")) or "bias" in last:
            rows.append((key, ", ".join(map(str, v)) if isinstance(v, list) else v))
    return rows


def _why(summary: RunSummary) -> str:
    """The verdict's reason, without the SHIP / DON'T SHIP prefix (the banner says that)."""
    line = verdict_line(summary)
    reason = line.split(": ", 1)[1] if ": " in line else line
    return reason[:1].upper() + reason[1:]


def _cost(summary: RunSummary) -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for k, v in summary.calls.model_dump().items():
        rows.append((k.replace("_", " "), v))
    for k, v in summary.timing.model_dump().items():
        rows.append((k.replace("_s", " (s)").replace("_", " "), round(v, 2) if isinstance(v, float) else v))
    judges = {name: st.model_dump(exclude_unset=True) for name, st in summary.judges.items()}
    for key, v in analysis.flatten(judges):
        if any(w in key.lower() for w in ("cost", "usd", "token", "price")):
            rows.append((key, v))
    return rows


def render_html(summary: RunSummary | dict[str, Any], items: Sequence[RunItem], *, store: Store | None = None, history: list | None = None) -> str:
    summary = RunSummary.of(summary)
    candidates = list(summary.candidates)
    baseline = summary.baseline
    metrics = analysis.metric_rows(items)
    tag_metrics = analysis.metric_rows(items, by_tag=True)
    wins = analysis.win_rates(items)
    deltas = analysis.tag_deltas(items, baseline, candidates)
    dists = analysis.score_distributions(items)
    worst = analysis.worst_regressions(items, baseline, candidates)
    reliability = analysis.judge_reliability(summary, items)
    points = history if history is not None else history_points(store, summary)

    plots: list[tuple[str, str]] = []
    for suite in sorted({m["suite"] for m in metrics}):
        rows = [(f"{m['model']} · {m['scorer']}", m["value"], m["ci_low"], m["ci_high"]) for m in metrics if m["suite"] == suite and m["metric"] == "pass_rate"]
        if rows:
            plots.append(("pass rates", svg.bar_ci(rows, title=f"Pass rates with 95% CI: {suite}", kind="passrates")))
    for scorer, series in sorted(dists.items()):
        plots.append(("distribution", svg.histogram(series, title=f"Score distribution: {scorer}", kind="hist")))
    if wins:
        plots.append(("win rates", svg.bar_ci([(f"{w['model']} · {w['judge']}", w["value"], w["ci_low"], w["ci_high"]) for w in wins], title="Win rates with 95% CI", reference=0.5, kind="winrates")))
    if deltas:
        plots.append(("tag deltas", svg.diverging([(f"{d['model']} · {d['tag']}", d["delta"], d["ci_low"], d["ci_high"]) for d in deltas], title=f"Per-tag pass-rate change vs {baseline}", kind="deltas")))
    if len(points) > 1:
        plots.append(("trend", svg.trend(points, title="Trend over accepted runs (this run last, *)", kind="trend")))

    from markupsafe import Markup

    created = summary.created or time.strftime("%Y-%m-%dT%H:%M:%S")
    return _env().get_template("report.html.j2").render(
        s=summary,
        ok=summary.passed,
        headline="Ship" if summary.passed else "Don't ship",
        why=_why(summary),
        per_candidate=candidate_lines(summary),
        created=created,
        gates=summary.gates,
        models=summary.models,
        suites=summary.suites,
        metrics=metrics,
        sampled=[m for m in summary.metrics if m.samples > 1 and m.pass_at],
        truncation=summary.truncation,
        perplexity=summary.perplexity,
        early_stop=early_stop_line(summary) if summary.early_stop is not None else "",
        tag_metrics=tag_metrics,
        wins=wins,
        deltas=deltas,
        worst=worst,
        plots=[(k, Markup(p)) for k, p in plots],  # built by svg.py, which escapes every label
        reliability=reliability,
        stage_rows=_reliability_rows(reliability["stage"]),
        position=analysis.position_bias(summary),
        cost=_cost(summary),
        warnings=summary.warnings,
        errors=summary.errors.model_dump(),
    )

