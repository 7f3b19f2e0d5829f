"""A judge's model, from its eval.yaml entry to an endpoint of the model layer.

The judge stage owns this mapping (it reads the config's ``ModelEntry``); the model layer below it
(``models.structured``) knows only endpoints, never the config.
"""

from __future__ import annotations

from typing import Literal

from ..config import ModelEntry
from ..errors import ConfigError
from ..models.structured import EndpointModel
from ..types import ModelSpec

__all__ = ["endpoint_from_entry"]


def endpoint_from_entry(entry: ModelEntry, *, concurrency: int | None = None, where: str = "judges") -> EndpointModel:
    """Map a model entry (eval.yaml's shape) onto an endpoint; vLLM servers speak the OpenAI API,
    ``backend: hf`` runs the checkpoint in this process.
    """
    if entry.backend == "hf":
        return _local_endpoint(entry, concurrency=concurrency, where=where)
    backend: Literal["openai", "anthropic"] = "anthropic" if entry.backend == "anthropic" else "openai"
    base_url = entry.base_url
    model = entry.model
    if entry.backend == "vllm":
        base_url = base_url or entry.url or (entry.urls[0] if entry.urls else None)
        if not base_url:
            raise ConfigError(f"{where}: a vLLM judge needs 'url' (or base_url) of a running server, e.g. http://127.0.0.1:8000/v1")
        if not base_url.rstrip("/").endswith("/v1"):
            base_url = base_url.rstrip("/") + "/v1"
        model = model or entry.path
    assert model
    batch = None
    if entry.batch:
        if entry.backend not in ("openai", "anthropic"):
            raise ConfigError(f"{where}: batch: needs an openai or anthropic model (a provider batch API: /v1/files + /v1/batches or "
                              f"/v1/messages/batches); the {entry.backend} backend has none (vLLM's server does not implement them)")
        from ..models.batch import BatchOptions

        batch = BatchOptions(**entry.batch.model_dump())
    key_env = entry.api_key_env or ("ANTHROPIC_API_KEY" if backend == "anthropic" else "OPENAI_API_KEY")
    return EndpointModel(
        backend=backend,
        model=model,
        base_url=base_url,
        api_key_env=key_env,
        concurrency=concurrency or entry.concurrency,
        timeout_s=entry.timeout_s,
        max_retries=entry.max_retries,
        max_tokens_param=entry.max_tokens_param or "max_tokens",
        batch=batch,
    )


def _local_endpoint(entry: ModelEntry, *, concurrency: int | None, where: str) -> EndpointModel:
    import dataclasses
    from pathlib import Path

    from ..models import fingerprint

    if not entry.path or not Path(entry.path).expanduser().is_dir():
        raise ConfigError(f"{where}: an hf judge needs 'path', a local checkpoint folder (got {entry.path!r})")
    path = str(Path(entry.path).expanduser().resolve())
    adapter = str(Path(entry.adapter).expanduser().resolve()) if entry.adapter else None
    options = entry.model_dump(exclude={"backend", "path", "model", "adapter", "base_url", "api_key_env", "generation"})
    spec = ModelSpec(name=f"judge:{Path(path).name}", backend="hf", path=path, adapter=adapter, options=options)
    try:
        spec = dataclasses.replace(spec, identity=fingerprint(spec))
    except ConfigError as e:
        raise ConfigError(f"{where}: {e.message}") from None
    return EndpointModel(backend="hf", model=path, base_url=None, api_key_env="", concurrency=concurrency or entry.batch_size,
                         timeout_s=entry.timeout_s, max_retries=0, local=spec)
