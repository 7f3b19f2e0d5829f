"""The one-screen Markdown summary: fits a PR comment and ``$GITHUB_STEP_SUMMARY``.

Model output never appears here (only ids, names and numbers); names are still escaped for
Markdown table cells and HTML, because GitHub renders inline HTML in comments.
"""

from __future__ import annotations

import html
import math
from typing import Any

from .._util.text import visible_controls

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


def num(v: Any) -> str:
    """``plain_num``, safe inside a Markdown table cell."""
    return cell(plain_num(v))


def verdict_line(summary: dict[str, Any]) -> str:
    gates = summary.get("gates") or []
    blocking = [g for g in gates if g.get("outcome") in ("fail", "no_decision")]
    warns = [g for g in gates if g.get("outcome") == "warn"]
    if summary.get("passed"):
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
        names = ", ".join(f"{g['name']}" + (f" ({g['model']})" if g.get("model") else "") for g in blocking[:4])
        more = f" and {len(blocking) - 4} more" if len(blocking) > 4 else ""
        return f"DON'T SHIP: {len(blocking)} of {len(gates)} gate results did not pass: {names}{more}."
    return "DON'T SHIP: the run did not complete cleanly."


def candidate_lines(summary: dict[str, Any]) -> list[str]:
    """With several candidates, one line each: would it ship on its own gates, and if not, why."""
    candidates = list(summary.get("candidates") or [])
    if len(candidates) < 2:
        return []
    gates = summary.get("gates") or []
    run_wide = [g["name"] for g in gates if g.get("model") is None and g.get("outcome") in ("fail", "no_decision")]
    out = []
    for c in candidates:
        own = [g for g in gates if g.get("model") == c]
        blocking = run_wide + [str(g.get("name")) for g in own if g.get("outcome") in ("fail", "no_decision")]
        if blocking:
            out.append(f"{c}: DON'T SHIP ({', '.join(blocking)})")
        else:
            out.append(f"{c}: SHIP (all {len(own)} of its gate results passed)")
    return out


def render_markdown(summary: dict[str, Any], *, max_items: int = 10) -> str:
    ok = bool(summary.get("passed"))
    lines: list[str] = []
    lines.append(f"## {'✅' if ok else '❌'} evalkit: {cell(verdict_line(summary))}")
    lines.append("")
    per = candidate_lines(summary)
    if per:
        lines.extend(f"- {'✅' if ': SHIP' in line else '❌'} {cell(line)}" for line in per)
        lines.append("")
    meta = [f"run `{cell(summary.get('run_id', '?'))}`"]
    if summary.get("name"):
        meta.append(cell(summary["name"]))
    if summary.get("baseline"):
        meta.append(f"baseline **{cell(summary['baseline'])}**")
    if summary.get("candidates"):
        meta.append("candidates " + ", ".join(f"**{cell(c)}**" for c in summary["candidates"]))
    suites = summary.get("suites") or []
    if suites:
        meta.append("suites " + ", ".join(f"{cell(s.get('name'))} ({s.get('n', '?')})" for s in suites))
    lines.append(" · ".join(meta))
    lines.append("")

    gates = summary.get("gates") or []
    if gates:
        lines.append("| | gate | model | observed | threshold | p | why |")
        lines.append("|---|---|---|---|---|---|---|")
        for g in gates:
            lines.append(
                f"| {ICON.get(g.get('outcome', ''), '')} | {cell(g.get('name'))} | {cell(g.get('model') or '')} | {num(g.get('observed'))} "
                f"| {num(g.get('threshold'))} | {num(g.get('p_value'))} | {cell(g.get('detail', ''))} |"
            )
        lines.append("")

    metrics = summary.get("metrics") or []
    if metrics:
        scorers = list(dict.fromkeys(m["scorer"] for m in metrics))
        rows: dict[tuple[str, str], dict[str, Any]] = {}
        for m in metrics:
            rows.setdefault((m["suite"], m["model"]), {})[m["scorer"]] = m
        lines.append("| suite | model | " + " | ".join(cell(s) for s in scorers) + " |")
        lines.append("|---|---|" + "---|" * len(scorers))
        for (suite, model), by in sorted(rows.items()):
            vals = []
            for s in scorers:
                m = by.get(s)
                if m is None:
                    vals.append("")
                else:
                    err = f" ({m['errors']} err)" if m.get("errors") else ""
                    vals.append(f"{num(m.get('value'))}{err}")
            lines.append(f"| {cell(suite)} | {cell(model)} | " + " | ".join(vals) + " |")
        lines.append("")
        lines.append("_pass rates for validators, means for judge scores_")
        lines.append("")

    failing = [g for g in gates if g.get("failing_items") and g.get("outcome") != "pass"]
    if failing:
        lines.append("<details><summary>Failing items</summary>")
        lines.append("")
        for g in failing:
            ids = g["failing_items"]
            shown = ", ".join(f"`{cell(i)}`" for i in ids[:max_items])
            more = f" … and {len(ids) - max_items} more" if len(ids) > max_items else ""
            lines.append(f"- **{cell(g['name'])}** ({cell(g.get('model') or '')}): {shown}{more}")
        lines.append("")
        lines.append("</details>")
        lines.append("")

    errs = summary.get("errors") or {}
    calls = summary.get("calls") or {}
    timing = summary.get("timing") or {}
    foot = []
    if any(errs.values()) if errs else False:
        foot.append("errors: " + ", ".join(f"{k} {v}" for k, v in errs.items()))
    if calls:
        foot.append(f"generations {calls.get('generations_made', 0)} made / {calls.get('generations_cached', 0)} cached")
        if calls.get("judge_calls_made") or calls.get("judge_calls_cached"):
            foot.append(f"judge calls {calls.get('judge_calls_made', 0)} made / {calls.get('judge_calls_cached', 0)} cached")
    if timing.get("wall_s") is not None:
        foot.append(f"{timing['wall_s']:.1f} s")
    for w in (summary.get("warnings") or [])[:5]:
        lines.append(f"> ⚠️ {cell(w)}")
    if foot:
        lines.append("<sub>" + " · ".join(foot) + "</sub>")
    text = "\n".join(lines).rstrip() + "\n"
    if len(text) > MAX_CHARS:
        text = text[: MAX_CHARS - 80].rsplit("\n", 1)[0] + "\n\n… (truncated; see report.html)\n"
    return text
