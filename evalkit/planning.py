"""``evalkit plan``: how many items each comparison of eval.yaml needs to detect an effect.

For every gate, suite and model it asks the question a team should settle before a run: with the
noise these models show, how many items must a suite have for a true difference of ``effect`` to
be found with ``power`` at the gate's alpha? The noise comes from the latest finished run of the
same name in the store (its per-item discordance between the two models for pass/fail
comparisons, the spread of per-item differences for values); without one, from a stated
assumption. The formulas are ``evalkit.stats``'s (Connor 1987 for McNemar; the normal
approximation for paired means and one proportion), checked against statsmodels and simulation.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from . import stats
from .config import EvalConfig, GateSpec, load_eval_config
from .errors import UserError
from .gates.api import all_validators_pass, scored_passed, value_of
from .record import RunItem

#: what a plan assumes when no stored run shows the models' noise
ASSUMED_DISCORDANCE = 0.2  # a fifth of the items pass on one model and fail on the other
ASSUMED_SD = 1.0  # per-item differences of a value (a 1-5 judge score moves by about a point)
ASSUMED_WIN_SD = 0.5  # a win rate's per-item verdicts: win or loss, no ties


@dataclass(frozen=True)
class PlanRow:
    suite: str
    gate: str
    model: str
    metric: str
    items_needed: int | None  # None: no such test, or the effect cannot be detected this way
    items_now: int
    basis: str  # where the noise figure came from, in words


@dataclass
class PowerPlan:
    effect: float
    power: float
    run_id: str | None  # the stored run the noise was measured on
    rows: list[PlanRow] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"effect": self.effect, "power": self.power, "run": self.run_id, "suites": [asdict(r) for r in self.rows]}


def plan_power(config_path: str | Path, *, effect: float, power: float = 0.8, store: str | Path | None = None) -> PowerPlan:
    """The items every comparison gate of ``config_path`` needs, per suite and model."""
    if not 0 < effect < 1:
        raise UserError(f"must lie strictly between 0 and 1 (a difference in pass rate or a share), got {effect:g}", where="--effect")
    if not 0 < power < 1:
        raise UserError(f"must lie strictly between 0 and 1, got {power:g}", where="--power")
    config_path = Path(config_path)
    cfg = load_eval_config(config_path)
    suites = _suite_sizes(cfg, config_path)
    run_id, items = _latest_items(cfg, config_path, store)
    plan = PowerPlan(effect=effect, power=power, run_id=run_id)
    for gate in cfg.gates:
        models = [gate.model] if gate.model else cfg.candidate_names()
        for suite in ([gate.suite] if gate.suite else list(suites)):
            for model in models:
                needed, basis = _needed(gate, model, suite, cfg, items, effect, power)
                plan.rows.append(PlanRow(suite, gate.name, model, gate.metric, needed, suites.get(suite, 0), basis))
    return plan


def render(plan: PowerPlan) -> str:
    head = (f"items needed to detect an effect of {plan.effect:g} with power {plan.power:g} "
            + (f"(noise measured on run {plan.run_id})" if plan.run_id else "(no finished run of this config in the store: assumed noise)"))
    rows = [("suite", "gate", "model", "needed", "now", "basis")]
    for r in plan.rows:
        rows.append((r.suite, r.gate, r.model, "–" if r.items_needed is None else str(r.items_needed), str(r.items_now), r.basis))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = [head]
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row[:5], widths)) + "  " + row[5])
    short = [r for r in plan.rows if r.items_needed is not None and r.items_needed > r.items_now]
    if short:
        lines.append(f"{len(short)} of {len(plan.rows)} gate checks need more items than their suite has: "
                     + ", ".join(f"{r.gate} on {r.suite} ({r.items_now} of {r.items_needed})" for r in short[:5]))
    return "\n".join(lines)


def _suite_sizes(cfg: EvalConfig, config_path: Path) -> dict[str, int]:
    from .data.suites import load_suite

    out: dict[str, int] = {}
    for i, s in enumerate(cfg.suites):
        path = Path(s) if Path(s).is_absolute() else config_path.resolve().parent / s
        if not path.exists():
            raise UserError(f"suites[{i}]: suite folder not found: {path}", where=config_path)
        suite = load_suite(path)
        out[suite.name] = len(suite.samples)
    return out


def _latest_items(cfg: EvalConfig, config_path: Path, store: str | Path | None) -> tuple[str | None, list[RunItem]]:
    """The latest finished run of this config's name in the store, and its items (none: no store yet)."""
    from ._util.location import is_postgres_url
    from .store import Store, chosen_store, store_target

    configured = None
    if cfg.store:
        configured = cfg.store if is_postgres_url(cfg.store) else str(config_path.resolve().parent / cfg.store)
    target = store_target(chosen_store(store, configured))
    if isinstance(target, Path) and not target.is_file():
        return None, []
    name = cfg.name or config_path.stem
    st = Store(target, create=False)
    try:
        run = next((r for r in st.list_runs(limit=200) if r.summary is not None and r.name == name), None)
        return (run.run_id, st.run_items(run.run_id)) if run else (None, [])
    finally:
        st.close()


def _needed(gate: GateSpec, model: str, suite: str, cfg: EvalConfig, items: Sequence[RunItem], effect: float, power: float) -> tuple[int | None, str]:
    alpha = gate.significant or 0.05
    mine = {it.sample_id: it for it in items if it.model == model and it.suite == suite}
    if gate.metric in ("regressions", "pass_rate") and (gate.vs is not None or gate.metric == "regressions"):
        ref = cfg.baseline if gate.vs in (None, "baseline", "last_accepted") else gate.vs
        theirs = {it.sample_id: it for it in items if it.model == ref and it.suite == suite}
        pairs = [(_passed(theirs[k], gate.scorer), _passed(v, gate.scorer)) for k, v in mine.items() if k in theirs]
        pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
        if pairs:
            psi = sum(1 for a, b in pairs if a != b) / len(pairs)
            basis = f"McNemar; {psi:.3g} of {len(pairs)} pairs with {ref} discordant"
            if psi < effect:  # a difference of `effect` makes at least that share discordant
                psi, basis = effect, basis + f" (raised to {effect:g}: the effect itself needs that many)"
        else:
            psi, basis = max(ASSUMED_DISCORDANCE, effect), f"McNemar; assumed discordance {max(ASSUMED_DISCORDANCE, effect):g} (no stored pairs)"
        return stats.n_mcnemar(effect, psi, alpha=alpha, power=power), basis
    if gate.metric == "pass_rate":  # one pass rate against its threshold
        p0 = gate.min if gate.min is not None else None
        if p0 is None or not 0 < p0 < 1 or effect >= p0:
            return None, "no threshold a shortfall of this size could fall below"
        return stats.n_one_proportion(effect, p0, alpha=alpha, power=power), f"one proportion below min {p0:g} (one-sided)"
    if gate.metric in ("mean", "win_rate"):
        if gate.metric == "win_rate":
            key = gate.judge or gate.scorer or "pairwise"
            diffs = [s.value - 0.5 for it in mine.values() for n, s in it.scores.items() if n in (key, f"judge.{key}") and s.value is not None and not s.error]
            assumed = ASSUMED_WIN_SD
        elif gate.vs is not None:
            ref = cfg.baseline if gate.vs in ("baseline", "last_accepted") else gate.vs
            theirs = {it.sample_id: it for it in items if it.model == ref and it.suite == suite}
            diffs = [b - a for k, v in mine.items() if k in theirs
                     for a, b in [(_value(theirs[k], gate.scorer), _value(v, gate.scorer))] if a is not None and b is not None]
            assumed = ASSUMED_SD
        else:
            diffs = [v for it in mine.values() if (v := _value(it, gate.scorer)) is not None]
            assumed = ASSUMED_SD
        if len(diffs) >= 2:
            m = sum(diffs) / len(diffs)
            sd = math.sqrt(sum((d - m) ** 2 for d in diffs) / (len(diffs) - 1))
            basis = f"paired values; sd {sd:.3g} over {len(diffs)} items"
        else:
            sd, basis = assumed, f"paired values; assumed sd {assumed:g} (no stored scores)"
        if sd == 0:
            return 2, basis + " (no spread: any difference shows)"
        return stats.n_paired_mean(effect, sd, alpha=alpha, power=power), basis
    return None, f"{gate.metric} is not a statistical comparison"


def _passed(it: RunItem, scorer: str | None) -> bool | None:
    """The gates' own reading of an item: one scorer, or every validator (``regressions`` without one)."""
    return scored_passed(it, scorer) if scorer else all_validators_pass(it)


def _value(it: RunItem, scorer: str | None) -> float | None:
    return value_of(it, scorer or "")
