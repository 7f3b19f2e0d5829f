"""Gate metric error_rate: the share of items whose generation (or a named scorer) failed."""

from __future__ import annotations

from ...config import GateSpec
from ...types import GateResult
from ..core import _bound_text, _Ctx, _fmt, _names, _result, _scope, _score, _select, _threshold, _threshold_ok, _undecided, item_label, metric


@metric("error_rate")
def _error_rate(gate: GateSpec, model: str, ctx: _Ctx) -> GateResult:
    sel = _select(gate, ctx.items, model)
    several = len({it.suite for it in sel}) > 1
    if not sel:
        return _undecided(gate, model, None, _threshold(gate), f"{model} has no items{_scope(gate)}", missing_data=True)
    if gate.scorer:
        errs = [it for it in sel if it.error or (_score(it, gate.scorer) or {}).get("error")]
        what = f"'{gate.scorer}' errors"
    else:
        errs = [it for it in sel if it.error]
        what = "generation errors"
    rate = len(errs) / len(sel)
    failing = [item_label(it, several) for it in errs]
    ok = _threshold_ok(gate, rate)
    detail = f"{model}{_scope(gate)} has {len(errs)}/{len(sel)} items with {what} (rate {_fmt(rate)}), {'within' if ok else 'outside'} {_bound_text(gate)}" + ("" if ok else f": {_names(failing)}") + "."
    return _result(gate, model, passed=ok, observed=rate, detail=detail, failing=failing)
