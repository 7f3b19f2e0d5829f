"""The anthropic backend: the Messages API through the official SDK.

System messages go to the top-level ``system`` parameter (joined with blank lines); the rest are
sent in order. Options as for the openai backend: ``concurrency``, ``timeout_s``, ``max_retries``.

Sampling: the anthropic SDK 2.x speaks API version ``2026-10-21``, which rejects ``temperature``,
``top_p`` and ``top_k`` at any value, so none is sent and outputs are whatever the model gives
(the store caches them, so a rerun does not resample). Set the option ``anthropic_version:
"2023-06-01"`` to speak the older version, which takes ``temperature`` (clamped to [0, 1]) and
``top_p``. The API has no seed. ``finish_reason`` uses the common vocabulary: ``stop`` (end_turn or
a stop sequence), ``length`` (max_tokens), else the API's own ``stop_reason``.

For structured output (LLM judges), build a client with ``anthropic_client`` and call ``tool_json``
(forced tool use: the answer is the tool call's ``input``).
"""

from __future__ import annotations

import json
import time
from typing import Any, Mapping, Sequence

import anthropic

from ..types import Completion, Message, ModelSpec
from .api_common import ApiBackend, ResponseShapeError, fast_transport, post_json, sdk_verdict
from .base import TOOL_NAME, BatchAnswer, MalformedReply, Reply, StructuredMode
from .retry import Verdict

DEFAULT_BASE_URL = "https://api.anthropic.com"
_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length"}


def anthropic_client(*, api_key: str, base_url: str | None = None, timeout_s: float = 60.0) -> anthropic.AsyncAnthropic:
    """An async client whose retries are left to ``evalkit.models.retry`` (``max_retries=0``).

    Make it inside the event loop that uses it, and ``await client.close()`` when done.
    """
    return anthropic.AsyncAnthropic(api_key=api_key, base_url=base_url or None, timeout=timeout_s, max_retries=0,
                                    http_client=fast_transport(anthropic, timeout_s, base_url))


def split_system(messages: Sequence[Message] | Sequence[Mapping[str, Any]]) -> tuple[str | None, list[dict[str, Any]]]:
    """(system text or None, the other messages as dicts): the Messages API takes system apart."""
    system: list[str] = []
    rest: list[dict[str, Any]] = []
    for m in messages:
        d = m.as_dict() if isinstance(m, Message) else dict(m)
        if d.get("role") == "system":
            system.append(str(d.get("content", "")))
        else:
            rest.append(d)
    return ("\n\n".join(system) if system else None), rest


class AnthropicBackend(ApiBackend[anthropic.AsyncAnthropic]):
    provider = "anthropic"
    default_key_env = "ANTHROPIC_API_KEY"
    default_base_url = DEFAULT_BASE_URL

    @property
    def hooks(self) -> Any:
        return PROVIDER

    def make_client(self, spec: ModelSpec, api_key: str) -> anthropic.AsyncAnthropic:
        return anthropic_client(api_key=api_key, base_url=spec.base_url, timeout_s=self.timeout_s(spec))

    async def call_once(self, client: anthropic.AsyncAnthropic, spec: ModelSpec, messages: Sequence[Message]) -> Completion:
        g = spec.generation
        system, rest = split_system(messages)
        kw: dict[str, Any] = {}
        if system is not None:
            kw["system"] = system
        if g.stop:
            kw["stop_sequences"] = list(g.stop)
        version = dict(spec.options).get("anthropic_version")
        headers = None
        if version:
            headers = {"anthropic-version": str(version)}
            if str(version) < "2026-10-21":
                kw["temperature"] = min(max(g.temperature, 0.0), 1.0)
                if g.top_p < 1.0:
                    kw["top_p"] = g.top_p
        t0 = time.perf_counter()
        data = await post_json(client, "/v1/messages", {"model": str(spec.model), "max_tokens": g.max_new_tokens, "messages": rest, **kw}, headers)
        latency = time.perf_counter() - t0
        text, _, stop, tokens_in, tokens_out = read_message(data)
        return Completion(text=text, finish_reason=_FINISH.get(stop or "", stop), tokens_in=tokens_in, tokens_out=tokens_out, latency_s=latency,
                          reasoning=read_thinking(data))


def read_thinking(data: Mapping[str, Any]) -> str | None:
    """The message's ``thinking`` blocks (extended thinking), joined: kept apart from the answer's text."""
    content = data.get("content")
    if not isinstance(content, list):
        return None
    parts = [str(b.get("thinking") or "") for b in content if isinstance(b, dict) and b.get("type") == "thinking"]
    return "\n\n".join(p for p in parts if p) or None


def read_message(data: Mapping[str, Any], tool_name: str | None = None) -> tuple[str, Any, str | None, int, int]:
    """(text, the named tool's input or None, stop reason, input tokens, output tokens) of a message's JSON."""
    content = data.get("content")
    if not isinstance(content, list):
        raise ResponseShapeError("the response has no content")
    texts: list[str] = []
    tool_input = None
    for block in content:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text":
            texts.append(str(block.get("text") or ""))
        elif block.get("type") == "tool_use" and tool_name is not None and block.get("name") == tool_name:
            tool_input = block.get("input")
    usage = data.get("usage") or {}
    return "".join(texts), tool_input, data.get("stop_reason"), int(usage.get("input_tokens") or 0), int(usage.get("output_tokens") or 0)


def structured_body(model: str, system: str, user: str, schema: Mapping[str, Any], mode: str, max_tokens: int) -> dict[str, Any]:
    """The messages body (a batch request's ``params``) of one structured request."""
    body: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "messages": [{"role": "user", "content": user}]}
    if system:
        body["system"] = system
    if mode == "tool":
        body["tools"] = [{"name": TOOL_NAME, "description": "Record the grading verdict.", "input_schema": dict(schema)}]
        body["tool_choice"] = {"type": "tool", "name": TOOL_NAME}
    return body


def structured_reply(data: Any, mode: str, system: str, user: str) -> Any:
    """A message (a direct answer, or a batch result's message) as a structured Reply."""
    try:
        text, parsed, stop, tokens_in, tokens_out = read_message(data, TOOL_NAME)
    except ResponseShapeError as e:
        raise MalformedReply(str(e)) from None
    raw = json.dumps(parsed, ensure_ascii=False) if parsed is not None else text
    return Reply(raw=raw, parsed=parsed, tokens_in=tokens_in, tokens_out=tokens_out, structured=mode,  # type: ignore[arg-type]
                 system=system, user=user, attempts=1, latency_s=0.0, finish_reason=stop)


async def structured_request(client: anthropic.AsyncAnthropic, model: str, system: str, user: str, schema: Mapping[str, Any],
                             mode: str, max_tokens: int) -> Any:
    """One structured message (no retries: the endpoint retries). ``mode``: ``tool`` (a forced tool
    call whose input schema is the verdict's) or ``prompt`` (the schema is in the system text).

    No temperature: API version 2026-10-21 (anthropic SDK 2.x) rejects sampling parameters at any
    value. Measure a judge's noise with repeats instead.
    """
    body = structured_body(model, system, user, schema, mode, max_tokens)
    data = await post_json(client, "/v1/messages", body)
    return structured_reply(data, mode, system, user)


class AnthropicProvider:
    """The Anthropic Messages API's hooks (``evalkit.models.base.Provider``)."""

    name = "anthropic"
    default_mode: StructuredMode = "tool"
    no_logprobs: str | None = "the Anthropic API returns no token log-probabilities"
    max_batch_size = 100_000

    def client(self, *, api_key: str, base_url: str | None, timeout_s: float) -> anthropic.AsyncAnthropic:
        return anthropic_client(api_key=api_key, base_url=base_url, timeout_s=timeout_s)

    def classify(self, exc: BaseException) -> Verdict | None:
        return sdk_verdict(exc, anthropic)

    def is_failure(self, exc: BaseException) -> bool:
        return isinstance(exc, anthropic.AnthropicError)

    def structured_body(self, model: str, system: str, user: str, schema: Mapping[str, Any], mode: StructuredMode, *,
                        temperature: float, max_tokens: int, schema_name: str, max_tokens_param: str, top_logprobs: int) -> dict[str, Any]:
        return structured_body(model, system, user, schema, mode, max_tokens)  # no temperature: see structured_request

    def structured_reply(self, data: Any, mode: StructuredMode, system: str, user: str, top_logprobs: int) -> Reply:
        return structured_reply(data, mode, system, user)

    async def send(self, client: anthropic.AsyncAnthropic, body: Mapping[str, Any]) -> dict[str, Any]:
        return await post_json(client, "/v1/messages", body)

    def generation_body(self, spec: ModelSpec, messages: Sequence[Message]) -> tuple[dict[str, Any], Any]:
        g = spec.generation
        system, rest = split_system(messages)
        body: dict[str, Any] = {"model": str(spec.model), "max_tokens": g.max_new_tokens, "messages": rest}
        if system is not None:
            body["system"] = system
        if g.stop:
            body["stop_sequences"] = list(g.stop)

        def parse(data: Any) -> Completion:
            text, _, stop, tin, tout = read_message(data)
            return Completion(text=text, finish_reason=_FINISH.get(stop or "", stop), tokens_in=tin, tokens_out=tout, reasoning=read_thinking(data))

        return body, parse

    async def batch_submit(self, client: anthropic.AsyncAnthropic, rows: Mapping[str, Mapping[str, Any]]) -> tuple[str, str]:
        b = await client.messages.batches.create(requests=[{"custom_id": c, "params": dict(body)} for c, body in rows.items()])  # type: ignore[typeddict-item]
        return b.id, str(b.processing_status)

    async def batch_poll(self, client: anthropic.AsyncAnthropic, bid: str) -> tuple[str, bool, dict[str, int]]:
        b = await client.messages.batches.retrieve(bid)
        rc = b.request_counts
        counts = {"processing": rc.processing, "succeeded": rc.succeeded, "errored": rc.errored, "canceled": rc.canceled, "expired": rc.expired}
        return str(b.processing_status), b.processing_status == "ended", counts

    async def batch_results(self, client: anthropic.AsyncAnthropic, bid: str) -> dict[str, BatchAnswer]:
        out: dict[str, BatchAnswer] = {}
        async for r in await client.messages.batches.results(bid):
            kind = r.result.type
            if kind == "succeeded":
                out[r.custom_id] = ("ok", r.result.message.model_dump(mode="json"))  # type: ignore[union-attr]
            elif kind == "errored":
                err = getattr(r.result.error, "error", None)  # type: ignore[union-attr]
                out[r.custom_id] = ("error", f"{getattr(err, 'type', 'error')}: {getattr(err, 'message', '')}")
            else:
                out[r.custom_id] = ("expired" if kind == "expired" else "cancelled", "")
        return out

    def batch_status(self, *, api_key: str, base_url: str | None, bid: str) -> tuple[str, dict[str, Any]]:
        b = anthropic.Anthropic(api_key=api_key, base_url=base_url, max_retries=2).messages.batches.retrieve(bid)
        return str(b.processing_status), b.request_counts.model_dump()

    def batch_cancel(self, *, api_key: str, base_url: str | None, bid: str) -> str:
        return str(anthropic.Anthropic(api_key=api_key, base_url=base_url, max_retries=2).messages.batches.cancel(bid).processing_status)


PROVIDER = AnthropicProvider()
