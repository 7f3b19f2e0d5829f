"""LLM-as-judge: the run stage's entry point (``run_judges``), aggregation and judge statistics.

One *judgment* is one request: (rubric, judge model, rendered prompt, repeat index, order). Its
cache key hashes exactly those, so a rerun with nothing changed makes no judge calls, and every
judgment (rendered prompt, raw reply, verdict or error, tokens, attempts) is kept in the store for
audit. A judgment that failed is stored with its error but never served from the cache.

Judge errors are data: an item whose judgments all failed gets ``Score(value=None, error=...)`` -
counted, shown, excluded from means, never a pass and never a fail.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import threading
import time
from collections import Counter, defaultdict
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from dataclasses import replace as dc_replace
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from .._util.text import redact_url
from ..config import JudgeEntry
from ..errors import ConfigError
from ..models import open_structured
from ..models.batch import BATCH_DISCOUNT, BatchingEndpoint
from ..models.structured import (
    CallFailed,
    EndpointModel,
    FatalEndpointError,
    LocalEndpoint,
    StructuredEndpoint,
    check_api_key,
)
from ..record import JudgeStats
from ..rubrics import resolve_rubric
from ..store import Store
from ..types import Sample, Score, ScoreKind, stable_hash
from .expected import TOP_LOGPROBS, expected_scores
from .judge_models import endpoint_from_entry
from .judge_rubric import Rubric, load_rubric, parse_verdict_text

__all__ = [
    "JudgeInput",
    "PairInput",
    "JudgeOutcome",
    "run_judges",
    "JudgeSet",
    "LoadedJudge",
    "load_judges",
    "judge_config_errors",
    "judge_scorer_names",
    "judge_noise_band",
    "threshold_in_judge_noise",
    "load_rubric",
    "Rubric",
]


@dataclass(frozen=True)
class JudgeInput:
    """One output to judge (single / reference modes). Pass only outputs that exist (no generation error)."""

    model: str
    suite: str
    sample: Sample
    output: str


@dataclass(frozen=True)
class PairInput:
    """A candidate's output and its comparison model's output on one sample (pairwise mode)."""

    model: str
    vs: str
    suite: str
    sample: Sample
    output: str
    vs_output: str


@dataclass
class JudgeOutcome:
    scores: dict[tuple[str, str, str], list[Score]]  # (model, suite, sample_id) -> Scores for that item
    stats: dict[str, Any]  # summary.json["judges"]: judge name -> statistics
    errors: int  # items whose judge score is an error, over all judges -> summary["errors"]["judge"]
    calls_made: int
    calls_cached: int
    batches: list[dict[str, Any]] = field(default_factory=list)  # provider batches this stage submitted or resumed


PairsFor = Callable[[str | None], list[PairInput]]


# --- the plan: what to ask, keyed ---------------------------------------------------------------


@dataclass(frozen=True)
class _Request:
    key: str
    judge: str
    rubric: Rubric
    model: EndpointModel
    system: str
    user: str
    repeat: int
    order: str  # "" (single/reference), "ab" (candidate shown as A) or "ba"


@dataclass
class _Unit:
    """One thing to score: an item (single/reference) or a candidate-vs pair (pairwise)."""

    model: str
    suite: str
    sample_id: str
    output_len: int
    vs_len: int = 0
    vs: str | None = None
    # (judge model label, repeat, order) -> request key
    keys: dict[tuple[str, int, str], str] = field(default_factory=dict)
    skipped: str | None = None


@dataclass
class _JudgePlan:
    entry: JudgeEntry
    name: str
    rubric: Rubric
    models: list[EndpointModel]
    units: list[_Unit]


def _judge_models(entry: JudgeEntry, rubric: Rubric, where: str) -> list[EndpointModel]:
    if entry.model is not None and entry.models:
        raise ConfigError(f"{where}: set either 'model' (one judge) or 'models' (an ensemble), not both")
    entries = list(entry.models or []) or ([entry.model] if entry.model else []) or ([rubric.model] if rubric.model else [])
    if not entries:
        raise ConfigError(f"{where}: no judge model: set 'model' in eval.yaml's judges entry or in the rubric {rubric.path}")
    models = [endpoint_from_entry(e, concurrency=entry.concurrency, where=where) for e in entries]
    labels = [m.label for m in models]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise ConfigError(f"{where}: the ensemble lists {dup} more than once (use repeats: k to ask one model k times)")
    return models


def _load(judges: Sequence[JudgeEntry], config_dir: Path) -> list[tuple[JudgeEntry, str, Rubric, list[EndpointModel]]]:
    out = []
    names: set[str] = set()
    for i, entry in enumerate(judges):
        where = f"judges[{i}]"
        path = resolve_rubric(entry.rubric, config_dir, where=f"{where}.rubric")
        rubric = load_rubric(path)
        name = entry.name or rubric.name
        if name in names:
            raise ConfigError(f"{where}: two judges are named '{name}' (set 'name' on one of them)")
        names.add(name)
        if name != rubric.name:
            rubric = _renamed(rubric, name)
        if entry.scoring is not None and entry.scoring != rubric.scoring:
            if entry.scoring == "expected" and rubric.mode == "pairwise":
                raise ConfigError(f"{where}.scoring: expected weighs a criterion's integer scale; the pairwise rubric {path} has none")
            rubric = dc_replace(rubric, scoring=entry.scoring)
        models = _judge_models(entry, rubric, where)
        for m in models:
            check_api_key(m, where)
        if entry.vs is not None and rubric.mode != "pairwise":
            raise ConfigError(f"{where}.vs: only a pairwise rubric compares with another model ({path} is mode {rubric.mode})")
        out.append((entry, name, rubric, models))
    return out


def _renamed(rubric: Rubric, name: str) -> Rubric:
    from dataclasses import replace

    return replace(rubric, name=name)


@dataclass(frozen=True)
class LoadedJudge:
    """One judges entry with its rubric file read and checked and its models resolved."""

    entry: JudgeEntry
    name: str
    rubric: Rubric
    models: list[EndpointModel]


@dataclass(frozen=True)
class JudgeSet:
    """A run's judges, loaded once (``load_judges``): the plan carries it to every stage that asks."""

    judges: tuple[LoadedJudge, ...]

    def scorer_names(self) -> list[str]:
        """The score names these judges will add (``judge.correctness``, ..., ``pairwise``)."""
        names = []
        for j in self.judges:
            if j.rubric.mode == "pairwise":
                names.append(j.rubric.scorer_name())
            else:
                names.extend(j.rubric.scorer_name(c) for c in j.rubric.criterion_names)
        return names

    def score_kinds(self) -> tuple[set[str], set[str]]:
        """(criterion score names, pairwise judge names) these judges will add, for checking gates."""
        single: set[str] = set()
        pairwise: set[str] = set()
        for j in self.judges:
            if j.rubric.mode == "pairwise":
                pairwise.add(j.rubric.scorer_name())
            else:
                single.update(j.rubric.scorer_name(c) for c in j.rubric.criterion_names)
        return single, pairwise

    def rubric_hashes(self) -> dict[str, str]:
        """Judge name -> its rubric's content hash (the run record's reproducibility block)."""
        return {j.name: j.rubric.content_hash for j in self.judges}


def load_judges(judges: Sequence[JudgeEntry], config_dir: str | Path, config_path: str | Path | None = None) -> JudgeSet:
    """Read and check every judge once (rubric files, templates, schemas, models, API keys).

    Raises ConfigError naming the rubric's file:line, or the eval.yaml key (``judges[0].rubric``; with
    ``config_path``, also eval.yaml's file and line), so a run fails before it generates anything.
    """
    try:
        return JudgeSet(tuple(LoadedJudge(*t) for t in _load(judges, Path(config_dir))))
    except ConfigError as e:
        if e.where is not None or config_path is None:
            raise
        import re as _re

        from ..config import read_yaml

        m = _re.match(r"judges\[(\d+)\](?:\.(\w+))?", e.message)
        line = None
        if m:
            try:
                _, lines = read_yaml(config_path)
            except ConfigError:
                lines = {}
            i = int(m.group(1))
            line = lines.get(("judges", i, m.group(2))) if m.group(2) else None
            line = line or lines.get(("judges", i))
        raise ConfigError(e.message, where=config_path, line=line) from None


def judge_config_errors(judges: Sequence[JudgeEntry], config_dir: str | Path, config_path: str | Path | None = None) -> None:
    """``load_judges`` for its checks only."""
    load_judges(judges, config_dir, config_path)


def judge_scorer_names(judges: Sequence[JudgeEntry], config_dir: str | Path) -> list[str]:
    """The score names these judges will add (``judge.correctness``, ..., ``pairwise``)."""
    return load_judges(judges, config_dir).scorer_names()


def _judgment_key(rubric: Rubric, jm: EndpointModel, system: str, user: str, repeat: int) -> str:
    return stable_hash(
        {
            "rubric": rubric.content_hash,
            "name": rubric.name,
            "judge": jm.identity(),
            "temperature": rubric.temperature,
            "max_tokens": rubric.max_tokens,
            "system": system,
            "user": user,
            "repeat": repeat,
            # a judgment asked for log-probabilities is another request (its payload holds them); sampled keys stay as they were
            **({"scoring": "expected"} if rubric.scoring == "expected" else {}),
        },
        length=32,
    )


def _plan(entry: JudgeEntry, name: str, rubric: Rubric, models: list[EndpointModel], items: Sequence[JudgeInput], pairs: Sequence[PairInput], reqs: dict[str, _Request]) -> _JudgePlan:
    units: list[_Unit] = []

    def add(unit: _Unit, order: str, **outputs: str) -> None:
        system, user = rubric.render(sample, **outputs)
        for jm in models:
            for r in range(entry.repeats):
                key = _judgment_key(rubric, jm, system, user, r)
                unit.keys[(jm.label, r, order)] = key
                reqs.setdefault(key, _Request(key, name, rubric, jm, system, user, r, order))

    if rubric.mode == "pairwise":
        seen: set[tuple[str, str, str, str]] = set()
        for p in pairs:
            if entry.vs is not None and p.vs != entry.vs:
                continue  # a shared list of pairs: keep the ones this judge compares against
            ident = (p.model, p.vs, p.suite, p.sample.id)
            if ident in seen:
                continue  # the same pair listed twice must not be scored (or counted) twice
            seen.add(ident)
            sample = p.sample
            u = _Unit(p.model, p.suite, sample.id, len(p.output), len(p.vs_output), vs=p.vs)
            add(u, "ab", output_a=p.output, output_b=p.vs_output)
            add(u, "ba", output_a=p.vs_output, output_b=p.output)
            units.append(u)
    else:
        for it in items:
            sample = it.sample
            u = _Unit(it.model, it.suite, sample.id, len(it.output))
            if rubric.mode == "reference" and not sample.reference:
                u.skipped = "the sample has no reference answer (a reference rubric needs one)"
            else:
                add(u, "", output=it.output)
            units.append(u)
    return _JudgePlan(entry, name, rubric, models, units)


# --- executing judgments ------------------------------------------------------------------------


@dataclass
class _Result:
    key: str
    verdict: dict[str, Any] | None
    error: str | None
    payload: dict[str, Any]
    cached: bool


async def _judge_one(req: _Request, client: StructuredEndpoint | LocalEndpoint) -> _Result:
    """One judgment: request (transport retries inside), parse, validate; bad verdicts are retried."""
    rubric = req.rubric
    attempts: list[dict[str, Any]] = []
    tokens_in = tokens_out = 0
    verdict = None
    error: str | None = None
    sent_system = req.system
    structured = client.mode
    t0 = time.perf_counter()
    want_logprobs = rubric.scoring == "expected" and rubric.mode != "pairwise"
    expected: dict[str, Any] | None = None
    batched = isinstance(client, BatchingEndpoint)
    for n in range(1 + rubric.verdict_retries):
        try:
            # through a batch, the request carries its cache key (a verdict retry a key of its own): a rerun finds it in flight
            extra = {"request_id": req.key if n == 0 else f"{req.key}-v{n}"} if batched else {}
            reply = await client.complete(req.system, req.user, rubric.verdict_schema, temperature=rubric.temperature, max_tokens=rubric.max_tokens,
                                          schema_name=f"{rubric.name}_verdict".replace(".", "_"), model=req.model, top_logprobs=TOP_LOGPROBS if want_logprobs else 0,
                                          **extra)
        except CallFailed as e:
            error = f"request failed: {e}"
            attempts.append({"error": error, "http_attempts": e.attempts})
            break
        tokens_in += reply.tokens_in
        tokens_out += reply.tokens_out
        sent_system, structured = reply.system, reply.structured
        try:
            candidate = reply.parsed if reply.parsed is not None else parse_verdict_text(reply.raw)
        except ValueError as e:
            cut = " (the reply was cut off at max_tokens: raise max_tokens in the rubric)" if reply.finish_reason in ("length", "max_tokens") else ""
            error = f"invalid verdict: {e}{cut}"
            attempts.append({"raw": reply.raw, "error": error, "http_attempts": reply.attempts})
            continue
        problem = rubric.validate_verdict(candidate) if isinstance(candidate, dict) else "verdict is not a JSON object"
        if problem:
            error = f"invalid verdict: {problem}"
            attempts.append({"raw": reply.raw, "error": error, "http_attempts": reply.attempts})
            continue
        attempts.append({"raw": reply.raw, "http_attempts": reply.attempts})
        verdict, error = candidate, None
        if want_logprobs:
            scales = {c.name: (c.low, c.high) for c in rubric.criteria}
            found = expected_scores(reply.raw, reply.logprobs, scales, why_none=client.no_logprobs)
            expected = {c: {"value": e.value, "reason": e.reason, "mass": e.mass} for c, e in found.items()}
        break
    payload = {
        "judge": req.judge,
        "rubric": rubric.name,
        "rubric_path": rubric.path,
        "rubric_hash": rubric.content_hash,
        "mode": rubric.mode,
        "judge_model": req.model.identity(),
        "repeat": req.repeat,
        "order": req.order,
        "system": sent_system,
        "prompt": req.user,
        "structured": structured,
        "raw": attempts[-1].get("raw") if attempts else None,
        "attempts": attempts,
        "verdict": verdict,
        "error": error,
        **({"expected": expected} if expected is not None else {}),
        "tokens_in": tokens_in,
        "tokens_out": tokens_out,
        "latency_s": round(time.perf_counter() - t0, 4),
    }
    return _Result(req.key, verdict, error, payload, cached=False)


def _run_async(coro_fn: Callable[[], Any]) -> Any:
    """asyncio.run, also from inside a running event loop (notebooks): then on a helper thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro_fn())
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro_fn())
        except BaseException as e:  # noqa: BLE001 - re-raised on the caller's thread
            box["error"] = e

    t = threading.Thread(target=target)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def _execute(todo: list[_Request], clients: dict[tuple, StructuredEndpoint | LocalEndpoint], store: Store, progress: bool) -> dict[str, _Result]:
    """Run the uncached judgments concurrently; store each batch as it finishes (an interrupted run resumes)."""
    results: dict[str, _Result] = {}
    if not todo:
        return results
    from .._util.progress import progress_bar

    async def main() -> None:
        bar = progress_bar(len(todo), "judging", progress, unit="judgment")
        waiting: dict[str, str] = {}

        def batch_progress(bid: str, counts: dict[str, int], elapsed: float) -> None:
            # while a provider batch works: its requests done / total and the time waited, beside the bar
            done = counts.get("completed", 0) + counts.get("failed", 0) if "total" in counts else sum(v for k, v in counts.items() if k != "processing")
            total = counts.get("total") or sum(counts.values())
            waiting[bid] = f"{bid} {done}/{total}"
            bar.set_postfix_str(f"batches: {'; '.join(waiting.values())}; waited {elapsed:.0f} s", refresh=False)

        for c in clients.values():
            if isinstance(c, BatchingEndpoint):
                c.progress = batch_progress
        pending_rows: list[tuple[str, str, dict[str, Any]]] = []
        fatal: list[BaseException] = []
        last_flush = time.monotonic()

        def flush() -> None:
            nonlocal last_flush
            if pending_rows:
                store.put_judgments(list(pending_rows))
                pending_rows.clear()
            last_flush = time.monotonic()

        async def one(req: _Request) -> None:
            if fatal:
                return
            try:
                res = await _judge_one(req, clients[req.model.provider_key()])
            except FatalEndpointError as e:
                fatal.append(e)
                return
            results[req.key] = res
            pending_rows.append((req.key, req.judge, res.payload))
            if len(pending_rows) >= 200 or time.monotonic() - last_flush > 2.0:
                flush()
            bar.update(1)

        try:
            tasks = [asyncio.ensure_future(one(r)) for r in todo]
            await asyncio.gather(*tasks)
        finally:
            flush()
            bar.close()
            for c in clients.values():
                await c.aclose()
        if fatal:
            raise fatal[0]

    _run_async(main)
    return results


# --- aggregation --------------------------------------------------------------------------------


def _mean(xs: Sequence[float]) -> float:
    return float(sum(xs) / len(xs))


def _pstdev(xs: Sequence[float]) -> float:
    return float(statistics.pstdev(xs)) if len(xs) > 1 else 0.0


def _majority(values: Sequence[float]) -> float:
    """The most common value; a tie between the most common ones falls back to their median."""
    counts = Counter(values)
    top = max(counts.values())
    modes = sorted(v for v, c in counts.items() if c == top)
    return float(modes[0]) if len(modes) == 1 else float(statistics.median(modes))


def _cand_result(order: str, winner: str) -> str:
    """Map an A/B verdict back to candidate / vs / tie for the order it was asked in."""
    if winner == "tie":
        return "tie"
    cand_pos = "A" if order == "ab" else "B"
    return "candidate" if winner == cand_pos else "vs"


_RESULT_VALUE = {"candidate": 1.0, "tie": 0.5, "vs": 0.0}


def _criterion_value(result: _Result, criterion: str, scoring: str, fallbacks: list[str], tally: Counter) -> float | None:
    """A criterion's value in one judgment: the sampled integer, or (``scoring: expected``) the
    probability-weighted score; where that is missing the integer stands and ``fallbacks`` says why.
    """
    sampled = (result.verdict or {}).get(criterion)
    if scoring != "expected":
        return sampled
    e = (result.payload.get("expected") or {}).get(criterion) or {}
    if e.get("value") is not None:
        tally["expected"] += 1
        return float(e["value"])
    why = str(e.get("reason") or "no expected value recorded")
    fallbacks.append(why)
    tally[why] += 1
    return sampled


def _aggregate_single(plan: _JudgePlan, verdicts: Mapping[str, _Result], out: dict[tuple[str, str, str], list[Score]], st: dict[str, Any]) -> None:
    rubric, entry = plan.rubric, plan.entry
    labels = [m.label for m in plan.models]
    per_crit_values: dict[str, list[tuple[float, int]]] = defaultdict(list)  # scorer -> (value, output_len)
    item_stds: dict[str, list[float]] = defaultdict(list)
    agreement_hits: dict[str, list[bool]] = defaultdict(list)
    agreement_absdiff: dict[str, list[float]] = defaultdict(list)
    # model -> scorer -> repeat -> list of per-item values (for the noise band)
    repeat_vals: dict[str, dict[str, dict[int, list[float]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    tally: Counter = Counter()  # scoring: expected: values weighed, and each reason a sampled one stood
    for u in plan.units:
        item_key = (u.model, u.suite, u.sample_id)
        if u.skipped:
            st["skipped"] += 1
            for c in rubric.criteria:
                out.setdefault(item_key, []).append(Score(rubric.scorer_name(c.name), None, None, error=f"judge {plan.name}: skipped: {u.skipped}"))
            continue
        results = {k: verdicts.get(key) for k, key in u.keys.items()}
        failed = [r for r in results.values() if r is None or r.verdict is None]
        st["failed_judgments"] += len(failed)
        good = {k: r for k, r in results.items() if r is not None and r.verdict is not None}
        keys = sorted(set(u.keys.values()))
        if not good:
            st["errors"] += 1
            last = next((r.error for r in failed if r is not None and r.error), "no verdict")
            for c in rubric.criteria:
                out.setdefault(item_key, []).append(
                    Score(rubric.scorer_name(c.name), None, None, error=f"judge {plan.name}: {last}", details={"judgment_keys": keys})
                )
            continue
        st["judged"] += 1
        notes = next((str(r.verdict.get("notes", "")) for _, r in sorted(good.items()) if r.verdict and r.verdict.get("notes")), "")
        fallbacks: list[str] = []
        for c in rubric.criteria:
            scorer = rubric.scorer_name(c.name)
            raw: dict[str, list[float | None]] = {}
            model_means: list[float] = []
            model_votes: list[float] = []
            stds: list[float] = []
            for lab in labels:
                vals = [_criterion_value(good[(lab, r, "")], c.name, rubric.scoring, fallbacks, tally) if (lab, r, "") in good else None for r in range(entry.repeats)]
                raw[lab] = vals
                ok = [float(v) for v in vals if v is not None]
                if ok:
                    model_means.append(_mean(ok))
                    model_votes.append(_majority(ok))
                    stds.append(_pstdev(ok))
            for r in range(entry.repeats):
                at_r = [float(raw[lab][r]) for lab in labels if raw[lab][r] is not None]  # type: ignore[arg-type]
                if at_r:
                    repeat_vals[u.model][scorer][r].append(_mean(at_r))
            value = _mean(model_means) if entry.aggregate == "mean" else _majority(model_votes)
            std = _mean(stds) if stds else 0.0
            item_stds[scorer].append(std)
            if len(labels) > 1 and len(model_means) == len(labels):
                agreement_hits[scorer].append(len({round(v) for v in model_votes}) == 1)
                agreement_absdiff[scorer].append(max(model_means) - min(model_means))
            per_crit_values[scorer].append((value, u.output_len))
            details: dict[str, Any] = {
                "values": raw,
                "std": round(std, 4),
                "judge_models": labels,
                "judgment_keys": keys,
                "failed_judgments": len(failed),
            }
            if rubric.scoring == "expected":
                details["scoring"] = "expected"
                if fallbacks:
                    details["sampled_fallback"] = sorted(set(fallbacks))  # why some values are the sampled integer
                fallbacks.clear()
            if entry.repeats > 1:
                details["repeat_values"] = [
                    _mean([float(raw[lab][r]) for lab in labels if raw[lab][r] is not None]) if any(raw[lab][r] is not None for lab in labels) else None  # type: ignore[arg-type]
                    for r in range(entry.repeats)
                ]
            out.setdefault(item_key, []).append(Score(scorer, round(value, 4), None, explanation=notes[:500], details=details))
    crit_stats: dict[str, Any] = {}
    for c in rubric.criteria:
        scorer = rubric.scorer_name(c.name)
        crit_vals: list[float] = [v for v, _ in per_crit_values[scorer] if v is not None]
        d: dict[str, Any] = {"n": len(crit_vals), "mean": round(_mean(crit_vals), 4) if crit_vals else None}
        if entry.repeats > 1 and item_stds[scorer]:
            d["repeat_std_mean"] = round(_mean(item_stds[scorer]), 4)
            d["repeat_std_max"] = round(max(item_stds[scorer]), 4)
        d["length_bias"] = _length_bias([(float(n), v) for v, n in per_crit_values[scorer]])
        if agreement_hits[scorer]:
            d["ensemble_agreement"] = round(_mean([1.0 if h else 0.0 for h in agreement_hits[scorer]]), 4)
            d["ensemble_mean_abs_spread"] = round(_mean(agreement_absdiff[scorer]), 4)
        crit_stats[scorer] = d
    st["criteria"] = crit_stats
    st["length_bias"] = {s: d["length_bias"] for s, d in crit_stats.items()}
    if rubric.scoring == "expected":
        weighed = tally.pop("expected", 0)
        st["scoring"] = {"mode": "expected", "weighed": weighed, "sampled_fallback": sum(tally.values()), "fallback_reasons": dict(tally.most_common())}
    if entry.repeats > 1:
        st["noise"] = _noise(repeat_vals)


def _noise(repeat_vals: Mapping[str, Mapping[str, Mapping[int, list[float]]]]) -> dict[str, Any]:
    """Per model and scorer: the metric computed from each repeat alone, and the band they span."""
    out: dict[str, Any] = {}
    for model, by_scorer in repeat_vals.items():
        for scorer, by_rep in by_scorer.items():
            means = [_mean(v) for _, v in sorted(by_rep.items()) if v]
            if len(means) < 2:
                continue
            out.setdefault(model, {})[scorer] = {
                "repeat_means": [round(m, 4) for m in means],
                "low": round(min(means), 4),
                "high": round(max(means), 4),
                "std": round(statistics.stdev(means), 4),
            }
    return out


def _aggregate_pairwise(plan: _JudgePlan, verdicts: Mapping[str, _Result], out: dict[tuple[str, str, str], list[Score]], st: dict[str, Any]) -> None:
    rubric, entry = plan.rubric, plan.entry
    labels = [m.label for m in plan.models]
    scorer = rubric.scorer_name()
    flips = consistent = 0
    first_pos = pos_verdicts = 0
    # per judge model: ordered pairs judged, flips, first-position verdicts, ties and ties caused by a flip
    bias: dict[str, Counter] = {lab: Counter() for lab in labels}
    wtl: dict[str, Counter] = defaultdict(Counter)
    values: list[tuple[float, float]] = []  # (len diff, value)
    agree: list[bool] = []
    repeat_vals: dict[str, dict[str, dict[int, list[float]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    item_stds: list[float] = []
    for u in plan.units:
        item_key = (u.model, u.suite, u.sample_id)
        keys = sorted(set(u.keys.values()))
        orders: list[dict[str, Any]] = []
        unit_values: dict[str, list[float]] = defaultdict(list)
        failed = 0
        last_err = None
        by_repeat: dict[int, list[float]] = defaultdict(list)
        any_flip = False
        for lab in labels:
            for r in range(entry.repeats):
                ab, ba = verdicts.get(u.keys[(lab, r, "ab")]), verdicts.get(u.keys[(lab, r, "ba")])
                bad = [x for x in (ab, ba) if x is None or x.verdict is None]
                if bad:
                    failed += len(bad)
                    last_err = next((x.error for x in bad if x is not None and x.error), last_err or "no verdict")
                    continue
                w_ab, w_ba = ab.verdict["winner"], ba.verdict["winner"]  # type: ignore[union-attr,index]  # both checked above
                b = bias[lab]
                for w in (w_ab, w_ba):
                    if w != "tie":
                        pos_verdicts += 1
                        first_pos += w == "A"
                        b["decisive"] += 1
                        b["first"] += w == "A"
                r_ab, r_ba = _cand_result("ab", w_ab), _cand_result("ba", w_ba)
                flip = r_ab != r_ba
                any_flip |= flip
                flips += flip
                consistent += not flip
                result = r_ab if not flip else "tie"
                b["pairs"] += 1
                b["flips"] += flip
                b["ties"] += result == "tie"
                b["ties_from_flips"] += flip  # asked in one order only, these would have been a win or a loss
                unit_values[lab].append(_RESULT_VALUE[result])
                by_repeat[r].append(_RESULT_VALUE[result])
                orders.append({"judge_model": lab, "repeat": r, "ab": w_ab, "ba": w_ba, "result": result, "position_flip": flip})
        st["failed_judgments"] += failed
        if not orders:
            st["errors"] += 1
            out.setdefault(item_key, []).append(
                Score(scorer, None, None, error=f"judge {plan.name}: {last_err}", details={"vs": u.vs, "judgment_keys": keys})
            )
            continue
        st["judged"] += 1
        model_means = [_mean(v) for v in unit_values.values()]
        if entry.aggregate == "mean":
            value = _mean(model_means)
        else:
            value = _majority([_majority(v) for v in unit_values.values()])
        if len(labels) > 1 and len(model_means) == len(labels):
            agree.append(len({round(m * 2) for m in model_means}) == 1)
        item_stds.append(_mean([_pstdev(v) for v in unit_values.values()]))
        winner = "candidate" if value > 0.5 else "vs" if value < 0.5 else "tie"
        wtl[u.model][{"candidate": "win", "vs": "loss", "tie": "tie"}[winner]] += 1
        values.append((float(u.output_len - u.vs_len), value))
        for r, vs_ in by_repeat.items():
            repeat_vals[u.model][scorer][r].append(_mean(vs_))
        reason = next((str(verdicts[u.keys[(o["judge_model"], o["repeat"], "ab")]].verdict.get("reason", "")) for o in orders), "")  # type: ignore[union-attr]
        details = {
            "winner": winner,
            "vs": u.vs,
            "orders": orders,
            "position_flip": any_flip,
            "length_diff": u.output_len - u.vs_len,  # characters, candidate minus compared: the length-controlled win rate's input
            "judge_models": labels,
            "judgment_keys": keys,
            "failed_judgments": failed,
        }
        out.setdefault(item_key, []).append(Score(scorer, round(value, 4), None, explanation=reason[:500], details=details))
    pairs = flips + consistent
    st["position_bias_rate"] = round(flips / pairs, 4) if pairs else None
    st["first_position_preference"] = round(first_pos / pos_verdicts, 4) if pos_verdicts else None
    st["position_bias"] = {lab: _position_bias(c) for lab, c in bias.items()}
    st["win_tie_loss"] = {m: {"win": c["win"], "tie": c["tie"], "loss": c["loss"], "win_rate": round((c["win"] + 0.5 * c["tie"]) / max(1, sum(c.values())), 4)} for m, c in wtl.items()}
    st["length_bias"] = {scorer: _length_bias(values)}
    if agree:
        st["ensemble_agreement"] = round(_mean([1.0 if a else 0.0 for a in agree]), 4)
    if entry.repeats > 1:
        st["repeat_std_mean"] = round(_mean(item_stds), 4) if item_stds else None
        st["noise"] = _noise(repeat_vals)


def _position_bias(c: Counter) -> dict[str, Any]:
    """One judge model's order effects: flip rate, first-position preference, ties a flip made."""
    return {
        "pairs": c["pairs"],  # pairs judged in both orders (per repeat)
        "flips": c["flips"],  # the verdict changed with the order
        "flip_rate": round(c["flips"] / c["pairs"], 4) if c["pairs"] else None,
        # share of decisive verdicts (A or B, either order) that chose the answer shown first; 0.5 is unbiased
        "first_position_preference": round(c["first"] / c["decisive"], 4) if c["decisive"] else None,
        "ties": c["ties"],
        "ties_from_flips": c["ties_from_flips"],  # ties only because the two orders disagreed
    }


def _length_bias(pairs: Sequence[tuple[float, float]]) -> dict[str, Any]:
    """Spearman correlation between output length (chars; pairwise: length difference) and score."""
    n = len(pairs)
    if n < 3:
        return {"spearman": None, "p_value": None, "n": n}
    xs, ys = [p[0] for p in pairs], [p[1] for p in pairs]
    if len(set(xs)) < 2 or len(set(ys)) < 2:
        return {"spearman": None, "p_value": None, "n": n, "note": "constant lengths or scores"}
    from scipy.stats import spearmanr

    res = spearmanr(xs, ys)
    rho, p = float(res.statistic), float(res.pvalue)
    return {"spearman": None if math.isnan(rho) else round(rho, 4), "p_value": None if math.isnan(p) else round(p, 6), "n": n}


def _cost(tokens: Mapping[str, Mapping[str, int]], prices: Mapping[str, Mapping[str, float]] | None,
          batched: frozenset[str] = frozenset()) -> tuple[float | None, dict[str, float]]:
    """Cost from per-1M-token prices keyed by model name (or backend:model label); labels in
    ``batched`` went through a provider batch API, at its discount.
    """
    if not prices:
        return None, {}
    per: dict[str, float] = {}
    for label, t in tokens.items():
        model = label.split(":", 1)[1]
        price = prices.get(label) or prices.get(model)
        if price is None:
            continue
        factor = BATCH_DISCOUNT if label in batched else 1.0
        per[label] = round(factor * (t["in"] / 1e6 * float(price.get("input", 0.0)) + t["out"] / 1e6 * float(price.get("output", 0.0))), 6)
    return (round(sum(per.values()), 6) if per else None), per


# --- the entry point ----------------------------------------------------------------------------


_KEPT: ContextVar[dict[tuple, LocalEndpoint] | None] = ContextVar("evalkit_kept_local_judges", default=None)


@contextmanager
def local_judges_kept() -> Iterator[None]:
    """Inside, a judge that is a local model (``backend: hf``) stays loaded from one ``run_judges`` call
    to the next (early stopping judges block by block: one load, not one per block); closed on exit.
    """
    kept: dict[tuple, LocalEndpoint] = {}
    token = _KEPT.set(kept)
    try:
        yield
    finally:
        _KEPT.reset(token)
        for endpoint in kept.values():
            endpoint.keep_open = False
            endpoint.close()


def _endpoint(jm: Any, structured: str, store: Store) -> StructuredEndpoint | LocalEndpoint:
    """The endpoint for a judge model: a kept local one when ``local_judges_kept`` is active."""
    kept = _KEPT.get()
    if jm.local is None or kept is None:
        return open_structured(jm, structured=structured, store=store)
    key = jm.provider_key()
    if key not in kept:
        kept[key] = open_structured(jm, structured=structured, store=store)
        kept[key].keep_open = True
    endpoint = kept[key]
    endpoint.stats = type(endpoint.stats)()  # this call's statistics, as a fresh endpoint would count them
    return endpoint


def run_judges(
    judges: Sequence[JudgeEntry] | JudgeSet,
    *,
    config_dir: str | Path = ".",
    store: Store,
    items: Sequence[JudgeInput],
    pairs_for: PairsFor | Sequence[PairInput] = (),
    progress: bool = True,
) -> JudgeOutcome:
    """Judge ``items`` (single/reference rubrics) and pairs (pairwise rubrics) with every judge.

    ``pairs_for(vs)`` returns the candidate-vs-comparison pairs for a pairwise judge; ``vs`` is the
    judge entry's ``vs`` (None: the baseline). A plain list is used for every pairwise judge.
    Cached judgments are reused; the rest run concurrently (bounded per provider), with retries.
    A judge that cannot work at all (bad key, unknown model) raises BackendUnavailable.
    ``judges``: the run plan's loaded JudgeSet, or entries read here (relative to ``config_dir``).
    """
    loaded = judges if isinstance(judges, JudgeSet) else load_judges(judges, config_dir)
    reqs: dict[str, _Request] = {}
    plans: list[_JudgePlan] = []
    for entry, name, rubric, models in ((j.entry, j.name, j.rubric, j.models) for j in loaded.judges):
        if rubric.mode == "pairwise":
            pairs = pairs_for(entry.vs) if callable(pairs_for) else list(pairs_for)
            plan = _plan(entry, name, rubric, models, (), pairs, reqs)
        else:
            plan = _plan(entry, name, rubric, models, items, (), reqs)
        plans.append(plan)

    cached_payloads = {k: p for k, p in store.get_judgments(reqs).items() if p.get("verdict") is not None and not p.get("error")}
    results: dict[str, _Result] = {k: _Result(k, p["verdict"], None, p, cached=True) for k, p in cached_payloads.items()}
    todo = [r for k, r in reqs.items() if k not in results]
    clients: dict[tuple, StructuredEndpoint | LocalEndpoint] = {}
    for plan in plans:
        for jm in plan.models:
            # one endpoint each: its semaphore (or batch) bounds the requests in flight there, across judges
            if jm.provider_key() not in clients:
                clients[jm.provider_key()] = _endpoint(jm, plan.entry.structured_output, store)
    t0 = time.perf_counter()
    results.update(_execute(todo, clients, store, progress))
    wall = time.perf_counter() - t0

    scores: dict[tuple[str, str, str], list[Score]] = {}
    stats: dict[str, Any] = {}
    total_errors = 0
    for plan in plans:
        keys = {k for u in plan.units for k in u.keys.values()}
        made = [results[k] for k in keys if k in results and not results[k].cached]
        tokens: dict[str, dict[str, int]] = defaultdict(lambda: {"in": 0, "out": 0})
        for k in keys:
            res = results.get(k)
            if res is not None and not res.cached:
                lab = reqs[k].model.label
                tokens[lab]["in"] += int(res.payload.get("tokens_in", 0))
                tokens[lab]["out"] += int(res.payload.get("tokens_out", 0))
        cost, cost_per = _cost(tokens, plan.entry.prices, frozenset(m.label for m in plan.models if m.batch is not None))
        st: dict[str, Any] = {
            "rubric": plan.rubric.name,
            "rubric_path": plan.rubric.path,
            "mode": plan.rubric.mode,
            "judge_models": [m.label for m in plan.models],
            "aggregate": plan.entry.aggregate,
            "repeats": plan.entry.repeats,
            "n": len(plan.units),
            "judged": 0,
            "errors": 0,
            "skipped": 0,
            "failed_judgments": 0,
            "judgments": len(keys),
            "calls_made": len(made),
            "calls_cached": sum(1 for k in keys if k in results and results[k].cached),
            "tokens": {lab: dict(t) for lab, t in tokens.items()},
            "tokens_in": sum(t["in"] for t in tokens.values()),
            "tokens_out": sum(t["out"] for t in tokens.values()),
            "cost": cost,
            "cost_per_model": cost_per,
            "verdict_retries": sum(max(0, len(r.payload.get("attempts", [])) - 1) for r in made),
            "no_decision_within_noise": plan.entry.noise == "no_decision",
        }
        plan_scores: dict[tuple[str, str, str], list[Score]] = {}
        if plan.rubric.mode == "pairwise":
            st["vs"] = plan.entry.vs
            _aggregate_pairwise(plan, results, plan_scores, st)
        else:
            _aggregate_single(plan, results, plan_scores, st)
        # one count per failed judgment, however many items share it (identical outputs share a key)
        st["failed_judgments"] = sum(1 for k in set(keys) if k not in results or results[k].verdict is None)
        # Mark every judge score, so later stages can tell judge scores from validators by more than
        # their names: details.judge (this judge's name), repeats, and whether noise may undecide a gate.
        marks = {"judge": plan.name, "repeats": plan.entry.repeats, "noise_gate": plan.entry.noise == "no_decision"}
        for item_key, lst in plan_scores.items():
            kind: ScoreKind = "pairwise" if plan.rubric.mode == "pairwise" else "judge"
            scores.setdefault(item_key, []).extend(dc_replace(sc, kind=kind, details={**marks, **dict(sc.details)}) for sc in lst)
        total_errors += st["errors"] + st["skipped"]
        stats[plan.name] = st
    # Endpoint statistics (retries by reason, most in flight, fallbacks) under every judge that used it.
    for plan in plans:
        used = {m.provider_key() for m in plan.models}
        stats[plan.name]["providers"] = {
            f"{c.jm.backend}:{redact_url(c.jm.base_url) if c.jm.base_url else (c.jm.model if c.jm.local is not None else 'default')}": {**c.stats.as_dict(), "concurrency": c.jm.concurrency}
            for k, c in clients.items()
            if k in used and c.stats.requests
        }
        stats[plan.name]["wall_s"] = round(wall, 3)
    calls_made = sum(1 for r in results.values() if not r.cached)
    calls_cached = sum(1 for r in results.values() if r.cached)
    batches = [r.as_dict() for c in clients.values() if isinstance(c, BatchingEndpoint) for r in c.records]
    return JudgeOutcome(scores=scores, stats=stats, errors=total_errors, calls_made=calls_made, calls_cached=calls_cached, batches=batches)


# --- for the gates stage ------------------------------------------------------------------------


def judge_noise_band(judge_stats: Mapping[str, JudgeStats | Mapping[str, Any]], model: str, scorer: str) -> tuple[float, float] | None:
    """The band a judge-score metric spans across repeats (from summary["judges"]), or None.

    With ``repeats: k`` each repeat alone gives a mean for (model, scorer); their min and max are the
    judge's own noise. ``scorer`` is ``judge.correctness`` or a pairwise judge's name (win rate).
    """
    for name, raw in judge_stats.items():
        st = raw if isinstance(raw, JudgeStats) else JudgeStats.model_validate(raw)  # the judge stage's own dicts too
        if name.startswith("_") or not st.no_decision_within_noise:
            continue
        band = (st.noise or {}).get(model, {}).get(scorer)
        if band:
            return float(band["low"]), float(band["high"])
    return None


def threshold_in_judge_noise(judge_stats: Mapping[str, JudgeStats | Mapping[str, Any]], model: str, scorer: str, threshold: float) -> bool:
    """True when ``threshold`` lies inside the judge's noise band: the gate should say "no decision"."""
    band = judge_noise_band(judge_stats, model, scorer)
    return band is not None and band[0] <= threshold <= band[1]
