"""Model backends behind one protocol. Heavy imports happen only when a backend is opened.

``open_backend(specs)`` opens one backend for a group of ModelSpecs that can share it (same backend
and base checkpoint: several LoRA adapters on one loaded base, or one vLLM server).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from ..errors import ConfigError, UserError, missing_extra
from ..registries import backend_kind, backend_names
from ..types import ModelSpec
from .base import Backend, GenerationRequest, ProgressFn

__all__ = [
    "Backend", "BackendInfo", "GenerationRequest", "ProgressFn", "backend_info", "backend_names", "checkpoint_dtype",
    "fingerprint", "group_key", "open_backend", "register_backend",
]

@dataclass(frozen=True)
class BackendInfo:
    """What the run stage may ask of a backend kind without opening one: its declaration
    (``evalkit.registries.BackendKind``: ``local_weights``, ``key_env``, ``shares_base``) and its
    behaviour here: ``factory(specs)`` opens one; ``chunk_size(spec)``: requests per batch the run
    commits to the store (resume granularity); ``group_key(spec)``: specs with equal keys share one
    opened backend (one loaded base, one server).
    """

    name: str
    factory: Callable[[Sequence[ModelSpec]], Backend]
    local_weights: bool
    key_env: str | None = None
    chunk_size: Callable[[ModelSpec], int] = lambda spec: 16
    shares_base: bool = False  # several specs on one base share one backend (adapters hot-swapped)

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
        _REGISTRY[name] = BackendInfo(name, fn, kind.local_weights, kind.key_env, chunk_size or (lambda spec: 16), kind.shares_base)
        return fn

    return deco


def backend_info(name: str) -> BackendInfo:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown backend '{name}' (known: {', '.join(backend_names())})") from None


def _option(spec: ModelSpec, key: str, default: int) -> int:
    v = dict(spec.options).get(key)
    return int(v) if v else default


@register_backend("hf", chunk_size=lambda s: max(1, _option(s, "batch_size", 8)) * 2)
def _hf(specs: Sequence[ModelSpec]) -> Backend:
    try:
        from .hf import HFBackend
    except ImportError as e:
        raise missing_extra("the hf backend", "hf", e) from None
    return HFBackend(specs)


@register_backend("openai", chunk_size=lambda s: max(8, _option(s, "concurrency", 8) * 2))
def _openai(specs: Sequence[ModelSpec]) -> Backend:
    try:
        from .openai_backend import OpenAIBackend
    except ImportError as e:
        raise missing_extra("the openai backend", "api", e) from None
    return OpenAIBackend(specs)


@register_backend("anthropic", chunk_size=lambda s: max(8, _option(s, "concurrency", 8) * 2))
def _anthropic(specs: Sequence[ModelSpec]) -> Backend:
    try:
        from .anthropic_backend import AnthropicBackend
    except ImportError as e:
        raise missing_extra("the anthropic backend", "api", e) from None
    return AnthropicBackend(specs)


# the server batches continuously: keep it fed, and commit every chunk
@register_backend("vllm", chunk_size=lambda s: max(64, _option(s, "concurrency", 8) * 8))
def _vllm(specs: Sequence[ModelSpec]) -> Backend:
    try:
        from .vllm import VLLMBackend
    except ImportError as e:
        raise missing_extra("the vllm backend", "vllm", e) from None
    return VLLMBackend(specs)


def group_key(spec: ModelSpec) -> tuple:
    """Specs with the same key share one backend instance (one loaded base, one server)."""
    return backend_info(spec.backend).group_key(spec)


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


def _hash_dir(path: Path, *, full: bool) -> str:
    """Fingerprint a checkpoint or adapter directory.

    ``full``: hash every byte (adapters are small). Otherwise (base weights, possibly many GB): hash
    names, sizes and the first and last MiB of each file, which changes whenever the weights do.
    """
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    for f in files:
        rel = f.relative_to(path).as_posix()
        if rel.startswith(("checkpoint-", "runs/")) or rel in ("candidate.json", "README.md", "trainer_state.json", "training_args.bin"):
            continue  # training by-products do not change outputs
        size = f.stat().st_size
        h.update(f"{rel}:{size}\n".encode())
        with f.open("rb") as fh:
            if full or size <= 2 << 20:
                h.update(fh.read())
            else:
                h.update(fh.read(1 << 20))
                fh.seek(-(1 << 20), os.SEEK_END)
                h.update(fh.read(1 << 20))
    return h.hexdigest()[:16]


_KNOWN_DTYPES = {"float32": "float32", "float": "float32", "bfloat16": "bfloat16", "float16": "float16", "half": "float16"}


def checkpoint_dtype(path: str | Path) -> str:
    """The dtype a checkpoint's config.json declares (``dtype`` or the older ``torch_dtype``).

    Without one, float32: what transformers computes in. Every backend serving the base gets this
    dtype, so hf and vLLM do the same arithmetic by default (vLLM on its own picks bfloat16 for a
    float32 checkpoint, and greedy outputs then differ).
    """
    import json

    conf = Path(path) / "config.json"
    try:
        data = json.loads(conf.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "float32"
    for key in ("dtype", "torch_dtype"):
        v = data.get(key) if isinstance(data, dict) else None
        if isinstance(v, str) and v.removeprefix("torch.") in _KNOWN_DTYPES:
            return _KNOWN_DTYPES[v.removeprefix("torch.")]
    text_conf = data.get("text_config") if isinstance(data, dict) else None
    if isinstance(text_conf, dict):
        for key in ("dtype", "torch_dtype"):
            v = text_conf.get(key)
            if isinstance(v, str) and v.removeprefix("torch.") in _KNOWN_DTYPES:
                return _KNOWN_DTYPES[v.removeprefix("torch.")]
    return "float32"


def fingerprint(spec: ModelSpec) -> str:
    """The identity of what a spec loads: weights (and adapter) fingerprints, or the API model name."""
    parts = []
    if spec.path:
        p = Path(spec.path)
        if not p.is_dir():
            raise UserError(f"model '{spec.name}': checkpoint directory not found: {spec.path}")
        parts.append(_hash_dir(p, full=False))
    if spec.adapter:
        a = Path(spec.adapter)
        if not (a / "adapter_config.json").is_file():
            raise UserError(f"model '{spec.name}': no adapter_config.json in adapter directory {spec.adapter}")
        parts.append(_hash_dir(a, full=True))
    if spec.model:
        parts.append(spec.model)
    return "+".join(parts)
