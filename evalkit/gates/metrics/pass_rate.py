"""Gate metric pass_rate: the share of scored items a scorer passed."""

from __future__ import annotations

from ...config import GateSpec
from ...types import GateResult
from ..core import (
    _bound_text,
    _ci_straddles,
    _Ctx,
    _error_note,
    _fmt,
    _names,
    _result,
    _scope,
    _scored_passed,
    _select,
    _threshold,
    _threshold_ok,
    _undecided,
    item_label,
    metric,
)


@metric("pass_rate")
def _pass_rate(gate: GateSpec, model: str, ctx: _Ctx) -> GateResult:
    scorer = gate.scorer or ""
    sel = _select(gate, ctx.items, model)
    several = len({it.suite for it in sel}) > 1
    verdicts = [(it, _scored_passed(it, scorer)) for it in sel]
    scored = [(it, v) for it, v in verdicts if v is not None]
    unscored = len(verdicts) - len(scored)
    if not scored:
        return _undecided(gate, model, None, _threshold(gate), f"no item of {model}{_scope(gate)} was scored by '{scorer}' ({len(sel)} items, {unscored} unscored{_error_note(sel, scorer)})", missing_data=True)
    rate = sum(1 for _, v in scored if v) / len(scored)
    failing = [item_label(it, several) for it, v in scored if not v]
    note = f"; {unscored} unscored items excluded" if unscored else ""
    what = f"{scorer} pass rate of {model}{_scope(gate)} is {_fmt(rate)} ({len(scored) - len(failing)}/{len(scored)})"
    iv = _ci_straddles(gate, [1.0 if v else 0.0 for _, v in scored])
    if iv is not None:
        return _undecided(gate, model, rate, _threshold(gate), f"{what}, and its {int((gate.ci or 0.95) * 100)}% CI [{_fmt(iv.low)}, {_fmt(iv.high)}] straddles {_bound_text(gate)}{note}", failing)
    ok = _threshold_ok(gate, rate)
    detail = f"{what}, {'within' if ok else 'outside'} {_bound_text(gate)}{note}" + ("" if ok else f"; failing: {_names(failing)}") + "."
    return _result(gate, model, passed=ok, observed=rate, detail=detail, failing=failing)
