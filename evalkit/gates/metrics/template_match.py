"""Gate metric template_match: a candidate from ``evalkit train`` is served with the chat template it
was trained with (candidate.json's ``chat_template_hash`` equals the served checkpoint's).
"""

from __future__ import annotations

from ...config import GateSpec
from ...types import GateResult
from ..api import MetricContext, gate_result, metric, undecided


@metric("template_match")
def _template_match(gate: GateSpec, model: str, ctx: MetricContext) -> GateResult:
    info = ctx.models.get(model) or {}
    trained = (info.get("candidate") or {}).get("chat_template_hash")
    served = info.get("chat_template_hash")
    if not trained:
        return undecided(gate, model, None, None, f"{model} has no candidate.json with the chat template it was trained with "
                         "(an adapter or merged checkpoint from `evalkit train` records it)")
    if not served:
        return undecided(gate, model, None, None, f"the chat template {model} is served with cannot be read here ({info.get('path')} is not a local "
                         "checkpoint folder with one)")
    if served != trained:
        return gate_result(gate, model, passed=False, observed=0.0,
                           detail=f"{model} was trained with chat template {trained} but is served with {served} (from {info.get('path')}).")
    return gate_result(gate, model, passed=True, observed=1.0, detail=f"{model} is served with the chat template it was trained with ({served}).")
