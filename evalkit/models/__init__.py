"""Model backends behind one abstraction. Heavy imports happen only when a backend is opened.

* ``base``: the protocols — :class:`Backend` (generation) and :class:`Provider` (an API's hooks:
  connections, retry classification, structured requests, batches) — and the types they return.
* ``registry``: every backend kind's factory, structured endpoint and provider (``backend_info``,
  ``provider``, ``open_structured``); candidates and judges get their models from it.
* ``weights``: fingerprints of what a local model loads, a checkpoint's dtype.
* ``structured`` / ``batch``: structured generation (judges) over a provider's hooks, directly or
  through its batch API; ``ray_engine``: generation on a Ray cluster.

``open_backend(specs)`` opens one backend for a group of ModelSpecs that can share it (same backend
and base checkpoint: several LoRA adapters on one loaded base, or one vLLM server).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from ..registries import backend_names
from ..types import ModelSpec
from .base import Backend, GenerationRequest, LoglikelihoodBackend, LoglikelihoodRequest, ProgressFn, Provider
from .registry import BackendInfo, backend_info, group_key, provider, register_backend
from .weights import checkpoint_dtype, fingerprint

if TYPE_CHECKING:
    from .structured import EndpointModel

__all__ = [
    "Backend", "BackendInfo", "GenerationRequest", "LoglikelihoodBackend", "LoglikelihoodRequest", "ProgressFn", "Provider", "backend_info", "backend_names", "checkpoint_dtype",
    "fingerprint", "group_key", "open_backend", "open_structured", "provider", "register_backend",
]


def open_backend(specs: Sequence[ModelSpec]) -> Backend:
    """One backend for a group of specs: in this process, or on the Ray cluster of an active ``--ray`` run."""
    kinds = {s.backend for s in specs}
    if len(kinds) != 1:
        raise ValueError(f"one backend kind per group, got {kinds}")
    info = backend_info(kinds.pop())
    from .ray_engine import RayBackend, active_engine, runs_on_cluster

    engine = active_engine()
    if engine is not None and all(runs_on_cluster(s) for s in specs):
        return RayBackend(engine, specs, info.chunk_size)
    return info.factory(specs)


def open_structured(ep: EndpointModel, *, structured: str = "auto", store: Any = None) -> Any:
    """The structured endpoint that serves ``ep``: in process for a local model (its backend's own
    ``generate``), through the provider's batch API when ``ep.batch`` is set (``store`` records the
    batches), else over HTTP with the provider's hooks.
    """
    from .structured import LocalEndpoint, StructuredEndpoint

    if ep.local is not None:
        return LocalEndpoint(ep, opener=open_backend)  # on the cluster of an active --ray run, like a candidate
    if ep.batch is not None and store is not None:
        from .batch import BatchingEndpoint

        return BatchingEndpoint(ep, ep.batch, store, structured=structured)
    return StructuredEndpoint(ep, structured=structured)
