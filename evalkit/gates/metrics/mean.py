"""Gate metric mean: the mean value of a scorer (judge scores); with ``vs``, the paired mean difference (Wilcoxon)."""

from __future__ import annotations

from ... import stats
from ...config import GateSpec
from ...types import GateResult
from ..api import (
    MetricContext,
    bound_text,
    calibrated_gate,
    ci_straddles,
    ci_straddles_diff,
    compare_with_reference,
    error_note,
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
    select_items,
    threshold_met,
    undecided,
    value_of,
)


@metric("mean")
def _mean(gate: GateSpec, model: str, ctx: MetricContext) -> GateResult:
    if gate.vs is not None:
        return _mean_vs(gate, model, ctx)
    if gate.calibrate is not None:
        return _mean_calibrated(gate, model, ctx)
    scorer = gate.scorer or ""
    sel = select_items(gate, ctx.items, model)
    several = len({it.suite for it in sel}) > 1
    pairs = [(it, value_of(it, scorer)) for it in sel]
    vals = [(it, v) for it, v in pairs if v is not None]
    unscored = len(pairs) - len(vals)
    if not vals:
        return undecided(gate, model, None, gate_threshold(gate), f"no item of {model}{gate_scope(gate)} has a '{scorer}' value ({len(sel)} items, {unscored} unscored{error_note(sel, scorer)})", missing_data=True)
    mean = sum(v for _, v in vals) / len(vals)
    # the items that pull the mean the wrong way, worst first
    if gate.min is not None:
        failing = [item_label(it, several) for it, v in sorted(vals, key=lambda p: p[1]) if v < gate.min]
    elif gate.max is not None:
        failing = [item_label(it, several) for it, v in sorted(vals, key=lambda p: -p[1]) if v > gate.max]
    else:
        failing = []
    note = f"; {unscored} unscored items excluded" if unscored else ""
    what = f"mean {scorer} of {model}{gate_scope(gate)} is {format_number(mean)} over {len(vals)} items"
    noise = noise_note(gate, ctx, model, scorer, mean, sel)
    if noise is not None:
        return undecided(gate, model, mean, gate_threshold(gate), f"{what}, and {noise}{note}", failing)
    iv = ci_straddles(gate, [v for _, v in vals])
    if iv is not None:
        return undecided(gate, model, mean, gate_threshold(gate), f"{what}, and its {int((gate.ci or 0.95) * 100)}% CI [{format_number(iv.low)}, {format_number(iv.high)}] straddles {bound_text(gate)}{note}", failing)
    ok = threshold_met(gate, mean)
    detail = f"{what}, {'within' if ok else 'outside'} {bound_text(gate)}{note}" + ("" if ok else f"; lowest: {name_list(failing)}") + "."
    return gate_result(gate, model, passed=ok, observed=mean, detail=detail, failing=failing)


def _mean_calibrated(gate: GateSpec, model: str, ctx: MetricContext) -> GateResult:
    """``mean`` with ``calibrate``: the mean human label, estimated by PPI++ from the labels file and the
    judge's scores on every item of the scope (``evalkit calibrate``'s estimate).
    """
    return calibrated_gate(gate, model, select_items(gate, ctx.items, model), gate.scorer or "", f"mean {gate.scorer}")


def _mean_vs(gate: GateSpec, model: str, ctx: MetricContext) -> GateResult:
    """``mean`` with ``vs``: the threshold applies to the paired mean difference (model - vs)."""
    scorer = gate.scorer or ""
    cmp = compare_with_reference(gate, model, ctx, "compare")
    if isinstance(cmp, GateResult):
        return cmp
    ref, pairs, missing = cmp.ref, cmp.pairs, cmp.missing
    several = len({c.suite for c, _ in pairs}) > 1
    a: list[float] = []
    b: list[float] = []
    labels: list[str] = []
    for c, r in pairs:
        vc, vr = value_of(c, scorer), value_of(r, scorer)
        if vc is None or vr is None:
            continue
        a.append(vr)
        b.append(vc)
        labels.append(item_label(c, several))
    if len(a) < gate.min_pairs:
        return undecided(gate, model, None, gate_threshold(gate), f"{model} and {ref.label} share {len(a)} item(s){gate_scope(gate)} scored by '{scorer}' (min_pairs {gate.min_pairs}){error_note(select_items(gate, ctx.items, model) + [r for _, r in pairs], scorer)}", missing_data=True)
    diff = sum(y - x for x, y in zip(a, b)) / len(a)
    note_mde_mean(ctx, gate, model, [y - x for x, y in zip(a, b)])
    worse = [lab for lab, x, y in sorted(zip(labels, a, b), key=lambda t: t[2] - t[1]) if y < x]
    note = f"; {missing} items not in {ref.label}" if missing else ""
    what = f"mean {scorer} of {model}{gate_scope(gate)} differs from {ref.label} by {diff:+.4g} over {len(a)} paired items"
    ok = threshold_met(gate, diff)
    p_value = None
    if gate.significant is not None:
        t = stats.wilcoxon_signed_rank(a, b)
        p_value = t.p_value
        note_test(ctx, gate, model, t.test)
        sig = p_value < gate.significant
        if gate.min is not None and ok and not (sig and diff > 0):
            detail = f"{what}, at least min {format_number(gate.min)} but not a significant improvement (Wilcoxon p={format_number(p_value)}, alpha {format_number(gate.significant)}){note}."
            return gate_result(gate, model, passed=False, observed=diff, detail=detail, failing=worse, p_value=p_value)
        if not ok and gate.min is None and not (sig and diff > 0):
            detail = f"{what}, above max {format_number(gate.max)} but not significantly (Wilcoxon p={format_number(p_value)}, alpha {format_number(gate.significant)}){note}."
            return gate_result(gate, model, passed=True, observed=diff, detail=detail, failing=worse, p_value=p_value, outcome="warn")
    iv = ci_straddles_diff(gate, a, b)
    if iv is not None:
        return undecided(gate, model, diff, gate_threshold(gate), f"{what}, and its {int((gate.ci or 0.95) * 100)}% paired CI [{format_number(iv.low)}, {format_number(iv.high)}] straddles {bound_text(gate)}{note}", worse, p_value)
    ptxt = f" (Wilcoxon p={format_number(p_value)})" if p_value is not None else ""
    detail = f"{what}{ptxt}, {'within' if ok else 'outside'} {bound_text(gate)}" + ("" if ok else f"; worse on: {name_list(worse)}") + f"{note}."
    return gate_result(gate, model, passed=ok, observed=diff, detail=detail, failing=worse, p_value=p_value)
