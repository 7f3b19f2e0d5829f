"""Provider batch APIs: the same requests at half the price, answered within hours, resumable.

A model entry with ``batch:`` (``openai`` or ``anthropic``) gets a :class:`BatchingEndpoint`: the
structured requests a judge stage makes at once are collected, written as one batch (OpenAI: a JSONL
file uploaded with ``files.create(purpose="batch")`` and ``batches.create``; Anthropic:
``messages.batches.create``), polled, and each answer is read back through the same parser as a
direct call, so the judge stage validates and caches it exactly as it would a direct answer.

Resumable by construction: the batch id and the ``custom_id`` of every request it carries (the
judgment's cache key) are written to the store *before* waiting. A run killed while a batch is in
flight finds it again on rerun (:meth:`Store.open_batches_for`) and goes on polling it: the same
requests are never submitted twice. Requests that errored, expired or were cancelled inside a batch
are sent again in a follow-up batch (or directly, ``fallback: direct``) up to the endpoint's
``max_retries``, then recorded as errors, never as scores.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from .._util.text import redact_url
from ..errors import BackendUnavailable
from .base import CallFailed, Reply, schema_instruction
from .registry import backend_info, provider
from .structured import EndpointModel, StructuredEndpoint

#: the batch discount both providers give (applied to the cost table when prices are configured)
BATCH_DISCOUNT = 0.5


@dataclass(frozen=True)
class BatchOptions:
    """eval.yaml's ``batch:`` on a model entry (``true`` = these defaults)."""

    size: int = 10_000  # requests per batch
    poll_s: float = 30.0  # seconds between polls
    max_wait_h: float = 24.0  # give up waiting (the batch stays on record; a rerun resumes it)
    max_batches: int = 20  # batches one run submits per endpoint (first round and follow-ups)
    fallback: str = "batch"  # batch | direct: how requests that failed inside a batch are retried


@dataclass
class BatchRecord:
    """One batch as summary.json reports it (``batches``)."""

    id: str
    provider: str
    requests: int
    succeeded: int = 0
    errored: int = 0
    resumed: bool = False
    wall_s: float = 0.0
    status: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "provider": self.provider, "requests": self.requests, "succeeded": self.succeeded, "errored": self.errored,
                "resumed": self.resumed, "status": self.status, "wall_s": round(self.wall_s, 3)}


@dataclass
class _Pending:
    custom_id: str
    body: dict[str, Any]
    system: str
    user: str
    mode: str
    top_logprobs: int
    future: asyncio.Future
    attempts: int = 0
    parse: Callable[[Any], Any] | None = None  # a generation's answer -> Completion (judgments: the structured parser)


def endpoint_label(jm: EndpointModel) -> str:
    """What the store keys batches by: provider, model, server (no credentials)."""
    return f"{jm.backend}:{jm.model}@{redact_url(jm.base_url) if jm.base_url else 'default'}"


class BatchingEndpoint(StructuredEndpoint):
    """A :class:`StructuredEndpoint` whose keyed requests go through the provider's batch API."""

    def __init__(self, jm: EndpointModel, options: BatchOptions, store: Any, structured: str = "auto") -> None:
        super().__init__(jm, structured)
        self.options = options
        self.store = store
        self.records: list[BatchRecord] = []
        self._queue: list[_Pending] = []
        self._drainer: asyncio.Future | None = None
        self._submitted = 0
        self.progress: Any = None  # a callable(done, total, label) the judge stage may set

    async def complete(self, system: str, user: str, schema: Mapping[str, Any], *, temperature: float, max_tokens: int, schema_name: str,
                       model: EndpointModel | None = None, top_logprobs: int = 0, request_id: str | None = None) -> Reply:
        if request_id is None:
            return await super().complete(system, user, schema, temperature=temperature, max_tokens=max_tokens, schema_name=schema_name,
                                          model=model, top_logprobs=top_logprobs)
        self._open()
        jm = model or self.jm
        mode = self.mode
        sys_text = system + (schema_instruction(schema) if mode in ("json_object", "prompt") else "")
        top = top_logprobs if self.no_logprobs is None else 0
        body = self.hooks.structured_body(jm.model, sys_text, user, schema, mode, temperature=temperature, max_tokens=max_tokens,
                                          schema_name=schema_name, max_tokens_param=jm.max_tokens_param, top_logprobs=top)
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        p = _Pending(_custom_id(request_id), body, sys_text, user, mode, top, fut)
        start = time.perf_counter()
        direct = lambda: super(BatchingEndpoint, self).complete(system, user, schema, temperature=temperature, max_tokens=max_tokens,  # noqa: E731
                                                                  schema_name=schema_name, model=model, top_logprobs=top_logprobs)
        outcome = await self._through_batches(p, jm.max_retries, direct)
        outcome.latency_s = time.perf_counter() - start
        outcome.attempts = p.attempts
        return outcome

    async def _through_batches(self, p: _Pending, max_retries: int, direct: Callable[[], Any] | None) -> Any:
        """Queue ``p`` for the next batch and return its parsed answer; a request that failed inside a
        batch goes into a follow-up batch (or ``direct()``, ``fallback: direct``) up to ``max_retries``.
        """
        while True:
            self._queue.append(p)
            if self._drainer is None or self._drainer.done():
                self._drainer = asyncio.ensure_future(self._drain())
            outcome = await p.future
            if not isinstance(outcome, str):
                return outcome
            # errored / expired / cancelled inside the batch: again, up to max_retries
            if p.attempts > max_retries or self._submitted >= self.options.max_batches:
                self.stats.gave_up += 1
                raise CallFailed(f"failed inside {p.attempts} batch(es); last: {outcome}", p.attempts)
            self.stats.retries += 1
            reason = "batch_" + outcome.split(":")[0]
            self.stats.retry_reasons[reason] = self.stats.retry_reasons.get(reason, 0) + 1
            if self.options.fallback == "direct" and direct is not None:
                return await direct()
            p.future = asyncio.get_running_loop().create_future()

    async def generate_batched(self, items: Sequence[tuple[str, dict[str, Any], Callable[[Any], Any]]], max_retries: int) -> list[Any]:
        """Generations through batches: ``(custom_id, body, parse)`` each; answers (parsed) or CallFailed, in order."""
        self._open()
        loop = asyncio.get_running_loop()
        ps = [_Pending(_custom_id(cid), body, "", "", "", 0, loop.create_future(), parse=parse) for cid, body, parse in items]

        async def one(p: _Pending) -> Any:
            try:
                return await self._through_batches(p, max_retries, None)
            except CallFailed as e:
                return e

        return list(await asyncio.gather(*(one(p) for p in ps)))

    async def _drain(self) -> None:
        await asyncio.sleep(0.05)  # every request of this round joins the batch
        while self._queue:
            todo, self._queue = self._queue, []
            # first attempts may already be in a recorded batch (a killed run's): wait for that one instead;
            # a request sent again after failing inside a batch always goes into a new one
            known = self.store.open_batches_for(endpoint_label(self.jm), [p.custom_id for p in todo if p.attempts == 0])
            by_batch: dict[str, list[_Pending]] = {}
            fresh: list[_Pending] = []
            for p in todo:
                bid = known.get(p.custom_id) if p.attempts == 0 else None
                p.attempts += 1
                (by_batch.setdefault(bid, []) if bid else fresh).append(p)
            waits = [self._wait(bid, ps, resumed=True) for bid, ps in by_batch.items()]
            size = max(1, min(self.options.size, self.hooks.max_batch_size))
            for i in range(0, len(fresh), size):
                chunk = fresh[i : i + size]
                try:
                    bid = await self._submit(chunk)
                except BackendUnavailable as e:
                    for p in chunk:
                        if not p.future.done():
                            p.future.set_exception(e)
                    continue
                waits.append(self._wait(bid, chunk, resumed=False))
            results = await asyncio.gather(*waits, return_exceptions=True)
            for r in results:
                if isinstance(r, BaseException) and not isinstance(r, Exception):
                    raise r

    async def _submit(self, chunk: list[_Pending]) -> str:
        """Create the batch and record it (id + custom_ids) in the store before anything waits on it."""
        dedup: dict[str, _Pending] = {}
        for p in chunk:
            dedup.setdefault(p.custom_id, p)
        try:
            bid, status = await self.hooks.batch_submit(self._client, {c: p.body for c, p in dedup.items()})
        except Exception as e:  # noqa: BLE001 - the provider refused the batch: one line for the user
            raise BackendUnavailable(f"{self.jm.label}: the provider refused the batch of {len(dedup)} request(s): {type(e).__name__}: "
                                     f"{' '.join(str(e).split())[:300]}") from None
        self._submitted += 1
        self.stats.requests += len(dedup)
        self.store.put_batch(bid, provider=self.jm.backend, endpoint=endpoint_label(self.jm), base_url=redact_url(self.jm.base_url) if self.jm.base_url else None,
                             api_key_env=self.jm.api_key_env, custom_ids=list(dedup), status=str(status))
        return bid

    async def _wait(self, bid: str, ps: list[_Pending], *, resumed: bool) -> None:
        """Poll until the batch ends, then hand every waiting request its answer or its error."""
        t0 = time.perf_counter()
        rec = BatchRecord(bid, self.jm.backend, len({p.custom_id for p in ps}), resumed=resumed)
        self.records.append(rec)
        deadline = time.monotonic() + self.options.max_wait_h * 3600
        try:
            while True:
                status, ended, counts = await self._poll(bid)
                rec.status = status
                self.store.update_batch(bid, status, counts)
                if self.progress:
                    self.progress(bid, counts, time.perf_counter() - t0)
                if ended:
                    break
                if time.monotonic() > deadline:
                    raise BackendUnavailable(f"batch {bid} did not end within max_wait_h={self.options.max_wait_h:g}; it stays on record: "
                                             "rerun to go on waiting, or `evalkit batches cancel`")
                await asyncio.sleep(self.options.poll_s)
            answers = await self._results(bid, status)
        except BackendUnavailable as e:
            for p in ps:
                if not p.future.done():
                    p.future.set_exception(e)
            return
        except Exception as e:  # noqa: BLE001 - a poll that failed for good: these requests' error
            err = f"error: batch {bid}: {type(e).__name__}: {' '.join(str(e).split())[:300]}"  # "error": the retry reason counted
            for p in ps:
                if not p.future.done():
                    p.future.set_result(err)
            return
        outcomes: dict[str, str] = {}
        for p in ps:
            kind, value = answers.get(p.custom_id, ("expired" if status == "expired" else "cancelled" if status.startswith("cancel") else "error",
                                                    "no result for this request in the batch"))
            result: Any
            if kind == "ok":
                try:
                    if p.parse is not None:
                        result = p.parse(value)
                    else:
                        result = self.hooks.structured_reply(value, p.mode, p.system, p.user, p.top_logprobs)  # type: ignore[arg-type]
                except Exception as e:  # noqa: BLE001 - a body we cannot read: this request's error, sent again
                    kind, result = "error", f"malformed answer: {e}"
            else:
                result = f"{kind}: {value}" if value else kind
            outcomes[p.custom_id] = kind
            if not p.future.done():
                p.future.set_result(result)
        rec.succeeded = sum(1 for o in outcomes.values() if o == "ok")
        rec.errored = len(outcomes) - rec.succeeded
        rec.wall_s = time.perf_counter() - t0
        self.store.update_batch(bid, status, {"succeeded": rec.succeeded, "errored": rec.errored}, ended=True, outcomes=outcomes)

    async def _poll(self, bid: str) -> tuple[str, bool, dict[str, int]]:
        try:
            return await self.hooks.batch_poll(self._client, bid)
        except BackendUnavailable as e:
            raise BackendUnavailable(f"{self.jm.label}: {e}") from None

    async def _results(self, bid: str, status: str) -> dict[str, tuple[str, Any]]:
        return await self.hooks.batch_results(self._client, bid)


def _custom_id(key: str) -> str:
    """A provider-safe custom_id (Anthropic: 1-64 of letters, digits, _ and -) for a cache key."""
    import re

    if re.fullmatch(r"[A-Za-z0-9_-]{1,64}", key):
        return key
    import hashlib

    return hashlib.sha256(key.encode()).hexdigest()[:64]


@dataclass
class BatchClient:
    """The provider calls `evalkit batches status / cancel` make for one stored batch."""

    provider: str
    base_url: str | None
    api_key_env: str | None

    def _key(self) -> str:
        import os

        return os.environ.get(self.api_key_env or "") or "no-key-needed"

    def retrieve(self, bid: str) -> tuple[str, dict[str, Any]]:
        return provider(self.provider).batch_status(api_key=self._key(), base_url=self.base_url, bid=bid)

    def cancel(self, bid: str) -> str:
        return provider(self.provider).batch_cancel(api_key=self._key(), base_url=self.base_url, bid=bid)


def batch_generate(specs: Sequence[Any], requests: Sequence[Any], store: Any, progress: Callable[[int], None] | None = None,
                   records: list[dict[str, Any]] | None = None) -> list[Any]:
    """API candidates' generations through the provider's batch API (``batch:`` on a model entry).

    ``custom_id`` = the generation's cache key, so a run killed while waiting resumes the same batch.
    Returns one Completion per request, in order; a request that failed in every batch is a
    Completion with its error (retried on the next run), never an answer.
    """

    from ..types import Completion

    spec = specs[0]
    opts = dict(spec.options)
    raw = opts.get("batch")
    options = BatchOptions(**raw) if isinstance(raw, dict) else BatchOptions()
    info = backend_info(spec.backend)
    from .api_common import resolve_api_key

    _, key_env = resolve_api_key(spec.name, spec.api_key_env, info.key_env or "", spec.base_url)  # the direct path's check
    retries = opts.get("max_retries")
    assert info.wire is not None and info.batch_api, f"{spec.backend} has no batch API"  # config validation refuses it earlier
    hooks = provider(info.wire)
    jm = EndpointModel(backend=info.wire, kind=spec.backend, model=str(spec.model), base_url=spec.base_url, api_key_env=key_env, timeout_s=float(opts.get("timeout_s") or 60.0),
                       max_retries=int(retries) if retries is not None else 4, batch=options)
    items = []
    for r in requests:
        items.append((r.key, *hooks.generation_body(r.model, r.messages)))

    async def main() -> list[Any]:
        ep = BatchingEndpoint(jm, options, store)
        try:
            return await ep.generate_batched(items, jm.max_retries)
        finally:
            await ep.aclose()
            if records is not None:
                records.extend(r.as_dict() for r in ep.records)

    outs = asyncio.run(main())
    done: list[Any] = []
    for o in outs:
        done.append(Completion(text="", error=f"batch: {o}") if isinstance(o, CallFailed) else o)
    if progress:
        progress(len(done))
    return done
