"""Gate metric regressions: items that pass on the compared model and fail on the candidate (McNemar exact)."""

from __future__ import annotations

from typing import Callable

from ... import stats
from ...config import GateSpec
from ...store import RunItem
from ...types import GateResult
from ..api import (
    MetricContext,
    all_validators_pass,
    bound_text,
    broken_reason,
    compare_with_reference,
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
    threshold_met,
    undecided,
)


@metric("regressions")
def _regressions(gate: GateSpec, model: str, ctx: MetricContext) -> GateResult:
    cmp = compare_with_reference(gate, model, ctx, "count regressions of")
    if isinstance(cmp, GateResult):
        return cmp
    ref, pairs, missing = cmp.ref, cmp.pairs, cmp.missing
    if not pairs:
        return undecided(gate, model, None, gate_threshold(gate), f"{model} and {ref.label} share no item{gate_scope(gate)} on the same suite version", missing_data=True)
    several = len({c.suite for c, _ in pairs}) > 1
    if gate.scorer and any(c.draws or r.draws for c, r in pairs):
        return _regressions_samples(gate, model, ctx, ref.label, pairs, missing, several)
    judge_of: Callable[[RunItem], bool | None] = (lambda it: scored_passed(it, gate.scorer)) if gate.scorer else all_validators_pass  # type: ignore[arg-type]
    what = f"'{gate.scorer}'" if gate.scorer else "every validator"
    ref_pass: list[bool] = []
    cand_pass: list[bool] = []
    regressed: list[str] = []
    fixed = 0
    broken: dict[str, int] = {}  # why a pair could not be compared -> count
    for c, r in pairs:
        pc, pr = judge_of(c), judge_of(r)
        if pc is None or pr is None:
            for side, it in ((model, c), (ref.label, r)):
                why = broken_reason(it, gate.scorer)
                if why:
                    broken[f"{why} on {side}"] = broken.get(f"{why} on {side}", 0) + 1
                    break
            continue
        ref_pass.append(pr)
        cand_pass.append(pc)
        if pr and not pc:
            regressed.append(item_label(c, several))
        elif pc and not pr:
            fixed += 1
    n = len(ref_pass)
    count = float(len(regressed))
    n_broken = sum(broken.values())
    why_broken = ", ".join(f"{k}: {v}" for k, v in sorted(broken.items(), key=lambda kv: -kv[1]))
    if n < gate.min_pairs:
        return undecided(
            gate, model, None, gate_threshold(gate),
            f"only {n} of {len(pairs)} pairs of {model} and {ref.label}{gate_scope(gate)} could be compared by {what} "
            f"(min_pairs {gate.min_pairs})" + (f"; unscored: {why_broken}" if why_broken else ""),
            missing_data=True,
        )
    note_mde_paired(ctx, gate, model, ref_pass, cand_pass)
    note = (f"; {len(pairs) - n} pairs unscored" if len(pairs) > n else "") + (f" ({why_broken})" if why_broken else "") + (f"; {missing} items not in {ref.label}" if missing else "")
    what_s = f"{len(regressed)} of {n} items{gate_scope(gate)} pass {what} on {ref.label} and fail on {model} ({fixed} the other way)"
    ok = threshold_met(gate, count)
    if ok and n_broken and not threshold_met(gate, count + n_broken):
        # the pairs that failed to score could each be a regression: the gate cannot say "no regression"
        return undecided(
            gate, model, count, gate_threshold(gate),
            f"{what_s}, but {n_broken} pairs could not be scored ({why_broken}) and could hide regressions beyond {bound_text(gate)}",
            regressed, missing_data=True,
        )
    p_value = None
    if gate.significant is not None:
        t = stats.mcnemar_exact(ref_pass, cand_pass)
        p_value = t.p_value
        note_test(ctx, gate, model, t.test)
        if not ok:
            if p_value < gate.significant and len(regressed) > fixed:
                detail = f"{what_s}, above {bound_text(gate)}, a significant change for the worse (McNemar exact p={format_number(p_value)} < {format_number(gate.significant)}): {name_list(regressed)}{note}."
                return gate_result(gate, model, passed=False, observed=count, detail=detail, failing=regressed, p_value=p_value)
            detail = f"{what_s}, above {bound_text(gate)} but not significantly worse (McNemar exact p={format_number(p_value)}, alpha {format_number(gate.significant)}): {name_list(regressed)}{note}."
            return gate_result(gate, model, passed=True, observed=count, detail=detail, failing=regressed, p_value=p_value, outcome="warn")
    if ok:
        detail = f"{what_s}, within {bound_text(gate)}{note}."
    else:
        detail = f"{what_s}, above {bound_text(gate)}: {name_list(regressed)}{note}."
    return gate_result(gate, model, passed=ok, observed=count, detail=detail, failing=regressed, p_value=p_value)


def _regressions_samples(gate: GateSpec, model: str, ctx: MetricContext, ref_label: str, pairs: list, missing: int, several: bool) -> GateResult:
    """K samples per item: an item regressed when fewer of the candidate's samples pass than of the
    reference's; the paired test is Wilcoxon's signed-rank on the per-item pass fractions; the count
    is read against the reference's own noise floor (the items expected to flip between two runs of
    it, from its samples), and is no decision inside that floor when the gate says ``noise: no_decision``.
    """
    scorer = gate.scorer or ""
    rows = []
    for c, r in pairs:
        cc, rr = c.pass_count(scorer), r.pass_count(scorer)
        if cc is not None and rr is not None:
            rows.append((c, cc[0] / cc[1], rr[0] / rr[1], rr))
    n = len(rows)
    if n < gate.min_pairs:
        return undecided(gate, model, None, gate_threshold(gate), f"only {n} of {len(pairs)} pairs of {model} and {ref_label}{gate_scope(gate)} have every sample scored by '{scorer}' (min_pairs {gate.min_pairs})", missing_data=True)
    regressed = [item_label(c, several) for c, fc, fr, _ in sorted(rows, key=lambda t: t[1] - t[2]) if fc < fr]
    fixed = sum(1 for _, fc, fr, _ in rows if fc > fr)
    floor = sum(stats.flip_probability(k, c) for *_, (c, k) in rows)
    count = float(len(regressed))
    note = (f"; {len(pairs) - n} pairs with an unscored sample" if len(pairs) > n else "") + (f"; {missing} items not in {ref_label}" if missing else "")
    what_s = (f"{len(regressed)} of {n} items{gate_scope(gate)} pass '{scorer}' in fewer samples on {model} than on {ref_label} ({fixed} the other way); "
              f"{ref_label}'s own noise floor is {format_number(floor)} items expected to flip between two of its runs")
    p_value = None
    if gate.significant is not None:
        p_value = stats.wilcoxon_signed_rank([fr for _, _, fr, _ in rows], [fc for _, fc, _, _ in rows]).p_value
        note_test(ctx, gate, model, "wilcoxon_pass_fractions")
        what_s += f" (Wilcoxon signed-rank on per-item pass fractions p={format_number(p_value)})"
    ok = threshold_met(gate, count)
    dropped = len(pairs) - n
    if ok and dropped and not threshold_met(gate, count + dropped):
        # the pairs with an unscored sample could each be a regression: the gate cannot say "no regression"
        return undecided(gate, model, count, gate_threshold(gate),
                         f"{what_s}, but {dropped} pairs have an unscored sample and could hide regressions beyond {bound_text(gate)}",
                         regressed, missing_data=True)
    if not ok and count <= floor:
        if gate.noise == "no_decision":
            return undecided(gate, model, count, gate_threshold(gate), f"{what_s}: the count is above {bound_text(gate)} but inside that noise floor (noise: no_decision)", regressed, p_value)
        what_s += ", inside that noise floor"
    if not ok and gate.significant is not None and p_value is not None and not (p_value < gate.significant and len(regressed) > fixed):
        return gate_result(gate, model, passed=True, observed=count, detail=f"{what_s}, above {bound_text(gate)} but not significantly worse: {name_list(regressed)}{note}.",
                           failing=regressed, p_value=p_value, outcome="warn")
    detail = f"{what_s}, {'within' if ok else 'above'} {bound_text(gate)}" + ("" if ok else f": {name_list(regressed)}") + f"{note}."
    return gate_result(gate, model, passed=ok, observed=count, detail=detail, failing=regressed, p_value=p_value)
