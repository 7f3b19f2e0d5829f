"""models/kvcache.py: a preallocated KV cache that gives transformers' DynamicCache tensors and tokens."""

from __future__ import annotations

import pytest
import torch
from transformers.cache_utils import DynamicLayer

from evalkit.models.kvcache import _GrowingLayer


def _states(rows: int, length: int, seed: int) -> tuple:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, 2, length, 4, generator=g), torch.randn(rows, 2, length, 4, generator=g)


def test_growing_layer_returns_what_dynamic_layer_returns_without_moving_its_buffer():
    ours, theirs = _GrowingLayer(capacity=12), DynamicLayer()
    pointers = set()
    for step, length in enumerate((5, 1, 1, 1)):
        k, v = _states(3, length, step)
        a, b = ours.update(k, v), theirs.update(k, v)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        pointers.add(a[0].data_ptr())
        assert ours.get_seq_length() == theirs.get_seq_length() == a[0].shape[-2]
    assert len(pointers) == 1  # every step wrote into the one buffer: nothing was copied


def test_growing_layer_survives_cache_operations_and_outgrowing_its_capacity():
    ours, theirs = _GrowingLayer(capacity=6), DynamicLayer()
    for step, length in enumerate((4, 1)):
        k, v = _states(3, length, step)
        ours.update(k, v)
        theirs.update(k, v)
    index = torch.tensor([2, 0])
    for layer in (ours, theirs):  # what beam search, early-stopped rows and assisted decoding do
        layer.batch_select_indices(index)
        layer.crop(-1)
    for step, length in enumerate((1, 1, 3)):  # 4 + 5 > capacity 6: a bigger buffer
        k, v = _states(2, length, 10 + step)
        a, b = ours.update(k, v), theirs.update(k, v)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert ours.get_seq_length() == theirs.get_seq_length() == 9
    ours.reset()
    k, v = _states(1, 2, 20)
    assert torch.equal(ours.update(k, v)[0], k)


@pytest.mark.slow
def test_the_demo_generates_the_same_tokens_with_either_cache():
    """The demo's committed base on its 50 regression prompts, greedy and sampled: the preallocated
    cache gives transformers' DynamicCache tokens item for item.
    """
    from evalkit.demo_model import shipped_base
    from evalkit.models.base import GenerationRequest
    from evalkit.models.hf import HFBackend
    from evalkit.types import GenerationParams, ModelSpec
    from tests.support.models import demo_prompts, outputs_both_ways

    prompts = demo_prompts()
    greedy = ModelSpec(name="g", backend="hf", path=str(shipped_base()), generation=GenerationParams(max_new_tokens=48), options={"dtype": "float32"})
    sampled = ModelSpec(name="s", backend="hf", path=str(shipped_base()), generation=GenerationParams(max_new_tokens=24, temperature=0.9, seed=7),
                        options={"dtype": "float32"})
    backend = HFBackend([greedy, sampled])
    try:
        outs = outputs_both_ways(backend, "growing_cache", [GenerationRequest(f"{s.name}{i}", s, p) for s in (greedy, sampled) for i, p in enumerate(prompts)])
    finally:
        backend.close()
    assert outs[True] == outs[False] and len(outs[True]) == 100
    assert len({t for t, _, _ in outs[True]}) > 10  # real, varied replies, not one string


def test_a_layer_that_outgrows_its_capacity_doubles_instead_of_copying_every_step():
    ours, theirs = _GrowingLayer(capacity=2), DynamicLayer()
    buffers = set()
    for step in range(40):
        k, v = _states(2, 1, step)
        a, b = ours.update(k, v), theirs.update(k, v)
        buffers.add(a[0].data_ptr())
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert len(buffers) <= 6  # 2, 4, 8, 16, 32, 64 positions: not one new buffer per step
