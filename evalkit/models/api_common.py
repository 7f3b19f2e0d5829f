"""What the openai and anthropic backends (and the LLM judges) share.

* ``resolve_api_key``: the key from the environment variable a spec names; a missing key is a
  UserError naming the variable, never its value.
* ``redact``: removes secrets from any text before it reaches a Completion, an error or a log.
* ``ApiBackend``: the backend protocol over an async SDK client: bounded concurrency per model,
  the shared retry policy, per-request errors recorded as ``Completion(error=...)``, and
  ``BackendUnavailable`` when the first batch of requests cannot reach the server at all.
* ``post_json``: a request through an SDK client without its per-request type transforms.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Generic, Iterator, Mapping, Sequence, TypeVar

from .._util.text import redact_secrets
from ..errors import BackendUnavailable, UserError
from ..types import Completion, Message, ModelSpec
from .base import GenerationRequest, ProgressFn, Provider
from .retry import RetriesExhausted, RetryPolicy, Verdict, classify, is_unreachable, retry_async, status_of

PLACEHOLDER_KEY = "evalkit-no-key"  # for OpenAI-compatible servers that need no key (vLLM, local proxies)
_MAX_ERROR_CHARS = 500

C = TypeVar("C")


def resolve_api_key(model_name: str, api_key_env: str | None, default_env: str, base_url: str | None) -> tuple[str, str]:
    """(key, name of the variable it came from). A custom ``base_url`` without a key gets a placeholder."""
    env = api_key_env or default_env
    value = os.environ.get(env, "")
    if value:
        return value, env
    if base_url and not api_key_env:
        return PLACEHOLDER_KEY, env
    raise UserError(f"model '{model_name}': the API key environment variable {env} is not set (export {env}=... or set api_key_env)")


def fast_transport(sdk: Any, timeout_s: float, base_url: str | None = None) -> Any:
    """The SDK's aiohttp transport (``openai[aiohttp]`` / ``anthropic[aiohttp]``), or None for its default.

    The SDKs' default httpx transport costs ~4 ms of CPU per call here, which caps a judge run at a
    few hundred calls a second on one core; aiohttp costs a fraction of that. Without the extra
    installed, the default transport is used (same behaviour, slower).
    """
    cls = getattr(sdk, "DefaultAioHttpClient", None)
    if cls is None:
        return None
    if base_url and "@" in base_url.split("//", 1)[-1].split("/", 1)[0]:
        return None  # credentials in the URL (a proxy's basic auth): aiohttp refuses them beside a bearer header
    try:
        return cls(timeout=timeout_s)
    except RuntimeError:  # the SDK was installed without its aiohttp extra
        return None


async def post_json(client: Any, path: str, body: Mapping[str, Any], headers: Mapping[str, str] | None = None) -> dict[str, Any]:
    """POST ``body`` as JSON through an SDK client and return the decoded JSON reply.

    The SDK still does auth, default headers, timeouts and raises its usual exceptions (which the
    retry policy classifies); what is skipped is its type-driven transform of every request body
    and construction of response models, over half of its CPU per call. The wire format is the
    same as ``chat.completions.create`` / ``messages.create``.
    """
    options = {"headers": dict(headers)} if headers else {}
    reply = await client.post(path, body=dict(body), cast_to=dict[str, Any], options=options)
    if not isinstance(reply, dict):
        raise ResponseShapeError(f"the reply is not a JSON object ({type(reply).__name__})")
    return reply


def redact(text: str, secrets: Sequence[str]) -> str:
    return redact_secrets(text, [s for s in secrets if s != PLACEHOLDER_KEY])


def describe_failure(provider: str, exc: BaseException) -> str:
    """One line for a failed request, for a Completion's ``error`` (callers redact it)."""
    if isinstance(exc, RetriesExhausted):
        detail = str(exc.last).strip() or type(exc.last).__name__
        return f"{provider} request failed after {exc.attempts} attempts ({exc.reason}): {detail}"[:_MAX_ERROR_CHARS]
    status = status_of(exc)
    head = f"HTTP {status}" if status is not None else type(exc).__name__
    return f"{provider} request failed ({head}): {str(exc).strip()}"[:_MAX_ERROR_CHARS]


def _fatal_kind(exc: BaseException) -> str | None:
    """A failure that says the whole backend is unusable: nothing listening, or the key refused."""
    last = exc.last if isinstance(exc, RetriesExhausted) else exc
    if is_unreachable(last):
        return "unreachable"
    if status_of(last) in (401, 403):
        return "auth"
    return None


_STREAM_END = object()


@dataclass
class _StreamFailed:
    exc: BaseException


class ApiBackend(Generic[C]):
    """Backend protocol over an async SDK client. Subclasses set the class attributes and two methods.

    ``retry`` overrides the policy built from each spec's options (``max_retries``).
    """

    provider = "api"
    default_key_env = ""
    default_base_url = ""

    def __init__(self, specs: Sequence[ModelSpec], *, retry: RetryPolicy | None = None):
        if not specs:
            raise ValueError("no model specs")
        self.specs: dict[str, ModelSpec] = {s.name: s for s in specs}
        self._keys: dict[str, tuple[str, str]] = {}
        self._policies: dict[str, RetryPolicy] = {}
        for s in specs:
            if not s.model:
                raise UserError(f"model '{s.name}': backend {self.provider} needs 'model' (the API model name)")
            self._keys[s.name] = resolve_api_key(s.name, s.api_key_env, self.default_key_env, s.base_url)
            self._policies[s.name] = retry or RetryPolicy.from_options(s.options)

    @property
    def hooks(self) -> Provider:
        """The provider's hooks (its SDK's exception types)."""
        raise NotImplementedError

    def _classify(self, exc: BaseException) -> Verdict:
        """The shared policy (statuses, the transport's exception types), then the SDK's own types."""
        v = classify(exc)
        return v if v.retry else (self.hooks.classify(exc) or v)

    # -- for subclasses
    def make_client(self, spec: ModelSpec, api_key: str) -> C:
        raise NotImplementedError

    async def call_once(self, client: C, spec: ModelSpec, messages: Sequence[Message]) -> Completion:
        """One API call; raise on failure (the caller retries and records)."""
        raise NotImplementedError

    async def close_client(self, client: C) -> None:
        await client.close()  # type: ignore[attr-defined]

    # -- helpers
    def _option(self, spec: ModelSpec, key: str, default: Any) -> Any:
        v = dict(spec.options).get(key)
        return default if v is None else v

    def concurrency(self, spec: ModelSpec) -> int:
        return max(1, int(self._option(spec, "concurrency", 8)))

    def timeout_s(self, spec: ModelSpec) -> float:
        return float(self._option(spec, "timeout_s", 60.0))

    def _secrets(self) -> list[str]:
        return [k for k, _ in self._keys.values()]

    def _where(self, spec: ModelSpec, client: Any) -> str:
        return str(getattr(client, "base_url", "") or spec.base_url or self.default_base_url).rstrip("/")

    # -- the protocol
    def generate(self, requests: Sequence[GenerationRequest], progress: ProgressFn | None = None) -> list[Completion]:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.agenerate(requests, progress))
        # Called from inside an event loop (a notebook, an async caller): run ours in a thread.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, self.agenerate(requests, progress)).result()

    def close(self) -> None:
        pass  # clients live only as long as one generate() call

    def generate_stream(self, blocks: Sequence[Sequence[GenerationRequest]], progress: ProgressFn | None = None) -> Iterator[tuple[int, list[Completion]]]:
        """Every block's completions, yielded as each block completes (block index, completions in its
        order), while ``concurrency`` requests stay in flight across block boundaries: one event loop
        (in a thread) and one client per model for all the blocks, so the caller commits a finished
        block while the next requests are already out. Closing the iterator early cancels what is left.
        """
        flat = [r for b in blocks for r in b]
        owner = [bi for bi, b in enumerate(blocks) for _ in b]
        offset = [sum(len(b) for b in blocks[:bi]) for bi in range(len(blocks))]
        results: dict[int, list[Completion | None]] = {bi: [None] * len(b) for bi, b in enumerate(blocks)}
        remaining = [len(b) for b in blocks]
        ready: queue.Queue[Any] = queue.Queue()
        state: dict[str, Any] = {}

        def done(i: int, c: Completion) -> None:  # in the loop's thread
            bi = owner[i]
            results[bi][i - offset[bi]] = c
            remaining[bi] -= 1
            if remaining[bi] == 0:
                ready.put((bi, results.pop(bi)))

        def run() -> None:
            loop = asyncio.new_event_loop()
            state["loop"] = loop
            try:
                state["task"] = loop.create_task(self.agenerate(flat, progress, on_done=done))
                loop.run_until_complete(state["task"])
                ready.put(_STREAM_END)
            except BaseException as e:  # noqa: BLE001 - handed to the consumer, raised there
                ready.put(_StreamFailed(e))
            finally:
                loop.close()

        for bi, b in enumerate(blocks):
            if not b:
                yield bi, []
        if not flat:
            return
        worker = threading.Thread(target=run, name="evalkit-api-stream", daemon=True)
        worker.start()
        finished = False
        try:
            while True:
                item = ready.get()
                if item is _STREAM_END:
                    finished = True
                    return
                if isinstance(item, _StreamFailed):
                    finished = True
                    raise item.exc
                yield item[0], [c for c in item[1] if c is not None]
        finally:
            if not finished and "task" in state:  # the consumer stopped early (an error, Ctrl-C): cancel what is left
                try:
                    state["loop"].call_soon_threadsafe(state["task"].cancel)
                except RuntimeError:  # the loop has just finished on its own
                    pass
            worker.join(timeout=30)

    async def agenerate(self, requests: Sequence[GenerationRequest], progress: ProgressFn | None = None,
                        on_done: Callable[[int, Completion], None] | None = None) -> list[Completion]:
        """The async form of ``generate``: one Completion per request, in request order (``on_done(i, c)``
        is called as each finishes).
        """
        if not requests:
            return []
        # Clients are made inside the running loop: an async HTTP pool must not outlive its loop.
        clients: dict[str, C] = {}
        sems: dict[str, asyncio.Semaphore] = {}
        first_batch: dict[str, list[int]] = {}
        for i, r in enumerate(requests):
            spec = self.specs.get(r.model.name, r.model)
            if spec.name not in clients:
                if spec.name not in self._keys:
                    raise ValueError(f"request for model '{spec.name}', which this backend was not opened with")
                clients[spec.name] = self.make_client(spec, self._keys[spec.name][0])
                sems[spec.name] = asyncio.Semaphore(self.concurrency(spec))
                first_batch[spec.name] = []
            if len(first_batch[spec.name]) < self.concurrency(spec):
                first_batch[spec.name].append(i)
        batch_sets = {n: set(ix) for n, ix in first_batch.items()}
        outcomes: dict[str, dict[int, str | None]] = {n: {} for n in first_batch}
        secrets = self._secrets()

        # The first batch probes the endpoint: the other requests wait until one of it succeeds (the
        # endpoint works) or all of it is in (then a refused key or a dead server stops the run
        # before the rest is sent).
        probed = {n: asyncio.Event() for n in first_batch}

        async def one(i: int, req: GenerationRequest) -> Completion:
            spec = self.specs[req.model.name]
            client = clients[spec.name]
            if i not in batch_sets[spec.name]:
                await probed[spec.name].wait()
            async with sems[spec.name]:
                t0 = time.perf_counter()
                kind: str | None = None
                try:
                    out = await retry_async(lambda: self.call_once(client, spec, req.messages), self._policies[spec.name], classify_fn=self._classify)
                except Exception as exc:  # noqa: BLE001 - API failures are data; our own bugs re-raise
                    if not is_api_failure(exc, self.hooks):
                        raise
                    kind = _fatal_kind(exc)
                    out = Completion(text="", latency_s=time.perf_counter() - t0, error=redact(describe_failure(self.provider, exc), secrets))
            if i in batch_sets[spec.name]:
                seen = outcomes[spec.name]
                seen[i] = kind
                if kind is not None and len(seen) == len(batch_sets[spec.name]) and all(k == kind for k in seen.values()):
                    raise self._fatal_error(spec, client, kind, out.error or "")
                if kind is None or len(seen) == len(batch_sets[spec.name]):
                    probed[spec.name].set()
            if on_done is not None:
                on_done(i, out)
            if progress is not None:
                progress(1)
            return out

        tasks = [asyncio.ensure_future(one(i, r)) for i, r in enumerate(requests)]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        finally:
            for c in clients.values():
                try:
                    await self.close_client(c)
                except Exception:  # noqa: BLE001 - closing is best effort
                    pass

    def _fatal_error(self, spec: ModelSpec, client: Any, kind: str, detail: str) -> BackendUnavailable:
        where = self._where(spec, client)
        if kind == "auth":
            env = self._keys[spec.name][1]
            return BackendUnavailable(f"model '{spec.name}': the {self.provider} API at {where} rejected the API key from {env}: {detail}")
        return BackendUnavailable(f"model '{spec.name}': cannot reach the {self.provider} API at {where} (connection failed for every request of the first batch)")


def sdk_verdict(exc: BaseException, sdk: Any) -> Verdict | None:
    """A Provider's ``classify`` for the openai and anthropic SDKs, which name their exception types alike."""
    if isinstance(exc, sdk.APITimeoutError):  # before APIConnectionError: a timeout is one
        return Verdict(True, None, "timeout")
    if isinstance(exc, sdk.APIConnectionError):
        return Verdict(True, None, "connection")
    if isinstance(exc, sdk.APIResponseValidationError):
        return Verdict(True, None, "malformed_response")
    return None


class ResponseShapeError(ValueError):
    """The server answered 200 with a body that lacks what the API promises (no choices, no content)."""


def is_api_failure(exc: BaseException, hooks: Provider) -> bool:
    """SDK errors, exhausted retries and malformed responses are data (a Completion error), not bugs."""
    return isinstance(exc, (RetriesExhausted, ResponseShapeError)) or hooks.is_failure(exc)
