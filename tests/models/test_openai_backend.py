"""The openai backend: the real openai SDK over real HTTP to the loopback server."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from evalkit.errors import BackendUnavailable, UserError
from evalkit.models import open_backend
from evalkit.models.api_common import PLACEHOLDER_KEY
from evalkit.models.base import GenerationRequest
from evalkit.models.openai_backend import OpenAIBackend
from evalkit.models.retry import RetryPolicy
from evalkit.types import GenerationParams, Message, ModelSpec
from tests.support.loopback import Fault

KEY = "sk-evalkit-LEAKCHECK-9f8e7d6c5b4a"
FAST = RetryPolicy(max_attempts=4, base_delay_s=0.01, max_delay_s=0.05)


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv("EVALKIT_TEST_OPENAI_KEY", KEY)


def spec_for(server, *, model="gpt-test", gen=GenerationParams(), **options) -> ModelSpec:
    return ModelSpec(name="cand", backend="openai", model=model, base_url=server.base_url,
                     api_key_env="EVALKIT_TEST_OPENAI_KEY", generation=gen, options={"timeout_s": 5.0, **options})


def requests_for(spec: ModelSpec, n: int, system: str | None = None) -> list[GenerationRequest]:
    out = []
    for i in range(n):
        msgs = ((Message("system", system),) if system else ()) + (Message("user", f"question {i}"),)
        out.append(GenerationRequest(key=f"k{i}", model=spec, messages=msgs))
    return out


def test_round_trip_passes_ft_model_and_generation_params(loopback_api):
    spec = spec_for(loopback_api, model="ft:gpt-4o-mini-2024-07-18:acme:support:AbC123",
                    gen=GenerationParams(max_new_tokens=7, temperature=0.0, seed=11))
    done = []
    backend = open_backend([spec])  # through the registry, as the run stage does
    assert isinstance(backend, OpenAIBackend)
    outs = backend.generate(requests_for(spec, 3, system="Answer briefly."), progress=done.append)
    backend.close()
    assert [o.text for o in outs] == ["question 0", "question 1", "question 2"]
    assert all(o.error is None and o.finish_reason == "stop" and o.tokens_in == 4 and o.tokens_out == 2 and o.latency_s > 0 for o in outs)
    assert sum(done) == 3
    body = loopback_api.requests[0].body
    assert body["model"] == "ft:gpt-4o-mini-2024-07-18:acme:support:AbC123"
    assert body["messages"][0] == {"role": "system", "content": "Answer briefly."}
    assert body["temperature"] == 0.0 and body["seed"] == 11 and body["max_tokens"] == 7
    assert "max_completion_tokens" not in body and "stop" not in body


def test_max_tokens_param_and_stop_sequences(loopback_api):
    loopback_api.set_responder(lambda api, req: "one two three END four five")
    spec = spec_for(loopback_api, gen=GenerationParams(max_new_tokens=2, stop=("END",)), max_tokens_param="max_completion_tokens")
    [stopped] = OpenAIBackend([spec]).generate(requests_for(spec, 1))
    assert stopped.text == "one two three " and stopped.finish_reason == "stop"
    body = loopback_api.requests[-1].body
    assert body["max_completion_tokens"] == 2 and "max_tokens" not in body and body["stop"] == ["END"]

    spec = spec_for(loopback_api, gen=GenerationParams(max_new_tokens=2))
    [cut] = OpenAIBackend([spec]).generate(requests_for(spec, 1))
    assert cut.text == "one two" and cut.finish_reason == "length"

    spec = spec_for(loopback_api, gen=GenerationParams(max_new_tokens=3), max_tokens_param="max_output_tokens")
    OpenAIBackend([spec]).generate(requests_for(spec, 1))
    assert loopback_api.requests[-1].body["max_output_tokens"] == 3  # unknown names go in the body as given


def test_429_retry_after_is_honoured(loopback_api):
    loopback_api.add_faults([Fault.rate_limit(retry_after=1)])
    spec = spec_for(loopback_api)
    t0 = time.monotonic()
    [out] = OpenAIBackend([spec], retry=FAST).generate(requests_for(spec, 1))
    assert out.error is None and out.text == "question 0"
    first, second = loopback_api.requests
    assert first.status == 429 and second.status == 200
    waited = second.started - first.finished
    assert 0.95 <= waited < 3.0, waited  # the server's 1 s, not the policy's 10 ms backoff
    assert time.monotonic() - t0 >= 0.95


@pytest.mark.parametrize("fault", ["500", "503", "malformed_json", "truncated", "drop"])
def test_transient_failures_are_retried(loopback_api, fault):
    loopback_api.add_faults([fault, fault])
    spec = spec_for(loopback_api)
    [out] = OpenAIBackend([spec], retry=FAST).generate(requests_for(spec, 1))
    assert out.error is None and out.text == "question 0"
    assert len(loopback_api.requests) == 3
    assert [r.fault is not None for r in loopback_api.requests] == [True, True, False]


def test_timeout_then_success(loopback_api):
    loopback_api.add_faults([Fault.delay(3.0)])
    spec = spec_for(loopback_api, timeout_s=0.3)
    t0 = time.monotonic()
    [out] = OpenAIBackend([spec], retry=FAST).generate(requests_for(spec, 1))
    assert out.error is None and out.text == "question 0"
    assert time.monotonic() - t0 < 2.0  # gave up on the slow one, did not wait it out
    assert len(loopback_api.requests) == 2


def test_exhausted_retries_are_recorded_not_raised(loopback_api):
    loopback_api.add_faults([Fault.server_error(500, when=lambda r: r.body["messages"][-1]["content"] == "question 1", times=None)])
    spec = spec_for(loopback_api)
    outs = OpenAIBackend([spec], retry=RetryPolicy(max_attempts=3, base_delay_s=0.01)).generate(requests_for(spec, 3))
    assert outs[0].error is None and outs[2].error is None
    assert outs[1].text == "" and "after 3 attempts" in outs[1].error and "HTTP 500" in outs[1].error
    assert sum(1 for r in loopback_api.requests if r.status == 500) == 3


def test_max_retries_option_sets_attempts(loopback_api):
    loopback_api.add_faults([Fault.server_error(503, times=None)])
    spec = spec_for(loopback_api, max_retries=1, retry_base_delay_s=0.01)
    [out] = OpenAIBackend([spec]).generate(requests_for(spec, 1))
    assert "after 2 attempts" in out.error and len(loopback_api.requests) == 2


def test_non_retryable_error_is_recorded_once(loopback_api):
    loopback_api.add_faults([Fault.http(400, body={"error": {"message": "model not supported here", "type": "invalid_request_error"}})])
    spec = spec_for(loopback_api)
    outs = OpenAIBackend([spec], retry=FAST).generate(requests_for(spec, 2))
    errors = [o.error for o in outs if o.error]
    assert len(errors) == 1 and "HTTP 400" in errors[0] and "model not supported here" in errors[0]
    assert len(loopback_api.requests) == 2


def test_unreachable_server_raises_backend_unavailable():
    spec = ModelSpec(name="cand", backend="openai", model="m", base_url="http://127.0.0.1:9/v1", api_key_env="EVALKIT_TEST_OPENAI_KEY")
    with pytest.raises(BackendUnavailable) as e:
        OpenAIBackend([spec], retry=FAST).generate(requests_for(spec, 5))
    assert "http://127.0.0.1:9/v1" in str(e.value) and KEY not in str(e.value)


def test_concurrency_is_bounded_and_used(loopback_api):
    loopback_api.latency_s = 0.25
    spec = spec_for(loopback_api, concurrency=8)
    t0 = time.monotonic()
    outs = OpenAIBackend([spec]).generate(requests_for(spec, 24))
    elapsed = time.monotonic() - t0
    assert all(o.error is None for o in outs)
    assert 6 <= loopback_api.max_concurrency <= 8  # bounded by the option, and used (8 unless the machine is starved)
    assert elapsed < 3.0, elapsed  # ~24 * 0.25 / 8 = 0.75 s; one at a time would take 6 s


def test_api_key_never_leaks(loopback_api, caplog):
    caplog.set_level(logging.DEBUG)
    # A hostile server echoes the key back in error bodies and in the answer's failures.
    loopback_api.add_faults([
        Fault.http(500, body={"error": {"message": f"upstream rejected Bearer {KEY}", "type": "api_error"}}, times=None,
                   when=lambda r: r.body["messages"][-1]["content"] == "question 0"),
        Fault.http(422, body=f'{{"error": {{"message": "bad key {KEY}"}}}}', when=lambda r: r.body["messages"][-1]["content"] == "question 1"),
    ])
    spec = spec_for(loopback_api)
    outs = OpenAIBackend([spec], retry=FAST).generate(requests_for(spec, 3))
    assert outs[0].error and outs[1].error and outs[2].error is None
    for o in outs:
        assert KEY not in repr(o)
    assert "***" in outs[0].error
    assert all(r.headers["authorization"] == f"Bearer {KEY}" for r in loopback_api.requests)
    assert all(KEY.encode() not in r.raw for r in loopback_api.requests)
    assert KEY not in caplog.text


def test_missing_key_is_a_user_error_naming_the_variable(monkeypatch):
    monkeypatch.delenv("EVALKIT_TEST_OPENAI_KEY", raising=False)
    spec = ModelSpec(name="cand", backend="openai", model="m", api_key_env="EVALKIT_TEST_OPENAI_KEY")
    with pytest.raises(UserError, match="EVALKIT_TEST_OPENAI_KEY"):
        OpenAIBackend([spec])
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(UserError, match="OPENAI_API_KEY"):
        OpenAIBackend([ModelSpec(name="cand", backend="openai", model="m")])


def test_custom_base_url_without_key_uses_a_placeholder(loopback_api, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    spec = ModelSpec(name="local", backend="openai", model="served-model", base_url=loopback_api.base_url)
    [out] = OpenAIBackend([spec]).generate(requests_for(spec, 1))
    assert out.error is None
    assert loopback_api.requests[0].headers["authorization"] == f"Bearer {PLACEHOLDER_KEY}"


def test_rejected_key_raises_backend_unavailable(loopback_api):
    loopback_api.add_faults([Fault.http(401, times=None)])
    spec = spec_for(loopback_api, concurrency=2)
    with pytest.raises(BackendUnavailable, match="EVALKIT_TEST_OPENAI_KEY") as e:
        OpenAIBackend([spec], retry=FAST).generate(requests_for(spec, 6))
    assert KEY not in str(e.value)
    assert len(loopback_api.requests) < 6  # stopped after the first batch


def test_generate_works_inside_a_running_event_loop(loopback_api):
    spec = spec_for(loopback_api)

    async def caller():
        return OpenAIBackend([spec]).generate(requests_for(spec, 2))

    outs = asyncio.run(caller())
    assert [o.text for o in outs] == ["question 0", "question 1"]


def test_generate_stream_keeps_requests_in_flight_across_blocks(loopback_api):
    """A slow first item: with every block's requests on one loop, the other slots go on to later
    blocks, which complete (and are yielded for committing) before the first block does; every
    block comes back whole, in its own order.
    """
    from tests.support.loopback import echo_responder, last_user_text

    def slow_first(api, req):
        if last_user_text(req) == "question 0":
            time.sleep(0.6)
        return echo_responder(api, req)

    loopback_api.set_responder(slow_first)
    spec = spec_for(loopback_api, concurrency=4)
    reqs = requests_for(spec, 48)
    blocks = [reqs[i:i + 8] for i in range(0, 48, 8)]
    seen: list[tuple[int, int]] = []  # (block, requests the server had when the block came back)
    got: dict[int, list[str]] = {}
    for bi, outs in OpenAIBackend([spec]).generate_stream(blocks):
        seen.append((bi, len(loopback_api.requests)))
        got[bi] = [o.text for o in outs]
    assert sorted(got) == list(range(6))
    assert all(got[bi] == [f"question {i}" for i in range(bi * 8, bi * 8 + 8)] for bi in got)
    assert seen[0][0] != 0 and seen[-1][0] == 0  # later blocks were done while the first still waited
    assert seen[0][1] > 8  # requests of later blocks were out before any block was committed


def test_generate_stream_stops_on_a_rejected_key(loopback_api):
    loopback_api.add_faults([Fault.http(401, times=None)])
    spec = spec_for(loopback_api, concurrency=2)
    reqs = requests_for(spec, 12)
    with pytest.raises(BackendUnavailable, match="EVALKIT_TEST_OPENAI_KEY"):
        list(OpenAIBackend([spec], retry=FAST).generate_stream([reqs[:6], reqs[6:]]))
    assert len(loopback_api.requests) < 6


def test_closing_the_stream_early_cancels_the_rest(loopback_api):
    loopback_api.latency_s = 0.05
    spec = spec_for(loopback_api, concurrency=2)
    reqs = requests_for(spec, 40)
    stream = OpenAIBackend([spec]).generate_stream([reqs[i:i + 4] for i in range(0, 40, 4)])
    next(stream)
    stream.close()  # the consumer failed (a store error, Ctrl-C): nothing more is sent
    n = len(loopback_api.requests)
    time.sleep(0.3)
    assert len(loopback_api.requests) <= n + 2 and n < 40
