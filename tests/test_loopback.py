"""The loopback API server itself: routes, validation, faults, concurrency (raw HTTP via httpx)."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from tests.support.loopback import (
    Fault,
    LoopbackAPI,
    Reply,
    echo_responder,
    example_for_schema,
    http_date,
    parse_fault,
    requested_schema,
)

OPENAI_HEADERS = {"Authorization": "Bearer sk-test"}
ANTHROPIC_HEADERS = {"x-api-key": "sk-test", "anthropic-version": "2023-06-01"}


def chat(n: int = 0, **extra) -> dict:
    return {"model": "m", "messages": [{"role": "user", "content": f"hello {n}"}], **extra}


def post_openai(server: LoopbackAPI, body: dict, headers=OPENAI_HEADERS, timeout: float = 5.0) -> httpx.Response:
    return httpx.post(f"{server.base_url}/chat/completions", json=body, headers=headers, timeout=timeout)


def post_anthropic(server: LoopbackAPI, body: dict, headers=ANTHROPIC_HEADERS) -> httpx.Response:
    return httpx.post(f"{server.anthropic_base_url}/v1/messages", json=body, headers=headers, timeout=5.0)


def test_openai_route_answers_with_usage_and_echo(loopback_api):
    r = post_openai(loopback_api, chat(3, max_tokens=10))
    assert r.status_code == 200
    data = r.json()
    assert data["choices"][0]["message"]["content"] == "hello 3"
    assert data["choices"][0]["finish_reason"] == "stop"
    assert data["usage"] == {"prompt_tokens": 2, "completion_tokens": 2, "total_tokens": 4}
    assert httpx.get(f"{loopback_api.base_url}/models", headers=OPENAI_HEADERS).json()["data"][0]["id"]


def test_anthropic_route_validates_like_the_api(loopback_api):
    ok = post_anthropic(loopback_api, {"model": "c", "max_tokens": 5, "system": "s", "messages": [{"role": "user", "content": "hi there"}]})
    assert ok.status_code == 200 and ok.json()["content"] == [{"type": "text", "text": "hi there"}]
    assert ok.json()["usage"] == {"input_tokens": 3, "output_tokens": 2} and ok.json()["stop_reason"] == "end_turn"
    bad = post_anthropic(loopback_api, {"model": "c", "max_tokens": 5, "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}]})
    assert bad.status_code == 400 and "system" in bad.json()["error"]["message"] and bad.json()["type"] == "error"
    assert post_anthropic(loopback_api, {"model": "c", "messages": [{"role": "user", "content": "hi"}]}).status_code == 400  # no max_tokens
    assert post_anthropic(loopback_api, {"model": "c", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}, headers={"anthropic-version": "2023-06-01"}).status_code == 401
    new = {"x-api-key": "k", "anthropic-version": "2026-10-21"}
    rejected = post_anthropic(loopback_api, {"model": "c", "max_tokens": 5, "temperature": 1.0, "messages": [{"role": "user", "content": "x"}]}, headers=new)
    assert rejected.status_code == 400 and "temperature" in rejected.json()["error"]["message"]


def test_openai_route_needs_a_key_and_rejects_unknown_paths(loopback_api):
    assert post_openai(loopback_api, chat(), headers={}).status_code == 401
    r = httpx.post(f"{loopback_api.url}/v1/embeddings", json={}, headers=OPENAI_HEADERS)
    assert r.status_code == 404 and "error" in r.json()


def test_structured_requests_get_schema_shaped_defaults(loopback_api):
    schema = {"type": "object", "properties": {"score": {"type": "integer", "minimum": 1, "maximum": 5}, "label": {"enum": ["good", "bad"]}}, "required": ["score", "label"]}
    body = chat(response_format={"type": "json_schema", "json_schema": {"name": "v", "schema": schema}})
    assert json.loads(post_openai(loopback_api, body).json()["choices"][0]["message"]["content"]) == {"score": 1, "label": "good"}
    tool_req = {"model": "c", "max_tokens": 50, "messages": [{"role": "user", "content": "grade"}],
                "tools": [{"name": "grade", "input_schema": schema}], "tool_choice": {"type": "tool", "name": "grade"}}
    r = post_anthropic(loopback_api, tool_req).json()
    assert r["stop_reason"] == "tool_use" and r["content"][0]["type"] == "tool_use" and r["content"][0]["input"] == {"score": 1, "label": "good"}
    assert requested_schema("anthropic", tool_req) == schema
    assert echo_responder("openai", chat(response_format={"type": "json_object"})) == {"echo": "hello 0"}
    assert example_for_schema({"type": "array", "items": {"type": "string", "minLength": 3}, "minItems": 2}) == ["xxx", "xxx"]


def test_responder_reply_controls_finish_reason_and_usage(loopback_api):
    loopback_api.set_responder(lambda api, req: Reply(text="partial", finish_reason="length", tokens_in=100, tokens_out=50))
    data = post_openai(loopback_api, chat()).json()
    assert data["choices"][0]["finish_reason"] == "length" and data["usage"]["prompt_tokens"] == 100
    data = post_anthropic(loopback_api, {"model": "c", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}).json()
    assert data["stop_reason"] == "max_tokens" and data["usage"]["output_tokens"] == 50


def test_http_faults_carry_status_headers_and_api_shaped_bodies(loopback_api):
    loopback_api.add_faults(["429:2", Fault.server_error(503, api="anthropic"), Fault.rate_limit(retry_after=http_date(5), headers={"retry-after-ms": "1500"})])
    r = post_openai(loopback_api, chat())
    assert r.status_code == 429 and r.headers["retry-after"] == "2" and r.json()["error"]["type"] == "rate_limit_error"
    # The 503 is reserved for anthropic requests: the next openai request gets the date-form 429.
    r = post_openai(loopback_api, chat())
    assert r.status_code == 429 and r.headers["retry-after"].endswith("GMT") and r.headers["retry-after-ms"] == "1500"
    assert post_openai(loopback_api, chat()).status_code == 200
    r = post_anthropic(loopback_api, {"model": "c", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 503 and r.json()["error"]["type"] == "overloaded_error"
    faults = [rec.fault for rec in loopback_api.requests]
    assert faults[0] == "http 429 retry-after=2.0" and faults[1].endswith("GMT") and faults[2:] == [None, "http 503"]
    assert loopback_api.pending_faults == []


def test_broken_bodies_and_dropped_connections(loopback_api):
    loopback_api.add_faults(["malformed_json", "truncated", "drop"])
    r = post_openai(loopback_api, chat())
    assert r.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        r.json()
    with pytest.raises(httpx.RemoteProtocolError):
        post_openai(loopback_api, chat())
    with pytest.raises(httpx.RemoteProtocolError):
        post_openai(loopback_api, chat())
    assert post_openai(loopback_api, chat()).status_code == 200


def test_delay_fault_outlasts_a_client_timeout(loopback_api):
    loopback_api.add_faults(["timeout:2"])
    t0 = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        post_openai(loopback_api, chat(), timeout=0.3)
    assert time.monotonic() - t0 < 1.5
    assert post_openai(loopback_api, chat()).status_code == 200


def test_content_fault_standing_rule_and_predicates(loopback_api):
    loopback_api.add_faults([Fault.content({"score": "high"}, times=None, when=lambda r: "hello 1" in json.dumps(r.body))])
    for _ in range(2):
        assert json.loads(post_openai(loopback_api, chat(1)).json()["choices"][0]["message"]["content"]) == {"score": "high"}
        assert post_openai(loopback_api, chat(2)).json()["choices"][0]["message"]["content"] == "hello 2"
    assert len(loopback_api.pending_faults) == 1
    loopback_api.clear_faults()
    assert post_openai(loopback_api, chat(1)).json()["choices"][0]["message"]["content"] == "hello 1"


def test_fault_shorthands():
    assert parse_fault("429:2").status == 429 and parse_fault("429:2").retry_after == 2.0
    assert parse_fault("500").kind == "http" and parse_fault("timeout:3").delay_s == 3.0
    assert [parse_fault(s).kind for s in ("malformed_json", "truncated", "drop")] == ["malformed_json", "truncated", "drop"]
    with pytest.raises(ValueError):
        parse_fault("explode")
    f = Fault.server_error(500)
    server = LoopbackAPI()
    server.add_faults([f, f])  # queued as two independent copies
    assert len(server.pending_faults) == 2 and server.pending_faults[0] is not server.pending_faults[1] and f.times == 1


def test_responder_errors_become_500_and_are_kept():
    with LoopbackAPI(responder=lambda api, req: 1 / 0) as server:
        r = post_openai(server, chat())
        assert r.status_code == 500 and "ZeroDivisionError" in r.json()["error"]["message"]
        assert isinstance(server.responder_errors[0], ZeroDivisionError)


def test_serves_64_concurrent_requests_and_counts_them(loopback_api):
    loopback_api.latency_s = 0.4

    async def fire():
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
        async with httpx.AsyncClient(limits=limits, timeout=10) as client:
            return await asyncio.gather(*[client.post(f"{loopback_api.base_url}/chat/completions", json=chat(i), headers=OPENAI_HEADERS) for i in range(64)])

    t0 = time.monotonic()
    responses = asyncio.run(fire())
    elapsed = time.monotonic() - t0
    assert [r.json()["choices"][0]["message"]["content"] for r in responses] == [f"hello {i}" for i in range(64)]
    assert loopback_api.max_concurrency >= 56  # 64 unless the machine is starved; none was refused or queued for long
    assert elapsed < 4.0, elapsed  # one at a time: 25.6 s
    log = loopback_api.requests
    assert len(log) == 64 and all(r.finished is not None and r.finished - r.started >= 0.39 for r in log)
    loopback_api.reset_stats()
    assert loopback_api.requests == [] and loopback_api.max_concurrency == 0
