"""Early stopping: gates decided on anytime-valid bounds while the items arrive in blocks.

With ``early_stop`` a run draws its items in a seeded random order (golden ``must_pass`` items
first), one block at a time, and after each block asks every gate whether it is decided:

- ``pass_rate`` with ``min`` or ``max`` (each item's pass fraction), ``pass_rate`` with ``vs`` a model of
  the run (each pair's difference, mapped to [0, 1]), ``mean`` on a known scale (validators' [0, 1], a
  judge's rubric scale) and ``regressions`` (each pair's regression, against ``(max + 1) / items``;
  a count already past ``max`` fails at once, exactly) are tested by betting
  (``stats.sequential_test``): decided when one capital process passes 1/alpha at a block end. A
  wrong decision has probability at most alpha however many blocks were looked at. A gate still
  undecided when every item is in has no decision (its confidence bounds straddle the threshold).
- ``must_pass`` is decided once its golden items are in (they come first);
  ``adapter_applied`` on the items so far.
- Every other gate needs every item: the run goes on to the end.

The run stops at the first block end where every gate of every candidate is decided. alpha is the
gate's ``significant``, else ``1 - ci``, else 0.05.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Callable, Literal, Sequence

from .. import stats
from ..config import GateSpec
from ..record import RunItem
from ..types import GateResult, stable_hash
from .core import _all_validators_pass, _broken, _fmt, _select, _value

SEQUENTIAL = ("pass_rate", "mean", "regressions")
ON_ANY_ITEMS = ("adapter_applied",)


def order_key(seed: int, suite: str, sample_id: str, golden: bool) -> tuple[int, str]:
    """An item's place in an early-stopping run: golden items first, then a seeded random order that
    depends on the item alone (any subset of items keeps its relative order, so a re-gate reproduces it).
    """
    return (0 if golden else 1, stable_hash({"seed": seed, "suite": suite, "id": sample_id}, 16))


@dataclass(frozen=True)
class Status:
    """One gate x model after a block: decided or not, and (for a tested gate) its decision."""

    decided: bool
    kind: str  # sequential | golden | any_items | all_items
    passed: bool | None = None
    detail: str = ""
    bound: float | None = None
    used: int = 0  # scope items seen
    total: int = 0  # scope items in the suite


def alpha_of(gate: GateSpec) -> float:
    if gate.significant is not None:
        return float(gate.significant)
    if gate.ci is not None:
        return 1.0 - float(gate.ci)
    return 0.05


def _pass_fraction(it: RunItem, scorer: str | None) -> float | None:
    if scorer is None:
        v = _all_validators_pass(it)
        return None if v is None else float(v)
    counted = it.pass_count(scorer)
    return None if counted is None else counted[0] / counted[1]


def _observations(gate: GateSpec, model: str, items: Sequence[RunItem], ref: str | None,
                  scale: tuple[float, float] | None) -> tuple[list[tuple[RunItem, float]], float] | None:
    """The per-item [0, 1] observations of a tested gate (in the items' order) and its threshold on that
    scale; None when the gate cannot be tested sequentially.
    """
    sel = _select(gate, items, model)
    if gate.metric == "regressions":
        index = {(it.suite, it.sample_id): it for it in items if it.model == ref}
        obs = []
        for it in sel:
            r = index.get((it.suite, it.sample_id))
            if r is None:
                continue
            c, b = _pass_fraction(it, gate.scorer), _pass_fraction(r, gate.scorer)
            if c is not None and b is not None:
                obs.append((it, 1.0 if (b == 1.0 and c < 1.0) else 0.0))
        return obs, math.nan  # its threshold depends on the suite's size: set by the caller
    bound = gate.min if gate.min is not None else gate.max
    if bound is None or (gate.min is not None and gate.max is not None):
        return None
    if gate.metric == "pass_rate" and gate.vs is None:
        return [(it, v) for it in sel if (v := _pass_fraction(it, gate.scorer)) is not None], float(bound)
    if gate.metric == "pass_rate":
        index = {(it.suite, it.sample_id): it for it in items if it.model == ref}
        obs = []
        for it in sel:
            r = index.get((it.suite, it.sample_id))
            c, b = _pass_fraction(it, gate.scorer), (_pass_fraction(r, gate.scorer) if r is not None else None)
            if c is not None and b is not None:
                obs.append((it, (c - b + 1) / 2))
        return obs, (float(bound) + 1) / 2
    if gate.metric == "mean" and gate.vs is None and scale is not None and gate.scorer:
        lo, hi = scale
        vals = [(it, (v - lo) / (hi - lo)) for it in sel if (v := _value(it, gate.scorer)) is not None]
        return vals, (float(bound) - lo) / (hi - lo)
    return None


def status(gate: GateSpec, model: str, items: Sequence[RunItem], *, total: int, complete: bool, looks: Callable[[Sequence[RunItem]], list[int]],
           ref: str | None, scale: tuple[float, float] | None, golden_in: bool) -> Status:
    """Whether ``gate`` is decided for ``model`` on the items so far (``complete``: every item is in)."""
    sel = _select(gate, items, model)
    if gate.metric == "must_pass":
        return Status(golden_in or complete, "golden", used=len(sel), total=total)
    if gate.metric in ON_ANY_ITEMS:
        return Status(bool(sel), "any_items", used=len(sel), total=total)
    supported = gate.metric in SEQUENTIAL and gate.k is None and gate.vs != "last_accepted" and (gate.metric != "mean" or gate.vs is None)
    got = _observations(gate, model, items, ref, scale) if supported else None
    if got is None:
        return Status(complete, "all_items", used=len(sel), total=total)
    obs, theta = got
    refs = [it for it in items if it.model == ref] if ref else []
    if any(_broken(it, gate.scorer) for it in [*sel, *(r for r in refs if gate.suite in (None, r.suite))]):
        # a failed generation or score: the gate's own rules for missing data decide, on every item
        return Status(complete, "all_items", used=len(sel), total=total)
    alpha = alpha_of(gate)
    x = [v for _, v in obs]
    if gate.metric == "regressions":
        count = int(sum(x))
        limit = float(gate.max if gate.max is not None else 0)
        if count > limit:  # regressions only accumulate: the full suite fails too
            return Status(True, "sequential", False, f"{count} regressions after {len(sel)} of {total} items, past max {_fmt(limit)}: "
                          "the whole suite cannot have fewer", float(count), len(sel), total)
        theta = min(1.0, (limit + 1) / max(total, 1))
        dec = stats.sequential_test(x, theta, alpha=alpha, looks=looks([it for it, _ in obs]))
        if dec.side == "below":
            return Status(True, "sequential", True, f"after {dec.at} of {total} items the regression rate is below {_fmt(theta)} "
                          f"(its {int(round((1 - alpha) * 100))}% anytime-valid upper bound {_fmt(dec.high)}: fewer than "
                          f"{_fmt(limit + 1)} expected over the suite)", dec.high, len(sel), total)
        return Status(complete, "sequential", None, _undecided_text(dec, theta, total, "regression rate"), dec.high, len(sel), total)
    dec = stats.sequential_test(x, theta, alpha=alpha, looks=looks([it for it, _ in obs]))
    above_wins = gate.min is not None  # min: the mean must be above; max: below
    conf = int(round((1 - alpha) * 100))

    def back(v: float) -> float:  # a bound on the gate's own scale
        if gate.metric == "pass_rate" and gate.vs is not None:
            return 2 * v - 1
        if gate.metric == "mean" and scale is not None:
            return scale[0] + v * (scale[1] - scale[0])
        return v

    if dec.side is None:
        return Status(complete, "sequential", None, _undecided_text(dec, theta, total, "mean", back), None, len(sel), total)
    ok = (dec.side == "above") == above_wins
    bound = back(dec.low if dec.side == "above" else dec.high)
    word = "lower" if dec.side == "above" else "upper"
    rel = ">" if dec.side == "above" else "<"
    thr = gate.min if gate.min is not None else gate.max
    return Status(True, "sequential", ok, f"decided after {dec.at} of {total} items: the {conf}% anytime-valid {word} bound "
                  f"{_fmt(bound)} {rel} {_fmt(thr)}", bound, len(sel), total)


def _undecided_text(dec: stats.SequentialDecision, theta: float, total: int, what: str, back: Callable[[float], float] = lambda v: v) -> str:
    return (f"undecided after {dec.at} of {total} items: the anytime-valid bounds [{_fmt(back(dec.low))}, {_fmt(back(dec.high))}] "
            f"on the {what} still straddle {_fmt(back(theta))}")


def looks_for(block_ends: Sequence[int], order: dict[tuple[str, str], int]) -> Callable[[Sequence[RunItem]], list[int]]:
    """For a gate's observations (items in draw order): how many of them were in at each block end."""
    def looks(obs_items: Sequence[RunItem]) -> list[int]:
        pos = [order[(it.suite, it.sample_id)] for it in obs_items]
        out: list[int] = []
        for end in block_ends:
            k = sum(1 for p in pos if p < end)
            if k and (not out or k != out[-1]):
                out.append(k)
        return out
    return looks


def evaluate(gates: Sequence[GateSpec], items: Sequence[RunItem], *, seed: int, block_ends: Sequence[int], totals: dict[tuple[str, str], int],
             complete: bool, candidates: Sequence[str], baseline: str | None, scale_of: Callable[[str], tuple[float, float] | None],
             golden_total: int) -> dict[tuple[int, str], Status]:
    """Every gate x candidate's :class:`Status` on the items so far (``totals``: items per (suite, tag-or-"")
    scope key in the whole run, see :func:`scope_total`).
    """
    keys = sorted({(it.suite, it.sample_id, bool(it.sample.get("must_pass"))) for it in items}, key=lambda k: order_key(seed, k[0], k[1], k[2]))
    order = {(s, i): n for n, (s, i, _) in enumerate(keys)}
    ordered = sorted(items, key=lambda it: order[(it.suite, it.sample_id)])
    golden_seen = sum(1 for k in keys if k[2])
    looks = looks_for(block_ends, order)
    out: dict[tuple[int, str], Status] = {}
    for gi, gate in enumerate(gates):
        for model in ([gate.model] if gate.model else list(candidates)):
            ref = (baseline if gate.vs in (None, "baseline") else gate.vs) if gate.metric in ("regressions", "pass_rate") else None
            out[(gi, model)] = status(gate, model, ordered, total=scope_total(gate, totals), complete=complete, looks=looks, ref=ref,
                                      scale=(0.0, 1.0) if gate.metric == "mean" and gate.scorer and scale_of(gate.scorer) is None and
                                      _validator_only(items, gate.scorer) else (scale_of(gate.scorer) if gate.scorer else None),
                                      golden_in=golden_seen >= golden_total)
    return out


def _validator_only(items: Sequence[RunItem], scorer: str) -> bool:
    scores = [it.scores[scorer] for it in items if scorer in it.scores]
    return bool(scores) and all(not s.from_judge for s in scores)


def scope_total(gate: GateSpec, totals: dict[tuple[str, str], int]) -> int:
    """Items in a gate's scope over the whole run (``totals``: (suite, tag) -> items; tag "" = all)."""
    return sum(n for (suite, tag), n in totals.items() if (gate.suite in (None, suite)) and tag == (gate.tag or ""))


def totals_of(suites: Sequence[Any]) -> dict[tuple[str, str], int]:
    """(suite, tag or "") -> items: what :func:`scope_total` reads."""
    out: dict[tuple[str, str], int] = {}
    for s in suites:
        out[(s.name, "")] = len(s.samples)
        for x in s.samples:
            for t in x.tags:
                out[(s.name, t)] = out.get((s.name, t), 0) + 1
    return out


def apply(results: Sequence[GateResult], gates: Sequence[GateSpec], statuses: dict[tuple[int, str], Status]) -> list[GateResult]:
    """The gate results of an early-stopped run: a tested gate's result is its sequential decision
    (a pass, a fail, or no decision when its bounds never left the threshold); the others as evaluated.
    """
    lookup = {(gates[gi].name, m): (gates[gi], st) for (gi, m), st in statuses.items()}
    out = []
    for r in results:
        hit = lookup.get((r.name, r.model or ""))
        if hit is None or hit[1].kind != "sequential":
            out.append(r)
            continue
        gate, st = hit
        tail = f" Early stop: {st.detail}."
        if st.passed is None:
            policy = gate.on_no_decision
            outcome: Literal["pass", "fail", "no_decision", "warn"] = "pass" if policy == "pass" else ("warn" if policy == "warn" else "no_decision")
            out.append(replace(r, passed=True if policy == "pass" else None, outcome=outcome, detail=r.detail + tail, sequential=True, bound=st.bound))
        else:
            out.append(replace(r, passed=st.passed, outcome="pass" if st.passed else "fail", detail=r.detail + tail,
                               failing_items=() if st.passed else r.failing_items, sequential=True, bound=st.bound))
    return out
