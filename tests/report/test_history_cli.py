"""`evalkit runs list`, `accept`, `report`, `compare`, `export` on a store with crafted runs."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pandas as pd
import pytest

from evalkit import gates as G
from evalkit.cli import main
from evalkit.store import Store
from tests.report.crafted import MODELS, config_with, item, ok, summary_for

GATES = [
    {"name": "fmt", "metric": "pass_rate", "scorer": "fmt", "min": 0.8},
    {"name": "noreg", "metric": "regressions", "scorer": "fmt", "vs": "last_accepted"},
]


def record_run(store: Store, cand_pass: list[bool], judge: list[float], *, name: str = "nightly") -> str:
    cfg = config_with(GATES)
    run_id = store.begin_run(name=name, config_path="eval.yaml", config=cfg.model_dump(mode="json"), out_dir=None)
    items = []
    for i, (p, j) in enumerate(zip(cand_pass, judge)):
        items.append(item("base", f"x{i}", {"fmt": ok(True), "judge.correctness": ok(None, value=3.0)}, output=f"base {i}", run_id=run_id, tags=("t1",) if i % 2 else ("t2",)))
        items.append(item("cand", f"x{i}", {"fmt": ok(p), "judge.correctness": ok(None, value=j)}, output=f"cand {i} {p}", run_id=run_id, tags=("t1",) if i % 2 else ("t2",)))
    results = G.evaluate_gates(cfg.gates, items=items, models=MODELS, baseline="base", candidates=["cand"], store=store, run_name=name, run_id=run_id)
    passed = all(r.outcome in ("pass", "warn") for r in results)
    summary = summary_for(items, [r.as_dict() for r in results], passed, run_id=run_id, name=name)
    store.save_run_items(run_id, items)
    store.finish_run(run_id, summary, "passed" if passed else "failed")
    return run_id


@pytest.fixture
def history(store_url):
    """Two runs, the first accepted: in a SQLite file and in a PostgreSQL database (every test here runs on both)."""
    db = store_url
    with Store(db) as st:
        first = record_run(st, [True] * 8, [4.0] * 8)
        st.set_accepted(first)
        second = record_run(st, [True, False, True, True, False, True, True, True], [4, 2, 4, 5, 1, 4, 4, 5])
    return db, first, second


def test_runs_list_shows_accepted_and_verdicts(history, capsys):
    db, first, second = history
    assert main(["runs", "list", "--store", str(db)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("run (* accepted)")
    assert out[1].startswith(" " + second) and "failed" in out[1] and "0/2" in out[1]
    assert out[2].startswith("*" + first) and "passed" in out[2] and "2/2" in out[2]
    assert main(["runs", "list", "--store", str(db), "--json"]) == 0
    rows = [json.loads(l) for l in capsys.readouterr().out.splitlines()]
    assert [r["accepted"] for r in rows] == [False, True]


def test_last_accepted_gate_named_the_regressions(history):
    db, first, second = history
    with Store(db) as st:
        g = next(x for x in st.get_run(second).summary["gates"] if x["name"] == "noreg")
    assert g["outcome"] == "fail" and g["failing_items"] == ["x1", "x4"] and first in g["detail"]


def test_accept_refuses_failed_runs_unless_forced(history, capsys):
    db, first, second = history
    assert main(["accept", second, "--store", str(db)]) == 2
    assert "did not pass" in capsys.readouterr().err
    assert main(["accept", second, "--store", str(db), "--force"]) == 0
    with Store(db) as st:
        assert st.last_accepted().run_id == second
    assert main(["accept", second, "--store", str(db), "--undo"]) == 0
    with Store(db) as st:
        assert st.last_accepted().run_id == first


def test_report_rebuilds_from_store_alone(history, tmp_path, capsys):
    db, first, second = history
    out = tmp_path / "rebuilt"
    assert main(["report", second, "--out", str(out), "--store", str(db)]) == 0
    text = capsys.readouterr().out
    assert "DON'T SHIP" in text and str(out / "report.html") in text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["run_id"] == second and summary["passed"] is False
    assert len((out / "items.jsonl").read_text().splitlines()) == 16
    root = ET.parse(out / "junit.xml").getroot()
    assert root.find("testsuite").get("failures") == "2"
    page = (out / "report.html").read_text()
    assert 'class="plot plot-trend"' in page  # the trend over accepted runs
    assert "x1" in page and "Worst regressions" in page


def test_report_regate_updates_verdict(history, tmp_path, capsys):
    db, first, second = history
    # accepting the second run (forced) changes nothing for the second run itself: it is excluded
    assert main(["report", first, "--out", str(tmp_path / "o"), "--store", str(db), "--regate"]) == 0
    with Store(db) as st:
        rec = st.get_run(first)
    assert rec.status == "passed" and any("re-evaluated" in w for w in rec.summary["warnings"])


def test_compare_paired_tests(history, capsys):
    db, first, second = history
    assert main(["compare", first, second, "--store", str(db)]) == 0
    text = capsys.readouterr().out
    assert "cand (A) vs cand (B): 8 paired items" in text
    assert "worse on fmt: x1, x4" in text and "mcnemar_exact" in text and "wilcoxon" in text
    assert main(["compare", first, second, "--store", str(db), "--json", "--model-a", "cand"]) == 0
    data = json.loads(capsys.readouterr().out)
    [comp] = data["comparisons"]
    fmt = next(s for s in comp["scorers"] if s["scorer"] == "fmt")
    assert fmt["worse"] == ["x1", "x4"] and fmt["p_value"] == pytest.approx(0.5)
    assert fmt["delta"] == pytest.approx(-0.25)
    assert main(["compare", first, second, "--store", str(db), "--model-a", "ghost"]) == 2


@pytest.mark.parametrize("suffix", ["csv", "parquet", "jsonl"])
def test_export_formats(history, tmp_path, suffix, capsys):
    db, first, second = history
    out = tmp_path / f"items.{suffix}"
    assert main(["export", second, "--out", str(out), "--store", str(db)]) == 0
    df = {"csv": pd.read_csv, "parquet": pd.read_parquet, "jsonl": lambda p: pd.read_json(p, lines=True)}[suffix](out)
    assert len(df) == 16
    assert {"model", "suite", "sample_id", "output", "prompt", "fmt.passed", "judge.correctness.value"} <= set(df.columns)
    cand = df[df["model"] == "cand"].sort_values("sample_id")
    assert list(cand["fmt.passed"].astype(bool)) == [True, False, True, True, False, True, True, True]


def test_user_errors_are_one_line(tmp_path, history, capsys):
    db, first, second = history
    assert main(["runs", "list", "--store", str(tmp_path / "none.db")]) == 2
    assert main(["report", "nope", "--out", str(tmp_path / "o"), "--store", str(db)]) == 2
    assert main(["export", second, "--out", str(tmp_path / "x.xlsx"), "--store", str(db)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(l.startswith("error: ") for l in err)
    assert "no store here" in err[0] and "no run 'nope'" in err[1] and "unknown export format" in err[2]


def test_help_teaches(capsys):
    for cmd in (["runs", "list"], ["runs", "show"], ["accept"], ["report"], ["compare"], ["export"]):
        with pytest.raises(SystemExit) as e:
            from evalkit.cli import app

            app(args=[*cmd, "--help"])
        assert e.value.code == 0
        assert "Example:" in capsys.readouterr().out


def test_runs_show(history, capsys):
    db, first, second = history
    assert main(["runs", "show", second, "--store", str(db)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("FAIL  DON'T SHIP") and any("noreg" in l and "x1" in l for l in lines)


def test_regate_decides_with_the_judge_statistics_the_run_used(tmp_path, capsys):
    """A mean gate whose threshold lies inside the judges' noise band (summary.judges) is undecided at
    the end of the run; `report --regate` reads the same band, so it stays undecided (it used to
    re-gate without the judge statistics and pass).
    """
    db = tmp_path / "store.db"
    gates = [{"name": "quality", "metric": "mean", "scorer": "judge.correctness", "min": 3.5}]
    cfg = config_with(gates)
    with Store(db) as st:
        run_id = st.begin_run(name="n", config_path="eval.yaml", config=cfg.model_dump(mode="json"), out_dir=None)
        items = [item("cand", f"x{i}", {"judge.correctness": ok(None, value=v)}, run_id=run_id) for i, v in enumerate([3.0, 4.0, 4.0, 4.0])]
        judges = {"default": {"no_decision_within_noise": True, "noise": {"cand": {"judge.correctness": {"low": 3.25, "high": 3.9}}}}}
        from evalkit.record import RunSummary

        record = RunSummary(run_id=run_id, name="n", models={n: m for n, m in MODELS.items()}, baseline="base", candidates=["cand"], judges=judges)
        record = G.regate_run(cfg.gates, record, items, store=st)
        assert record.gates[0].outcome == "no_decision" and "judges' own noise" in record.gates[0].detail
        st.save_run_items(run_id, items)
        st.finish_run(run_id, record.to_json(), "failed")
    assert main(["report", run_id, "--out", str(tmp_path / "o"), "--store", str(db), "--regate"]) == 1
    regated = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert regated["gates"][0]["outcome"] == "no_decision" and regated["gates"][0]["observed"] == 3.75
