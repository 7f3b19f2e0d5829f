"""Fixtures that build real tiny models (the demo base recipe) for tests.

Registered as a pytest plugin by the root conftest.py, so any test can ask for them:

- ``tiny_base``: Path of a tiny Llama checkpoint built by ``evalkit.demo_model.build_base`` (hidden 64,
  2 layers, a few dozen pretraining steps: real, loadable by transformers/peft/vLLM, not good).
  Weights are float32; tokenizer with chat template and special tokens.
- ``tiny_adapters``: ``{"a": Path, "b": Path}``, two LoRA adapters on ``tiny_base`` (r=8, alpha=16,
  every linear layer of the blocks, no modules_to_save) whose ``lora_B`` is non-zero (fixed seeds),
  so each one visibly changes the base's greedy output and the two differ from each other.

Both are session-scoped: built once per test session (a few seconds each on 2 cores).
"""

from __future__ import annotations

from pathlib import Path

import pytest

TINY_BASE_BUILD = {"steps": 40, "seed": 0, "hidden": 64, "layers": 2}
TINY_ADAPTER_SEEDS = {"a": 1, "b": 2}
LORA_B_STD = 0.3  # large enough that greedy tokens change, small enough that output stays text


def make_tiny_adapter(base: Path, out: Path, seed: int, *, r: int = 8, std: float = LORA_B_STD) -> Path:
    """Save a LoRA adapter on ``base`` with seeded non-zero weights (nothing is trained)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    config = LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    torch.manual_seed(seed)
    peft_model = get_peft_model(model, config)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * std)
    peft_model.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from evalkit.demo_model import build_base

    return build_base(tmp_path_factory.mktemp("tiny-base") / "model", progress=False, **TINY_BASE_BUILD)


@pytest.fixture(scope="session")
def tiny_adapters(tiny_base: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-adapters")
    return {name: make_tiny_adapter(tiny_base, root / name, seed) for name, seed in TINY_ADAPTER_SEEDS.items()}


def demo_prompts() -> list[tuple]:
    """The demo regression suite's 50 prompts (its conversations without the assistant's answer)."""
    import json

    from evalkit.types import Message

    rows = [json.loads(x) for x in (Path(__file__).resolve().parents[2] / "suites" / "demo-regression" / "samples.jsonl").read_text().splitlines()]
    return [tuple(Message(m["role"], m["content"]) for m in r["messages"] if m["role"] != "assistant") for r in rows]


def outputs_both_ways(backend, switch: str, requests) -> dict[bool, list[tuple]]:
    """(text, tokens_out, finish_reason) of every request with the backend's ``switch`` on and off
    (left on afterwards): the same requests, two code paths, compared item for item by the caller.
    """
    outs = {}
    try:
        for on in (True, False):
            setattr(backend, switch, on)
            outs[on] = [(c.text, c.tokens_out, c.finish_reason) for c in backend.generate(requests)]
    finally:
        setattr(backend, switch, True)
    return outs
