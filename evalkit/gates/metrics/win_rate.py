"""Gate metric win_rate: a pairwise judge's win rate (ties count half; the sign test)."""

from __future__ import annotations

from typing import Any, Mapping

from ... import stats
from ...config import GateSpec
from ...types import GateResult, Score
from ..api import (
    MetricContext,
    bound_text,
    calibrated_gate,
    ci_straddles,
    format_number,
    gate_result,
    gate_scope,
    gate_threshold,
    item_label,
    metric,
    name_list,
    noise_note,
    note_mde_mean,
    note_test,
    pairwise_length_diffs,
    select_items,
    threshold_met,
    undecided,
    value_of,
)


def _judge_key(item_scores: Mapping[str, Score], judge: str) -> str | None:
    """The pairwise score of judge ``judge``: by score name, or by the judge stage's ``details.judge`` mark."""
    for k in (judge, f"judge.{judge}"):
        if k in item_scores:
            return k
    for k in sorted(item_scores):
        s = item_scores[k]
        if s.details.get("judge") == judge and s.kind == "pairwise":
            return k
    for k in sorted(item_scores):
        if k.startswith(f"judge.{judge}.") or k.startswith(f"{judge}."):
            return k
    return None


@metric("win_rate")
def _win_rate(gate: GateSpec, model: str, ctx: MetricContext) -> GateResult:
    judge = gate.judge or gate.scorer or "pairwise"
    sel = select_items(gate, ctx.items, model)
    several = len({it.suite for it in sel}) > 1
    key = next((k for k in (_judge_key(it.scores, judge) for it in sel) if k), None)
    if key is None:
        return undecided(gate, model, None, gate_threshold(gate), f"no pairwise judge score '{judge}' on {model}'s items{gate_scope(gate)}", missing_data=True)
    if gate.calibrate is not None:  # the win rate people would give, from their labels and the judge's verdicts
        return calibrated_gate(gate, model, sel, key, f"win rate by '{key}'")
    vals = [(it, value_of(it, key)) for it in sel]
    scored = [(it, v) for it, v in vals if v is not None]
    if len(scored) < gate.min_pairs:
        return undecided(gate, model, None, gate_threshold(gate), f"{len(scored)} of {len(vals)} '{key}' verdicts on {model}{gate_scope(gate)} are usable (min_pairs {gate.min_pairs}); the rest are errors", missing_data=True)
    rate = sum(v for _, v in scored) / len(scored)
    note_mde_mean(ctx, gate, model, [v - 0.5 for _, v in scored])  # the win rate's distance from 0.5 it can detect
    wins = sum(1 for _, v in scored if v > 0.5)
    losses = sum(1 for _, v in scored if v < 0.5)
    ties = len(scored) - wins - losses
    losing = [item_label(it, several) for it, v in scored if v < 0.5]
    errors = len(vals) - len(scored)
    note = f"; {errors} judge errors excluded" if errors else ""
    vs_txt = f" against {gate.vs}" if gate.vs and gate.vs != "baseline" else (f" against {ctx.baseline}" if ctx.baseline else "")
    what = f"{model} wins {format_number(rate)} by '{key}'{vs_txt}{gate_scope(gate)} ({wins} wins, {ties} ties, {losses} losses)"
    if gate.length_controlled:
        return _length_controlled(gate, model, ctx, key, scored, what, losing, note)
    ok = threshold_met(gate, rate)
    p_value = None
    if gate.significant is not None:
        t = stats.sign_test(wins, losses)
        note_test(ctx, gate, model, t.test)
        p_value = t.p_value
        sig = p_value < gate.significant
        if gate.min is not None and ok and not (sig and wins > losses):
            detail = f"{what}, at least min {format_number(gate.min)} but not significantly better (sign test p={format_number(p_value)}, alpha {format_number(gate.significant)}){note}."
            return gate_result(gate, model, passed=False, observed=rate, detail=detail, failing=losing, p_value=p_value)
    noise = noise_note(gate, ctx, model, key, rate, [it for it, _ in scored])
    if noise is not None:
        return undecided(gate, model, rate, gate_threshold(gate), f"{what}, and {noise}{note}", losing, p_value)
    iv = ci_straddles(gate, [v for _, v in scored])
    if iv is not None:
        return undecided(gate, model, rate, gate_threshold(gate), f"{what}, and its {int((gate.ci or 0.95) * 100)}% CI [{format_number(iv.low)}, {format_number(iv.high)}] straddles {bound_text(gate)}{note}", losing, p_value)
    ptxt = f" (sign test p={format_number(p_value)})" if p_value is not None else ""
    detail = f"{what}{ptxt}, {'within' if ok else 'outside'} {bound_text(gate)}" + ("" if ok else f"; lost: {name_list(losing)}") + f"{note}."
    return gate_result(gate, model, passed=ok, observed=rate, detail=detail, failing=losing, p_value=p_value)


def _length_controlled(gate: GateSpec, model: str, ctx: MetricContext, key: str, scored: list[tuple[Any, float]], what: str, losing: list[str], note: str) -> GateResult:
    """``length_controlled: true``: the bounds, the test and the CI apply to the win rate at equal lengths."""
    diffs = pairwise_length_diffs(scored, key, ctx.items)
    if diffs is None:
        return undecided(gate, model, None, gate_threshold(gate), f"{what}, but the answer lengths of some pairs are unknown (neither recorded nor stored)", missing_data=True)
    confidence = gate.ci or 0.95
    lc = stats.length_controlled_win_rate([v for _, v in scored], diffs, confidence=confidence)
    lean = "longer" if lc.length_coef > 0 else "shorter"
    head = (f"{model}'s length-controlled win rate is {format_number(lc.estimate)} ({int(confidence * 100)}% CI [{format_number(lc.low)}, {format_number(lc.high)}]); "
            f"raw: {what}; the judge leans to {lean} answers (length coefficient {lc.length_coef:+.2f})")
    ok = threshold_met(gate, lc.estimate)
    p_value = None
    if gate.significant is not None:
        p_value = lc.p_above(0.5)
        note_test(ctx, gate, model, "bootstrap_length_controlled")
        if gate.min is not None and ok and not (p_value < gate.significant and lc.estimate > 0.5):
            detail = f"{head}, at least min {format_number(gate.min)} but not significantly above 0.5 (bootstrap p={format_number(p_value)}, alpha {format_number(gate.significant)}){note}."
            return gate_result(gate, model, passed=False, observed=lc.estimate, detail=detail, failing=losing, p_value=p_value)
    if gate.ci is not None and any(t is not None and lc.low < t < lc.high for t in (gate.min, gate.max)):
        return undecided(gate, model, lc.estimate, gate_threshold(gate), f"{head}, and the CI straddles {bound_text(gate)}{note}", losing, p_value)
    ptxt = f" (bootstrap p={format_number(p_value)})" if p_value is not None else ""
    detail = f"{head}{ptxt}, {'within' if ok else 'outside'} {bound_text(gate)}" + ("" if ok else f"; lost: {name_list(losing)}") + f"{note}."
    return gate_result(gate, model, passed=ok, observed=lc.estimate, detail=detail, failing=losing, p_value=p_value)
