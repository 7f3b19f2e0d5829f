from __future__ import annotations

from collections import Counter

import pytest

from evalkit.errors import UserError
from evalkit.review import blind_pairs, create_session, get_session, session_pairs
from evalkit.review.sessions import _allocate
from evalkit.store import Store

from .conftest import BASE, CAND, make_run


@pytest.fixture
def store(store_url):
    """Every test here runs on a SQLite file and on a PostgreSQL database."""
    st = Store(store_url)
    yield st
    st.close()


def test_sample_balanced_and_seeded(store):
    run = make_run(store, 30)
    s1 = create_session(store, run, n=20, seed=3).session
    s2 = create_session(store, run, n=20, seed=3).session
    s3 = create_session(store, run, n=20, seed=4).session
    assert (s1.model_a, s1.model_b) == (CAND, BASE)  # defaults: first candidate vs baseline
    p1, p2, p3 = (session_pairs(store, s.session_id) for s in (s1, s2, s3))
    assert len(p1) == 20
    assert Counter(p.left_model for p in p1) == {"a": 10, "b": 10}
    key = lambda ps: [(p.sample_id, p.left_model) for p in ps]  # noqa: E731
    assert key(p1) == key(p2)  # same seed, same sample and sides
    assert key(p1) != key(p3)
    assert {p.token for p in p1}.isdisjoint({p.token for p in p2})  # tokens are opaque and fresh
    # the page order is shuffled: not sorted by sample id
    assert [p.sample_id for p in p1] != sorted(p.sample_id for p in p1)


def test_odd_n_is_balanced_within_one(store):
    run = make_run(store, 9)
    pairs = session_pairs(store, create_session(store, run, n=7, seed=1).session.session_id)
    c = Counter(p.left_model for p in pairs)
    assert abs(c["a"] - c["b"]) == 1


def test_prefers_differing_outputs(store):
    # items 0..4 identical, 5..19 differ
    run = make_run(store, 20, base_output=lambda i: f"GOOD answer {i}" if i < 5 else f"BAD {i}")
    made = create_session(store, run, n=15, seed=0)
    assert (made.differing, made.identical) == (15, 0)
    made = create_session(store, run, n=18, seed=0)
    assert (made.differing, made.identical) == (15, 3)
    made_any = [create_session(store, run, n=10, seed=s, prefer_different=False).identical for s in range(6)]
    assert any(k > 0 for k in made_any)


def test_generation_errors_are_skipped(store):
    run = make_run(store, 10, cand_output=lambda i: None if i % 2 else f"ok {i}")
    made = create_session(store, run, n=10)
    assert made.session.n == 5 and made.skipped_errors == 5
    assert all(int(p.sample_id[1:]) % 2 == 0 for p in session_pairs(store, made.session.session_id))


def test_stratify_by_tag_pattern(store):
    topics = ["topic:math"] * 12 + ["topic:code"] * 6 + ["topic:rare"] * 2
    run = make_run(store, 20, tags=lambda i: ["easy", topics[i]])
    made = create_session(store, run, n=10, seed=2, stratify=["topic:*"])
    assert made.strata == {"topic:math": 6, "topic:code": 3, "topic:rare": 1}
    strata = Counter(p.stratum for p in session_pairs(store, made.session.session_id))
    assert strata == Counter(made.strata)


def test_allocate_proportional():
    assert _allocate({"x": 60, "y": 30, "z": 10}, 10) == {"x": 6, "y": 3, "z": 1}
    assert _allocate({"x": 98, "y": 1, "z": 1}, 10) == {"x": 8, "y": 1, "z": 1}  # rare strata still drawn
    assert _allocate({"x": 3, "y": 2}, 10) == {"x": 3, "y": 2}
    assert sum(_allocate({"a": 7, "b": 7, "c": 7}, 10).values()) == 10


def test_blind_pairs_put_outputs_on_the_keyed_side(store):
    run = make_run(store, 10)
    sid = create_session(store, run, n=10, seed=5).session.session_id
    keyed = {p.token: p.left_model for p in session_pairs(store, sid)}
    for bp in blind_pairs(store, get_session(store, sid)):
        good_left = bp.output_left.startswith("GOOD")
        assert good_left == (keyed[bp.token] == "a")  # a = the candidate
        assert bp.messages[-1] == ("user", f"Question number {int(bp.output_left.split()[-1])}?")


def test_user_errors(store):
    run = make_run(store, 4)
    with pytest.raises(UserError, match="not in run"):
        create_session(store, run, model_a="nope")
    with pytest.raises(UserError, match="same model"):
        create_session(store, run, model_a=BASE, model_b=BASE)
    with pytest.raises(UserError, match="suite 'x'"):
        create_session(store, run, suites=["x"])
    with pytest.raises(UserError, match="at least 1"):
        create_session(store, run, n=0)
    with pytest.raises(UserError, match="no run"):
        create_session(store, "zzz")
    with pytest.raises(UserError, match="no review session"):
        get_session(store, "rs-nothing")
    sid = create_session(store, run, n=2).session.session_id
    assert get_session(store, sid[:6]).session_id == sid  # a unique prefix works
