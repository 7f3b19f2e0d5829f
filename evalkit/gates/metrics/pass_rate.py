"""Gate metric pass_rate: the share of scored items a scorer passed."""

from __future__ import annotations

from ... import stats
from ...config import GateSpec
from ...types import GateResult
from ..api import (
    MetricContext,
    bound_text,
    broken_reason,
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
    note_mde_paired,
    note_test,
    scored_passed,
    select_items,
    threshold_met,
    undecided,
)


@metric("pass_rate")
def _pass_rate(gate: GateSpec, model: str, ctx: MetricContext) -> GateResult:
    if gate.vs is not None:
        return _pass_rate_vs(gate, model, ctx)
    scorer = gate.scorer or ""
    sel = select_items(gate, ctx.items, model)
    several = len({it.suite for it in sel}) > 1
    if any(it.draws for it in sel):
        return _pass_rate_samples(gate, model, sel, scorer, several)
    verdicts = [(it, scored_passed(it, scorer)) for it in sel]
    scored = [(it, v) for it, v in verdicts if v is not None]
    unscored = len(verdicts) - len(scored)
    if not scored:
        return undecided(gate, model, None, gate_threshold(gate), f"no item of {model}{gate_scope(gate)} was scored by '{scorer}' ({len(sel)} items, {unscored} unscored{error_note(sel, scorer)})", missing_data=True)
    rate = sum(1 for _, v in scored if v) / len(scored)
    failing = [item_label(it, several) for it, v in scored if not v]
    note = f"; {unscored} unscored items excluded" if unscored else ""
    what = f"{scorer} pass rate of {model}{gate_scope(gate)} is {format_number(rate)} ({len(scored) - len(failing)}/{len(scored)})"
    iv = ci_straddles(gate, [1.0 if v else 0.0 for _, v in scored])
    if iv is not None:
        return undecided(gate, model, rate, gate_threshold(gate), f"{what}, and its {int((gate.ci or 0.95) * 100)}% Wilson CI [{format_number(iv.low)}, {format_number(iv.high)}] straddles {bound_text(gate)}{note}", failing)
    ok = threshold_met(gate, rate)
    detail = f"{what}, {'within' if ok else 'outside'} {bound_text(gate)}{note}" + ("" if ok or not failing else f"; failing: {name_list(failing)}") + "."
    return gate_result(gate, model, passed=ok, observed=rate, detail=detail, failing=failing)


def _pass_rate_samples(gate: GateSpec, model: str, sel: list, scorer: str, several: bool) -> GateResult:
    """K samples per item: the mean pass over every sample (pass@1), its CI a bootstrap over items of
    their pass fractions (clustered by item: an item's samples are not independent evidence).
    """
    counted = [(it, it.pass_count(scorer)) for it in sel]
    scored = [(it, c, n) for it, cn in counted if cn is not None for c, n in [cn]]
    unscored = len(counted) - len(scored)
    if not scored:
        return undecided(gate, model, None, gate_threshold(gate), f"no item of {model}{gate_scope(gate)} has every sample scored by '{scorer}' ({len(sel)} items, {unscored} with an unscored sample{error_note(sel, scorer)})", missing_data=True)
    fractions = [c / n for _, c, n in scored]
    rate = sum(c for _, c, _ in scored) / sum(n for _, _, n in scored)
    failing = [item_label(it, several) for it, c, n in scored if c < n]
    flaky = sum(1 for _, c, n in scored if 0 < c < n)
    note = f"; {unscored} items with an unscored sample excluded" if unscored else ""
    what = (f"{scorer} pass rate of {model}{gate_scope(gate)} is {format_number(rate)} over {len(scored)} items x {scored[0][2]} samples "
            f"({flaky} flaky: some samples pass, some fail)")
    iv = ci_straddles(gate, fractions)
    if iv is not None:
        return undecided(gate, model, rate, gate_threshold(gate), f"{what}, and its {int((gate.ci or 0.95) * 100)}% CI clustered by item [{format_number(iv.low)}, {format_number(iv.high)}] straddles {bound_text(gate)}{note}", failing)
    ok = threshold_met(gate, rate)
    detail = f"{what}, {'within' if ok else 'outside'} {bound_text(gate)}{note}" + ("" if ok else f"; items with a failing sample: {name_list(failing)}") + "."
    return gate_result(gate, model, passed=ok, observed=rate, detail=detail, failing=failing)


def _pass_rate_vs(gate: GateSpec, model: str, ctx: MetricContext) -> GateResult:
    """``pass_rate`` with ``vs``: the paired difference in pass rate (model - vs) on the items both
    scored; McNemar's exact test on the discordant pairs; the paired bootstrap CI; the regressions
    (pass on ``vs``, fail on ``model``) are the failing items.

    ``min: 0`` with ``significant`` asks for a significant improvement; a negative ``min`` is a
    non-inferiority margin (the difference may not fall below it). Pairs that could not be scored
    count against the candidate in a worst case: when that case would cross the bound, no decision.
    """
    scorer = gate.scorer or ""
    cmp = compare_with_reference(gate, model, ctx, "compare")
    if isinstance(cmp, GateResult):
        return cmp
    ref, pairs, missing = cmp.ref, cmp.pairs, cmp.missing
    several = len({c.suite for c, _ in pairs}) > 1
    if any(c.draws or r.draws for c, r in pairs):
        return _pass_rate_vs_samples(gate, model, ctx, ref.label, pairs, missing, several)
    ref_pass: list[bool] = []
    cand_pass: list[bool] = []
    regressed: list[str] = []
    n_broken = 0
    for c, r in pairs:
        pc, pr = scored_passed(c, scorer), scored_passed(r, scorer)
        if pc is None or pr is None:
            n_broken += bool(broken_reason(c, scorer) or broken_reason(r, scorer))
            continue
        ref_pass.append(pr)
        cand_pass.append(pc)
        if pr and not pc:
            regressed.append(item_label(c, several))
    n = len(ref_pass)
    if n < gate.min_pairs:
        return undecided(gate, model, None, gate_threshold(gate), f"only {n} of {len(pairs)} pairs of {model} and {ref.label}{gate_scope(gate)} were scored by '{scorer}' (min_pairs {gate.min_pairs})", missing_data=True)
    fixed = sum(1 for r, c in zip(ref_pass, cand_pass) if c and not r)
    note_mde_paired(ctx, gate, model, ref_pass, cand_pass)
    diff = (sum(cand_pass) - sum(ref_pass)) / n
    note = (f"; {n_broken} pairs unscored" if n_broken else "") + (f"; {missing} items not in {ref.label}" if missing else "")
    what = (f"{scorer} pass rate of {model}{gate_scope(gate)} differs from {ref.label} by {diff:+.4g} over {n} paired items "
            f"({sum(cand_pass)}/{n} vs {sum(ref_pass)}/{n}; {len(regressed)} regressed, {fixed} fixed)")
    ok = threshold_met(gate, diff)
    if ok and n_broken:
        worst = (sum(cand_pass) - sum(ref_pass) - n_broken) / (n + n_broken)
        if not threshold_met(gate, worst):
            return undecided(gate, model, diff, gate_threshold(gate), f"{what}, but {n_broken} unscored pairs could each be a regression (worst case {worst:+.4g}, outside {bound_text(gate)})", regressed, missing_data=True)
    p_value = None
    if gate.significant is not None:
        t = stats.mcnemar_exact(ref_pass, cand_pass)
        p_value = t.p_value
        note_test(ctx, gate, model, t.test)
        improvement_asked = gate.min is not None and gate.min >= 0
        if ok and improvement_asked and not (p_value < gate.significant and fixed > len(regressed)):
            detail = f"{what}, at least min {format_number(gate.min)} but not a significant improvement (McNemar exact p={format_number(p_value)}, alpha {format_number(gate.significant)}){note}."
            return gate_result(gate, model, passed=False, observed=diff, detail=detail, failing=regressed, p_value=p_value)
        if not ok and gate.max is not None and gate.min is None and not (p_value < gate.significant and fixed > len(regressed)):
            detail = f"{what}, above max {format_number(gate.max)} but not significantly (McNemar exact p={format_number(p_value)}, alpha {format_number(gate.significant)}){note}."
            return gate_result(gate, model, passed=True, observed=diff, detail=detail, failing=regressed, p_value=p_value, outcome="warn")
    iv = ci_straddles_diff(gate, [1.0 if v else 0.0 for v in ref_pass], [1.0 if v else 0.0 for v in cand_pass])
    if iv is not None:
        return undecided(gate, model, diff, gate_threshold(gate), f"{what}, and its {int((gate.ci or 0.95) * 100)}% paired CI [{format_number(iv.low)}, {format_number(iv.high)}] straddles {bound_text(gate)}{note}", regressed, p_value)
    ptxt = f" (McNemar exact p={format_number(p_value)})" if p_value is not None else ""
    detail = f"{what}{ptxt}, {'within' if ok else 'outside'} {bound_text(gate)}" + ("" if ok else f"; regressed: {name_list(regressed)}") + f"{note}."
    return gate_result(gate, model, passed=ok, observed=diff, detail=detail, failing=regressed, p_value=p_value)


def _pass_rate_vs_samples(gate: GateSpec, model: str, ctx: MetricContext, ref_label: str, pairs: list, missing: int, several: bool) -> GateResult:
    """``vs`` with K samples per item: the paired difference of per-item pass fractions, Wilcoxon's
    signed-rank test on them (``significant``), and a paired bootstrap CI over items (clustered).
    """
    scorer = gate.scorer or ""
    rows = []
    for c, r in pairs:
        cc, rr = c.pass_count(scorer), r.pass_count(scorer)
        if cc is not None and rr is not None:
            rows.append((c, cc[0] / cc[1], rr[0] / rr[1]))
    n = len(rows)
    if n < gate.min_pairs:
        return undecided(gate, model, None, gate_threshold(gate), f"only {n} of {len(pairs)} pairs of {model} and {ref_label}{gate_scope(gate)} have every sample scored by '{scorer}' (min_pairs {gate.min_pairs})", missing_data=True)
    fc, fr = [x[1] for x in rows], [x[2] for x in rows]
    diff = (sum(fc) - sum(fr)) / n
    worse = [item_label(c, several) for c, a, b in sorted(rows, key=lambda t: t[1] - t[2]) if a < b]
    better = sum(1 for _, a, b in rows if a > b)
    note = (f"; {len(pairs) - n} pairs with an unscored sample" if len(pairs) > n else "") + (f"; {missing} items not in {ref_label}" if missing else "")
    what = (f"{scorer} pass rate of {model}{gate_scope(gate)} differs from {ref_label} by {diff:+.4g} over {n} paired items "
            f"(per-item pass fractions over their samples; {len(worse)} lower, {better} higher)")
    ok = threshold_met(gate, diff)
    dropped = len(pairs) - n
    if ok and dropped:
        worst = (sum(fc) - sum(fr) - dropped) / (n + dropped)  # each unscored pair a full regression
        if not threshold_met(gate, worst):
            return undecided(gate, model, diff, gate_threshold(gate), f"{what}, but {dropped} pairs have an unscored sample and could each be a regression "
                             f"(worst case {worst:+.4g}, outside {bound_text(gate)})", worse, missing_data=True)
    p_value = None
    if gate.significant is not None:
        p_value = stats.wilcoxon_signed_rank(fr, fc).p_value
        note_test(ctx, gate, model, "wilcoxon_pass_fractions")
        what += f" (Wilcoxon signed-rank p={format_number(p_value)})"
        if ok and gate.min is not None and gate.min >= 0 and not (p_value < gate.significant and better > len(worse)):
            return gate_result(gate, model, passed=False, observed=diff, detail=f"{what}, at least min {format_number(gate.min)} but not a significant improvement (alpha {format_number(gate.significant)}){note}.", failing=worse, p_value=p_value)
    iv = ci_straddles_diff(gate, fr, fc)
    if iv is not None:
        return undecided(gate, model, diff, gate_threshold(gate), f"{what}, and its {int((gate.ci or 0.95) * 100)}% paired CI clustered by item [{format_number(iv.low)}, {format_number(iv.high)}] straddles {bound_text(gate)}{note}", worse, p_value)
    detail = f"{what}, {'within' if ok else 'outside'} {bound_text(gate)}" + ("" if ok else f"; lower: {name_list(worse)}") + f"{note}."
    return gate_result(gate, model, passed=ok, observed=diff, detail=detail, failing=worse, p_value=p_value)
