"""`evalkit calibrate`: a judge scorer's mean calibrated by human labels (PPI++), equal to the
ppi-python reference implementation, on a stored run; bad labels are one line, exit 2.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from evalkit.cli import main
from evalkit.record import RunItem
from evalkit.store import Store
from evalkit.types import Score

RUBRIC = 'name: default\nprompt: "<output>{{ output }}</output> Rate it."\ncriteria: [{name: quality, scale: [1, 5]}]\n'
N_ITEMS = 80


def _truth_and_judge(model: str) -> tuple[np.ndarray, np.ndarray]:
    """Human labels (the truth) and a biased, noisy judge that tracks them."""
    rng = np.random.default_rng(7 if model == "base" else 8)
    truth = rng.integers(1, 6, N_ITEMS).astype(float) if model == "base" else np.clip(rng.integers(2, 6, N_ITEMS), 1, 5).astype(float)
    judge = np.clip(np.round(truth + rng.normal(0.6, 0.7, N_ITEMS)), 1, 5)  # the judge is generous
    return truth, judge


@pytest.fixture()
def stored_run(tmp_path: Path):
    rubric = tmp_path / "quality.yaml"
    rubric.write_text(RUBRIC)
    store = tmp_path / "store.db"
    with Store(store) as st:
        rid = st.begin_run(name="cal", config_path=None, config={}, out_dir=None)
        items = []
        for model in ("base", "cand"):
            _, judge = _truth_and_judge(model)
            for i in range(N_ITEMS):
                score = Score("judge.quality", float(judge[i]), None, kind="judge") if i != 5 else \
                    Score("judge.quality", None, None, error="judge failed", kind="judge")
                items.append(RunItem(rid, model, model, "s", "v1", f"q{i:03d}", {"id": f"q{i:03d}"}, f"g{model}{i}", "out", None,
                                     {"judge.quality": score}))
        st.save_run_items(rid, items)
        st.finish_run(rid, {"run_id": rid, "judges": {"default": {"rubric_path": str(rubric)}}}, "passed")
    return store, rid


def _labels(path: Path, rows: list[tuple[str, str, float]], header: str = "model,sample_id,value") -> Path:
    path.write_text(header + "\n" + "".join(f"{m},{s},{v:g}\n" for m, s, v in rows))
    return path


def _label_rows(model: str, idx: range) -> list[tuple[str, str, float]]:
    truth, _ = _truth_and_judge(model)
    return [(model, f"q{i:03d}", float(truth[i])) for i in idx]


def test_calibrated_mean_equals_ppi_python(stored_run, tmp_path, capsys):
    from ppi_py import ppi_mean_ci, ppi_mean_pointestimate
    from ppi_py.baselines import classical_mean_ci

    store, rid = stored_run
    labels = _labels(tmp_path / "labels.csv", _label_rows("base", range(0, 30)) + _label_rows("cand", range(40, 60)))
    assert main(["calibrate", rid, "--scorer", "judge.quality", "--labels", str(labels), "--store", str(store), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"base", "cand"}
    for model, labelled in (("base", range(0, 30)), ("cand", range(40, 60))):
        truth, judge = _truth_and_judge(model)
        scored = [i for i in range(N_ITEMS) if i != 5]  # item 5: the judge failed, so it is neither labeled nor unlabeled
        lab = [i for i in labelled if i in scored]
        unl = [i for i in scored if i not in labelled]
        y, yh, yu = truth[lab], judge[lab], judge[unl]
        r = out[model]
        assert r["n_labeled"] == len(lab) and r["n_unlabeled"] == len(unl)
        assert r["ppi_mean"] == pytest.approx(float(np.ravel(ppi_mean_pointestimate(y, yh, yu))[0]), abs=1e-6)
        lo, hi = ppi_mean_ci(y, yh, yu, alpha=0.05)
        assert r["ci"] == pytest.approx([float(np.ravel(lo)[0]), float(np.ravel(hi)[0])], abs=1e-6)
        clo, chi = classical_mean_ci(y, alpha=0.05)
        assert r["human_mean"] == pytest.approx(float(y.mean())) and r["human_ci"] == pytest.approx([float(clo), float(chi)], abs=1e-6)
        assert r["judge_mean"] == pytest.approx(float(judge[scored].mean()))
        # the judge is generous: the calibrated mean moves from the judge's toward the humans', with a
        # narrower interval than the labels alone
        assert r["ppi_mean"] < r["judge_mean"]
        assert r["ci"][1] - r["ci"][0] < r["human_ci"][1] - r["human_ci"][0]
    assert out["base"]["unscored_labels"] == 1  # the label on q005 (the judge failed there) is left out, and said
    assert "unscored_labels" not in out["cand"]
    assert main(["calibrate", rid, "--scorer", "judge.quality", "--labels", str(labels), "--store", str(store)]) == 0
    table = capsys.readouterr().out
    assert "calibrated" in table and "humans only" in table and "base" in table and "left out" in table


BAD = [
    ("model,sample_id\nbase,q000\n", "header must name model, sample_id, value", "labels.csv:1"),
    ("model,sample_id,value\nnope,q000,3\n", "model 'nope' is not in this run (models: base, cand)", "labels.csv:2"),
    ("model,sample_id,value\nbase,zzz,3\n", "model 'base' has no item 'zzz' in this run", "labels.csv:2"),
    ("model,sample_id,value\nbase,q000,7\n", "value 7 is outside the scale of judge.quality [1, 5]", "labels.csv:2"),
    ("model,sample_id,value\nbase,q000,good\n", "value 'good' is not a number", "labels.csv:2"),
    ("model,sample_id,value\nbase,q000,3\nbase,q000,4\n", "a second label for model 'base', item 'q000' (first on line 2)", "labels.csv:3"),
    ("model,sample_id,value\n" + "".join(f"base,q{i:03d},3\n" for i in range(9)), "model 'base' has 8 labels on items its judge scored; "
     "calibration needs at least 10 (1 more are on items the judge could not score)", "labels.csv"),
]


@pytest.mark.parametrize("text,expect,where", BAD)
def test_bad_labels_are_one_line_exit_2(stored_run, tmp_path, capsys, text, expect, where):
    store, rid = stored_run
    labels = tmp_path / "labels.csv"
    labels.write_text(text)
    assert main(["calibrate", rid, "--scorer", "judge.quality", "--labels", str(labels), "--store", str(store)]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert expect in err and where in err and len(err.splitlines()) == 1, err
    assert captured.out == ""


def test_an_unknown_scorer_is_one_line(stored_run, tmp_path, capsys):
    store, rid = stored_run
    labels = _labels(tmp_path / "labels.csv", _label_rows("base", range(0, 12)))
    assert main(["calibrate", rid, "--scorer", "judge.qualty", "--labels", str(labels), "--store", str(store)]) == 2
    err = capsys.readouterr().err.strip()
    assert "no judge scorer 'judge.qualty' (judge scorers: judge.quality)" in err and len(err.splitlines()) == 1


def test_a_perfect_judge_gives_the_judge_mean_with_a_tight_interval():
    from evalkit import stats

    rng = np.random.default_rng(1)
    truth = rng.integers(1, 6, 500).astype(float)
    est = stats.ppi_mean(truth[:50], truth[:50], truth[50:])
    # PPI++'s power tuning gives a perfect judge lam = 1 / (1 + n/N) in expectation (here 0.9), not 1
    assert est.lam == pytest.approx(1 / (1 + 50 / 450), abs=0.08) and est.mean == pytest.approx(truth.mean(), abs=0.05)
    human = stats.classical_mean_ci(truth[:50])
    assert est.ci.high - est.ci.low < 0.5 * (human.high - human.low)
    # a judge that says nothing: the human mean, as if there were no judge
    flat = stats.ppi_mean(truth[:50], [3.0] * 50, [3.0] * 450)
    assert flat.lam == 0.0 and flat.mean == pytest.approx(truth[:50].mean())


# --- a mean gate with calibrate: (a real run: a loopback OpenAI server answers and judges) ---------------


def _judge_responder():
    from tests.support.loopback import example_for_schema, last_user_text, requested_schema

    def respond(api, req):
        schema = requested_schema(api, req)
        text = last_user_text(req)
        if schema is None:
            return text  # the candidate echoes its prompt
        out = text.split("<output>\n", 1)[1].split("\n</output>", 1)[0]
        verdict = example_for_schema(schema)
        verdict["correctness"] = 1 + int(out.split()[-1]) % 5  # the judge's score: the item number mod 5, on [1, 5]
        return verdict

    return respond


def _calibrated_project(tmp_path: Path, url: str, labels: str, gate_extra: str = "") -> Path:
    d = tmp_path / "suites" / "qa"
    d.mkdir(parents=True)
    (d / "suite.yaml").write_text("name: qa\nkind: regression\n")
    (d / "samples.jsonl").write_text("".join(json.dumps({"id": f"q{i:02d}", "messages": [{"role": "user", "content": f"question {i}"}]}) + "\n"
                                             for i in range(40)))
    (tmp_path / "labels.csv").write_text(labels)
    cfg = tmp_path / "eval.yaml"
    cfg.write_text(
        f"models:\n  cand: {{backend: openai, model: cand, base_url: '{url}', api_key_env: EK_TEST_KEY}}\n"
        "suites: [suites/qa]\nstore: store.db\n"
        f"judges:\n  - rubric: default\n    model: {{backend: openai, model: judge, base_url: '{url}', api_key_env: EK_TEST_KEY}}\n"
        f"gates:\n  - {{name: quality, metric: mean, scorer: judge.correctness, min: 2.5, calibrate: labels.csv{gate_extra}}}\n"
    )
    return cfg


def _human(i: int) -> int:
    return max(1, (1 + i % 5) - (1 if i % 3 else 0))  # the humans are stricter than the judge, mostly by one point


def test_a_calibrated_mean_gate_gates_the_human_estimate(tmp_path, loopback_api, monkeypatch, capsys):
    from evalkit import stats

    monkeypatch.setenv("EK_TEST_KEY", "sk-test")
    monkeypatch.chdir(tmp_path)
    loopback_api.set_responder(_judge_responder())
    labelled = list(range(0, 40, 2))  # 20 labels
    labels = "model,sample_id,value\n" + "".join(f"cand,q{i:02d},{_human(i)}\n" for i in labelled)
    cfg = _calibrated_project(tmp_path, loopback_api.base_url, labels)
    code = main(["run", str(cfg), "--out", "o", "--no-progress"])
    gate = json.loads(Path("o/summary.json").read_text())["gates"][0]
    judge = [1 + i % 5 for i in range(40)]
    est = stats.ppi_mean([_human(i) for i in labelled], [judge[i] for i in labelled], [judge[i] for i in range(40) if i not in labelled])
    assert gate["observed"] == pytest.approx(est.mean, abs=1e-9)
    assert est.mean < sum(judge) / 40  # the humans' estimate is below the generous judge's mean
    assert "PPI++ from 20 human labels" in gate["detail"] and "the judge alone says 3" in gate["detail"]
    cal = gate["calibration"]
    assert cal["n_labeled"] == 20 and cal["n_unlabeled"] == 20 and cal["judge_mean"] == pytest.approx(3.0) and cal["ci"][0] < est.mean < cal["ci"][1]
    md = Path("o/report.md").read_text()
    assert "| judge score, calibrated by human labels |" in md and "| judge.correctness | cand | 3 |" in md and "20 of 40 items" in md
    assert 'id="calibrated"' in Path("o/report.html").read_text()
    assert (code == 0) == (est.mean >= 2.5) and gate["passed"] == (est.mean >= 2.5)
    # the same estimate from `evalkit calibrate` on the stored run
    capsys.readouterr()
    assert main(["calibrate", "latest", "--scorer", "judge.correctness", "--labels", "labels.csv", "--store", "store.db", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["cand"]["ppi_mean"] == pytest.approx(est.mean, abs=1e-9)


@pytest.mark.parametrize("labels,expect", [
    ("model,sample_id,value\n" + "".join(f"cand,q{i:02d},9\n" for i in range(12)), "labels.csv:2: value 9 is outside the scale of judge.correctness [1, 5]"),
    ("model,sample_id,value\n" + "".join(f"cand,q{i:02d},3\n" for i in range(5)), "gate 'quality': model 'cand' has 5 labels; a calibrated gate needs at least 10"),
    ("model,sample_id,value\nother,q00,3\n", "labels.csv:2: model 'other' is not in this run"),
    ("model,sample_id,value\ncand,zz,3\n", "labels.csv:2: no item 'zz' in the scope of gate 'quality'"),
])
def test_a_calibrated_gate_with_bad_labels_is_refused_before_the_run(tmp_path, loopback_api, monkeypatch, capsys, labels, expect):
    monkeypatch.setenv("EK_TEST_KEY", "sk-test")
    monkeypatch.chdir(tmp_path)
    cfg = _calibrated_project(tmp_path, loopback_api.base_url, labels)
    assert main(["run", str(cfg), "--out", "o", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert expect in err and len(err.splitlines()) == 1, err
    assert not Path("o").exists() and loopback_api.requests == []  # nothing was generated


def test_a_calibrated_win_rate_gate(tmp_path):
    """win_rate with calibrate: the PPI++ win rate from human win/tie/loss labels and the pairwise judge's
    verdicts; with ci, no decision while its interval straddles the bound; too few usable labels block.
    """
    from evalkit import stats
    from evalkit.config import GateSpec
    from evalkit.gates import evaluate_gates

    judge = [1.0 if i % 3 else 0.5 for i in range(60)]  # a judge that says cand wins two of three, ties the rest
    human = {i: (1.0 if i % 2 else 0.0) for i in range(0, 60, 3)}  # people: a coin flip
    items = [RunItem("r", "cand", "c", "s", "v", f"q{i:02d}", {"id": f"q{i:02d}"}, f"g{i}", "out", None,
                     {"pairwise": Score("pairwise", judge[i], None, kind="pairwise", details={"vs": "base"})}) for i in range(60)]
    labels = _labels(tmp_path / "wins.csv", [("cand", f"q{i:02d}", v) for i, v in human.items()])

    def gate(**kw):
        return evaluate_gates([GateSpec(name="beats", metric="win_rate", judge="pairwise", calibrate=str(labels), **kw)], items=items,
                              models={}, baseline="base", candidates=["cand"])[0]

    lab = sorted(human)
    est = stats.ppi_mean([human[i] for i in lab], [judge[i] for i in lab], [judge[i] for i in range(60) if i not in human])
    r = gate(min=0.6)
    assert r.observed == pytest.approx(est.mean) and "calibrated win rate" in r.detail and "20 human labels" in r.detail
    assert r.passed is (est.mean >= 0.6)
    assert est.mean < sum(judge) / 60  # the judge is more generous than the people
    straddling = gate(min=est.mean, ci=0.95)
    assert straddling.outcome == "no_decision"
    few = tmp_path / "few.csv"
    _labels(few, [("cand", f"q{i:02d}", 1.0) for i in range(0, 15, 3)])
    r2 = evaluate_gates([GateSpec(name="beats", metric="win_rate", judge="pairwise", calibrate=str(few), min=0.5)], items=items, models={},
                        baseline="base", candidates=["cand"])[0]
    assert r2.outcome == "no_decision" and "calibration needs at least 10" in r2.detail


def test_calibrate_is_refused_on_gates_it_does_not_apply_to():
    from pydantic import ValidationError

    from evalkit.config import GateSpec

    for bad in ({"metric": "pass_rate", "scorer": "x", "min": 0.5}, {"metric": "mean", "scorer": "x", "min": 0, "vs": "baseline"},
                {"metric": "win_rate", "min": 0.5, "length_controlled": True}):
        with pytest.raises(ValidationError, match="'calibrate' applies to a mean gate"):
            GateSpec(name="g", calibrate="labels.csv", **bad)
