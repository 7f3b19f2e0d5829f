"""A loopback HTTP server that speaks the OpenAI and Anthropic APIs, with scriptable faults.

Tests point the real ``openai`` / ``anthropic`` SDKs at it (real HTTP on 127.0.0.1, a random free
port, one thread per connection, so hundreds of concurrent requests are fine)::

    def test_something(loopback_api):
        client = openai.OpenAI(base_url=loopback_api.base_url, api_key="sk-test", max_retries=0)
        aclient = anthropic.Anthropic(base_url=loopback_api.anthropic_base_url, api_key="sk-test")

Routes (matched on the path's ending, so ``/v1/...`` and ``/v1/v1/...`` both work):

* ``POST .../chat/completions`` (OpenAI chat completions): ``model``, ``messages``, ``max_tokens`` /
  ``max_completion_tokens``, ``temperature``, ``seed``, ``stop``, ``response_format`` (``json_object``
  or ``json_schema``). Answers ``choices[0].message.content``, ``finish_reason``, ``usage``.
  Needs ``Authorization: Bearer ...`` (401 otherwise).
* ``POST .../messages`` (Anthropic messages): ``model``, ``max_tokens`` (required), ``system``,
  ``messages`` (roles user/assistant only: a ``system`` role is a 400, as on the real API),
  ``stop_sequences``, ``tools`` + ``tool_choice`` (``{"type": "tool", "name": ...}`` -> a ``tool_use``
  block whose ``input`` is the answer; otherwise a ``text`` block). Needs an API key
  (``x-api-key`` or ``Authorization: Bearer``, which SDK 2.x sends) and ``anthropic-version``. As on the
  real API, version ``2026-10-21`` (the SDK 2.x default) rejects ``temperature``/``top_p``/``top_k``
  with a 400; ``2023-06-01`` accepts ``temperature`` in [0, 1].
* ``GET .../models``: a one-model list (OpenAI form).

Token counts are whitespace words. An answer longer than the request's max tokens is cut to that
many words with ``finish_reason="length"`` / ``stop_reason="max_tokens"``; a stop sequence found in
the answer cuts it there (``"stop"`` / ``"stop_sequence"``).

**Answers** come from the responder, a callable ``(api, request_json) -> str | dict | Reply`` where
``api`` is ``"openai"`` or ``"anthropic"``. A ``str`` is the answer text; a ``dict`` is a structured
answer (OpenAI: JSON-encoded into the message content; Anthropic: the ``tool_use`` input when a
tool is forced, else JSON text); a ``Reply`` sets text/data plus ``finish_reason`` or usage
explicitly, and its ``alternatives`` script the token log-probabilities a request with
``logprobs``/``top_logprobs`` gets (the text is cut into word-like tokens; ``refuse_logprobs`` makes
the server answer such a request 400). The default, ``echo_responder``, echoes the last user message, and for structured
requests (``json_schema`` response format, or a forced tool) returns a minimal object that satisfies
the schema (``example_for_schema``). Helpers for responders: ``last_user_text(req)``,
``requested_schema(api, req)``. A responder that raises makes a 500 and fails the test at teardown.

**Faults** are queued with ``add_faults([...])``. Each request takes the first queued fault whose
filters match it (``api``, ``path_contains``, ``when(recorded_request)``); a fault with ``times=N``
serves N requests, ``times=None`` every matching request from then on (a standing rule). Kinds:

=============================  ==========================================================================
``Fault.http(status, ...)``     an error response in the API's error format; ``retry_after`` (seconds,
                                or a string sent verbatim, e.g. ``http_date(2)``), extra ``headers``,
                                a custom ``body``. Shortcuts: ``Fault.rate_limit(retry_after=1)`` (429),
                                ``Fault.server_error(500|503|529)``.
``Fault.delay(seconds)``        waits, then answers normally: longer than the client timeout = a timeout.
``Fault.malformed_json()``      200 with ``application/json`` whose body is not JSON.
``Fault.truncated()``           200 whose Content-Length promises the full body; half is sent, then the
                                connection is closed.
``Fault.drop()``                the connection is closed without any response.
``Fault.content(value)``        a well-formed 200 whose answer is ``value`` instead of the responder's
                                (e.g. valid JSON that breaks the schema, or prose where JSON was asked).
=============================  ==========================================================================

String shorthands are accepted too: ``"429"``, ``"429:2"`` (Retry-After 2 s), ``"500"``, ``"503"``,
``"timeout:3"`` (delay 3 s), ``"malformed_json"``, ``"truncated"``, ``"drop"``.

**Observing**: ``latency_s`` (artificial latency added to every request), ``requests`` (a list of
``RecordedRequest``: index, api, method, path, headers (lower-case names), body (parsed JSON), raw
bytes, started/finished (``time.monotonic``), the fault served, the status sent),
``max_concurrency`` (most requests in flight at once), ``reset_stats()``, ``bodies(api=None)``.
"""

from __future__ import annotations

import dataclasses
import email.utils
import json
import math
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterable, Iterator, Literal, Union

import pytest

Api = Literal["openai", "anthropic"]


@dataclass(frozen=True)
class Reply:
    """A responder's answer with explicit details. ``data`` (structured) wins over ``text``."""

    text: str | None = None
    data: Any = None
    finish_reason: str | None = None  # OpenAI vocabulary: stop | length | content_filter | tool_calls
    tokens_in: int | None = None
    tokens_out: int | None = None
    # when the request asks for logprobs: (token index, token text, text before it) -> the
    # alternatives at that position as (token, probability); None: the token alone, probability 1
    alternatives: Callable[[int, str, str], list[tuple[str, float]] | None] | None = None
    # a reasoning model's thinking, returned apart from the answer: OpenAI-compatible servers'
    # message.reasoning_content (vLLM's reasoning parsers), Anthropic's thinking block
    reasoning: str | None = None


Answer = Union[str, dict, list, Reply]
Responder = Callable[[str, dict], Answer]


@dataclass
class RecordedRequest:
    index: int
    api: str | None
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    raw: bytes
    started: float
    finished: float | None = None
    fault: str | None = None
    status: int | None = None


@dataclass
class Fault:
    """One scripted misbehaviour; see the module docstring. Build with the classmethods."""

    kind: Literal["http", "delay", "malformed_json", "truncated", "drop", "content"]
    status: int = 500
    retry_after: float | str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None  # http: a custom error body (dict -> JSON, str/bytes verbatim)
    delay_s: float = 0.0
    value: Any = None  # content: the answer to serve
    api: str | None = None  # only requests to this API ("openai" | "anthropic")
    path_contains: str | None = None
    when: Callable[[RecordedRequest], bool] | None = None
    times: int | None = 1  # None: every matching request (a standing rule)

    @classmethod
    def http(cls, status: int, *, retry_after: float | str | None = None, headers: dict[str, str] | None = None, body: Any = None, **kw: Any) -> "Fault":
        return cls("http", status=status, retry_after=retry_after, headers=dict(headers or {}), body=body, **kw)

    @classmethod
    def rate_limit(cls, retry_after: float | str | None = 1.0, **kw: Any) -> "Fault":
        return cls.http(429, retry_after=retry_after, **kw)

    @classmethod
    def server_error(cls, status: int = 500, **kw: Any) -> "Fault":
        return cls.http(status, **kw)

    @classmethod
    def delay(cls, seconds: float, **kw: Any) -> "Fault":
        return cls("delay", delay_s=seconds, **kw)

    @classmethod
    def malformed_json(cls, **kw: Any) -> "Fault":
        return cls("malformed_json", **kw)

    @classmethod
    def truncated(cls, **kw: Any) -> "Fault":
        return cls("truncated", **kw)

    @classmethod
    def drop(cls, **kw: Any) -> "Fault":
        return cls("drop", **kw)

    @classmethod
    def content(cls, value: Any, **kw: Any) -> "Fault":
        return cls("content", value=value, **kw)

    def label(self) -> str:
        if self.kind == "http":
            return f"http {self.status}" + (f" retry-after={self.retry_after}" if self.retry_after is not None else "")
        if self.kind == "delay":
            return f"delay {self.delay_s}s"
        return self.kind

    def matches(self, rec: RecordedRequest) -> bool:
        if self.api is not None and rec.api != self.api:
            return False
        if self.path_contains is not None and self.path_contains not in rec.path:
            return False
        return self.when is None or bool(self.when(rec))


def parse_fault(spec: "Fault | str") -> Fault:
    """A Fault, or a shorthand: "429", "429:2", "500", "503", "timeout:3", "malformed_json", "truncated", "drop"."""
    if isinstance(spec, Fault):
        return dataclasses.replace(spec)  # a copy: one Fault object can be queued twice, or reused by another test
    s = str(spec).strip()
    head, _, arg = s.partition(":")
    if head.isdigit():
        return Fault.http(int(head), retry_after=float(arg) if arg else None)
    if head in ("timeout", "delay"):
        return Fault.delay(float(arg or 5.0))
    if head in ("malformed_json", "malformed"):
        return Fault.malformed_json()
    if head in ("truncated", "truncate"):
        return Fault.truncated()
    if head == "drop":
        return Fault.drop()
    raise ValueError(f"unknown fault shorthand {spec!r}")


def http_date(seconds_from_now: float) -> str:
    """An HTTP-date ``seconds_from_now`` in the future (for a date-form Retry-After)."""
    return email.utils.formatdate(time.time() + seconds_from_now, usegmt=True)


# --- request helpers (for responders) ---------------------------------------------------------


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for block in content:
            if isinstance(block, dict) and isinstance(block.get("text"), str):
                parts.append(block["text"])
            elif isinstance(block, str):
                parts.append(block)
        return "\n".join(parts)
    return ""


def last_user_text(req: dict) -> str:
    for m in reversed(req.get("messages") or []):
        if isinstance(m, dict) and m.get("role") == "user":
            return _text_of(m.get("content"))
    return ""


def forced_tool(req: dict) -> dict | None:
    """Anthropic: the tool the request forces with tool_choice {"type": "tool", "name": ...}."""
    choice = req.get("tool_choice") or {}
    if isinstance(choice, dict) and choice.get("type") == "tool":
        for t in req.get("tools") or []:
            if isinstance(t, dict) and t.get("name") == choice.get("name"):
                return t
    return None


def requested_schema(api: str, req: dict) -> dict | None:
    """The JSON schema the request asks the answer to follow, if any."""
    if api == "openai":
        rf = req.get("response_format") or {}
        if isinstance(rf, dict) and rf.get("type") == "json_schema":
            return (rf.get("json_schema") or {}).get("schema") or {}
        return None
    tool = forced_tool(req)
    return (tool.get("input_schema") or {}) if tool else None


def example_for_schema(schema: Any) -> Any:
    """A small value that satisfies a simple JSON schema (objects, arrays, enums, numbers, strings)."""
    if not isinstance(schema, dict):
        return None
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return example_for_schema(schema[key][0])
    t = schema.get("type")
    if isinstance(t, list):
        t = next((x for x in t if x != "null"), "null")
    if t == "object" or "properties" in schema:
        props = schema.get("properties") or {}
        return {k: example_for_schema(props.get(k, {})) for k in (schema.get("required") or list(props))}
    if t == "array":
        return [example_for_schema(schema.get("items", {})) for _ in range(int(schema.get("minItems", 0)))]
    if t in ("integer", "number"):
        lo = schema.get("minimum", schema.get("exclusiveMinimum", 0))
        v = lo + (1 if "exclusiveMinimum" in schema and "minimum" not in schema else 0)
        return int(v) if t == "integer" else float(v)
    if t == "boolean":
        return True
    if t == "null":
        return None
    return "x" * int(schema.get("minLength", 2))


def echo_responder(api: str, req: dict) -> Answer:
    """Default: echo the last user message; a schema-shaped object when structured output is asked."""
    schema = requested_schema(api, req)
    if schema is not None:
        return example_for_schema(schema)
    rf = req.get("response_format") or {}
    if api == "openai" and isinstance(rf, dict) and rf.get("type") == "json_object":
        return {"echo": last_user_text(req)}
    return last_user_text(req)


def _logprobs(text: str, top: int, alternatives: Any) -> dict:
    """OpenAI's ``choices[0].logprobs``: the text cut into word-like tokens (leading space kept, as
    GPT tokenizers do), each with its log-probability and ``top`` alternatives.
    """
    content = []
    pos = 0
    for i, m in enumerate(re.finditer(r"\s*(?:\d+|\w+|[^\w\s])|\s+", text)):
        tok = m.group(0)
        alts = (alternatives(i, tok, text[:pos]) if alternatives else None) or [(tok, 1.0)]
        lp = {t: (math.log(p) if p > 0 else -9999.0) for t, p in alts}
        content.append({"token": tok, "logprob": lp.get(tok, -9999.0), "bytes": list(tok.encode()),
                        "top_logprobs": [{"token": t, "logprob": v, "bytes": list(t.encode())} for t, v in sorted(lp.items(), key=lambda kv: -kv[1])[:top]]})
        pos = m.end()
    return {"content": content, "refusal": None}


def _words(text: str) -> int:
    return len(text.split())


def _prompt_words(req: dict) -> int:
    n = _words(_text_of(req.get("system")) if req.get("system") is not None else "")
    for m in req.get("messages") or []:
        if isinstance(m, dict):
            n += _words(_text_of(m.get("content")))
    return n


class _ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind


def _error_body(api: str | None, status: int, message: str, kind: str | None = None) -> dict:
    kinds = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error", 429: "rate_limit_error",
             500: "api_error", 503: "overloaded_error", 529: "overloaded_error"}
    kind = kind or kinds.get(status, "api_error")
    if api == "anthropic":
        return {"type": "error", "error": {"type": kind, "message": message}}
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


# --- the server -------------------------------------------------------------------------------


class LoopbackAPI:
    """The server and its scriptable state. Use as a context manager, or through the fixture."""

    def __init__(self, responder: Responder | None = None, latency_s: float = 0.0):
        self.responder: Responder = responder or echo_responder
        self.latency_s = latency_s
        self.responder_errors: list[BaseException] = []
        self._faults: list[Fault] = []
        self._requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._in_flight = 0
        self._max_in_flight = 0
        self._stop = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0
        self.refuse_logprobs = False  # answer 400 to a chat completion that asks for logprobs (servers without them)
        # provider batch APIs (OpenAI files + batches, Anthropic message batches): see _Batches
        self.batch_polls = 1  # a batch ends on its Nth retrieve
        self.batch_item_errors: dict[str, int] = {}  # custom_id -> how many batches it fails in (then it succeeds)
        self.batch_expire = 0  # the next N batches to end expire: every request in them expires
        self.batch_invalid = False  # batches fail validation when created (status failed, with an error)
        self.batch_log: list[tuple[str, str, int]] = []  # (action, batch id, requests): create / retrieve / results / cancel
        self.files: dict[str, tuple[str, bytes]] = {}  # file id -> (purpose, bytes)
        self.batches: dict[str, dict] = {}

    # lifecycle
    def start(self) -> "LoopbackAPI":
        owner = self

        class Handler(_Handler):
            api_state = owner

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler, bind_and_activate=False)
        server.daemon_threads = True
        server.block_on_close = False  # threads sleeping in a delay fault must not hold up teardown
        server.request_queue_size = 512  # listen backlog: many clients connect at once
        server.allow_reuse_address = True
        server.server_bind()
        server.server_activate()
        server.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True, name="loopback-api")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "LoopbackAPI":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # addresses
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """For the OpenAI SDK (``.../v1``)."""
        return f"{self.url}/v1"

    openai_base_url = base_url

    @property
    def anthropic_base_url(self) -> str:
        """For the Anthropic SDK (the root; it adds ``/v1/messages``)."""
        return self.url

    # scripting
    def set_responder(self, fn: Responder | None) -> None:
        self.responder = fn or echo_responder

    def add_faults(self, faults: Iterable[Fault | str]) -> None:
        parsed = [parse_fault(f) for f in faults]
        with self._lock:
            self._faults.extend(parsed)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    @property
    def pending_faults(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)

    # observing
    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def bodies(self, api: str | None = None) -> list[Any]:
        return [r.body for r in self.requests if api is None or r.api == api]

    @property
    def max_concurrency(self) -> int:
        return self._max_in_flight

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def reset_stats(self) -> None:
        with self._lock:
            self._requests.clear()
            self._max_in_flight = 0

    # used by the handler
    def _begin(self, rec_args: dict) -> tuple[RecordedRequest, Fault | None]:
        with self._lock:
            rec = RecordedRequest(index=len(self._requests), **rec_args)
            self._requests.append(rec)
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
            fault = None
            for i, f in enumerate(self._faults):
                if f.matches(rec):
                    fault = f
                    if f.times is not None:
                        f.times -= 1
                        if f.times <= 0:
                            del self._faults[i]
                    break
            rec.fault = fault.label() if fault else None
            return rec, fault

    def _end(self, rec: RecordedRequest, status: int | None) -> None:
        with self._lock:
            self._in_flight -= 1
            rec.finished = time.monotonic()
            rec.status = status

    def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._stop.wait(seconds)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as two writes: without TCP_NODELAY each response waits ~40 ms for a delayed ACK
    api_state: LoopbackAPI

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def handle(self) -> None:
        try:
            super().handle()
        except (ConnectionError, socket.timeout, OSError):
            pass  # the client gave up (timeout) or we dropped the connection on purpose

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    # -- plumbing
    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = payload if isinstance(payload, bytes) else (payload.encode() if isinstance(payload, str) else json.dumps(payload).encode())
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _serve(self, method: str) -> None:
        state = self.api_state
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        path = self.path.split("?", 1)[0]
        api = "openai" if path.endswith("/chat/completions") else "anthropic" if path.endswith("/messages") else None
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        rec, fault = state._begin(
            dict(api=api, method=method, path=self.path, headers={k.lower(): v for k, v in self.headers.items()}, body=body, raw=raw, started=time.monotonic())
        )
        status: int | None = None
        try:
            state._sleep(state.latency_s)
            status = self._respond(state, rec, fault, api, path, method, raw, body)
        finally:
            state._end(rec, status)

    def _respond(self, state: LoopbackAPI, rec: RecordedRequest, fault: Fault | None, api: str | None, path: str, method: str, raw: bytes, body: Any) -> int | None:
        if fault is not None and fault.kind == "drop":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return None
        if fault is not None and fault.kind == "delay":
            state._sleep(fault.delay_s)
        if fault is not None and fault.kind == "http":
            headers = dict(fault.headers)
            if fault.retry_after is not None:
                ra = fault.retry_after
                headers["Retry-After"] = ra if isinstance(ra, str) else (str(int(ra)) if float(ra).is_integer() else str(ra))
            payload = fault.body if fault.body is not None else _error_body(api, fault.status, f"loopback fault: HTTP {fault.status}")
            self._send(fault.status, payload, headers)
            return fault.status
        if fault is not None and fault.kind == "malformed_json":
            self._send(200, b'{"id": "broken", "choices": [{"message": ')
            return 200
        if _Batches.route(path) is not None:
            try:
                status, payload, ctype = _Batches(self, state, rec).serve(method, path, raw, body)
            except _ApiError as e:
                self._send(e.status, _error_body("anthropic" if "/messages/" in path else "openai", e.status, e.message, e.kind))
                return e.status
            if ctype:
                data = payload if isinstance(payload, bytes) else payload.encode()
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                self.wfile.flush()
            else:
                self._send(status, payload)
            return status
        try:
            if method == "GET" and path.endswith("/models"):
                payload: Any = {"object": "list", "data": [{"id": "loopback-model", "object": "model", "created": 0, "owned_by": "loopback"}]}
            elif method != "POST" or api is None:
                raise _ApiError(404, f"no route for {method} {path}", "not_found_error")
            else:
                if not isinstance(body, dict):
                    raise _ApiError(400, "request body is not a JSON object")
                override = fault.value if fault is not None and fault.kind == "content" else None
                use_override = fault is not None and fault.kind == "content"
                if api == "openai":
                    payload = self._openai(state, rec, body, override, use_override)
                else:
                    payload = self._anthropic(state, rec, body, override, use_override)
        except _ApiError as e:
            self._send(e.status, _error_body(api, e.status, e.message, e.kind))
            return e.status
        if fault is not None and fault.kind == "truncated":
            data = json.dumps(payload).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return 200
        self._send(200, payload)
        return 200

    def _answer(self, state: LoopbackAPI, api: str, body: dict, override: Any, use_override: bool) -> Reply:
        if use_override:
            ans = override
        else:
            try:
                ans = state.responder(api, body)
            except Exception as e:  # noqa: BLE001 - surfaced at teardown
                state.responder_errors.append(e)
                raise _ApiError(500, f"loopback responder raised {type(e).__name__}: {e}", "api_error") from None
        if isinstance(ans, Reply):
            return ans
        if isinstance(ans, str):
            return Reply(text=ans)
        return Reply(data=ans)

    @staticmethod
    def _cut(text: str, max_tokens: int | None, stops: list[str]) -> tuple[str, str | None, str | None]:
        """Apply stop sequences then the token limit: (text, reason, matched stop)."""
        best = None
        for s in stops:
            i = text.find(s) if s else -1
            if i >= 0 and (best is None or i < best[0]):
                best = (i, s)
        if best is not None:
            return text[: best[0]], "stop_sequence", best[1]
        if max_tokens is not None and _words(text) > max_tokens:
            return " ".join(text.split()[:max_tokens]), "max_tokens", None
        return text, None, None

    def _openai(self, state: LoopbackAPI, rec: RecordedRequest, body: dict, override: Any, use_override: bool) -> dict:
        auth = rec.headers.get("authorization", "")
        # Basic: a server behind a proxy whose credentials sit in the base_url (http://user:pass@host)
        if not (auth.startswith(("Bearer ", "Basic ")) and len(auth) > len("Bearer ")):
            raise _ApiError(401, "missing bearer API key", "invalid_api_key")
        if not isinstance(body.get("model"), str) or not body["model"]:
            raise _ApiError(400, "model: required")
        msgs = body.get("messages")
        if not isinstance(msgs, list) or not msgs:
            raise _ApiError(400, "messages: must be a non-empty array")
        for i, m in enumerate(msgs):
            if not isinstance(m, dict) or m.get("role") not in ("system", "developer", "user", "assistant", "tool"):
                raise _ApiError(400, f"messages[{i}].role: invalid")
        if body.get("stream"):
            raise _ApiError(400, "stream: not supported by the loopback server")
        rf = body.get("response_format")
        if rf is not None and (not isinstance(rf, dict) or rf.get("type") not in ("text", "json_object", "json_schema")):
            raise _ApiError(400, "response_format: invalid")
        if isinstance(rf, dict) and rf.get("type") == "json_schema" and not isinstance((rf.get("json_schema") or {}).get("name"), str):
            raise _ApiError(400, "response_format.json_schema.name: required")
        top = body.get("top_logprobs")
        if top is not None and (not isinstance(top, int) or not 0 <= top <= 20):
            raise _ApiError(400, "top_logprobs: must be an integer between 0 and 20")
        if top and not body.get("logprobs"):
            raise _ApiError(400, "top_logprobs: requires logprobs to be true")
        if body.get("logprobs") and state.refuse_logprobs:
            raise _ApiError(400, "logprobs are not supported by this server")
        reply = self._answer(state, "openai", body, override, use_override)
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        stop = body.get("stop")
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        if reply.data is not None:
            text, reason = json.dumps(reply.data), None
        else:
            text, reason, _ = self._cut(reply.text or "", max_tokens, stops)
        finish = reply.finish_reason or {"max_tokens": "length", "stop_sequence": "stop", None: "stop"}[reason]
        t_in = reply.tokens_in if reply.tokens_in is not None else _prompt_words(body)
        t_out = reply.tokens_out if reply.tokens_out is not None else _words(text)
        return {
            "id": f"chatcmpl-loopback-{rec.index}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "system_fingerprint": "fp_loopback",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None,
                                                 **({"reasoning_content": reply.reasoning} if reply.reasoning else {})}, "finish_reason": finish,
                         "logprobs": _logprobs(text, int(top or 0), reply.alternatives) if body.get("logprobs") else None}],
            "usage": {"prompt_tokens": t_in, "completion_tokens": t_out, "total_tokens": t_in + t_out},
        }

    def _anthropic(self, state: LoopbackAPI, rec: RecordedRequest, body: dict, override: Any, use_override: bool) -> dict:
        if not rec.headers.get("x-api-key") and not rec.headers.get("authorization", "").startswith("Bearer "):
            raise _ApiError(401, "x-api-key header is required", "authentication_error")
        if not rec.headers.get("anthropic-version"):
            raise _ApiError(400, "anthropic-version header is required")
        if not isinstance(body.get("model"), str) or not body["model"]:
            raise _ApiError(400, "model: Field required")
        mt = body.get("max_tokens")
        if not isinstance(mt, int) or isinstance(mt, bool) or mt < 1:
            raise _ApiError(400, "max_tokens: Field required (an integer >= 1)")
        msgs = body.get("messages")
        if not isinstance(msgs, list) or not msgs:
            raise _ApiError(400, "messages: at least one message is required")
        for i, m in enumerate(msgs):
            role = m.get("role") if isinstance(m, dict) else None
            if role == "system":
                raise _ApiError(400, f'messages.{i}.role: Unexpected role "system". The Messages API accepts a top-level `system` parameter, not "system" as an input message role.')
            if role not in ("user", "assistant"):
                raise _ApiError(400, f"messages.{i}.role: Input should be 'user' or 'assistant'")
        version = rec.headers.get("anthropic-version", "")
        if version >= "2026-10-21":
            # API version 2026-10-21 (sent by anthropic SDK 2.x) rejects sampling parameters at any value.
            for key in ("temperature", "top_p", "top_k"):
                if key in body:
                    raise _ApiError(400, f"{key}: Extra inputs are not permitted")
        else:
            t = body.get("temperature")
            if t is not None and not (0.0 <= float(t) <= 1.0):
                raise _ApiError(400, "temperature: Input should be less than or equal to 1")
        choice = body.get("tool_choice")
        tool = forced_tool(body)
        if isinstance(choice, dict) and choice.get("type") == "tool" and tool is None:
            raise _ApiError(400, f"tool_choice: tool '{choice.get('name')}' is not in tools")
        reply = self._answer(state, "anthropic", body, override, use_override)
        stops = list(body.get("stop_sequences") or [])
        stop_seq = None
        if tool is not None and reply.data is not None:
            content = [{"type": "tool_use", "id": f"toolu_loopback_{rec.index}", "name": tool["name"], "input": reply.data}]
            out_text, reason = json.dumps(reply.data), "tool_use"
        else:
            text = json.dumps(reply.data) if reply.data is not None else (reply.text or "")
            text, cut, stop_seq = self._cut(text, mt, stops)
            content = [{"type": "text", "text": text}]
            if reply.reasoning:  # extended thinking: a thinking block before the answer
                content.insert(0, {"type": "thinking", "thinking": reply.reasoning, "signature": "loopback"})
            out_text, reason = text, cut or "end_turn"
        if reply.finish_reason:
            reason = {"stop": "end_turn", "length": "max_tokens"}.get(reply.finish_reason, reply.finish_reason)
        t_in = reply.tokens_in if reply.tokens_in is not None else _prompt_words(body)
        t_out = reply.tokens_out if reply.tokens_out is not None else _words(out_text)
        return {
            "id": f"msg_loopback_{rec.index}",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": content,
            "stop_reason": reason,
            "stop_sequence": stop_seq,
            "usage": {"input_tokens": t_in, "output_tokens": t_out},
        }


class _Batches:
    """The batch routes: OpenAI ``POST /v1/files`` (multipart, purpose batch), ``GET /v1/files/ID/content``,
    ``POST /v1/batches``, ``GET /v1/batches/ID``, ``POST /v1/batches/ID/cancel``; Anthropic
    ``POST /v1/messages/batches``, ``GET .../ID``, ``GET .../ID/results`` (JSONL), ``POST .../ID/cancel``.

    A batch is processed when it is retrieved for the ``batch_polls``-th time: each request is
    answered by the same code as a direct call (responder, validation); a custom_id listed in
    ``batch_item_errors`` fails inside the batch that many times; ``batch_expire`` = N makes the next N batches end expired.
    Every create / retrieve / results / cancel is logged in ``batch_log``.
    """

    ROUTES = (
        ("openai", "files", re.compile(r"/files$")),
        ("openai", "file_content", re.compile(r"/files/([^/]+)/content$")),
        ("openai", "batches", re.compile(r"/batches$")),
        ("anthropic", "batch_results", re.compile(r"/messages/batches/([^/]+)/results$")),
        ("anthropic", "batch_cancel", re.compile(r"/messages/batches/([^/]+)/cancel$")),
        ("anthropic", "batch", re.compile(r"/messages/batches/([^/]+)$")),
        ("anthropic", "batches", re.compile(r"/messages/batches$")),
        ("openai", "batch_cancel", re.compile(r"/batches/([^/]+)/cancel$")),
        ("openai", "batch", re.compile(r"/batches/([^/]+)$")),
    )

    def __init__(self, handler: "_Handler", state: LoopbackAPI, rec: RecordedRequest):
        self.h, self.state, self.rec = handler, state, rec

    @classmethod
    def route(cls, path: str) -> tuple[str, str, str | None] | None:
        for api, name, rx in cls.ROUTES:
            if api == "openai" and "/messages/" in path:
                continue
            m = rx.search(path)
            if m:
                return api, name, (m.group(1) if m.groups() else None)
        return None

    def serve(self, method: str, path: str, raw: bytes, body: Any) -> tuple[int, Any, str | None]:
        api, name, ident = self.route(path)  # type: ignore[misc]
        if api == "openai":
            auth = self.rec.headers.get("authorization", "")
            if not auth.startswith("Bearer ") or len(auth) <= len("Bearer "):
                raise _ApiError(401, "missing bearer API key", "invalid_api_key")
        elif not self.rec.headers.get("x-api-key") and not self.rec.headers.get("authorization", "").startswith("Bearer "):
            raise _ApiError(401, "x-api-key header is required", "authentication_error")
        fn = getattr(self, f"_{api}_{name}")
        return fn(method, ident, raw, body)

    # ---- OpenAI
    def _openai_files(self, method: str, ident: Any, raw: bytes, body: Any) -> tuple[int, Any, str | None]:
        if method != "POST":
            raise _ApiError(404, f"no route for {method} files", "not_found_error")
        import email.parser
        import email.policy

        ctype = self.rec.headers.get("content-type", "")
        if not ctype.startswith("multipart/form-data"):
            raise _ApiError(400, "files: expected multipart/form-data")
        msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + raw)
        fields: dict[str, tuple[str | None, bytes]] = {}
        for part in msg.iter_parts():
            fields[str(part.get_param("name", header="content-disposition"))] = (part.get_filename(), part.get_payload(decode=True) or b"")
        purpose = fields.get("purpose", (None, b""))[1].decode()
        if purpose != "batch" or "file" not in fields:
            raise _ApiError(400, "files: purpose must be 'batch' and a file is required")
        fname, data = fields["file"]
        with self.state._lock:
            fid = f"file-lb{len(self.state.files)}"
            self.state.files[fid] = (purpose, data)
        return 200, {"id": fid, "object": "file", "bytes": len(data), "created_at": int(time.time()), "filename": fname or "batch.jsonl",
                     "purpose": purpose, "status": "processed"}, None

    def _openai_file_content(self, method: str, ident: Any, raw: bytes, body: Any) -> tuple[int, Any, str | None]:
        if ident not in self.state.files:
            raise _ApiError(404, f"no file {ident}", "not_found_error")
        return 200, self.state.files[ident][1], "application/octet-stream"

    def _openai_batches(self, method: str, ident: Any, raw: bytes, body: Any) -> tuple[int, Any, str | None]:
        if method != "POST" or not isinstance(body, dict):
            raise _ApiError(400, "batches: POST a JSON object")
        fid = body.get("input_file_id")
        if fid not in self.state.files:
            raise _ApiError(400, f"input_file_id: no file {fid}")
        if body.get("endpoint") != "/v1/chat/completions" or body.get("completion_window") != "24h":
            raise _ApiError(400, "endpoint must be /v1/chat/completions and completion_window 24h")
        reqs, errors = [], []
        seen: set[str] = set()
        for i, line in enumerate(self.state.files[fid][1].decode().splitlines()):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
                cid = r["custom_id"]
                assert r["method"] == "POST" and r["url"] == "/v1/chat/completions" and isinstance(r["body"], dict)
            except (ValueError, KeyError, AssertionError, TypeError):
                errors.append({"code": "invalid_request", "message": "each line needs custom_id, method POST, url /v1/chat/completions, body", "line": i + 1})
                continue
            if cid in seen:
                errors.append({"code": "duplicate_custom_id", "message": f"custom_id {cid} is duplicated", "line": i + 1})
            seen.add(cid)
            reqs.append((cid, r["body"]))
        if self.state.batch_invalid:
            errors.append({"code": "invalid_model", "message": "loopback: the batch failed validation", "line": 1})
        with self.state._lock:
            bid = f"batch_lb{len(self.state.batches)}"
            b = {"api": "openai", "id": bid, "input_file_id": fid, "requests": reqs, "polls": 0, "status": "failed" if errors else "validating",
                 "errors": errors, "results": None, "created_at": int(time.time())}
            self.state.batches[bid] = b
            self.state.batch_log.append(("create", bid, len(reqs)))
        return 200, self._openai_object(b), None

    def _openai_object(self, b: dict) -> dict:
        res = b["results"] or {}
        ok = sum(1 for v in res.values() if v[0] == "ok")
        return {
            "id": b["id"], "object": "batch", "endpoint": "/v1/chat/completions", "input_file_id": b["input_file_id"], "completion_window": "24h",
            "status": b["status"], "created_at": b["created_at"], "output_file_id": b.get("output_file_id"), "error_file_id": b.get("error_file_id"),
            "errors": {"object": "list", "data": b["errors"]} if b["errors"] else None,
            "request_counts": {"total": len(b["requests"]), "completed": ok, "failed": len(res) - ok},
        }

    def _openai_batch(self, method: str, ident: Any, raw: bytes, body: Any) -> tuple[int, Any, str | None]:
        b = self._get(ident, "openai")
        self.state.batch_log.append(("retrieve", ident, len(b["requests"])))
        self._advance(b)
        return 200, self._openai_object(b), None

    def _openai_batch_cancel(self, method: str, ident: Any, raw: bytes, body: Any) -> tuple[int, Any, str | None]:
        b = self._get(ident, "openai")
        self.state.batch_log.append(("cancel", ident, len(b["requests"])))
        if b["status"] in ("validating", "in_progress"):
            b["status"] = "cancelling"
        return 200, self._openai_object(b), None

    # ---- Anthropic
    def _anthropic_object(self, b: dict) -> dict:
        res = b["results"] or {}
        counts = {"processing": 0 if b["status"] == "ended" else len(b["requests"]), "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        for kind, _ in res.values():
            counts[{"ok": "succeeded", "error": "errored", "cancelled": "canceled", "expired": "expired"}[kind]] += 1
        iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(b["created_at"]))
        host = self.rec.headers.get("host", f"127.0.0.1:{self.state.port}")
        prefix = self.rec.path.split("/messages/batches")[0]
        return {
            "id": b["id"], "type": "message_batch", "processing_status": b["status"], "request_counts": counts,
            "created_at": iso, "expires_at": iso, "ended_at": iso if b["status"] == "ended" else None, "archived_at": None,
            "cancel_initiated_at": iso if b.get("cancel") else None,
            "results_url": f"http://{host}{prefix}/messages/batches/{b['id']}/results" if b["status"] == "ended" else None,
        }

    def _anthropic_batches(self, method: str, ident: Any, raw: bytes, body: Any) -> tuple[int, Any, str | None]:
        if method != "POST" or not isinstance(body, dict) or not isinstance(body.get("requests"), list) or not body["requests"]:
            raise _ApiError(400, "requests: a non-empty list is required")
        reqs = []
        seen: set[str] = set()
        for i, r in enumerate(body["requests"]):
            cid = r.get("custom_id") if isinstance(r, dict) else None
            if not isinstance(cid, str) or not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", cid) or not isinstance(r.get("params"), dict):
                raise _ApiError(400, f"requests.{i}: custom_id (1-64 characters: letters, digits, _ and -) and params are required")
            if cid in seen:
                raise _ApiError(400, f"requests.{i}.custom_id: duplicated ({cid})")
            seen.add(cid)
            reqs.append((cid, r["params"]))
        with self.state._lock:
            bid = f"msgbatch_lb{len(self.state.batches)}"
            b = {"api": "anthropic", "id": bid, "requests": reqs, "polls": 0, "status": "in_progress", "errors": [], "results": None,
                 "created_at": int(time.time())}
            self.state.batches[bid] = b
            self.state.batch_log.append(("create", bid, len(reqs)))
        return 200, self._anthropic_object(b), None

    def _anthropic_batch(self, method: str, ident: Any, raw: bytes, body: Any) -> tuple[int, Any, str | None]:
        b = self._get(ident, "anthropic")
        self.state.batch_log.append(("retrieve", ident, len(b["requests"])))
        self._advance(b)
        return 200, self._anthropic_object(b), None

    def _anthropic_batch_cancel(self, method: str, ident: Any, raw: bytes, body: Any) -> tuple[int, Any, str | None]:
        b = self._get(ident, "anthropic")
        self.state.batch_log.append(("cancel", ident, len(b["requests"])))
        if b["status"] == "in_progress":
            b["status"], b["cancel"] = "canceling", True
        return 200, self._anthropic_object(b), None

    def _anthropic_batch_results(self, method: str, ident: Any, raw: bytes, body: Any) -> tuple[int, Any, str | None]:
        b = self._get(ident, "anthropic")
        if b["status"] != "ended":
            raise _ApiError(400, f"batch {ident} has not ended", "invalid_request_error")
        self.state.batch_log.append(("results", ident, len(b["requests"])))
        lines = []
        for cid, _ in b["requests"]:
            kind, value = b["results"][cid]
            if kind == "ok":
                result: dict = {"type": "succeeded", "message": value}
            elif kind == "error":
                result = {"type": "errored", "error": {"type": "error", "error": {"type": value[0], "message": value[1]}}}
            else:
                result = {"type": "canceled" if kind == "cancelled" else "expired"}
            lines.append(json.dumps({"custom_id": cid, "result": result}))
        return 200, "\n".join(lines) + "\n", "application/binary"

    # ---- shared
    def _get(self, ident: str, api: str) -> dict:
        b = self.state.batches.get(ident)
        if b is None or b["api"] != api:
            raise _ApiError(404, f"no batch {ident}", "not_found_error")
        return b

    def _advance(self, b: dict) -> None:
        """One retrieve: a batch in progress ends on the batch_polls-th; a cancelling one is cancelled."""
        if b["results"] is not None or b["status"] == "failed":
            return
        b["polls"] += 1
        cancelling = b["status"] in ("cancelling", "canceling")
        if not cancelling and b["polls"] < self.state.batch_polls:
            b["status"] = "in_progress"
            return
        expire = False
        if not cancelling and self.state.batch_expire > 0:
            self.state.batch_expire -= 1
            expire = True
        results: dict[str, tuple[str, Any]] = {}
        for cid, req in b["requests"]:
            if cancelling:
                results[cid] = ("cancelled", None)
            elif expire:
                results[cid] = ("expired", None)
            elif self.state.batch_item_errors.get(cid, 0) > 0:
                self.state.batch_item_errors[cid] -= 1
                results[cid] = ("error", ("api_error", f"loopback: request {cid} failed inside the batch"))
            else:
                try:
                    fake = RecordedRequest(index=len(self.state._requests), api=b["api"], method="POST", path="(batch)", headers=self.rec.headers,
                                           body=req, raw=b"", started=time.monotonic())
                    if b["api"] == "anthropic":
                        fake.headers = {**self.rec.headers, "anthropic-version": self.rec.headers.get("anthropic-version", "2023-06-01")}
                        results[cid] = ("ok", self.h._anthropic(self.state, fake, req, None, False))
                    else:
                        results[cid] = ("ok", self.h._openai(self.state, fake, req, None, False))
                except _ApiError as e:
                    results[cid] = ("error", (e.kind, e.message, e.status))
        b["results"] = results
        if b["api"] == "anthropic":
            b["status"] = "ended"
            return
        b["status"] = "cancelled" if cancelling else ("expired" if expire else "completed")
        out, err = [], []
        for i, (cid, _) in enumerate(b["requests"]):
            kind, value = results[cid]
            if kind == "ok":
                out.append({"id": f"batch_req_{i}", "custom_id": cid, "response": {"status_code": 200, "request_id": f"req_{i}", "body": value}, "error": None})
            elif kind == "error" and len(value) == 3:
                err.append({"id": f"batch_req_{i}", "custom_id": cid, "response": {"status_code": value[2], "request_id": f"req_{i}",
                            "body": _error_body("openai", value[2], value[1], value[0])}, "error": None})
            else:
                code = {"error": "server_error", "expired": "batch_expired", "cancelled": "batch_cancelled"}[kind]
                msg = value[1] if kind == "error" else f"request {kind}"
                err.append({"id": f"batch_req_{i}", "custom_id": cid, "response": None, "error": {"code": code, "message": msg}})
        with self.state._lock:
            for name, rows in (("output_file_id", out), ("error_file_id", err)):
                if rows:
                    fid = f"file-lb{len(self.state.files)}"
                    self.state.files[fid] = ("batch_output", ("\n".join(json.dumps(r) for r in rows) + "\n").encode())
                    b[name] = fid


@pytest.fixture
def loopback_api() -> Iterator[LoopbackAPI]:
    """A fresh loopback OpenAI + Anthropic API server for one test (see the module docstring)."""
    server = LoopbackAPI().start()
    try:
        yield server
    finally:
        server.stop()
    if server.responder_errors:
        err = server.responder_errors[0]
        pytest.fail(f"loopback responder raised {type(err).__name__}: {err}", pytrace=False)
