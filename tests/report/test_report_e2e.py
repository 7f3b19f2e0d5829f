"""Real runs (`evalkit run` through the openai SDK against the loopback server), then the history
commands on that store: accept, a `vs: last_accepted` gate, `evalkit report` rebuilding the same
reports from the store alone, and `evalkit compare`.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from evalkit.cli import main
from tests.test_run import extractor, make_suite, write_eval

GATES = (
    "  - {name: format, metric: pass_rate, scorer: json_schema, min: 0.8}\n"
    "  - {name: vs-accepted, metric: regressions, vs: last_accepted, max: 0}\n"
)


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("EK_TEST_KEY", "sk-evalkit-test-SECRET-1234")
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)


def test_history_after_real_runs(tmp_path, loopback_api, capsys):
    make_suite(tmp_path)
    cfg = write_eval(tmp_path, loopback_api.base_url, GATES)
    store = str(tmp_path / "store.db")

    # run 1: no accepted run yet -> the last_accepted gate warns, the run passes; accept it
    loopback_api.set_responder(extractor())
    assert main(["run", str(cfg), "--out", str(tmp_path / "r1"), "--no-progress"]) == 0
    s1 = json.loads((tmp_path / "r1" / "summary.json").read_text())
    g = next(x for x in s1["gates"] if x["name"] == "vs-accepted")
    assert g["outcome"] == "warn" and "evalkit accept" in g["detail"]
    assert main(["accept", "latest", "--store", store]) == 0

    # run 2: the candidate breaks s2 (a new model output, so a new generation) -> fails vs the accepted run
    loopback_api.set_responder(extractor(broken_ids={2}))
    cfg.write_text(cfg.read_text().replace("max_new_tokens: 32", "max_new_tokens: 31"))
    assert main(["run", str(cfg), "--out", str(tmp_path / "r2"), "--no-progress"]) == 1
    s2 = json.loads((tmp_path / "r2" / "summary.json").read_text())
    g = next(x for x in s2["gates"] if x["name"] == "vs-accepted")
    assert g["outcome"] == "fail" and g["failing_items"] == ["s2"] and s1["run_id"] in g["detail"]
    capsys.readouterr()

    # the store alone rebuilds the same reports
    assert main(["report", s2["run_id"], "--out", str(tmp_path / "again"), "--store", store]) == 0
    for name in ("summary.json", "items.jsonl", "report.md"):
        assert (tmp_path / "again" / name).read_text() == (tmp_path / "r2" / name).read_text(), name
    assert ET.parse(tmp_path / "again" / "junit.xml").getroot().find("testsuite").get("failures") == "1"
    page = (tmp_path / "again" / "report.html").read_text()
    assert "Don&#39;t ship" in page and "plot-trend" in page  # the rebuild sees the accepted history
    assert "SECRET-1234" not in page

    # runs list and compare
    capsys.readouterr()
    assert main(["runs", "list", "--store", store]) == 0
    listing = capsys.readouterr().out
    assert "*" + s1["run_id"] in listing and " " + s2["run_id"] in listing
    assert main(["compare", s1["run_id"], s2["run_id"], "--store", store, "--model-a", "cand"]) == 0
    text = capsys.readouterr().out
    assert "worse on json_schema: s2" in text and "1 outputs changed" in text
