"""write_reports / console_summary / Markdown / JUnit / HTML on crafted runs."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from evalkit import gates as G
from evalkit.report import REPORT_FILES, console_summary, render_junit, render_markdown, write_reports
from tests.report.crafted import MODELS, gate, item, ok, summary_for, two_model_items

HOSTILE = [
    "<script>document.title='pwned';window.__pwned=1</script>",
    "<img src=x onerror=\"window.__pwned=2\">",
    "</textarea></pre><b id=injected>bold</b>",
]


def crafted_run():
    items = two_model_items([True, True, True, False], [True, False, True, True])
    items += [
        item("base", "h0", {"fmt": ok(True), "judge.correctness": ok(None, value=4)}, output="fine", tags=("hostile",)),
        item("cand", "h0", {"fmt": ok(False), "judge.correctness": ok(None, value=1)}, output=HOSTILE[0] + HOSTILE[1] + HOSTILE[2], tags=("hostile",), prompt=HOSTILE[1], reference=HOSTILE[2]),
    ]
    results = G.evaluate_gates(
        [gate(name="fmt", metric="pass_rate", scorer="fmt", min=0.9), gate(name="noreg", metric="regressions", scorer="fmt"), gate(name="zero-ok", metric="error_rate", max=0)],
        items=items, models=MODELS, baseline="base", candidates=["cand"],
    )
    passed = G.all_passed(results)
    summary = summary_for(items, [r.as_dict() for r in results], passed, metrics=[
        {"model": "cand", "suite": "s", "scorer": "fmt", "metric": "pass_rate", "value": 0.6, "n": 5, "errors": 0},
        {"model": "base", "suite": "s", "scorer": "fmt", "metric": "pass_rate", "value": 0.8, "n": 5, "errors": 0},
    ])
    return summary, items


def test_write_reports_writes_all_files_atomically(tmp_path, monkeypatch):
    summary, items = crafted_run()
    step = tmp_path / "step_summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step))
    paths = write_reports(tmp_path / "out", summary, items)
    assert sorted(p.name for p in paths) == sorted(REPORT_FILES)
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.endswith(".tmp")]
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["run_id"] == summary["run_id"]
    lines = [json.loads(x) for x in (tmp_path / "out" / "items.jsonl").read_text().splitlines()]
    assert len(lines) == len(items)
    assert set(lines[0]) == {"model", "suite", "suite_version", "sample_id", "tags", "output", "error", "finish_reason", "truncated", "reasoning", "scores"}
    assert "DON'T SHIP" in step.read_text()


def test_write_reports_leaves_old_files_when_rendering_fails(tmp_path, monkeypatch):
    summary, items = crafted_run()
    out = tmp_path / "out"
    write_reports(out, summary, items, step_summary=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    import evalkit.report as R

    def boom(*a, **k):
        raise RuntimeError("renderer broke")

    monkeypatch.setattr(R, "render_junit", boom)
    changed = dict(summary, run_id="another-run")
    with pytest.raises(RuntimeError):
        write_reports(out, changed, items, step_summary=False)
    after = {p.name: p.read_bytes() for p in out.iterdir()}
    assert after == before  # nothing half-written, no temp files left


def test_junit_is_valid_and_counts_match():
    summary, _ = crafted_run()
    root = ET.fromstring(render_junit(summary).encode())
    suites = root.findall("testsuite")
    assert len(suites) == 1
    cases = suites[0].findall("testcase")
    assert len(cases) == len(summary["gates"]) == int(suites[0].get("tests"))
    failures = [c for c in cases if c.find("failure") is not None]
    assert len(failures) == int(suites[0].get("failures")) == 2
    fmt = next(c for c in cases if c.get("name") == "fmt")
    assert fmt.get("classname") == "cand"
    msg = fmt.find("failure").get("message")
    assert "x1" in msg and "h0" in msg
    ok_case = next(c for c in cases if c.get("name") == "zero-ok")
    assert ok_case.find("failure") is None


def test_junit_escapes_hostile_names():
    s = summary_for([], [{"name": "<gate & \"x\">\x01", "model": "m<", "metric": "pass_rate", "passed": False, "outcome": "fail",
                          "observed": 0.1, "threshold": 0.5, "detail": "bad </failure>", "failing_items": ["<id>"]}], False)
    root = ET.fromstring(render_junit(s).encode())
    tc = root.find("testsuite/testcase")
    assert tc.get("name") == "<gate & \"x\">" and "<id>" in tc.find("failure").get("message")


def test_markdown_is_one_screen_and_names_items():
    summary, _ = crafted_run()
    md = render_markdown(summary)
    assert md.startswith("## ❌ evalkit: DON'T SHIP")
    assert "| ❌ | fmt | cand |" in md and "`x1`" in md and "`h0`" in md
    assert len(md.splitlines()) < 40
    assert "<script>" not in md


def test_markdown_truncates_huge_runs():
    gates = [{"name": f"g{i}", "model": "cand", "metric": "pass_rate", "passed": False, "outcome": "fail", "observed": 0.1, "threshold": 0.5,
              "detail": "x" * 300, "failing_items": [f"id{j}" for j in range(1000)]} for i in range(300)]
    md = render_markdown(summary_for([], gates, False))
    assert len(md) <= 60_000 and "truncated" in md


def test_console_summary():
    summary, _ = crafted_run()
    text = console_summary(summary, out_dir="reports/x")
    lines = text.splitlines()
    assert lines[0].startswith("FAIL  DON'T SHIP")
    assert any(l.strip().startswith("FAIL") and "fmt" in l for l in lines[1:])
    assert any(l.strip().startswith("PASS") and "zero-ok" in l for l in lines[1:])
    assert lines[-1].startswith("reports: reports/x/report.html")


def test_html_escapes_model_output():
    from evalkit.report import render_html

    summary, items = crafted_run()
    page = render_html(summary, items)
    for h in HOSTILE:
        assert h not in page
    assert "&lt;script&gt;document.title=" in page
    assert "&lt;img src=x onerror=" in page
    assert "&lt;/textarea&gt;&lt;/pre&gt;&lt;b id=injected&gt;" in page
    assert "<script" not in page.lower()
    assert "Don&#39;t ship" in page or "Don't ship" in page
    assert "<svg" in page and 'src="http' not in page and "href=\"http" not in page


def test_minimal_summary_still_renders(tmp_path):
    """An older or partial summary (missing keys, no items, no baseline) renders without errors."""
    paths = write_reports(tmp_path / "o", {"run_id": "r", "passed": True}, [], step_summary=False)
    assert len(paths) == 5
    page = (tmp_path / "o" / "report.html").read_text()
    assert "Ship" in page and "No gates configured" in page
    assert console_summary({"run_id": "r", "passed": False}).startswith("FAIL")
    root = ET.fromstring((tmp_path / "o" / "junit.xml").read_bytes())
    assert root.find("testsuite").get("tests") == "0"


def test_hostile_names_in_plots_and_tables_are_escaped():
    from evalkit.report import render_html

    evil = '"><script>alert(1)</script>'
    items = []
    for i in range(4):
        for m, p in (("base", True), ("cand", i % 2 == 0)):
            items.append(item(m, f"{evil}{i}", {f"fmt{evil}": ok(p), "judge.q": ok(None, value=3 + i % 2)}, suite=f"s{evil}", tags=(f"t{evil}",)))
    summary = summary_for(items, [{"name": evil, "model": "cand", "metric": "pass_rate", "passed": False, "outcome": "fail",
                                   "observed": 0.5, "threshold": 1, "detail": evil, "failing_items": [f"{evil}1"]}], False)
    page = render_html(summary, items)
    assert "<script" not in page.lower() and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert 'aria-label="Pass rates with 95% CI: s&#34;&gt;' in page or 'aria-label="Pass rates with 95% CI: s&quot;&gt;' in page


def test_run_record_round_trips_and_refuses_a_newer_schema():
    import pytest

    from evalkit.errors import UserError
    from evalkit.record import SCHEMA_VERSION, RunSummary

    old = {"run_id": "r1", "passed": True, "exit_code": 0, "models": {"m": {"backend": "hf", "role": "candidate"}},
           "gates": [{"name": "g", "passed": True, "outcome": "pass", "observed": 1.0, "threshold": 0.5, "detail": "ok"}],
           "timing": {"generate_s": 1.0}, "something_new": {"kept": True}}
    rec = RunSummary.load(old)  # schema 1: no version field, no reproducibility
    assert rec.schema_version == 1 and rec.reproducibility is None and rec.models["m"].backend == "hf"
    assert rec.gates[0].outcome == "pass" and rec.timing.judge_s == 0.0
    again = RunSummary.load(rec.to_json())
    assert again == rec and again.to_json()["something_new"] == {"kept": True}  # unknown keys survive
    with pytest.raises(UserError, match="newer evalkit"):
        RunSummary.load({**old, "schema_version": SCHEMA_VERSION + 1})


def test_reproducibility_block_in_summary_html_footer_and_junit(tmp_path):
    import xml.etree.ElementTree as ET

    from evalkit.record import RunSummary, reproducibility
    from evalkit.report import write_reports

    rep = reproducibility(suites={"s": "abc123"}, rubrics={"default": "def456"}, generation={"m": {"max_new_tokens": 8}})
    assert rep.evalkit_version and rep.python and rep.packages["torch"]  # torch is installed here
    assert rep.git_commit is None or len(rep.git_commit) == 40
    summary = RunSummary(run_id="r1", name="n", passed=True, exit_code=0, reproducibility=rep).to_json()
    write_reports(tmp_path, summary, [])
    html = (tmp_path / "report.html").read_text()
    footer = html[html.index('<footer id="reproducibility"'):]
    assert f"evalkit {rep.evalkit_version}" in footer and f"torch {rep.packages['torch']}" in footer
    assert "s <code>abc123</code>" in footer and "default <code>def456</code>" in footer and "Summary schema 2" in footer
    props = {p.get("name"): p.get("value") for p in ET.parse(tmp_path / "junit.xml").getroot().iter("property")}
    assert props["evalkit.evalkit_version"] == rep.evalkit_version and props["evalkit.packages.torch"] == rep.packages["torch"]
    assert props["evalkit.suites.s"] == "abc123" and props["evalkit.rubrics.default"] == "def456" and props["schema_version"] == "2"
    assert "reproducibility" in json.loads((tmp_path / "summary.json").read_text())


def test_control_characters_of_model_output_are_visible_in_the_reports_and_raw_in_items_jsonl(tmp_path):
    """ESC / BEL / NUL / DEL / a C1 CSI in an output: inert in a browser, live in a terminal that cats
    report.html or report.md; the reports show them as symbols, items.jsonl keeps the exact text.
    """
    nasty = "ok\x1b[2J\x1b]0;pwned\x07\x00\x7f\x9b31m\u202eend"
    items = two_model_items([True, True], [True, False])
    items.append(item("cand", "c0", {"fmt": ok(False)}, output=nasty, prompt="p\x1b[1m", reference="r\x08"))
    items.append(item("base", "c0", {"fmt": ok(True)}, output="fine"))
    results = G.evaluate_gates([gate(name="noreg", metric="regressions", scorer="fmt")], items=items, models=MODELS, baseline="base", candidates=["cand"])
    summary = summary_for(items, [r.as_dict() for r in results], G.all_passed(results))
    summary["models"]["cand\x1b[31m"] = {"backend": "hf"}  # a model name with an escape, as a hostile config could give
    out = tmp_path / "out"
    write_reports(out, summary, items, step_summary=False)
    for name in ("report.html", "report.md"):
        text = (out / name).read_text(encoding="utf-8")
        assert not any(c in text for c in "\x1b\x07\x00\x7f\x9b\x08\u202e"), name
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "ok\u241b[2J\u241b]0;pwned\u2407\u2400\u2421&lt;U+009B&gt;31m&lt;U+202E&gt;end" in page
    raw = [json.loads(x) for x in (out / "items.jsonl").read_text().splitlines()]
    assert nasty in [r["output"] for r in raw]
