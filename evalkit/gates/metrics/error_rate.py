"""Gate metric error_rate: the share of items whose generation (or a named scorer) failed."""

from __future__ import annotations

from ...config import GateSpec
from ...types import GateResult
from ..api import (
    MetricContext,
    bound_text,
    format_number,
    gate_result,
    gate_scope,
    gate_threshold,
    item_label,
    metric,
    name_list,
    score_of,
    select_items,
    threshold_met,
    undecided,
)


@metric("error_rate")
def _error_rate(gate: GateSpec, model: str, ctx: MetricContext) -> GateResult:
    sel = select_items(gate, ctx.items, model)
    several = len({it.suite for it in sel}) > 1
    if not sel:
        return undecided(gate, model, None, gate_threshold(gate), f"{model} has no items{gate_scope(gate)}", missing_data=True)
    if gate.scorer:
        errs = [it for it in sel if it.error or (sc := score_of(it, gate.scorer)) is not None and sc.error]
        what = f"'{gate.scorer}' errors"
    else:
        errs = [it for it in sel if it.error]
        what = "generation errors"
    rate = len(errs) / len(sel)
    failing = [item_label(it, several) for it in errs]
    ok = threshold_met(gate, rate)
    detail = f"{model}{gate_scope(gate)} has {len(errs)}/{len(sel)} items with {what} (rate {format_number(rate)}), {'within' if ok else 'outside'} {bound_text(gate)}" + ("" if ok else f": {name_list(failing)}") + "."
    return gate_result(gate, model, passed=ok, observed=rate, detail=detail, failing=failing)
