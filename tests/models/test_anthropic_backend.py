"""The anthropic backend: the real anthropic SDK over real HTTP to the loopback server."""

from __future__ import annotations

import logging
import time

import pytest

from evalkit.errors import BackendUnavailable, UserError
from evalkit.models import open_backend
from evalkit.models.anthropic_backend import AnthropicBackend
from evalkit.models.base import GenerationRequest
from evalkit.models.retry import RetryPolicy
from evalkit.types import GenerationParams, Message, ModelSpec
from tests.support.loopback import Fault, http_date

KEY = "sk-ant-LEAKCHECK-0a1b2c3d4e5f"
FAST = RetryPolicy(max_attempts=4, base_delay_s=0.01, max_delay_s=0.05)


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv("EVALKIT_TEST_ANTHROPIC_KEY", KEY)


def spec_for(server, *, model="claude-test", gen=GenerationParams(), **options) -> ModelSpec:
    return ModelSpec(name="cand", backend="anthropic", model=model, base_url=server.anthropic_base_url,
                     api_key_env="EVALKIT_TEST_ANTHROPIC_KEY", generation=gen, options={"timeout_s": 5.0, **options})


def requests_for(spec: ModelSpec, n: int, *system: str) -> list[GenerationRequest]:
    return [
        GenerationRequest(key=f"k{i}", model=spec, messages=tuple(Message("system", s) for s in system) + (Message("user", f"question {i}"),))
        for i in range(n)
    ]


def test_round_trip_with_system_as_top_level_parameter(loopback_api):
    spec = spec_for(loopback_api, gen=GenerationParams(max_new_tokens=9, temperature=0.0))
    backend = open_backend([spec])
    assert isinstance(backend, AnthropicBackend)
    done = []
    outs = backend.generate(requests_for(spec, 2, "You are terse.", "Answer in English."), progress=done.append)
    assert [o.text for o in outs] == ["question 0", "question 1"]
    assert all(o.error is None and o.finish_reason == "stop" and o.tokens_in == 8 and o.tokens_out == 2 for o in outs)
    assert sum(done) == 2
    # the two requests go out concurrently: find question 0's by its content, not its arrival order
    rec = next(r for r in loopback_api.requests if r.body["messages"][0]["content"] == "question 0")
    assert rec.body["system"] == "You are terse.\n\nAnswer in English."
    assert rec.body["messages"] == [{"role": "user", "content": "question 0"}]
    assert rec.body["model"] == "claude-test" and rec.body["max_tokens"] == 9
    # SDK 2.x speaks API version 2026-10-21, which rejects sampling parameters: none are sent.
    assert not {"temperature", "top_p", "top_k"} & set(rec.body)
    assert rec.headers["anthropic-version"] >= "2026-10-21"


def test_older_api_version_option_sends_temperature(loopback_api):
    spec = spec_for(loopback_api, gen=GenerationParams(temperature=1.7, top_p=0.9), anthropic_version="2023-06-01")
    [out] = AnthropicBackend([spec]).generate(requests_for(spec, 1))
    assert out.error is None
    rec = loopback_api.requests[0]
    assert rec.headers["anthropic-version"] == "2023-06-01"
    assert rec.body["temperature"] == 1.0 and rec.body["top_p"] == 0.9  # clamped to the API's range


def test_stop_sequences_and_max_tokens(loopback_api):
    loopback_api.set_responder(lambda api, req: "alpha beta ### gamma delta")
    spec = spec_for(loopback_api, gen=GenerationParams(stop=("###",)))
    [out] = AnthropicBackend([spec]).generate(requests_for(spec, 1))
    assert out.text == "alpha beta " and out.finish_reason == "stop"
    assert loopback_api.requests[-1].body["stop_sequences"] == ["###"]
    spec = spec_for(loopback_api, gen=GenerationParams(max_new_tokens=3))
    [out] = AnthropicBackend([spec]).generate(requests_for(spec, 1))
    assert out.text == "alpha beta ###" and out.finish_reason == "length"


def test_429_with_http_date_retry_after(loopback_api):
    loopback_api.add_faults([Fault.rate_limit(retry_after=http_date(2))])
    spec = spec_for(loopback_api)
    [out] = AnthropicBackend([spec], retry=FAST).generate(requests_for(spec, 1))
    assert out.error is None
    first, second = loopback_api.requests
    waited = second.started - first.finished
    assert 0.9 <= waited < 3.5, waited  # an HTTP date has 1 s resolution: the wait is in (1, 2]


@pytest.mark.parametrize("fault", [Fault.server_error(529), Fault.server_error(500), Fault.truncated(), Fault.drop()], ids=lambda f: f.label())
def test_transient_failures_are_retried(loopback_api, fault):
    loopback_api.add_faults([fault])
    spec = spec_for(loopback_api)
    [out] = AnthropicBackend([spec], retry=FAST).generate(requests_for(spec, 1))
    assert out.error is None and out.text == "question 0"
    assert len(loopback_api.requests) == 2


def test_timeout_then_success(loopback_api):
    loopback_api.add_faults([Fault.delay(3.0)])
    spec = spec_for(loopback_api, timeout_s=0.3)
    t0 = time.monotonic()
    [out] = AnthropicBackend([spec], retry=FAST).generate(requests_for(spec, 1))
    assert out.error is None and time.monotonic() - t0 < 2.0
    assert len(loopback_api.requests) == 2


def test_exhausted_retries_are_recorded_not_raised(loopback_api):
    loopback_api.add_faults([Fault.server_error(503, times=None, when=lambda r: r.body["messages"][0]["content"] == "question 0")])
    spec = spec_for(loopback_api)
    outs = AnthropicBackend([spec], retry=RetryPolicy(max_attempts=2, base_delay_s=0.01)).generate(requests_for(spec, 2))
    assert "after 2 attempts" in outs[0].error and "HTTP 503" in outs[0].error and outs[0].text == ""
    assert outs[1].error is None


def test_unreachable_server_raises_backend_unavailable():
    spec = ModelSpec(name="cand", backend="anthropic", model="m", base_url="http://127.0.0.1:9", api_key_env="EVALKIT_TEST_ANTHROPIC_KEY")
    with pytest.raises(BackendUnavailable, match=r"http://127\.0\.0\.1:9"):
        AnthropicBackend([spec], retry=FAST).generate(requests_for(spec, 3))


def test_concurrency_is_bounded_and_used(loopback_api):
    loopback_api.latency_s = 0.25
    spec = spec_for(loopback_api, concurrency=6)
    t0 = time.monotonic()
    outs = AnthropicBackend([spec]).generate(requests_for(spec, 18))
    elapsed = time.monotonic() - t0
    assert all(o.error is None for o in outs)
    assert 4 <= loopback_api.max_concurrency <= 6
    assert elapsed < 3.0, elapsed  # ~18 * 0.25 / 6 = 0.75 s; one at a time would take 4.5 s


def test_api_key_never_leaks(loopback_api, caplog):
    caplog.set_level(logging.DEBUG)
    loopback_api.add_faults([Fault.http(403, body={"type": "error", "error": {"type": "permission_error", "message": f"key {KEY} lacks access"}})])
    spec = spec_for(loopback_api)
    outs = AnthropicBackend([spec], retry=FAST).generate(requests_for(spec, 3, "sys"))
    assert sum(o.error is not None for o in outs) == 1
    assert all(KEY not in repr(o) for o in outs)
    assert all(r.headers.get("authorization") == f"Bearer {KEY}" or r.headers.get("x-api-key") == KEY for r in loopback_api.requests)
    assert all(KEY.encode() not in r.raw for r in loopback_api.requests)
    assert KEY not in caplog.text


def test_missing_key_is_a_user_error(monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(UserError, match="ANTHROPIC_API_KEY"):
        AnthropicBackend([ModelSpec(name="cand", backend="anthropic", model="claude")])


VERDICT = {
    "type": "object",
    "properties": {"winner": {"type": "string", "enum": ["A", "B", "tie"]}, "reason": {"type": "string"}},
    "required": ["winner", "reason"],
}
