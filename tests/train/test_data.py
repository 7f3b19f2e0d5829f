"""Data preparation: validation split, mixing proportions, hashes that match the eval side."""

from __future__ import annotations

import pytest

from evalkit.data.jsonl import parse_sample
from evalkit.errors import DataError
from evalkit.train import general_count, items_in_training_data, prepare_data
from evalkit.train.data import prompt_hash

from .conftest import extraction, general, write_jsonl


def test_mix_fraction_is_the_share_of_the_final_training_set(tmp_path):
    t = write_jsonl(tmp_path / "t.jsonl", extraction(40, seed=1))
    g = write_jsonl(tmp_path / "g.jsonl", general(100, seed=2))
    d = prepare_data(t, val_fraction=0.25, mix_path=g, mix_fraction=0.25, seed=3)
    assert len(d.val) == 10 and d.n_task == 30
    assert d.n_general == 10 and len(d.train) == 40
    assert d.general_fraction == pytest.approx(0.25)
    # the general examples really are in the set, and shuffled in (not appended at the end)
    general_prompts = {prompt_hash(r["messages"]) for r in general(100, seed=2)}
    flags = [prompt_hash(c) in general_prompts for c in d.train]
    assert sum(flags) == 10
    assert flags != sorted(flags)
    assert d.sources["mix"]["used"] == 10 and len(d.sources["mix"]["sha256"]) == 64


@pytest.mark.parametrize("n_task, fraction, expected", [(800, 0.2, 200), (30, 0.25, 10), (9, 0.5, 9), (10, 0.1, 1)])
def test_general_count(n_task, fraction, expected):
    assert general_count(n_task, fraction) == expected


def test_mixing_is_deterministic_per_seed(tmp_path):
    t = write_jsonl(tmp_path / "t.jsonl", extraction(20, seed=1))
    g = write_jsonl(tmp_path / "g.jsonl", general(50, seed=2))
    a = prepare_data(t, mix_path=g, mix_fraction=0.3, seed=7)
    b = prepare_data(t, mix_path=g, mix_fraction=0.3, seed=7)
    c = prepare_data(t, mix_path=g, mix_fraction=0.3, seed=8)
    assert a.train == b.train and a.val == b.val
    assert a.train != c.train


def test_small_general_pool_is_used_whole_with_a_warning(tmp_path):
    t = write_jsonl(tmp_path / "t.jsonl", extraction(30, seed=1))
    g = write_jsonl(tmp_path / "g.jsonl", general(5, seed=2))
    seen: list[str] = []
    d = prepare_data(t, val_fraction=0.0, mix_path=g, mix_fraction=0.5, seed=1, warn=seen.append)
    assert d.n_general == 5 and d.n_task == 30
    assert any("using all 5" in w for w in seen)


def test_explicit_val_file_and_no_val(tmp_path):
    t = write_jsonl(tmp_path / "t.jsonl", extraction(12, seed=1))
    v = write_jsonl(tmp_path / "v.jsonl", extraction(3, seed=9))
    d = prepare_data(t, val_path=v)
    assert len(d.train) == 12 and len(d.val) == 3 and "sha256" in d.sources["val"]
    d0 = prepare_data(t, val_fraction=0.0)
    assert len(d0.train) == 12 and d0.val == ()


def test_empty_training_file(tmp_path):
    t = tmp_path / "t.jsonl"
    t.write_text("\n")
    with pytest.raises(DataError, match="no training examples"):
        prepare_data(t)


def test_prompt_hash_matches_suite_samples_and_flags_trained_items(tmp_path):
    rows = extraction(5, seed=4)
    samples = [parse_sample({**r, "id": f"s{i}"}) for i, r in enumerate(rows)]
    assert [prompt_hash(r["messages"]) for r in rows] == [s.prompt_hash() for s in samples]
    candidate = {"data": {"train_prompt_hashes": [prompt_hash(rows[1]["messages"]), prompt_hash(rows[3]["messages"])]}}
    assert items_in_training_data(candidate, samples) == ["s1", "s3"]
    assert items_in_training_data({}, samples) == []
