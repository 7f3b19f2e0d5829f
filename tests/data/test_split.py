"""`evalkit data split`: seeded, stratified, exact ratios, frozen by a manifest; check_heldout warnings."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from evalkit.cli import main
from evalkit.data.split import check_heldout, parse_ratios, split_dataset
from evalkit.data.suites import load_suite
from evalkit.errors import UserError

from .conftest import chat


@pytest.fixture
def dataset(jsonl) -> Path:
    rows = []
    for i in range(100):
        tag = "rare" if i % 10 == 0 else "common"
        rows.append(chat(f"question {i}", f"answer {i}", id=f"q{i}", tags=[tag]))
    return jsonl("all.jsonl", rows)


def _lines(p: Path) -> list[str]:
    return p.read_text().splitlines() if p.exists() else []


def test_split_is_seeded_exact_and_complete(dataset, tmp_path):
    r1 = split_dataset(dataset, tmp_path / "s1", ratios=(0.8, 0.1, 0.1), seed=3)
    split_dataset(dataset, tmp_path / "s2", ratios=(0.8, 0.1, 0.1), seed=3)
    split_dataset(dataset, tmp_path / "s3", ratios=(0.8, 0.1, 0.1), seed=4)
    assert r1.counts == {"train": 80, "val": 10, "test": 10}
    for name in ("train", "val", "test"):
        assert (tmp_path / "s1" / f"{name}.jsonl").read_bytes() == (tmp_path / "s2" / f"{name}.jsonl").read_bytes()
    assert _lines(tmp_path / "s1" / "test.jsonl") != _lines(tmp_path / "s3" / "test.jsonl")
    everything = sum((_lines(tmp_path / "s1" / f"{n}.jsonl") for n in ("train", "val", "test")), [])
    assert sorted(everything) == sorted(_lines(dataset))  # every line once, verbatim
    m1 = json.loads((tmp_path / "s1" / "split.json").read_text())
    m2 = json.loads((tmp_path / "s2" / "split.json").read_text())
    assert m1["splits"] == m2["splits"]
    assert len(m1["splits"]["test"]["example_hashes"]) == 10 and "example_hashes" not in m1["splits"]["train"]
    assert m1["seed"] == 3 and m1["ratios"] == {"train": 0.8, "val": 0.1, "test": 0.1}


def test_stratified_split_keeps_tag_shares(dataset, tmp_path):
    split_dataset(dataset, tmp_path / "s", ratios=(0.8, 0.1, 0.1), seed=0, stratify=True)
    for name, want in (("train", {"common": 72, "rare": 8}), ("val", {"common": 9, "rare": 1}), ("test", {"common": 9, "rare": 1})):
        tags = Counter(json.loads(l)["tags"][0] for l in _lines(tmp_path / "s" / f"{name}.jsonl"))
        assert tags == want, name


def test_a_split_is_frozen_unless_forced(dataset, tmp_path, capsys):
    out = tmp_path / "s"
    assert main(["data", "split", str(dataset), "--out", str(out), "--no-progress"]) == 0
    before = (out / "test.jsonl").read_bytes()
    assert main(["data", "split", str(dataset), "--out", str(out), "--seed", "9", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "split.json exists: this split is frozen" in err and "--force" in err
    assert (out / "test.jsonl").read_bytes() == before
    assert main(["data", "split", str(dataset), "--out", str(out), "--seed", "9", "--force", "--no-progress"]) == 0
    assert (out / "test.jsonl").read_bytes() != before


def test_zero_ratio_skips_a_file_and_ratios_parse():
    assert parse_ratios("90/5/5") == pytest.approx((0.9, 0.05, 0.05))
    assert parse_ratios("0.9,0,0.1") == pytest.approx((0.9, 0.0, 0.1))
    with pytest.raises(UserError, match="sum to 1"):
        parse_ratios("0.5,0.1,0.1")
    with pytest.raises(UserError, match="three"):
        parse_ratios("0.5,0.5")


def test_bad_json_is_reported_before_anything_is_written(jsonl, tmp_path, capsys):
    src = jsonl("x.jsonl", [chat("a", "b"), "{oops"])
    assert main(["data", "split", str(src), "--out", str(tmp_path / "s")]) == 2
    assert f"{src}:2: invalid JSON" in capsys.readouterr().err
    assert not (tmp_path / "s" / "split.json").exists()


def _heldout_suite(folder: Path, samples: str, manifest: str | None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    text = f"name: heldout\nkind: heldout\nsamples: {samples}\nscorers:\n  - exact_match\n"
    if manifest:
        text += f"manifest: {manifest}\n"
    (folder / "suite.yaml").write_text(text)
    return folder


def test_check_heldout_quiet_when_frozen_and_warns_when_changed(dataset, tmp_path):
    split_dataset(dataset, tmp_path / "split", seed=1)
    suite = _heldout_suite(tmp_path / "suite", "../split/test.jsonl", "../split/split.json")
    assert load_suite(suite).kind == "heldout"  # the test split loads as a suite as it is
    assert check_heldout(suite) == []
    assert check_heldout(suite / "suite.yaml") == []

    test_file = tmp_path / "split" / "test.jsonl"
    lines = _lines(test_file)
    edited = json.loads(lines[0])
    edited["messages"][-1]["content"] = "a different answer"
    test_file.write_text("\n".join([json.dumps(edited)] + lines[1:]) + "\n")
    warnings = check_heldout(suite)
    assert len(warnings) == 1
    w = warnings[0]
    assert "no longer matches split manifest" in w and "split 'test'" in w
    assert "1 example(s) added or edited" in w and "1 frozen example(s) missing or edited" in w

    # formatting only: still flagged (the bytes changed) but says the examples are the same
    test_file.write_text("".join(json.dumps(json.loads(l), indent=None, separators=(",", ":")) + "\n" for l in lines))
    assert "formatting changed, the examples are the same" in check_heldout(suite)[0]


def test_check_heldout_finds_the_manifest_by_convention(dataset, tmp_path):
    split_dataset(dataset, tmp_path / "split", seed=1)
    # samples in the split folder, no manifest: key -> split.json beside the samples file is used
    suite = _heldout_suite(tmp_path / "suite", "../split/val.jsonl", None)
    assert check_heldout(suite) == []
    with (tmp_path / "split" / "val.jsonl").open("a") as fh:
        fh.write(json.dumps(chat("new", "item")) + "\n")
    assert "1 example(s) added or edited (11 now, 10 frozen)" in check_heldout(suite)[0]


def test_check_heldout_without_manifest_or_with_a_missing_one(jsonl, tmp_path):
    jsonl("samples.jsonl", [chat("q", "a")])
    plain = _heldout_suite(tmp_path / "plain", "../samples.jsonl", None)
    assert check_heldout(plain) == []
    missing = _heldout_suite(tmp_path / "missing", "../samples.jsonl", "nope.json")
    assert "split manifest not found" in check_heldout(missing)[0]
