"""The offline demo: suites committed in the repo match the recipe, and the whole loop runs (slow)."""

import json
from pathlib import Path

import pytest

from evalkit.demo import write_regression_suite
from evalkit.cli import main

REPO = Path(__file__).resolve().parents[1]


def test_committed_demo_suite_is_what_the_recipe_writes(tmp_path):
    """suites/demo-regression is frozen: regenerating it gives the same bytes (and the same version)."""
    fresh = write_regression_suite(tmp_path / "demo-regression")
    committed = REPO / "suites" / "demo-regression"
    for name in ("suite.yaml", "samples.jsonl", "schema.json"):
        assert (fresh / name).read_bytes() == (committed / name).read_bytes(), name


@pytest.mark.slow
def test_quick_demo_end_to_end(tmp_path):
    out = tmp_path / "out"
    code = main(["demo", "--quick", "--out", str(out), "--work", str(tmp_path / "work"), "--no-progress"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    metrics = {(m["model"], m["suite"], m["scorer"]): m["value"] for m in summary["metrics"]}
    # the candidate learned the format task that the base cannot do
    assert metrics[("cand", "demo-heldout", "json_schema")] > metrics[("base", "demo-heldout", "json_schema")]
    gates = {g["name"]: g for g in summary["gates"]}
    assert gates["adapter-applied"]["passed"] is True
    assert summary["models"]["cand"]["candidate"]["base"]  # candidate.json recorded in the run
    for f in ("report.html", "report.md", "junit.xml", "items.jsonl"):
        assert (out / f).is_file()
