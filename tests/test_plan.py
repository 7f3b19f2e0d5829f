"""`evalkit plan`: items each comparison gate needs, from the noise of the latest stored run."""

from __future__ import annotations

import json

import pytest

from evalkit import stats
from evalkit.cli import main
from evalkit.planning import ASSUMED_DISCORDANCE, plan_power
from evalkit.store import Store
from tests.report.crafted import item, ok
from tests.test_run import make_suite

GATES = """gates:
  - {name: noreg, metric: regressions, scorer: exact_match, max: 2}
  - {name: better, metric: pass_rate, scorer: exact_match, vs: baseline, min: 0, significant: 0.05}
  - {name: floor, metric: pass_rate, scorer: json_valid, min: 0.9}
  - {name: applied, metric: adapter_applied}
"""


def write_eval(tmp_path, n=20):
    make_suite(tmp_path, n=n)
    cfg = tmp_path / "eval.yaml"
    cfg.write_text("name: nightly\nmodels:\n  base: {backend: hf, path: /m}\n  cand: {backend: hf, path: /m, adapter: /a}\n"
                   f"baseline: base\nsuites: [suites/extract]\nstore: store.db\n{GATES}")
    return cfg


def store_run(tmp_path, base_pass, cand_pass, name="nightly"):
    st = Store(tmp_path / "store.db")
    try:
        rid = st.begin_run(name=name, config_path=None, config={}, out_dir=None)
        items = []
        for i, (b, c) in enumerate(zip(base_pass, cand_pass)):
            items.append(item("base", f"s{i}", {"exact_match": ok(b), "json_valid": ok(True)}, suite="extract", run_id=rid))
            items.append(item("cand", f"s{i}", {"exact_match": ok(c), "json_valid": ok(True)}, suite="extract", run_id=rid))
        st.save_run_items(rid, items)
        st.finish_run(rid, {"run_id": rid, "name": name, "passed": True}, "passed")
        return rid
    finally:
        st.close()


def test_the_noise_of_the_latest_run_sizes_each_comparison(tmp_path):
    cfg = write_eval(tmp_path)
    base = [True] * 14 + [False] * 6
    cand = [True] * 11 + [False] * 3 + [True] * 5 + [False]  # 3 regressed, 5 fixed: 8 of 20 discordant
    rid = store_run(tmp_path, base, cand)
    plan = plan_power(cfg, effect=0.1)
    assert plan.run_id == rid
    rows = {r.gate: r for r in plan.rows}
    assert rows["noreg"].items_needed == stats.n_mcnemar(0.1, 8 / 20) and "0.4 of 20 pairs with base discordant" in rows["noreg"].basis
    assert rows["better"].items_needed == stats.n_mcnemar(0.1, 8 / 20, alpha=0.05)
    assert rows["floor"].items_needed == stats.n_one_proportion(0.1, 0.9)
    assert rows["applied"].items_needed is None and "not a statistical comparison" in rows["applied"].basis
    assert all(r.items_now == 20 and r.suite == "extract" and r.model == "cand" for r in plan.rows)
    # more power, more items; a bigger effect, fewer
    assert plan_power(cfg, effect=0.1, power=0.9).rows[0].items_needed > rows["noreg"].items_needed
    assert plan_power(cfg, effect=0.2).rows[0].items_needed < rows["noreg"].items_needed


def test_without_a_stored_run_it_says_what_it_assumes(tmp_path, capsys):
    cfg = write_eval(tmp_path)
    store_run(tmp_path, [True] * 20, [False] * 20, name="another-config")  # not this config's run
    plan = plan_power(cfg, effect=0.05)
    assert plan.run_id is None
    noreg = plan.rows[0]
    assert noreg.items_needed == stats.n_mcnemar(0.05, ASSUMED_DISCORDANCE) and "assumed discordance 0.2" in noreg.basis
    assert main(["plan", str(cfg), "--effect", "0.05"]) == 0
    out = capsys.readouterr().out
    assert "assumed noise" in out and "need more items than their suite has" in out


def test_json_output_has_the_documented_shape(tmp_path, capsys):
    cfg = write_eval(tmp_path)
    store_run(tmp_path, [True] * 20, [True] * 18 + [False] * 2)
    assert main(["plan", str(cfg), "--effect", "0.1", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["effect"] == 0.1 and data["power"] == 0.8 and data["run"]
    row = data["suites"][0]
    assert {"suite", "gate", "model", "items_needed", "items_now", "basis"} <= set(row) and row["suite"] == "extract"


@pytest.mark.parametrize("args,what", [(["--effect", "0"], "--effect"), (["--effect", "1.5"], "--effect"), (["--effect", "-0.1"], "--effect"),
                                       (["--effect", "0.1", "--power", "1"], "--power"), (["--effect", "x"], "--effect"),
                                       (["--effct", "0.1"], "--effct")])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, args, what):
    cfg = write_eval(tmp_path)
    assert main(["plan", str(cfg), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and what in err[0]
    assert not (tmp_path / "store.db").exists()  # nothing written


def test_a_missing_config_is_one_line(tmp_path, capsys):
    assert main(["plan", str(tmp_path / "nope.yaml"), "--effect", "0.1"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
