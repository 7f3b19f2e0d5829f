"""Gate metric adapter_applied: an adapter whose outputs equal its base's on every item was not applied."""

from __future__ import annotations

from ...config import GateSpec
from ...types import GateResult
from ..api import (
    MetricContext,
    gate_result,
    item_label,
    metric,
    select_items,
    undecided,
)


@metric("adapter_applied")
def _adapter_applied(gate: GateSpec, model: str, ctx: MetricContext) -> GateResult:
    info = ctx.models.get(model) or {}
    adapter = info.get("adapter")
    if not adapter:
        return gate_result(gate, model, passed=True, observed=None, detail=f"{model} has no adapter, so there is nothing to check.")
    base = next(
        (n for n, m in ctx.models.items() if n != model and not m.get("adapter") and m.get("path") and m.get("path") == info.get("path")),
        None,
    ) or (ctx.baseline if ctx.baseline and ctx.baseline != model else None)
    if base is None:
        return undecided(gate, model, None, None, f"no model in this run shares {model}'s base ({info.get('path')}) without an adapter, and there is no baseline")
    index = {(it.suite, it.suite_version, it.sample_id): it for it in ctx.items if it.model == base}
    sel = select_items(gate, ctx.items, model)
    several = len({it.suite for it in sel}) > 1
    pairs = [(it, index.get((it.suite, it.suite_version, it.sample_id))) for it in sel]
    def answer(it):  # what the adapter changes: the output, or a log-likelihood item's log-probabilities
        return it.loglikelihoods if it.scored_by_loglikelihood else it.output

    pairs = [(c, b) for c, b in pairs if b is not None and answer(c) is not None and answer(b) is not None]
    if not pairs:
        return undecided(gate, model, None, None, f"{model} and {base} have no item with outputs on both", missing_data=True)
    same = [item_label(c, several) for c, b in pairs if b is not None and answer(c) == answer(b)]
    share_diff = 1.0 - len(same) / len(pairs)
    if len(same) == len(pairs):
        detail = f"{model} (adapter {adapter}) gave exactly {base}'s output on all {len(pairs)} items: the adapter was probably not applied."
        return gate_result(gate, model, passed=False, observed=share_diff, detail=detail, failing=same)
    detail = f"{model}'s outputs differ from {base}'s on {len(pairs) - len(same)} of {len(pairs)} items, so the adapter is applied."
    return gate_result(gate, model, passed=True, observed=share_diff, detail=detail)
