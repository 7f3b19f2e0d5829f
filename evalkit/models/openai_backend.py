"""The openai backend: chat completions through the official SDK, for OpenAI models (``ft:`` fine-tunes
included, names passed unchanged) and any OpenAI-compatible server (vLLM, proxies) via ``base_url``.

Options read from ``ModelSpec.options``: ``concurrency`` (requests in flight, default 8),
``timeout_s`` (per request, default 60), ``max_retries`` (after the first try, default 4),
``max_tokens_param`` (``max_tokens`` by default; ``max_completion_tokens`` for servers and newer
models that want it). Greedy when temperature is 0 (``seed`` is sent too, for what the API can do).

``PROVIDER`` is the OpenAI API's hooks (``models.base.Provider``): structured requests for judges,
typed retry classification, the batch API (``/v1/files`` + ``/v1/batches``). vLLM servers speak it too.
"""

from __future__ import annotations

import json
import time
from typing import Any, Mapping, Sequence

import openai

from ..errors import BackendUnavailable
from ..types import Completion, Message, ModelSpec, TokenLogprob
from .api_common import ApiBackend, ResponseShapeError, fast_transport, post_json, sdk_verdict
from .base import BatchAnswer, MalformedReply, Reply, StructuredMode
from .retry import Verdict

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

    @property
    def hooks(self) -> Any:
        return PROVIDER

    def make_client(self, spec: ModelSpec, api_key: str) -> openai.AsyncOpenAI:
        return openai_client(api_key=api_key, base_url=spec.base_url, timeout_s=self.timeout_s(spec))

    async def call_once(self, client: openai.AsyncOpenAI, spec: ModelSpec, messages: Sequence[Message]) -> Completion:
        kw = _sampling_kwargs(spec)
        body = {"model": str(spec.model), "messages": [m.as_dict() for m in messages], **kw.pop("extra_body", {}), **kw}
        t0 = time.perf_counter()
        data = await post_json(client, "/chat/completions", body)
        latency = time.perf_counter() - t0
        text, finish, tokens_in, tokens_out = read_chat_completion(data)
        return Completion(text=text or "", finish_reason=finish, tokens_in=tokens_in, tokens_out=tokens_out, latency_s=latency,
                          reasoning=read_reasoning(data))


def read_reasoning(data: Mapping[str, Any]) -> str | None:
    """A reasoning model's thinking, as OpenAI-compatible servers return it apart from the answer:
    ``message.reasoning_content`` (vLLM's reasoning parsers, DeepSeek) or ``message.reasoning``.
    """
    try:
        msg = (data.get("choices") or [{}])[0].get("message") or {}
    except (AttributeError, IndexError, TypeError):
        return None
    value = msg.get("reasoning_content") or msg.get("reasoning") if isinstance(msg, dict) else None
    return value if isinstance(value, str) and value else None


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


def structured_body(model: str, system: str, user: str, schema: Mapping[str, Any], mode: str, temperature: float, max_tokens: int,
                    schema_name: str, max_tokens_param: str = "max_tokens", top_logprobs: int = 0) -> dict[str, Any]:
    """The chat-completions body of one structured request (sent directly, or as a line of a batch file)."""
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
    body: dict[str, Any] = {"model": model, "messages": messages, "temperature": temperature, max_tokens_param: max_tokens}
    if mode == "json_schema":
        body["response_format"] = {"type": "json_schema", "json_schema": {"name": schema_name, "schema": dict(schema), "strict": True}}
    elif mode == "json_object":
        body["response_format"] = {"type": "json_object"}
    if top_logprobs:
        body["logprobs"] = True
        body["top_logprobs"] = top_logprobs
    return body


def structured_reply(data: Any, mode: str, system: str, user: str, top_logprobs: int = 0) -> Any:
    """A chat completion (a direct answer, or a batch result's body) as a structured Reply."""
    try:
        text, finish, tokens_in, tokens_out = read_chat_completion(data)
    except ResponseShapeError as e:
        raise MalformedReply(str(e)) from None
    return Reply(raw=text or "", parsed=None, tokens_in=tokens_in, tokens_out=tokens_out, structured=mode,  # type: ignore[arg-type]
                 system=system, user=user, attempts=1, latency_s=0.0, finish_reason=finish,
                 logprobs=read_logprobs(data) if top_logprobs else None)


async def structured_request(client: openai.AsyncOpenAI, model: str, system: str, user: str, schema: Mapping[str, Any],
                             mode: str, temperature: float, max_tokens: int, schema_name: str, max_tokens_param: str = "max_tokens", top_logprobs: int = 0) -> Any:
    """One structured chat completion (no retries: the structured endpoint retries). ``mode``: ``json_schema`` (response_format with the schema, strict), ``json_object``,
    or ``prompt`` (the schema is in the system text already).
    """
    body = structured_body(model, system, user, schema, mode, temperature, max_tokens, schema_name, max_tokens_param, top_logprobs)
    data = await post_json(client, "/chat/completions", body)
    return structured_reply(data, mode, system, user, top_logprobs)


def read_logprobs(data: Mapping[str, Any]) -> tuple[TokenLogprob, ...] | None:
    """``choices[0].logprobs.content`` as TokenLogprobs; None when the server sent none (or a shape it should not)."""
    try:
        content = ((data.get("choices") or [{}])[0].get("logprobs") or {}).get("content")
        if not isinstance(content, list) or not content:
            return None
        return tuple(
            TokenLogprob(str(t["token"]), float(t["logprob"]), tuple((str(a["token"]), float(a["logprob"])) for a in (t.get("top_logprobs") or [])))
            for t in content
        )
    except (AttributeError, KeyError, TypeError, ValueError, IndexError):
        return None



class OpenAIProvider:
    """The OpenAI API's hooks (``evalkit.models.base.Provider``), for OpenAI and every compatible server."""

    name = "openai"
    default_mode: StructuredMode = "json_schema"
    no_logprobs: str | None = None
    max_batch_size = 50_000

    def client(self, *, api_key: str, base_url: str | None, timeout_s: float) -> openai.AsyncOpenAI:
        return openai_client(api_key=api_key, base_url=base_url, timeout_s=timeout_s)

    def classify(self, exc: BaseException) -> Verdict | None:
        return sdk_verdict(exc, openai)

    def is_failure(self, exc: BaseException) -> bool:
        return isinstance(exc, openai.OpenAIError)

    def structured_body(self, model: str, system: str, user: str, schema: Mapping[str, Any], mode: StructuredMode, *,
                        temperature: float, max_tokens: int, schema_name: str, max_tokens_param: str, top_logprobs: int) -> dict[str, Any]:
        return structured_body(model, system, user, schema, mode, temperature, max_tokens, schema_name, max_tokens_param, top_logprobs)

    def structured_reply(self, data: Any, mode: StructuredMode, system: str, user: str, top_logprobs: int) -> Reply:
        return structured_reply(data, mode, system, user, top_logprobs)

    async def send(self, client: openai.AsyncOpenAI, body: Mapping[str, Any]) -> dict[str, Any]:
        return await post_json(client, "/chat/completions", body)

    def generation_body(self, spec: ModelSpec, messages: Sequence[Message]) -> tuple[dict[str, Any], Any]:
        kw = _sampling_kwargs(spec)
        body = {"model": str(spec.model), "messages": [m.as_dict() for m in messages], **kw.pop("extra_body", {}), **kw}

        def parse(data: Any) -> Completion:
            text, finish, tin, tout = read_chat_completion(data)
            return Completion(text=text or "", finish_reason=finish, tokens_in=tin, tokens_out=tout, reasoning=read_reasoning(data))

        return body, parse

    async def batch_submit(self, client: openai.AsyncOpenAI, rows: Mapping[str, Mapping[str, Any]]) -> tuple[str, str]:
        data = "".join(json.dumps({"custom_id": c, "method": "POST", "url": "/v1/chat/completions", "body": b}, ensure_ascii=False) + "\n"
                       for c, b in rows.items()).encode()
        f = await client.files.create(file=("evalkit-batch.jsonl", data, "application/jsonl"), purpose="batch")
        b = await client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
        return b.id, str(b.status)

    async def batch_poll(self, client: openai.AsyncOpenAI, bid: str) -> tuple[str, bool, dict[str, int]]:
        b = await client.batches.retrieve(bid)
        rc = b.request_counts
        counts = {"total": rc.total, "completed": rc.completed, "failed": rc.failed} if rc is not None else {}
        if b.status == "failed":
            why = "; ".join(str(getattr(e, "message", e)) for e in ((b.errors.data or []) if b.errors else []))[:300]
            raise BackendUnavailable(f"batch {bid} failed validation: {why or 'no reason given'}")
        return str(b.status), b.status in ("completed", "expired", "cancelled"), counts

    async def batch_results(self, client: openai.AsyncOpenAI, bid: str) -> dict[str, BatchAnswer]:
        out: dict[str, BatchAnswer] = {}
        b = await client.batches.retrieve(bid)
        for fid in (b.output_file_id, b.error_file_id):
            if not fid:
                continue
            text = (await client.files.content(fid)).text
            for line in text.splitlines():
                if not line.strip():
                    continue
                row = json.loads(line)
                resp, err = row.get("response"), row.get("error")
                if resp and resp.get("status_code") == 200:
                    out[row["custom_id"]] = ("ok", resp.get("body"))
                elif resp:
                    e = (resp.get("body") or {}).get("error") or {}
                    out[row["custom_id"]] = ("error", f"HTTP {resp.get('status_code')}: {e.get('message', '')}")
                else:
                    code = (err or {}).get("code", "error")
                    kind = "expired" if code == "batch_expired" else "cancelled" if code == "batch_cancelled" else "error"
                    out[row["custom_id"]] = (kind, (err or {}).get("message", ""))
        return out

    def batch_status(self, *, api_key: str, base_url: str | None, bid: str) -> tuple[str, dict[str, Any]]:
        b = openai.OpenAI(api_key=api_key, base_url=base_url, max_retries=2).batches.retrieve(bid)
        return str(b.status), b.request_counts.model_dump() if b.request_counts else {}

    def batch_cancel(self, *, api_key: str, base_url: str | None, bid: str) -> str:
        return str(openai.OpenAI(api_key=api_key, base_url=base_url, max_retries=2).batches.cancel(bid).status)


PROVIDER = OpenAIProvider()
