"""early_stop: gates decided on anytime-valid bounds (betting confidence sequences) as items arrive in
blocks. Validity is simulated (the false-pass rate at a true rate equal to the threshold stays under
alpha, where re-running a fixed-n test after every block does not), the saving measured, and a real
run against a loopback OpenAI server stops after a fraction of its items.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sst

from evalkit import stats
from evalkit.cli import main

RUNS, N, BLOCK, ALPHA = 2000, 400, 40, 0.05
LOOKS = np.arange(BLOCK, N + 1, BLOCK)


def _first_crossing(log_capital: np.ndarray) -> np.ndarray:
    """Per run: the index of the first look where the capital passes 1/alpha (len(LOOKS) when never)."""
    crossed = log_capital[:, LOOKS - 1] >= math.log(1 / ALPHA)
    return np.where(crossed.any(axis=1), crossed.argmax(axis=1), len(LOOKS))


@pytest.mark.parametrize("theta", [0.6, 0.3, 0.9])
def test_false_pass_rate_at_the_threshold_stays_under_alpha(theta):
    """2,000 simulated runs of 400 items whose true pass rate equals a min: threshold, looked at after
    every block of 40: the gate passes wrongly in at most alpha of them. A fixed-n one-sided z-test
    repeated after every block (what "just check the gate as items come in" does) passes wrongly far
    more often.
    """
    rng = np.random.default_rng(int(theta * 100))
    x = (rng.random((RUNS, N)) < theta).astype(float)
    up, down = stats.betting_capital(x, theta, ALPHA)
    first_up, first_down = _first_crossing(up), _first_crossing(down)
    false_pass = float(np.mean(first_up < first_down))
    assert false_pass <= ALPHA, false_pass
    # the naive alternative: a fixed-n test at every block end
    means = np.cumsum(x, axis=1)[:, LOOKS - 1] / LOOKS
    z = (means - theta) / np.sqrt(theta * (1 - theta) / LOOKS)
    naive = float(np.mean((z > sst.norm.ppf(1 - ALPHA)).any(axis=1)))
    assert naive > 2 * ALPHA and naive > 2 * false_pass, (naive, false_pass)


@pytest.mark.parametrize("gap,most", [(0.1, 0.8), (0.2, 0.3)])
def test_the_expected_saving_away_from_the_threshold(gap, most):
    """At a true rate 0.1 / 0.2 above a min of 0.6, the share of the 400 items an early-stopped run needs
    (mean over 2,000 simulated runs), and that it decides for the right side.
    """
    rng = np.random.default_rng(11)
    theta = 0.6
    x = (rng.random((RUNS, N)) < theta + gap).astype(float)
    up, down = stats.betting_capital(x, theta, ALPHA)
    first_up, first_down = _first_crossing(up), _first_crossing(down)
    used = np.where(np.minimum(first_up, first_down) < len(LOOKS), LOOKS[np.minimum(np.minimum(first_up, first_down), len(LOOKS) - 1)], N)
    share = float(used.mean()) / N
    assert share <= most, share
    assert float(np.mean(first_down < first_up)) <= ALPHA  # a wrong fail is as rare


def test_sequential_test_and_bounds():
    x = [1.0] * 38 + [0.0] * 2
    dec = stats.sequential_test(x, 0.6, looks=[20, 40])
    assert dec.side == "above" and dec.at in (20, 40) and dec.low > 0.6
    none = stats.sequential_test([1.0, 0.0] * 10, 0.5, looks=[10, 20])
    assert none.side is None and none.low < 0.5 < none.high


# --- a real run: 400 items, an OpenAI-compatible loopback server that echoes the prompt -----------------


def _suite(root: Path, n: int = N, wrong: int = 20) -> None:
    """N items whose reference is the prompt (the echo passes exact_match), ``wrong`` of them not."""
    d = root / "suites" / "echo"
    d.mkdir(parents=True)
    (d / "suite.yaml").write_text("name: echo\nkind: regression\nscorers:\n  - exact_match\n")
    step = n // wrong if wrong else n + 1
    lines = [{"id": f"e{i:03d}", "messages": [{"role": "user", "content": f"item {i}"}],
              "reference": f"item {i}" if (i % step or not wrong) else "something else"} for i in range(n)]
    (d / "samples.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))


def _config(root: Path, url: str, early: str, gates: str) -> Path:
    cfg = root / "eval.yaml"
    cfg.write_text(
        "models:\n"
        f"  base: {{backend: openai, model: base, base_url: '{url}', api_key_env: EK_TEST_KEY}}\n"
        f"  cand: {{backend: openai, model: cand, base_url: '{url}', api_key_env: EK_TEST_KEY}}\n"
        f"baseline: base\nsuites: [suites/echo]\nstore: store.db\n{early}gates:\n{gates}"
    )
    return cfg


def test_an_early_stopped_run_uses_a_fraction_of_the_items_and_a_rerun_fills_the_rest(tmp_path, loopback_api, monkeypatch, capsys):
    monkeypatch.setenv("EK_TEST_KEY", "sk-test")
    monkeypatch.chdir(tmp_path)
    _suite(tmp_path)
    gates = "  - {name: accuracy, metric: pass_rate, scorer: exact_match, min: 0.6}\n"
    cfg = _config(tmp_path, loopback_api.base_url, "early_stop: {block: 40}\n", gates)
    assert main(["run", str(cfg), "--out", "o1", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    summary = json.loads(Path("o1/summary.json").read_text())
    es = summary["early_stop"]
    assert es["items_total"] == N and es["items_used"] <= 160 and es["stopped_early"] and es["block_ends"][-1] == es["items_used"]
    assert summary["calls"]["generations_made"] == 2 * es["items_used"]  # base and cand, on the items used only
    gate = summary["gates"][0]
    assert gate["passed"] is True and gate["sequential"] is True and gate["bound"] > 0.6
    assert f"decided after {es['items_used']} of {N} items" in gate["detail"]
    assert f"early stop: decided after {es['items_used']} of {N} items" in printed
    assert f"early stop: decided after {es['items_used']} of {N} items" in Path("o1/report.md").read_text()
    assert 'id="early-stop"' in Path("o1/report.html").read_text()
    # the same verdict from the store (report --regate re-decides with the stored order and block ends)
    assert main(["report", "latest", "--regate", "--out", "o1b", "--store", "store.db"]) == 0
    regated = json.loads(Path("o1b/summary.json").read_text())
    assert regated["gates"][0]["sequential"] is True and regated["gates"][0]["passed"] is True
    # a later run without early_stop generates only the items not generated yet
    cfg_full = _config(tmp_path, loopback_api.base_url, "", gates)
    assert main(["run", str(cfg_full), "--out", "o2", "--no-progress"]) == 0
    full = json.loads(Path("o2/summary.json").read_text())
    assert full["calls"]["generations_made"] == 2 * (N - es["items_used"]) and full.get("early_stop") is None
    assert next(m for m in full["metrics"] if m["model"] == "cand")["value"] == pytest.approx(0.95)


def test_a_failing_candidate_fails_early_and_an_undecidable_gate_uses_every_item(tmp_path, loopback_api, monkeypatch):
    monkeypatch.setenv("EK_TEST_KEY", "sk-test")
    monkeypatch.chdir(tmp_path)
    _suite(tmp_path, n=200, wrong=0)
    # every item passes: a max: 0.5 gate fails at the first block; a must_pass-free adapter check is decided too
    gates = "  - {name: too-good, metric: pass_rate, scorer: exact_match, max: 0.5}\n"
    cfg = _config(tmp_path, loopback_api.base_url, "early_stop: {block: 25, seed: 3}\n", gates)
    assert main(["run", str(cfg), "--out", "o", "--no-progress"]) == 1
    summary = json.loads(Path("o/summary.json").read_text())
    assert summary["early_stop"]["items_used"] <= 50 and summary["gates"][0]["passed"] is False and summary["gates"][0]["sequential"]
    # a gate that cannot be decided sequentially (error_rate) makes the run use every item
    gates2 = gates + "  - {name: errors, metric: error_rate, max: 0}\n"
    cfg2 = _config(tmp_path, loopback_api.base_url, "early_stop: {block: 25, seed: 3}\n", gates2)
    main(["run", str(cfg2), "--out", "o2", "--no-progress"])
    s2 = json.loads(Path("o2/summary.json").read_text())
    assert s2["early_stop"]["items_used"] == 200 and not s2["early_stop"]["stopped_early"]


@pytest.mark.parametrize("early,extra,expect", [
    ("early_stop: true\n", "", "early_stop stops a run once every gate is decided: this config has no gates"),
    ("early_stop: {block: 0}\n", "gates:\n  - {name: a, metric: pass_rate, scorer: exact_match, min: 0.5}\n", "block"),
])
def test_bad_early_stop_is_one_line(tmp_path, monkeypatch, capsys, early, extra, expect):
    monkeypatch.chdir(tmp_path)
    _suite(tmp_path, n=10, wrong=0)
    cfg = tmp_path / "eval.yaml"
    cfg.write_text("models:\n  m: {backend: openai, model: m, base_url: 'http://127.0.0.1:9/v1'}\nsuites: [suites/echo]\n" + early + extra)
    assert main(["run", str(cfg), "--out", "o", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert expect in err and len(err.splitlines()) == 1, err
    assert not Path("o").exists()


def test_early_stop_with_a_provider_batch_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-0000000000")
    _suite(tmp_path, n=10, wrong=0)
    cfg = tmp_path / "eval.yaml"
    cfg.write_text("models:\n  m: {backend: openai, model: m, batch: true}\nsuites: [suites/echo]\nearly_stop: true\n"
                   "gates:\n  - {name: a, metric: pass_rate, scorer: exact_match, min: 0.5}\n")
    assert main(["run", str(cfg), "--out", "o", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "early_stop draws items block by block; model 'm' sends everything as one provider batch" in err and len(err.splitlines()) == 1


def _count_hf_loads(monkeypatch) -> list[list[str]]:
    """Every HFBackend opened from now on, as the names of the specs it serves."""
    from evalkit.models import hf

    loads: list[list[str]] = []
    real = hf.HFBackend.__init__

    def counting(self, specs):
        loads.append([s.name for s in specs])
        real(self, specs)

    monkeypatch.setattr(hf.HFBackend, "__init__", counting)
    return loads


@pytest.mark.parametrize("judge", [False, True], ids=["candidates", "and-a-local-judge"])
def test_a_local_model_is_loaded_once_for_all_the_blocks(tmp_path, monkeypatch, judge):
    """early_stop with the hf backend: three blocks, each local model loaded once (the candidates'
    backend stays open between blocks, and so does a judge that is a local model).
    """
    from evalkit.demo_model import shipped_base

    loads = _count_hf_loads(monkeypatch)
    monkeypatch.chdir(tmp_path)
    _suite(tmp_path, n=30, wrong=0)
    base = shipped_base()
    cfg = tmp_path / "eval.yaml"
    judges = f"judges:\n  - rubric: default\n    model: {{backend: hf, path: '{base}', dtype: float32}}\n" if judge else ""
    cfg.write_text(f"models:\n  base: {{backend: hf, path: '{base}', dtype: float32}}\n  cand: {{backend: hf, path: '{base}', dtype: float32}}\n"
                   f"baseline: base\nsuites: [suites/echo]\nstore: store.db\ngeneration: {{max_new_tokens: 4}}\nearly_stop: {{block: 10}}\n{judges}"
                   "gates:\n  - {name: errors, metric: error_rate, max: 0}\n")
    assert main(["run", str(cfg), "--out", "o", "--no-progress"]) == 0
    summary = json.loads(Path("o/summary.json").read_text())
    # base and cand are the same model here (same weights, no adapter): one generation per item serves both
    assert summary["early_stop"]["blocks"] == 3 and summary["calls"]["generations_made"] == 30
    if judge:
        judged = summary["judges"]["default"]
        assert judged["judged"] + judged["errors"] == 60  # every item of every block, of both models, went to the judge
        assert [len(x) for x in loads] == [2, 1]  # the judge's model once too: not once per block
    else:
        assert loads == [["base", "cand"]]
