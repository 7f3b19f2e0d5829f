"""A judge that is an in-process hf model: the same model layer as generation (one loaded base,
requests batched through the backend's own generate), no SDK and no server.

The tiny demo-recipe base has not learned to grade, so its verdicts do not parse: what is checked is
the plumbing — every judgment went through the hf backend (the raw replies are exactly what that
backend generates for the same prompt), requests were batched, failures are recorded as judge
errors and never scored, and failed judgments are asked again on the next run.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from evalkit.config import JudgeEntry, ModelEntry
from evalkit.models import GenerationRequest, open_backend
from evalkit.models.structured import schema_instruction
from evalkit.scoring.judges import JudgeInput, run_judges
from evalkit.store import Store
from evalkit.types import GenerationParams, Message, ModelSpec, Sample

RUBRIC = (
    'name: short\nprompt: "<output>{{ output }}</output> Rate it."\n'
    "criteria: [{name: ok, scale: [1, 5]}]\nnotes: false\nmax_tokens: 24\nverdict_retries: 1\n"
)


def test_hf_judge_runs_in_process_batched_and_records_failures(tiny_base: Path, tmp_path: Path):
    rubric = tmp_path / "short.yaml"
    rubric.write_text(RUBRIC)
    judge = JudgeEntry(rubric=str(rubric), model=ModelEntry(backend="hf", path=str(tiny_base), dtype="float32", batch_size=4))
    items = [JudgeInput("cand", "s", Sample(f"s{i}", (Message("user", f"q{i}"),)), f"answer {i}") for i in range(4)]
    with Store(tmp_path / "store.db") as store:
        out = run_judges([judge], config_dir=tmp_path, store=store, items=items, progress=False)
        st = out.stats["short"]
        [(endpoint, prov)] = st["providers"].items()
        assert endpoint.startswith("hf:")
        assert st["judged"] + st["errors"] == 4 and out.errors == st["errors"]
        for v in out.scores.values():
            for sc in v:
                assert (sc.error is None) == (sc.value is not None)  # an error is never a score
        keys = [k for v in out.scores.values() for k in v[0].details["judgment_keys"]]
        payloads = store.get_judgments(keys)
        attempts = sum(len(p["attempts"]) for p in payloads.values())
        assert prov["requests"] == attempts and prov["max_in_flight"] > 1  # batched, one request per attempt
        assert all(p["structured"] == "prompt" and p["judge_model"]["backend"] == "hf" for p in payloads.values())

        # the raw reply is what the hf backend itself generates for that prompt (greedy, same template)
        p = next(iter(payloads.values()))
        system = p["system"]
        assert system.endswith(schema_instruction(judge_schema(p)))
        spec = ModelSpec(name="direct", backend="hf", path=str(tiny_base), generation=GenerationParams(max_new_tokens=24, temperature=0.0),
                         options={"dtype": "float32"})
        backend = open_backend([spec])
        try:
            [direct] = backend.generate([GenerationRequest("k", spec, (Message("system", system), Message("user", p["prompt"])))])
        finally:
            backend.close()
        assert p["attempts"][0]["raw"] == direct.text

        # failed judgments are not cached: a second run asks exactly those again
        before = prov["requests"]
        again = run_judges([judge], config_dir=tmp_path, store=store, items=items, progress=False)
        assert again.calls_cached == st["judged"] and again.calls_made == st["errors"]
        assert dataclasses.is_dataclass(again) and before == attempts


def judge_schema(payload: dict) -> dict:
    """The verdict schema the short rubric asks for (one integer criterion, no notes)."""
    from evalkit.scoring.judge_rubric import load_rubric

    return dict(load_rubric(Path(payload["rubric_path"])).verdict_schema)


def test_hf_backend_returns_token_logprobs_that_spell_the_reply(tiny_base: Path):
    """What a judge with ``scoring: expected`` reads from an in-process model: each generated token's
    text (the pieces spell the reply exactly) and its top-k log-probabilities, the greedy choice first.
    """
    import asyncio
    import math

    from evalkit.models.structured import EndpointModel, LocalEndpoint

    spec = ModelSpec(name="j", backend="hf", path=str(tiny_base), generation=GenerationParams(max_new_tokens=12, temperature=0.0), options={"dtype": "float32"})
    backend = open_backend([spec])
    try:
        plain, with_lp = backend.generate([
            GenerationRequest("a", spec, (Message("user", "q1"),)),
            GenerationRequest("b", spec, (Message("user", "q1"),), top_logprobs=5),
        ])
    finally:
        backend.close()
    assert plain.logprobs is None and with_lp.text == plain.text  # asking for log-probabilities changes nothing else
    toks = with_lp.logprobs
    assert toks is not None and len(toks) == with_lp.tokens_out and "".join(t.text for t in toks) == with_lp.text
    for t in toks:
        assert len(t.top) == 5 and t.top[0][1] == pytest.approx(t.logprob, abs=1e-5)  # greedy: the sampled token is the most likely
        assert [lp for _, lp in t.top] == sorted((lp for _, lp in t.top), reverse=True) and sum(math.exp(lp) for _, lp in t.top) <= 1 + 1e-5
    # through the in-process judge endpoint, the reply carries them
    jm = EndpointModel(backend="hf", model=str(tiny_base), base_url=None, api_key_env="", concurrency=2, local=spec)

    async def ask():
        ep = LocalEndpoint(jm)
        try:
            return await ep.complete("", "q1", {"type": "object"}, temperature=0.0, max_tokens=12, schema_name="v", top_logprobs=3)
        finally:
            await ep.aclose()

    reply = asyncio.run(ask())
    assert reply.logprobs is not None and "".join(t.text for t in reply.logprobs) == reply.raw and len(reply.logprobs[0].top) == 3
