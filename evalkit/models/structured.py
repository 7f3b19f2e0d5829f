"""Structured generation: ask a model for JSON that matches a schema, through the model layer.

Judges (and anything else that wants validated JSON) use this instead of an SDK of their own:

* :class:`StructuredEndpoint` — one API endpoint (OpenAI-compatible, Anthropic, a vLLM server): the
  provider's hooks (``models.base.Provider``: its client, request body, reply parser and exception
  types, from ``models.registry.provider``), a semaphore bounding requests in flight, one retry loop
  (exponential backoff + jitter, Retry-After honoured, the shared policy of ``models.retry``), the
  downgrade json_schema -> json_object -> prompt (tool -> prompt) when a server lacks structured
  output, and counters that add up (``retry_reasons`` sums to ``retries``).
* :class:`LocalEndpoint` — a model loaded in this process (``backend: hf``): requests arriving
  together are batched through the backend's ``generate`` (several criteria and items per batch),
  with the schema in the prompt.

``models.registry.open_structured`` picks the endpoint for a model. The SDKs' own retries are off
(``max_retries=0``) so that one loop decides, counts and logs them. API keys are read from the
environment at call time and never stored or logged.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Mapping

from .._util.text import redact_secrets, redact_url, redact_userinfo
from ..errors import ConfigError
from ..types import Message, ModelSpec
from .base import (
    TOOL_NAME,
    CallFailed,
    FatalEndpointError,
    MalformedReply,
    Provider,
    Reply,
    StructuredMode,
    schema_instruction,
)
from .registry import backend_info, provider
from .retry import RETRY_STATUSES, RetriesExhausted, RetryPolicy, Verdict, parse_retry_after, retry_async, status_of
from .retry import classify as shared_classify

__all__ = [
    "TOOL_NAME", "CallFailed", "ClientStats", "EndpointModel", "FatalEndpointError", "LocalEndpoint", "MalformedReply", "Reply",
    "StructuredEndpoint", "StructuredMode", "check_api_key", "classify", "schema_instruction",
]

#: Backoff: ``BASE * 2**attempt`` seconds (capped), times a jitter factor in [0.5, 1]. Tests shrink BASE.
BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 30.0
RETRY_AFTER_CAP_S = 60.0


@dataclass(frozen=True)
class EndpointModel:
    """A model asked for structured output. ``identity`` keys caches (never the API key).

    ``backend`` is the wire protocol its backend kind declares (``evalkit.registries``): ``openai``
    (OpenAI and every compatible server, vLLM's included), ``anthropic``; or the kind itself for a
    model run in this process (``hf``; ``model`` is then the checkpoint folder, ``local`` its spec).
    """

    backend: str
    model: str
    base_url: str | None
    api_key_env: str
    concurrency: int = 8
    timeout_s: float = 60.0
    max_retries: int = 4
    max_tokens_param: str = "max_tokens"
    local: ModelSpec | None = None  # hf: the spec the in-process backend loads (weights fingerprinted)
    batch: Any = None  # evalkit.models.batch.BatchOptions: requests go through the provider's batch API
    kind: str = ""  # the backend kind (evalkit.registries) it came from: vllm speaks openai

    @property
    def label(self) -> str:
        return f"{self.backend}:{self.model}"

    def identity(self) -> dict[str, Any]:
        if self.local is not None:  # the weights' fingerprint, not the folder's name
            return {"backend": self.backend, "model": self.local.model_id, "base_url": None}
        return {"backend": self.backend, "model": self.model, "base_url": redact_url(self.base_url) if self.base_url else None}

    def provider_key(self) -> tuple:
        """Requests to the same provider endpoint share one concurrency limit (one loaded model)."""
        if self.local is not None:
            return (self.backend, self.local.model_id)
        return (self.backend, self.base_url or "", self.api_key_env, self.batch is not None)


def check_api_key(jm: EndpointModel, where: str) -> None:
    """An API without a key fails before anything runs. A local server (base_url) may need none."""
    if jm.local is not None:
        return
    if os.environ.get(jm.api_key_env):
        return
    if jm.base_url is None:
        raise ConfigError(f"{where}: environment variable {jm.api_key_env} is not set (the {jm.backend} judge's API key; set api_key_env to use another)")


@dataclass
class ClientStats:
    requests: int = 0
    retries: int = 0
    retry_reasons: dict[str, int] = field(default_factory=dict)
    gave_up: int = 0  # requests that ran out of retries
    in_flight: int = 0
    max_in_flight: int = 0
    fallbacks: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "retries": self.retries,
            "gave_up": self.gave_up,
            "retry_reasons": dict(sorted(self.retry_reasons.items())),
            "max_in_flight": self.max_in_flight,
            "structured_fallbacks": list(self.fallbacks),
        }


def classify(exc: BaseException, hooks: Provider | None = None) -> tuple[str, str, float | None]:
    """``(kind, reason, retry_after)``; kind: retry | error (this item) | fatal (the whole judge).

    Retryable statuses and transport failures follow evalkit.models.retry, the SDK's own exception
    types the provider's hook (``Provider.classify``); on top of that a judge treats 401/403/404 as
    fatal (a bad key or model name fails every item: stop and say so) and a body that cannot be read
    (garbled or truncated JSON) as retryable.
    """
    status = status_of(exc)
    if status is not None:
        resp = getattr(exc, "response", None)
        ra = parse_retry_after(resp.headers if resp is not None else None)
        if status == 429:
            return "retry", "429", ra
        if status in RETRY_STATUSES or status >= 500:
            return "retry", "5xx" if status >= 500 else str(status), ra
        if status in (401, 403):
            return "fatal", f"authentication failed ({status})", None
        if status == 404:
            return "fatal", "model or endpoint not found (404)", None
        return "error", f"HTTP {status}", None
    typed = hooks.classify(exc) if hooks is not None else None
    if typed is not None:
        return ("retry" if typed.retry else "error"), typed.reason, typed.retry_after
    if isinstance(exc, (json.JSONDecodeError, UnicodeDecodeError, MalformedReply)) or _is_decoding_error(exc):
        return "retry", "malformed_response", None
    verdict = shared_classify(exc)
    if verdict.retry and verdict.reason == "timeout":
        return "retry", "timeout", None
    if verdict.retry and verdict.reason.startswith("connection"):
        return "retry", "connection", None
    if verdict.retry:
        return "retry", verdict.reason, verdict.retry_after
    raise exc


def _is_decoding_error(exc: BaseException) -> bool:
    import sys

    httpx = sys.modules.get("httpx")
    return httpx is not None and isinstance(exc, httpx.DecodingError)


def _logprobs_unsupported(exc: BaseException) -> bool:
    """A 400 whose message is about log-probabilities: the server cannot return them."""
    status = getattr(exc, "status_code", None)
    return status in (400, 422) and "logprob" in str(exc).lower()


def _structured_unsupported(exc: BaseException) -> bool:
    status = getattr(exc, "status_code", None)
    if status not in (400, 422):
        return False
    text = str(exc).lower()
    return any(w in text for w in ("response_format", "json_schema", "json_object", "structured", "tool"))


class StructuredEndpoint:
    """One provider endpoint: an SDK client, a semaphore, a retry loop and its counters."""

    def __init__(self, jm: EndpointModel, structured: str = "auto"):
        self.jm = jm
        self.stats = ClientStats()
        self._sem: asyncio.Semaphore | None = None
        self._client: Any = None
        self.fatal: FatalEndpointError | None = None
        self.hooks: Provider = provider(jm.backend)
        # why this endpoint gives no log-probabilities (the provider has none, or refused the request's logprobs)
        self.no_logprobs: str | None = self.hooks.no_logprobs
        self.mode: StructuredMode = self.hooks.default_mode if structured == "auto" else structured  # type: ignore[assignment]

    def _open(self) -> None:
        if self._client is not None:
            return
        key = os.environ.get(self.jm.api_key_env) or "no-key-needed"
        self._sem = asyncio.Semaphore(self.jm.concurrency)
        self._client = self.hooks.client(api_key=key, base_url=self.jm.base_url, timeout_s=self.jm.timeout_s)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def _guarded(self, fn: Callable[[], Awaitable[Any]]) -> Any:
        assert self._sem is not None
        async with self._sem:
            if self.fatal is not None:
                raise self.fatal  # the endpoint refused us for good: send nothing more
            self.stats.requests += 1
            self.stats.in_flight += 1
            self.stats.max_in_flight = max(self.stats.max_in_flight, self.stats.in_flight)
            try:
                return await fn()
            finally:
                self.stats.in_flight -= 1

    async def complete(self, system: str, user: str, schema: Mapping[str, Any], *, temperature: float, max_tokens: int, schema_name: str,
                       model: EndpointModel | None = None, top_logprobs: int = 0) -> Reply:
        """One judgment request, retried on 429 / 5xx / timeouts / dropped connections / garbled bodies.

        ``model``: the judge model to ask (several models of one endpoint share this client's limit).
        ``top_logprobs``: ask for each token's top-k log-probabilities (OpenAI-compatible servers);
        a server that refuses them is asked again without, once, and ``no_logprobs`` says why.
        """
        self._open()
        jm = model or self.jm
        start = time.perf_counter()
        tries = 0

        sent: list[tuple[StructuredMode, int]] = []  # (mode, top_logprobs) of the request that went out last

        async def send() -> Reply:
            mode = self.mode  # read when the request goes out: another request may have downgraded it
            top = top_logprobs if self.no_logprobs is None else 0
            sent.append((mode, top))
            sys_text = system + (schema_instruction(schema) if mode in ("json_object", "prompt") else "")
            return await self._request(jm, sys_text, user, schema, mode, temperature, max_tokens, schema_name, top)

        async def attempt() -> Reply:
            """One attempt. A structured-output downgrade or the logprobs fallback is not an attempt:
            the server said what it cannot do, so the same attempt asks again without it.
            """
            nonlocal tries
            tries += 1
            while True:
                sent.clear()
                try:
                    return await self._guarded(send)
                except Exception as e:  # noqa: BLE001 - what is not a fallback goes to the retry loop
                    mode, top = sent[-1] if sent else (None, 0)
                    if top and _logprobs_unsupported(e):
                        self.no_logprobs = f"the server refused logprobs: {_short(e, 160)}"
                        self.stats.fallbacks.append(f"logprobs->none: {_short(e, 120)}")
                        continue
                    if mode is not None and _structured_unsupported(e) and self._downgrade(mode, e):
                        continue
                    raise

        def verdict(exc: BaseException) -> Verdict:
            if isinstance(exc, FatalEndpointError):
                raise exc  # the endpoint refused us for good (another request found out)
            kind, reason, retry_after = classify(exc, self.hooks)  # re-raises what is not an API failure (our own bugs)
            return Verdict(kind == "retry", retry_after, reason)

        def counted(_attempt: int, _exc: BaseException, v: Verdict, _wait: float) -> None:
            # counted only when a retry really follows: retry_reasons adds up to retries
            self.stats.retry_reasons[v.reason] = self.stats.retry_reasons.get(v.reason, 0) + 1
            self.stats.retries += 1

        # evalkit.models.retry's one loop and policy (full jitter, Retry-After honoured and capped),
        # with this module's delays (tests shorten BACKOFF_BASE_S)
        policy = RetryPolicy(max_attempts=jm.max_retries + 1, base_delay_s=BACKOFF_BASE_S, max_delay_s=BACKOFF_CAP_S, max_retry_after_s=RETRY_AFTER_CAP_S)
        try:
            reply = await retry_async(attempt, policy, on_retry=counted, classify_fn=verdict)
        except FatalEndpointError:
            raise
        except RetriesExhausted as e:
            self.stats.gave_up += 1
            raise CallFailed(f"gave up after {e.attempts} attempts; last: {e.reason}: {_short(e.last)}", e.attempts) from None
        except Exception as e:  # noqa: BLE001 - not retryable: this item's error, or the whole endpoint's
            kind, reason, _ = classify(e, self.hooks)
            if kind == "fatal":
                self.fatal = FatalEndpointError(f"judge {jm.label} at {jm.base_url or 'the default API'}: {reason}: {_short(e)}")
                raise self.fatal from None
            raise CallFailed(f"{reason}: {_short(e)}", tries) from None
        key = os.environ.get(jm.api_key_env) or ""
        if reply.raw and len(key) >= 8 and key in reply.raw:
            reply.raw = redact_secrets(reply.raw, [key])  # a server that echoes the key: never stored
        reply.attempts = tries
        reply.latency_s = time.perf_counter() - start
        return reply

    def _downgrade(self, mode: StructuredMode, exc: BaseException) -> bool:
        """json_schema -> json_object -> prompt (OpenAI-compatible servers without structured output)."""
        if self.mode != mode:
            return True  # another request already downgraded; just retry with the new mode
        nxt: StructuredMode | None = {"json_schema": "json_object", "json_object": "prompt", "tool": "prompt"}.get(mode)  # type: ignore[assignment]
        if nxt is None:
            return False
        self.mode = nxt
        self.stats.fallbacks.append(f"{mode}->{nxt}: {_short(exc, 120)}")
        return True

    async def _request(self, jm: EndpointModel, system: str, user: str, schema: Mapping[str, Any], mode: StructuredMode, temperature: float, max_tokens: int,
                       schema_name: str, top_logprobs: int = 0) -> Reply:
        body = self.hooks.structured_body(jm.model, system, user, schema, mode, temperature=temperature, max_tokens=max_tokens,
                                          schema_name=schema_name, max_tokens_param=jm.max_tokens_param, top_logprobs=top_logprobs)
        return self.hooks.structured_reply(await self.hooks.send(self._client, body), mode, system, user, top_logprobs)


class LocalEndpoint:
    """An in-process model (``backend: hf``) as a structured endpoint.

    Requests that arrive together (one event-loop round) are generated as one batch on a worker
    thread through the backend's own ``generate`` (its batching, chat template and adapters), with
    the schema in the system prompt ("prompt" mode: the verdict is parsed and validated by the
    caller, and a reply that is not valid JSON is retried there like any other). The model is
    loaded on the first request and closed with the endpoint.
    """

    def __init__(self, jm: EndpointModel, opener: Callable[[list[ModelSpec]], Any] | None = None):
        assert jm.local is not None
        self.jm = jm
        self._opener = opener or (lambda specs: backend_info(specs[0].backend).factory(specs))  # default: in this process
        self.stats = ClientStats()
        self.mode: StructuredMode = "prompt"
        self.fatal: FatalEndpointError | None = None
        self._backend: Any = None
        self.no_logprobs: str | None = None  # in-process models always have them
        self._pending: list[tuple[str, str, int, float, int, asyncio.Future]] = []
        self._drainer: asyncio.Future | None = None
        self.keep_open = False  # set while the model serves several judge calls (scoring.judges.local_judges_kept)

    async def complete(self, system: str, user: str, schema: Mapping[str, Any], *, temperature: float, max_tokens: int, schema_name: str,
                       model: EndpointModel | None = None, top_logprobs: int = 0) -> Reply:
        if self.fatal is not None:
            raise self.fatal
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self._pending.append((system + schema_instruction(schema), user, max_tokens, temperature, top_logprobs, fut))
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.ensure_future(self._drain())
        return await fut

    async def _drain(self) -> None:
        await asyncio.sleep(0)  # let every request of this round join the batch
        while self._pending:
            batch, self._pending = self._pending, []
            self.stats.requests += len(batch)
            self.stats.max_in_flight = max(self.stats.max_in_flight, len(batch))
            try:
                replies = await asyncio.to_thread(self._generate, [(s, u, m, t, k) for s, u, m, t, k, _ in batch])
            except BaseException as e:  # noqa: BLE001 - handed to every waiting request
                err = e if isinstance(e, FatalEndpointError) else FatalEndpointError(f"judge {self.jm.label}: {type(e).__name__}: {e}")
                self.fatal = err
                for *_, fut in batch:
                    if not fut.done():
                        fut.set_exception(err)
                continue
            for (*_, fut), reply in zip(batch, replies):
                if fut.done():
                    continue
                if isinstance(reply, CallFailed):
                    fut.set_exception(reply)
                else:
                    fut.set_result(reply)

    def _generate(self, batch: list[tuple[str, str, int, float, int]]) -> list[Reply | CallFailed]:
        import dataclasses

        from ..types import GenerationParams
        from .base import GenerationRequest

        spec = self.jm.local
        assert spec is not None
        if self._backend is None:
            self._backend = self._opener([spec])
        t0 = time.perf_counter()
        requests = [
            GenerationRequest(key=str(i), model=dataclasses.replace(spec, generation=GenerationParams(max_new_tokens=m, temperature=t)),
                              messages=(Message("system", s), Message("user", u)), top_logprobs=k)
            for i, (s, u, m, t, k) in enumerate(batch)
        ]
        outs = self._backend.generate(requests)
        wall = time.perf_counter() - t0
        replies: list[Reply | CallFailed] = []
        for (s, u, _, _, _), c in zip(batch, outs):
            if c.error is not None:
                replies.append(CallFailed(f"generation failed: {c.error}"))
                continue
            replies.append(Reply(raw=c.text, parsed=None, tokens_in=c.tokens_in, tokens_out=c.tokens_out, structured="prompt",
                                 system=s, user=u, attempts=1, latency_s=wall / max(len(batch), 1), finish_reason=c.finish_reason, logprobs=c.logprobs))
        return replies

    async def aclose(self) -> None:
        if self._backend is not None and not self.keep_open:
            backend, self._backend = self._backend, None
            await asyncio.to_thread(backend.close)

    def close(self) -> None:
        """Close the model now (outside an event loop)."""
        if self._backend is not None:
            backend, self._backend = self._backend, None
            backend.close()


def _short(exc: BaseException, n: int = 300) -> str:
    s = " ".join(str(exc).split()) or type(exc).__name__
    s = redact_userinfo(s)
    return s if len(s) <= n else s[: n - 3] + "..."
