"""The openai backend: chat completions through the official SDK, for OpenAI models (``ft:`` fine-tunes
included, names passed unchanged) and any OpenAI-compatible server (vLLM, proxies) via ``base_url``.

Options read from ``ModelSpec.options``: ``concurrency`` (requests in flight, default 8),
``timeout_s`` (per request, default 60), ``max_retries`` (after the first try, default 4),
``max_tokens_param`` (``max_tokens`` by default; ``max_completion_tokens`` for servers and newer
models that want it). Greedy when temperature is 0 (``seed`` is sent too, for what the API can do).

For structured output (LLM judges), build a client with ``openai_client`` and call ``chat_json``.
"""

from __future__ import annotations

import time
from typing import Any, Mapping, Sequence

import openai

from ..types import Completion, Message, ModelSpec
from .api_common import ApiBackend, InvalidOutput, JsonResult, ResponseShapeError, check_json, fast_transport, post_json
from .retry import RetryPolicy, retry_async

DEFAULT_BASE_URL = "https://api.openai.com/v1"


def openai_client(*, api_key: str, base_url: str | None = None, timeout_s: float = 60.0) -> openai.AsyncOpenAI:
    """An async client whose retries are left to ``evalkit.models.retry`` (``max_retries=0``).

    Make it inside the event loop that uses it, and ``await client.close()`` when done.
    """
    return openai.AsyncOpenAI(api_key=api_key, base_url=base_url or None, timeout=timeout_s, max_retries=0,
                              http_client=fast_transport(openai, timeout_s, base_url))


def _sampling_kwargs(spec: ModelSpec) -> dict[str, Any]:
    g = spec.generation
    kw: dict[str, Any] = {"temperature": g.temperature, "seed": g.seed}
    if g.top_p != 1.0:
        kw["top_p"] = g.top_p
    if g.stop:
        kw["stop"] = list(g.stop)
    param = str(dict(spec.options).get("max_tokens_param") or "max_tokens")
    if param in ("max_tokens", "max_completion_tokens"):
        kw[param] = g.max_new_tokens
    else:
        kw["extra_body"] = {param: g.max_new_tokens}
    return kw


class OpenAIBackend(ApiBackend[openai.AsyncOpenAI]):
    provider = "openai"
    default_key_env = "OPENAI_API_KEY"
    default_base_url = DEFAULT_BASE_URL

    def make_client(self, spec: ModelSpec, api_key: str) -> openai.AsyncOpenAI:
        return openai_client(api_key=api_key, base_url=spec.base_url, timeout_s=self.timeout_s(spec))

    async def call_once(self, client: openai.AsyncOpenAI, spec: ModelSpec, messages: Sequence[Message]) -> Completion:
        kw = _sampling_kwargs(spec)
        body = {"model": str(spec.model), "messages": [m.as_dict() for m in messages], **kw.pop("extra_body", {}), **kw}
        t0 = time.perf_counter()
        data = await post_json(client, "/chat/completions", body)
        latency = time.perf_counter() - t0
        text, finish, tokens_in, tokens_out = read_chat_completion(data)
        return Completion(text=text or "", finish_reason=finish, tokens_in=tokens_in, tokens_out=tokens_out, latency_s=latency)


def read_chat_completion(data: Mapping[str, Any]) -> tuple[str | None, str | None, int, int]:
    """(text, finish reason, prompt tokens, completion tokens) of a chat completion's JSON.

    A refusal comes back as ``(refusal) ...`` text; a reply without choices is a ResponseShapeError
    (retried as a malformed response).
    """
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise ResponseShapeError("the response has no choices")
    choice = choices[0]
    msg = choice.get("message") or {}
    text = msg.get("content") if isinstance(msg, dict) else None
    if text is None and isinstance(msg, dict) and msg.get("refusal"):
        text = f"(refusal) {msg['refusal']}"
    usage = data.get("usage") or {}
    return (
        text if isinstance(text, str) or text is None else str(text),
        choice.get("finish_reason"),
        int(usage.get("prompt_tokens") or 0),
        int(usage.get("completion_tokens") or 0),
    )


async def chat_json(
    client: openai.AsyncOpenAI,
    *,
    model: str,
    messages: Sequence[Mapping[str, Any]],
    schema: Mapping[str, Any],
    name: str = "verdict",
    strict: bool = True,
    temperature: float = 0.0,
    max_tokens: int = 512,
    seed: int | None = 0,
    max_tokens_param: str = "max_tokens",
    policy: RetryPolicy = RetryPolicy(),
    invalid_output_retries: int = 1,
) -> JsonResult:
    """Ask for JSON that follows ``schema`` (``response_format`` json_schema) and validate it.

    Transport failures are retried by ``policy`` (raising ``RetriesExhausted`` when they persist;
    other API errors raise as the SDK's exceptions). An answer that does not parse or does not
    match the schema is asked again ``invalid_output_retries`` times, then ``InvalidOutput`` is
    raised: record it as a judge error, never as a score.
    """
    kw: dict[str, Any] = {
        "model": model,
        "messages": [dict(m) for m in messages],
        "temperature": temperature,
        "response_format": {"type": "json_schema", "json_schema": {"name": name, "schema": dict(schema), "strict": strict}},
    }
    if seed is not None:
        kw["seed"] = seed
    if max_tokens_param in ("max_tokens", "max_completion_tokens"):
        kw[max_tokens_param] = max_tokens
    else:
        kw["extra_body"] = {max_tokens_param: max_tokens}
    raw, problem, tokens_in, tokens_out, latency = "", "", 0, 0, 0.0
    for attempt in range(1, invalid_output_retries + 2):
        t0 = time.perf_counter()
        resp = await retry_async(lambda: client.chat.completions.create(**kw), policy)
        latency += time.perf_counter() - t0
        if resp.usage is not None:
            tokens_in += resp.usage.prompt_tokens or 0
            tokens_out += resp.usage.completion_tokens or 0
        raw = (resp.choices[0].message.content or "") if resp.choices else ""
        data, problem_or_none = check_json(raw, schema)
        if problem_or_none is None:
            return JsonResult(data=data, raw=raw, tokens_in=tokens_in, tokens_out=tokens_out, latency_s=latency, attempts=attempt)
        problem = problem_or_none
    raise InvalidOutput(f"{problem} (after {invalid_output_retries + 1} tries)", raw=raw, attempts=invalid_output_retries + 1)
