"""The offline demo: suites committed in the repo match the recipe, and the whole loop runs (slow)."""

import json
from pathlib import Path

import pytest

from evalkit.cli import main
from evalkit.demo import write_regression_suite

REPO = Path(__file__).resolve().parents[1]


def test_committed_demo_suite_is_what_the_recipe_writes(tmp_path):
    """suites/demo-regression is frozen: regenerating it gives the same bytes (and the same version)."""
    fresh = write_regression_suite(tmp_path / "demo-regression")
    committed = REPO / "suites" / "demo-regression"
    for name in ("suite.yaml", "samples.jsonl", "schema.json"):
        assert (fresh / name).read_bytes() == (committed / name).read_bytes(), name


@pytest.mark.slow
def test_demo_end_to_end_picks_the_candidate_to_ship_and_reruns_from_cache(tmp_path, capsys):
    """`evalkit demo` exactly as the README runs it (real demo base, two real QLoRA candidates, one
    hf run with both adapters on one base): both learn the format the base cannot do, `mixed` gets
    the field values right on the held-out split, `narrow` forgets general tasks and the regression
    gate names them, `mixed` passes every gate; a second demo trains nothing and calls no model.
    """
    out, work = tmp_path / "out", tmp_path / "work"
    code = main(["demo", "--out", str(out), "--work", str(work), "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    metrics = {(m["model"], m["suite"], m["scorer"]): m["value"] for m in summary["metrics"]}
    gates = {(g["name"], g["model"]): g for g in summary["gates"]}
    assert summary["candidates"] == ["narrow", "mixed"]
    # the base cannot do the task at all; the shipping candidate gets the field values right
    assert metrics[("base", "demo-heldout", "exact_match")] < 0.1 and metrics[("base", "demo-heldout", "json_schema")] < 0.8
    assert metrics[("mixed", "demo-heldout", "exact_match")] >= 0.6
    for cand in ("narrow", "mixed"):
        assert metrics[(cand, "demo-heldout", "json_schema")] >= 0.8 and gates[("format", cand)]["passed"] is True
        assert gates[("adapter-applied", cand)]["passed"] is True
    # narrow forgot: the regression gate fails and names the general items
    reg = gates[("general-regressions", "narrow")]
    assert reg["passed"] is False and reg["observed"] > 2 and len(reg["failing_items"]) == reg["observed"]
    assert all(i.startswith("general-") for i in reg["failing_items"])
    # mixed passes every gate, the paired significance gate against the base included
    assert all(g["outcome"] == "pass" for (name, model), g in gates.items() if model == "mixed"), [g["detail"] for g in gates.values() if g["model"] == "mixed"]
    assert gates[("beats-base", "mixed")]["p_value"] < 0.05
    assert summary["candidate_verdicts"] == {"narrow": False, "mixed": True}
    assert "per candidate: mixed: SHIP" in printed and "Ship: mixed." in printed
    assert not any("in its training data" in w for w in summary["warnings"]), summary["warnings"]  # no contamination
    assert "Time per stage: base" in printed and "training narrow" in printed and "gates and reports" in printed
    assert f"evalkit review new {out} --a mixed --b base" in printed
    assert summary["models"]["mixed"]["candidate"]["base"]  # candidate.json recorded in the run
    suites = {s["name"]: s for s in summary["suites"]}
    assert suites["demo-regression"]["path"] == str(REPO / "suites" / "demo-regression")  # the committed suite
    for f in ("report.html", "report.md", "junit.xml", "items.jsonl"):
        assert (out / f).is_file()

    assert main(["demo", "--out", str(tmp_path / "again"), "--work", str(work), "--no-progress"]) == 0
    again = json.loads((tmp_path / "again" / "summary.json").read_text())
    assert again["calls"]["generations_made"] == 0 and again["calls"]["generations_cached"] == summary["calls"]["generations_made"]
    assert again["metrics"] == summary["metrics"]


def test_demo_base_that_is_not_a_checkpoint_is_one_line_exit_2(tmp_path, capsys):
    (tmp_path / "notamodel").mkdir()
    assert main(["demo", "--base", str(tmp_path / "notamodel"), "--out", str(tmp_path / "out"), "--work", str(tmp_path / "w"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a Hugging Face checkpoint folder (no config.json)" in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "w").exists()  # nothing written
