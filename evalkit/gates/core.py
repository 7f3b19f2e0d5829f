"""The gates' shared machinery: eval.yaml's ``gates:`` rules turned into ``GateResult``s with a
reason and the items to blame. Each metric is a module of ``evalkit.gates.metrics`` that registers
itself with :func:`metric`.

One entry point, :func:`evaluate_gates`. Each gate reads the run's items (from the store, never live
objects) and answers pass / fail / no decision / warn:

- a gate without ``model:`` applies to every candidate (one result each); ``suite:`` and ``tag:``
  narrow the items it looks at;
- ``min`` / ``max`` are checked with ``is not None``: ``min: 0`` is a real threshold;
- ``ci: 0.95`` asks for "no decision" when the bootstrap CI of the observed value straddles the
  threshold, and a ``mean`` gate on a judge score with repeats is undecided when the threshold lies
  within the judges' own noise; ``on_no_decision`` (fail | warn | pass) says what that means;
- ``significant: ALPHA`` runs a paired test (McNemar exact for regressions, Wilcoxon for a mean
  with ``vs``, the sign test for a win rate) and puts its ``p_value`` on the result. ``min`` gates
  must show their improvement (threshold met *and* p < ALPHA in the candidate's favour) to pass;
  ``max`` gates fail only on a significant change for the worse (otherwise: warn).

Every failing result names its items (``failing_items``: sample ids, or ``suite/sample_id`` when the
gate spans several suites) and says why in one sentence (``detail``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Mapping, Sequence

from .. import stats
from ..config import GateSpec
from ..record import JudgeStats, RunItem
from ..store import Store, latest_noise
from ..types import GateResult, Score, stable_hash

# ---------------------------------------------------------------------------------------------
# public helpers


def candidate_verdicts(results: Sequence[GateResult], candidates: Sequence[str]) -> dict[str, bool]:
    """Per candidate: would it ship on its own? True when none of its gate results blocks (and no
    run-wide result does). With several candidates this says which one to ship; the run's own
    verdict (and exit code) still needs every result to pass.
    """
    run_wide = any(blocks(r) for r in results if r.model is None)
    return {c: not run_wide and not any(blocks(r) for r in results if r.model == c) for c in candidates}


def blocks(result: GateResult) -> bool:
    """Whether this result makes the run fail (exit code 1): a fail, or an undecided gate that
    resolves to fail (outcome ``no_decision``). ``warn`` never blocks.
    """
    return result.outcome in ("fail", "no_decision")


def all_passed(results: Iterable[GateResult]) -> bool:
    """The run's verdict: True when no gate result blocks."""
    return not any(blocks(r) for r in results)


def item_label(item: RunItem, several_suites: bool) -> str:
    return f"{item.suite}/{item.sample_id}" if several_suites else item.sample_id


def unknown_names(
    gate: GateSpec,
    *,
    suites: dict[str, tuple[set[str], set[str]]],
    judge_scores: set[str],
    pairwise_judges: set[str],
) -> str | None:
    """Why ``gate`` names a suite, tag, scorer or judge the run does not have, or None.

    ``suites``: suite name -> (its validators' names, its samples' tags). Checked before any model is
    called: a typo (``scorer: json_vaild``) would otherwise end in an undecided gate, which
    ``on_no_decision: warn`` turns into a pass.
    """
    if gate.suite is not None and gate.suite not in suites:
        return f"gate '{gate.name}': suite '{gate.suite}' is not in this run (suites: {', '.join(sorted(suites))})"
    scope = [gate.suite] if gate.suite else list(suites)
    if gate.tag is not None:
        tags = set().union(*(suites[n][1] for n in scope))
        if gate.tag not in tags:
            known = ", ".join(sorted(tags)) or "none"
            return f"gate '{gate.name}': no sample{' of suite ' + gate.suite if gate.suite else ''} carries tag '{gate.tag}' (tags: {known})"
    if gate.metric == "win_rate":
        judge = gate.judge or gate.scorer or "pairwise"
        if not any(judge == n or f"judge.{judge}" == n or n.startswith(f"{judge}.") for n in pairwise_judges):
            known = ", ".join(sorted(pairwise_judges)) or "none configured"
            return f"gate '{gate.name}': no pairwise judge named '{judge}' (pairwise judges: {known})"
    elif gate.scorer is not None:
        validators = set().union(*(suites[n][0] for n in scope))
        if gate.scorer not in validators and gate.scorer not in judge_scores:
            known = ", ".join(sorted(validators | judge_scores)) or "none"
            return f"gate '{gate.name}': no scorer named '{gate.scorer}'{' in suite ' + gate.suite if gate.suite else ''} (scorers: {known})"
    return None


@dataclass(frozen=True)
class _Ctx:
    items: Sequence[RunItem]
    models: dict[str, dict]
    baseline: str | None
    candidates: list[str]
    store: Store | None
    run_name: str | None
    run_id: str | None
    judge_stats: Mapping[str, JudgeStats] | None = None
    # (id of the gate spec, model) -> what changed since the last accepted run: set by _compare, taken by _with_changes
    changes: dict[tuple[int, str], "_Changes"] = field(default_factory=dict)
    # the last accepted run's items, read once per run id (every vs: last_accepted gate and model uses them)
    accepted_items: dict[str, list[RunItem]] = field(default_factory=dict)
    # (id of the gate spec, model) -> the comparison's minimum detectable effect: set by a metric, taken by _evaluate_one
    mdes: dict[tuple[int, str], float] = field(default_factory=dict)
    # (id of the gate spec, model) -> the name of the test behind the result's p_value
    tests: dict[tuple[int, str], str] = field(default_factory=dict)
    # the latest `evalkit noise` result of this config, read once ("latest" once looked up)
    noise: dict[str, Any] = field(default_factory=dict)


def evaluate_gates(
    gates: list[GateSpec],
    *,
    items: list[RunItem],
    models: dict[str, dict],
    baseline: str | None,
    candidates: list[str],
    store: Store | None = None,
    run_name: str | None = None,
    run_id: str | None = None,
    judge_stats: Mapping[str, JudgeStats | Mapping[str, Any]] | None = None,
) -> list[GateResult]:
    """Evaluate every gate for every model it applies to, in config order.

    ``models`` is summary.json's ``models`` block (name -> {backend, path, adapter, ...});
    ``store``/``run_name`` are needed for ``vs: last_accepted`` (the newest accepted run, of the
    same name when one is given, other than ``run_id``); ``run_id`` (default: the items' run id)
    also feeds ``human_unshippable``. ``judge_stats`` is summary.json's ``judges`` block: with it, a
    ``mean`` or ``win_rate`` gate whose threshold lies inside a judge's band across repeats has no
    decision (the judge stage's ``threshold_in_judge_noise``).
    """
    if run_id is None and items:
        run_id = items[0].run_id or None  # the run stage builds items under this run's id
    stats_ = {k: v if isinstance(v, JudgeStats) else JudgeStats.model_validate(v) for k, v in (judge_stats or {}).items()}
    ctx = _Ctx(items, models, baseline, list(candidates), store, run_name, run_id, stats_)
    out: list[GateResult] = []
    for gate in gates:
        targets = [gate.model] if gate.model else list(candidates)
        if not targets:
            out.append(_undecided(gate, None, None, _threshold(gate), "no candidate model to gate (set 'candidates' or the gate's 'model')", missing_data=True))
            continue
        for model in targets:
            out.append(_evaluate_one(gate, model, ctx))
    return out


def _threshold(gate: GateSpec) -> float | None:
    return gate.min if gate.min is not None else gate.max


def _select(gate: GateSpec, items: Iterable[RunItem], model: str) -> list[RunItem]:
    return [
        it
        for it in items
        if it.model == model
        and (gate.suite is None or it.suite == gate.suite)
        and (gate.tag is None or gate.tag in (it.sample.get("tags") or ()))
    ]


def _scope(gate: GateSpec) -> str:
    parts = []
    if gate.suite:
        parts.append(f"suite {gate.suite}")
    if gate.tag:
        parts.append(f"tag {gate.tag}")
    return f" ({', '.join(parts)})" if parts else ""


def _fmt(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if float(x).is_integer() and abs(x) >= 1:
        return str(int(x))
    return f"{x:.4g}"


def _names(labels: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(labels[:limit])
    more = f" and {len(labels) - limit} more" if len(labels) > limit else ""
    return shown + more


def _threshold_ok(gate: GateSpec, observed: float) -> bool:
    if gate.min is not None and observed < gate.min:
        return False
    if gate.max is not None and observed > gate.max:
        return False
    return True


def _bound_text(gate: GateSpec) -> str:
    parts = []
    if gate.min is not None:
        parts.append(f"min {_fmt(gate.min)}")
    if gate.max is not None:
        parts.append(f"max {_fmt(gate.max)}")
    return " and ".join(parts)


def _result(
    gate: GateSpec,
    model: str | None,
    *,
    passed: bool,
    observed: float | None,
    detail: str,
    failing: Sequence[str] = (),
    p_value: float | None = None,
    outcome: str | None = None,
) -> GateResult:
    return GateResult(
        name=gate.name,
        passed=passed,
        observed=observed,
        threshold=_threshold(gate),
        detail=detail,
        model=model,
        metric=gate.metric,
        failing_items=tuple(failing) if not passed or outcome == "warn" else (),
        p_value=p_value,
        outcome=outcome or ("pass" if passed else "fail"),  # type: ignore[arg-type]
    )


def _undecided(
    gate: GateSpec,
    model: str | None,
    observed: float | None,
    threshold: float | None,
    why: str,
    failing: Sequence[str] = (),
    p_value: float | None = None,
    *,
    missing_data: bool = False,
) -> GateResult:
    """A gate the data cannot decide; ``on_no_decision`` says what that means for the run.

    ``missing_data``: undecided because outputs or scores are missing (failed generations, errored
    scorers or judges), not because the statistics are close. That always blocks: a broken run must
    never pass through ``on_no_decision: warn`` or ``pass``.
    """
    policy = gate.on_no_decision
    if missing_data:
        outcome, passed, tail = "no_decision", None, " (blocks the run: the data is missing, whatever on_no_decision says)"
    elif policy == "pass":
        outcome, passed, tail = "pass", True, " (counted as a pass: on_no_decision is 'pass')"
    elif policy == "warn":
        outcome, passed, tail = "warn", None, " (a warning: on_no_decision is 'warn')"
    else:
        outcome, passed, tail = "no_decision", None, " (blocks the run: on_no_decision is 'fail')"
    return GateResult(
        name=gate.name,
        passed=passed,
        observed=observed,
        threshold=threshold,
        detail=f"No decision: {why}{tail}.",
        model=model,
        metric=gate.metric,
        failing_items=tuple(failing),
        p_value=p_value,
        outcome=outcome,  # type: ignore[arg-type]
    )


def _ci_straddles(gate: GateSpec, values: Sequence[float]) -> stats.Interval | None:
    """The CI when the gate asks for one and it straddles a threshold, else None."""
    if gate.ci is None or len(values) < 2:
        return None
    # a pass rate: Wilson's score interval (right at small n); a mean: the percentile bootstrap
    iv = stats.pass_rate_ci(values, confidence=gate.ci) if stats.is_binary(values) else stats.bootstrap_ci(values, confidence=gate.ci)
    for t in (gate.min, gate.max):
        if t is not None and iv.straddles(t):
            return iv
    return None


def _ci_straddles_diff(gate: GateSpec, a: Sequence[float], b: Sequence[float]) -> stats.Interval | None:
    if gate.ci is None or len(a) < 2:
        return None
    iv = stats.paired_bootstrap_diff_ci(a, b, confidence=gate.ci)
    for t in (gate.min, gate.max):
        if t is not None and iv.straddles(t):
            return iv
    return None


def _score(item: RunItem, scorer: str) -> Score | None:
    return item.scores.get(scorer)


def _scored_passed(item: RunItem, scorer: str) -> bool | None:
    """True/False for a scored item; None when the scorer is missing, errored or undecided."""
    s = _score(item, scorer)
    if s is None or s.error or s.passed is None:
        return None
    return bool(s.passed)


def pairwise_length_diffs(scored: Sequence[tuple[RunItem, float]], key: str, items: Iterable[RunItem]) -> list[float] | None:
    """Characters of the candidate's output minus the compared model's, per scored pairwise item.

    The judge stage records it (``details.length_diff``); items judged before it did fall back to the
    two stored outputs. None when some pair has neither (the length-controlled rate cannot be computed).
    """
    outputs: dict[tuple[str, str, str], str | None] | None = None
    out: list[float] = []
    for it, _ in scored:
        sc = it.scores.get(key)
        details = sc.details if sc is not None else {}
        d = details.get("length_diff")
        if isinstance(d, (int, float)):
            out.append(float(d))
            continue
        if outputs is None:
            outputs = {(x.model, x.suite, x.sample_id): x.output for x in items}
        other = outputs.get((str(details.get("vs")), it.suite, it.sample_id))
        if other is None or it.output is None:
            return None
        out.append(float(len(it.output) - len(other)))
    return out


def _broken(item: RunItem, scorer: str | None) -> str | None:
    """Why an item cannot be scored because something failed (generation, scorer, judge), or None.

    An item a scorer does not apply to (``tags:`` on the scorer) is not broken, only out of scope.
    """
    if item.error:
        return "generation failed"
    if scorer is None:
        bad = [n for n, s in item.scores.items() if not s.from_judge and s.error]
        return f"'{bad[0]}' errored" if bad else None
    s = _score(item, scorer)
    if s is not None and s.error:
        return f"'{scorer}' errored"
    return None


def _error_note(items: Sequence[RunItem], scorer: str | None) -> str:
    reasons: dict[str, int] = {}
    for it in items:
        why = _broken(it, scorer)
        if why:
            reasons[why] = reasons.get(why, 0) + 1
    return "".join(f"; {n} {why}" for why, n in sorted(reasons.items(), key=lambda kv: -kv[1]))


def _all_validators_pass(item: RunItem) -> bool | None:
    """"Every validator passes" for one item: judge scores ignored, errored scores make it unscored."""
    vals = [s for name, s in item.scores.items() if not s.from_judge]
    if not vals or any(s.error or s.passed is None for s in vals):
        return None
    return all(bool(s.passed) for s in vals)


def _value(item: RunItem, scorer: str) -> float | None:
    s = _score(item, scorer)
    if s is None or s.error or s.value is None:
        return None
    try:
        v = float(s.value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


def _calibrated_gate(gate: GateSpec, model: str, sel: Sequence[RunItem], key: str, what_of: str) -> GateResult:
    """A ``calibrate:`` gate (``mean`` of a judge scorer, ``win_rate`` of a pairwise judge): the PPI++
    estimate of the mean human label from the labels file and the judge's ``key`` scores on ``sel``;
    ``ci`` asks for no decision while its interval straddles the bound.
    """
    from ..scoring.labels import MIN_LABELS, read_labels

    labels = [lab for lab in read_labels(str(gate.calibrate)) if lab.model == model]
    scored = [(it, v) for it in sel if (v := _value(it, key)) is not None]
    found: dict[int, float] = {}
    for lab in labels:
        for k, (it, _) in enumerate(scored):
            if it.sample_id == lab.sample_id and lab.suite in (None, it.suite):
                found[k] = lab.value
    if len(found) < MIN_LABELS:
        return _undecided(gate, model, None, _threshold(gate), f"{len(found)} of the {len(labels)} human labels for {model} are on items its judge "
                          f"scored{_scope(gate)}; calibration needs at least {MIN_LABELS}{_error_note(sel, key)}", missing_data=True)
    conf = gate.ci or 0.95
    y = [found[k] for k in sorted(found)]
    yh = [scored[k][1] for k in sorted(found)]
    yu = [v for k, (_, v) in enumerate(scored) if k not in found]
    est = stats.ppi_mean(y, yh, yu, confidence=conf)
    judge_mean = sum(v for _, v in scored) / len(scored)
    what = (f"calibrated {what_of} of {model}{_scope(gate)} is {_fmt(est.mean)} (PPI++ from {len(y)} human labels and the judge's "
            f"scores on {len(yu)} more items; {int(conf * 100)}% CI [{_fmt(est.ci.low)}, {_fmt(est.ci.high)}]; the judge alone says "
            f"{_fmt(judge_mean)}, the labels alone {_fmt(sum(y) / len(y))})")
    unscored = len(sel) - len(scored)
    note = f"; {unscored} unscored items excluded" if unscored else ""
    bound = gate.min if gate.min is not None else gate.max
    calibration = {"scorer": key, "judge_mean": judge_mean, "human_mean": sum(y) / len(y), "ci": [est.ci.low, est.ci.high],
                   "confidence": conf, "n_labeled": len(y), "n_unlabeled": len(yu)}
    if gate.ci is not None and bound is not None and est.ci.straddles(bound):
        return replace(_undecided(gate, model, est.mean, _threshold(gate), f"{what}, and the interval straddles {_bound_text(gate)}{note}"),
                       calibration=calibration)
    ok = _threshold_ok(gate, est.mean)
    return replace(_result(gate, model, passed=ok, observed=est.mean, detail=f"{what}, {'within' if ok else 'outside'} {_bound_text(gate)}{note}."),
                   calibration=calibration)


def _judge_noise_se(items: Sequence[RunItem], scorer: str) -> float | None:
    """Standard error of a mean that comes from the judges' own disagreement between repeats.

    Items carry ``details.std`` (and ``details.repeats`` or ``details.n`` when known) for a judge
    score averaged over repeats; the mean of n such scores has judge-noise variance
    sum(std_i^2 / repeats_i) / n^2.
    """
    var = 0.0
    n = 0
    seen = False
    for it in items:
        s = _score(it, scorer)
        if s is None or s.error or s.value is None:
            continue
        n += 1
        d = s.details
        if d.get("noise_gate") is False:  # the judge was configured with noise: ignore
            return None
        std = d.get("std")
        if std is None:
            continue
        seen = True
        reps = d.get("repeats") or d.get("n") or 1
        try:
            var += float(std) ** 2 / max(float(reps), 1.0)
        except (TypeError, ValueError):
            continue
    if not seen or n == 0:
        return None
    return math.sqrt(var) / n


def _judge_noise_band(ctx: _Ctx, model: str, scorer: str) -> tuple[float, float] | None:
    """The judge stage's band across repeats for (model, scorer), when it recorded one."""
    if not ctx.judge_stats:
        return None
    from ..scoring.judges import judge_noise_band

    return judge_noise_band(ctx.judge_stats, model, scorer)


def _in_noise(gate: GateSpec, ctx: _Ctx, model: str, scorer: str, observed: float, items: Sequence[RunItem]) -> str | None:
    """Why the threshold lies within the judges' own noise, or None. The judge stage's band across
    repeats (summary['judges']) wins; else the standard error from per-item ``details.std``.
    """
    band = _judge_noise_band(ctx, model, scorer)
    if band is not None:
        for t in (gate.min, gate.max):
            if t is not None and band[0] <= t <= band[1]:
                return f"{_bound_text(gate)} lies within the judges' own noise (repeats span {_fmt(band[0])} to {_fmt(band[1])})"
        return None
    se = _judge_noise_se(items, scorer)
    if se is not None and se > 0:
        half = stats.z_for(gate.ci or 0.95) * se
        for t in (gate.min, gate.max):
            if t is not None and abs(observed - t) < half:
                return f"{_bound_text(gate)} lies within the judges' own noise (±{_fmt(half)} between repeats)"
    return None


_NO_HISTORY = "\x00no-history:"


def _first_run(gate: GateSpec, model: str, why: str) -> GateResult:
    """``vs: last_accepted`` before any run was accepted: nothing to compare with, so a warning
    (the first run of a project must be able to pass), never a silent pass.
    """
    return _result(gate, model, passed=True, observed=None, detail=f"Nothing to compare {model} with: {why.removeprefix(_NO_HISTORY)}.", outcome="warn")


@dataclass(frozen=True)
class _Reference:
    label: str  # for sentences: "baseline base", "last accepted run 2026...:cand"
    items: list[RunItem]


def _reference(gate: GateSpec, model: str, ctx: _Ctx) -> _Reference | str:
    """The items to compare ``model`` with, or a sentence saying why there are none."""
    vs = gate.vs or "baseline"
    if vs == "last_accepted":
        if ctx.store is None:
            return "no store to find the last accepted run in"
        rec = ctx.store.last_accepted(name=ctx.run_name, before=ctx.run_id)
        if rec is None:
            return _NO_HISTORY + "no accepted run in the store yet" + (f" named '{ctx.run_name}'" if ctx.run_name else "") + " (mark one with `evalkit accept RUN`)"
        if rec.run_id not in ctx.accepted_items:
            ctx.accepted_items[rec.run_id] = ctx.store.run_items(rec.run_id)
        old_items = ctx.accepted_items[rec.run_id]
        old_models = {it.model for it in old_items}
        if model in old_models:
            ref_model = model
        else:
            cands = list((rec.summary or {}).get("candidates") or [])
            ref_model = next((c for c in cands if c in old_models), None) or (sorted(old_models)[0] if old_models else "")
        return _Reference(f"the last accepted run {rec.run_id} ({ref_model})", [it for it in old_items if it.model == ref_model])
    ref = ctx.baseline if vs == "baseline" else vs
    if not ref:
        return "no baseline is set for this run"
    if ref == model:
        return f"{model} is the model it would be compared with"
    return _Reference(f"{'baseline ' if vs == 'baseline' else ''}{ref}", [it for it in ctx.items if it.model == ref])


def content_hash(item: RunItem) -> str:
    """What an item asks and expects (messages and reference): equal hashes compare across runs."""
    extra = {k: item.sample[k] for k in ("prompt", "choices", "answer", "text") if k in item.sample}  # log-likelihood items
    return stable_hash({"messages": item.sample.get("messages"), "reference": item.sample.get("reference"), **extra})


@dataclass(frozen=True)
class _Changes:
    """Items of the gated suites that differ from the last accepted run's (by suite and id, then content)."""

    added: list[str]
    removed: list[str]
    changed: list[str]
    compared: int = 0  # pairs both runs share unchanged

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)

    def sentence(self, ref: str) -> str:
        parts = [f"{len(xs)} {what} ({_names(xs)})" for what, xs in (("added", self.added), ("removed", self.removed), ("changed", self.changed)) if xs]
        return f"The suite changed since {ref}: " + ", ".join(parts)


def _pairs(gate: GateSpec, model: str, ref: _Reference, ctx: _Ctx) -> tuple[list[tuple[RunItem, RunItem]], int, _Changes]:
    """(candidate item, reference item) pairs, how many candidate items had no comparable reference
    item, and (``vs: last_accepted``) what changed since that run.

    Within one run items pair on suite version and sample id. Across runs (``last_accepted``) they
    pair on suite and sample id when their content (messages and reference) is the same, so a suite
    that gained, lost or edited items still compares the ones both runs asked alike.
    """
    sel = _select(gate, ctx.items, model)
    several = len({it.suite for it in sel}) > 1
    if gate.vs != "last_accepted":
        index = {(it.suite, it.suite_version, it.sample_id): it for it in ref.items}
        out: list[tuple[RunItem, RunItem]] = []
        missing = 0
        for it in sel:
            r = index.get((it.suite, it.suite_version, it.sample_id))
            if r is None:
                missing += 1
            else:
                out.append((it, r))
        return out, missing, _Changes([], [], [])
    old = {(it.suite, it.sample_id): it for it in (_select(gate, ref.items, ref.items[0].model) if ref.items else [])}
    suites = {it.suite for it in sel}
    added, changed, pairs = [], [], []
    for it in sel:
        r = old.get((it.suite, it.sample_id))
        if r is None:
            added.append(item_label(it, several))
        elif r.suite_version == it.suite_version or content_hash(r) == content_hash(it):
            pairs.append((it, r))
        else:
            changed.append(item_label(it, several))
    now = {(it.suite, it.sample_id) for it in sel}
    removed = [item_label(r, several) for k, r in sorted(old.items()) if k not in now and r.suite in suites]
    return pairs, 0, _Changes(added, removed, changed, len(pairs))


@dataclass(frozen=True)
class _Comparison:
    ref: _Reference
    pairs: list[tuple[RunItem, RunItem]]
    missing: int  # candidate items with no comparable reference item


def _compare(gate: GateSpec, model: str, ctx: _Ctx, doing: str) -> _Comparison | GateResult:
    """The paired items of a ``vs`` gate, or the result when there is nothing to compare with: a
    warning on a project's first run (``last_accepted`` with nothing accepted), else no decision.
    ``doing`` completes "cannot ... {model}" in that sentence. Across runs, a changed suite is
    handled here by ``on_changed_items`` (fail now, or compare the unchanged common items).
    """
    ref = _reference(gate, model, ctx)
    if isinstance(ref, str):
        if ref.startswith(_NO_HISTORY):
            return _first_run(gate, model, ref)
        return _undecided(gate, model, None, _threshold(gate), f"cannot {doing} {model}: {ref}")
    pairs, missing, changes = _pairs(gate, model, ref, ctx)
    if changes:
        if gate.on_changed_items == "fail":
            failing = changes.changed + changes.added
            return _result(gate, model, passed=False, observed=None, failing=failing,
                           detail=f"{changes.sentence(ref.label)}; on_changed_items is 'fail' (compare_common would compare the {len(pairs)} items both runs share unchanged).")
        ctx.changes[(id(gate), model)] = changes
    return _Comparison(ref, pairs, missing)


def _with_changes(gate: GateSpec, model: str, result: GateResult, ctx: _Ctx) -> GateResult:
    """State what changed since the last accepted run in the detail; ``warn`` turns a pass into a warning."""
    changes = ctx.changes.pop((id(gate), model), None)
    if not changes:
        return result
    policy = gate.on_changed_items or "compare_common"
    tail = f" {changes.sentence('the last accepted run')}; compared the {changes.compared} items both runs share unchanged (on_changed_items: {policy}"
    tail += ", the default)." if gate.on_changed_items is None else ")."
    if policy == "warn" and result.outcome == "pass":
        return replace(result, passed=None, outcome="warn", detail=f"{result.detail}{tail} A warning: on_changed_items is 'warn'.", failing_items=tuple(changes.changed + changes.added))
    return replace(result, detail=f"{result.detail}{tail}")


# --- the metric registry (each metric module registers itself) ------------------------------

MetricFn = Callable[[GateSpec, str, "_Ctx"], GateResult]
METRICS: dict[str, MetricFn] = {}


def metric(name: str) -> Callable[[MetricFn], MetricFn]:
    """Register a gate metric under ``name`` (what eval.yaml's ``metric:`` says)."""

    def deco(fn: MetricFn) -> MetricFn:
        METRICS[name] = fn
        return fn

    return deco


def metric_names() -> list[str]:
    """The gate metrics implemented (``evalkit.gates`` imports ``gates.metrics`` before anything of
    ``core`` runs, so every module has registered itself); config validation reads the declared
    names in ``evalkit.registries``, and a test checks that the two agree.
    """
    return sorted(METRICS)


def _evaluate_one(gate: GateSpec, model: str, ctx: "_Ctx") -> GateResult:
    result = _with_changes(gate, model, METRICS[gate.metric](gate, model, ctx), ctx)
    mde = ctx.mdes.pop((id(gate), model), None)
    if mde is not None and result.mde is None:
        result = replace(result, mde=mde)
    test = ctx.tests.pop((id(gate), model), None)
    if test is not None and result.p_value is not None and result.test is None:
        result = replace(result, test=test)
    note = _measured_noise(gate, model, ctx) if gate.metric == "regressions" or (gate.metric == "pass_rate" and gate.vs) else ""
    return replace(result, detail=f"{result.detail} {note}") if note else result


def _measured_noise(gate: GateSpec, model: str, ctx: "_Ctx") -> str:
    """What `evalkit noise` measured for the compared models on the gate's suites, in one sentence."""
    if "latest" not in ctx.noise:
        ctx.noise["latest"] = latest_noise(ctx.store, ctx.run_name)
    noise = ctx.noise["latest"]
    if not noise or noise.get("model") not in (model, ctx.baseline if gate.vs in (None, "baseline") else gate.vs):
        return ""
    parts = []
    for suite, per in sorted((noise.get("suites") or {}).items()):
        if gate.suite not in (None, suite):
            continue
        v = per.get(gate.scorer) if gate.scorer else max(per.values(), key=lambda x: len(x.get("flipped") or []), default=None)
        if v and v.get("n"):
            parts.append(f"{len(v.get('flipped') or [])} of {v['n']} on {suite}")
    if not parts:
        return ""
    return (f"Measured noise of {noise['model']} (evalkit noise, run {noise.get('run_id')}, {noise.get('runs')} runs): "
            f"{', '.join(parts)} items flipped between runs of the same model.")


def _note_test(ctx: "_Ctx", gate: GateSpec, model: str, test: str) -> None:
    """Record which test a metric's p_value comes from (summary.json's ``test`` beside ``p_value``)."""
    ctx.tests[(id(gate), model)] = test


POWER = 0.8  # the power a comparison gate's minimum detectable effect is stated at


def _note_mde_paired(ctx: "_Ctx", gate: GateSpec, model: str, ref_pass: Sequence[bool], cand_pass: Sequence[bool]) -> None:
    """Record the MDE of a paired pass/fail comparison (McNemar: its n and discordance)."""
    n = len(ref_pass)
    discordant = sum(1 for r, c in zip(ref_pass, cand_pass) if r != c)
    mde = stats.mde_mcnemar(n, discordant / n, alpha=gate.significant or 0.05, power=POWER) if n and discordant else None
    if mde is not None:
        ctx.mdes[(id(gate), model)] = mde


def _note_mde_mean(ctx: "_Ctx", gate: GateSpec, model: str, diffs: Sequence[float]) -> None:
    """Record the MDE of a paired comparison of per-item values (mean differences, win rates vs 0.5)."""
    n = len(diffs)
    if n < 2:
        return
    m = sum(diffs) / n
    sd = math.sqrt(sum((d - m) ** 2 for d in diffs) / (n - 1))
    mde = stats.mde_paired_mean(n, sd, alpha=gate.significant or 0.05, power=POWER)
    if mde is not None:
        ctx.mdes[(id(gate), model)] = mde
