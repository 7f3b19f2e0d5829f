"""The small typed core every stage shares.

Frozen dataclasses inside the package; pydantic models (config.py) only for what is read from files.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

Role = Literal["system", "user", "assistant"]
ROLES: tuple[str, ...] = ("system", "user", "assistant")


def stable_hash(obj: Any, length: int = 16) -> str:
    """Content hash of a JSON-serialisable object (sorted keys, no whitespace)."""
    data = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(data.encode("utf-8")).hexdigest()[:length]


@dataclass(frozen=True)
class Message:
    role: str
    content: str

    def as_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


@dataclass(frozen=True)
class Sample:
    """One evaluation item: the prompt messages, and what a good answer looks like.

    ``messages`` ends with the turn the model answers (usually ``user``); a training-style line whose
    last message is the assistant turn is split on load: that turn becomes ``reference``.
    """

    id: str
    messages: tuple[Message, ...]
    reference: str | None = None
    schema: Mapping[str, Any] | None = field(default=None, hash=False, compare=False)
    tags: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False)
    must_pass: bool = False  # a golden item: failing it fails a must_pass gate, whatever the statistics
    # A multiple-choice item (scored by log-likelihood, never generated): ``choices`` are continuations
    # appended exactly as written to the context (``prompt``, raw text; else the chat-templated messages).
    prompt: str | None = None
    choices: tuple[str, ...] = ()
    answer: int | None = None
    # A perplexity item (suite kind ``perplexity``): the text whose rolling log-likelihood is measured.
    text: str | None = None

    @property
    def scored_by_loglikelihood(self) -> bool:
        """Multiple-choice and perplexity items: the model is asked for log-probabilities, not text."""
        return bool(self.choices) or self.text is not None

    def messages_as_dicts(self) -> list[dict[str, str]]:
        return [m.as_dict() for m in self.messages]

    @property
    def prompt_text(self) -> str:
        """The last user turn: what a reviewer or a judge reads as "the prompt"."""
        if not self.messages:  # a raw-text multiple-choice item, or a perplexity text
            return self.prompt if self.prompt is not None else (self.text or "")
        for m in reversed(self.messages):
            if m.role == "user":
                return m.content
        return self.messages[-1].content if self.messages else ""

    def prompt_hash(self) -> str:
        """What determines a model's output for this sample (the messages only; for a log-likelihood
        item, its context and continuations, or its text).
        """
        if self.text is not None:
            return stable_hash({"rolling": self.text})
        if self.choices:
            return stable_hash({"context": self.prompt if self.prompt is not None else self.messages_as_dicts(), "choices": list(self.choices)})
        return stable_hash(self.messages_as_dicts())

    def content_hash(self) -> str:
        return stable_hash(
            {
                "id": self.id,
                "messages": self.messages_as_dicts(),
                "reference": self.reference,
                "schema": self.schema,
                "tags": list(self.tags),
                "metadata": dict(self.metadata),
                # only when set, so a generation item's hash is what it always was
                **({"prompt": self.prompt} if self.prompt is not None else {}),
                **({"choices": list(self.choices), "answer": self.answer} if self.choices else {}),
                **({"text": self.text} if self.text is not None else {}),
            }
        )


@dataclass(frozen=True)
class ScorerSpec:
    """A scorer as configured in suite.yaml: ``kind`` (json_schema, regex, ...) with its options.

    ``name`` is what metrics and gates use; it defaults to the kind.
    """

    kind: str
    name: str
    options: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class Suite:
    name: str
    kind: Literal["regression", "heldout", "perplexity"]
    samples: tuple[Sample, ...]
    scorers: tuple[ScorerSpec, ...]
    version: str  # content hash of suite.yaml + samples + schema files
    path: str = ""


@dataclass(frozen=True)
class GenerationParams:
    """What one generation is asked for; part of the model's identity (``ModelSpec.model_id``)."""

    max_new_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    stop: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "seed": self.seed,
            "stop": list(self.stop),
        }


@dataclass(frozen=True)
class ModelSpec:
    """A model as eval.yaml names it. ``model_id`` hashes everything that determines outputs."""

    name: str
    backend: str  # hf | vllm | openai | anthropic
    path: str | None = None  # local checkpoint (hf, vllm)
    model: str | None = None  # API model name (openai, anthropic)
    adapter: str | None = None  # LoRA adapter dir
    base_url: str | None = None
    api_key_env: str | None = None
    generation: GenerationParams = GenerationParams()
    options: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False)
    identity: str = ""  # weights/adapter fingerprint, filled by models.identify()
    samples: int = 1  # generations per item; sample k generates with seed + k (its own model_id and cache key)
    reasoning: str = "strip"  # strip | keep: what scorers see of a reasoning model's thinking (not part of model_id)
    reasoning_tags: tuple[str, str] = ("<think>", "</think>")

    @property
    def model_id(self) -> str:
        return stable_hash(
            {
                "backend": self.backend,
                "path": self.path,
                "model": self.model,
                "adapter": self.adapter,
                "base_url": self.base_url,
                "identity": self.identity,
                "generation": self.generation.as_dict(),
                # unset options are left out, so adding an optional config field changes no existing identity
                "options": {
                    k: v for k, v in sorted(dict(self.options).items())
                    if k not in _NON_OUTPUT_OPTIONS and v not in (None, [], {})
                },
            }
        )

    def describe(self) -> str:
        what = self.path or self.model or "?"
        return f"{self.name} ({self.backend}: {what}{' + ' + self.adapter if self.adapter else ''})"


# Options that change how a backend runs but not what it outputs; kept out of model_id.
_NON_OUTPUT_OPTIONS = frozenset({
    "batch_size", "concurrency", "timeout_s", "max_retries", "url", "urls", "python", "server_args", "log_dir", "batch",
    "retry_base_delay_s", "retry_max_delay_s", "retry_max_retry_after_s", "gpu_memory_utilization", "tensor_parallel_size",
    "data_parallel_size",
    "mode", "device",
})


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token with the model's log-probabilities at its position (a judge's
    ``scoring: expected`` reads the distribution over the score's tokens from it).
    """

    text: str  # the token as it appears in the reply text
    logprob: float
    top: tuple[tuple[str, float], ...] = ()  # the most likely tokens at this position: (text, logprob)


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: str | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    latency_s: float = 0.0
    error: str | None = None
    logprobs: tuple[TokenLogprob, ...] | None = None  # only when asked for (GenerationRequest.top_logprobs); never stored
    reasoning: str | None = None  # what the server returned apart from the answer (reasoning_content, thinking blocks)
    # a log-likelihood item's answer: the summed log-probability of each choice given its context, or
    # (perplexity) one value, the text's rolling log-likelihood; ``tokens_in`` = tokens scored
    loglikelihoods: tuple[float, ...] | None = None


ScoreKind = Literal["validator", "judge", "pairwise", "human"]


@dataclass(frozen=True)
class Score:
    """A scorer's verdict on one output. ``error`` set means unscored: never a pass, never a fail."""

    scorer: str
    value: float | None
    passed: bool | None
    explanation: str = ""
    error: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False)
    # who produced it, set by the producer: gates and reports tell validators from judges by this,
    # never by the score's name
    kind: ScoreKind = "validator"

    @classmethod
    def from_dict(cls, name: str, d: Mapping[str, Any]) -> "Score":
        """A stored score (``as_dict``'s form) back. Items stored before scores had a ``kind`` get the
        one their producer would have set (judge scores were named ``judge.*`` or marked in details).
        """
        details = d.get("details") or {}
        kind: ScoreKind
        stored = d.get("kind")
        if stored in ("validator", "judge", "pairwise", "human"):
            kind = stored
        else:
            pairwise = "winner" in details or bool(details.get("pairwise")) or name == "pairwise" or name.endswith(".pairwise")
            judge = name.startswith("judge.") or bool(details.get("judge"))
            kind = "pairwise" if pairwise else "judge" if judge else "validator"
        value = d.get("value")
        return cls(scorer=name, value=float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None,
                   passed=d.get("passed") if isinstance(d.get("passed"), bool) else None, explanation=str(d.get("explanation") or ""),
                   error=d.get("error") or None, details=dict(details) if isinstance(details, Mapping) else {}, kind=kind)

    @property
    def from_judge(self) -> bool:
        """Judge scores (criterion or pairwise): gates on validators skip them."""
        return self.kind in ("judge", "pairwise")

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"value": self.value, "passed": self.passed, "kind": self.kind}
        if self.explanation:
            d["explanation"] = self.explanation
        if self.error:
            d["error"] = self.error
        if self.details:
            d["details"] = dict(self.details)
        return d


@dataclass(frozen=True)
class GateResult:
    name: str
    passed: bool | None  # None: no decision
    observed: float | None
    threshold: float | None
    detail: str
    model: str | None = None
    metric: str = ""
    failing_items: tuple[str, ...] = ()
    p_value: float | None = None
    outcome: Literal["pass", "fail", "no_decision", "warn"] = "pass"
    # a comparison gate's minimum detectable effect: the smallest true difference its test finds
    # with 80 % power at its alpha, given its n and the observed discordance or variance
    mde: float | None = None
    test: str | None = None  # the test behind p_value: mcnemar_exact, wilcoxon, sign_test, ...
    sequential: bool = False  # decided by early_stop's anytime-valid test (``bound``: its confidence bound then)
    bound: float | None = None
    # a calibrate: gate: judge_mean, human_mean, ci [lo, hi], n_labeled, n_unlabeled (the report's calibrated judge scores)
    calibration: Mapping[str, Any] | None = field(default=None, hash=False, compare=False)

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": self.name,
            "model": self.model,
            "metric": self.metric,
            "passed": self.passed,
            "outcome": self.outcome,
            "observed": self.observed,
            "threshold": self.threshold,
            "detail": self.detail,
            "failing_items": list(self.failing_items),
        }
        if self.p_value is not None:
            d["p_value"] = self.p_value
        if self.mde is not None:
            d["mde"] = self.mde
        if self.test is not None and self.p_value is not None:
            d["test"] = self.test
        if self.sequential:
            d["sequential"] = True
            d["bound"] = self.bound
        if self.calibration is not None:
            d["calibration"] = dict(self.calibration)
        return d
