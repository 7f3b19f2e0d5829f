"""A KV cache for static-batch generation that never copies what it already holds.

transformers' ``DynamicCache`` grows each layer by ``torch.cat`` at every decoding step: step *t*
copies all *t* cached positions of every layer, so a batch's decode copies O(length²) bytes. On a
CPU at a small batch that copy is a tenth of a step's time (measured: ``docs/performance.md``).

``growing_cache(model, capacity)`` returns a ``DynamicCache`` whose full-attention layers write each
step's keys and values into a buffer allocated once for the batch's final length (prompt width +
``max_new_tokens``) and hand attention a *view* of the filled prefix. Attention therefore sees the
same tensors, of the same length, as with ``DynamicCache`` (greedy tokens are identical, tested
item for item on the demo), and no layer is ever copied. Peak memory is lower too: the buffer is
the cache's final size, where ``cat`` briefly holds two copies.

Layers of other kinds (sliding-window, indexed) stay transformers' own. A layer whose tensors were
replaced from outside (``reorder_cache``, ``crop``, ``batch_select_indices``) is re-seeded into a new
buffer on its next update, so every ``Cache`` operation keeps working.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

__all__ = ["growing_cache"]


class _GrowingLayer(DynamicLayer):
    """A ``DynamicLayer`` backed by one preallocated buffer per tensor; ``keys``/``values`` are views of it."""

    def __init__(self, capacity: int):
        super().__init__()
        self.capacity = capacity
        self._buffers: tuple[torch.Tensor, torch.Tensor] | None = None
        self._views: tuple[torch.Tensor, torch.Tensor] | None = None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        held = self.get_seq_length()
        end = held + key_states.shape[-2]
        buffers = self._buffers
        ours = self._views is not None and self.keys is self._views[0] and self.values is self._views[1]
        if buffers is None or not (ours or held == 0) or end > buffers[0].shape[-2] or buffers[0].shape[0] != key_states.shape[0]:
            size = max(self.capacity, end)
            if buffers is not None and end > buffers[0].shape[-2]:  # outgrown: double, so growing step by step stays amortised O(1)
                size = max(size, 2 * buffers[0].shape[-2])
            buffers = (_empty_like_rows(key_states, size), _empty_like_rows(value_states, size))
            if held and self.keys is not None and self.values is not None:  # re-seed from tensors set from outside (or outgrown)
                buffers[0][:, :, :held].copy_(self.keys)
                buffers[1][:, :, :held].copy_(self.values)
            self._buffers = buffers
        buffers[0][:, :, held:end].copy_(key_states)
        buffers[1][:, :, held:end].copy_(value_states)
        self.keys, self.values = buffers[0][:, :, :end], buffers[1][:, :, :end]
        self._views = (self.keys, self.values)
        return self.keys, self.values

    def reset(self) -> None:
        self._buffers = self._views = None
        super().reset()


def _empty_like_rows(states: torch.Tensor, length: int) -> torch.Tensor:
    shape = list(states.shape)
    shape[-2] = length
    return states.new_empty(shape)


def growing_cache(model: Any, capacity: int) -> Any | None:
    """A ``DynamicCache`` for ``model`` whose full-attention layers hold ``capacity`` positions without
    copying, or None when the model does not take a ``DynamicCache`` (then generate as transformers would).
    """
    supports = getattr(model, "_supports_default_dynamic_cache", None)
    config = getattr(model, "config", None)
    if config is None or (callable(supports) and not supports()):
        return None
    try:
        cache = DynamicCache(config=config)
    except Exception:  # noqa: BLE001 - a config transformers cannot lay out: its own default then
        return None
    layers = getattr(cache, "layers", None)
    if not layers:
        return None
    cache.layers = [_GrowingLayer(capacity) if type(layer) is DynamicLayer else layer for layer in layers]
    return cache
