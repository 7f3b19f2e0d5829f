"""Gate metric human_unshippable: "would not ship" verdicts from blinded review, per 20 reviewed items.

The review stage (``evalkit.review``) stores each unblinded result in the store's ``review_results``
table; this gate reads them from there (the store is below the gates; the review stage above them
imports these functions, never the other way round).
"""

from __future__ import annotations

import json
from typing import Any

from ...config import GateSpec
from ...store import Store
from ...types import GateResult
from ..api import (
    MetricContext,
    gate_threshold,
    metric,
    undecided,
)

__all__ = ["human_unshippable_gate", "stored_results", "unshippable_details"]


@metric("human_unshippable")
def _human_unshippable(gate: GateSpec, model: str, ctx: MetricContext) -> GateResult:
    """At most ``max`` "would not ship" verdicts from blinded review (``max: 2`` means 2 per 20
    reviewed items). Without review results: no decision.
    """
    if ctx.store is None or ctx.run_id is None:
        return undecided(gate, model, None, gate_threshold(gate), "no review results (run `evalkit review new`, review, then `evalkit review unblind`)")
    limit = gate.max if gate.max is not None else 2.0
    r: GateResult = human_unshippable_gate(ctx.store, ctx.run_id, name=gate.name, model=model, max_count=limit, on_no_decision=gate.on_no_decision)
    if r.observed is None and r.passed is not True:
        return undecided(gate, model, None, limit, f"no review results for {model}")
    return r


def stored_results(store: Store, run_id: str | None = None) -> list[dict[str, Any]]:
    """Stored unblinded results, newest first (of one run when ``run_id`` is given)."""
    q, args = "SELECT result FROM review_results", []
    if run_id is not None:
        q += " WHERE run_id = ?"
        args.append(run_id)
    return [json.loads(r[0]) for r in store.execute(q + " ORDER BY created DESC", args)]


def unshippable_details(store: Store, run_id: str) -> dict[str, dict[str, Any]]:
    """Model -> {count, reviewed, items, session_id, run_id} from the newest unblinded review per model.

    Reviews of this run come first; for a model with none, a review of another run counts when it
    reviewed the very same outputs (same ``model_id``), so a rerun that changed nothing keeps its review.
    """
    run_id = store.get_run(run_id).run_id
    model_ids: dict[str, str] = {}
    for it in store.run_items(run_id):
        model_ids.setdefault(it.model, it.model_id)
    out: dict[str, dict[str, Any]] = {}

    def take(model: str, u: dict[str, Any], res: dict[str, Any]) -> None:
        out[model] = {
            "count": int(u["count"]), "reviewed": int(u["reviewed"]), "items": list(u.get("items") or []),
            "session_id": res["session_id"], "run_id": res["run_id"],
        }

    for res in stored_results(store, run_id):
        for model, u in res["unshippable"].items():
            if model not in out and u["reviewed"]:
                take(model, u, res)
    missing = {m: mid for m, mid in model_ids.items() if m not in out}
    if missing:
        for res in stored_results(store):
            if res["run_id"] == run_id:
                continue
            for u in res["unshippable"].values():
                for m, mid in missing.items():
                    if u.get("model_id") == mid and u["reviewed"] and m not in out:
                        take(m, u, res)
    return out


def human_unshippable_gate(
    store: Store,
    run_id: str,
    *,
    name: str,
    model: str,
    max_count: float,
    per: int = 20,
    on_no_decision: str = "fail",
) -> GateResult:
    """The ``{metric: human_unshippable, model: M, max: K}`` gate: at most K "would not ship" per ``per`` items.

    ``observed`` is the count scaled to ``per`` items; with no unblinded review of the model the gate
    has no decision (outcome per ``on_no_decision``: fail, warn or pass).
    """
    d = unshippable_details(store, run_id).get(model)
    if d is None:
        passed = {"fail": False, "warn": None, "pass": True}.get(on_no_decision, False)
        outcome = {"fail": "fail", "warn": "warn", "pass": "pass"}.get(on_no_decision, "fail")
        return GateResult(
            name, passed, None, max_count,
            f"no unblinded human review of {model} (evalkit review new/serve/unblind)",
            model=model, metric="human_unshippable", outcome=outcome,  # type: ignore[arg-type]
        )
    allowed = max_count * d["reviewed"] / per
    observed = d["count"] * per / d["reviewed"]
    ok = d["count"] <= allowed
    detail = (
        f"{d['count']} of {d['reviewed']} reviewed outputs would not ship (allowed {allowed:g}: "
        f"{max_count:g} per {per}; session {d['session_id']})"
    )
    return GateResult(
        name, ok, round(observed, 4), max_count, detail, model=model, metric="human_unshippable",
        failing_items=() if ok else tuple(d["items"]), outcome="pass" if ok else "fail",
    )
