"""`evalkit noise`: the same model again under batch size, order and seed changes; which items flip;
stored, and quoted by later comparison gates of the config. On evalkit's shipped tiny base (hf).
"""

from __future__ import annotations

import json

import pytest

from evalkit.cli import main
from evalkit.store import NOISE_PREFIX, Store
from tests.test_samples import write


def test_noise_counts_flips_stores_them_and_gates_quote_them(tmp_path, capsys):
    cfg = write(tmp_path, samples=1, temperature=1.0, gates="  - {name: noreg, metric: regressions, scorer: json_valid, max: 10}")
    assert main(["noise", str(cfg), "--runs", "3", "--json", "--no-progress"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["model"] == "base" and report["runs"] == 3 and len(report["perturbations"]) == 3
    jv = report["suites"]["extract"]["json_valid"]
    ids = {f"extraction-7-{i}" for i in range(10)}
    assert jv["n"] == 10 and set(jv["flipped"]) <= ids and jv["rate"] == pytest.approx(len(jv["flipped"]) / 10)
    assert jv["flipped"], "sampled at temperature 1 with other seeds, some verdicts must move"
    with Store(tmp_path / "store.db") as st:
        [rec] = [r for r in st.list_runs() if r.name == NOISE_PREFIX + "eval"]
        assert rec.summary["noise"]["suites"]["extract"]["json_valid"]["flipped"] == jv["flipped"]
    # a later run of the config: its regressions gate quotes the measured noise of the baseline
    assert main(["run", str(cfg), "--out", str(tmp_path / "o"), "--no-progress"]) == 0
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    [g] = summary["gates"]
    assert f"Measured noise of base (evalkit noise, run {rec.run_id}, 3 runs): {len(jv['flipped'])} of 10 on extract" in g["detail"]


def test_the_first_run_is_the_stored_one(tmp_path, capsys):
    """Greedy: the stored outputs are reused (no call for run 1), and the text output names the runs."""
    cfg = write(tmp_path, samples=1, temperature=0.0, n=4)
    assert main(["run", str(cfg), "--out", str(tmp_path / "o"), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["noise", str(cfg), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("base: 2 runs (the stored run; batch size 8, shuffled order, seed +1000)") and "json_valid" in out


@pytest.mark.parametrize("args,what", [(["--runs", "1"], "--runs"), (["--model", "nope"], "--model"), (["--runz", "2"], "--runz")])
def test_bad_noise_input_is_one_line(tmp_path, capsys, args, what):
    cfg = write(tmp_path, samples=1, n=2)
    assert main(["noise", str(cfg), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and what in err[0], err
    assert not (tmp_path / "store.db").exists()
