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
def test_demo_end_to_end_discriminates_and_reruns_from_cache(tmp_path):
    """`evalkit demo` exactly as the README runs it (real demo base, real QLoRA, real hf backend): the
    format gate passes for the candidate on what the base cannot do, the regression gate names the
    general items fine-tuning broke, and a second demo reuses the candidate and makes no model call.
    """
    out, work = tmp_path / "out", tmp_path / "work"
    code = main(["demo", "--out", str(out), "--work", str(work), "--no-progress"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    metrics = {(m["model"], m["suite"], m["scorer"]): m["value"] for m in summary["metrics"]}
    gates = {g["name"]: g for g in summary["gates"]}
    # the candidate learned the format task that the base cannot do
    assert metrics[("base", "demo-heldout", "json_schema")] < 0.8 <= metrics[("cand", "demo-heldout", "json_schema")]
    assert gates["format"]["passed"] is True
    # ... and the regression suite shows what it cost, naming the items
    assert metrics[("cand", "demo-regression", "exact_match")] < metrics[("base", "demo-regression", "exact_match")]
    reg = gates["general-regressions"]
    assert reg["passed"] is False and reg["observed"] > 2 and len(reg["failing_items"]) == reg["observed"]
    assert all(i.startswith("general-") for i in reg["failing_items"])
    assert gates["adapter-applied"]["passed"] is True
    assert summary["models"]["cand"]["candidate"]["base"]  # candidate.json recorded in the run
    suites = {s["name"]: s for s in summary["suites"]}
    assert suites["demo-regression"]["path"] == str(REPO / "suites" / "demo-regression")  # the committed suite
    for f in ("report.html", "report.md", "junit.xml", "items.jsonl"):
        assert (out / f).is_file()

    assert main(["demo", "--out", str(tmp_path / "again"), "--work", str(work), "--no-progress"]) == 0
    again = json.loads((tmp_path / "again" / "summary.json").read_text())
    assert again["calls"]["generations_made"] == 0 and again["calls"]["generations_cached"] == summary["calls"]["generations_made"]
    assert again["metrics"] == summary["metrics"]
