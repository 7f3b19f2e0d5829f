"""A verdict that cannot be wrong by accident: every bad input refused (exit 2, one line naming file and
line or key, no traceback, nothing written, no model called), every hostile byte survived, and no broken
run turned into a passing gate.

Table-driven: each case is (how to break the input, the message fragment expected).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

from evalkit.cli import main
from tests.support.loopback import Fault, last_user_text
from tests.test_run import GATES, extractor, make_suite, write_eval

KEY = "sk-evalkit-test-SECRET-1234"


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("EK_TEST_KEY", KEY)


def _replace(old: str, new: str) -> Callable[[Path], None]:
    def edit(root: Path) -> None:
        cfg = root / "eval.yaml"
        text = cfg.read_text()
        assert old in text, old
        cfg.write_text(text.replace(old, new))

    return edit


def _gates(lines: str) -> Callable[[Path], None]:
    def edit(root: Path) -> None:
        cfg = root / "eval.yaml"
        text = cfg.read_text()
        cfg.write_text(text[: text.index("gates:\n")] + "gates:\n" + lines)

    return edit


def _write_bytes(rel: str, data: bytes, append: bool = True) -> Callable[[Path], None]:
    def edit(root: Path) -> None:
        p = root / rel
        p.write_bytes((p.read_bytes() if append else b"") + data)

    return edit


def _insert_bytes(rel: str, after: bytes, data: bytes) -> Callable[[Path], None]:
    def edit(root: Path) -> None:
        p = root / rel
        raw = p.read_bytes()
        assert after in raw
        p.write_bytes(raw.replace(after, after + data, 1))

    return edit


def _set_base_url(root: Path, url: str) -> None:
    import re

    cfg = root / "eval.yaml"
    cfg.write_text(re.sub(r"(model: base, base_url: )'[^']*'", lambda m: f"{m.group(1)}'{url}'", cfg.read_text()))


# (case id, edit of the files, extra CLI args, expected fragment of the one error line)
BAD_RUN_INPUTS = [
    ("gate-scorer-typo", _gates("  - {name: fmt, metric: pass_rate, scorer: json_vaild, min: 0.9}\n"), [],
     "eval.yaml:10: gate 'fmt': no scorer named 'json_vaild'"),
    ("gate-scorer-lists-known", _gates("  - {name: fmt, metric: pass_rate, scorer: json_vaild, min: 0.9, on_no_decision: warn}\n"), [],
     "(scorers: exact_match, json_schema, json_valid)"),
    ("gate-suite-typo", _gates("  - {name: fmt, metric: pass_rate, scorer: json_valid, suite: contacs, min: 0.9}\n"), [],
     "suite 'contacs' is not in this run (suites: extract)"),
    ("gate-tag-typo", _gates("  - {name: fmt, metric: pass_rate, scorer: json_valid, tag: shrot, min: 0.9}\n"), [],
     "no sample carries tag 'shrot' (tags: long, short)"),
    ("gate-regression-scorer-typo", _gates("  - {name: r, metric: regressions, scorer: exact_mach}\n"), [],
     "no scorer named 'exact_mach'"),
    ("gate-win-rate-no-judge", _gates("  - {name: w, metric: win_rate, min: 0.5}\n"), [],
     "no pairwise judge named 'pairwise'"),
    ("rate-threshold-out-of-range", _gates("  - {name: fmt, metric: pass_rate, scorer: json_valid, min: 5}\n"), [],
     "'min: 5' is outside the range of pass_rate ([0, 1])"),
    ("negative-regressions", _gates("  - {name: r, metric: regressions, max: -1}\n"), [],
     "'max: -1' is outside the range of regressions"),
    ("min-above-max", _gates("  - {name: fmt, metric: pass_rate, scorer: json_valid, min: 0.9, max: 0.5}\n"), [],
     "no value could pass"),
    ("min-pairs-zero", _gates("  - {name: r, metric: regressions, min_pairs: 0}\n"), [],
     "min_pairs"),
    ("limit-zero", None, ["--limit", "0"], "Invalid value for '--limit'"),
    ("limit-negative", None, ["--limit", "-1"], "Invalid value for '--limit'"),
    ("max-new-tokens-zero", None, ["--max-new-tokens", "0"], "Invalid value for '--max-new-tokens'"),
    ("max-new-tokens-absurd", _replace("max_new_tokens: 32", "max_new_tokens: 1.0e+30"), [],
     "eval.yaml:7: generation.max_new_tokens: Unable to parse input string as an integer"),
    ("max-new-tokens-too-many", _replace("max_new_tokens: 32", "max_new_tokens: 1.0e+9"), [],
     "generation.max_new_tokens: Input should be less than or equal to 1048576"),
    ("max-new-tokens-string", _replace("max_new_tokens: 32", "max_new_tokens: 1e30"), [],
     "generation.max_new_tokens: Input should be a valid integer"),
    ("max-new-tokens-inf", _replace("max_new_tokens: 32", "max_new_tokens: .inf"), [],
     "generation.max_new_tokens"),
    ("max-new-tokens-negative", _replace("max_new_tokens: 32", "max_new_tokens: -5"), [],
     "generation.max_new_tokens: Input should be greater than or equal to 1"),
    ("no-suites", _replace("suites: [suites/extract]", "suites: []"), [], "eval.yaml:6: suites: List should have at least 1 item"),
    ("duplicate-key", _replace("baseline: base\n", "baseline: base\nbaseline: cand\n"), [],
     "eval.yaml:5: key 'baseline' appears twice (lines 4 and 5)"),
    ("store-url", _replace("store: store.db", "store: postgresql://u:hunter2@127.0.0.1:1/evals"), [],
     "cannot connect to the PostgreSQL store: connection to server at \"127.0.0.1\", port 1 failed"),
    ("store-url-scheme", _replace("store: store.db", "store: mysql://u:hunter2@127.0.0.1/evals"), [],
     "unsupported store URL scheme 'mysql'"),
    ("api-key-in-api_key_env", _replace("api_key_env: EK_TEST_KEY, concurrency: 4}\n  cand", f"api_key_env: {KEY}, concurrency: 4}}\n  cand"), [],
     "this looks like an API key, not an environment variable name"),
    ("base-url-not-a-url", lambda root: _set_base_url(root, "not a url"), [], "eval.yaml:2: models.base.base_url: not a valid server URL"),
    ("base-url-ftp", lambda root: _set_base_url(root, "ftp://127.0.0.1/v1"), [], "not a valid server URL: expected http://HOST"),
    ("base-url-bad-port", _replace("model: base, base_url: 'http://127.0.0.1:", "model: base, base_url: 'http://127.0.0.1:x"), [],
     "not a valid URL"),
    ("out-is-a-file", lambda root: (root / "o").write_text("I am a file"), [], "--out: o is an existing file, not a folder"),
    ("eval-yaml-not-utf8", _write_bytes("eval.yaml", b"name: caf\xe9\n"), [], "eval.yaml:12: not valid UTF-8 (byte 0xe9"),
    ("eval-yaml-nul", _write_bytes("eval.yaml", b"name: a\x00b\n"), [], "eval.yaml:12: contains a NUL byte"),
    ("suite-yaml-not-utf8", _insert_bytes("suites/extract/suite.yaml", b"kind: regression\n", b"description: \xff\xfe\n"), [],
     "suite.yaml:3: not valid UTF-8 (byte 0xff"),
    ("samples-not-utf8", _write_bytes("suites/extract/samples.jsonl", b'{"id": "x", "messages": [{"role": "user", "content": "caf\xe9"}]}\n'), [],
     "samples.jsonl:7: not valid UTF-8 (byte 0xe9 at column 58)"),
    ("samples-nul", _write_bytes("suites/extract/samples.jsonl", b'{"id": "x", "messages": [{"role": "user", "content": "a\x00"}]}\n'), [],
     "samples.jsonl:7: NUL byte at column 56"),
    ("schema-not-utf8", _write_bytes("suites/extract/schema.json", b"\xff", append=True), [], "schema.json:1: not valid UTF-8"),
]


@pytest.mark.parametrize("case", BAD_RUN_INPUTS, ids=[c[0] for c in BAD_RUN_INPUTS])
def test_bad_run_input_is_refused_before_any_work(tmp_path, loopback_api, capsys, monkeypatch, case):
    _, edit, args, expect = case
    loopback_api.set_responder(extractor())
    make_suite(tmp_path, tags=True)
    write_eval(tmp_path, loopback_api.base_url, GATES)
    if edit is not None:
        edit(tmp_path)
    monkeypatch.chdir(tmp_path)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    code = main(["run", "eval.yaml", "--out", "o", "--no-progress", *args])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert expect in err, err
    assert "Traceback" not in err
    if not err.startswith("Usage:"):  # typer's own usage errors have their usual 3-line form
        assert len(lines) == 1, err
    assert KEY not in err and "hunter2" not in err
    assert loopback_api.requests == []  # no model was called
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert after == before  # nothing written: no store, no report folder, no 'postgresql:' folder


MISTYPED = [
    (["rn"], "No such command 'rn'. Did you mean 'run'"),
    (["run", "--bogus", "x.yaml"], "No such option: --bogus"),
    (["run", "eval.yaml", "--ouy", "o"], "No such option: --ouy (Possible options: --out"),
    (["review", "new", "latest", "--reviewer", "a"], "No such option: --reviewer (Possible options: --reviewers"),
    (["data", "valdate", "x.jsonl"], "No such command 'valdate'"),
    (["runs", "lst"], "No such command 'lst'"),
    (["report"], "Missing option '--out'"),
    (["run", "eval.yaml", "--limit", "many"], "Invalid value for '--limit'"),
    (["data", "split", "x.jsonl", "--out"], "Option '--out' requires an argument"),
]


@pytest.mark.parametrize("args,expect", MISTYPED, ids=[" ".join(a) for a, _ in MISTYPED])
def test_mistyped_commands_and_options_exit_2_without_traceback(tmp_path, args, expect):
    r = subprocess.run([sys.executable, "-m", "evalkit.cli", *args], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    assert expect in " ".join(r.stderr.split()), r.stderr
    assert list(tmp_path.iterdir()) == []


OUT_PATHS = [
    (["data", "convert", "SRC", "--out", "DIR"], "is a folder; give a file path"),
    (["data", "split", "SRC", "--out", "FILE"], "is an existing file, not a folder"),
    (["data", "audit", "SRC", "--out", "FILE"], "is an existing file, not a folder"),
    (["data", "validate", "SRC", "--json", "DIR"], "is a folder; give a file path"),
    (["report", "latest", "--out", "FILE"], "is an existing file, not a folder"),
    (["export", "latest", "--out", "DIR"], "is a folder; give a file path"),
]


@pytest.mark.parametrize("args,expect", OUT_PATHS, ids=[" ".join(a[:2]) for a, _ in OUT_PATHS])
def test_output_paths_are_checked_before_any_work(tmp_path, capsys, monkeypatch, args, expect):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "SRC").write_text(json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}) + "\n")
    (tmp_path / "DIR").mkdir()
    (tmp_path / "FILE").write_text("keep me")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert expect in err and len(err.strip().splitlines()) == 1, err
    assert (tmp_path / "FILE").read_text() == "keep me" and list((tmp_path / "DIR").iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["DIR", "FILE", "SRC"]


# --- gates that cannot pass on missing data -----------------------------------------------------


def _summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


@pytest.mark.parametrize("policy", ["fail", "warn", "pass"])
def test_baseline_unknown_to_the_server_never_passes_a_regression_gate(tmp_path, loopback_api, policy):
    """30/30 baseline requests 404: '0 regressions of 0 pairs' used to pass, exit 0."""
    loopback_api.set_responder(extractor())
    loopback_api.add_faults([Fault.http(404, when=lambda r: isinstance(r.body, dict) and r.body.get("model") == "base", times=None)])
    make_suite(tmp_path, n=10)
    gates = f"  - {{name: no-regressions, metric: regressions, vs: baseline, max: 0, on_no_decision: {policy}}}\n"
    cfg = write_eval(tmp_path, loopback_api.base_url, gates)
    out = tmp_path / "o"
    assert main(["run", str(cfg), "--out", str(out), "--no-progress"]) == 1
    s = _summary(out)
    [g] = s["gates"]
    assert s["passed"] is False and g["outcome"] == "no_decision" and g["passed"] is None
    assert "only 0 of 10 pairs" in g["detail"] and "generation failed on baseline base: 10" in g["detail"]
    assert "whatever on_no_decision says" in g["detail"]
    assert s["errors"]["generation"] == 10


def test_unscored_pairs_that_could_hide_regressions_make_no_decision(tmp_path, loopback_api):
    loopback_api.set_responder(extractor())
    # two baseline items fail for good (no retries): 8 pairs compare clean, 2 cannot be compared
    broken = {"P3", "P7"}
    loopback_api.add_faults([Fault.http(500, times=None, when=lambda r: isinstance(r.body, dict) and r.body.get("model") == "base"
                                        and last_user_text(r.body).split(";")[0].split(":")[1].strip() in broken)])
    make_suite(tmp_path, n=10)
    cfg = write_eval(tmp_path, loopback_api.base_url, "  - {name: noreg, metric: regressions, max: 1}\n")
    cfg.write_text(cfg.read_text().replace("concurrency: 4", "concurrency: 4, max_retries: 0"))
    out = tmp_path / "o"
    assert main(["run", str(cfg), "--out", str(out), "--no-progress"]) == 1
    [g] = _summary(out)["gates"]
    assert g["outcome"] == "no_decision" and g["observed"] == 0
    assert "2 pairs could not be scored" in g["detail"] and "could hide regressions beyond max 1" in g["detail"]
    # with room for the worst case the same data passes, and says what it excluded
    cfg.write_text(cfg.read_text().replace("max: 1}", "max: 2}"))
    assert main(["run", str(cfg), "--out", str(out), "--no-progress"]) == 0
    [g] = _summary(out)["gates"]
    assert g["outcome"] == "pass" and "2 pairs unscored (generation failed on baseline base: 2)" in g["detail"]
    # min_pairs: fewer comparable pairs than asked is undecided
    cfg.write_text(cfg.read_text().replace("max: 2}", "max: 2, min_pairs: 9}"))
    assert main(["run", str(cfg), "--out", str(out), "--no-progress"]) == 1
    [g] = _summary(out)["gates"]
    assert g["outcome"] == "no_decision" and "only 8 of 10 pairs" in g["detail"] and "(min_pairs 9)" in g["detail"]


def test_a_model_whose_every_request_fails_gets_no_decision_not_a_pass(tmp_path, loopback_api):
    loopback_api.set_responder(extractor())
    loopback_api.add_faults([Fault.http(400, when=lambda r: isinstance(r.body, dict) and r.body.get("model") == "cand", times=None)])
    make_suite(tmp_path)
    gates = "  - {name: floor, metric: pass_rate, scorer: json_valid, min: 0, on_no_decision: pass}\n"
    cfg = write_eval(tmp_path, loopback_api.base_url, gates)
    out = tmp_path / "o"
    assert main(["run", str(cfg), "--out", str(out), "--no-progress"]) == 1
    [g] = _summary(out)["gates"]
    assert g["outcome"] == "no_decision" and "6 generation failed" in g["detail"]


# --- hostile bytes -----------------------------------------------------------------------------


def test_lone_surrogate_output_is_stored_losslessly_and_the_run_finishes(tmp_path, loopback_api):
    def responder(api, req):
        if "P2" in last_user_text(req) and req["model"] == "cand":
            return "bad \ud800 half"
        return extractor()(api, req)

    loopback_api.set_responder(responder)
    make_suite(tmp_path)
    cfg = write_eval(tmp_path, loopback_api.base_url, "  - {name: fmt, metric: pass_rate, scorer: json_valid, min: 0.5}\n")
    out = tmp_path / "o"
    assert main(["run", str(cfg), "--out", str(out), "--no-progress"]) == 0
    # a rerun is served from the store (the item did not poison the cache) and still finishes
    assert main(["run", str(cfg), "--out", str(out), "--no-progress"]) == 0
    s = _summary(out)
    assert s["calls"]["generations_made"] == 0
    assert any("lone surrogates" in w for w in s["warnings"])
    items = [json.loads(line) for line in (out / "items.jsonl").read_text(encoding="utf-8").splitlines()]
    assert next(i for i in items if i["model"] == "cand" and i["sample_id"] == "s2")["output"] == "bad \ud800 half"
    db = sqlite3.connect(tmp_path / "store.db")
    raw = db.execute("SELECT text FROM generations WHERE text LIKE 'bad%' OR typeof(text) = 'blob'").fetchall()
    assert [r[0].decode("utf-8", "surrogatepass") if isinstance(r[0], bytes) else r[0] for r in raw] == ["bad \ud800 half"]
    assert "\ufffd" in (out / "report.md").read_text(encoding="utf-8") or "s2" not in (out / "report.md").read_text()
    (out / "report.html").read_text(encoding="utf-8")  # valid UTF-8 everywhere


def test_escape_sequences_in_an_api_error_body_never_reach_the_terminal(tmp_path, loopback_api):
    loopback_api.add_faults([Fault.http(401, body={"error": {"message": "\x1b[2J\x1b[H\rPASS  all gates passed\x07", "type": "auth"}}, times=None)])
    make_suite(tmp_path)
    cfg = write_eval(tmp_path, loopback_api.base_url, GATES)
    r = subprocess.run([sys.executable, "-m", "evalkit.cli", "run", str(cfg), "--out", str(tmp_path / "o"), "--no-progress"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120, env={**os.environ, "EK_TEST_KEY": KEY})
    assert r.returncode == 2, r.stderr
    assert "\x1b" not in r.stderr and "\r" not in r.stderr and "\x07" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "PASS  all gates passed" in r.stderr  # shown, defanged


def test_run_stopped_by_a_user_error_is_recorded_failed_with_the_reason(tmp_path, loopback_api, capsys):
    loopback_api.add_faults([Fault.http(401, times=None)])
    make_suite(tmp_path)
    cfg = write_eval(tmp_path, loopback_api.base_url, GATES)
    assert main(["run", str(cfg), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    capsys.readouterr()
    assert main(["runs", "list", "--store", str(tmp_path / "store.db"), "--json"]) == 0
    [rec] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rec["status"] == "failed" and "401" in rec["reason"]


def test_sigkilled_run_shows_as_interrupted_then_resumes(tmp_path, loopback_api, capsys):
    loopback_api.set_responder(extractor())
    loopback_api.latency_s = 0.2
    make_suite(tmp_path, n=20)
    cfg = write_eval(tmp_path, loopback_api.base_url, GATES)
    cfg.write_text(cfg.read_text().replace("concurrency: 4", "concurrency: 1"))
    cmd = [sys.executable, "-m", "evalkit.cli", "run", str(cfg), "--out", str(tmp_path / "o"), "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env={**os.environ, "EK_TEST_KEY": KEY}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = tmp_path / "store.db"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if db.exists() and sqlite3.connect(db).execute("SELECT COUNT(*) FROM generations").fetchone()[0] >= 4:
                break
        except sqlite3.OperationalError:
            pass
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert main(["runs", "list", "--store", str(db), "--json"]) == 0
    [rec] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rec["status"] == "interrupted" and "is gone" in rec["reason"]
    loopback_api.latency_s = 0.0
    assert main(["run", str(cfg), "--out", str(tmp_path / "o"), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["runs", "list", "--store", str(db), "--json"]) == 0
    statuses = [json.loads(line)["status"] for line in capsys.readouterr().out.splitlines()]
    assert statuses == ["passed", "interrupted"]


def test_secrets_never_stored_or_written(tmp_path, loopback_api):
    """A password in base_url and a server that echoes the key back: neither reaches a file."""

    def responder(api, req):
        text = last_user_text(req)
        return f"your key is {KEY}" if "P1" in text else extractor()(api, req)

    loopback_api.set_responder(responder)
    make_suite(tmp_path)
    url = loopback_api.base_url.replace("http://", "http://alice:hunter2@")
    cfg = write_eval(tmp_path, url, GATES)
    out = tmp_path / "o"
    assert main(["run", str(cfg), "--out", str(out), "--no-progress"]) == 1
    s = _summary(out)
    assert s["models"]["base"]["base_url"].startswith("http://***@127.0.0.1")
    for f in out.iterdir():
        text = f.read_text(encoding="utf-8")
        assert "hunter2" not in text and KEY not in text, f.name
    raw = (tmp_path / "store.db").read_bytes()
    for wal in tmp_path.glob("store.db-wal"):
        raw += wal.read_bytes()
    assert b"hunter2" not in raw and KEY.encode() not in raw
    items = [json.loads(line) for line in (out / "items.jsonl").read_text().splitlines()]
    assert next(i for i in items if i["sample_id"] == "s1" and i["model"] == "cand")["output"] == "your key is ***"


def test_report_files_follow_the_umask_and_long_outputs_are_clipped_in_html(tmp_path, loopback_api):
    big = "x" * 1_000_000

    def responder(api, req):
        return big if (req["model"] == "cand" and "P0" in last_user_text(req)) else extractor()(api, req)

    loopback_api.set_responder(responder)
    make_suite(tmp_path)
    cfg = write_eval(tmp_path, loopback_api.base_url, GATES)
    out = tmp_path / "o"
    old = os.umask(0o022)
    try:
        assert main(["run", str(cfg), "--out", str(out), "--no-progress"]) == 1
    finally:
        os.umask(old)
    for f in out.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o644, f
    html = (out / "report.html").read_text()
    assert len(html) < 200_000 and "more characters not shown; the full text is in items.jsonl" in html
    items = [json.loads(line) for line in (out / "items.jsonl").read_text().splitlines()]
    assert next(i for i in items if i["sample_id"] == "s0" and i["model"] == "cand")["output"] == big


# --- data commands: one answer for bad bytes ---------------------------------------------------


@pytest.mark.parametrize("bad,expect", [(b"caf\xe9", "not valid UTF-8 (byte 0xe9"), (b"a\x00b", "NUL byte")], ids=["latin1", "nul"])
def test_every_data_command_gives_the_same_answer_on_bad_bytes(tmp_path, capsys, monkeypatch, bad, expect):
    monkeypatch.chdir(tmp_path)
    good = json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}).encode()
    line = b'{"messages": [{"role": "user", "content": "' + bad + b'"}, {"role": "assistant", "content": "a"}]}'
    Path("d.jsonl").write_bytes(b"\n".join([good, good, line, good]) + b"\n")
    for args in (["data", "validate", "d.jsonl"], ["data", "convert", "d.jsonl", "--out", "c.jsonl"],
                 ["data", "split", "d.jsonl", "--out", "sp"], ["data", "audit", "d.jsonl"]):
        assert main(args) == 2, args
        captured = capsys.readouterr()
        text = captured.out + captured.err
        assert f"d.jsonl:3: {expect}" in text, (args, text)
        assert "\ufffd" not in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.jsonl"]


def test_judges_show_strips_escape_sequences_from_stored_replies(tmp_path, capsys):
    from evalkit.store import Store

    with Store(tmp_path / "s.db") as st:
        st.put_judgments([("k1", "j", {"judge": "j", "prompt": "p", "attempts": [{"raw": "\x1b]0;owned\x07\x1b[31mred\x1b[0m\rPASS"}], "verdict": None, "error": "e"})])
    assert main(["judges", "show", "k1", "--store", str(tmp_path / "s.db")]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\r" not in out and "\x07" not in out and "red" in out and "PASS" in out


# --- backends compute the same by default ------------------------------------------------------


def test_one_dtype_per_base_resolved_from_the_checkpoint(tmp_path):
    from evalkit.config import EvalConfig
    from evalkit.run import _dtype_warnings, model_spec

    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "torch_dtype": "float32"}))
    cfg = EvalConfig.model_validate({
        "models": {"hf": {"backend": "hf", "path": str(base)}, "vl": {"backend": "vllm", "path": str(base)},
                   "vl16": {"backend": "vllm", "path": str(base), "dtype": "bfloat16"}},
        "suites": ["x"],
    })
    specs = {n: model_spec(n, e, cfg, tmp_path) for n, e in cfg.models.items()}
    assert dict(specs["hf"].options)["dtype"] == "float32" and dict(specs["vl"].options)["dtype"] == "float32"
    assert specs["hf"].model_id != specs["vl"].model_id  # backends differ, the dtype does not
    assert _dtype_warnings([specs["hf"], specs["vl"]]) == []
    [w] = _dtype_warnings(list(specs.values()))
    assert "bfloat16: vl16 (vllm)" in w and "float32: hf (hf), vl (vllm)" in w


def test_vllm_cpu_build_gets_a_safe_kv_cache_share():
    from evalkit.models import vllm as vb
    from evalkit.types import ModelSpec

    spec = ModelSpec(name="m", backend="vllm", path="/x", options={})
    if vb.cpu_build_installed():
        assert vb._memory_share([spec]) == vb.CPU_BUILD_MEMORY_SHARE
    else:
        assert vb._memory_share([spec]) is None
    mine = ModelSpec(name="m", backend="vllm", path="/x", options={"gpu_memory_utilization": 0.5})
    assert vb._memory_share([mine]) == 0.5


# --- the other commands: the same refusals ------------------------------------------------------

OTHER_COMMANDS = [
    ("train-duplicate-key", {"t.yaml": b"base: x\nbase: y\n"}, ["train", "t.yaml"], "t.yaml:2: key 'base' appears twice (lines 1 and 2)"),
    ("train-not-utf8", {"t.yaml": b"base: caf\xe9\n"}, ["train", "t.yaml"], "t.yaml:1: not valid UTF-8 (byte 0xe9"),
    ("train-nul", {"t.yaml": b"base: a\n\x00\n"}, ["train", "t.yaml"], "t.yaml:2: contains a NUL byte"),
    ("rubric-not-utf8", {"r.yaml": b"name: r\nmode: single\nprompt: \"\xff\"\n"}, ["judges", "check", "r.yaml"], "r.yaml:3: not valid UTF-8"),
    ("rubric-duplicate-key", {"r.yaml": b"name: r\nname: s\n"}, ["judges", "check", "r.yaml"], "r.yaml:2: key 'name' appears twice"),
    ("runs-store-url", {}, ["runs", "list", "--store", "postgresql://u:hunter2@127.0.0.1:1/db"], "cannot connect to the PostgreSQL store"),
    ("review-store-url", {}, ["review", "new", "latest", "--store", "mysql://h/db"], "unsupported store URL scheme 'mysql'"),
    ("report-no-store", {}, ["report", "latest", "--out", "o", "--store", "sqlite:///none.db"], "none.db: no store here"),
    ("judges-show-no-store", {}, ["judges", "show", "k", "--store", "none.db"], "none.db: no store here"),
    ("export-bad-store", {"bad.db": b"this is not a database" * 100}, ["export", "latest", "--out", "x.csv", "--store", "bad.db"], "cannot open the store"),
]


@pytest.mark.parametrize("case", OTHER_COMMANDS, ids=[c[0] for c in OTHER_COMMANDS])
def test_other_commands_refuse_bad_input_in_one_line(tmp_path, capsys, monkeypatch, case):
    _, files, args, expect = case
    monkeypatch.chdir(tmp_path)
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert expect in err and len(err.strip().splitlines()) == 1 and "hunter2" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(files)


def test_yaml_duplicate_keys_nested_and_merge_keys():
    import tempfile

    from evalkit.config import ConfigError, read_yaml

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "x.yaml"
        p.write_text("models:\n  a: {backend: hf, path: x}\n  b: {backend: hf, path: y, path: z}\n")
        with pytest.raises(ConfigError, match=r"x.yaml:3: key 'path' appears twice \(lines 3 and 3\)"):
            read_yaml(p)
        p.write_text("base: &b {x: 1}\nother:\n  <<: *b\n  y: 2\n")  # a merge key is not a duplicate
        assert read_yaml(p)[0]["other"] == {"x": 1, "y": 2}


def test_terminal_and_url_helpers():
    from evalkit._util.text import redact_url, redact_userinfo, terminal_safe

    assert terminal_safe("a\x1b[31mred\x1b[0m\r\nb\x07\x9b\u202e", one_line=True) == "ared b???"
    assert terminal_safe("x\ud800y") == "x\ufffdy"
    assert redact_url("https://u:p@h:8/v1?api_key=s&x=1") == "https://***@h:8/v1?api_key=%2A%2A%2A&x=1"
    assert redact_url("http://127.0.0.1:8000/v1") == "http://127.0.0.1:8000/v1"
    assert redact_userinfo("at postgresql://me:pw@db/x and http://a@b") == "at postgresql://***@db/x and http://***@b"


def test_a_failing_must_pass_item_fails_a_run_every_statistic_passes(tmp_path, loopback_api):
    """Golden items: the candidate passes 29 of 30 (pass rate and regression gates pass), but the one
    it fails is marked must_pass: the run fails, and that gate is listed first.
    """
    loopback_api.set_responder(extractor(broken_ids={7}))
    suite = make_suite(tmp_path, n=30)
    rows = [json.loads(line) for line in (suite / "samples.jsonl").read_text().splitlines()]
    rows[7]["must_pass"] = True
    rows[3]["must_pass"] = True
    (suite / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    gates = ("  - {name: format, metric: pass_rate, scorer: json_schema, min: 0.9}\n"
             "  - {name: noreg, metric: regressions, max: 1}\n"
             "  - {name: golden, metric: must_pass, scorer: json_schema}\n")
    cfg = write_eval(tmp_path, loopback_api.base_url, gates)
    out = tmp_path / "o"
    assert main(["run", str(cfg), "--out", str(out), "--no-progress"]) == 1
    g = _summary(out)["gates"]
    assert [x["name"] for x in g] == ["golden", "format", "noreg"]
    assert g[0]["outcome"] == "fail" and g[0]["failing_items"] == ["s7"] and "1 of 2 items marked must_pass" in g[0]["detail"]
    assert g[1]["outcome"] == "pass" and g[2]["outcome"] == "pass"
    # a must_pass gate with nothing marked (and no tag) is a config error before any call
    (suite / "samples.jsonl").write_text("".join(json.dumps({k: v for k, v in r.items() if k != "must_pass"}) + "\n" for r in rows))
    before = len(loopback_api.requests)
    assert main(["run", str(cfg), "--out", str(out), "--no-progress"]) == 2
    assert len(loopback_api.requests) == before
