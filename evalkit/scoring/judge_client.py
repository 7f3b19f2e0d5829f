"""Judge model clients: the real ``openai`` / ``anthropic`` async SDKs with structured output,
retries (exponential backoff + jitter, Retry-After honoured) and bounded concurrency per provider.

The SDKs' own retries are off (``max_retries=0``) so that one loop decides, counts and logs them.
API keys are read from the environment at call time and never stored or logged.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Literal, Mapping

from .._text import redact_secrets, redact_url, redact_userinfo
from ..config import ModelEntry
from ..errors import BackendUnavailable, ConfigError, missing_extra

StructuredMode = Literal["json_schema", "json_object", "prompt", "tool"]

#: Backoff: ``BASE * 2**attempt`` seconds (capped), times a jitter factor in [0.5, 1]. Tests shrink BASE.
BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 30.0
RETRY_AFTER_CAP_S = 60.0
_TOOL_NAME = "record_verdict"


@dataclass(frozen=True)
class JudgeModel:
    """A judge model as a client sees it. ``identity`` keys the cache (never the API key)."""

    backend: Literal["openai", "anthropic"]
    model: str
    base_url: str | None
    api_key_env: str
    concurrency: int = 8
    timeout_s: float = 60.0
    max_retries: int = 4
    max_tokens_param: str = "max_tokens"

    @property
    def label(self) -> str:
        return f"{self.backend}:{self.model}"

    def identity(self) -> dict[str, Any]:
        return {"backend": self.backend, "model": self.model, "base_url": redact_url(self.base_url) if self.base_url else None}

    def provider_key(self) -> tuple:
        """Requests to the same provider endpoint share one concurrency limit."""
        return (self.backend, self.base_url or "", self.api_key_env)


def judge_model_from_entry(entry: ModelEntry, *, concurrency: int | None = None, where: str = "judges") -> JudgeModel:
    """Map a model entry (eval.yaml's shape) onto a judge client; vLLM servers speak the OpenAI API."""
    if entry.backend == "hf":
        raise ConfigError(f"{where}: a judge must be an API model (backend openai or anthropic) or a vLLM server (backend vllm with url)")
    backend: Literal["openai", "anthropic"] = "anthropic" if entry.backend == "anthropic" else "openai"
    base_url = entry.base_url
    model = entry.model
    if entry.backend == "vllm":
        base_url = base_url or entry.url or (entry.urls[0] if entry.urls else None)
        if not base_url:
            raise ConfigError(f"{where}: a vLLM judge needs 'url' (or base_url) of a running server, e.g. http://127.0.0.1:8000/v1")
        if not base_url.rstrip("/").endswith("/v1"):
            base_url = base_url.rstrip("/") + "/v1"
        model = model or entry.path
    assert model
    key_env = entry.api_key_env or ("ANTHROPIC_API_KEY" if backend == "anthropic" else "OPENAI_API_KEY")
    return JudgeModel(
        backend=backend,
        model=model,
        base_url=base_url,
        api_key_env=key_env,
        concurrency=concurrency or entry.concurrency,
        timeout_s=entry.timeout_s,
        max_retries=entry.max_retries,
        max_tokens_param=entry.max_tokens_param or "max_tokens",
    )


def check_api_key(jm: JudgeModel, where: str) -> None:
    """An API without a key fails before anything runs. A local server (base_url) may need none."""
    if os.environ.get(jm.api_key_env):
        return
    if jm.base_url is None:
        raise ConfigError(f"{where}: environment variable {jm.api_key_env} is not set (the {jm.backend} judge's API key; set api_key_env to use another)")


@dataclass
class Reply:
    """One successful HTTP exchange: the reply text (or the tool input as JSON) and what it cost."""

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


class CallFailed(Exception):
    """A judgment's request failed for good (retries exhausted or a non-retryable 4xx)."""

    def __init__(self, message: str, attempts: int = 1):
        super().__init__(message)
        self.attempts = attempts  # HTTP requests made for it


class FatalJudgeError(BackendUnavailable):
    """The judge cannot work at all (bad key, unknown model): stop instead of failing every item."""


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


def backoff_delay(attempt: int, retry_after: float | None, reason: str = "") -> float:
    """Seconds to wait before retry ``attempt`` (0-based): the shared policy (full jitter, Retry-After
    honoured and capped) from evalkit.models.retry, with this module's BACKOFF_BASE_S.
    """
    from ..models.retry import RetryPolicy, Verdict

    policy = RetryPolicy(base_delay_s=BACKOFF_BASE_S, max_delay_s=BACKOFF_CAP_S, max_retry_after_s=RETRY_AFTER_CAP_S)
    return policy.delay_for(Verdict(True, retry_after, reason), attempt)


def classify(exc: BaseException) -> tuple[str, str, float | None]:
    """``(kind, reason, retry_after)``; kind: retry | error (this item) | fatal (the whole judge).

    Retryable statuses and transport failures follow evalkit.models.retry; on top of that a judge
    treats 401/403/404 as fatal (a bad key or model name fails every item: stop and say so) and a
    body the SDK cannot read (garbled or truncated JSON) as retryable.
    """
    import httpx

    from ..models.retry import RETRY_STATUSES, parse_retry_after, status_of
    from ..models.retry import classify as shared_classify

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
    name = type(exc).__name__
    if "Timeout" in name or isinstance(exc, (asyncio.TimeoutError, httpx.TimeoutException)):
        return "retry", "timeout", None
    if "APIConnectionError" in name or isinstance(exc, httpx.TransportError):
        return "retry", "connection", None
    if "ResponseValidation" in name or isinstance(exc, (json.JSONDecodeError, httpx.DecodingError, UnicodeDecodeError, _MalformedReply)):
        return "retry", "malformed_response", None
    verdict = shared_classify(exc)
    if verdict.retry:
        return "retry", verdict.reason, verdict.retry_after
    raise exc


class _MalformedReply(Exception):
    """The HTTP body parsed but has no usable message (no choices, no content)."""


def _structured_unsupported(exc: BaseException) -> bool:
    status = getattr(exc, "status_code", None)
    if status not in (400, 422):
        return False
    text = str(exc).lower()
    return any(w in text for w in ("response_format", "json_schema", "json_object", "structured", "tool"))


def schema_instruction(schema: Mapping[str, Any]) -> str:
    return (
        "\n\nReply with exactly one JSON object and nothing else. It must satisfy this JSON Schema:\n"
        + json.dumps(schema, indent=2, sort_keys=False)
    )


class JudgeClient:
    """One provider endpoint: an SDK client, a semaphore, a retry loop and its counters."""

    def __init__(self, jm: JudgeModel, structured: str = "auto"):
        self.jm = jm
        self.stats = ClientStats()
        self._sem: asyncio.Semaphore | None = None
        self._client: Any = None
        self.fatal: FatalJudgeError | None = None
        if structured == "auto":
            self.mode: StructuredMode = "tool" if jm.backend == "anthropic" else "json_schema"
        else:
            self.mode = structured  # type: ignore[assignment]

    def _open(self) -> None:
        if self._client is not None:
            return
        key = os.environ.get(self.jm.api_key_env) or "no-key-needed"
        self._sem = asyncio.Semaphore(self.jm.concurrency)
        if self.jm.backend == "anthropic":
            try:
                from ..models.anthropic_backend import anthropic_client
            except ImportError as e:
                raise missing_extra("anthropic judges", "judges", e) from None

            self._client = anthropic_client(api_key=key, base_url=self.jm.base_url, timeout_s=self.jm.timeout_s)
        else:
            try:
                from ..models.openai_backend import openai_client
            except ImportError as e:
                raise missing_extra("openai judges", "judges", e) from None

            self._client = openai_client(api_key=key, base_url=self.jm.base_url, timeout_s=self.jm.timeout_s)

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

    async def complete(self, system: str, user: str, schema: Mapping[str, Any], *, temperature: float, max_tokens: int, schema_name: str, model: JudgeModel | None = None) -> Reply:
        """One judgment request, retried on 429 / 5xx / timeouts / dropped connections / garbled bodies.

        ``model``: the judge model to ask (several models of one endpoint share this client's limit).
        """
        self._open()
        jm = model or self.jm
        start = time.perf_counter()
        attempt = 0
        used: list[StructuredMode] = []

        async def send() -> Reply:
            mode = self.mode  # read when the request goes out: another request may have downgraded it
            used.append(mode)
            sys_text = system + (schema_instruction(schema) if mode in ("json_object", "prompt") else "")
            return await self._request(jm, sys_text, user, schema, mode, temperature, max_tokens, schema_name)

        while True:
            used.clear()
            try:
                reply = await self._guarded(send)
                key = os.environ.get(jm.api_key_env) or ""
                if reply.raw and len(key) >= 8 and key in reply.raw:
                    reply.raw = redact_secrets(reply.raw, [key])  # a server that echoes the key: never stored
                reply.attempts = attempt + 1
                reply.latency_s = time.perf_counter() - start
                return reply
            except Exception as e:  # noqa: BLE001 - classified below; unknown exceptions re-raise
                if used and _structured_unsupported(e) and self._downgrade(used[-1], e):
                    continue  # not an attempt: the server told us what it cannot do
                kind, reason, ra = classify(e)
                if isinstance(e, FatalJudgeError):
                    raise
                if kind == "fatal":
                    self.fatal = FatalJudgeError(f"judge {jm.label} at {jm.base_url or 'the default API'}: {reason}: {_short(e)}")
                    raise self.fatal from None
                if kind == "error":
                    raise CallFailed(f"{reason}: {_short(e)}", attempt + 1) from None
                if attempt >= jm.max_retries:
                    self.stats.gave_up += 1
                    raise CallFailed(f"gave up after {attempt + 1} attempts; last: {reason}: {_short(e)}", attempt + 1) from None
                # counted only when a retry really follows: retry_reasons adds up to retries
                self.stats.retry_reasons[reason] = self.stats.retry_reasons.get(reason, 0) + 1
                self.stats.retries += 1
                await asyncio.sleep(backoff_delay(attempt, ra, reason))
                attempt += 1

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

    async def _request(self, jm: JudgeModel, system: str, user: str, schema: Mapping[str, Any], mode: StructuredMode, temperature: float, max_tokens: int, schema_name: str) -> Reply:
        if jm.backend == "anthropic":
            return await self._anthropic(jm, system, user, schema, mode, max_tokens)
        return await self._openai(jm, system, user, schema, mode, temperature, max_tokens, schema_name)

    async def _openai(self, jm: JudgeModel, system: str, user: str, schema: Mapping[str, Any], mode: StructuredMode, temperature: float, max_tokens: int, schema_name: str) -> Reply:
        from ..models.api_common import ResponseShapeError, post_json
        from ..models.openai_backend import read_chat_completion

        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
        body: dict[str, Any] = {"model": jm.model, "messages": messages, "temperature": temperature, jm.max_tokens_param: max_tokens}
        if mode == "json_schema":
            body["response_format"] = {"type": "json_schema", "json_schema": {"name": schema_name, "schema": dict(schema), "strict": True}}
        elif mode == "json_object":
            body["response_format"] = {"type": "json_object"}
        data = await post_json(self._client, "/chat/completions", body)
        try:
            text, finish, tokens_in, tokens_out = read_chat_completion(data)
        except ResponseShapeError as e:
            raise _MalformedReply(str(e)) from None
        return Reply(
            finish_reason=finish,
            raw=text or "",
            parsed=None,
            tokens_in=tokens_in,
            tokens_out=tokens_out,
            structured=mode,
            system=system,
            user=user,
            attempts=1,
            latency_s=0.0,
        )

    async def _anthropic(self, jm: JudgeModel, system: str, user: str, schema: Mapping[str, Any], mode: StructuredMode, max_tokens: int) -> Reply:
        kwargs: dict[str, Any] = {
            "model": jm.model,
            "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": user}],
            # No temperature: API version 2026-10-21 (anthropic SDK 2.x) rejects sampling parameters
            # at any value. Measure the judge's noise with repeats instead.
        }
        if system:
            kwargs["system"] = system
        if mode == "tool":
            kwargs["tools"] = [{"name": _TOOL_NAME, "description": "Record the grading verdict.", "input_schema": dict(schema)}]
            kwargs["tool_choice"] = {"type": "tool", "name": _TOOL_NAME}
        from ..models.anthropic_backend import read_message
        from ..models.api_common import ResponseShapeError, post_json

        data = await post_json(self._client, "/v1/messages", kwargs)
        try:
            text, parsed, stop, tokens_in, tokens_out = read_message(data, _TOOL_NAME)
        except ResponseShapeError as e:
            raise _MalformedReply(str(e)) from None
        raw = json.dumps(parsed, ensure_ascii=False) if parsed is not None else text
        return Reply(
            finish_reason=stop,
            raw=raw,
            parsed=parsed,
            tokens_in=tokens_in,
            tokens_out=tokens_out,
            structured=mode,
            system=system,
            user=user,
            attempts=1,
            latency_s=0.0,
        )


def _short(exc: BaseException, n: int = 300) -> str:
    s = " ".join(str(exc).split()) or type(exc).__name__
    s = redact_userinfo(s)
    return s if len(s) <= n else s[: n - 3] + "..."
