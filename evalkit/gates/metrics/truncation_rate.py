"""Gate metric truncation_rate: the share of a model's generations the token limit cut
(``finish_reason`` length: an answer that did not end), naming the cut items.
"""

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
    select_items,
    threshold_met,
    undecided,
)


@metric("truncation_rate")
def _truncation_rate(gate: GateSpec, model: str, ctx: MetricContext) -> GateResult:
    sel = select_items(gate, ctx.items, model)
    several = len({it.suite for it in sel}) > 1
    gens = [(it, d) for it in sel if not it.scored_by_loglikelihood for d in it.samples if d.error is None]
    if not gens:
        return undecided(gate, model, None, gate_threshold(gate), f"no generation of {model}{gate_scope(gate)} succeeded ({len(sel)} items)", missing_data=True)
    cut = [(it, d) for it, d in gens if d.finish_reason == "length"]
    rate = len(cut) / len(gens)
    failing = list(dict.fromkeys(item_label(it, several) for it, _ in cut))
    what = f"{len(cut)} of {len(gens)} generations of {model}{gate_scope(gate)} were cut by the token limit (truncation rate {format_number(rate)})"
    ok = threshold_met(gate, rate)
    detail = f"{what}, {'within' if ok else 'outside'} {bound_text(gate)}" + ("" if ok else f"; cut: {name_list(failing)} (raise max_new_tokens, or shorten the prompts)") + "."
    return gate_result(gate, model, passed=ok, observed=rate, detail=detail, failing=failing)
