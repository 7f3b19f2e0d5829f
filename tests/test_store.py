"""The store, on SQLite and on PostgreSQL alike: generation cache, errors never cached, runs and
history, lossless untrusted text, schema versions, many writers at once.
"""

import sqlite3
import subprocess
import sys
import threading

import pytest

from evalkit.errors import UserError
from evalkit.store import STORE_SCHEMA, RunItem, Store
from evalkit.types import Completion


def count(st: Store, table: str) -> int:
    return next(st.execute(f"SELECT COUNT(*) FROM {table}"))[0]


def test_generations_cache_and_errors_are_retried(store_url):
    with Store(store_url) as st:
        st.put_generations([
            ("k1", "m", "p1", Completion(text="ok", finish_reason="stop", tokens_in=3, tokens_out=1, latency_s=0.123456789)),
            ("k2", "m", "p2", Completion(text="", error="HTTP 500 after 5 attempts")),
        ])
        got = st.get_generations(["k1", "k2", "k3"])
        assert set(got) == {"k1"} and got["k1"].text == "ok" and got["k1"].tokens_in == 3
        assert got["k1"].latency_s == 0.123456789  # double precision on both (PostgreSQL's REAL would round it)
        # a later success replaces the error row; no duplicates
        st.put_generations([("k2", "m", "p2", Completion(text="fine"))])
        assert st.get_generations(["k2"])["k2"].text == "fine"
        # ...but an error never replaces a success (another runner's failure cannot erase a cached output)
        st.put_generations([("k1", "m", "p1", Completion(text="", error="timeout"))])
        assert st.get_generations(["k1"])["k1"].text == "ok"
        assert count(st, "generations") == 2


def test_sqlite_store_is_wal(tmp_path):
    Store(tmp_path / "s.db").close()
    # WAL mode, so a second process can read while a run writes
    assert sqlite3.connect(tmp_path / "s.db").execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_judgments_a_verdict_is_never_overwritten_by_an_error(store_url):
    with Store(store_url) as st:
        st.put_judgments([("j1", "judge", {"verdict": 4, "error": None}), ("j2", "judge", {"verdict": None, "error": "HTTP 429"})])
        st.put_judgments([("j1", "judge", {"verdict": None, "error": "HTTP 500"}), ("j2", "judge", {"verdict": 2, "error": None})])
        got = st.get_judgments(["j1", "j2"])
        assert got["j1"]["verdict"] == 4 and got["j2"]["verdict"] == 2
        assert count(st, "judgments") == 2


def test_runs_items_and_last_accepted(store_url):
    with Store(store_url) as st:
        r1 = st.begin_run(name="nightly", config_path="e.yaml", config={"a": 1}, out_dir="o")
        item = RunItem(r1, "cand", "mid", "suite", "v1", "s1", {"id": "s1", "messages": []}, "k1", "out", None,
                       {"json_valid": {"value": 1.0, "passed": True}})
        st.save_run_items(r1, [item])
        st.save_run_items(r1, [item])  # saving again replaces, never duplicates
        st.finish_run(r1, {"passed": True}, "passed")
        assert st.run_items(r1) == [item]
        assert st.get_run(r1[:12]).summary == {"passed": True}
        assert st.get_run("latest").run_id == r1
        assert st.last_accepted("nightly") is None
        st.set_accepted(r1)
        r2 = st.begin_run(name="nightly", config_path="e.yaml", config={}, out_dir="o")
        st.finish_run(r2, {"passed": False}, "failed")
        assert st.last_accepted("nightly").run_id == r1
        assert st.last_accepted("nightly", before=r1) is None
        assert [r.run_id for r in st.list_runs()] == [r2, r1]
        with pytest.raises(UserError, match="no run '%'"):
            st.get_run("%")  # a prefix, never a wildcard
        st.update_summary(r2, {"passed": True}, "passed")
        assert st.get_run(r2).status == "passed"


HOSTILE = ["nul \x00 inside", "lone \ud800 surrogate", "\uffff starts with the marker", "\uffff", "ansi \x1b[31m red \r\n",
           "emoji 🦓 and ü", "back\\slash %s ? %%", ""]


def test_untrusted_text_round_trips_losslessly(store_url):
    """Model output is stored exactly: NUL (PostgreSQL TEXT refuses it), lone surrogates (UTF-8 cannot
    encode them), text that looks like evalkit's own escape form, placeholders characters.
    """
    with Store(store_url) as st:
        st.put_generations([(f"k{i}", "m", "p", Completion(text=t, error=None)) for i, t in enumerate(HOSTILE)])
        got = st.get_generations([f"k{i}" for i in range(len(HOSTILE))])
        assert [got[f"k{i}"].text for i in range(len(HOSTILE))] == HOSTILE
        run = st.begin_run(name="n\x00ame", config_path=None, config={"x": HOSTILE}, out_dir=None)
        items = [RunItem(run, "m", "mid", "s", "v", f"id{i}", {"id": f"id{i}", "messages": [{"role": "user", "content": t}]},
                         f"k{i}", t, t or None, {}) for i, t in enumerate(HOSTILE)]
        st.save_run_items(run, items)
        st.fail_run(run, "boom \x00 \ud800")
        assert st.run_items(run) == sorted(items, key=lambda it: it.sample_id)
        rec = st.get_run(run)
        assert rec.name == "n\x00ame" and rec.config == {"x": HOSTILE} and rec.reason == "boom \x00 \ud800"


def test_a_newer_store_is_refused(store_url):
    Store(store_url).close()
    with Store(store_url) as st:
        assert st.schema_version() == STORE_SCHEMA
        st.write(lambda: st.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'"))
    with pytest.raises(UserError, match="newer evalkit .store schema 99"):
        Store(store_url)


V1_RUNS = """CREATE TABLE runs (run_id TEXT PRIMARY KEY, name TEXT, created REAL NOT NULL, finished REAL, status TEXT NOT NULL,
  config_path TEXT, config TEXT, summary TEXT, out_dir TEXT, accepted INTEGER NOT NULL DEFAULT 0)"""


def test_an_old_sqlite_store_opens_and_upgrades(tmp_path):
    db = tmp_path / "old.db"
    con = sqlite3.connect(db)  # a store as evalkit wrote it before schema versions: no meta, no owner columns
    con.execute(V1_RUNS)
    con.execute("INSERT INTO runs VALUES ('r-old', 'n', 1.0, 2.0, 'passed', 'eval.yaml', '{}', '{\"run_id\": \"r-old\"}', 'o', 1)")
    con.execute("CREATE TABLE judgments (key TEXT PRIMARY KEY, judge TEXT NOT NULL, payload TEXT NOT NULL, created REAL NOT NULL)")
    con.execute("INSERT INTO judgments VALUES ('j', 'judge', '{\"verdict\": 3}', 1.0)")
    con.commit()
    con.close()
    with Store(db) as st:
        assert st.schema_version() == STORE_SCHEMA == 6
        rec = st.get_run("r-old")
        assert rec.status == "passed" and rec.accepted and rec.owner is None and rec.summary == {"run_id": "r-old"}
        new = st.begin_run(name="n", config_path=None, config={}, out_dir=None)
        assert st.get_run(new).owner
        assert st.get_judgments(["j"]) == {"j": {"verdict": 3}}
        st.put_judgments([("j2", "judge", {"verdict": 1})])  # the v3 column is there
    with Store(db) as st:  # opening again changes nothing
        assert st.schema_version() == STORE_SCHEMA and len(st.list_runs()) == 2


def test_many_writers_at_once_never_duplicate_or_lose(store_url):
    """Four writers (threads, each with its own connection) put overlapping content-hash keys at once."""
    Store(store_url).close()
    keys = [f"key{i:04d}" for i in range(400)]
    errors: list[BaseException] = []

    def writer(w: int) -> None:
        try:
            with Store(store_url) as st:
                mine = keys[w * 50 : w * 50 + 250]  # overlapping slices
                for i in range(0, len(mine), 25):
                    st.put_generations([(k, "m", "p", Completion(text=f"out {k}")) for k in mine[i : i + 25]])
                    st.put_judgments([(k, "j", {"verdict": 1}) for k in mine[i : i + 25]])
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with Store(store_url) as st:
        assert count(st, "generations") == 400 and count(st, "judgments") == 400
        assert {k: c.text for k, c in st.get_generations(keys).items()} == {k: f"out {k}" for k in keys}


def test_batches_record_and_resume(store_url):
    with Store(store_url) as st:
        st.put_batch("b1", provider="openai", endpoint="e", base_url=None, api_key_env=None, custom_ids=["c1", "c2"], status="in_progress")
        assert st.open_batches_for("e", ["c1", "c2", "c3"]) == {"c1": "b1", "c2": "b1"}
        st.update_batch("b1", "completed", {"completed": 2}, ended=True, outcomes={"c1": "ok", "c2": "error"})
        assert st.open_batches_for("e", ["c1", "c2"]) == {"c1": "b1"}
        [b] = st.list_batches(batch_id="b1")
        assert b["status"] == "completed" and b["counts"] == {"completed": 2} and b["finished"] is not None


# --- PostgreSQL: connection errors are one line, credentials never shown -----------------------


def evalkit(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-m", "evalkit.cli", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def test_postgres_errors_are_one_line_exit_2_and_never_show_the_password(pg_database):
    base = pg_database.url.rsplit("/", 1)[0]
    missing = base.replace("postgres@", "postgres:s3cr3t-pw@") + "/no_such_db_evalkit"
    r = evalkit("runs", "list", "--store", missing)
    assert r.returncode == 2, r.stderr
    assert "does not exist" in r.stderr and "s3cr3t-pw" not in r.stderr + r.stdout and len(r.stderr.strip().splitlines()) == 1
    refused = "postgresql://u:s3cr3t-pw@127.0.0.1:1/db"
    r = evalkit("runs", "list", "--store", refused)
    assert r.returncode == 2 and "cannot connect" in r.stderr and "s3cr3t-pw" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    # the same store from the environment, as CI would set it from a secret
    r = evalkit("runs", "list", env={"EVALKIT_STORE": refused})
    assert r.returncode == 2 and "127.0.0.1" in r.stderr and "s3cr3t-pw" not in r.stderr


def test_postgres_read_commands_refuse_an_empty_database_and_bad_urls(pg_url):
    r = evalkit("runs", "list", "--store", pg_url)
    assert r.returncode == 2 and "no evalkit store in this database yet" in r.stderr, r.stderr
    for bad, why in (("postgresql://127.0.0.1:5432", "names its database"), ("mysql://h/db", "unsupported store URL scheme"),
                     ("postgresql://h:notaport/db", "not a valid PostgreSQL URL")):
        r = evalkit("runs", "list", "--store", bad)
        assert r.returncode == 2 and why in r.stderr, (bad, r.stderr)


def test_postgres_store_url_forms(pg_database):
    from evalkit._db import display_url, libpq_url

    assert display_url("postgresql://alice:pw@db.example:5433/evals?sslmode=require&password=x") == \
        "postgresql://alice@db.example:5433/evals?sslmode=require&password=***"
    assert libpq_url("postgresql+psycopg://u@h/d") == "postgresql://u@h/d"
    url = pg_database.schema_url().replace("postgresql://", "postgresql+psycopg://")
    with Store(url) as st:  # SQLAlchemy's spelling works too
        assert st.dialect == "postgresql" and "pw" not in str(st.path)


def test_text_sorts_by_code_point_on_both(store_url):
    """ORDER BY gives the same order on SQLite and PostgreSQL (whatever the server's locale)."""
    with Store(store_url) as st:
        run = st.begin_run(name="n", config_path=None, config={}, out_dir=None)
        ids = ["b", "B", "a", "_x", "a-2", "a_1", "Z", "é", "10", "9"]
        st.save_run_items(run, [RunItem(run, "m", "mid", "s", "v", i, {"id": i}, "k", "o", None, {}) for i in ids])
        assert [it.sample_id for it in st.run_items(run)] == sorted(ids)
        if st.dialect == "postgresql":  # this machine's server sorts C.UTF-8 anyway: the columns say "C" whatever the locale
            [(coll,)] = st.execute("SELECT collation_name FROM information_schema.columns WHERE table_schema = current_schema() "
                                   "AND table_name = 'run_items' AND column_name = 'sample_id'")
            assert coll == "C"


def test_a_schema_3_store_gains_the_sample_truncation_and_reasoning_columns(tmp_path):
    """Schemas 4 and 5 add run_items.draws / finish_reason / reasoning and generations.reasoning to an existing
    store; items written before read back with none of them, and new items keep all of them.
    """
    from evalkit.record import Draw
    from evalkit.types import Completion

    db = tmp_path / "v3.db"
    with Store(db) as st:
        rid = st.begin_run(name="n", config_path=None, config={}, out_dir=None)
        st.put_generations([("g1", "m", "p", Completion(text="old"))])
    con = sqlite3.connect(db)  # take it back to schema 3: the v4 columns dropped
    for table, col in (("run_items", "draws"), ("run_items", "finish_reason"), ("run_items", "reasoning"), ("generations", "reasoning"),
                       ("run_items", "loglikelihoods"), ("generations", "loglikelihoods")):
        con.execute(f"ALTER TABLE {table} DROP COLUMN {col}")
    con.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    con.execute("INSERT INTO run_items VALUES (?,?,?,?,?,?,?,?,?,?,?)", (rid, "m", "m", "s", "v", "x1", "{}", "g1", "old", None, "{}"))
    con.commit()
    con.close()
    with Store(db) as st:
        assert st.schema_version() == STORE_SCHEMA == 6
        [old] = st.run_items(rid)
        assert old.output == "old" and old.draws == () and old.finish_reason is None and old.reasoning is None
        assert st.get_generations(["g1"])["g1"].reasoning is None
        st.put_generations([("g2", "m", "p", Completion(text="a", finish_reason="length", reasoning="why"))])
        assert st.get_generations(["g2"])["g2"].reasoning == "why"
        new = RunItem(rid, "m", "m", "s", "v", "x2", {}, "g2", "a", None, {}, (Draw(0, "g2", "a", None, {}, "length", "why"),
                                                                             Draw(1, "g3", "b", None, {}, "stop", None)), "length", "why")
        st.save_run_items(rid, [old, new])
        back = {it.sample_id: it for it in st.run_items(rid)}
        assert back["x2"] == new and back["x2"].truncated and back["x1"].output == "old"


def test_a_schema_4_store_gains_the_schema_5_columns(tmp_path):
    """A store at schema 4 (samples only) opens at 5 with finish_reason and reasoning, its items intact."""
    db = tmp_path / "v4.db"
    with Store(db) as st:
        rid = st.begin_run(name="n", config_path=None, config={}, out_dir=None)
    con = sqlite3.connect(db)
    for table, col in (("run_items", "finish_reason"), ("run_items", "reasoning"), ("generations", "reasoning"),
                       ("run_items", "loglikelihoods"), ("generations", "loglikelihoods")):
        con.execute(f"ALTER TABLE {table} DROP COLUMN {col}")
    con.execute("UPDATE meta SET value = '4' WHERE key = 'schema_version'")
    con.execute("INSERT INTO run_items (run_id, model, model_id, suite, suite_version, sample_id, sample, generation_key, output, error, scores, draws) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", (rid, "m", "m", "s", "v", "x1", "{}", "g1", "old", None, "{}", None))
    con.commit()
    con.close()
    with Store(db, create=False) as st:
        assert st.schema_version() == 6
        [it] = st.run_items(rid)
        assert it.output == "old" and it.finish_reason is None and it.reasoning is None


def test_a_schema_5_store_gains_the_loglikelihood_columns(tmp_path):
    """A store at schema 5 opens at 6: cached answers and items hold log-likelihoods losslessly, old ones none."""
    from evalkit.types import Completion

    db = tmp_path / "v5.db"
    with Store(db) as st:
        rid = st.begin_run(name="n", config_path=None, config={}, out_dir=None)
        st.put_generations([("g1", "m", "p", Completion(text="old"))])
    con = sqlite3.connect(db)
    for table in ("run_items", "generations"):
        con.execute(f"ALTER TABLE {table} DROP COLUMN loglikelihoods")
    con.execute("UPDATE meta SET value = '5' WHERE key = 'schema_version'")
    con.commit()
    con.close()
    lls = (-1.2345678901234567, -0.1 - 2e-17, -1e-300)
    with Store(db, create=False) as st:
        assert st.schema_version() == 6
        assert st.get_generations(["g1"])["g1"].loglikelihoods is None
        st.put_generations([("g2", "m", "p", Completion(text="", loglikelihoods=lls))])
        assert st.get_generations(["g2"])["g2"].loglikelihoods == lls
        item = RunItem(rid, "m", "m", "s", "v", "x", {"id": "x", "choices": ["a", "b", "c"], "answer": 0}, "g2", "a", None, {}, loglikelihoods=lls)
        st.save_run_items(rid, [item])
        [back] = st.run_items(rid)
        assert back.loglikelihoods == lls and back.choice_logprobs == lls

