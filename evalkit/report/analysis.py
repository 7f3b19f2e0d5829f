"""What the reports show, computed from summary.json and the run's items alone (never live objects).

Everything here is plain data (dicts, lists, floats) so the Markdown, HTML and ``evalkit compare``
renderers stay dumb.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Iterable, Sequence

from .. import stats
from ..gates import pairwise_length_diffs
from ..record import RunItem, RunSummary


def judge_scorers(items: Iterable[RunItem]) -> set[str]:
    """Names of the scores that judges gave (by name or by the judge stage's ``details.judge`` mark)."""
    return {n for it in items for n, s in it.scores.items() if s.from_judge}


def _tags(item: RunItem) -> list[str]:
    return [str(t) for t in (item.sample.get("tags") or [])]


def scorer_names(items: Iterable[RunItem]) -> list[str]:
    """Validators first (in first-seen order), then judge scores."""
    seen: dict[str, None] = {}
    judged: set[str] = set()
    for it in items:
        for k, s in it.scores.items():
            seen.setdefault(k, None)
            if s.from_judge:
                judged.add(k)
    names = list(seen)
    return [n for n in names if n not in judged] + [n for n in names if n in judged]


def _metric_values(items: Sequence[RunItem], scorer: str, is_judge: bool = False) -> tuple[str, list[float], int]:
    """(metric, values, errors): pass_rate over 0/1 when the scorer decides pass/fail, else mean."""
    passes: list[float] = []
    values: list[float] = []
    errors = 0
    decided = 0
    for it in items:
        s = it.scores.get(scorer)
        if s is None:
            continue
        if s.error:
            errors += 1
            continue
        if s.passed is not None:
            decided += 1
            passes.append(1.0 if s.passed else 0.0)
        v = s.value
        if v is not None:
            try:
                fv = float(v)
            except (TypeError, ValueError):
                continue
            if not math.isnan(fv):
                values.append(fv)
    if is_judge and values:
        return "mean", values, errors
    if decided:
        return "pass_rate", passes, errors
    return "mean", values, errors


def metric_rows(items: Sequence[RunItem], *, by_tag: bool = False, confidence: float = 0.95) -> list[dict[str, Any]]:
    """One row per model x suite (x tag) x scorer: metric, value, CI, n, errors."""
    groups: dict[tuple[str, str, str], list[RunItem]] = defaultdict(list)
    for it in items:
        if by_tag:
            for t in _tags(it):
                groups[(it.model, it.suite, t)].append(it)
        else:
            groups[(it.model, it.suite, "")].append(it)
    names = scorer_names(items)
    judged = judge_scorers(items)
    rows: list[dict[str, Any]] = []
    for (model, suite, tag), group in groups.items():
        for scorer in names:
            metric, vals, errors = _metric_values(group, scorer, scorer in judged)
            if not vals and not errors:
                continue
            if not vals:
                iv, method = None, None
            elif metric == "pass_rate":
                iv, method = stats.pass_rate_ci(vals, confidence=confidence), "wilson"
            else:
                iv, method = stats.bootstrap_ci(vals, confidence=confidence), "bootstrap"
            rows.append(
                {
                    "model": model,
                    "suite": suite,
                    "tag": tag or None,
                    "scorer": scorer,
                    "metric": metric,
                    "value": iv.estimate if iv else None,
                    "ci_low": iv.low if iv else None,
                    "ci_high": iv.high if iv else None,
                    "ci_method": method,
                    "n": len(vals),
                    "errors": errors,
                }
            )
    rows.sort(key=lambda r: (r["suite"], r["tag"] or "", r["scorer"], r["model"]))
    return rows


def score_distributions(items: Sequence[RunItem]) -> dict[str, dict[str, dict[float, int]]]:
    """Judge-score histograms: scorer -> model -> value -> count (non pass/fail scores only)."""
    out: dict[str, dict[str, dict[float, int]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(int)))
    for it in items:
        for name, s in it.scores.items():
            if s.error or s.value is None:
                continue
            if not s.from_judge and s.passed is not None:
                continue
            if s.kind == "pairwise":
                continue  # shown as win rates
            try:
                v = round(float(s.value), 2)
            except (TypeError, ValueError):
                continue
            out[name][it.model][v] += 1
    return {k: {m: dict(sorted(h.items())) for m, h in v.items()} for k, v in out.items()}


def win_rates(items: Sequence[RunItem], confidence: float = 0.95) -> list[dict[str, Any]]:
    """Pairwise judge scores (values 0 / 0.5 / 1 with ``details.pairwise`` or a name containing
    'pairwise'): win rate per model and judge, with a bootstrap CI and the sign test, and beside it
    the length-controlled win rate (the rate at equal answer lengths) with its bootstrap CI.
    """
    groups: dict[tuple[str, str], list[tuple[RunItem, float]]] = defaultdict(list)
    for it in items:
        for name, s in it.scores.items():
            if not s.kind == "pairwise":
                continue
            if s.error or s.value is None:
                continue
            groups[(it.model, name)].append((it, float(s.value)))
    rows = []
    for (model, name), scored in sorted(groups.items()):
        vals = [v for _, v in scored]
        iv = stats.bootstrap_ci(vals, confidence=confidence)
        wins = sum(1 for v in vals if v > 0.5)
        losses = sum(1 for v in vals if v < 0.5)
        t = stats.sign_test(wins, losses)
        row: dict[str, Any] = {"model": model, "judge": name, "value": iv.estimate, "ci_low": iv.low, "ci_high": iv.high,
                               "wins": wins, "losses": losses, "ties": len(vals) - wins - losses, "p_value": t.p_value, "n": len(vals),
                               "lc_value": None, "lc_low": None, "lc_high": None, "length_coef": None}
        diffs = pairwise_length_diffs(scored, name, items)
        if diffs is not None:
            lc = stats.length_controlled_win_rate(vals, diffs, confidence=confidence)
            row.update(lc_value=lc.estimate, lc_low=lc.low, lc_high=lc.high, length_coef=lc.length_coef)
        rows.append(row)
    return rows


def position_bias(summary: RunSummary | dict[str, Any]) -> list[dict[str, Any]]:
    """Per pairwise judge and judge model: pairs asked in both orders, flips, flip rate, first-position
    preference, ties, and the ties a flip made (the judge stage's ``position_bias``).
    """
    rows = []
    for judge, st in sorted(RunSummary.of(summary).judges.items()):
        for label, b in sorted(st.position_bias.items()):
            if isinstance(b, dict):
                rows.append({"judge": judge, "judge_model": label, **b})
    return rows


def _item_pass(item: RunItem) -> bool | None:
    vals = [s for n, s in item.scores.items() if not s.from_judge]
    if not vals or any(s.error or s.passed is None for s in vals):
        return None
    return all(bool(s.passed) for s in vals)


def _item_quality(item: RunItem) -> float | None:
    """One number per item for ranking regressions: validator pass share + mean judge score / 5."""
    parts: list[float] = []
    for s in item.scores.values():
        if s.error:
            continue
        if s.from_judge:
            if s.value is not None and not s.kind == "pairwise":
                parts.append(float(s.value) / 5.0)
        elif s.passed is not None:
            parts.append(1.0 if s.passed else 0.0)
    return sum(parts) / len(parts) if parts else None


def _paired(items: Sequence[RunItem], baseline: str | None, candidates: Sequence[str]):
    """(candidate item, baseline item) for every candidate item whose sample the baseline also ran."""
    if not baseline:
        return
    base = {(it.suite, it.suite_version, it.sample_id): it for it in items if it.model == baseline}
    for it in items:
        if it.model in candidates:
            b = base.get((it.suite, it.suite_version, it.sample_id))
            if b is not None:
                yield it, b


def worst_regressions(items: Sequence[RunItem], baseline: str | None, candidates: Sequence[str], limit: int = 10) -> list[dict[str, Any]]:
    """Items where a candidate does worse than the baseline, worst first, with everything to show
    them side by side: prompt, reference, both outputs, and which scorers flipped.
    """
    rows: list[dict[str, Any]] = []
    for it, b in _paired(items, baseline, candidates):
        qc, qb = _item_quality(it), _item_quality(b)
        if qc is None or qb is None or qc >= qb:
            continue
        flipped = [n for n, s in it.scores.items() if s.passed is False and (bs := b.scores.get(n)) is not None and bs.passed is True]
        rows.append(
            {
                "model": it.model,
                "suite": it.suite,
                "sample_id": it.sample_id,
                "drop": qb - qc,
                "regressed": _item_pass(b) is True and _item_pass(it) is False,
                "flipped": flipped,
                "prompt": prompt_text(it.sample),
                "reference": it.sample.get("reference"),
                "baseline_output": b.output if b.output is not None else f"[error] {b.error or ''}",
                "candidate_output": it.output if it.output is not None else f"[error] {it.error or ''}",
                "explanations": {n: s.explanation or s.error or "" for n, s in it.scores.items() if s.passed is False or s.error},
            }
        )
    rows.sort(key=lambda r: (not r["regressed"], -r["drop"], r["suite"], r["sample_id"]))
    return rows[:limit]


def tag_deltas(items: Sequence[RunItem], baseline: str | None, candidates: Sequence[str]) -> list[dict[str, Any]]:
    """Per tag: the candidate's all-validators pass rate minus the baseline's, on paired items."""
    acc: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    for it, b in _paired(items, baseline, candidates):
        pc, pb = _item_pass(it), _item_pass(b)
        if pc is None or pb is None:
            continue
        for t in _tags(it) or ["(untagged)"]:
            acc[(it.model, t)].append((1.0 if pb else 0.0, 1.0 if pc else 0.0))
    rows = []
    for (model, tag), pairs in sorted(acc.items()):
        a = [p[0] for p in pairs]
        c = [p[1] for p in pairs]
        iv = stats.paired_bootstrap_diff_ci(a, c)
        rows.append({"model": model, "tag": tag, "delta": iv.estimate, "ci_low": iv.low, "ci_high": iv.high, "n": iv.n})
    return rows


def prompt_text(sample: dict[str, Any]) -> str:
    for m in reversed(sample.get("messages") or []):
        if m.get("role") == "user":
            return str(m.get("content", ""))
    msgs = sample.get("messages") or []
    return str(msgs[-1].get("content", "")) if msgs else ""


def judge_reliability(summary: RunSummary, items: Sequence[RunItem]) -> dict[str, Any]:
    """Judge errors per scorer from the items, plus whatever the judge stage put in summary['judges']
    (position bias, length bias, agreement, cost).
    """
    errors: dict[str, int] = defaultdict(int)
    total: dict[str, int] = defaultdict(int)
    noise: dict[str, list[float]] = defaultdict(list)
    for it in items:
        for n, s in it.scores.items():
            if not s.from_judge:
                continue
            total[n] += 1
            if s.error:
                errors[n] += 1
            std = s.details.get("std")
            if isinstance(std, (int, float)):
                noise[n].append(float(std))
    per = [
        {"scorer": n, "n": total[n], "errors": errors[n], "mean_std": (sum(noise[n]) / len(noise[n])) if noise[n] else None}
        for n in sorted(total)
    ]
    return {"per_scorer": per, "stage": {name: st.model_dump(exclude_unset=True) for name, st in summary.judges.items()}}


def flatten(d: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Nested dicts as (dotted.key, scalar) rows, for showing free-form statistics as a table."""
    out: list[tuple[str, Any]] = []
    if isinstance(d, dict):
        for k, v in d.items():
            out.extend(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(d, list) and d and all(isinstance(x, dict) for x in d):
        for i, v in enumerate(d):
            out.extend(flatten(v, f"{prefix}[{i}]"))
    else:
        out.append((prefix, d))
    return out
