"""Pydantic models for eval.yaml and suite.yaml, and a YAML loader whose errors name file and line.

Unknown keys are errors (``extra="forbid"``). Precedence: defaults < file < CLI flag.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ._util.fs import read_json, read_utf8  # noqa: F401 - re-exported: the config readers' home was here
from ._util.limits import MAX_NEW_TOKENS_LIMIT
from .errors import ConfigError
from .registries import backend_kind, backend_names, metric_names  # the one list of names: config imports no stage

T = TypeVar("T", bound=BaseModel)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


class GenerationConfig(Strict):
    max_new_tokens: int = Field(128, ge=1, le=MAX_NEW_TOKENS_LIMIT)
    temperature: float = Field(0.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int = 0
    stop: list[str] = Field(default_factory=list)
    samples: int = Field(1, ge=1, le=1000)  # generations per item (sample k uses seed + k); pass@k, pass^k, the noise floor
    reasoning: Literal["strip", "keep"] = "strip"  # strip: scorers and judges see the answer, the thinking is kept apart
    reasoning_tags: list[str] = Field(default_factory=lambda: ["<think>", "</think>"], min_length=2, max_length=2)  # open, close


class BatchConfig(Strict):
    """``batch:`` on an openai / anthropic model (candidate or judge): the provider's batch API (half price, answered within 24 h)."""

    size: int = Field(10_000, ge=1, le=100_000)
    poll_s: float = Field(30.0, gt=0)
    max_wait_h: float = Field(24.0, gt=0)
    max_batches: int = Field(20, ge=1)
    fallback: Literal["batch", "direct"] = "batch"


class ModelEntry(Strict):
    """One entry under ``models:``. Which keys matter depends on ``backend``."""

    backend: str  # a registered backend (evalkit.models.backend_names()): hf, vllm, openai, anthropic
    path: str | None = None  # hf / vllm: base checkpoint dir (or a merged checkpoint)
    model: str | None = None  # openai / anthropic: model name (ft:... accepted)
    adapter: str | None = None  # LoRA adapter dir (hf / vllm)
    base_url: str | None = None
    api_key_env: str | None = None  # name of the environment variable holding the key
    generation: GenerationConfig | None = None  # overrides the run's generation block
    # hf
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    load_in_4bit: bool = False
    # rows per generation batch; auto: the largest the device's free memory holds for the longest prompt (at most 64)
    batch_size: int | Literal["auto"] = 8
    device: str | None = None
    # API
    concurrency: int = Field(8, ge=1)
    timeout_s: float = Field(60.0, gt=0)
    max_retries: int = Field(4, ge=0)
    max_tokens_param: str | None = None  # e.g. "max_completion_tokens" for newer OpenAI models
    anthropic_version: str | None = None  # e.g. "2023-06-01" to send temperature/top_p (newer versions refuse them)
    # openai / anthropic: the provider's batch API (true, or {size, poll_s, max_wait_h, max_batches, fallback})
    batch: BatchConfig | None = None
    # vllm
    mode: Literal["serve", "url", "offline"] | None = None
    url: str | None = None
    urls: list[str] | None = None
    python: str | None = None
    server_args: list[str] = Field(default_factory=list)
    max_lora_rank: int | None = None
    gpu_memory_utilization: float | None = None
    tensor_parallel_size: int | None = Field(None, ge=1)
    data_parallel_size: int | None = Field(None, ge=1)  # serve mode: vLLM's own engine replicas (--data-parallel-size)

    @field_validator("batch", mode="before")
    @classmethod
    def _batch(cls, v: Any) -> Any:
        # true: the defaults; false: off. A mapping is checked as BatchConfig, so its errors name its keys.
        return ({} if v else None) if isinstance(v, bool) else v

    @field_validator("batch_size")
    @classmethod
    def _batch_size(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v < 1:
            raise ValueError("batch_size must be at least 1, or auto")
        return v

    @field_validator("backend")
    @classmethod
    def _registered_backend(cls, v: str) -> str:
        if v not in backend_names():
            raise ValueError(f"unknown backend '{v}' (known: {', '.join(backend_names())})")
        return v

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, v: str | None) -> str | None:
        # the message never repeats the value: it may be a real key typed in the wrong place
        if v is not None and not _ENV_NAME.match(v):
            if looks_like_secret(v):
                raise ValueError("this looks like an API key, not an environment variable name: put the key in a variable (export MY_KEY=...) and write api_key_env: MY_KEY")
            raise ValueError("must be the name of an environment variable (letters, digits and _), e.g. OPENAI_API_KEY")
        return v

    @field_validator("base_url", "url")
    @classmethod
    def _one_url(cls, v: str | None) -> str | None:
        if v is not None:
            check_http_url(v)
        return v

    @field_validator("urls")
    @classmethod
    def _urls(cls, v: list[str] | None) -> list[str] | None:
        for u in v or []:
            check_http_url(u)
        return v

    @model_validator(mode="after")
    def _check_backend_fields(self) -> "ModelEntry":
        local = backend_kind(self.backend).local_weights
        if local and not self.path:
            raise ValueError(f"backend {self.backend} needs 'path' (a local checkpoint directory)")
        if not local and not self.model:
            raise ValueError(f"backend {self.backend} needs 'model' (the API model name)")
        if not local and self.adapter:
            raise ValueError(f"'adapter' applies to backends that load local weights, not {self.backend}")
        return self


class GateSpec(Strict):
    """A pass/fail rule. ``min: 0`` is a real threshold (checked with ``is not None``)."""

    name: str
    metric: str  # a registered gate metric (evalkit.gates.metric_names())
    scorer: str | None = None
    model: str | None = None  # default: every candidate
    suite: str | None = None  # suite name; default: every suite
    min: float | None = None
    max: float | None = None
    vs: str | None = None  # "baseline", a model name, or "last_accepted"
    judge: str | None = None  # pairwise judge name for win_rate
    significant: float | None = Field(None, gt=0, lt=1)  # alpha for a paired test
    on_no_decision: Literal["fail", "warn", "pass"] = "fail"
    tag: str | None = None  # only samples carrying this tag
    # "no decision" when the bootstrap CI (at this confidence) of the observed value straddles the
    # threshold; what happens then is ``on_no_decision``. Unset: the point estimate decides.
    ci: float | None = Field(None, gt=0, lt=1)
    # comparisons (regressions, vs): fewer scored pairs than this is "no decision", never a pass
    min_pairs: int = Field(1, ge=1)
    # win_rate: gate the length-controlled win rate (a logistic model on the length difference,
    # evaluated at equal lengths) instead of the raw one
    length_controlled: bool = False
    # vs: last_accepted when the suite changed since that run: compare the items both runs have
    # (compare_common), fail the gate, or compare the common items and warn
    on_changed_items: Literal["compare_common", "fail", "warn"] | None = None
    # pass_at_k / pass_all_k: k of the item's samples (at most generation.samples)
    k: int | None = Field(None, ge=1)
    # regressions with several samples per item: a count above max but inside the reference's own
    # noise floor (items expected to flip between two of its runs) is no decision with no_decision
    noise: Literal["report", "no_decision"] = "report"
    # mean of a judge scorer / win_rate of a pairwise judge: gate the mean human label estimated from these
    # labels (a CSV of model,sample_id,value, beside eval.yaml) and the judge's scores (PPI++), not the judge's own
    calibrate: str | None = None

    @field_validator("metric")
    @classmethod
    def _registered_metric(cls, v: str) -> str:
        if v not in metric_names():
            raise ValueError(f"unknown metric '{v}' (known: {', '.join(metric_names())})")
        return v

    @model_validator(mode="after")
    def _check(self) -> "GateSpec":
        if self.metric in ("pass_rate", "mean", "pass_at_k", "pass_all_k") and not self.scorer:
            raise ValueError(f"metric {self.metric} needs 'scorer'")
        if self.metric in ("pass_at_k", "pass_all_k") and self.k is None:
            raise ValueError(f"metric {self.metric} needs 'k' (how many of an item's samples)")
        if self.k is not None and self.metric not in ("pass_at_k", "pass_all_k"):
            raise ValueError(f"'k' applies to pass_at_k and pass_all_k gates (not {self.metric})")
        if self.metric == "regressions":
            if self.max is None:
                self.max = 0
            if self.vs is None:
                self.vs = "baseline"
        if self.metric == "perplexity_ratio" and self.vs is None:
            self.vs = "baseline"
        if self.metric not in ("regressions", "adapter_applied", "must_pass", "template_match") and self.min is None and self.max is None:
            raise ValueError("a gate needs 'min' or 'max'")
        # options a metric would silently ignore are errors (gates.py reads them)
        if self.vs is not None and self.metric not in ("regressions", "mean", "win_rate", "pass_rate", "perplexity_ratio"):
            raise ValueError(f"'vs' compares with another model: metric regressions, pass_rate, mean, win_rate or perplexity_ratio (not {self.metric})")
        if self.significant is not None and not (self.metric in ("regressions", "win_rate") or (self.metric in ("mean", "pass_rate") and self.vs)):
            raise ValueError("'significant' needs a paired comparison: metric regressions, win_rate, or mean / pass_rate with 'vs'")
        if self.length_controlled and self.metric != "win_rate":
            raise ValueError(f"'length_controlled' applies to win_rate gates (not {self.metric})")
        if self.on_changed_items is not None and self.vs != "last_accepted":
            raise ValueError("'on_changed_items' applies to gates with 'vs: last_accepted' (items paired across runs)")
        if self.calibrate is not None and not ((self.metric == "mean" and self.vs is None) or (self.metric == "win_rate" and not self.length_controlled)):
            raise ValueError("'calibrate' applies to a mean gate on a judge scorer (without 'vs') or a win_rate gate (without length_control): "
                             "human labels calibrate the judge's estimate")
        if self.ci is not None and self.metric not in ("pass_rate", "mean", "win_rate"):
            raise ValueError(f"'ci' applies to pass_rate, mean and win_rate gates (not {self.metric})")
        lo, hi = _METRIC_RANGES.get(self.metric, (None, None))
        if self.metric == "pass_rate" and self.vs is not None:
            lo, hi = -1.0, 1.0  # a difference of two rates
        for key, t in (("min", self.min), ("max", self.max)):
            if t is None:
                continue
            if t != t or t in (float("inf"), float("-inf")):
                raise ValueError(f"'{key}' must be a finite number")
            if (lo is not None and t < lo) or (hi is not None and t > hi):
                rng = f"[{lo:g}, {hi:g}]" if hi is not None else f"at least {lo:g}"
                raise ValueError(f"'{key}: {t:g}' is outside the range of {self.metric} ({rng})")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"'min: {self.min:g}' is above 'max: {self.max:g}': no value could pass")
        return self


# What each metric's observed value can be; a threshold outside it is a typo (``min: 5`` on a rate).
_METRIC_RANGES: dict[str, tuple[float | None, float | None]] = {
    "pass_rate": (0.0, 1.0),
    "win_rate": (0.0, 1.0),
    "error_rate": (0.0, 1.0),
    "adapter_applied": (0.0, 1.0),
    "regressions": (0.0, None),
    "human_unshippable": (0.0, None),
    "perplexity_ratio": (0.0, None),
    "template_match": (0.0, 1.0),
}

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SECRET_PREFIXES = ("sk-", "sk_", "sess-", "key-", "xai-", "gsk_", "hf_", "AIza")


def looks_like_secret(value: str) -> bool:
    """A value typed where a variable name belongs that is probably the key itself."""
    v = value.strip()
    if v.startswith(_SECRET_PREFIXES):
        return True
    return len(v) >= 24 and not _ENV_NAME.match(v)


def check_http_url(url: str) -> None:
    """A server address must be http(s)://host[:port][/path]; anything else fails before a run starts."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (reading it raises on a non-numeric or out-of-range port)
    except ValueError as e:
        raise ValueError(f"not a valid URL ({e})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("not a valid server URL: expected http://HOST[:PORT][/PATH] or https://...")
    if any(c.isspace() for c in url):
        raise ValueError("not a valid server URL: it contains whitespace")


def store_location(value: str) -> str:
    """What a ``store:`` value names: a SQLite file, or a PostgreSQL URL (returned as given).

    As in SQLAlchemy, ``sqlite:///rel.db`` is a relative and ``sqlite:////abs.db`` an absolute
    path; a plain path is a file path; ``postgresql://[user@]host[:port]/db`` (also ``postgres://``,
    ``postgresql+psycopg://``) is a PostgreSQL database, checked strictly (``StoreLocation``). Any
    other scheme (mysql://, ...) is refused with the supported forms, never taken as a folder name.
    """
    from ._util.location import StoreLocation

    loc = StoreLocation.parse(value)
    return value if loc.is_postgres else str(loc.path)


class JudgeEntry(Strict):
    """One judge under ``judges:`` (the LLM-as-judge stage owns the details)."""

    rubric: str
    name: str | None = None
    model: ModelEntry | None = None
    models: list[ModelEntry] | None = None  # an ensemble
    aggregate: Literal["mean", "majority"] = "mean"
    repeats: int = Field(1, ge=1)
    vs: str | None = None  # pairwise: compare each candidate with this model (default: baseline)
    concurrency: int | None = Field(None, ge=1)
    prices: dict[str, dict[str, float]] | None = None  # model -> {input, output} per 1M tokens
    scoring: Literal["sampled", "expected"] | None = None  # overrides the rubric's (expected: probability-weighted)
    # added by the judge stage (optional, additive):
    structured_output: Literal["auto", "json_schema", "json_object", "prompt", "tool"] = "auto"  # auto: json_schema (OpenAI) / tool (Anthropic), falling back when a server lacks it
    noise: Literal["no_decision", "ignore"] = "no_decision"  # repeats > 1: a gate threshold inside the judge's own noise gives "no decision"


class RayOptions(Strict):
    """eval.yaml's ``ray:`` block: generation for local-weight models on a Ray cluster.

    ``address``: ``local`` (start a cluster for this run), ``auto`` (the cluster ``ray start``
    started on this machine), ``host:port`` (a cluster's GCS) or ``ray://host:port`` (Ray Client).
    ``replicas``: a count, or ``[min, max]`` (start once ``min`` replicas are up; the rest join when
    the cluster has room, so an autoscaling cluster grows for them). ``num_cpus`` / ``num_gpus``: per
    replica (torch in a replica uses ``num_cpus`` threads). ``max_restarts``: how often Ray restarts a
    replica whose process died; ``retries``: how often a block is retried (on the restarted replica
    or another) before the run stops.
    """

    address: str = "local"
    replicas: int | list[int] = 2
    num_cpus: float = Field(1.0, gt=0)
    num_gpus: float = Field(0.0, ge=0)
    max_restarts: int = Field(2, ge=0)
    retries: int = Field(2, ge=0)
    start_timeout_s: float = Field(600.0, gt=0)  # how long to wait for the first replicas (model load included)

    @field_validator("replicas")
    @classmethod
    def _replicas(cls, v: int | list[int]) -> int | list[int]:
        lo, hi = (v, v) if isinstance(v, int) else (tuple(v) if len(v) == 2 else (0, -1))
        if lo < 1 or hi < lo:
            raise ValueError("replicas must be a count >= 1 or a range [min, max] with 1 <= min <= max")
        return v

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        v = v.strip()
        if not v:
            raise ValueError("address must be local, auto, host:port or ray://host:port")
        return v

    def replica_range(self) -> tuple[int, int]:
        return (self.replicas, self.replicas) if isinstance(self.replicas, int) else (self.replicas[0], self.replicas[1])


class EarlyStopConfig(Strict):
    """``early_stop``: items in a seeded random order, in blocks; the run stops when every gate is decided."""

    block: int | None = Field(None, ge=1)  # items per block (default: a tenth of the run's items, at least 10)
    seed: int = 0  # the draw order


class EvalConfig(Strict):
    models: dict[str, ModelEntry]
    baseline: str | None = None
    candidates: list[str] | None = None
    suites: list[str] = Field(min_length=1)
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    gates: list[GateSpec] = Field(default_factory=list)
    judges: list[JudgeEntry] = Field(default_factory=list)
    store: str | None = None  # default: .evalkit/store.db in the current folder; relative paths resolve beside eval.yaml
    adapter_check: Literal["warn", "off"] = "warn"
    parity: dict[str, Any] | None = None  # vLLM parity check options (vllm stage)
    name: str | None = None
    ray: RayOptions | None = None  # generation for hf / offline vllm models on a Ray cluster (or --ray ADDRESS)
    # true or {block: N, seed: S}: stop generating (and judging) once every gate is decided on anytime-valid bounds
    early_stop: EarlyStopConfig | None = None

    @field_validator("early_stop", mode="before")
    @classmethod
    def _early_stop(cls, v: Any) -> Any:
        if v is True:
            return {}
        if v is False:
            return None
        return v

    @field_validator("store")
    @classmethod
    def _store(cls, v: str | None) -> str | None:
        return None if v is None else store_location(v)

    @field_validator("models")
    @classmethod
    def _non_empty(cls, v: dict[str, ModelEntry]) -> dict[str, ModelEntry]:
        if not v:
            raise ValueError("at least one model is needed")
        return v

    @model_validator(mode="after")
    def _names_exist(self) -> "EvalConfig":
        names = set(self.models)
        if self.baseline is not None and self.baseline not in names:
            raise ValueError(f"baseline '{self.baseline}' is not one of models: {sorted(names)}")
        for c in self.candidates or []:
            if c not in names:
                raise ValueError(f"candidate '{c}' is not one of models: {sorted(names)}")
        for i, j in enumerate(self.judges):
            if j.vs is not None and j.vs not in names:
                raise ValueError(f"judges[{i}] compares with '{j.vs}', not one of {sorted(names)}")
        for g in self.gates:
            if g.model is not None and g.model not in names:
                raise ValueError(f"gate '{g.name}' names model '{g.model}', not one of {sorted(names)}")
            if g.vs not in (None, "baseline", "last_accepted") and g.vs not in names:
                raise ValueError(f"gate '{g.name}' compares with '{g.vs}', not one of {sorted(names)}")
            if g.vs == "baseline" and self.baseline is None and g.metric in ("regressions", "win_rate", "perplexity_ratio"):
                raise ValueError(f"gate '{g.name}' compares with the baseline, but no 'baseline' is set")
        return self

    def candidate_names(self) -> list[str]:
        if self.candidates is not None:
            return list(self.candidates)
        return [n for n in self.models if n != self.baseline]


class SuiteConfig(Strict):
    name: str
    # perplexity: {"id", "text"} items, measured by rolling log-likelihood (word/byte perplexity, bits per byte)
    kind: Literal["regression", "heldout", "perplexity"] = "regression"
    samples: str = "samples.jsonl"
    description: str | None = None
    scorers: list[Any] = Field(default_factory=list)
    manifest: str | None = None  # split manifest that froze a held-out split (data stage)


# --- YAML with line numbers -------------------------------------------------------------------


class DuplicateKey(Exception):
    def __init__(self, key: str, first: int, second: int):
        super().__init__(key)
        self.key, self.first, self.second = key, first, second


def _key_lines(node: yaml.Node, path: tuple = (), out: dict | None = None) -> dict[tuple, int]:
    """Map every key path (as pydantic reports it) to its 1-based line in the file.

    Raises DuplicateKey for a key that appears twice in one mapping (PyYAML keeps the last silently).
    """
    out = {} if out is None else out
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for k, v in node.value:
            key = k.value
            if isinstance(key, str) and k.tag != "tag:yaml.org,2002:merge":
                if key in seen:
                    raise DuplicateKey(key, seen[key], k.start_mark.line + 1)
                seen[key] = k.start_mark.line + 1
            out[path + (key,)] = k.start_mark.line + 1
            _key_lines(v, path + (key,), out)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            out[path + (i,)] = v.start_mark.line + 1
            _key_lines(v, path + (i,), out)
    return out


def read_yaml(path: str | Path) -> tuple[Any, dict[tuple, int]]:
    """Read a YAML file; return the data and a key-path -> line map. Errors name file and line."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError("file not found", where=p)
    text = read_utf8(p)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else None
        raise ConfigError(f"invalid YAML: {e.problem or e}", where=p, line=line) from None
    except yaml.YAMLError as e:  # e.g. a reader error on a control character
        raise ConfigError(f"invalid YAML: {e}", where=p) from None
    try:
        lines = _key_lines(node) if node is not None else {}
    except DuplicateKey as d:
        raise ConfigError(f"key '{d.key}' appears twice (lines {d.first} and {d.second}); remove one", where=p, line=d.second) from None
    return data, lines


def _line_for(loc: tuple, lines: dict[tuple, int]) -> int | None:
    # pydantic locations may carry extra parts (e.g. a union member); walk back to the longest known prefix.
    for n in range(len(loc), 0, -1):
        if loc[:n] in lines:
            return lines[loc[:n]]
    return None


def validation_error(err: ValidationError, path: str | Path, lines: dict[tuple, int]) -> ConfigError:
    """The first pydantic error as one line: ``file:line: key: message``."""
    e = err.errors()[0]
    loc = tuple(x for x in e["loc"] if not (isinstance(x, str) and x.startswith("function-")))
    key = ".".join(str(x) for x in loc) or "(top level)"
    if e["type"] == "extra_forbidden":
        msg = f"unknown key '{loc[-1]}'" + (f" in {'.'.join(str(x) for x in loc[:-1])}" if len(loc) > 1 else "")
    elif e["type"] == "missing":
        msg = f"{key}: required key is missing"
    else:
        text = e["msg"].removeprefix("Value error, ")
        msg = f"{key}: {text}" if loc else text
    return ConfigError(msg, where=path, line=_line_for(loc, lines))


def load_model(cls: type[T], path: str | Path, overrides: dict[str, Any] | None = None) -> T:
    """Read ``path`` into ``cls``; ``overrides`` (from CLI flags) win over the file."""
    data, lines = read_yaml(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("expected a mapping at the top level", where=path, line=1)
    if overrides:
        data = {**data, **overrides}
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        raise validation_error(err, path, lines) from None


def load_eval_config(path: str | Path, overrides: dict[str, Any] | None = None) -> EvalConfig:
    return load_model(EvalConfig, path, overrides)
