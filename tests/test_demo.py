"""The offline demo: suites committed in the repo match the recipe, and the whole loop runs (slow)."""

import json
from pathlib import Path

import pytest

from evalkit.cli import main
from evalkit.demo import write_regression_suite, write_retention_suite

REPO = Path(__file__).resolve().parents[1]


def test_committed_demo_suite_is_what_the_recipe_writes(tmp_path):
    """suites/demo-regression is frozen: regenerating it gives the same bytes (and the same version)."""
    fresh = write_regression_suite(tmp_path / "demo-regression")
    committed = REPO / "suites" / "demo-regression"
    for name in ("suite.yaml", "samples.jsonl", "schema.json"):
        assert (fresh / name).read_bytes() == (committed / name).read_bytes(), name


def test_committed_retention_suite_is_what_the_recipe_writes(tmp_path):
    """suites/demo-retention is frozen too: the regression suite's general prompts as multiple choice,
    four distinct choices each, the answer the regression suite's reference.
    """
    from evalkit.data.suites import load_suite

    fresh = write_retention_suite(tmp_path / "demo-retention")
    committed = REPO / "suites" / "demo-retention"
    for name in ("suite.yaml", "samples.jsonl"):
        assert (fresh / name).read_bytes() == (committed / name).read_bytes(), name
    suite = load_suite(committed)
    general = {s.id.replace("general", "retention"): s for s in load_suite(REPO / "suites" / "demo-regression").samples if "general" in s.tags}
    assert len(suite.samples) == len(general) == 40 and [sc.name for sc in suite.scorers] == ["choice", "choice_norm"]
    for s in suite.samples:
        assert len(set(s.choices)) == len(s.choices) == 4
        assert s.messages == general[s.id].messages and s.choices[s.answer] == general[s.id].reference + "<|end|>"
    assert len({s.answer for s in suite.samples}) == 4  # the right answer is not always in one place


# What the demo prints on every x86-64 machine (its kernels are pinned): the README's table.
TABLE = {
    ("base", "demo-heldout", "exact_match"): 0.0, ("base", "demo-heldout", "json_schema"): 0.0,
    ("base", "demo-regression", "exact_match"): 0.8,
    ("narrow", "demo-heldout", "exact_match"): 0.85, ("narrow", "demo-heldout", "json_schema"): 0.925,
    ("narrow", "demo-regression", "exact_match"): 0.64,
    ("mixed", "demo-heldout", "exact_match"): 0.95, ("mixed", "demo-heldout", "json_schema"): 0.975,
    ("mixed", "demo-regression", "exact_match"): 0.94,
    ("base", "demo-retention", "choice"): 1.0, ("narrow", "demo-retention", "choice"): 0.925, ("mixed", "demo-retention", "choice"): 1.0,
}
GATES = {  # (gate, candidate) -> (observed, passed)
    ("format", "narrow"): (0.925, True), ("format", "mixed"): (0.975, True),
    ("heldout-accuracy", "narrow"): (0.85, True), ("heldout-accuracy", "mixed"): (0.95, True),
    ("beats-base", "narrow"): (0.85, True), ("beats-base", "mixed"): (0.95, True),
    ("general-regressions", "narrow"): (16, False), ("general-regressions", "mixed"): (1, True),
    ("general-retention", "narrow"): (3, False), ("general-retention", "mixed"): (0, True),
    ("adapter-applied", "narrow"): (None, True), ("adapter-applied", "mixed"): (None, True),
}


@pytest.mark.slow
def test_demo_end_to_end_picks_the_candidate_to_ship_and_reruns_from_cache(tmp_path, capsys):
    """`evalkit demo` exactly as the README runs it (the shipped base, two real QLoRA candidates, one
    hf run with both adapters on one base, kernels pinned in a child process): the README's exact
    figures, `narrow` forgets general tasks and the regression gate names them, `mixed` passes every
    gate clear of its threshold and matches the shipped reference; a second demo trains nothing and
    calls no model.
    """
    out, work = tmp_path / "out", tmp_path / "work"
    code = main(["demo", "--out", str(out), "--work", str(work), "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    metrics = {(m["model"], m["suite"], m["scorer"]): m["value"] for m in summary["metrics"]}
    gates = {(g["name"], g["model"]): g for g in summary["gates"]}
    assert summary["candidates"] == ["narrow", "mixed"]
    assert {k: round(metrics[k], 4) for k in TABLE} == TABLE
    for key, (observed, passed) in GATES.items():
        assert gates[key]["passed"] is passed, (key, gates[key]["detail"])
        if observed is not None:
            assert round(gates[key]["observed"], 4) == observed, key
    # narrow forgot: the regression gate fails and names the general items
    reg = gates[("general-regressions", "narrow")]
    assert len(reg["failing_items"]) == 16 and all(i.startswith("general-") for i in reg["failing_items"])
    assert gates[("general-regressions", "mixed")]["threshold"] == 2  # the original story's gate
    # and by log-likelihood: the retention gate names the multiple-choice items whose most likely answer is now wrong
    ret = gates[("general-retention", "narrow")]
    assert len(ret["failing_items"]) == 3 and all(i.startswith("retention-") for i in ret["failing_items"])
    assert not summary["truncation"] or all(t["suite"] != "demo-retention" for t in summary["truncation"])
    assert gates[("beats-base", "mixed")]["p_value"] < 1e-6
    assert summary["candidate_verdicts"] == {"narrow": False, "mixed": True}
    assert "per candidate: mixed: SHIP" in printed and "Ship: mixed." in printed
    assert "Same figures as evalkit's reference" in printed and "differ from evalkit's reference" not in printed
    if _reference_cpu_class():  # the machine class the reference was made on: the adapters' bytes too
        assert "both candidates trained to the same bytes" in printed
    assert not any("in its training data" in w for w in summary["warnings"]), summary["warnings"]  # no contamination
    assert "Time per stage: base" in printed and "training narrow" in printed and "gates and reports" in printed
    assert f"evalkit review new {out} --a mixed --b base" in printed
    assert summary["models"]["mixed"]["candidate"]["base"]  # candidate.json recorded in the run
    candidate = json.loads((work / "mixed" / "candidate.json").read_text())
    assert candidate["numerics"] == {"revision": 2, "kernels_pinned": True} and candidate["metrics"]["compute_dtype"] == "float32"
    suites = {s["name"]: s for s in summary["suites"]}
    assert suites["demo-regression"]["path"] == str(REPO / "suites" / "demo-regression")  # the committed suite
    for f in ("report.html", "report.md", "junit.xml", "items.jsonl"):
        assert (out / f).is_file()

    assert main(["demo", "--out", str(tmp_path / "again"), "--work", str(work), "--no-progress"]) == 0
    again = json.loads((tmp_path / "again" / "summary.json").read_text())
    assert again["calls"]["generations_made"] == 0 and again["calls"]["generations_cached"] == summary["calls"]["generations_made"]
    assert again["metrics"] == summary["metrics"]


def test_demo_rebuild_base_with_base_is_one_line_exit_2(tmp_path, capsys):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    assert main(["demo", "--base", str(tmp_path / "m"), "--rebuild-base", "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--rebuild-base builds the tiny demo base" in err


def test_demo_base_that_is_not_a_checkpoint_is_one_line_exit_2(tmp_path, capsys):
    (tmp_path / "notamodel").mkdir()
    assert main(["demo", "--base", str(tmp_path / "notamodel"), "--out", str(tmp_path / "out"), "--work", str(tmp_path / "w"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a Hugging Face checkpoint folder (no config.json)" in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "w").exists()  # nothing written


def _reference_cpu_class() -> bool:
    """An Intel CPU with AVX-512 and AMX, like the one evalkit/demo_assets/reference.json was made on.
    On a real AMD EPYC (AVX2) the figures are the same but the adapters' bytes are not (docs/backends.md).
    """
    info = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace") if Path("/proc/cpuinfo").is_file() else ""
    return "GenuineIntel" in info and " avx512f" in info and " amx_tile" in info
