"""A team on one PostgreSQL store: concurrent `evalkit run` processes, accept in one process and a
`vs: last_accepted` gate in another, and `store copy` SQLite -> PostgreSQL -> SQLite.

Real parts: evalkit runs as separate processes through the real openai SDK against the loopback API
server, and the store is the machine's PostgreSQL server (a database of this pytest session).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from evalkit.store import Store, store_counts
from evalkit.types import Completion
from tests.test_run import extractor, make_suite

KEY = "sk-evalkit-test-SECRET-1234"
GATES = "  - {name: format, metric: pass_rate, scorer: json_schema, min: 0.95}\n"


def write_config(root: Path, name: str, base_url: str, models: list[str], gates: str = GATES) -> Path:
    lines = [f"  {m}: {{backend: openai, model: {m}, base_url: '{base_url}', api_key_env: EK_TEST_KEY, concurrency: 4}}" for m in models]
    p = root / f"{name}.yaml"
    p.write_text("name: nightly\nmodels:\n" + "\n".join(lines) + f"\nbaseline: {models[0]}\ncandidates: [{', '.join(models[1:])}]\n"
                 "suites: [suites/extract]\ngeneration: {max_new_tokens: 32, temperature: 0}\n" + f"gates:\n{gates}")
    return p


def evalkit(args: list[str], cwd: Path, **kw) -> subprocess.Popen:
    env = {**os.environ, "EK_TEST_KEY": KEY}
    env.pop("EVALKIT_STORE", None)
    return subprocess.Popen([sys.executable, "-m", "evalkit.cli", *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def finish(p: subprocess.Popen, timeout: float = 240) -> tuple[int, str, str]:
    out, err = p.communicate(timeout=timeout)
    return p.returncode, out, err


def test_four_concurrent_runs_share_one_postgres_store_then_accept_and_gate_across_processes(tmp_path, loopback_api, pg_url):
    loopback_api.set_responder(extractor())
    loopback_api.latency_s = 0.01
    n = 40
    make_suite(tmp_path, n=n)
    # overlapping models: every model is in at least two of the four runs
    plans = {"r1": ["base", "cand"], "r2": ["base", "cand2"], "r3": ["cand", "cand2"], "r4": ["base", "cand", "cand2"]}
    procs = {}
    for name, models in plans.items():
        cfg = write_config(tmp_path, name, loopback_api.base_url, models)
        procs[name] = evalkit(["run", str(cfg), "--out", str(tmp_path / f"out-{name}"), "--store", pg_url, "--no-progress"], tmp_path)
    results = {name: finish(p) for name, p in procs.items()}
    for name, (rc, _, err) in results.items():
        assert rc == 0, (name, err)
        assert "Traceback" not in err
    run_ids = {name: json.loads((tmp_path / f"out-{name}" / "summary.json").read_text())["run_id"] for name in plans}
    with Store(pg_url) as st:
        # every (model, sample) output once, whoever generated it first
        assert next(st.execute("SELECT COUNT(*) FROM generations"))[0] == 3 * n
        assert next(st.execute("SELECT COUNT(DISTINCT key) FROM generations"))[0] == 3 * n
        for name, models in plans.items():
            items = st.run_items(run_ids[name])
            keys = [(it.model, it.sample_id) for it in items]
            assert len(keys) == len(set(keys)) == len(models) * n and all(it.output and not it.error for it in items)
            assert st.get_run(run_ids[name]).status == "passed"
    # the summary says where the store is, without secrets; a read command can find the run from its folder
    summary = json.loads((tmp_path / "out-r1" / "summary.json").read_text())
    assert summary["store"].startswith("postgresql://postgres@127.0.0.1")
    rc, out, err = finish(evalkit(["runs", "list", "--store", pg_url, "--json"], tmp_path))
    assert rc == 0 and len(out.splitlines()) == 4

    # accept one run in one process...
    rc, out, err = finish(evalkit(["accept", str(tmp_path / "out-r1"), "--store", pg_url], tmp_path))
    assert rc == 0 and run_ids["r1"] in out, err
    # ...and gate against it in another, on another "runner" (a fresh folder: nothing local is shared)
    elsewhere = tmp_path / "runner2"
    elsewhere.mkdir()
    make_suite(elsewhere, n=n)
    loopback_api.set_responder(extractor(broken_ids={3, 7}))
    gated = write_config(elsewhere, "r5", loopback_api.base_url, ["base", "cand"],
                         GATES + "  - {name: no-regressions, metric: regressions, vs: last_accepted, max: 0}\n")
    gated.write_text(gated.read_text().replace("max_new_tokens: 32", "max_new_tokens: 31"))  # new outputs, not the cache's
    rc, out, err = finish(evalkit(["run", str(gated), "--out", str(elsewhere / "o"), "--store", pg_url, "--no-progress"], elsewhere))
    assert rc == 1, err
    s5 = json.loads((elsewhere / "o" / "summary.json").read_text())
    g = next(x for x in s5["gates"] if x["name"] == "no-regressions")
    assert g["outcome"] == "fail" and sorted(g["failing_items"]) == ["s3", "s7"] and run_ids["r1"] in g["detail"]


def test_store_copy_round_trip_sqlite_postgres_sqlite(tmp_path, loopback_api, pg_url):
    loopback_api.set_responder(extractor(broken_ids={2}))
    make_suite(tmp_path, n=8)
    src = tmp_path / "store.db"
    cfg = write_config(tmp_path, "e", loopback_api.base_url, ["base", "cand"])
    assert finish(evalkit(["run", str(cfg), "--out", str(tmp_path / "o1"), "--store", str(src), "--no-progress"], tmp_path))[0] == 1
    loopback_api.set_responder(extractor())
    cfg.write_text(cfg.read_text().replace("max_new_tokens: 32", "max_new_tokens: 30"))
    assert finish(evalkit(["run", str(cfg), "--out", str(tmp_path / "o2"), "--store", str(src), "--no-progress"], tmp_path))[0] == 0
    assert finish(evalkit(["accept", "latest", "--store", str(src)], tmp_path))[0] == 0
    rc, out, err = finish(evalkit(["review", "new", "latest", "--n", "4", "--store", str(src)], tmp_path))
    assert rc == 0, err
    with Store(src) as st:  # a hostile output, so the copy has to carry it losslessly
        st.put_generations([("hostile", "m", "p", Completion(text="nul\x00 \ud800 \uffff"))])
        want_counts = store_counts(st)
        want_runs = [(r.run_id, r.status, r.accepted, r.summary) for r in st.list_runs()]

    rc, out, err = finish(evalkit(["store", "copy", str(src), pg_url], tmp_path))
    assert rc == 0, err
    assert "checked:" in out and f"{sum(want_counts.values())} rows copied" in out
    back = tmp_path / "back.db"
    rc, out, err = finish(evalkit(["store", "copy", pg_url, str(back)], tmp_path))
    assert rc == 0, err
    for where in (pg_url, str(back)):
        with Store(where) as st:
            assert store_counts(st) == want_counts, where
            assert [(r.run_id, r.status, r.accepted, r.summary) for r in st.list_runs()] == want_runs
            assert st.get_generations(["hostile"])["hostile"].text == "nul\x00 \ud800 \uffff"
    # copying again adds nothing: every row is already there
    rc, out, err = finish(evalkit(["store", "copy", str(src), pg_url], tmp_path))
    assert rc == 0 and "0 rows copied" in out, out
    # the history works in its new home: runs list, and a report rebuilt from the Postgres store alone
    rc, out, err = finish(evalkit(["report", "latest", "--out", str(tmp_path / "rebuilt"), "--store", pg_url], tmp_path))
    assert rc == 0, err
    assert json.loads((tmp_path / "rebuilt" / "summary.json").read_text())["run_id"] == want_runs[0][0]
    # bad input: one line, exit 2, nothing written
    rc, out, err = finish(evalkit(["store", "copy", str(tmp_path / "none.db"), str(tmp_path / "x.db")], tmp_path))
    assert rc == 2 and "no store here" in err and not (tmp_path / "x.db").exists()
    rc, out, err = finish(evalkit(["store", "copy", str(src), "./store.db"], tmp_path))  # the same file, spelled otherwise
    assert rc == 2 and "same store" in err


@pytest.mark.parametrize("flag", ["--stor", "--bogus"])
def test_store_command_mistyped_option_is_exit_2(tmp_path, flag):
    rc, out, err = finish(evalkit(["store", "info", flag, "x"], tmp_path))
    assert rc == 2 and "No such option" in err
