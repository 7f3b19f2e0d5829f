"""The SQLite store: generation cache, errors never cached, runs and history."""

import sqlite3

import pytest

from evalkit.store import RunItem, Store
from evalkit.types import Completion


def test_generations_cache_and_errors_are_retried(tmp_path):
    with Store(tmp_path / "s.db") as st:
        st.put_generations([
            ("k1", "m", "p1", Completion(text="ok", finish_reason="stop", tokens_in=3, tokens_out=1)),
            ("k2", "m", "p2", Completion(text="", error="HTTP 500 after 5 attempts")),
        ])
        got = st.get_generations(["k1", "k2", "k3"])
        assert set(got) == {"k1"} and got["k1"].text == "ok" and got["k1"].tokens_in == 3
        # a later success replaces the error row; no duplicates
        st.put_generations([("k2", "m", "p2", Completion(text="fine"))])
        assert st.get_generations(["k2"])["k2"].text == "fine"
        assert st.db.execute("SELECT COUNT(*) FROM generations").fetchone()[0] == 2
    # WAL mode, so a second process can read while a run writes
    assert sqlite3.connect(tmp_path / "s.db").execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_runs_items_and_last_accepted(tmp_path):
    with Store(tmp_path / "s.db") as st:
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


V1_RUNS = """CREATE TABLE runs (run_id TEXT PRIMARY KEY, name TEXT, created REAL NOT NULL, finished REAL, status TEXT NOT NULL,
  config_path TEXT, config TEXT, summary TEXT, out_dir TEXT, accepted INTEGER NOT NULL DEFAULT 0)"""


def test_an_old_store_opens_and_upgrades_and_a_newer_one_is_refused(tmp_path):
    import sqlite3

    from evalkit.errors import UserError
    from evalkit.store import STORE_SCHEMA, Store

    db = tmp_path / "old.db"
    con = sqlite3.connect(db)  # a store as evalkit wrote it before schema versions: no meta, no owner columns
    con.execute(V1_RUNS)
    con.execute("INSERT INTO runs VALUES ('r-old', 'n', 1.0, 2.0, 'passed', 'eval.yaml', '{}', '{\"run_id\": \"r-old\"}', 'o', 1)")
    con.commit()
    con.close()
    with Store(db) as st:
        assert st.schema_version() == STORE_SCHEMA == 2
        rec = st.get_run("r-old")
        assert rec.status == "passed" and rec.accepted and rec.owner is None and rec.summary == {"run_id": "r-old"}
        new = st.begin_run(name="n", config_path=None, config={}, out_dir=None)
        assert st.get_run(new).owner
    with Store(db) as st:  # opening again changes nothing
        assert st.schema_version() == 2 and len(st.list_runs()) == 2
    con = sqlite3.connect(db)
    con.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    con.commit()
    con.close()
    with pytest.raises(UserError, match="newer evalkit .store schema 99"):
        Store(db)
