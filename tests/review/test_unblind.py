from __future__ import annotations

import math

import pytest

from evalkit.review import cohen_kappa, create_session, review_summary, session_pairs, unblind, unshippable_counts, win_rate
from evalkit.review.sessions import reviewer_verdicts, save_verdicts
from evalkit.review.unblind import render_markdown
from evalkit.store import Store

from .conftest import BASE, CAND, make_run


@pytest.fixture
def store(store_url):
    """Every test here runs on a SQLite file and on a PostgreSQL database."""
    st = Store(store_url)
    yield st
    st.close()


def page_verdict(model_verdict: str, left_model: str) -> str:
    """What a reviewer clicks for a verdict in model terms, given which model sits on the left."""
    if model_verdict in ("tie", "both_bad"):
        return model_verdict
    return "left" if (model_verdict == "a_better") == (left_model == "a") else "right"


def answer(store, sid, reviewer, plan):
    """plan: list of (model_verdict, ship_a, ship_b) by page position."""
    pairs = session_pairs(store, sid)
    rows = []
    for p, (mv, sa, sb) in zip(pairs, plan):
        sl, sr = (sa, sb) if p.left_model == "a" else (sb, sa)
        rows.append((p.token, reviewer, page_verdict(mv, p.left_model), sl, sr, ""))
    save_verdicts(store, sid, rows, source="test")


def test_cohen_kappa_hand_computed():
    # 2x2 textbook example: p_o = 35/50 = 0.7, p_e = 0.5*0.6 + 0.5*0.4 = 0.5 -> kappa = 0.4
    r1 = ["y"] * 20 + ["y"] * 5 + ["n"] * 10 + ["n"] * 15
    r2 = ["y"] * 20 + ["n"] * 5 + ["y"] * 10 + ["n"] * 15
    assert cohen_kappa(r1, r2) == pytest.approx(0.4)
    # three categories: p_o = 5/8, p_e = (9 + 9 + 4) / 64 -> kappa = 3/7
    x = ["a", "a", "b", "b", "t", "t", "a", "b"]
    y = ["a", "b", "b", "b", "t", "a", "a", "t"]
    assert cohen_kappa(x, y) == pytest.approx(3 / 7)
    assert cohen_kappa(x, x) == pytest.approx(1.0)
    assert cohen_kappa(["a", "a"], ["a", "a"]) is None  # p_e = 1: undefined, not 1 or 0
    assert cohen_kappa([], []) is None
    # perfect disagreement on balanced categories is negative
    assert cohen_kappa(["a", "b"], ["b", "a"]) == pytest.approx(-1.0)


def test_win_rate_wilson_interval():
    wr = win_rate(12, 4, 4)
    assert wr["rate"] == pytest.approx(0.75)
    # Wilson score interval, by hand
    n, p, z = 16, 0.75, 1.959963984540054
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert wr["ci_low"] == pytest.approx(centre - half, abs=1e-9)
    assert wr["ci_high"] == pytest.approx(centre + half, abs=1e-9)
    assert wr["p_value"] == pytest.approx(2 * sum(math.comb(16, k) for k in range(13, 17)) / 2**16 + 2 * math.comb(16, 12) / 2**16)
    assert wr["rate_ties_half"] == pytest.approx(14 / 20)
    assert win_rate(0, 0, 3)["rate"] is None


def test_unblind_known_answer(store):
    run = make_run(store, 20)
    sid = create_session(store, run, n=20, seed=11).session.session_id
    plan = (
        [("a_better", True, True)] * 12
        + [("b_better", True, False)] * 4  # base preferred, yet base's output would not ship
        + [("tie", True, True)] * 2
        + [("both_bad", False, False)] * 2
    )
    answer(store, sid, "alice", plan)
    res = unblind(store, sid)
    assert res["models"] == {"a": CAND, "b": BASE}
    assert res["verdicts"] == {"a_better": 12, "b_better": 4, "tie": 2, "both_bad": 2}
    wr = res["win_rate"]
    assert (wr["wins"], wr["losses"], wr["ties"], wr["model"], wr["vs"]) == (12, 4, 4, CAND, BASE)
    assert wr["rate"] == pytest.approx(0.75)
    u = res["unshippable"]
    assert (u[CAND]["count"], u[CAND]["reviewed"], u[CAND]["passed"]) == (2, 20, True)  # 2 of 20 is allowed
    assert (u[BASE]["count"], u[BASE]["reviewed"], u[BASE]["passed"]) == (6, 20, False)
    assert u[CAND]["allowed"] == pytest.approx(2.0)
    # the items named are the real sample ids of the both-bad pairs
    pairs = session_pairs(store, sid)
    assert sorted(u[CAND]["items"]) == sorted(p.sample_id for p in pairs[18:])
    assert res["judge_agreement"] is None and res["reviewer_agreement"]["pairs"] == []
    # stored, and offered to reports and gates
    summ = review_summary(store, run)
    assert summ["session_id"] == sid and "items" not in summ
    assert unshippable_counts(store, run) == {CAND: (2, 20), BASE: (6, 20)}
    md = render_markdown(res)
    assert "0.75" in md and "do not ship" in md and "cand-qlora-zebra" in md.replace("\\", "")


def test_threshold_scales_with_items_reviewed(store):
    run = make_run(store, 10)
    sid = create_session(store, run, n=10, seed=1).session.session_id
    # 10 reviewed: allowed 2 * 10 / 20 = 1; two "would not ship" fails
    answer(store, sid, "alice", [("b_better", False, True)] * 2 + [("a_better", True, True)] * 8)
    res = unblind(store, sid)
    assert res["unshippable"][CAND]["allowed"] == pytest.approx(1.0)
    assert res["unshippable"][CAND]["passed"] is False
    res = unblind(store, sid, max_unshippable=4, per=20)
    assert res["unshippable"][CAND]["passed"] is True


def test_partial_session_and_several_reviewers(store):
    run = make_run(store, 6)
    sid = create_session(store, run, n=6, seed=2).session.session_id
    answer(store, sid, "alice", [("a_better", True, True), ("a_better", True, True), ("b_better", True, True), ("tie", True, True)])
    answer(store, sid, "bob", [("a_better", True, True), ("b_better", True, False), ("b_better", True, True), ("both_bad", False, False)])
    res = unblind(store, sid)
    assert res["reviewers"] == ["alice", "bob"]
    assert res["items_reviewed"] == 4 and "2 of 6 pairs have no verdict yet" in res["warnings"][0]
    # item 2: alice a / bob b -> no majority -> tie; item 4: tie vs both_bad -> tie
    assert res["verdicts"] == {"a_better": 1, "b_better": 1, "tie": 2, "both_bad": 0}
    pair = res["reviewer_agreement"]["pairs"][0]
    assert pair["reviewers"] == ["alice", "bob"] and pair["n"] == 4
    assert pair["agreement"] == pytest.approx(0.5)
    assert pair["kappa"] == pytest.approx(
        cohen_kappa(["a_better", "a_better", "b_better", "tie"], ["a_better", "b_better", "b_better", "both_bad"])
    )
    # ship: one "no" out of two answers counts as would not ship (half or more said no)
    assert res["unshippable"][BASE]["count"] == 2 and res["unshippable"][CAND]["count"] == 1
    assert res["unshippable"][CAND]["reviewed"] == 4


def _judge_scores(plan):
    def scores(i):
        w = plan.get(f"s{i:03d}")
        if w is None:
            return {}
        value = {"candidate": 1.0, "vs": 0.0, "tie": 0.5}[w]
        return {
            "pairwise": {"value": value, "passed": value > 0.5, "details": {"winner": w}},
            # another judge against another model: must be ignored
            "pairwise_other": {"value": 1.0, "passed": True, "details": {"winner": "candidate", "vs": "some-other-model"}},
        }

    return scores


@pytest.mark.parametrize("reverse", [False, True])
def test_kappa_with_pairwise_judge(store, reverse):
    # human (model terms): a a a b tie both_bad ; judge: a a b b tie a  -> p_o 4/6, p_e (9+2+2)/36, kappa 11/23
    human = ["cand", "cand", "cand", "base", "tie", "both_bad"]
    judge = {"s000": "candidate", "s001": "candidate", "s002": "vs", "s003": "vs", "s004": "tie", "s005": "candidate"}
    run = make_run(store, 6, cand_scores=_judge_scores(judge))
    a, b = (BASE, CAND) if reverse else (CAND, BASE)
    sid = create_session(store, run, model_a=a, model_b=b, n=6, seed=4).session.session_id
    by_sample = dict(zip([f"s{i:03d}" for i in range(6)], human))
    plan = []
    for p in session_pairs(store, sid):
        h = by_sample[p.sample_id]
        if h in ("tie", "both_bad"):
            plan.append((h, True, True))
        else:
            cand_better = h == "cand"
            plan.append(("a_better" if cand_better != reverse else "b_better", True, True))
    answer(store, sid, "alice", plan)
    ja = unblind(store, sid)["judge_agreement"]
    assert ja["judge"] == "pairwise" and [j["judge"] for j in ja["judges"]] == ["pairwise"]
    assert ja["n"] == 6
    assert ja["agreement"] == pytest.approx(4 / 6)
    assert ja["kappa"] == pytest.approx(11 / 23)
    assert ja["judges"][0]["per_reviewer"]["alice"]["kappa"] == pytest.approx(11 / 23)


def test_unshippable_counts_follow_model_id_to_a_rerun(store):
    first = make_run(store, 4)
    sid = create_session(store, first, n=4).session.session_id
    answer(store, sid, "alice", [("a_better", False, True)] + [("a_better", True, True)] * 3)
    unblind(store, sid)
    rerun = make_run(store, 4)  # same outputs, same model ids, no review of its own
    assert unshippable_counts(store, rerun) == {CAND: (1, 4), BASE: (0, 4)}
    assert review_summary(store, rerun) is None
    changed = make_run(store, 4, model_ids=("newcand0000000000", "deadbeef5678ef01"))
    assert unshippable_counts(store, changed) == {BASE: (0, 4)}


def test_human_unshippable_gate(store):
    from evalkit.review import human_unshippable_gate

    run = make_run(store, 10)
    g = human_unshippable_gate(store, run, name="spot", model=CAND, max_count=2)
    assert (g.passed, g.outcome, g.observed) == (False, "fail", None) and "no unblinded human review" in g.detail
    assert human_unshippable_gate(store, run, name="spot", model=CAND, max_count=2, on_no_decision="warn").outcome == "warn"
    sid = create_session(store, run, n=10, seed=3).session.session_id
    answer(store, sid, "alice", [("b_better", False, True)] * 2 + [("a_better", True, True)] * 8)
    unblind(store, sid)
    g = human_unshippable_gate(store, run, name="spot", model=CAND, max_count=2)  # 2 of 10 > 1 allowed
    assert (g.passed, g.outcome, g.metric, g.threshold) == (False, "fail", "human_unshippable", 2)
    assert g.observed == pytest.approx(4.0)  # 2 of 10 is 4 per 20
    assert sorted(g.failing_items) == sorted(p.sample_id for p in session_pairs(store, sid)[:2])
    assert human_unshippable_gate(store, run, name="spot", model=BASE, max_count=2).passed is True
    assert human_unshippable_gate(store, run, name="spot", model=CAND, max_count=4).passed is True


def test_krippendorff_alpha_over_three_reviewers_equals_the_package(store, capsys):
    """Alpha (nominal) on the stored verdicts of three reviewers, one of them partial, equals the
    `krippendorff` package's; the split pairs are listed for adjudication; `review status` shows progress.
    """
    import numpy as np
    from krippendorff import alpha as package_alpha

    from evalkit.cli import main

    run = make_run(store, 8)
    sid = create_session(store, run, n=8, seed=4).session.session_id
    answer(store, sid, "alice", [("a_better", True, True)] * 5 + [("b_better", True, True), ("tie", True, True), ("a_better", True, True)])
    answer(store, sid, "bob", [("a_better", True, True)] * 4 + [("b_better", True, True)] * 2 + [("tie", True, True), ("both_bad", False, False)])
    answer(store, sid, "carol", [("a_better", True, True), ("b_better", True, True), ("a_better", True, True)])
    res = unblind(store, sid)
    ka = res["reviewer_agreement"]["krippendorff_alpha"]
    # the stored page verdicts (A / B as shown) as model verdicts, which is what reviewers agree on
    from evalkit.review.unblind import to_model_verdict

    left = {p.token: p.left_model for p in session_pairs(store, sid)}
    verdicts = [(v.reviewer, v.token, to_model_verdict(v.verdict, left[v.token])) for v in reviewer_verdicts(store, sid)]
    tokens = sorted({t for _, t, _ in verdicts})
    cats = sorted({m for _, _, m in verdicts})
    data = np.full((3, len(tokens)), np.nan)
    for r, t, m in verdicts:
        data[["alice", "bob", "carol"].index(r), tokens.index(t)] = cats.index(m)
    expected = package_alpha(reliability_data=data, level_of_measurement="nominal")
    assert ka["alpha"] == pytest.approx(expected, abs=1e-4) and ka["level"] == "nominal"
    assert ka["ci_low"] <= ka["alpha"] <= ka["ci_high"] and ka["units"] == 8
    split = {d["sample_id"] for d in res["disagreements"]}
    assert len(split) == 3 and all(len(set(d["verdicts"].values())) > 1 for d in res["disagreements"])  # positions 2, 5, 8
    assert "Krippendorff's alpha (nominal)" in render_markdown(res) and "to adjudicate" in render_markdown(res)
    assert main(["review", "status", sid, "--store", str(store.path)]) == 0
    out = capsys.readouterr().out
    assert "8 pairs" in out and "8 answered by someone, 0 by nobody yet" in out
    rows = {line.split()[0]: line.split()[1] for line in out.splitlines()[2:]}
    assert rows == {"alice": "8/8", "bob": "8/8", "carol": "3/8"}
    # a lead (who also reviewed) decides one split pair: it decides that pair; agreement keeps the reviewers' answers
    d = next(d for d in res["disagreements"] if "both_bad" in d["verdicts"].values())  # alice a_better, bob both_bad
    assert main(["review", "adjudicate", sid, d["sample_id"], "both_bad", "--by", "alice", "--store", str(store.path)]) == 0
    again = unblind(store, sid)
    row = next(r for r in again["items"] if r["sample_id"] == d["sample_id"])
    assert row["verdict"] == "both_bad" and row["adjudicated_by"] == "alice" and row["verdicts"]["alice"] == "a_better"
    assert again["reviewer_agreement"]["krippendorff_alpha"] == ka and again["reviewers"] == ["alice", "bob", "carol"]
    assert sum(again["verdicts"].values()) == 8 and "1 split pair(s) adjudicated by a lead" in render_markdown(again)
    assert main(["review", "adjudicate", sid, "nope", "tie", "--by", "dana", "--store", str(store.path)]) == 2
    assert main(["review", "adjudicate", sid, d["sample_id"], "left", "--by", "dana", "--store", str(store.path)]) == 2
