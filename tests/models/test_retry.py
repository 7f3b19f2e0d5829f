"""The shared retry policy: classification, Retry-After, backoff bounds, attempt counting."""

from __future__ import annotations

import asyncio
import email.utils
import json
import random
import time

import httpx
import pytest

from evalkit.models.retry import (
    RetriesExhausted,
    RetryableError,
    RetryPolicy,
    classify,
    is_unreachable,
    parse_retry_after,
    retry_async,
    retry_sync,
)


class FakeStatusError(Exception):
    """Shaped like openai.APIStatusError / anthropic.APIStatusError: status_code and response.headers."""

    def __init__(self, status: int, headers: dict[str, str] | None = None):
        super().__init__(f"HTTP {status}")
        self.status_code = status
        self.response = httpx.Response(status, headers=headers or {})


def test_parse_retry_after_forms():
    assert parse_retry_after(httpx.Headers({"retry-after": "3"})) == 3.0
    assert parse_retry_after(httpx.Headers({"retry-after": "0.5"})) == 0.5
    assert parse_retry_after(httpx.Headers({"retry-after-ms": "250", "retry-after": "9"})) == 0.25
    future = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 28 <= parse_retry_after(httpx.Headers({"retry-after": future})) <= 30
    past = email.utils.formatdate(time.time() - 30, usegmt=True)
    assert parse_retry_after(httpx.Headers({"retry-after": past})) == 0.0
    assert parse_retry_after(httpx.Headers({"retry-after": "soon"})) is None
    assert parse_retry_after(httpx.Headers({})) is None and parse_retry_after(None) is None


@pytest.mark.parametrize("status,retry", [(429, True), (500, True), (502, True), (503, True), (529, True), (408, True),
                                          (400, False), (401, False), (403, False), (404, False), (422, False)])
def test_classify_statuses(status, retry):
    assert classify(FakeStatusError(status)).retry is retry


def test_classify_headers_and_transport_errors():
    v = classify(FakeStatusError(429, {"retry-after": "7"}))
    assert v.retry and v.retry_after == 7.0 and "429" in v.reason
    assert not classify(FakeStatusError(503, {"x-should-retry": "false"})).retry
    assert classify(FakeStatusError(400, {"x-should-retry": "true"})).retry
    assert classify(httpx.ReadTimeout("slow")).reason == "timeout"
    assert classify(asyncio.TimeoutError()).retry
    refused = httpx.ConnectError("refused")
    assert classify(refused).retry and is_unreachable(refused)
    try:
        try:
            raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")
        except httpx.RemoteProtocolError as inner:
            raise RuntimeError("Connection error.") from inner
    except RuntimeError as wrapped:
        assert classify(wrapped).retry and not is_unreachable(wrapped)
    assert classify(json.JSONDecodeError("x", "{", 0)).retry
    assert classify(RetryableError("verdict did not parse")).retry
    assert not classify(ValueError("a bug")).retry


def test_backoff_is_full_jitter_under_an_exponential_cap():
    p = RetryPolicy(base_delay_s=0.5, max_delay_s=4.0)
    rng = random.Random(0)
    for retry, cap in [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (6, 4.0)]:
        waits = [p.backoff(retry, rng) for _ in range(200)]
        assert all(0.0 <= w <= cap for w in waits)
        assert max(waits) > cap * 0.8 and min(waits) < cap * 0.2  # spread over the whole range
    assert RetryPolicy(base_delay_s=0.5, jitter=False).backoff(2) == 2.0


def test_retry_after_is_honoured_and_capped():
    p = RetryPolicy(max_retry_after_s=10)
    assert p.delay_for(classify(FakeStatusError(429, {"retry-after": "3"})), 0) == 3.0
    assert p.delay_for(classify(FakeStatusError(429, {"retry-after": "3600"})), 0) == 10.0


def test_retry_sync_counts_attempts_and_waits():
    calls, waits = [], []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise FakeStatusError(503, {"retry-after": "2"})
        return "ok"

    assert retry_sync(flaky, RetryPolicy(max_attempts=5), sleep=waits.append) == "ok"
    assert len(calls) == 3 and waits == [2.0, 2.0]


def test_retry_sync_gives_up_and_does_not_retry_bugs():
    calls = []

    def always_500():
        calls.append(1)
        raise FakeStatusError(500)

    with pytest.raises(RetriesExhausted) as e:
        retry_sync(always_500, RetryPolicy(max_attempts=3), sleep=lambda s: None)
    assert e.value.attempts == 3 and len(calls) == 3 and isinstance(e.value.last, FakeStatusError)
    assert "after 3 attempts" in str(e.value) and "HTTP 500" in str(e.value)

    def bad_request():
        calls.append(1)
        raise FakeStatusError(400)

    calls.clear()
    with pytest.raises(FakeStatusError):
        retry_sync(bad_request, RetryPolicy(max_attempts=3), sleep=lambda s: None)
    assert len(calls) == 1


def test_retry_async_with_on_retry_hook():
    seen = []
    state = {"n": 0}

    async def flaky():
        state["n"] += 1
        if state["n"] == 1:
            raise RetryableError("unparsable verdict", retry_after=0.01)
        return state["n"]

    result = asyncio.run(retry_async(flaky, RetryPolicy(), on_retry=lambda a, e, v, w: seen.append((a, v.reason, w))))
    assert result == 2 and seen == [(1, "unparsable verdict", 0.01)]


def test_policy_from_options():
    p = RetryPolicy.from_options({"max_retries": 2, "retry_base_delay_s": 0.1, "concurrency": 4})
    assert p.max_attempts == 3 and p.base_delay_s == 0.1
    assert RetryPolicy.from_options({}).max_attempts == RetryPolicy().max_attempts
    assert RetryPolicy.from_options({"max_retries": 0}).max_attempts == 1
