"""Gate metric must_pass: golden items (``must_pass: true`` on the sample, or the gate's ``tag:``)
that every candidate must pass. One failing is a failed gate, whatever the statistics; one that could
not be scored (a failed generation, an errored scorer) is no decision, never a pass.
"""

from __future__ import annotations

from ...config import GateSpec
from ...store import RunItem
from ...types import GateResult
from ..api import (
    MetricContext,
    all_validators_pass,
    broken_reason,
    gate_result,
    item_label,
    metric,
    name_list,
    scored_passed,
    undecided,
)


def _golden(gate: GateSpec, items: list[RunItem], model: str) -> list[RunItem]:
    return [
        it for it in items
        if it.model == model and (gate.suite is None or it.suite == gate.suite)
        and ((gate.tag is not None and gate.tag in (it.sample.get("tags") or ())) or (gate.tag is None and it.sample.get("must_pass")))
    ]


@metric("must_pass")
def _must_pass(gate: GateSpec, model: str, ctx: MetricContext) -> GateResult:
    sel = _golden(gate, list(ctx.items), model)
    which = f"tagged '{gate.tag}'" if gate.tag else "marked must_pass"
    if not sel:
        return undecided(gate, model, None, None, f"{model} has no item {which}", missing_data=True)
    several = len({it.suite for it in sel}) > 1
    judge = (lambda it: scored_passed(it, gate.scorer)) if gate.scorer else all_validators_pass
    verdicts = [(it, judge(it)) for it in sel]
    failing = [item_label(it, several) for it, v in verdicts if v is False]
    unscored = [item_label(it, several) for it, v in verdicts if v is None and broken_reason(it, gate.scorer)]
    what = f"'{gate.scorer}'" if gate.scorer else "every validator"
    if failing:
        return gate_result(gate, model, passed=False, observed=float(len(failing)),
                       detail=f"{len(failing)} of {len(sel)} items {which} fail {what} on {model}: {name_list(failing)}.", failing=failing)
    if unscored:
        return undecided(gate, model, 0.0, None, f"{len(unscored)} of {len(sel)} items {which} could not be scored on {model}: {name_list(unscored)}", unscored, missing_data=True)
    return gate_result(gate, model, passed=True, observed=0.0, detail=f"all {len(sel)} items {which} pass {what} on {model}.")
