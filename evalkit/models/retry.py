"""One retry policy for every call evalkit makes to a model API (backends and judges).

Exponential backoff with full jitter (``uniform(0, min(max_delay, base * 2**retry))``), a server's
``Retry-After`` / ``retry-after-ms`` honoured (seconds or an HTTP date, capped), and retries only
for what can heal by itself: 408/409/429/5xx, timeouts, connection errors, truncated or malformed
bodies, and ``RetryableError`` raised by the caller (e.g. a judge verdict that did not parse).

The SDK clients are built with ``max_retries=0`` so that every retry happens here, where it is
bounded, logged and observable::

    policy = RetryPolicy(max_attempts=5)
    result = await retry_async(lambda: client.chat.completions.create(...), policy)

Works with the ``openai`` and ``anthropic`` exception types without importing them: it reads
``status_code`` and ``response.headers`` from the exception and walks its cause chain, matching the
transport's exception types (httpx, aiohttp) there; each provider's hook classifies its SDK's own.
"""

from __future__ import annotations

import asyncio
import email.utils
import http.client
import json
import logging
import random
import sys
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, TypeVar

log = logging.getLogger("evalkit.retry")

T = TypeVar("T")

RETRY_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524, 529})


def _transport_types() -> tuple[tuple[type, ...], tuple[type, ...], tuple[type, ...]]:
    """(timeouts, unreachable, transient transport failures) of the HTTP stacks the SDKs run on
    (httpx; aiohttp with the ``openai[aiohttp]``/``anthropic[aiohttp]`` transport), by type. The
    SDKs' own exception types are classified by each provider's hook (``Provider.classify``).
    """
    timeouts: list[type] = [TimeoutError, asyncio.TimeoutError]
    unreachable: list[type] = [ConnectionRefusedError]
    transient: list[type] = [ConnectionError, EOFError]
    # a stack that was never imported raised nothing: no need to import it to check
    httpx = sys.modules.get("httpx")
    if httpx is not None:
        timeouts.append(httpx.TimeoutException)
        unreachable += [httpx.ConnectError, httpx.ConnectTimeout]
        transient += [httpx.TransportError, httpx.RemoteProtocolError]
    aiohttp = sys.modules.get("aiohttp")
    if aiohttp is not None:
        unreachable.append(aiohttp.ClientConnectorError)
        transient += [aiohttp.ClientConnectionError, aiohttp.ClientPayloadError]
    transient.append(http.client.IncompleteRead)
    return tuple(timeouts), tuple(unreachable), tuple(transient)


class RetryableError(Exception):
    """Raise this from inside a retried call to ask for another attempt (e.g. unparsable output)."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class RetriesExhausted(Exception):
    """Every attempt failed with a retryable error. ``last`` is the final exception."""

    def __init__(self, attempts: int, last: BaseException, reason: str):
        super().__init__(f"gave up after {attempts} attempt{'s' if attempts != 1 else ''}: {reason}")
        self.attempts = attempts
        self.last = last
        self.reason = reason


@dataclass(frozen=True)
class Verdict:
    """How one failure is classified: retry or not, the server's requested wait, a short reason."""

    retry: bool
    retry_after: float | None
    reason: str


@dataclass(frozen=True)
class RetryPolicy:
    """``max_attempts`` counts the first try (``max_retries + 1``). Delays in seconds."""

    max_attempts: int = 5
    base_delay_s: float = 0.5
    max_delay_s: float = 20.0
    max_retry_after_s: float = 60.0  # a longer Retry-After is cut to this
    jitter: bool = True

    @classmethod
    def from_options(cls, options: Any, **defaults: Any) -> "RetryPolicy":
        """From ModelSpec.options / a judge config: ``max_retries`` (retries after the first try)."""
        opts = dict(options or {})
        kw = dict(defaults)
        if opts.get("max_retries") is not None:
            kw["max_attempts"] = int(opts["max_retries"]) + 1
        for key in ("base_delay_s", "max_delay_s", "max_retry_after_s"):
            if opts.get(f"retry_{key}") is not None:
                kw[key] = float(opts[f"retry_{key}"])
        return cls(**kw)

    def backoff(self, retry: int, rng: random.Random | None = None) -> float:
        """The wait before retry number ``retry`` (0-based) when the server did not say."""
        cap = min(self.max_delay_s, self.base_delay_s * (2**retry))
        if not self.jitter:
            return cap
        return (rng or random).uniform(0.0, cap)

    def delay_for(self, verdict: Verdict, retry: int, rng: random.Random | None = None) -> float:
        if verdict.retry_after is not None:
            return min(max(verdict.retry_after, 0.0), self.max_retry_after_s)
        return self.backoff(retry, rng)


def parse_retry_after(headers: Any) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (delta-seconds or HTTP date)."""
    if headers is None:
        return None
    try:
        ms = headers.get("retry-after-ms")
        if ms is not None:
            return max(float(ms) / 1000.0, 0.0)
    except (TypeError, ValueError):
        pass
    value = headers.get("retry-after")
    if value is None:
        return None
    value = str(value).strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(when.timestamp() - time.time(), 0.0)


def _chain(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in out and len(out) < 16:
        out.append(cur)
        cur = cur.__cause__ or cur.__context__
    return out


def is_unreachable(exc: BaseException) -> bool:
    """True when the failure is "could not connect" (refused, DNS, connect timeout), not a later error."""
    _, unreachable, _ = _transport_types()
    return any(isinstance(e, unreachable) for e in _chain(exc))


def status_of(exc: BaseException) -> int | None:
    code = getattr(exc, "status_code", None)
    if isinstance(code, int):
        return code
    resp = getattr(exc, "response", None)
    code = getattr(resp, "status_code", None)
    return code if isinstance(code, int) else None


def classify(exc: BaseException) -> Verdict:
    """Retry or not, and how long the server asked us to wait."""
    if isinstance(exc, RetryableError):
        return Verdict(True, exc.retry_after, str(exc) or "retryable")
    status = status_of(exc)
    if status is not None:
        headers = getattr(getattr(exc, "response", None), "headers", None)
        should = (headers.get("x-should-retry") if headers is not None else None) or ""
        if should.lower() == "false":
            return Verdict(False, None, f"HTTP {status} (server said do not retry)")
        retry = status in RETRY_STATUSES or status >= 500 or should.lower() == "true"
        return Verdict(retry, parse_retry_after(headers) if retry else None, f"HTTP {status}")
    chain = _chain(exc)
    timeouts, unreachable, transient = _transport_types()
    if any(isinstance(e, timeouts) for e in chain):
        return Verdict(True, None, "timeout")
    if any(isinstance(e, unreachable) for e in chain):
        return Verdict(True, None, "connection failed")
    if any(isinstance(e, transient) for e in chain):
        return Verdict(True, None, "connection error or truncated response")
    if any(isinstance(e, json.JSONDecodeError) for e in chain):
        return Verdict(True, None, "malformed JSON response body")
    return Verdict(False, None, type(exc).__name__)


OnRetry = Callable[[int, BaseException, Verdict, float], None]  # (attempt just failed, error, verdict, wait)


def _log_retry(attempt: int, exc: BaseException, verdict: Verdict, wait: float) -> None:
    # The reason only: exception text can carry request details, never worth the risk in a log.
    log.info("attempt %d failed (%s); retrying in %.2fs", attempt, verdict.reason, wait)


async def retry_async(
    fn: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    on_retry: OnRetry | None = None,
    classify_fn: Callable[[BaseException], Verdict] = classify,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    rng: random.Random | None = None,
) -> T:
    """Call ``fn()`` until it succeeds; a non-retryable error is raised as is, exhaustion as RetriesExhausted."""
    attempt = 0
    while True:
        attempt += 1
        try:
            return await fn()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - classified below
            verdict = classify_fn(exc)
            if not verdict.retry:
                raise
            if attempt >= policy.max_attempts:
                raise RetriesExhausted(attempt, exc, verdict.reason) from exc
            wait = policy.delay_for(verdict, attempt - 1, rng)
            (on_retry or _log_retry)(attempt, exc, verdict, wait)
            await sleep(wait)


def retry_sync(
    fn: Callable[[], T],
    policy: RetryPolicy,
    *,
    on_retry: OnRetry | None = None,
    classify_fn: Callable[[BaseException], Verdict] = classify,
    sleep: Callable[[float], Any] = time.sleep,
    rng: random.Random | None = None,
) -> T:
    """The synchronous twin of ``retry_async``."""
    attempt = 0
    while True:
        attempt += 1
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - classified below
            verdict = classify_fn(exc)
            if not verdict.retry:
                raise
            if attempt >= policy.max_attempts:
                raise RetriesExhausted(attempt, exc, verdict.reason) from exc
            wait = policy.delay_for(verdict, attempt - 1, rng)
            (on_retry or _log_retry)(attempt, exc, verdict, wait)
            sleep(wait)
