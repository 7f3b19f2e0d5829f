"""Gate metric human_unshippable: "would not ship" verdicts from blinded review, per 20 reviewed items."""

from __future__ import annotations

from ...config import GateSpec
from ...types import GateResult
from ..core import _Ctx, _threshold, _undecided, metric


@metric("human_unshippable")
def _human_unshippable(gate: GateSpec, model: str, ctx: _Ctx) -> GateResult:
    """At most ``max`` "would not ship" verdicts from blinded review (evalkit.review owns the counting:
    ``max: 2`` means 2 per 20 reviewed items). Without review results: no decision.
    """
    from ...review import human_unshippable_gate

    if ctx.store is None or ctx.run_id is None:
        return _undecided(gate, model, None, _threshold(gate), "no review results (run `evalkit review new`, review, then `evalkit review unblind`)")
    limit = gate.max if gate.max is not None else 2.0
    r: GateResult = human_unshippable_gate(ctx.store, ctx.run_id, name=gate.name, model=model, max_count=limit, on_no_decision=gate.on_no_decision)
    if r.observed is None and r.passed is not True:
        return _undecided(gate, model, None, limit, f"no review results for {model}")
    return r
