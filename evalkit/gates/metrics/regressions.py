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
