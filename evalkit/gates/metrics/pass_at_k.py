"""Gate metrics pass_at_k and pass_all_k: with K samples per item (``generation: {samples: K}``),
the share of items at least one of k samples passes (pass@k, Chen et al. 2021) or all k pass
(pass^k), each estimated without bias from the item's c passing of K, averaged over items.
"""

from __future__ import annotations

from ... import stats
from ...config import GateSpec
from ...types import GateResult
from ..api import (
    MetricContext,
    bound_text,
    error_note,
    format_number,
    gate_result,
    gate_scope,
    gate_threshold,
    item_label,
    metric,
    name_list,
    select_items,
    threshold_met,
    undecided,
)


def _per_item(gate: GateSpec, model: str, ctx: MetricContext, all_of: bool) -> GateResult:
    scorer, k = gate.scorer or "", gate.k or 1
    what_k = f"pass^{k}" if all_of else f"pass@{k}"
    sel = select_items(gate, ctx.items, model)
    several = len({it.suite for it in sel}) > 1
    counted = [(it, it.pass_count(scorer)) for it in sel]
    scored = [(it, c, n) for it, cn in counted if cn is not None for c, n in [cn]]
    unscored = len(counted) - len(scored)
    if not scored:
        return undecided(gate, model, None, gate_threshold(gate), f"no item of {model}{gate_scope(gate)} has every sample scored by '{scorer}' ({len(sel)} items{error_note(sel, scorer)})", missing_data=True)
    short = sorted({n for _, _, n in scored if n < k})
    if short:
        return undecided(gate, model, None, gate_threshold(gate), f"{what_k} needs at least {k} samples per item; {model}'s items have {short[0]}", missing_data=True)
    fn = stats.pass_all_k if all_of else stats.pass_at_k
    per = [(it, fn(n, c, k)) for it, c, n in scored]
    value = sum(v for _, v in per) / len(per)
    # the items that pull it down: no sample passes (pass@k), or some sample fails (pass^k)
    failing = [item_label(it, several) for it, c, n in scored if (c < n if all_of else c == 0)]
    note = f"; {unscored} items with an unscored sample excluded" if unscored else ""
    samples = scored[0][2]
    what = f"{scorer} {what_k} of {model}{gate_scope(gate)} is {format_number(value)} over {len(per)} items ({samples} samples each)"
    ok = threshold_met(gate, value)
    detail = f"{what}, {'within' if ok else 'outside'} {bound_text(gate)}{note}" + ("" if ok else f"; {'some sample fails' if all_of else 'no sample passes'}: {name_list(failing)}") + "."
    return gate_result(gate, model, passed=ok, observed=value, detail=detail, failing=failing)


@metric("pass_at_k")
def _pass_at_k(gate: GateSpec, model: str, ctx: MetricContext) -> GateResult:
    return _per_item(gate, model, ctx, all_of=False)


@metric("pass_all_k")
def _pass_all_k(gate: GateSpec, model: str, ctx: MetricContext) -> GateResult:
    return _per_item(gate, model, ctx, all_of=True)
