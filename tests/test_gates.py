"""Gates on crafted run items: pass, fail, no decision, warn; threshold 0; items named; history."""

from __future__ import annotations

import pytest

from evalkit import gates as G
from evalkit.store import Store
from tests.report.crafted import MODELS, config_with, gate, item, ok, two_model_items


def run(gs, items, *, baseline="base", candidates=("cand",), store=None, run_name=None, run_id=None, models=MODELS):
    return G.evaluate_gates(gs, items=items, models=models, baseline=baseline, candidates=list(candidates), store=store, run_name=run_name, run_id=run_id)


def test_pass_rate_pass_and_fail_name_items():
    items = two_model_items([True] * 4, [True, False, True, False])
    [r] = run([gate(name="fmt", metric="pass_rate", scorer="fmt", min=0.75)], items)
    assert r.model == "cand" and r.outcome == "fail" and r.passed is False
    assert r.observed == 0.5 and r.threshold == 0.75
    assert r.failing_items == ("x1", "x3")
    assert "x1" in r.detail and r.detail.endswith(".")
    [r] = run([gate(name="fmt", metric="pass_rate", scorer="fmt", min=0.5)], items)
    assert r.outcome == "pass" and r.passed is True and r.failing_items == ()


def test_threshold_zero_is_honoured():
    items = two_model_items([True] * 3, [False] * 3)
    # min 0: a pass rate of 0 meets it
    [r] = run([gate(name="z", metric="pass_rate", scorer="fmt", min=0)], items)
    assert r.passed is True and r.threshold == 0
    # max 0: any error fails (an error rate of 1/3 > 0)
    items.append(item("cand", "x9", {"fmt": ok(None, error="boom")}, error="timeout"))
    [r] = run([gate(name="e", metric="error_rate", max=0)], items)
    assert r.passed is False and r.failing_items == ("x9",) and r.threshold == 0
    # mean with min 0.0 on values of 0.0 passes; max 0 on values of 0.0 passes too
    m = [item("cand", f"y{i}", {"score": ok(None, value=0.0)}) for i in range(3)]
    assert run([gate(name="m", metric="mean", scorer="score", min=0)], m)[0].passed is True
    assert run([gate(name="m", metric="mean", scorer="score", max=0)], m)[0].passed is True
    assert run([gate(name="m", metric="mean", scorer="score", max=-0.5)], m)[0].passed is False


def test_errors_excluded_and_counted():
    items = [
        item("cand", "a", {"fmt": ok(True)}),
        item("cand", "b", {"fmt": ok(None, error="validator crashed")}),
        item("cand", "c", {"fmt": ok(False)}),
    ]
    [r] = run([gate(name="fmt", metric="pass_rate", scorer="fmt", min=0.5)], items)
    assert r.observed == 0.5 and r.passed is True
    assert "1 unscored" in r.detail


def test_gate_without_model_applies_to_every_candidate():
    items = two_model_items([True, True], [True, False]) + [item("cand2", "x0", {"fmt": ok(True)}), item("cand2", "x1", {"fmt": ok(True)})]
    rs = run([gate(name="fmt", metric="pass_rate", scorer="fmt", min=1)], items, candidates=("cand", "cand2"))
    assert [(r.model, r.outcome) for r in rs] == [("cand", "fail"), ("cand2", "pass")]
    rs = run([gate(name="fmt", metric="pass_rate", scorer="fmt", min=1, model="base")], items, candidates=("cand", "cand2"))
    assert [(r.model, r.outcome) for r in rs] == [("base", "pass")]


def test_suite_and_tag_filters_and_suite_prefixed_ids():
    items = [
        item("cand", "a", {"fmt": ok(False)}, suite="s1", tags=("hard",)),
        item("cand", "a", {"fmt": ok(False)}, suite="s2"),
        item("cand", "b", {"fmt": ok(True)}, suite="s2", tags=("hard",)),
    ]
    [r] = run([gate(name="all", metric="pass_rate", scorer="fmt", min=1)], items)
    assert r.failing_items == ("s1/a", "s2/a")  # several suites: suite/sample_id
    [r] = run([gate(name="one", metric="pass_rate", scorer="fmt", min=1, suite="s2")], items)
    assert r.failing_items == ("a",) and r.observed == 0.5
    [r] = run([gate(name="tag", metric="pass_rate", scorer="fmt", min=0.5, tag="hard")], items)
    assert r.observed == 0.5 and r.passed is True


def test_regressions_vs_baseline():
    items = two_model_items([True, True, False, True], [True, False, True, False])
    [r] = run([gate(name="noreg", metric="regressions", scorer="fmt")], items)
    assert r.threshold == 0 and r.observed == 2 and r.outcome == "fail"
    assert r.failing_items == ("x1", "x3")
    assert "1 the other way" in r.detail
    [r] = run([gate(name="noreg", metric="regressions", scorer="fmt", max=2)], items)
    assert r.passed is True


def test_regressions_every_validator_and_judges_ignored():
    items = [
        item("base", "a", {"v1": ok(True), "v2": ok(True), "judge.correctness": ok(None, value=5)}),
        item("cand", "a", {"v1": ok(True), "v2": ok(False), "judge.correctness": ok(None, value=5)}),
        item("base", "b", {"v1": ok(True), "v2": ok(True)}),
        item("cand", "b", {"v1": ok(True), "v2": ok(True)}),
    ]
    [r] = run([gate(name="noreg", metric="regressions")], items)
    assert r.failing_items == ("a",) and r.observed == 1


def test_regressions_never_mix_suite_versions():
    items = [item("base", "a", {"fmt": ok(True)}, version="v1"), item("cand", "a", {"fmt": ok(False)}, version="v2")]
    [r] = run([gate(name="noreg", metric="regressions", scorer="fmt")], items)
    assert r.outcome == "no_decision" and r.passed is None and "share no item" in r.detail


def test_regressions_significant_mcnemar():
    # 3 regressions, 0 fixes: McNemar exact p = 0.25 -> not significant at 0.05 -> warn (not blocking)
    items = two_model_items([True] * 10, [False] * 3 + [True] * 7)
    [r] = run([gate(name="noreg", metric="regressions", scorer="fmt", significant=0.05)], items)
    assert r.outcome == "warn" and not G.blocks(r)
    assert r.p_value == pytest.approx(0.25)
    assert r.failing_items == ("x0", "x1", "x2")
    # 8 regressions, 0 fixes: p = 2 * 0.5**8 = 0.0078 -> significant -> fail
    items = two_model_items([True] * 10, [False] * 8 + [True] * 2)
    [r] = run([gate(name="noreg", metric="regressions", scorer="fmt", significant=0.05)], items)
    assert r.outcome == "fail" and r.p_value == pytest.approx(2 * 0.5**8)


def test_no_decision_when_ci_straddles_threshold():
    # 6/10 pass; 95% CI roughly [0.3, 0.9] straddles 0.7
    items = two_model_items([True] * 10, [True] * 6 + [False] * 4)
    [r] = run([gate(name="fmt", metric="pass_rate", scorer="fmt", min=0.7, ci=0.95)], items)
    assert r.outcome == "no_decision" and r.passed is None and G.blocks(r)
    assert "straddles" in r.detail and r.failing_items == ("x6", "x7", "x8", "x9")
    [r] = run([gate(name="fmt", metric="pass_rate", scorer="fmt", min=0.7, ci=0.95, on_no_decision="warn")], items)
    assert r.outcome == "warn" and r.passed is None and not G.blocks(r)
    [r] = run([gate(name="fmt", metric="pass_rate", scorer="fmt", min=0.7, ci=0.95, on_no_decision="pass")], items)
    assert r.outcome == "pass" and r.passed is True
    # without ci the point estimate decides
    [r] = run([gate(name="fmt", metric="pass_rate", scorer="fmt", min=0.7)], items)
    assert r.outcome == "fail"
    # a clear case decides even with ci: 100/100 vs min 0.7
    many = two_model_items([True] * 100, [True] * 100)
    assert run([gate(name="fmt", metric="pass_rate", scorer="fmt", min=0.7, ci=0.95)], many)[0].outcome == "pass"


def test_mean_within_judge_noise_is_no_decision():
    items = [item("cand", f"i{k}", {"judge.correctness": ok(None, value=v, std=1.5, repeats=3)}) for k, v in enumerate([3, 4, 5, 4])]
    # mean 4.0; judge noise band = 1.96 * sqrt(4 * 1.5**2 / 3) / 4 = 0.85 -> min 3.5 is within it
    [r] = run([gate(name="q", metric="mean", scorer="judge.correctness", min=3.5)], items)
    assert r.outcome == "no_decision" and "judges' own noise" in r.detail
    [r] = run([gate(name="q", metric="mean", scorer="judge.correctness", min=2.0)], items)
    assert r.outcome == "pass" and r.observed == 4.0
    quiet = [item("cand", f"i{k}", {"judge.correctness": ok(None, value=v, std=0.0, repeats=3)}) for k, v in enumerate([3, 4, 5, 4])]
    assert run([gate(name="q", metric="mean", scorer="judge.correctness", min=3.9)], quiet)[0].outcome == "pass"


def test_mean_fail_names_lowest_items():
    items = [item("cand", f"i{k}", {"judge.correctness": ok(None, value=v)}) for k, v in enumerate([5, 1, 2, 5])]
    [r] = run([gate(name="q", metric="mean", scorer="judge.correctness", min=3.5)], items)
    assert r.outcome == "fail" and r.observed == 3.25 and r.failing_items == ("i1", "i2")


def test_mean_vs_baseline_wilcoxon():
    from scipy import stats

    base_v = [3, 3, 2, 4, 3, 2, 3, 3, 2, 3]
    cand_v = [4, 5, 3, 5, 4, 4, 5, 4, 3, 4]
    items = []
    for k, (b, c) in enumerate(zip(base_v, cand_v)):
        items.append(item("base", f"i{k}", {"judge.q": ok(None, value=b)}))
        items.append(item("cand", f"i{k}", {"judge.q": ok(None, value=c)}))
    [r] = run([gate(name="better", metric="mean", scorer="judge.q", vs="baseline", min=0.5, significant=0.05)], items)
    expected = stats.wilcoxon([c - b for b, c in zip(base_v, cand_v)]).pvalue
    assert r.observed == pytest.approx(1.3) and r.p_value == pytest.approx(expected) and r.outcome == "pass"
    # not significant on 3 items -> a min gate must fail
    [r] = run([gate(name="better", metric="mean", scorer="judge.q", vs="baseline", min=0.5, significant=0.05)], items[:6])
    assert r.outcome == "fail" and "not a significant improvement" in r.detail


def test_win_rate_and_sign_test():
    from scipy import stats

    vals = [1, 1, 1, 1, 1, 1, 1, 1, 0.5, 0]  # 8 wins, 1 tie, 1 loss
    items = [item("cand", f"i{k}", {"judge.pairwise": ok(None, value=v)}) for k, v in enumerate(vals)]
    [r] = run([gate(name="beats", metric="win_rate", judge="pairwise", min=0.5, significant=0.05)], items)
    assert r.observed == pytest.approx(0.85)
    assert r.p_value == pytest.approx(stats.binomtest(8, 9, 0.5).pvalue)
    assert r.outcome == "pass"
    [r] = run([gate(name="beats", metric="win_rate", judge="pairwise", min=0.9)], items)
    assert r.outcome == "fail" and r.failing_items == ("i9",)
    # 3 wins, 1 loss: win rate >= 0.5 but the sign test cannot show it
    [r] = run([gate(name="beats", metric="win_rate", judge="pairwise", min=0.5, significant=0.05)], items[6:])
    assert r.outcome == "fail" and "not significantly better" in r.detail


def test_adapter_applied():
    same = [item(m, f"i{k}", {}, output=f"o{k}") for m in ("base", "cand") for k in range(3)]
    [r] = run([gate(name="adapter", metric="adapter_applied")], same)
    assert r.outcome == "fail" and r.failing_items == ("i0", "i1", "i2") and "not applied" in r.detail
    diff = same[:3] + [item("cand", "i0", {}, output="different"), *same[4:]]
    [r] = run([gate(name="adapter", metric="adapter_applied")], diff)
    assert r.outcome == "pass" and "differ" in r.detail
    # no adapter: nothing to check
    models = {**MODELS, "cand": {**MODELS["cand"], "adapter": None}}
    [r] = run([gate(name="adapter", metric="adapter_applied")], same, models=models)
    assert r.passed is True and "no adapter" in r.detail


def test_human_unshippable_without_review_results():
    [r] = run([gate(name="humans", metric="human_unshippable", max=2)], two_model_items([True], [True]))
    assert r.passed is None and "no review results" in r.detail


def test_missing_scorer_is_no_decision_not_crash():
    [r] = run([gate(name="fmt", metric="pass_rate", scorer="nope", min=0.5)], two_model_items([True], [True]))
    assert r.outcome == "no_decision" and "'nope'" in r.detail


def test_last_accepted_from_history(tmp_path):
    store = Store(tmp_path / "store.db")
    try:
        # an older accepted run in which "cand" passed everything
        old = store.begin_run(name="nightly", config_path=None, config={}, out_dir=None)
        store.save_run_items(old, [item("cand", f"x{i}", {"fmt": ok(True)}, run_id=old) for i in range(3)])
        store.finish_run(old, {"run_id": old, "candidates": ["cand"]}, "passed")
        now_items = two_model_items([True] * 3, [True, False, True])
        g = gate(name="vs-accepted", metric="regressions", scorer="fmt", vs="last_accepted")
        # nothing accepted yet (a project's first run): a warning that says how to accept, not a block
        [r] = run([g], now_items, store=store, run_name="nightly")
        assert r.outcome == "warn" and not G.blocks(r) and "evalkit accept" in r.detail and "\x00" not in r.detail
        store.set_accepted(old)
        [r] = run([g], now_items, store=store, run_name="nightly", run_id="current")
        assert r.outcome == "fail" and r.failing_items == ("x1",) and old in r.detail
    finally:
        store.close()


def test_config_parses_gates_and_all_passed():
    cfg = config_with([
        {"name": "fmt", "metric": "pass_rate", "scorer": "fmt", "min": 0, "ci": 0.9, "on_no_decision": "warn"},
        {"name": "noreg", "metric": "regressions"},
    ])
    assert cfg.gates[0].min == 0 and cfg.gates[0].ci == 0.9 and cfg.gates[1].max == 0
    rs = run(cfg.gates, two_model_items([True, True], [True, True]))
    assert G.all_passed(rs) and [r.outcome for r in rs] == ["pass", "pass"]
    d = rs[1].as_dict()
    assert set(d) >= {"name", "model", "metric", "passed", "outcome", "observed", "threshold", "detail", "failing_items"}


def test_judge_stage_noise_band_and_marks():
    """The judge stage's band across repeats (summary['judges']) undecides a gate whose threshold is inside it."""
    items = [item("cand", f"i{k}", {"judge.correctness": ok(None, value=v, judge="default", repeats=3)}) for k, v in enumerate([4, 4, 3, 5])]
    judge_stats = {"default": {"no_decision_within_noise": True, "noise": {"cand": {"judge.correctness": {"low": 3.8, "high": 4.2}}}}}
    g = gate(name="q", metric="mean", scorer="judge.correctness", min=3.9)
    [r] = G.evaluate_gates([g], items=items, models=MODELS, baseline="base", candidates=["cand"], judge_stats=judge_stats)
    assert r.outcome == "no_decision" and "3.8 to 4.2" in r.detail
    g = gate(name="q", metric="mean", scorer="judge.correctness", min=3.5)
    [r] = G.evaluate_gates([g], items=items, models=MODELS, baseline="base", candidates=["cand"], judge_stats=judge_stats)
    assert r.outcome == "pass"


def test_rubric_named_judge_scores_are_not_validators():
    # a rubric named "strict" scores as "strict.correctness" with details.judge; a pairwise judge
    # named "beats" scores under its rubric name with details.winner
    base = item("base", "a", {"fmt": ok(True), "strict.correctness": ok(None, value=5, judge="strict")})
    cand = item("cand", "a", {"fmt": ok(True), "strict.correctness": ok(None, value=1, judge="strict"),
                              "head2head": ok(None, value=1.0, judge="beats", winner="candidate")})
    [r] = run([gate(name="noreg", metric="regressions")], [base, cand])
    assert r.outcome == "pass" and r.observed == 0
    [r] = run([gate(name="w", metric="win_rate", judge="beats", min=0.5)], [base, cand])
    assert r.outcome == "pass" and r.observed == 1.0 and "head2head" in r.detail


def test_human_unshippable_through_blinded_review(tmp_path):
    """The gate reads evalkit.review's unblinded results for the run (the items carry its id)."""
    from evalkit.review import create_session, unblind
    from tests.review.conftest import BASE, CAND, make_run
    from tests.review.test_unblind import answer

    with Store(tmp_path / "store.db") as st:
        run_id = make_run(st, 10)
        items = st.run_items(run_id)
        models = st.get_run(run_id).summary["models"]
        g = gate(name="spot", metric="human_unshippable", max=2)
        [r] = G.evaluate_gates([g], items=items, models=models, baseline=BASE, candidates=[CAND], store=st)
        assert r.outcome == "no_decision" and "no review results" in r.detail
        sid = create_session(st, run_id, n=10, seed=3).session.session_id
        answer(st, sid, "alice", [("b_better", False, True)] * 2 + [("a_better", True, True)] * 8)
        unblind(st, sid)
        [r] = G.evaluate_gates([g], items=items, models=models, baseline=BASE, candidates=[CAND], store=st)
        assert r.outcome == "fail" and r.model == CAND and len(r.failing_items) == 2  # 2 of 10 > 2 per 20
        [r] = G.evaluate_gates([gate(name="spot", metric="human_unshippable", max=4)], items=items, models=models, baseline=BASE, candidates=[CAND], store=st)
        assert r.outcome == "pass"


def test_options_a_metric_would_ignore_are_config_errors(tmp_path):
    from evalkit.config import load_eval_config
    from evalkit.errors import ConfigError

    bad = {
        "significant: 0.05": "{name: g, metric: pass_rate, scorer: fmt, min: 0.5, significant: 0.05}",
        "'ci' applies": "{name: g, metric: regressions, ci: 0.95}",
        "'vs' compares": "{name: g, metric: error_rate, max: 0.1, vs: baseline}",  # pass_rate takes vs now (paired)
    }
    for expect, line in bad.items():
        p = tmp_path / "eval.yaml"
        p.write_text(f"models:\n  base: {{backend: hf, path: /m}}\nbaseline: base\nsuites: [s]\ngates:\n  - {line}\n")
        with pytest.raises(ConfigError) as e:
            load_eval_config(p)
        msg = e.value.one_line()
        assert msg.startswith(f"{p}:6:"), msg
        assert (expect if expect != "significant: 0.05" else "'significant' needs a paired comparison") in msg


def test_score_kind_not_name_tells_validators_from_judges():
    """A validator named like a judge score still counts as a validator, and a judge score named like
    a validator does not: the kind the producer set decides (names only for records without one).
    """
    from evalkit.types import Score

    assert Score("judge.length", 1.0, True).as_dict()["kind"] == "validator"
    assert not Score.from_dict("judge.length", {"value": 1.0, "passed": True, "kind": "validator"}).from_judge
    assert Score.from_dict("fmt", {"value": 4.0, "passed": None, "kind": "judge"}).from_judge
    assert Score.from_dict("vs-base", {"value": 1.0, "kind": "pairwise"}).kind == "pairwise"
    assert Score.from_dict("pairwise", {"kind": "judge"}).kind == "judge"
    # an older record without kinds: read once, at the door, by the marks its producer left
    assert Score.from_dict("judge.correctness", {"value": 4.0}).kind == "judge"
    assert Score.from_dict("pairwise", {"value": 1.0, "details": {"winner": "candidate"}}).kind == "pairwise"
    assert Score.from_dict("fmt", {"value": 1.0, "passed": True}).kind == "validator"
    items = [
        item("base", "x1", {"judge.length": {"value": 1.0, "passed": True, "kind": "validator"}, "fmt": {"value": 5.0, "passed": None, "kind": "judge"}}),
        item("cand", "x1", {"judge.length": {"value": 0.0, "passed": False, "kind": "validator"}, "fmt": {"value": 1.0, "passed": None, "kind": "judge"}}),
    ]
    [r] = G.evaluate_gates([gate(name="noreg", metric="regressions", max=0)], items=items, models=MODELS, baseline="base", candidates=["cand"])
    assert r.outcome == "fail" and r.failing_items == ("x1",)  # the validator regressed; the judge score is not a validator


def _paired(base_pass, cand_pass, broken=()):
    items = []
    for i, (b, c) in enumerate(zip(base_pass, cand_pass)):
        items.append(item("base", f"x{i}", {"fmt": ok(b)}))
        items.append(item("cand", f"x{i}", {"fmt": ok(None, error="boom") if i in broken else ok(c)}))
    return items


def _discordant(n, fixed, regressed, both=0):
    """N pairs: `fixed` fail on base / pass on cand, `regressed` the other way, `both` pass on both."""
    base = [False] * fixed + [True] * regressed + [True] * both + [False] * (n - fixed - regressed - both)
    cand = [True] * fixed + [False] * regressed + [True] * both + [False] * (n - fixed - regressed - both)
    return base, cand


def test_pass_rate_vs_baseline_is_a_paired_mcnemar_gate():
    from scipy.stats import binomtest

    base, cand = _discordant(30, fixed=12, regressed=2, both=8)
    g = gate(name="better", metric="pass_rate", scorer="fmt", vs="baseline", min=0, significant=0.05)
    [r] = G.evaluate_gates([g], items=_paired(base, cand), models=MODELS, baseline="base", candidates=["cand"])
    assert r.outcome == "pass" and r.observed == pytest.approx(10 / 30)
    assert r.p_value == pytest.approx(binomtest(2, 14, 0.5).pvalue)
    # a small, non-significant gain does not show an improvement; the regressions are named
    base, cand = _discordant(30, fixed=3, regressed=1, both=8)
    [r] = G.evaluate_gates([g], items=_paired(base, cand), models=MODELS, baseline="base", candidates=["cand"])
    assert r.outcome == "fail" and "not a significant improvement" in r.detail and r.failing_items == ("x3",)
    assert r.p_value == pytest.approx(binomtest(1, 4, 0.5).pvalue)


def test_pass_rate_vs_non_inferiority_margin_and_missing_pairs():
    ni = gate(name="no-worse", metric="pass_rate", scorer="fmt", vs="baseline", min=-0.05, significant=0.05)
    base, cand = _discordant(30, fixed=1, regressed=2, both=20)
    [r] = G.evaluate_gates([ni], items=_paired(base, cand), models=MODELS, baseline="base", candidates=["cand"])
    assert r.outcome == "pass" and r.observed == pytest.approx(-1 / 30)  # within the margin, no improvement needed
    # three pairs the candidate could not be scored on could each be a regression: worst case -4/33
    [r] = G.evaluate_gates([ni], items=_paired(base + [True] * 3, cand + [True] * 3, broken={30, 31, 32}),
                           models=MODELS, baseline="base", candidates=["cand"])
    assert r.outcome == "no_decision" and "3 unscored pairs could each be a regression" in r.detail
    worse = gate(name="no-worse", metric="pass_rate", scorer="fmt", vs="baseline", min=-0.05)
    base, cand = _discordant(30, fixed=0, regressed=3, both=20)
    [r] = G.evaluate_gates([worse], items=_paired(base, cand), models=MODELS, baseline="base", candidates=["cand"])
    assert r.outcome == "fail" and r.observed == pytest.approx(-0.1) and set(r.failing_items) == {"x0", "x1", "x2"}
    few = gate(name="few", metric="pass_rate", scorer="fmt", vs="baseline", min=0, min_pairs=50)
    [r] = G.evaluate_gates([few], items=_paired(base, cand), models=MODELS, baseline="base", candidates=["cand"])
    assert r.outcome == "no_decision" and "(min_pairs 50)" in r.detail


def test_pass_rate_vs_config():
    from evalkit.config import GateSpec

    with pytest.raises(ValueError, match="outside the range of pass_rate"):
        GateSpec(name="g", metric="pass_rate", scorer="fmt", vs="baseline", min=-2)
    assert GateSpec(name="g", metric="pass_rate", scorer="fmt", vs="baseline", min=-0.02, significant=0.05).min == -0.02
    with pytest.raises(ValueError, match="'significant' needs a paired comparison"):
        GateSpec(name="g", metric="pass_rate", scorer="fmt", min=0.5, significant=0.05)


def test_no_candidate_to_gate_blocks_even_with_on_no_decision_pass():
    g = gate(name="floor", metric="pass_rate", scorer="fmt", min=0.5, on_no_decision="pass")
    [r] = G.evaluate_gates([g], items=_paired([True], [True]), models=MODELS, baseline="base", candidates=[])
    assert r.outcome == "no_decision" and not G.all_passed([r])


def _length_biased_verdicts(n: int, seed: int, biased: bool) -> tuple[list[float], list[int]]:
    """Pairwise outcomes and length differences: the candidate is longer on 70% of items. A biased judge
    gives the longer answer the win 80% of the time (true quality equal); an unbiased one gives the
    candidate 65% whatever the lengths.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    longer = rng.random(n) < 0.7
    diffs = np.where(longer, rng.integers(40, 400, n), -rng.integers(40, 400, n))
    p = np.where(longer, 0.8, 0.2) if biased else np.full(n, 0.65)
    u = rng.random(n)
    values = np.where(u < p - 0.05, 1.0, np.where(u < p + 0.05, 0.5, 0.0))  # 10% ties
    return [float(v) for v in values], [int(d) for d in diffs]


def test_length_controlled_win_rate_removes_a_length_bias_and_leaves_an_unbiased_judge_alone():
    from evalkit import stats

    vals, diffs = _length_biased_verdicts(600, seed=3, biased=True)
    lc = stats.length_controlled_win_rate(vals, diffs)
    assert lc.raw > 0.58  # the judge's taste for length makes the raw rate look like a win
    assert abs(lc.estimate - 0.5) < 0.06 and lc.low < 0.5 < lc.high and lc.length_coef > 1
    assert abs(lc.estimate - 0.5) < abs(lc.raw - 0.5) / 2
    vals, diffs = _length_biased_verdicts(600, seed=4, biased=False)
    lc = stats.length_controlled_win_rate(vals, diffs)
    assert abs(lc.estimate - lc.raw) < 0.03 and abs(lc.length_coef) < 0.5 and lc.low > 0.55
    # no spread in lengths: nothing to remove; seeded: the same CI twice
    lc = stats.length_controlled_win_rate([1, 1, 0, 0.5, 1], [10] * 5)
    assert lc.estimate == pytest.approx(0.7, abs=1e-4) and lc.length_coef == 0  # (a tiny ridge keeps all-win samples finite)
    assert stats.length_controlled_win_rate(vals, diffs).low == stats.length_controlled_win_rate(vals, diffs).low


def test_win_rate_gate_length_controlled():
    vals, diffs = _length_biased_verdicts(300, seed=7, biased=True)
    items = [item("cand", f"i{k}", {"pairwise": ok(None, value=v, winner="x", vs="base", length_diff=d)}) for k, (v, d) in enumerate(zip(vals, diffs))]
    raw = gate(name="beats", metric="win_rate", judge="pairwise", min=0.58)
    [r] = run([raw], items)
    assert r.outcome == "pass" and r.observed > 0.6  # the raw rate is fooled by length
    [r] = run([gate(name="beats", metric="win_rate", judge="pairwise", min=0.58, length_controlled=True)], items)
    assert r.outcome == "fail" and r.observed < 0.55
    assert "length-controlled win rate" in r.detail and "leans to longer answers" in r.detail and "raw: cand wins" in r.detail
    [r] = run([gate(name="beats", metric="win_rate", judge="pairwise", min=0.5, significant=0.05, length_controlled=True)], items)
    assert r.outcome == "fail" and "not significantly above 0.5" in r.detail and r.p_value > 0.05
    [r] = run([gate(name="beats", metric="win_rate", judge="pairwise", min=0.5, ci=0.95, length_controlled=True)], items)
    assert r.outcome == "no_decision" and "straddles min 0.5" in r.detail
    # lengths not recorded (an older run): taken from the two stored outputs; unknown: no decision, blocks
    old = [item("cand", "a", {"pairwise": ok(None, value=1.0, winner="x", vs="base")}, output="long answer"),
           item("base", "a", {}, output="short"),
           item("cand", "b", {"pairwise": ok(None, value=0.0, winner="x", vs="base")}, output="s"),
           item("base", "b", {}, output="much longer")]
    assert G.pairwise_length_diffs([(old[0], 1.0), (old[2], 0.0)], "pairwise", old) == [6.0, -10.0]
    [r] = run([gate(name="beats", metric="win_rate", judge="pairwise", min=0.5, length_controlled=True, on_no_decision="pass")], [old[0], old[2]])
    assert r.outcome == "no_decision" and G.blocks(r) and "lengths of some pairs are unknown" in r.detail


def test_length_controlled_and_on_changed_items_are_config_errors_elsewhere():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="'length_controlled' applies to win_rate gates"):
        gate(name="g", metric="pass_rate", scorer="fmt", min=0.5, length_controlled=True)
    with pytest.raises(ValidationError, match="'on_changed_items' applies to gates with 'vs: last_accepted'"):
        gate(name="g", metric="regressions", scorer="fmt", vs="baseline", on_changed_items="fail")


def _changed_suite_history(tmp_path, now_pass):
    """An accepted run on suite version v1 (x0..x5, all passing); the current run is on v2: x5 removed,
    x6 added, x2's prompt edited, x0/x1/x3/x4 the same content. ``now_pass`` maps id -> passed now.
    """
    store = Store(tmp_path / "store.db")
    old = store.begin_run(name="nightly", config_path=None, config={}, out_dir=None)
    store.save_run_items(old, [item("cand", f"x{i}", {"fmt": ok(True)}, version="v1", prompt=f"p{i}", run_id=old) for i in range(6)])
    store.finish_run(old, {"run_id": old, "candidates": ["cand"]}, "passed")
    store.set_accepted(old)
    prompts = {"x0": "p0", "x1": "p1", "x2": "p2 (edited)", "x3": "p3", "x4": "p4", "x6": "p6"}
    now = [item("cand", sid, {"fmt": ok(now_pass.get(sid, True))}, version="v2", prompt=p, run_id="current") for sid, p in prompts.items()]
    return store, old, now


@pytest.mark.parametrize("policy", [None, "compare_common", "warn", "fail"])
def test_vs_last_accepted_when_the_suite_changed(tmp_path, policy):
    from evalkit.gates.core import content_hash

    store, old, now = _changed_suite_history(tmp_path, {"x2": False, "x6": False})  # only changed/added items fail
    try:
        extra = {"on_changed_items": policy} if policy else {}
        g = gate(name="vs-accepted", metric="regressions", scorer="fmt", vs="last_accepted", **extra)
        [r] = run([g], now, store=store, run_name="nightly", run_id="current")
        said = "The suite changed since the last accepted run: 1 added (x6), 1 removed (x5), 1 changed (x2); compared the 4 items both runs share unchanged"
        if policy == "fail":
            assert r.outcome == "fail" and G.blocks(r) and set(r.failing_items) == {"x2", "x6"}
            assert r.detail.startswith(f"The suite changed since the last accepted run {old}") and "on_changed_items is 'fail'" in r.detail
            assert "compare the 4 items both runs share unchanged" in r.detail
        elif policy == "warn":
            assert r.outcome == "warn" and not G.blocks(r) and said in r.detail and "A warning" in r.detail
        else:
            # the 4 unchanged items are compared (none regressed); the edited x2 failing is not a regression
            assert r.outcome == "pass" and r.detail.startswith("0 of 4 items pass 'fmt' on the last accepted run") and said in r.detail
            assert ("on_changed_items: compare_common, the default" in r.detail) == (policy is None)
        assert content_hash(now[0]) != content_hash(now[2])
        # a real regression on an unchanged item fails under every policy but 'fail' (which fails anyway)
        store2, _, now2 = _changed_suite_history(tmp_path / "b", {"x3": False})
        [r2] = run([g], now2, store=store2, run_name="nightly", run_id="current")
        assert r2.outcome == "fail" and ("x3" in r2.failing_items if policy != "fail" else "x2" in r2.failing_items)
        store2.close()
    finally:
        store.close()


def test_vs_last_accepted_removed_items_alone_count_and_an_unchanged_suite_says_nothing(tmp_path):
    store, old, now = _changed_suite_history(tmp_path, {})
    try:
        same = [it for it in now if it.sample_id in ("x0", "x1", "x3", "x4")]  # v2, same content as v1
        g = gate(name="vs-accepted", metric="pass_rate", scorer="fmt", vs="last_accepted", min=0, on_changed_items="fail")
        [r] = run([g], same, store=store, run_name="nightly", run_id="current")
        assert r.outcome == "fail" and "2 removed (x2, x5)" in r.detail and r.failing_items == ()
        same_old = [item("cand", f"x{i}", {"fmt": ok(True)}, version="v1", prompt=f"p{i}", run_id="current") for i in range(6)]
        [r] = run([g], same_old, store=store, run_name="nightly", run_id="current")
        assert r.outcome == "pass" and "changed" not in r.detail and "6 paired items" in r.detail
    finally:
        store.close()


def test_per_candidate_verdicts_say_which_candidate_ships():
    from evalkit.gates.core import candidate_verdicts
    from evalkit.report import console_summary
    from evalkit.report.markdown import candidate_lines, render_markdown

    items = []
    for i in range(4):
        items.append(item("base", f"x{i}", {"fmt": ok(True)}))
        items.append(item("narrow", f"x{i}", {"fmt": ok(i != 2)}))
        items.append(item("mixed", f"x{i}", {"fmt": ok(True)}))
    gs = [gate(name="no-regressions", metric="regressions", scorer="fmt", vs="baseline", max=0), gate(name="fmt", metric="pass_rate", scorer="fmt", min=0.5)]
    results = run(gs, items, candidates=("narrow", "mixed"))
    assert candidate_verdicts(results, ["narrow", "mixed"]) == {"narrow": False, "mixed": True}
    summary = {"run_id": "r", "passed": False, "candidates": ["narrow", "mixed"], "gates": [r.as_dict() for r in results]}
    assert candidate_lines(summary) == ["narrow: DON'T SHIP (no-regressions)", "mixed: SHIP (all 2 of its gate results passed)"]
    text = console_summary(summary)
    assert text.splitlines()[0].startswith("FAIL  DON'T SHIP") and "  per candidate: mixed: SHIP" in text  # the exit code still needs every gate
    assert "- ✅ mixed: SHIP" in render_markdown(summary)
    # a run-wide blocking result (no model) stops every candidate
    wide = G.evaluate_gates([gate(name="fmt", metric="pass_rate", scorer="fmt", min=0.5)], items=items, models=MODELS, baseline="base", candidates=[])
    assert candidate_verdicts(wide, ["narrow"]) == {"narrow": False}
    assert candidate_lines({"run_id": "r", "candidates": ["one"], "gates": []}) == []  # one candidate: the headline says it all


def test_comparison_gates_carry_their_minimum_detectable_effect():
    """Every comparison gate states the smallest true difference its test would find with 80 % power
    at its alpha, from its n and the observed discordance (pass/fail) or spread (values).
    """
    from evalkit import stats

    base = [True] * 30 + [False] * 10
    cand = [True] * 26 + [False] * 4 + [True] * 6 + [False] * 4  # 4 regressed, 6 fixed of 40
    items = []
    for i, (b, c) in enumerate(zip(base, cand)):
        items.append(item("base", f"x{i}", {"fmt": ok(b), "q": ok(None, value=3.0 + (i % 3))}))
        items.append(item("cand", f"x{i}", {"fmt": ok(c), "q": ok(None, value=3.0 + (i % 3) + (0.5 if i % 2 else -0.25))}))
    gs = [gate(name="vs", metric="pass_rate", scorer="fmt", vs="baseline", min=-0.05, significant=0.05),
          gate(name="reg", metric="regressions", scorer="fmt", vs="baseline", max=5),
          gate(name="q", metric="mean", scorer="q", vs="baseline", min=-0.5),
          gate(name="plain", metric="pass_rate", scorer="fmt", min=0.5)]
    by = {r.name: r for r in run(gs, items)}
    expected = stats.mde_mcnemar(40, 10 / 40, alpha=0.05)
    assert by["vs"].mde == pytest.approx(expected) and by["reg"].mde == pytest.approx(expected)
    assert 0.1 < expected < 0.25  # 40 items with a quarter discordant: only a large difference shows
    diffs = [0.5 if i % 2 else -0.25 for i in range(40)]
    m = sum(diffs) / 40
    sd = (sum((d - m) ** 2 for d in diffs) / 39) ** 0.5
    assert by["q"].mde == pytest.approx(stats.mde_paired_mean(40, sd))
    assert by["plain"].mde is None  # no comparison, no mde
    assert by["vs"].as_dict()["mde"] == by["vs"].mde and "mde" not in by["plain"].as_dict()
    assert by["vs"].test == "mcnemar_exact" and by["vs"].as_dict()["test"] == "mcnemar_exact"  # the test behind its p


def test_small_sample_pass_rates_get_a_wilson_interval_not_a_zero_width_bootstrap():
    """10 of 10 passing says little about a 0.9 floor: Wilson's interval [0.72, 1] straddles it (the
    bootstrap of ten 1s has zero width and would have passed the gate).
    """
    from evalkit import stats
    from evalkit.report import analysis

    items = [item("cand", f"x{i}", {"fmt": ok(True)}) for i in range(10)]
    [r] = run([gate(name="floor", metric="pass_rate", scorer="fmt", min=0.9, ci=0.95)], items)
    assert r.outcome == "no_decision" and "Wilson CI [0.7225, 1]" in r.detail
    assert stats.bootstrap_ci([1.0] * 10).low == 1.0  # what the bootstrap would have said
    many = [item("cand", f"x{i}", {"fmt": ok(True)}) for i in range(60)]
    [r] = run([gate(name="floor", metric="pass_rate", scorer="fmt", min=0.9, ci=0.95)], many)
    assert r.outcome == "pass"  # 60 of 60: the interval [0.94, 1] clears 0.9
    [row] = analysis.metric_rows(items)
    assert row["ci_method"] == "wilson" and row["ci_low"] == pytest.approx(stats.wilson_interval(10, 10).low)


def test_samples_that_failed_to_score_never_let_a_comparison_pass():
    """K samples per item: a pair whose candidate has an unscored sample (a failed generation) could
    be a regression; when those pairs could carry the count past max, or the difference past min,
    the gate has no decision instead of passing.
    """
    import dataclasses

    from evalkit.record import Draw

    def sampled(model, sid, passes, broken=False):
        draws = tuple(Draw(k, f"g-{model}-{sid}-{k}", None if broken and k == 1 else "o", "boom" if broken and k == 1 else None,
                           {} if broken and k == 1 else {"fmt": ok(p)}) for k, p in enumerate(passes))
        return dataclasses.replace(item(model, sid, dict(draws[0].scores)), draws=draws)

    items = []
    for i in range(10):
        items.append(sampled("base", f"x{i}", [True, True]))
        items.append(sampled("cand", f"x{i}", [True, True], broken=i < 3))  # 3 candidates lost a sample
    gs = [gate(name="noreg", metric="regressions", scorer="fmt", vs="baseline", max=1),
          gate(name="noinf", metric="pass_rate", scorer="fmt", vs="baseline", min=-0.1)]
    by = {r.name: r for r in run(gs, items)}
    assert by["noreg"].outcome == "no_decision" and "could hide regressions" in by["noreg"].detail
    assert by["noinf"].outcome == "no_decision" and "worst case" in by["noinf"].detail
    # with every sample scored, both pass
    clean = [sampled(m, f"x{i}", [True, True]) for i in range(10) for m in ("base", "cand")]
    assert all(r.outcome == "pass" for r in run(gs, clean))
