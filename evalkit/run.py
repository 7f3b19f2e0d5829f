"""The run stage: eval.yaml -> generate (cached) -> score -> judges -> gates -> store -> reports.

Everything a run produces goes through the store first; reports are rendered from what was stored,
so `evalkit report RUN` can rebuild them later.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

from . import __version__
from ._db import is_postgres_url
from ._util.fs import check_output_dir
from ._util.hf_bars import library_progress_bars
from ._util.text import encodable, redact_secrets, redact_url, terminal_safe
from .config import EvalConfig, GateSpec, ModelEntry, RayOptions, load_eval_config, read_yaml
from .data.suites import load_suite
from .errors import ConfigError, UserError
from .models import GenerationRequest, LoglikelihoodRequest, backend_info, checkpoint_dtype, fingerprint, group_key, open_backend
from .models.ray_engine import RayEngine, ReplicaPool, display_address, runs_on_cluster, using
from .models.weights import chat_template_hash
from .record import (
    BatchInfo,
    Calls,
    Draw,
    EarlyStop,
    Engine,
    Errors,
    JudgeStats,
    MetricRow,
    ModelInfo,
    ParityCheck,
    PerplexityRow,
    RunItem,
    RunSummary,
    SuiteInfo,
    Timing,
    TruncationRow,
    reproducibility,
)
from .registries import backend_kind
from .scoring.loglikelihood import CHOICE_SCORERS, choice_scores
from .scoring.reasoning import split_reasoning
from .scoring.validators import build_validator
from .store import Store, chosen_store, store_display
from .types import Completion, GenerationParams, ModelSpec, Sample, Score, Suite, stable_hash

if TYPE_CHECKING:
    from .scoring.judges import JudgeSet


@dataclass
class RunResult:
    run_id: str
    exit_code: int
    summary: dict[str, Any]
    out_dir: Path
    console_summary: str


def generation_params(entry: ModelEntry, cfg: EvalConfig) -> GenerationParams:
    g = entry.generation or cfg.generation
    return GenerationParams(max_new_tokens=g.max_new_tokens, temperature=g.temperature, top_p=g.top_p, seed=g.seed, stop=tuple(g.stop))


def _resolve(base: Path, p: str | None) -> str | None:
    if p is None:
        return None
    q = Path(p).expanduser()
    return str(q if q.is_absolute() else (base / q).resolve())


def model_spec(name: str, entry: ModelEntry, cfg: EvalConfig, config_dir: Path) -> ModelSpec:
    """One place that turns a model entry into a ModelSpec (paths resolved, weights fingerprinted).

    A local model's ``dtype: auto`` becomes its checkpoint's dtype here, so every backend serving one
    base computes in the same dtype (and the run records which).
    """
    options = entry.model_dump(exclude={"backend", "path", "model", "adapter", "base_url", "api_key_env", "generation"})
    if backend_info(entry.backend).local_weights and options.get("dtype") in (None, "auto"):
        path = _resolve(config_dir, entry.path)
        if path and Path(path).is_dir():
            options["dtype"] = checkpoint_dtype(path)
    spec = ModelSpec(
        name=name,
        backend=entry.backend,
        path=_resolve(config_dir, entry.path),
        model=entry.model,
        adapter=_resolve(config_dir, entry.adapter),
        base_url=entry.base_url,
        api_key_env=entry.api_key_env,
        generation=generation_params(entry, cfg),
        options=options,
        samples=(entry.generation or cfg.generation).samples,
        reasoning=(entry.generation or cfg.generation).reasoning,
        reasoning_tags=tuple((entry.generation or cfg.generation).reasoning_tags)[:2],  # type: ignore[arg-type]
    )
    try:
        ident = fingerprint(spec)
    except UserError as e:
        raise ConfigError(e.message, where=f"models.{name}") from None
    return dataclasses.replace(spec, identity=ident)


def generation_key(spec: ModelSpec, sample: Sample) -> str:
    return stable_hash({"model_id": spec.model_id, "prompt": sample.prompt_hash()}, 32)


def loglikelihood_key(spec: ModelSpec, sample: Sample) -> str:
    """A log-likelihood item's cache key: the model without its generation settings (they do not change
    a log-probability), and the item's context and continuations, or its text.
    """
    scoring = dataclasses.replace(spec, generation=GenerationParams())
    return stable_hash({"model_id": scoring.model_id, "loglikelihood": sample.prompt_hash()}, 32)


def _check_calibration(cfg: EvalConfig, suites: Sequence[Suite], judges: JudgeSet | None, config_dir: Path, config_path: Path) -> None:
    """A mean gate with ``calibrate:``: its labels file read and checked before anything runs (the path
    made absolute, so the stored config finds it again): models and items of the run, values on the
    judge's scale, enough labels for every gated model.
    """
    from .errors import DataError
    from .scoring.labels import MIN_LABELS, read_labels

    for g in cfg.gates:
        if g.calibrate is None:
            continue
        path = Path(_resolve(config_dir, g.calibrate) or g.calibrate)
        labels = read_labels(path)
        scale: tuple[float, float] | None = (0.0, 1.0) if g.metric == "win_rate" else None  # win 1, tie 0.5, loss 0
        if judges is not None and scale is None:
            for j in judges.judges:
                for c in j.rubric.criteria:
                    if j.rubric.scorer_name(c.name) == g.scorer:
                        scale = (c.low, c.high)
        if scale is None:
            raise ConfigError(f"gate '{g.name}': calibrate needs a judge scorer; '{g.scorer}' is not one of this run's judges", where=config_path)
        ids = {(s.name, x.id) for s in suites if g.suite in (None, s.name) for x in s.samples if g.tag is None or g.tag in x.tags}
        counts: dict[str, int] = defaultdict(int)
        for lab in labels:
            if lab.model not in cfg.models:
                raise DataError(f"model '{lab.model}' is not in this run (models: {', '.join(cfg.models)})", where=path, line=lab.line)
            if not any(sid == lab.sample_id and lab.suite in (None, suite) for suite, sid in ids):
                raise DataError(f"no item '{lab.sample_id}' in the scope of gate '{g.name}'", where=path, line=lab.line)
            if not scale[0] <= lab.value <= scale[1]:
                raise DataError(f"value {lab.value:g} is outside the scale of {g.scorer or 'a win rate'} [{scale[0]:g}, {scale[1]:g}]", where=path, line=lab.line)
            counts[lab.model] += 1
        for m in ([g.model] if g.model else cfg.candidate_names()):
            if counts[m] < MIN_LABELS:
                raise DataError(f"gate '{g.name}': model '{m}' has {counts[m]} labels; a calibrated gate needs at least {MIN_LABELS}", where=path)
        g.calibrate = str(path.resolve())


def _check_vllm_loglikelihood(specs: Sequence[ModelSpec]) -> None:
    """VLLM groups (one engine per base) that cannot score log-likelihood items: refused before any run."""
    groups: dict[tuple, list[ModelSpec]] = defaultdict(list)
    for s in specs:
        if s.backend == "vllm":
            groups[group_key(s)].append(s)
    if groups:
        from .models.vllm import loglikelihood_refusal

        for group in groups.values():
            why = loglikelihood_refusal(group)
            if why:
                raise ConfigError(why, where=f"models.{group[0].name}")


def _loglikelihood_request(key: str, spec: ModelSpec, sample: Sample) -> LoglikelihoodRequest:
    return LoglikelihoodRequest(key=key, model=spec, prompt=sample.prompt, messages=sample.messages, continuations=sample.choices, text=sample.text)


def draw_spec(spec: ModelSpec, k: int) -> ModelSpec:
    """The spec sample ``k`` of an item is generated with: seed + k. Sample 0 is the spec itself, so a
    run with one sample has the keys (and the cache) it always had; each further sample is another
    model_id, so another cache key, and a rerun makes no call.
    """
    return spec if k == 0 else dataclasses.replace(spec, generation=dataclasses.replace(spec.generation, seed=spec.generation.seed + k))


def _progress_bar(total: int, desc: str, enabled: bool):
    from ._util.progress import progress_bar

    return progress_bar(total, desc, enabled, unit="gen")


def api_secrets(specs: Sequence[ModelSpec], entries: Iterable[ModelEntry] = ()) -> list[str]:
    """The values of the API keys this run uses: redacted from everything stored and written."""
    import os

    names = {s.api_key_env for s in specs if s.api_key_env} | {e.api_key_env for e in entries if e.api_key_env}
    names |= {k for s in specs if not s.api_key_env and (k := backend_info(s.backend).key_env)}
    names |= {k for e in entries if not e.api_key_env and (k := backend_info(e.backend).key_env)}
    return [v for v in (os.environ.get(n, "") for n in names) if len(v) >= 8]


def _clean(c: Completion, secrets: Sequence[str]) -> Completion:
    """A completion as it may be stored: no API key in its text or error."""
    if not secrets:
        return c
    text = redact_secrets(c.text, secrets) if c.text else c.text
    err = redact_secrets(c.error, secrets) if c.error else c.error
    return c if (text is c.text and err is c.error) else dataclasses.replace(c, text=text, error=err)


def generate_all(
    store: Store, specs: Sequence[ModelSpec], suites: Sequence[Suite], *, progress: bool, secrets: Sequence[str] = (),
    engine: RayEngine | None = None, batch_records: list[dict[str, Any]] | None = None, opened: dict[tuple, _InProcess] | None = None,
) -> tuple[dict[str, Completion], int, int, float]:
    """Generate every (model, sample) output not in the store yet; commit after every block.

    Returns (completions by key, made, cached, seconds). A backend is opened only when something
    is missing, so an unchanged rerun loads no model and makes no call. With ``engine`` (``--ray``),
    the blocks of local-weight models run on the cluster's replicas and are committed as they come
    back, under one progress bar; the blocks are the same as a local run's, so are the outputs. With
    ``opened`` (early_stop: one call per block), in-process backends stay open across calls, opened for
    every spec of their group; the caller closes them.
    """
    t0 = time.perf_counter()
    prompts: dict[str, tuple[ModelSpec, Sample]] = {}
    for spec in specs:
        for suite in suites:
            for s in suite.samples:
                if s.scored_by_loglikelihood:  # deterministic: one answer, whatever samples K is
                    prompts.setdefault(loglikelihood_key(spec, s), (spec, s))
                    continue
                for index in range(spec.samples):  # K samples of an item: batched together by the backend
                    sk = draw_spec(spec, index)
                    prompts.setdefault(generation_key(sk, s), (sk, s))
    done = store.get_generations(prompts)
    cached = len(done)
    missing = [k for k in prompts if k not in done]
    made = 0
    groups: dict[tuple, list[str]] = defaultdict(list)
    for k in missing:
        groups[group_key(prompts[k][0])].append(k)
    shared_bar = _progress_bar(len(missing), f"generate on ray ({display_address(engine.address)})", progress) if engine and missing else None
    try:
        for keys in groups.values():
            group_specs = list({prompts[k][0].name: prompts[k][0] for k in keys}.values())
            # Interleave models so several adapters on one base share batches and no model waits.
            keys.sort(key=lambda k: (prompts[k][1].id, prompts[k][0].name))
            step = backend_info(group_specs[0].backend).chunk_size(group_specs[0])
            gen_keys = [k for k in keys if not prompts[k][1].scored_by_loglikelihood]
            ll_keys = [k for k in keys if prompts[k][1].scored_by_loglikelihood]
            blocks = [[GenerationRequest(key=k, model=prompts[k][0], messages=prompts[k][1].messages) for k in gen_keys[i : i + step]]
                      for i in range(0, len(gen_keys), step)]
            ll_blocks = [[_loglikelihood_request(k, *prompts[k]) for k in ll_keys[i : i + step]] for i in range(0, len(ll_keys), step)]
            on_cluster = engine is not None and all(runs_on_cluster(s) for s in group_specs)
            bar = shared_bar or _progress_bar(len(keys), f"generate [{', '.join(s.name for s in group_specs)}]", progress)
            # every runner yields (block index, completions) as blocks finish: replicas on the cluster, the
            # provider's batch API (batch:), or the backend in this process; log-likelihood items (multiple
            # choice, perplexity) are scored in this process, on the backend generation used when it is here
            runner: _InProcess | _Batched | ReplicaPool | None = None
            local: _InProcess | None = None
            try:
                if blocks:
                    if engine is not None and on_cluster:
                        runner = engine.pool(group_specs)
                    elif dict(group_specs[0].options).get("batch"):
                        runner = _Batched(group_specs, store, batch_records)
                    else:
                        runner = local = _in_process(open_backend, group_specs, specs, opened)
                    made += _commit(store, runner.run(blocks, bar.update), blocks, prompts, secrets, done)
                if ll_blocks:
                    local = local or _in_process(backend_info(group_specs[0].backend).factory, group_specs, specs, opened)  # here, even with --ray
                    made += _commit(store, local.run(ll_blocks, bar.update), ll_blocks, prompts, secrets, done)
            finally:
                if bar is not shared_bar:
                    bar.close()
                for r in {id(x): x for x in (runner, local) if x is not None}.values():
                    if opened is None or r not in opened.values():
                        r.close()
    finally:
        if shared_bar is not None:
            shared_bar.close()
    return done, made, cached, time.perf_counter() - t0


def _in_process(factory: Callable[[Sequence[ModelSpec]], Any], group_specs: Sequence[ModelSpec], specs: Sequence[ModelSpec],
                opened: dict[tuple, _InProcess] | None) -> _InProcess:
    """A backend in this process for a group; with ``opened``, the one kept from an earlier call (opened for
    every spec of the group, not only the ones missing now), else a new one kept there.
    """
    if opened is None:
        return _InProcess(factory(group_specs))
    gk = group_key(group_specs[0])
    if gk not in opened:
        opened[gk] = _InProcess(factory(list({s.name: s for s in specs if group_key(s) == gk}.values())))
    return opened[gk]


def _commit(store: Store, results: Iterable[tuple[int, list[Completion]]], blocks: Sequence[Sequence[Any]],
            prompts: dict[str, tuple[ModelSpec, Sample]], secrets: Sequence[str], done: dict[str, Completion]) -> int:
    """Store each block's answers as it finishes (a kill loses at most the block in flight); how many."""
    made = 0
    for i, outs in results:
        reqs = blocks[i]
        if len(outs) != len(reqs):
            raise RuntimeError(f"backend returned {len(outs)} completions for {len(reqs)} requests")
        outs = [_clean(c, secrets) for c in outs]
        store.put_generations([(r.key, r.model.model_id, prompts[r.key][1].prompt_hash(), c) for r, c in zip(reqs, outs)])
        for r, c in zip(reqs, outs):
            made += 1
            done[r.key] = c  # an error is recorded for this run's report, never served from the cache
    return made


class _InProcess:
    """A backend in this process, block after block (generations, or log-likelihood items)."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend

    def run(self, blocks: Sequence[Sequence[Any]], progress: Any) -> Iterable[tuple[int, list[Completion]]]:
        stream = getattr(self.backend, "generate_stream", None)
        if stream is not None and all(isinstance(r, GenerationRequest) for b in blocks for r in b):
            # an API backend: every block's requests go out on one event loop, concurrency requests in
            # flight across block boundaries; a block is yielded (and committed) as soon as it completes
            yield from stream(blocks, progress=progress)
            return
        for i, b in enumerate(blocks):
            if b and isinstance(b[0], LoglikelihoodRequest):
                yield i, self.backend.loglikelihood(b, progress=progress)
            else:
                yield i, self.backend.generate(b, progress=progress)

    def close(self) -> None:
        self.backend.close()


class _Batched:
    """A group of API candidates with ``batch:``: its blocks go through the provider's batch API together."""

    def __init__(self, specs: Sequence[ModelSpec], store: Store, records: list[dict[str, Any]] | None) -> None:
        self.specs = specs
        self.store = store
        self.records = records

    def run(self, blocks: Sequence[Sequence[GenerationRequest]], progress: Any) -> Iterable[tuple[int, list[Completion]]]:
        from .models.batch import batch_generate

        flat = [r for b in blocks for r in b]
        outs = batch_generate(self.specs, flat, self.store, progress, self.records)
        start = 0
        for i, b in enumerate(blocks):
            yield i, outs[start : start + len(b)]
            start += len(b)

    def close(self) -> None:
        pass


def sample_record(s: Sample) -> dict[str, Any]:
    return {
        "id": s.id,
        "messages": s.messages_as_dicts(),
        "reference": s.reference,
        "tags": list(s.tags),
        "metadata": dict(s.metadata),
        "must_pass": s.must_pass,
        **({"prompt": s.prompt} if s.prompt is not None else {}),
        **({"choices": list(s.choices), "answer": s.answer} if s.choices else {}),
        **({"text": s.text} if s.text is not None else {}),
    }


def _metrics(items: Iterable[RunItem]) -> list[dict[str, Any]]:
    """summary.json's metrics: a pass rate or a mean per model x suite x scorer, over every sample."""
    from . import stats

    acc: dict[tuple[str, str, str], dict[str, Any]] = {}
    for it in items:
        for d in it.samples:
            for name, sc in d.scores.items():
                a = acc.setdefault((it.model, it.suite, name), {"passed": [], "values": [], "errors": 0, "items": []})
                if sc.error:
                    a["errors"] += 1
                    continue
                if sc.passed is not None:
                    a["passed"].append(bool(sc.passed))
                if sc.value is not None:
                    a["values"].append(float(sc.value))
        if len(it.samples) > 1:
            for name in it.samples[0].scores:
                counted = it.pass_count(name)
                if counted is not None:
                    acc[(it.model, it.suite, name)]["items"].append((it.sample_id, *counted))
    out = []
    for (model, suite, scorer), a in sorted(acc.items()):
        if a["passed"]:
            row: dict[str, Any] = {"model": model, "suite": suite, "scorer": scorer, "metric": "pass_rate",
                                   "value": sum(a["passed"]) / len(a["passed"]), "n": len(a["passed"]), "errors": a["errors"]}
            per_item = a["items"]
            if per_item:
                k = per_item[0][2]
                row.update(
                    n=len(per_item), samples=k,
                    pass_at={str(j): sum(stats.pass_at_k(k, c, j) for _, c, _ in per_item) / len(per_item) for j in sorted({1, k})},
                    pass_all={str(k): sum(stats.pass_all_k(k, c, k) for _, c, _ in per_item) / len(per_item)},
                    flaky=sum(1 for _, c, _ in per_item if 0 < c < k),
                    flaky_items=[sid for sid, c, _ in per_item if 0 < c < k],
                    expected_flips=round(sum(stats.flip_probability(k, c) for _, c, _ in per_item), 4),
                )
            out.append(row)
        elif a["values"] or a["errors"]:
            vals = a["values"]
            out.append({"model": model, "suite": suite, "scorer": scorer, "metric": "mean",
                        "value": (sum(vals) / len(vals)) if vals else None, "n": len(vals), "errors": a["errors"]})
    return out


def _truncation(items: Iterable[RunItem]) -> list[TruncationRow]:
    """Per model x suite: how many generations (every sample) the token limit cut."""
    acc: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for it in items:
        if it.scored_by_loglikelihood:
            continue  # scored, not generated: nothing to cut
        for d in it.samples:
            if d.error is None:
                a = acc[(it.model, it.suite)]
                a[0] += 1
                a[1] += d.finish_reason == "length"
    return [TruncationRow(model=m, suite=s, n=n, truncated=t, rate=(t / n) if n else None) for (m, s), (n, t) in sorted(acc.items())]


def _template_warnings(models: dict[str, ModelInfo]) -> list[str]:
    """A candidate served with another chat template than it was trained with sees prompts it never saw."""
    out = []
    for name, m in models.items():
        trained = (m.candidate or {}).get("chat_template_hash")
        if trained and m.chat_template_hash and m.chat_template_hash != trained:  # None: not a local folder, not checkable here
            out.append(f"model '{name}' was trained with chat template {trained} but is served with "
                       f"{m.chat_template_hash} (from {m.path}): its prompts are not the ones it learned; "
                       "serve it with the training template (a gate {metric: template_match} fails on this)")
    return out


def _perplexity(items: Iterable[RunItem]) -> list[PerplexityRow]:
    """Per model x perplexity suite: word/byte perplexity and bits per byte over its scored texts."""
    from .scoring.loglikelihood import perplexities

    acc: dict[tuple[str, str], list[RunItem]] = defaultdict(list)
    for it in items:
        if it.sample.get("text") is not None:
            acc[(it.model, it.suite)].append(it)
    rows = []
    for (model, suite), its in sorted(acc.items()):
        ok = [it for it in its if it.error is None and it.loglikelihoods]
        row = PerplexityRow(model=model, suite=suite, n=len(ok), errors=len(its) - len(ok))
        if ok:
            row.loglikelihood = sum(it.loglikelihoods[0] for it in ok if it.loglikelihoods)
            for k, v in perplexities((it.loglikelihoods[0], it.sample["text"]) for it in ok if it.loglikelihoods).items():
                setattr(row, k, v)
        rows.append(row)
    return rows


def _adapter_warnings(specs: Sequence[ModelSpec], items: Sequence[RunItem]) -> list[str]:
    """An adapter whose outputs equal its base's on every item was most likely not applied."""
    by_model: dict[str, dict[tuple[str, str], Any]] = defaultdict(dict)
    for it in items:
        by_model[it.model][(it.suite, it.sample_id)] = it.loglikelihoods if it.scored_by_loglikelihood else it.output
    warnings = []
    for spec in specs:
        if not spec.adapter:
            continue
        bases = [s for s in specs if s.path == spec.path and not s.adapter and backend_info(s.backend).local_weights]
        for base in bases:
            a, b = by_model.get(spec.name, {}), by_model.get(base.name, {})
            common = [k for k in a if k in b and a[k] is not None and b[k] is not None]
            if common and all(a[k] == b[k] for k in common):
                warnings.append(
                    f"model '{spec.name}': outputs identical to base '{base.name}' on all {len(common)} items; "
                    f"the adapter {spec.adapter} appears to have no effect (not applied, or not trained)"
                )
    return warnings


def _dtype_warnings(specs: Sequence[ModelSpec]) -> list[str]:
    """Entries on one base checkpoint that compute in different dtypes give different outputs."""
    by_base: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for s in specs:
        if backend_info(s.backend).local_weights and s.path:
            by_base[s.path][str(dict(s.options).get("dtype"))].append(f"{s.name} ({s.backend})")
    out = []
    for base, dtypes in by_base.items():
        if len(dtypes) > 1:
            shown = "; ".join(f"{d}: {', '.join(names)}" for d, names in sorted(dtypes.items()))
            out.append(f"models on base {base} compute in different dtypes ({shown}): their outputs are not comparable "
                       "token for token; set one dtype for all of them")
    return out


def check_gates_against_run(gates: Sequence[GateSpec], suites: Sequence[Suite], judge_scores: set[str],
                            pairwise: set[str], config_path: Path, samples: dict[str, int] | None = None,
                            candidates: Sequence[str] = ()) -> None:
    """Every suite, tag, scorer and judge a gate names exists in this run (before any model is called),
    and a pass_at_k / pass_all_k gate's k is at most the samples its models generate per item.
    """
    from .gates import unknown_names

    known = {s.name: ({sc.name for sc in s.scorers}, {t for x in s.samples for t in x.tags}) for s in suites}
    for i, g in enumerate(gates):
        why = unknown_names(g, suites=known, judge_scores=judge_scores, pairwise_judges=pairwise)
        if why is None and g.k is not None and samples is not None:
            gated = {m: n for m, n in samples.items() if (m == g.model if g.model else m in candidates)}
            low = {m: n for m, n in gated.items() if n < g.k}
            if low:
                m, n = sorted(low.items())[0]
                why = (f"gate '{g.name}': k {g.k} is more than the {n} sample{'s' if n != 1 else ''} per item model '{m}' generates "
                       f"(set generation: {{samples: K}} with K >= {g.k}, at the top or on the model)")
        if why is None and g.metric == "perplexity_ratio" and not any(s.kind == "perplexity" for s in suites if g.suite in (None, s.name)):
            why = f"gate '{g.name}': perplexity_ratio needs a suite with kind: perplexity{' (suite ' + g.suite + ' is not one)' if g.suite else ' in this run'}"
        if why is None and g.metric == "must_pass" and g.tag is None:
            scope = [s for s in suites if g.suite in (None, s.name)]
            if not any(x.must_pass for s in scope for x in s.samples):
                why = f"gate '{g.name}': no sample is marked must_pass: true (mark golden items, or give the gate a tag:)"
        if why:
            try:
                _, lines = read_yaml(config_path)
            except ConfigError:
                lines = {}
            raise ConfigError(why, where=config_path, line=lines.get(("gates", i)))


def _candidate_manifests(specs: Sequence[ModelSpec], suites: Sequence[Suite]) -> tuple[dict[str, Any], list[str]]:
    """candidate.json of each adapter (from `evalkit train`), and warnings for suite items it trained on."""
    manifests: dict[str, Any] = {}
    warnings: list[str] = []
    from .train.manifest import candidate_record, items_in_training_data, load_candidate

    for spec in specs:
        # an adapter from `evalkit train`, or a checkpoint from `evalkit merge` (it copies candidate.json)
        where = spec.adapter or (spec.path if backend_info(spec.backend).local_weights else None)
        if not where or not Path(where).is_dir():
            continue
        cand = load_candidate(where)
        if not cand:
            continue
        manifests[spec.name] = candidate_record(cand)
        for suite in suites:
            hits = items_in_training_data(cand, suite.samples)
            if hits:
                shown = ", ".join(hits[:5]) + (" ..." if len(hits) > 5 else "")
                warnings.append(
                    f"model '{spec.name}': {len(hits)} item(s) of suite '{suite.name}' are in its training data "
                    f"(the scores on them measure memory, not generalisation): {shown}"
                )
    return manifests, warnings


def _heldout_warnings(suites: Sequence[Suite]) -> list[str]:
    from .data.split import check_heldout

    out: list[str] = []
    for s in suites:
        if s.kind == "heldout":
            out.extend(check_heldout(Path(s.path)))
    return out


def _judge(judges: JudgeSet, store: Store, items: list[RunItem], samples: dict[tuple[str, str], Sample],
           baseline: str | None, candidates: list[str], progress: bool):
    from .scoring.judges import JudgeInput, PairInput, run_judges

    judge_inputs = [
        JudgeInput(model=it.model, suite=it.suite, sample=samples[(it.suite, it.sample_id)], output=it.output)
        for it in items
        if it.output is not None and it.error is None
    ]
    by_key = {(it.model, it.suite, it.sample_id): it for it in items}

    def pairs_for(vs: str | None) -> list[PairInput]:
        """Each candidate vs ``vs`` (default: the baseline) on every sample both answered."""
        vs = vs or baseline
        if vs is None:
            return []
        out: list[PairInput] = []
        for cand in candidates:
            if cand == vs:
                continue
            for (suite, sid), sample in samples.items():
                a, b = by_key.get((cand, suite, sid)), by_key.get((vs, suite, sid))
                if a and b and a.output is not None and b.output is not None and not a.error and not b.error:
                    out.append(PairInput(model=cand, vs=vs, suite=suite, sample=sample, output=a.output, vs_output=b.output))
        return out

    return run_judges(judges, store=store, items=judge_inputs, pairs_for=pairs_for, progress=progress)


def _only_tags(tags: Any) -> frozenset[str]:
    """A scorer's ``tags:`` option limits it to items carrying one of those tags."""
    if tags is None:
        return frozenset()
    return frozenset([tags] if isinstance(tags, str) else tags)


def _now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@dataclass
class RunPlan:
    """Everything a run needs, read and checked before any model is called (``plan_run``)."""

    cfg: EvalConfig
    config_path: Path
    config_dir: Path
    out_dir: Path
    suites: list[Suite]
    validators: dict[str, list[tuple[str, Any, frozenset[str]]]]
    specs: list[ModelSpec]
    baseline: str | None
    candidates: list[str]
    warnings: list[str]
    secrets: list[str]
    store_location: str | Path
    ray: RayOptions | None = None  # eval.yaml's ray: block, or --ray ADDRESS
    judges: JudgeSet | None = None  # the judges with their rubrics and models, loaded once

    @property
    def name(self) -> str:
        return self.cfg.name or self.config_path.stem


def plan_run(config_path: str | Path, out_dir: str | Path, *, store_path: str | Path | None = None, limit: int | None = None,
             overrides: dict[str, Any] | None = None) -> RunPlan:
    """Read eval.yaml, its suites, judges and models, and check them all (names, paths, keys, output
    folder): every user error surfaces here, before anything is generated or written.
    """
    config_path = Path(config_path)
    cfg = load_eval_config(config_path)
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be at least 1 (got {limit})")
    if overrides and overrides.get("generation_max_new_tokens") is not None:
        from ._util.limits import MAX_NEW_TOKENS_LIMIT

        mnt = int(overrides["generation_max_new_tokens"])
        if not 1 <= mnt <= MAX_NEW_TOKENS_LIMIT:
            raise ConfigError(f"--max-new-tokens must be between 1 and {MAX_NEW_TOKENS_LIMIT} (got {mnt})")
        cfg.generation.max_new_tokens = mnt
        for entry in cfg.models.values():
            if entry.generation is not None:
                entry.generation.max_new_tokens = mnt
    if overrides and overrides.get("early_stop") and cfg.early_stop is None:
        from .config import EarlyStopConfig

        cfg.early_stop = EarlyStopConfig()
    if cfg.early_stop is not None:
        if not cfg.gates:
            raise ConfigError("early_stop stops a run once every gate is decided: this config has no gates", where=config_path)
        batched = [n for n, e in cfg.models.items() if e.batch]
        if batched:
            raise ConfigError(f"early_stop draws items block by block; model '{batched[0]}' sends everything as one provider batch (batch:): "
                              "use one or the other", where=f"models.{batched[0]}.batch")
    check_output_dir(out_dir)
    config_dir = config_path.resolve().parent
    suites: list[Suite] = []
    for i, s in enumerate(cfg.suites):
        path = Path(_resolve(config_dir, s) or s)
        if not path.exists():
            raise ConfigError(f"suites[{i}]: suite folder not found: {path}", where=config_path)
        suite = load_suite(path)
        if limit is not None:
            suite = dataclasses.replace(suite, samples=suite.samples[:limit])
        suites.append(suite)
    names = [s.name for s in suites]
    if len(set(names)) != len(names):
        raise ConfigError(f"two suites share a name: {names}", where=config_path)
    validators = {
        suite.name: [
            (sc.name, build_validator(sc, where=str(Path(suite.path) / "suite.yaml")), _only_tags(sc.options.get("tags")))
            for sc in suite.scorers if sc.kind not in CHOICE_SCORERS  # multiple choice: scored from log-likelihoods
        ]
        for suite in suites
    }
    judge_scores: set[str] = set()
    pairwise: set[str] = set()
    judges = None
    if cfg.judges:
        from .scoring.judges import load_judges

        judges = load_judges(cfg.judges, config_dir, config_path)  # rubrics read once, for the whole run
        judge_scores, pairwise = judges.score_kinds()
    _check_calibration(cfg, suites, judges, config_dir, config_path)
    per_item = {n: (e.generation or cfg.generation).samples for n, e in cfg.models.items()}
    check_gates_against_run(cfg.gates, suites, judge_scores, pairwise, config_path, per_item, cfg.candidate_names())
    for name, entry in cfg.models.items():
        if entry.batch and not backend_info(entry.backend).batch_api:
            raise ConfigError(f"batch: needs a model whose provider has a batch API (openai, anthropic); the {entry.backend} backend has none"
                              + (f" ({why})" if (why := backend_kind(entry.backend).no_batch_why) else ""), where=f"models.{name}.batch")
    scored = [s for s in suites if any(x.scored_by_loglikelihood for x in s.samples)]
    if scored:
        for name, entry in cfg.models.items():
            why = backend_kind(entry.backend).no_loglikelihood_why
            if why:
                what = "perplexity" if scored[0].kind == "perplexity" else "multiple-choice"
                raise ConfigError(f"model '{name}' ({entry.backend}) cannot run the {what} suite '{scored[0].name}': {why}; "
                                  "run log-likelihood suites on hf or vllm models", where=f"models.{name}")
    specs = [model_spec(name, entry, cfg, config_dir) for name, entry in cfg.models.items()]
    if scored:
        _check_vllm_loglikelihood(specs)
    configured = (cfg.store if is_postgres_url(cfg.store) else _resolve(config_dir, cfg.store)) if cfg.store else None
    location = chosen_store(store_path, configured)
    ray = cfg.ray
    if overrides and overrides.get("ray_address") is not None:
        from pydantic import ValidationError

        try:  # validated like the block's own address
            ray = RayOptions.model_validate({**(ray.model_dump() if ray else {}), "address": str(overrides["ray_address"])})
        except ValidationError as e:
            raise ConfigError(f"--ray: {e.errors()[0]['msg']}") from None
    warnings = _heldout_warnings(suites) + _dtype_warnings(specs)
    warnings += [f"model '{s.name}' generates {s.samples} samples per item at temperature 0: greedy samples are all alike "
                 "(set generation.temperature above 0 to sample)" for s in specs if s.samples > 1 and s.generation.temperature == 0]
    if ray is not None and not any(runs_on_cluster(s) for s in specs):
        warnings.append("ray: no model here runs on the cluster (only hf and vllm mode: offline do); generation ran in this process")
    return RunPlan(
        cfg=cfg, config_path=config_path, config_dir=config_dir, out_dir=Path(out_dir), suites=suites, validators=validators,
        specs=specs, baseline=cfg.baseline, candidates=cfg.candidate_names(),
        warnings=warnings, ray=ray,
        secrets=api_secrets(specs, [m for j in cfg.judges for m in ([j.model] if j.model else []) + list(j.models or [])]),
        store_location=location, judges=judges,
    )


@dataclass
class _Scored:
    items: list[RunItem]
    samples: dict[tuple[str, str], Sample]
    generation_errors: int
    scorer_errors: int


def score_items(plan: RunPlan, run_id: str, completions: dict[str, Completion]) -> _Scored:
    """Every (model, suite, sample) as a RunItem scored by its suite's validators; a failed
    generation is an item with an error and no scores (never a fail).
    """
    items: list[RunItem] = []
    samples: dict[tuple[str, str], Sample] = {}
    n_gen_errors = n_score_errors = 0
    for spec in plan.specs:
        for suite in plan.suites:
            for sample in suite.samples:
                samples[(suite.name, sample.id)] = sample
                if sample.scored_by_loglikelihood:
                    item = _loglikelihood_item(run_id, spec, suite, sample, completions)
                    n_gen_errors += item.error is not None
                    items.append(item)
                    continue
                draws: list[Draw] = []
                for k in range(spec.samples):  # every scorer scores every sample
                    key = generation_key(draw_spec(spec, k), sample)
                    c = split_reasoning(completions[key], spec.reasoning, spec.reasoning_tags)  # scorers see the answer
                    scores: dict[str, Score] = {}
                    if c.error is None:
                        for name, check, only_tags in plan.validators[suite.name]:
                            if only_tags and not only_tags.intersection(sample.tags):
                                continue  # this scorer applies to other items of the suite
                            sc = check(sample, c)
                            n_score_errors += sc.error is not None
                            scores[name] = sc if sc.scorer == name else dataclasses.replace(sc, scorer=name)
                    else:
                        n_gen_errors += 1
                    draws.append(Draw(k, key, c.text if c.error is None else None, c.error, scores, c.finish_reason if c.error is None else None,
                                      c.reasoning))
                first = draws[0]
                items.append(RunItem(
                    run_id=run_id, model=spec.name, model_id=spec.model_id, suite=suite.name,
                    suite_version=suite.version, sample_id=sample.id, sample=sample_record(sample), generation_key=first.generation_key,
                    output=first.output, error=first.error, scores=first.scores, draws=tuple(draws) if len(draws) > 1 else (),
                    finish_reason=first.finish_reason, reasoning=first.reasoning,
                ))
    return _Scored(items, samples, n_gen_errors, n_score_errors)


def _loglikelihood_item(run_id: str, spec: ModelSpec, suite: Suite, sample: Sample, completions: dict[str, Completion]) -> RunItem:
    """A multiple-choice item (scored ``choice`` / ``choice_norm``; its output is the ``choice`` pick) or a
    perplexity text (no score: the suite's perplexity is computed over its texts), from its log-likelihoods.
    """
    key = loglikelihood_key(spec, sample)
    c = completions[key]
    scores: dict[str, Score] = {}
    output = None
    if c.error is None and c.loglikelihoods is not None and sample.choices:
        kinds = {sc.name: sc.kind for sc in suite.scorers if sc.kind in CHOICE_SCORERS}
        for name, kind in kinds.items():
            scores[name] = dataclasses.replace(choice_scores(sample, c.loglikelihoods, [kind])[kind], scorer=name)
        pick = next((sc.details.get("pick") for sc in scores.values() if sc.details.get("pick") is not None), None)
        output = sample.choices[pick] if pick is not None else None
    return RunItem(
        run_id=run_id, model=spec.name, model_id=spec.model_id, suite=suite.name, suite_version=suite.version, sample_id=sample.id,
        sample=sample_record(sample), generation_key=key, output=output, error=c.error, scores=scores,
        finish_reason=None, loglikelihoods=c.loglikelihoods if c.error is None else None,
    )


@dataclass
class _Judged:
    items: list[RunItem]
    stats: dict[str, Any] = field(default_factory=dict)
    errors: int = 0
    made: int = 0
    cached: int = 0
    batches: list[dict[str, Any]] = field(default_factory=list)


def judge_items(plan: RunPlan, store: Store, scored: _Scored, progress: bool) -> _Judged:
    """The judges' scores joined to the items; their failures are counted, never scored."""
    if plan.judges is None:
        return _Judged(scored.items)
    generated = [it for it in scored.items if not it.scored_by_loglikelihood]  # judges read generated answers
    outcome = _judge(plan.judges, store, generated, scored.samples, plan.baseline, plan.candidates, progress)
    extra = outcome.scores
    items = [
        dataclasses.replace(it, scores={**it.scores, **{sc.scorer: sc for sc in extra.get((it.model, it.suite, it.sample_id), [])}})
        for it in scored.items
    ]
    return _Judged(items, outcome.stats, outcome.errors, outcome.calls_made, outcome.calls_cached, outcome.batches)


def build_record(plan: RunPlan, run_id: str, *, scored: _Scored, judged: _Judged, made: int, cached: int,
                 parity: list[dict[str, Any]] | None, timing: Timing, warnings: list[str]) -> RunSummary:
    """The run record before its gates: models (with provenance), suites, metrics, calls, errors."""
    manifests, overlap_warnings = _candidate_manifests(plan.specs, plan.suites)
    warnings = warnings + overlap_warnings
    if scored.generation_errors:
        warnings.append(f"{scored.generation_errors} generation(s) failed after retries; they are excluded from metrics and retried on the next run")
    models_info = {
        s.name: ModelInfo(
            backend=s.backend, path=s.path, model=s.model, adapter=s.adapter, model_id=s.model_id,
            base_url=redact_url(s.base_url) if s.base_url else None,
            dtype=dict(s.options).get("dtype") if backend_info(s.backend).local_weights else None,
            role="baseline" if s.name == plan.baseline else ("candidate" if s.name in plan.candidates else "other"),
            candidate=manifests.get(s.name),
            chat_template_hash=chat_template_hash(s.path) if backend_info(s.backend).local_weights else None,
        )
        for s in plan.specs
    }
    warnings += _template_warnings(models_info)
    return RunSummary(
        run_id=run_id,
        name=plan.name,
        created=_now_iso(),
        config_path=str(plan.config_path),
        store=store_display(plan.store_location),
        evalkit_version=__version__,
        models=models_info,
        baseline=plan.baseline,
        candidates=plan.candidates,
        suites=[SuiteInfo(name=s.name, kind=s.kind, version=s.version, n=len(s.samples), path=s.path) for s in plan.suites],
        metrics=[MetricRow(**m) for m in _metrics(judged.items)],
        truncation=_truncation(judged.items),
        perplexity=_perplexity(judged.items),
        calls=Calls(generations_made=made, generations_cached=cached, judge_calls_made=judged.made, judge_calls_cached=judged.cached),
        errors=Errors(generation=scored.generation_errors, scorer=scored.scorer_errors, judge=judged.errors),
        warnings=warnings,
        judges={name: JudgeStats.model_validate(st) for name, st in judged.stats.items()},
        batches=[BatchInfo.model_validate(b) for b in judged.batches],
        parity=[ParityCheck.model_validate(p) for p in parity] if parity is not None else None,
        timing=timing,
        reproducibility=reproducibility(
            suites={s.name: s.version for s in plan.suites},
            rubrics=plan.judges.rubric_hashes() if plan.judges else {},
            generation={s.name: s.generation.as_dict() for s in plan.specs},
        ),
    )


def run_eval(
    config_path: str | Path,
    out_dir: str | Path,
    *,
    store_path: str | Path | None = None,
    limit: int | None = None,
    progress: bool = True,
    overrides: dict[str, Any] | None = None,
) -> RunResult:
    """Plan -> generate (cached, resumable) -> score -> judge -> record and gates -> store -> reports."""
    from .gates import regate_run
    from .parity import parity_for_run
    from .report import console_summary, write_reports

    t_start = time.perf_counter()
    plan = plan_run(config_path, out_dir, store_path=store_path, limit=limit, overrides=overrides)
    warnings = list(plan.warnings)
    parity = parity_for_run(plan.cfg.parity, plan.config_path, plan.specs, list(plan.suites[0].samples), progress, warnings)
    store = Store(plan.store_location)
    store.secrets = tuple(plan.secrets)  # configured API keys: never in a stored error
    engine = RayEngine(plan.ray) if plan.ray is not None and any(runs_on_cluster(s) for s in plan.specs) else None
    run_id: str | None = None
    gen_batches: list[dict[str, Any]] = []  # provider batches of API candidates (batch:)
    try:
        config_dump = _redacted_config(plan.cfg.model_dump(mode="json"))
        run_id = store.begin_run(name=plan.name, config_path=str(plan.config_path), config=config_dump, out_dir=str(out_dir))

        early: EarlyStop | None = None
        if plan.cfg.early_stop is None:
            done = _collect(plan, store, run_id, progress=progress, engine=engine, gen_batches=gen_batches)
        else:
            plan, done, early = _collect_until_decided(plan, store, run_id, progress=progress, engine=engine, gen_batches=gen_batches)
        completions, made, cached, gen_s, score_s, judge_s, scored, judged = done
        lossy = sum(1 for c in completions.values() if c.text and not encodable(c.text))
        if lossy:
            warnings.append(f"{lossy} output(s) hold characters UTF-8 cannot encode (lone surrogates): stored losslessly, "
                            "shown as U+FFFD in the reports, escaped (\\udXXX) in items.jsonl")
        if plan.cfg.adapter_check == "warn":
            warnings += _adapter_warnings(plan.specs, judged.items)

        record = build_record(plan, run_id, scored=scored, judged=judged, made=made, cached=cached, parity=parity,
                              timing=Timing(generate_s=round(gen_s, 3), score_s=round(score_s, 3), judge_s=round(judge_s, 3)),
                              warnings=warnings)
        record.early_stop = early
        if engine is not None:
            record.engine = Engine.model_validate(engine.summary())
        record.batches = [BatchInfo.model_validate(b) for b in gen_batches] + record.batches
        record = regate_run(plan.cfg.gates, record, judged.items, store=store)  # the same verdict `report --regate` gives
        store.save_run_items(run_id, judged.items)
        record.timing.wall_s = round(time.perf_counter() - t_start, 3)
        summary = record.to_json()
        store.finish_run(run_id, summary, "passed" if record.passed else "failed")
        stored = RunSummary.load(summary)  # the reports read what the store keeps, as `evalkit report` will
        write_reports(plan.out_dir, stored, judged.items, store=store)
        return RunResult(run_id, record.exit_code, summary, plan.out_dir, console_summary(stored) + f"\nreports: {plan.out_dir}")
    except BaseException as e:
        if run_id is not None:
            # the run stops here (missing key, unreachable server, Ctrl-C, a bug): record why, so
            # `runs list` does not show it running forever; a rerun resumes from the store
            reason = e.one_line() if isinstance(e, UserError) else ("interrupted" if isinstance(e, KeyboardInterrupt) else f"{type(e).__name__}: {e}")
            try:
                store.fail_run(run_id, redact_secrets(reason, plan.secrets), status="interrupted" if isinstance(e, KeyboardInterrupt) else "failed")
            except UserError as lost:  # the store itself is gone (past its retry bound): say so, keep the first error
                print(f"note: could not record the failure in the store: {terminal_safe(lost.one_line(), one_line=True)} "
                      "(`runs list` shows the run as stopped once its heartbeat is stale)", file=sys.stderr)
        raise
    finally:
        if engine is not None:
            engine.close()
        store.close()


_Collected = tuple[dict[str, Completion], int, int, float, float, float, _Scored, _Judged]


def _collect(plan: RunPlan, store: Store, run_id: str, *, progress: bool, engine: RayEngine | None,
             gen_batches: list[dict[str, Any]], opened: dict[tuple, _InProcess] | None = None) -> _Collected:
    """Generate (cached), score and judge every item of ``plan``'s suites."""
    with library_progress_bars(progress or not any(backend_info(s.backend).local_weights for s in plan.specs)), using(engine):
        completions, made, cached, gen_s = generate_all(store, plan.specs, plan.suites, progress=progress, secrets=plan.secrets, engine=engine,
                                                        batch_records=gen_batches, opened=opened)
    t_score = time.perf_counter()
    scored = score_items(plan, run_id, completions)
    score_s = time.perf_counter() - t_score
    t_judge = time.perf_counter()
    with using(engine):  # a judge that is a local model runs on the cluster too
        judged = judge_items(plan, store, scored, progress)
    return completions, made, cached, gen_s, score_s, time.perf_counter() - t_judge, scored, judged


def _collect_until_decided(plan: RunPlan, store: Store, run_id: str, *, progress: bool, engine: RayEngine | None,
                           gen_batches: list[dict[str, Any]]) -> tuple[RunPlan, _Collected, EarlyStop]:
    """early_stop: the items in their seeded random order (golden first), a block at a time; after each
    block every gate asks whether it is decided (``gates.sequential``); the first block end where all
    are decided ends generation and judging. A local model is loaded once for all the blocks. Returns
    the plan of the items used, what was collected on them, and the record's ``early_stop`` block.
    """
    import functools
    import math

    from .gates import sequential
    from .scoring.judge_rubric import scorer_scale

    es = plan.cfg.early_stop
    assert es is not None
    keys = sorted(((s.name, x.id, x.must_pass) for s in plan.suites for x in s.samples), key=lambda k: sequential.order_key(es.seed, *k))
    total = len(keys)
    block = es.block or max(10, math.ceil(total / 10))
    totals = sequential.totals_of(plan.suites)
    golden = sum(1 for k in keys if k[2])
    block_ends: list[int] = []
    made = gen_s = score_s = judge_s = 0.0
    sub = plan
    collected: _Collected | None = None
    opened: dict[tuple, _InProcess] = {}
    from .scoring.judges import local_judges_kept

    with local_judges_kept():  # a local judge model, too, is loaded once for all the blocks
        try:
            for end in range(min(block, total), total + block, block):
                end = min(end, total)
                if block_ends and end == block_ends[-1]:
                    break
                block_ends.append(end)
                use = {(s, i) for s, i, _ in keys[:end]}
                sub = dataclasses.replace(plan, suites=[dataclasses.replace(s, samples=tuple(x for x in s.samples if (s.name, x.id) in use))
                                                        for s in plan.suites])
                collected = _collect(sub, store, run_id, progress=progress, engine=engine, gen_batches=gen_batches, opened=opened)
                made += collected[1]
                gen_s, score_s, judge_s = gen_s + collected[3], score_s + collected[4], judge_s + collected[5]
                judged = collected[7]
                scale_of = functools.partial(scorer_scale, judged.stats)
                statuses = sequential.evaluate(plan.cfg.gates, judged.items, seed=es.seed, block_ends=block_ends, totals=totals, complete=end >= total,
                                               candidates=plan.candidates, baseline=plan.baseline, scale_of=scale_of, golden_total=golden)
                if all(st.decided for st in statuses.values()):
                    break
        finally:
            for backend in opened.values():
                backend.close()
    assert collected is not None
    completions, _, _, _, _, _, scored, judged = collected
    used = block_ends[-1]
    early = EarlyStop(items_used=used, items_total=total, blocks=len(block_ends), block=block, seed=es.seed, block_ends=block_ends,
                      stopped_early=used < total, scopes=[(s, t, n) for (s, t), n in sorted(totals.items())], golden=golden)
    # every generation of the items used counts once: made in some block, or served from the store
    return sub, (completions, int(made), len(completions) - int(made), gen_s, score_s, judge_s, scored, judged), early


def _redacted_config(dump: Any) -> Any:
    """The run's config as the store keeps it: URLs without credentials."""
    if isinstance(dump, dict):
        return {k: (redact_url(v) if isinstance(v, str) and k in ("base_url", "url", "store", "address") else _redacted_config(v)) for k, v in dump.items()}
    if isinstance(dump, list):
        return [redact_url(v) if isinstance(v, str) and "://" in v else _redacted_config(v) for v in dump]
    return dump
