"""A team's store survives its database: runs, `store copy` and the review server ride through a real
PostgreSQL restart (``pg_ctlcluster ... restart -m fast``, every connection dropped); past the retry
bound a command ends in one line and exit 2. Malformed store URLs are one line, exit 2, never the
password. No secret reaches the store, the reports or a printed line, after failing and succeeding runs.

Real parts: the machine's PostgreSQL server (restarted for real), evalkit as separate processes, the
openai SDK against the loopback API server, the review server over HTTP.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evalkit.cli import main
from evalkit.store import Store, store_counts
from evalkit.types import Completion
from tests.support.postgres import TcpProxy, restart_postgres
from tests.test_run import extractor, make_suite
from tests.test_store_team import KEY, evalkit, finish, write_config

# --- malformed URLs ---------------------------------------------------------------------------------

PASSWORD = "s3cretPW"
MALFORMED = [
    (f"postgresql://postgres:{PASSWORD}%zz@127.0.0.1/db", "not a %XX escape"),
    (f"postgresql://postgres:{PASSWORD}@127.0.0.1/db?foo=1", "unknown option 'foo'"),
    (f"postgresql://postgres:{PASSWORD}@127.0.0.1:abc/db", "port must be a number"),
    (f"postgresql://postgres:{PASSWORD}@127.0.0.1:0/db", "port must be a number"),
    (f"postgresql://postgres:{PASSWORD}@127.0.0.1:70000/db", "port must be a number"),
    (f"postgresql://postgres:{PASSWORD}@127.0.0.1", "no database name"),
    (f"postgresql://postgres:{PASSWORD}@127.0.0.1/", "no database name"),
    (f"postgresql://postgres:{PASSWORD}@127.0.0.1/a/b", "database name has a '/'"),
    (f"postgresql://postgres:{PASSWORD}@127.0.0.1/db#x", "no #fragment"),
    (f"postgresql://postgres:{PASSWORD}@[::1/db", "closing ']'"),
    (f"postgresql://postgres:{PASSWORD}@::1:5432/db", "more than one ':'"),
    (f"postgresql://postgres:{PASSWORD}@bad host/db", "cannot have"),
    (f"postgresql://postgres:{PASSWORD}@127.0.0.1/db?sslmode=maybe", "sslmode='maybe' is not one of"),
    (f"postgresql://postgres:{PASSWORD}@127.0.0.1/db?connect_timeout=soon", "connect_timeout must be a whole number"),
    (f"postgresql://postgres:{PASSWORD}@127.0.0.1/db?sslmode=require&sslmode=disable", "given twice"),
    (f"postgresql://postgres:{PASSWORD}@127.0.0.1/db?password", "has no '=value'"),
    (f"postgresql://postgres:{PASSWORD}@127.0.0.1/db?port=99999", "port must be a number"),
    (f"postgresql://postgres:{PASSWORD}@127.0.0.1/d%zzb", "not a %XX escape"),
    (f"mysql://root:{PASSWORD}@127.0.0.1/db", "unsupported store URL scheme 'mysql'"),
]


@pytest.mark.parametrize("url,why", MALFORMED, ids=[w for _, w in MALFORMED])
def test_a_malformed_store_url_is_one_line_exit_2_without_its_password(url, why, capsys, tmp_path):
    Store(tmp_path / "x.db").close()
    for argv in (["runs", "list", "--store", url], ["store", "info", "--store", url], ["store", "copy", str(tmp_path / "x.db"), url]):
        assert main(argv) == 2
        out, err = capsys.readouterr()
        assert err.count("\n") == 1 and err.startswith("error: ") and why in err, (argv, err)
        assert PASSWORD not in out + err and "Traceback" not in err
        assert "***@]" not in err  # the old garbled hint


# --- a real restart ---------------------------------------------------------------------------------


def _restart_when(condition, timeout: float = 60) -> float:
    """Wait for ``condition()``, then restart PostgreSQL; the restart's duration."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the moment to restart never came"
        time.sleep(0.05)
    return restart_postgres()


def _rows(url: str, table: str) -> int:
    import psycopg

    schema = url.split("search_path%3D")[1]
    with psycopg.connect(url.split("?")[0], connect_timeout=3) as con:
        return con.execute(f'SELECT COUNT(*) FROM "{schema}".{table}').fetchone()[0]


def test_four_concurrent_runs_ride_through_a_postgres_restart(tmp_path, loopback_api, pg_url):
    loopback_api.set_responder(extractor())
    loopback_api.latency_s = 0.05
    n = 60
    make_suite(tmp_path, n=n)
    plans = {"r1": ["base", "cand"], "r2": ["base", "cand2"], "r3": ["cand", "cand2"], "r4": ["base", "cand", "cand2"]}
    procs = {}
    Store(pg_url).close()  # the schema exists before anyone counts rows
    for name, models in plans.items():
        cfg = write_config(tmp_path, name, loopback_api.base_url, models)
        procs[name] = evalkit(["run", str(cfg), "--out", str(tmp_path / f"out-{name}"), "--store", pg_url, "--no-progress"], tmp_path)
    took = _restart_when(lambda: _rows(pg_url, "generations") > 0)
    assert all(p.poll() is None for p in procs.values()), "a run ended before the restart: nothing was tested"
    results = {name: finish(p) for name, p in procs.items()}
    for name, (rc, _, err) in results.items():
        assert rc == 0 and "Traceback" not in err, (name, err)
    assert any("connection was lost" in err for _, _, err in results.values())
    with Store(pg_url) as st:
        assert next(st.execute("SELECT COUNT(*) FROM generations"))[0] == 3 * n  # every key once
        for name, models in plans.items():
            run_id = json.loads((tmp_path / f"out-{name}" / "summary.json").read_text())["run_id"]
            items = st.run_items(run_id)
            assert len({(it.model, it.sample_id) for it in items}) == len(items) == len(models) * n
            assert st.get_run(run_id).status == "passed"
    print(f"restart took {took:.1f} s")


def test_a_run_rides_through_a_postgres_restart_while_judging(tmp_path, loopback_api, pg_url):
    from tests.scoring.test_judges_run import JUDGES, model_and_judge

    loopback_api.set_responder(model_and_judge())
    loopback_api.latency_s = 0.2
    n = 30
    make_suite(tmp_path, n=n)
    cfg = write_config(tmp_path, "j", loopback_api.base_url, ["base", "cand"])
    judge = JUDGES.format(url=loopback_api.base_url).split("  - rubric: pairwise")[0]
    cfg.write_text(cfg.read_text() + judge + "    concurrency: 2\n")  # judging takes ~6 s: the restart lands inside it
    Store(pg_url).close()
    proc = evalkit(["run", str(cfg), "--out", str(tmp_path / "o"), "--store", pg_url, "--no-progress"], tmp_path)
    _restart_when(lambda: _rows(pg_url, "generations") >= 2 * n)  # every output stored: the judges are at work
    assert proc.poll() is None, "the run ended before the restart: nothing was tested"
    rc, out, err = finish(proc)
    assert rc == 0 and "Traceback" not in err and "connection was lost" in err, err
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["errors"]["judge"] == 0
    with Store(pg_url) as st:
        rows, keys = next(st.execute("SELECT COUNT(*), COUNT(DISTINCT key) FROM judgments"))
        # every judgment once: base and cand answer alike here, so one per distinct (prompt, output)
        assert rows == keys == n
        assert st.get_run(summary["run_id"]).status == "passed"


def test_store_copy_rides_through_a_postgres_restart(tmp_path, pg_url):
    src = tmp_path / "big.db"
    with Store(src) as st:
        for i in range(0, 200_000, 20_000):
            st.put_generations([(f"k{j:07d}", "m", "p", Completion(text=f"output {j}")) for j in range(i, i + 20_000)])
    proc = subprocess.Popen([sys.executable, "-m", "evalkit.cli", "store", "copy", str(src), pg_url, "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.5)
    assert proc.poll() is None, "the copy ended before the restart: nothing was tested"
    restart_postgres()
    rc, out, err = finish(proc, timeout=300)
    assert rc == 0 and "Traceback" not in err, err
    with Store(src) as a, Store(pg_url) as b:
        assert store_counts(a) == store_counts(b)
        assert next(b.execute("SELECT COUNT(DISTINCT key) FROM generations"))[0] == 200_000


def test_a_review_session_answers_again_within_5_s_of_a_restart(tmp_path, pg_url):
    from evalkit.review import ReviewServer, create_session, reviewer_verdicts
    from evalkit.review.sessions import assign_reviewers

    from .review.conftest import make_run
    from .review.test_team import request

    st = Store(pg_url)
    run = make_run(st, 6, suite="suite-okapi")
    sid = create_session(st, run, n=6, seed=1).session.session_id
    token = assign_reviewers(st, sid, ["alice"], overlap=1, seed=1)["alice"]
    server = ReviewServer(st, sid, host="127.0.0.1", port=0)
    server.start()
    try:
        pairs = json.loads(request(server.port, "GET", "/api/session", token=token)[2])["tokens"]
        assert request(server.port, "POST", "/api/verdict", {"token": pairs[0], "verdict": "a"}, token=token)[0] == 200
        restart_postgres()
        t0 = time.monotonic()
        statuses = []
        while True:
            status = request(server.port, "POST", "/api/verdict", {"token": pairs[1], "verdict": "b"}, token=token)[0]
            statuses.append(status)
            if status == 200 or time.monotonic() - t0 > 5:
                break
        assert status == 200 and time.monotonic() - t0 <= 5, statuses
        assert 500 not in statuses
        assert request(server.port, "GET", "/api/session", token=token)[0] == 200
        assert len(reviewer_verdicts(st, sid, "alice")) == 2
    finally:
        server.stop()
        st.close()


# --- past the retry bound (a proxy that drops the connection and stays down) --------------------------


def test_past_the_retry_bound_a_run_is_one_line_exit_2(tmp_path, loopback_api, pg_url):
    loopback_api.set_responder(extractor())
    loopback_api.latency_s = 0.05
    make_suite(tmp_path, n=60)
    proxy = TcpProxy()
    url = proxy.url(pg_url)
    Store(url).close()
    cfg = write_config(tmp_path, "r", loopback_api.base_url, ["base", "cand"])
    env_extra = {"EVALKIT_STORE_RETRY_S": "2"}
    p = subprocess.Popen([sys.executable, "-m", "evalkit.cli", "run", str(cfg), "--out", str(tmp_path / "o"), "--store", url, "--no-progress"],
                         cwd=tmp_path, env={**os.environ, "EK_TEST_KEY": KEY, **env_extra}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while _rows(pg_url, "generations") == 0:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proxy.down()  # and it stays down
    t0 = time.monotonic()
    rc, out, err = finish(p, timeout=120)
    waited = time.monotonic() - t0
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2, err
    assert lines[-1].startswith("error: ") and "could not reconnect within 2 s" in lines[-1] and "Traceback" not in err, err
    assert waited < 30
    assert not (tmp_path / "o" / "summary.json").exists()
    proxy.up()
    with Store(url) as st:  # the server is back: the run is not shown as running for ever
        (run,) = st.list_runs()
        assert run.status != "passed"


# --- secrets ------------------------------------------------------------------------------------------


def _everything_in(store_location: str | Path) -> str:
    """Every value of every row of every table, as text."""
    with Store(store_location) as st:
        tables = [t for t in store_counts(st)] + ["meta"]
        return "\n".join(repr(row) for t in tables for row in st.execute(f"SELECT * FROM {t}"))


def test_no_secret_reaches_the_store_the_reports_or_a_printed_line(tmp_path, loopback_api, store_url):
    loopback_api.set_responder(extractor())
    make_suite(tmp_path, n=4)
    url_password = "urlPASSWORD-42"
    printed = []
    # 1. a base_url with credentials that cannot connect (port 1), with a configured key: the run fails
    bad = f"http://user:{url_password}@127.0.0.1:1/v1"
    cfg = write_config(tmp_path, "bad", bad, ["base", "cand"])
    cfg.write_text(cfg.read_text().replace("concurrency: 4", "concurrency: 4, timeout_s: 2, max_retries: 0"))
    rc, out, err = finish(evalkit(["run", str(cfg), "--out", str(tmp_path / "o1"), "--store", store_url, "--no-progress"], tmp_path))
    assert rc in (1, 2), err
    printed += [out, err]
    # 2. the same credentials on a server that answers: the run passes
    good = loopback_api.base_url.replace("http://", f"http://user:{url_password}@")
    cfg2 = write_config(tmp_path, "good", good, ["base", "cand"])
    rc, out, err = finish(evalkit(["run", str(cfg2), "--out", str(tmp_path / "o2"), "--store", store_url, "--no-progress"], tmp_path))
    assert rc == 0, err
    printed += [out, err]
    for args in (["runs", "list", "--store", store_url], ["runs", "list", "--json", "--store", store_url], ["store", "info", "--store", store_url]):
        rc, out, err = finish(evalkit(args, tmp_path))
        assert rc == 0, err
        printed += [out, err]
    written = [p.read_text(errors="replace") for d in ("o1", "o2") if (tmp_path / d).exists() for p in (tmp_path / d).rglob("*") if p.is_file()]
    stored = _everything_in(store_url)
    assert "127.0.0.1:1" in stored  # the failing run's reason is there, only without its credentials
    for secret in (url_password, KEY):
        assert secret not in stored, secret
        for text in written + printed:
            assert secret not in text, secret
