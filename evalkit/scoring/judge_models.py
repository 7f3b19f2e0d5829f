"""A judge's model, from its eval.yaml entry to an endpoint of the model layer.

The judge stage owns this mapping (it reads the config's ``ModelEntry``); what a backend kind can
do — its wire protocol, its API key's variable, its batch API — comes from the one backend registry
(``evalkit.models.registry``) candidates use too. The model layer below knows only endpoints.
"""

from __future__ import annotations

from ..config import ModelEntry
from ..errors import ConfigError
from ..models.registry import backend_info
from ..models.structured import EndpointModel
from ..registries import backend_kind
from ..types import ModelSpec

__all__ = ["endpoint_from_entry"]


def endpoint_from_entry(entry: ModelEntry, *, concurrency: int | None = None, where: str = "judges") -> EndpointModel:
    """Map a model entry (eval.yaml's shape) onto an endpoint: an API kind by its wire protocol
    (vLLM servers speak the OpenAI API), a local kind (``hf``) in this process.
    """
    info = backend_info(entry.backend)
    if info.wire is None:
        return _local_endpoint(entry, concurrency=concurrency, where=where)
    base_url = entry.base_url
    model = entry.model
    if info.local_weights:  # a served checkpoint (vllm): the judge talks to its running server
        base_url = base_url or entry.url or (entry.urls[0] if entry.urls else None)
        if not base_url:
            raise ConfigError(f"{where}: a {entry.backend} judge needs 'url' (or base_url) of a running server, e.g. http://127.0.0.1:8000/v1")
        if not base_url.rstrip("/").endswith("/v1"):
            base_url = base_url.rstrip("/") + "/v1"
        model = model or entry.path
    assert model
    batch = None
    if entry.batch:
        if not info.batch_api:
            raise ConfigError(f"{where}: batch: needs a model whose provider has a batch API (/v1/files + /v1/batches or "
                              f"/v1/messages/batches); the {entry.backend} backend has none" + _why(entry.backend))
        from ..models.batch import BatchOptions

        batch = BatchOptions(**entry.batch.model_dump())
    key_env = entry.api_key_env or info.key_env or backend_info(info.wire).key_env or ""
    return EndpointModel(
        backend=info.wire,
        kind=entry.backend,
        model=model,
        base_url=base_url,
        api_key_env=key_env,
        concurrency=concurrency or entry.concurrency,
        timeout_s=entry.timeout_s,
        max_retries=entry.max_retries,
        max_tokens_param=entry.max_tokens_param or "max_tokens",
        batch=batch,
    )


def _why(kind: str) -> str:
    why = backend_kind(kind).no_batch_why
    return f" ({why})" if why else ""


def _local_endpoint(entry: ModelEntry, *, concurrency: int | None, where: str) -> EndpointModel:
    import dataclasses
    from pathlib import Path

    from ..models.weights import fingerprint

    if not entry.path or not Path(entry.path).expanduser().is_dir():
        raise ConfigError(f"{where}: an {entry.backend} judge needs 'path', a local checkpoint folder (got {entry.path!r})")
    path = str(Path(entry.path).expanduser().resolve())
    adapter = str(Path(entry.adapter).expanduser().resolve()) if entry.adapter else None
    options = entry.model_dump(exclude={"backend", "path", "model", "adapter", "base_url", "api_key_env", "generation"})
    spec = ModelSpec(name=f"judge:{Path(path).name}", backend=entry.backend, path=path, adapter=adapter, options=options)
    try:
        spec = dataclasses.replace(spec, identity=fingerprint(spec))
    except ConfigError as e:
        raise ConfigError(f"{where}: {e.message}") from None
    return EndpointModel(backend=entry.backend, kind=entry.backend, model=path, base_url=None, api_key_env="",
                         concurrency=concurrency or (entry.batch_size if isinstance(entry.batch_size, int) else 8), timeout_s=entry.timeout_s, max_retries=0, local=spec)
