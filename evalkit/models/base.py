"""The model layer's protocols: :class:`Backend` (every backend: hf, vllm, openai, anthropic) and
:class:`Provider` (an API's hooks: connections, retry classification, structured requests, batches),
with the types structured generation returns. Everything else in ``evalkit.models`` builds on these.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Literal, Mapping, Protocol, Sequence

from ..errors import BackendUnavailable
from ..types import Completion, Message, ModelSpec, TokenLogprob
from .retry import Verdict


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt for one model. ``key`` is the store's cache key for the output."""

    key: str
    model: ModelSpec
    messages: tuple[Message, ...]
    top_logprobs: int = 0  # > 0: return each generated token's top-k log-probabilities (hf); not part of the output's identity


@dataclass(frozen=True)
class LoglikelihoodRequest:
    """One log-likelihood item for one model. ``key`` is the store's cache key for the answer.

    Multiple choice: the context is ``prompt`` (raw text) or ``messages`` (rendered by the chat template
    with the generation prompt), and each of ``continuations`` is scored appended to it exactly as
    written. Perplexity: ``text``'s rolling log-likelihood over the model's context window.
    """

    key: str
    model: ModelSpec
    prompt: str | None = None
    messages: tuple[Message, ...] = ()
    continuations: tuple[str, ...] = ()
    text: str | None = None


ProgressFn = Callable[[int], None]  # called with the number of requests just finished


class Backend(Protocol):
    """A loaded model (or server/API client) that can serve one or more ModelSpecs of a group.

    ``generate`` returns one Completion per request, in request order. Per-request failures (after
    retries) come back as ``Completion(error=...)``; an unreachable server or unloadable model raises
    ``errors.BackendUnavailable``. Greedy decoding when temperature is 0, so runs reproduce.
    """

    def generate(self, requests: Sequence[GenerationRequest], progress: ProgressFn | None = None) -> list[Completion]: ...

    def close(self) -> None: ...


class LoglikelihoodBackend(Backend, Protocol):
    """A backend that scores text (hf, vllm): one Completion per request, in request order, with
    ``loglikelihoods`` (one per continuation, or one for a rolling text) and ``tokens_in`` the tokens
    scored; a per-request failure is ``Completion(error=...)``. Tokenised as lm-evaluation-harness
    does: context and continuation encoded whole, split at the context's length.
    """

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest], progress: ProgressFn | None = None) -> list[Completion]: ...


# --- structured generation: what a provider hook returns, and the protocol every provider implements ---

StructuredMode = Literal["json_schema", "json_object", "prompt", "tool"]
TOOL_NAME = "record_verdict"  # the forced tool whose input is the verdict (tool mode)


def schema_instruction(schema: Mapping[str, Any]) -> str:
    """The schema spelled out in the system text (modes ``json_object`` and ``prompt``)."""
    return (
        "\n\nReply with exactly one JSON object and nothing else. It must satisfy this JSON Schema:\n"
        + json.dumps(schema, indent=2, sort_keys=False)
    )


@dataclass
class Reply:
    """One successful structured exchange: the reply text (or the tool input as JSON) and what it cost."""

    raw: str
    parsed: Any | None  # set when the provider returned structured data (tool input)
    tokens_in: int
    tokens_out: int
    structured: StructuredMode
    system: str
    user: str
    attempts: int
    latency_s: float
    finish_reason: str | None = None  # "length" / "max_tokens": the reply was cut off
    logprobs: tuple[TokenLogprob, ...] | None = None  # when asked for and the provider returns them


class MalformedReply(Exception):
    """The HTTP body parsed but has no usable message (no choices, no content): retried."""


class CallFailed(Exception):
    """A structured request failed for good (retries exhausted or a non-retryable 4xx)."""

    def __init__(self, message: str, attempts: int = 1):
        super().__init__(message)
        self.attempts = attempts  # HTTP requests made for it


class FatalEndpointError(BackendUnavailable):
    """The endpoint cannot work at all (bad key, unknown model): stop instead of failing every item."""


BatchAnswer = tuple[str, Any]  # (ok | error | expired | cancelled, the answer's body or the error text)


class Provider(Protocol):
    """One API's hooks: how its clients connect, how its failures are classified, how a structured
    request and a batch look on its wire, and what it can do. The openai and anthropic backend
    modules each define one (``PROVIDER``); vLLM servers speak the openai one. The structured
    endpoint (``models.structured``) and the batch endpoint (``models.batch``) call only these.
    """

    name: str  # the wire protocol: openai | anthropic
    default_mode: StructuredMode  # how structured output is asked for first
    no_logprobs: str | None  # why it never returns token log-probabilities (None: it can)
    max_batch_size: int  # requests per batch the provider accepts

    def client(self, *, api_key: str, base_url: str | None, timeout_s: float) -> Any:
        """An async SDK client (its own connection pool) with the SDK's retries off."""

    def classify(self, exc: BaseException) -> Verdict | None:
        """The SDK's own exception types: retry or not (None: not an exception of this SDK)."""

    def is_failure(self, exc: BaseException) -> bool:
        """An exception of this SDK (a failed call: data, not a bug in evalkit)."""

    def structured_body(self, model: str, system: str, user: str, schema: Mapping[str, Any], mode: StructuredMode, *,
                        temperature: float, max_tokens: int, schema_name: str, max_tokens_param: str, top_logprobs: int) -> dict[str, Any]:
        """The request body of one structured request (a direct call's, or a batch row's)."""

    def structured_reply(self, data: Any, mode: StructuredMode, system: str, user: str, top_logprobs: int) -> Reply:
        """A reply body as a Reply; MalformedReply when it has no usable message."""

    async def send(self, client: Any, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST one request body; the decoded JSON reply."""

    def generation_body(self, spec: ModelSpec, messages: Sequence[Message]) -> tuple[dict[str, Any], Callable[[Any], Completion]]:
        """A candidate's generation request body (the same as its direct call) and its answer's parser."""

    async def batch_submit(self, client: Any, rows: Mapping[str, Mapping[str, Any]]) -> tuple[str, str]:
        """Create one batch of ``custom_id -> body``; (batch id, status)."""

    async def batch_poll(self, client: Any, bid: str) -> tuple[str, bool, dict[str, int]]:
        """(status, ended, request counts); BackendUnavailable when the provider failed the batch."""

    async def batch_results(self, client: Any, bid: str) -> dict[str, BatchAnswer]:
        """custom_id -> its answer, for an ended batch."""

    def batch_status(self, *, api_key: str, base_url: str | None, bid: str) -> tuple[str, dict[str, Any]]:
        """(status, request counts) of a stored batch (``evalkit batches status``), synchronously."""

    def batch_cancel(self, *, api_key: str, base_url: str | None, bid: str) -> str:
        """Cancel a stored batch; its new status."""
