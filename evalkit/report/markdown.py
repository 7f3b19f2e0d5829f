"""The one-screen Markdown summary: fits a PR comment and ``$GITHUB_STEP_SUMMARY``.

Model output never appears here (only ids, names and numbers); names are still escaped for
Markdown table cells and HTML, because GitHub renders inline HTML in comments.
"""

from __future__ import annotations

import html
import math
from typing import Any

from .._util.text import visible_controls
from ..record import MetricRow, RunSummary

# GitHub's limit for a comment is 65,536 characters; stay well inside it.
MAX_CHARS = 60_000

ICON = {"pass": "✅", "fail": "❌", "no_decision": "❔", "warn": "⚠️"}


def cell(text: Any) -> str:
    """Safe inside a Markdown table cell: HTML-escaped, pipes and newlines neutralised."""
    s = html.escape(visible_controls(str(text)), quote=False)
    return s.replace("|", "\\|").replace("\r", " ").replace("\n", " ").replace("`", "'")


def plain_num(v: Any) -> str:
    """A number for people: integers as such, else 3 significant digits; None and NaN as a dash."""
    if v is None:
        return "–"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, (int, float)):
        if isinstance(v, float) and math.isnan(v):
            return "–"
        if float(v).is_integer() and abs(v) >= 1:
            return str(int(v))
        return f"{v:.3g}"
    return str(v)


def early_stop_line(summary: RunSummary) -> str:
    """"decided after 120 of 400 items (3 blocks of 40; early_stop)", or why every item was used."""
    es = summary.early_stop
    if es is None:
        return ""
    if es.stopped_early:
        return (f"early stop: decided after {es.items_used} of {es.items_total} items ({es.blocks} block{'s' if es.blocks != 1 else ''} of "
                f"{es.block}); the rest were not generated")
    return f"early stop: all {es.items_total} items used ({es.blocks} blocks of {es.block}): some gate needed every item or stayed undecided"


def num(v: Any) -> str:
    """``plain_num``, safe inside a Markdown table cell."""
    return cell(plain_num(v))


def verdict_line(summary: RunSummary | dict[str, Any]) -> str:
    summary = RunSummary.of(summary)
    gates = summary.gates
    blocking = summary.blocking
    warns = [g for g in gates if g.outcome == "warn"]
    if summary.passed:
        if not gates:
            why = "no gates were configured"
        elif blocking:  # the run's own verdict counted these as passing
            why = f"{len(gates) - len(blocking)} of {len(gates)} gate results passed, {len(blocking)} did not decide"
        else:
            why = f"all {len(gates)} gate results passed"
        if warns:
            why += f" ({len(warns)} warning{'s' if len(warns) != 1 else ''})"
        return f"SHIP: {why}."
    if blocking:
        names = ", ".join(g.name + (f" ({g.model})" if g.model else "") for g in blocking[:4])
        more = f" and {len(blocking) - 4} more" if len(blocking) > 4 else ""
        return f"DON'T SHIP: {len(blocking)} of {len(gates)} gate results did not pass: {names}{more}."
    return "DON'T SHIP: the run did not complete cleanly."


def candidate_lines(summary: RunSummary | dict[str, Any]) -> list[str]:
    """With several candidates, one line each: would it ship on its own gates, and if not, why."""
    summary = RunSummary.of(summary)
    if len(summary.candidates) < 2:
        return []
    run_wide = [g.name for g in summary.blocking if g.model is None]
    out = []
    for c in summary.candidates:
        own = [g for g in summary.gates if g.model == c]
        blocking = run_wide + [g.name for g in own if g.outcome in ("fail", "no_decision")]
        if blocking:
            out.append(f"{c}: DON'T SHIP ({', '.join(blocking)})")
        else:
            out.append(f"{c}: SHIP (all {len(own)} of its gate results passed)")
    return out


def render_markdown(summary: RunSummary | dict[str, Any], *, max_items: int = 10) -> str:
    summary = RunSummary.of(summary)
    ok = summary.passed
    lines: list[str] = []
    lines.append(f"## {'✅' if ok else '❌'} evalkit: {cell(verdict_line(summary))}")
    lines.append("")
    per = candidate_lines(summary)
    if per:
        lines.extend(f"- {'✅' if ': SHIP' in line else '❌'} {cell(line)}" for line in per)
        lines.append("")
    meta = [f"run `{cell(summary.run_id)}`"]
    if summary.name:
        meta.append(cell(summary.name))
    if summary.baseline:
        meta.append(f"baseline **{cell(summary.baseline)}**")
    if summary.candidates:
        meta.append("candidates " + ", ".join(f"**{cell(c)}**" for c in summary.candidates))
    if summary.suites:
        meta.append("suites " + ", ".join(f"{cell(s.name)} ({s.n})" for s in summary.suites))
    lines.append(" · ".join(meta))
    lines.append("")
    if summary.early_stop is not None:
        lines.append(f"> ⏱️ {cell(early_stop_line(summary))}")
        lines.append("")

    gates = summary.gates
    if gates:
        lines.append("| | gate | model | observed | threshold | p | mde | why |")
        lines.append("|---|---|---|---|---|---|---|---|")
        for g in gates:
            lines.append(
                f"| {ICON.get(g.outcome, '')} | {cell(g.name)} | {cell(g.model or '')} | {num(g.observed)} "
                f"| {num(g.threshold)} | {num(g.p_value)} | {num(g.mde)} | {cell(g.detail)} |"
            )
        lines.append("")

    metrics = summary.metrics
    if metrics:
        scorers = list(dict.fromkeys(m.scorer for m in metrics))
        rows: dict[tuple[str, str], dict[str, MetricRow]] = {}
        for m in metrics:
            rows.setdefault((m.suite, m.model), {})[m.scorer] = m
        lines.append("| suite | model | " + " | ".join(cell(s) for s in scorers) + " |")
        lines.append("|---|---|" + "---|" * len(scorers))
        for (suite, model), by in sorted(rows.items()):
            vals = []
            for s in scorers:
                row = by.get(s)
                if row is None:
                    vals.append("")
                else:
                    err = f" ({row.errors} err)" if row.errors else ""
                    vals.append(f"{num(row.value)}{err}")
            lines.append(f"| {cell(suite)} | {cell(model)} | " + " | ".join(vals) + " |")
        lines.append("")
        lines.append("_pass rates for validators, means for judge scores; a gate's mde is the smallest true difference its comparison detects with 80 % power_")
        lines.append("")
        sampled = [m for m in metrics if m.samples > 1 and m.pass_at and m.pass_all]
        if sampled:
            lines.append("| suite | model | scorer | samples | pass@1 | pass@k | pass^k | flaky | expected flips |")
            lines.append("|---|---|---|---|---|---|---|---|---|")
            for m in sampled:
                k = str(m.samples)
                lines.append(f"| {cell(m.suite)} | {cell(m.model)} | {cell(m.scorer)} | {m.samples} | {num((m.pass_at or {}).get('1'))} | "
                             f"{num((m.pass_at or {}).get(k))} | {num((m.pass_all or {}).get(k))} | {num(m.flaky)} | {num(m.expected_flips)} |")
            lines.append("")

    calibrated = [g for g in gates if g.calibration]
    if calibrated:
        lines.append("| judge score, calibrated by human labels | model | judge | calibrated (PPI++) | CI | humans only | labels |")
        lines.append("|---|---|---|---|---|---|---|")
        for g in calibrated:
            c = g.calibration or {}
            ci = c.get("ci") or [None, None]
            lines.append(f"| {cell(str(c.get('scorer', g.name)))} | {cell(g.model or '')} | {num(c.get('judge_mean'))} | {num(g.observed)} | "
                         f"[{num(ci[0])}, {num(ci[1])}] | {num(c.get('human_mean'))} | {c.get('n_labeled')} of {int(c.get('n_labeled') or 0) + int(c.get('n_unlabeled') or 0)} items |")
        lines.append("")

    if summary.perplexity:
        lines.append("| perplexity suite | model | texts | word perplexity | byte perplexity | bits per byte |")
        lines.append("|---|---|---|---|---|---|")
        for p in summary.perplexity:
            unscored = f" ({p.errors} unscored)" if p.errors else ""
            lines.append(f"| {cell(p.suite)} | {cell(p.model)} | {p.n}{unscored} | {num(p.word_perplexity)} | {num(p.byte_perplexity)} | {num(p.bits_per_byte)} |")
        lines.append("")

    cut = [t for t in summary.truncation if t.truncated]
    if cut:
        lines.append("> ✂️ cut by the token limit: " + ", ".join(f"{cell(t.model)} on {cell(t.suite)} {t.truncated}/{t.n}" for t in cut))
        lines.append("")

    failing = [g for g in gates if g.failing_items and g.outcome != "pass"]
    if failing:
        lines.append("<details><summary>Failing items</summary>")
        lines.append("")
        for g in failing:
            ids = g.failing_items
            shown = ", ".join(f"`{cell(i)}`" for i in ids[:max_items])
            more = f" … and {len(ids) - max_items} more" if len(ids) > max_items else ""
            lines.append(f"- **{cell(g.name)}** ({cell(g.model or '')}): {shown}{more}")
        lines.append("")
        lines.append("</details>")
        lines.append("")

    errs, calls = summary.errors, summary.calls
    foot = []
    if errs.generation or errs.scorer or errs.judge:
        foot.append(f"errors: generation {errs.generation}, scorer {errs.scorer}, judge {errs.judge}")
    foot.append(f"generations {calls.generations_made} made / {calls.generations_cached} cached")
    if calls.judge_calls_made or calls.judge_calls_cached:
        foot.append(f"judge calls {calls.judge_calls_made} made / {calls.judge_calls_cached} cached")
    foot.append(f"{summary.timing.wall_s:.1f} s")
    for w in summary.warnings[:5]:
        lines.append(f"> ⚠️ {cell(w)}")
    lines.append("<sub>" + " · ".join(foot) + "</sub>")
    text = "\n".join(lines).rstrip() + "\n"
    if len(text) > MAX_CHARS:
        text = text[: MAX_CHARS - 80].rsplit("\n", 1)[0] + "\n\n… (truncated; see report.html)\n"
    return text
