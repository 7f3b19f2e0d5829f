"""`evalkit run` end to end through the real openai SDK against the loopback server: outputs, exit
codes, zero calls on an unchanged rerun, resume after SIGKILL, and every bad-input path.
"""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from evalkit.cli import main
from tests.support.loopback import last_user_text

SCHEMA = {
    "type": "object",
    "required": ["name", "age"],
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "additionalProperties": False,
}


def make_suite(root: Path, n: int = 6, name: str = "extract", tags: bool = False) -> Path:
    d = root / "suites" / name
    d.mkdir(parents=True)
    (d / "schema.json").write_text(json.dumps(SCHEMA))
    (d / "suite.yaml").write_text(
        f"name: {name}\nkind: regression\nsamples: samples.jsonl\n"
        "scorers:\n  - json_valid\n  - {json_schema: schema.json}\n  - {exact_match: {normalize: json}}\n"
    )
    with (d / "samples.jsonl").open("w") as fh:
        for i in range(n):
            ref = json.dumps({"name": f"P{i}", "age": 20 + i})
            line = {"id": f"s{i}", "messages": [{"role": "user", "content": f"Name: P{i}; Age: {20 + i}"}, {"role": "assistant", "content": ref}]}
            if tags:
                line["tags"] = ["short" if i % 2 else "long"]
            fh.write(json.dumps(line) + "\n")
    return d


def extractor(broken_ids=()):
    """Answers like a model that has learned the task, except on the prompts whose index is listed."""

    def respond(api, req):
        text = last_user_text(req)
        name = text.split(";")[0].split(":")[1].strip()
        age = int(text.split("Age:")[1])
        idx = int(name[1:])
        if req["model"] == "cand" and idx in broken_ids:
            return f"{name} is {age}"  # the candidate forgot the format on these
        return json.dumps({"name": name, "age": age})

    return respond


def write_eval(root: Path, base_url: str, gates: str, extra: str = "") -> Path:
    p = root / "eval.yaml"
    p.write_text(
        "models:\n"
        f"  base: {{backend: openai, model: base, base_url: '{base_url}', api_key_env: EK_TEST_KEY, concurrency: 4}}\n"
        f"  cand: {{backend: openai, model: cand, base_url: '{base_url}', api_key_env: EK_TEST_KEY, concurrency: 4}}\n"
        "baseline: base\ncandidates: [cand]\nsuites: [suites/extract]\n"
        "generation: {max_new_tokens: 32, temperature: 0}\n"
        f"store: store.db\n{extra}gates:\n{gates}"
    )
    return p


GATES = (
    "  - {name: format, metric: pass_rate, scorer: json_schema, min: 0.95}\n"
    "  - {name: no-regressions, metric: regressions, vs: baseline, max: 0}\n"
)


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("EK_TEST_KEY", "sk-evalkit-test-SECRET-1234")


def test_run_gates_fail_and_name_items(tmp_path, loopback_api):
    loopback_api.set_responder(extractor(broken_ids={1, 4}))
    make_suite(tmp_path)
    cfg = write_eval(tmp_path, loopback_api.base_url, GATES)
    out = tmp_path / "out"
    assert main(["run", str(cfg), "--out", str(out), "--no-progress"]) == 1

    summary = json.loads((out / "summary.json").read_text())
    assert summary["passed"] is False
    gates = {g["name"]: g for g in summary["gates"]}
    assert gates["format"]["passed"] is False and gates["format"]["observed"] == pytest.approx(4 / 6)
    assert sorted(gates["format"]["failing_items"]) == ["s1", "s4"]
    assert gates["no-regressions"]["passed"] is False and sorted(gates["no-regressions"]["failing_items"]) == ["s1", "s4"]
    m = {(x["model"], x["scorer"]): x for x in summary["metrics"]}
    assert m[("base", "json_schema")]["value"] == 1.0 and m[("cand", "json_schema")]["n"] == 6
    assert summary["calls"] == {"generations_made": 12, "generations_cached": 0, "judge_calls_made": 0, "judge_calls_cached": 0}

    items = [json.loads(l) for l in (out / "items.jsonl").read_text().splitlines()]
    assert len(items) == 12
    s1 = next(i for i in items if i["model"] == "cand" and i["sample_id"] == "s1")
    assert s1["output"] == "P1 is 21" and s1["scores"]["json_valid"]["passed"] is False

    suite = ET.parse(out / "junit.xml").getroot()
    cases = suite.iter("testcase")
    failures = [c for c in cases if c.find("failure") is not None]
    assert len(failures) == 2 and "s1" in failures[0].find("failure").get("message")
    assert "no-regressions" in (out / "report.md").read_text()
    assert (out / "report.html").read_text().startswith("<!")
    # the API key reached the server in the header, and nowhere else
    assert loopback_api.requests[0].headers["authorization"].endswith("SECRET-1234")
    for f in out.iterdir():
        assert "SECRET-1234" not in f.read_text(), f
    assert b"SECRET-1234" not in (tmp_path / "store.db").read_bytes()


def test_passing_run_exits_0_and_unchanged_rerun_makes_no_calls(tmp_path, loopback_api):
    loopback_api.set_responder(extractor())
    make_suite(tmp_path)
    cfg = write_eval(tmp_path, loopback_api.base_url, GATES)
    assert main(["run", str(cfg), "--out", str(tmp_path / "o1"), "--no-progress"]) == 0
    n = len(loopback_api.requests)
    assert n == 12
    assert main(["run", str(cfg), "--out", str(tmp_path / "o2"), "--no-progress"]) == 0
    assert len(loopback_api.requests) == n  # nothing was asked again
    s2 = json.loads((tmp_path / "o2" / "summary.json").read_text())
    assert s2["calls"]["generations_made"] == 0 and s2["calls"]["generations_cached"] == 12
    # a changed generation parameter changes the model identity: everything is generated again
    cfg.write_text(cfg.read_text().replace("max_new_tokens: 32", "max_new_tokens: 33"))
    assert main(["run", str(cfg), "--out", str(tmp_path / "o3"), "--no-progress"]) == 0
    assert len(loopback_api.requests) == 2 * n


def test_read_commands_take_a_run_output_folder(tmp_path, loopback_api, capsys, monkeypatch):
    """The read commands (report / export / compare / runs show / accept / review new find the run and its store from summary.json)."""
    loopback_api.set_responder(extractor(broken_ids={2}))
    make_suite(tmp_path)
    cfg = write_eval(tmp_path, loopback_api.base_url, "  - {name: format, metric: pass_rate, scorer: json_schema, min: 0.5}\n")
    assert main(["run", str(cfg), "--out", str(tmp_path / "o1"), "--no-progress"]) == 0
    s1 = json.loads((tmp_path / "o1" / "summary.json").read_text())
    assert s1["store"] == str((tmp_path / "store.db").resolve())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # no .evalkit/store.db here: only the folder says where the store is
    capsys.readouterr()
    assert main(["report", str(tmp_path / "o1"), "--out", "again"]) == 0
    assert json.loads((elsewhere / "again" / "summary.json").read_text())["run_id"] == s1["run_id"]
    assert main(["export", str(tmp_path / "o1" / "summary.json"), "--out", "rows.csv"]) == 0
    assert "wrote 12 rows" in capsys.readouterr().out
    assert main(["runs", "show", str(tmp_path / "o1")]) == 0
    assert main(["accept", str(tmp_path / "o1")]) == 0
    assert f"accepted: {s1['run_id']}" in capsys.readouterr().out
    assert main(["compare", str(tmp_path / "o1"), str(elsewhere / "again"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["run_b"] == s1["run_id"]
    assert main(["review", "new", str(tmp_path / "o1"), "--n", "3"]) == 0
    out = capsys.readouterr().out
    assert f"--store {tmp_path / 'store.db'}" in out and f"from run {s1['run_id']}" in out
    # --store still wins; a folder that is not a run's, a summary without a store, a store that moved: one line, exit 2
    assert main(["runs", "show", str(tmp_path / "o1"), "--store", str(tmp_path / "nope.db")]) == 2
    assert "no store here" in capsys.readouterr().err
    assert main(["report", str(elsewhere), "--out", "x"]) == 2
    assert "not a run's output folder: it has no summary.json" in capsys.readouterr().err
    assert main(["report", "no/such/run", "--out", "x"]) == 2
    assert "no such run folder" in capsys.readouterr().err
    old = elsewhere / "old"
    old.mkdir()
    (old / "summary.json").write_text(json.dumps({k: v for k, v in s1.items() if k != "store"}))
    assert main(["export", str(old), "--out", "r.csv"]) == 2
    assert "an older evalkit wrote it): pass --store" in capsys.readouterr().err
    assert not (elsewhere / "x").exists() and not (elsewhere / "r.csv").exists()  # nothing half written
    assert main(["export", str(old), "--out", "r.csv", "--store", str(tmp_path / "store.db")]) == 0
    (tmp_path / "store.db").rename(tmp_path / "moved.db")
    assert main(["review", "new", str(tmp_path / "o1")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the store this run was written to is not here" in err


def test_threshold_zero_and_min_gates(tmp_path, loopback_api):
    loopback_api.set_responder(extractor(broken_ids={0, 1, 2, 3, 4, 5}))
    make_suite(tmp_path)
    gates = "  - {name: floor, metric: pass_rate, scorer: json_valid, min: 0}\n"
    cfg = write_eval(tmp_path, loopback_api.base_url, gates)
    assert main(["run", str(cfg), "--out", str(tmp_path / "o"), "--no-progress"]) == 0
    g = json.loads((tmp_path / "o" / "summary.json").read_text())["gates"][0]
    assert g["observed"] == 0.0 and g["threshold"] == 0.0 and g["passed"] is True
    cfg.write_text(cfg.read_text().replace("min: 0}", "max: 0}"))
    assert main(["run", str(cfg), "--out", str(tmp_path / "o"), "--no-progress"]) == 0  # 0.0 <= 0 holds


def test_resume_after_sigkill_loses_and_duplicates_nothing(tmp_path, loopback_api):
    """Kill a run mid-way with SIGKILL; the rerun makes only the missing calls and every item is there once."""
    loopback_api.set_responder(extractor())
    loopback_api.latency_s = 0.15
    n = 30
    make_suite(tmp_path, n=n)
    cfg = write_eval(tmp_path, loopback_api.base_url, GATES)
    cfg.write_text(cfg.read_text().replace("concurrency: 4", "concurrency: 1"))
    env = {**os.environ, "EK_TEST_KEY": "sk-evalkit-test-SECRET-1234"}
    cmd = [sys.executable, "-m", "evalkit.cli", "run", str(cfg), "--out", str(tmp_path / "o"), "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    db = tmp_path / "store.db"
    deadline = time.time() + 60
    stored = 0
    while time.time() < deadline:
        if db.exists():
            try:
                stored = sqlite3.connect(db).execute("SELECT COUNT(*) FROM generations").fetchone()[0]
            except sqlite3.OperationalError:
                stored = 0
            if stored >= 16:
                break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert 16 <= stored < 2 * n, "the run should have been killed mid-way"
    stored_before = sqlite3.connect(db).execute("SELECT COUNT(*) FROM generations").fetchone()[0]
    before = len(loopback_api.requests)

    loopback_api.latency_s = 0.0
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["calls"]["generations_cached"] == stored_before
    assert summary["calls"]["generations_made"] == 2 * n - stored_before
    assert len(loopback_api.requests) - before == 2 * n - stored_before
    items = [json.loads(l) for l in (tmp_path / "o" / "items.jsonl").read_text().splitlines()]
    keys = [(i["model"], i["sample_id"]) for i in items]
    assert len(keys) == 2 * n and len(set(keys)) == 2 * n
    assert all(i["output"] for i in items)


# --- bad input: exit 2 and one line ------------------------------------------------------------


def run_cli(args, cwd):
    env = {**os.environ, "EK_TEST_KEY": "sk-evalkit-test-SECRET-1234"}
    return subprocess.run([sys.executable, "-m", "evalkit.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "case",
    ["bad_jsonl", "bad_role", "unknown_key", "missing_config", "missing_suite", "unreachable", "unknown_gate_model", "missing_key"],
)
def test_bad_input_exits_2_with_one_line(tmp_path, loopback_api, case):
    loopback_api.set_responder(extractor())
    suite = make_suite(tmp_path)
    base_url = loopback_api.base_url
    gates = GATES
    cfg_name = "eval.yaml"
    expect = None
    if case == "bad_jsonl":
        with (suite / "samples.jsonl").open("a") as fh:
            fh.write('{"id": "x", "messages": [\n')
        expect = "samples.jsonl:7: invalid JSON"
    elif case == "bad_role":
        with (suite / "samples.jsonl").open("a") as fh:
            fh.write(json.dumps({"id": "x", "messages": [{"role": "bot", "content": "hi"}]}) + "\n")
        expect = "samples.jsonl:7: messages[0] has unknown role 'bot'"
    elif case == "unreachable":
        with socket_free_port() as port:
            base_url = f"http://127.0.0.1:{port}/v1"
        expect = f"127.0.0.1:{port}"
    elif case == "unknown_gate_model":
        gates = "  - {name: f, metric: pass_rate, scorer: json_valid, model: ghost, min: 1}\n"
        expect = "model 'ghost'"
    cfg = write_eval(tmp_path, base_url, gates)
    if case == "unknown_key":
        cfg.write_text(cfg.read_text().replace("temperature: 0", "temprature: 0"))
        expect = "eval.yaml:7: unknown key 'temprature' in generation"
    elif case == "missing_config":
        cfg_name = "nope.yaml"
        expect = "nope.yaml: file not found"
    elif case == "missing_suite":
        cfg.write_text(cfg.read_text().replace("suites/extract", "suites/missing"))
        expect = "suite folder not found"
    elif case == "missing_key":
        cfg.write_text(cfg.read_text().replace("EK_TEST_KEY", "EK_NOT_SET_KEY"))
        expect = "EK_NOT_SET_KEY"
    r = run_cli(["run", cfg_name, "--out", "o", "--no-progress"], tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error: ") and expect in lines[0], lines[0]
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "o" / "summary.json").exists()  # nothing half written


class socket_free_port:
    """A port that nothing listens on."""

    def __enter__(self):
        import socket

        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        return self.port

    def __exit__(self, *a):
        pass


def test_help_teaches():
    r = subprocess.run([sys.executable, "-m", "evalkit.cli", "run", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "Exit code" in r.stdout and "Example" in r.stdout
    r = subprocess.run([sys.executable, "-m", "evalkit.cli", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "demo" in r.stdout and "run" in r.stdout
