"""The backend registry: for every backend kind declared in ``evalkit.registries``, how to open it
(generation), how it serves structured requests (judges), and which API provider's hooks it speaks.

One registry for both: a run's candidates and its judges get their model from here. Backend modules
are imported only when one is opened (``--help`` stays fast; a missing extra is one clear line).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

from ..errors import ConfigError, missing_extra
from ..registries import backend_kind, backend_names
from ..types import ModelSpec
from .base import Backend, Provider

__all__ = ["BackendInfo", "backend_info", "group_key", "provider", "register_backend"]


@dataclass(frozen=True)
class BackendInfo:
    """What the run and judge stages may ask of a backend kind without opening one: its declaration
    (``evalkit.registries.BackendKind``: ``local_weights``, ``key_env``, ``shares_base``, ``wire``,
    ``batch_api``) and its behaviour here: ``factory(specs)`` opens one; ``chunk_size(spec)``:
    requests per batch the run commits to the store (resume granularity); ``group_key(spec)``: specs
    with equal keys share one opened backend (one loaded base, one server).
    """

    name: str
    factory: Callable[[Sequence[ModelSpec]], Backend]
    local_weights: bool
    key_env: str | None = None
    chunk_size: Callable[[ModelSpec], int] = lambda spec: 16
    shares_base: bool = False  # several specs on one base share one backend (adapters hot-swapped)
    wire: str | None = None  # the API protocol its servers speak (structured requests, batches); None: in process
    batch_api: bool = False  # the provider has a batch API (batch: on a model entry)

    def group_key(self, spec: ModelSpec) -> tuple:
        if self.shares_base:
            opts = dict(spec.options)
            return (self.name, spec.path, opts.get("dtype"), opts.get("load_in_4bit"), opts.get("mode"), str(opts.get("url")), str(opts.get("urls")))
        return (self.name, spec.name)


_REGISTRY: dict[str, BackendInfo] = {}


def register_backend(name: str, *, chunk_size: Callable[[ModelSpec], int] | None = None):
    """Decorator for the factory ``(specs) -> Backend`` of a backend kind declared in
    ``evalkit.registries`` (it imports its backend module lazily).
    """
    kind = backend_kind(name)  # KeyError: declare the kind in evalkit/registries.py first

    def deco(fn: Callable[[Sequence[ModelSpec]], Backend]) -> Callable[[Sequence[ModelSpec]], Backend]:
        _REGISTRY[name] = BackendInfo(name, fn, kind.local_weights, kind.key_env, chunk_size or (lambda spec: 16), kind.shares_base,
                                      kind.wire, kind.batch_api)
        return fn

    return deco


def backend_info(name: str) -> BackendInfo:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown backend '{name}' (known: {', '.join(backend_names())})") from None


def group_key(spec: ModelSpec) -> tuple:
    """Specs with the same key share one backend instance (one loaded base, one server)."""
    return backend_info(spec.backend).group_key(spec)


def provider(wire: str) -> Provider:
    """The hooks of API protocol ``wire`` (``openai`` or ``anthropic``), imported on first use."""
    if wire == "anthropic":
        with _needs("an anthropic model", "api"):
            from .anthropic_backend import PROVIDER as anthropic_provider
        return anthropic_provider
    if wire == "openai":
        with _needs("an openai model", "api"):
            from .openai_backend import PROVIDER as openai_provider
        return openai_provider
    raise ConfigError(f"no API provider speaks '{wire}' (known: anthropic, openai)")


AUTO_BATCH_CHUNK = 64  # requests per committed block when batch_size is auto (the batch is found when the model loads)


def _option(spec: ModelSpec, key: str, default: int) -> int:
    v = dict(spec.options).get(key)
    if v == "auto":
        return AUTO_BATCH_CHUNK // 2
    return int(v) if v else default


@contextmanager
def _needs(what: str, extra: str) -> Iterator[None]:
    """An import that needs an optional extra: one clear line naming it when it is missing."""
    try:
        yield
    except ImportError as e:
        raise missing_extra(what, extra, e) from None


# 8 batches per committed block: continuous batching refills rows inside a block and drains only at its
# end, so a block of a few batches would idle rows at every boundary (the resume granularity is a block)
@register_backend("hf", chunk_size=lambda s: max(1, _option(s, "batch_size", 8)) * 8)
def _hf(specs: Sequence[ModelSpec]) -> Backend:
    with _needs("the hf backend", "hf"):
        from .hf import HFBackend
    return HFBackend(specs)


@register_backend("openai", chunk_size=lambda s: max(8, _option(s, "concurrency", 8) * 2))
def _openai(specs: Sequence[ModelSpec]) -> Backend:
    with _needs("the openai backend", "api"):
        from .openai_backend import OpenAIBackend
    return OpenAIBackend(specs)


@register_backend("anthropic", chunk_size=lambda s: max(8, _option(s, "concurrency", 8) * 2))
def _anthropic(specs: Sequence[ModelSpec]) -> Backend:
    with _needs("the anthropic backend", "api"):
        from .anthropic_backend import AnthropicBackend
    return AnthropicBackend(specs)


# the server batches continuously: keep it fed, and commit every chunk
@register_backend("vllm", chunk_size=lambda s: max(64, _option(s, "concurrency", 8) * 8))
def _vllm(specs: Sequence[ModelSpec]) -> Backend:
    with _needs("the vllm backend", "vllm"):
        from .vllm import VLLMBackend
    return VLLMBackend(specs)
