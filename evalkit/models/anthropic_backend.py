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
from .api_common import ApiBackend, InvalidOutput, JsonResult, ResponseShapeError, check_json
from .retry import RetryPolicy, retry_async

DEFAULT_BASE_URL = "https://api.anthropic.com"
_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length"}


def anthropic_client(*, api_key: str, base_url: str | None = None, timeout_s: float = 60.0) -> anthropic.AsyncAnthropic:
    """An async client whose retries are left to ``evalkit.models.retry`` (``max_retries=0``).

    Make it inside the event loop that uses it, and ``await client.close()`` when done.
    """
    return anthropic.AsyncAnthropic(api_key=api_key, base_url=base_url or None, timeout=timeout_s, max_retries=0)


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
        if version:
            kw["extra_headers"] = {"anthropic-version": str(version)}
            if str(version) < "2026-10-21":
                sampling: dict[str, Any] = {"temperature": min(max(g.temperature, 0.0), 1.0)}
                if g.top_p < 1.0:
                    sampling["top_p"] = g.top_p
                kw["extra_body"] = sampling
        t0 = time.perf_counter()
        resp = await client.messages.create(model=str(spec.model), max_tokens=g.max_new_tokens, messages=rest, **kw)  # type: ignore[arg-type]
        latency = time.perf_counter() - t0
        if getattr(resp, "content", None) is None:
            raise ResponseShapeError("the response has no content")
        text = "".join(getattr(b, "text", "") for b in resp.content if getattr(b, "type", "") == "text")
        usage = resp.usage
        return Completion(
            text=text,
            finish_reason=_FINISH.get(resp.stop_reason or "", resp.stop_reason),
            tokens_in=int(getattr(usage, "input_tokens", 0) or 0),
            tokens_out=int(getattr(usage, "output_tokens", 0) or 0),
            latency_s=latency,
        )


async def tool_json(
    client: anthropic.AsyncAnthropic,
    *,
    model: str,
    messages: Sequence[Mapping[str, Any]],
    schema: Mapping[str, Any],
    system: str | None = None,
    tool_name: str = "verdict",
    tool_description: str = "Record the verdict.",
    max_tokens: int = 512,
    policy: RetryPolicy = RetryPolicy(),
    invalid_output_retries: int = 1,
) -> JsonResult:
    """Force a tool call whose ``input_schema`` is ``schema``; return the validated ``input``.

    System messages inside ``messages`` are moved to ``system`` (joined after the ``system`` argument).
    No sampling parameters are sent (API version 2026-10-21 rejects them).
    Retries and errors as ``openai_backend.chat_json``: ``RetriesExhausted`` for transport failures
    that persist, ``InvalidOutput`` when the answer never matches the schema (or no tool was called).
    """
    sys_in, rest = split_system(messages)
    system_text = "\n\n".join(s for s in (system, sys_in) if s) or None
    kw: dict[str, Any] = {
        "model": model,
        "max_tokens": max_tokens,
        "messages": rest,
        "tools": [{"name": tool_name, "description": tool_description, "input_schema": dict(schema)}],
        "tool_choice": {"type": "tool", "name": tool_name},
    }
    if system_text:
        kw["system"] = system_text
    raw, problem, tokens_in, tokens_out, latency = "", "", 0, 0, 0.0
    for attempt in range(1, invalid_output_retries + 2):
        t0 = time.perf_counter()
        resp = await retry_async(lambda: client.messages.create(**kw), policy)
        latency += time.perf_counter() - t0
        tokens_in += resp.usage.input_tokens or 0
        tokens_out += resp.usage.output_tokens or 0
        block = next((b for b in resp.content if getattr(b, "type", "") == "tool_use" and getattr(b, "name", "") == tool_name), None)
        if block is None:
            raw = "".join(getattr(b, "text", "") for b in resp.content)
            problem = f"the model did not call the tool '{tool_name}'"
            continue
        raw = json.dumps(block.input)
        data, problem_or_none = check_json(raw, schema)
        if problem_or_none is None:
            return JsonResult(data=data, raw=raw, tokens_in=tokens_in, tokens_out=tokens_out, latency_s=latency, attempts=attempt)
        problem = problem_or_none
    raise InvalidOutput(f"{problem} (after {invalid_output_retries + 1} tries)", raw=raw, attempts=invalid_output_retries + 1)
