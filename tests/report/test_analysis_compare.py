"""Unit tests for report/analysis.py (the numbers the HTML report shows) and report/compare.py
(`evalkit compare`), on hand-made items: every figure checked against a direct computation.
"""

from __future__ import annotations

import pytest
from scipy import stats as sps

from evalkit.errors import UserError
from evalkit.report import analysis as A
from evalkit.report.compare import compare_runs, render_compare_text
from evalkit.store import RunRecord
from tests.report.crafted import item, ok


def judge(v: float) -> dict:
    return {"value": v, "passed": None, "kind": "judge", "details": {"judge": "default"}}


def pairwise(v: float) -> dict:
    return {"value": v, "passed": None, "kind": "pairwise", "details": {"judge": "pw"}}


def _items() -> list:
    out = []
    base_fmt = [True] * 10
    cand_fmt = [True, False, True, True, False, True, True, True, True, True]
    for i in range(10):
        tags = ("short",) if i % 2 else ("long",)
        out.append(item("base", f"x{i}", {"fmt": ok(base_fmt[i]), "judge.correctness": judge(3.0)}, tags=tags, output=f"b{i}"))
        cand = {"fmt": ok(cand_fmt[i]), "judge.correctness": judge(4.0 if i < 8 else 2.0), "pw": pairwise([1.0, 1.0, 0.5, 0.0][i % 4])}
        if i == 9:
            cand["fmt"] = ok(None, error="validator crashed")
        out.append(item("cand", f"x{i}", cand, tags=tags, output=f"c{i}"))
    return out


def test_metric_rows_pass_rates_means_cis_and_errors():
    rows = {(r["model"], r["scorer"]): r for r in A.metric_rows(_items())}
    fmt = rows[("cand", "fmt")]
    assert fmt["metric"] == "pass_rate" and fmt["n"] == 9 and fmt["errors"] == 1
    assert fmt["value"] == pytest.approx(7 / 9) and fmt["ci_low"] <= 7 / 9 <= fmt["ci_high"]
    jc = rows[("cand", "judge.correctness")]
    assert jc["metric"] == "mean" and jc["value"] == pytest.approx((8 * 4 + 2 * 2) / 10) and jc["n"] == 10
    by_tag = {(r["model"], r["tag"], r["scorer"]): r for r in A.metric_rows(_items(), by_tag=True)}
    assert by_tag[("base", "short", "fmt")]["n"] == 5 and by_tag[("base", "short", "fmt")]["value"] == 1.0


def test_distributions_win_rates_and_the_sign_test():
    dist = A.score_distributions(_items())
    assert dist["judge.correctness"]["cand"] == {2.0: 2, 4.0: 8} and "pw" not in dist and "fmt" not in dist
    [w] = A.win_rates(_items())
    # values cycle 1, 1, 0.5, 0 over x0..x9: 6 wins, 2 ties, 2 losses
    assert (w["model"], w["judge"], w["wins"], w["ties"], w["losses"], w["n"]) == ("cand", "pw", 6, 2, 2, 10)
    assert w["value"] == pytest.approx((6 + 0.5 * 2) / 10)
    assert w["p_value"] == pytest.approx(sps.binomtest(6, 8, 0.5).pvalue)  # ties dropped
    # these scores name no compared model and record no lengths: no length-controlled rate, not a made-up one
    assert w["lc_value"] is None and w["lc_low"] is None


def test_win_rates_length_controlled_column_and_position_bias_table():
    from evalkit import stats
    from evalkit.report import render_html

    vals = [1.0, 1.0, 1.0, 0.0, 1.0, 0.5, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0]
    diffs = [300, 250, 400, -20, 180, 0, 220, -150, 90, 310, -60, 45]
    items = [item("cand", f"x{i}", {"pw": {"value": v, "passed": None, "kind": "pairwise", "details": {"judge": "pw", "vs": "base", "length_diff": d}}})
             for i, (v, d) in enumerate(zip(vals, diffs))]
    [w] = A.win_rates(items)
    lc = stats.length_controlled_win_rate(vals, diffs)
    assert w["lc_value"] == pytest.approx(lc.estimate) and (w["lc_low"], w["lc_high"]) == pytest.approx((lc.low, lc.high))
    assert w["lc_value"] < w["value"] and w["length_coef"] > 0  # every loss is the shorter answer's
    summary = {"run_id": "r", "candidates": ["cand"], "baseline": "base", "gates": [], "metrics": [],
               "judges": {"pw": {"mode": "pairwise", "position_bias_rate": 0.25,
                                 "position_bias": {"openai:<b>judge</b>": {"pairs": 12, "flips": 3, "flip_rate": 0.25, "first_position_preference": 0.7143, "ties": 4, "ties_from_flips": 3}}}}}
    assert A.position_bias(summary) == [{"judge": "pw", "judge_model": "openai:<b>judge</b>", "pairs": 12, "flips": 3, "flip_rate": 0.25,
                                         "first_position_preference": 0.7143, "ties": 4, "ties_from_flips": 3}]
    page = render_html(summary, items)
    assert "length-controlled</th>" in page and f"{lc.estimate:.3g}" in page
    assert "ties from flips</th>" in page and "openai:&lt;b&gt;judge&lt;/b&gt;" in page and "<b>judge" not in page
    assert "pw.position_bias.openai" not in page  # shown once, in its own table


def test_worst_regressions_first_and_tag_deltas():
    rows = A.worst_regressions(_items(), "base", ["cand"])
    assert [r["sample_id"] for r in rows][:2] == ["x1", "x4"]  # fmt flipped: regressions lead
    assert rows[0]["regressed"] and rows[0]["flipped"] == ["fmt"] and rows[0]["baseline_output"] == "b1"
    assert all(r["sample_id"] != "x9" or not r["regressed"] for r in rows)  # an errored validator is not a regression
    deltas = {(r["model"], r["tag"]): r for r in A.tag_deltas(_items(), "base", ["cand"])}
    # short = odd ids: x1 failed, x9 unscored -> 3/4 vs 4/4; long = even ids: x4 failed -> 4/5 vs 5/5
    assert deltas[("cand", "short")]["delta"] == pytest.approx(-0.25) and deltas[("cand", "short")]["n"] == 4
    assert deltas[("cand", "long")]["delta"] == pytest.approx(-0.2) and deltas[("cand", "long")]["n"] == 5


def _rec(run_id: str) -> RunRecord:
    return RunRecord(run_id, "n", 0.0, 1.0, "passed", None, {}, {}, None, False)


def test_compare_runs_paired_tests_against_scipy():
    a_items, b_items = [], []
    a_pass = [True] * 12 + [False] * 3
    b_pass = [True] * 8 + [False] * 4 + [True] * 3  # 4 worse, 3 better (discordant 7)
    for i in range(15):
        a_items.append(item("cand", f"s{i}", {"fmt": ok(a_pass[i]), "judge.q": judge(3.0)}, run_id="A", output=f"a{i}"))
        b_items.append(item("cand", f"s{i}", {"fmt": ok(b_pass[i]), "judge.q": judge(3.0 + (i % 3))}, run_id="B", output=f"a{i}" if i < 10 else f"b{i}"))
    a_items.append(item("cand", "only-a", {"fmt": ok(True)}, run_id="A"))
    b_items[0] = item("cand", "s0", {"fmt": ok(None, error="boom"), "judge.q": judge(3.0)}, run_id="B", output="a0")
    res = compare_runs(_rec("A"), a_items, _rec("B"), b_items)
    [c] = res["comparisons"]
    assert (c["paired_items"], c["only_in_a"], c["only_in_b"], c["changed_outputs"]) == (15, 1, 0, 5)
    fmt = next(s for s in c["scorers"] if s["scorer"] == "fmt")
    assert fmt["kind"] == "pass_rate" and fmt["errors_dropped"] == 1 and fmt["n"] == 14
    assert sorted(fmt["worse"]) == ["s10", "s11", "s8", "s9"] and sorted(fmt["better"]) == ["s12", "s13", "s14"]
    assert fmt["p_value"] == pytest.approx(sps.binomtest(3, 7, 0.5).pvalue)
    q = next(s for s in c["scorers"] if s["scorer"] == "judge.q")
    assert q["kind"] == "mean" and q["b"] > q["a"] and not q["worse"]
    assert q["p_value"] == pytest.approx(sps.wilcoxon([i % 3 for i in range(15)], zero_method="wilcox").pvalue)
    text = render_compare_text(res)
    assert "cand (A) vs cand (B): 15 paired items, 5 outputs changed, 1 only in A" in text and "worse on fmt:" in text
    with pytest.raises(UserError, match="share no model name"):
        compare_runs(_rec("A"), a_items, _rec("B"), [item("other", "s0", {}, run_id="B")])
