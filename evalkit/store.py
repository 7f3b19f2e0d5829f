"""The SQLite run store (WAL): the generation and judgment caches, run history, run items.

Keys are content hashes, so an interrupted run resumes where it stopped (every batch is committed as
it finishes) and a rerun with nothing changed makes no model or judge calls. Reports, review sessions
and comparisons read the store, never live objects, so they can be rebuilt later.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from .errors import UserError
from .types import Completion

SCHEMA = """
CREATE TABLE IF NOT EXISTS generations (
  key TEXT PRIMARY KEY,
  model_id TEXT NOT NULL,
  prompt_hash TEXT NOT NULL,
  text TEXT NOT NULL,
  finish_reason TEXT,
  tokens_in INTEGER,
  tokens_out INTEGER,
  latency_s REAL,
  error TEXT,
  created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS judgments (
  key TEXT PRIMARY KEY,
  judge TEXT NOT NULL,
  payload TEXT NOT NULL,
  created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
  run_id TEXT PRIMARY KEY,
  name TEXT,
  created REAL NOT NULL,
  finished REAL,
  status TEXT NOT NULL,
  config_path TEXT,
  config TEXT,
  summary TEXT,
  out_dir TEXT,
  accepted INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS run_items (
  run_id TEXT NOT NULL,
  model TEXT NOT NULL,
  model_id TEXT NOT NULL,
  suite TEXT NOT NULL,
  suite_version TEXT NOT NULL,
  sample_id TEXT NOT NULL,
  sample TEXT NOT NULL,
  generation_key TEXT NOT NULL,
  output TEXT,
  error TEXT,
  scores TEXT NOT NULL,
  PRIMARY KEY (run_id, model, suite, sample_id)
);
CREATE INDEX IF NOT EXISTS run_items_by_run ON run_items(run_id);
"""


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    name: str | None
    created: float
    finished: float | None
    status: str  # running | passed | failed | error
    config_path: str | None
    config: dict[str, Any]
    summary: dict[str, Any] | None
    out_dir: str | None
    accepted: bool


@dataclass(frozen=True)
class RunItem:
    run_id: str
    model: str
    model_id: str
    suite: str
    suite_version: str
    sample_id: str
    sample: dict[str, Any]  # id, messages, reference, tags, metadata
    generation_key: str
    output: str | None
    error: str | None
    scores: dict[str, dict[str, Any]]  # scorer -> Score.as_dict()


class Store:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(str(self.path), timeout=30.0, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA busy_timeout=30000")
            self.db.executescript(SCHEMA)
        except sqlite3.DatabaseError as e:
            raise UserError(f"cannot open the store: {e}", where=self.path) from None

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- generations --------------------------------------------------------------------------

    def get_generations(self, keys: Iterable[str]) -> dict[str, Completion]:
        """Cached successful completions for ``keys`` (errors are not cached: they are retried)."""
        keys = list(keys)
        out: dict[str, Completion] = {}
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            q = f"SELECT key, text, finish_reason, tokens_in, tokens_out, latency_s FROM generations WHERE error IS NULL AND key IN ({','.join('?' * len(chunk))})"
            for k, text, fr, ti, to, lat in self.db.execute(q, chunk):
                out[k] = Completion(text=text, finish_reason=fr, tokens_in=ti or 0, tokens_out=to or 0, latency_s=lat or 0.0)
        return out

    def put_generations(self, rows: Sequence[tuple[str, str, str, Completion]]) -> None:
        """Store ``(key, model_id, prompt_hash, completion)`` rows in one transaction."""
        now = time.time()
        with self._tx():
            self.db.executemany(
                "INSERT OR REPLACE INTO generations VALUES (?,?,?,?,?,?,?,?,?,?)",
                [
                    (k, mid, ph, c.text, c.finish_reason, c.tokens_in, c.tokens_out, c.latency_s, c.error, now)
                    for k, mid, ph, c in rows
                ],
            )

    # --- judgments (the judge stage owns the payload format) ----------------------------------

    def get_judgments(self, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
        keys = list(keys)
        out: dict[str, dict[str, Any]] = {}
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            q = f"SELECT key, payload FROM judgments WHERE key IN ({','.join('?' * len(chunk))})"
            for k, payload in self.db.execute(q, chunk):
                out[k] = json.loads(payload)
        return out

    def put_judgments(self, rows: Sequence[tuple[str, str, dict[str, Any]]]) -> None:
        """Store ``(key, judge, payload)`` rows in one transaction."""
        now = time.time()
        with self._tx():
            self.db.executemany(
                "INSERT OR REPLACE INTO judgments VALUES (?,?,?,?)",
                [(k, j, json.dumps(p, ensure_ascii=False), now) for k, j, p in rows],
            )

    # --- runs ---------------------------------------------------------------------------------

    def begin_run(self, *, name: str | None, config_path: str | None, config: dict[str, Any], out_dir: str | None) -> str:
        run_id = time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]
        with self._tx():
            self.db.execute(
                "INSERT INTO runs (run_id, name, created, status, config_path, config, out_dir) VALUES (?,?,?,?,?,?,?)",
                (run_id, name, time.time(), "running", config_path, json.dumps(config, default=str), out_dir),
            )
        return run_id

    def save_run_items(self, run_id: str, items: Sequence[RunItem]) -> None:
        with self._tx():
            self.db.execute("DELETE FROM run_items WHERE run_id = ?", (run_id,))
            self.db.executemany(
                "INSERT INTO run_items VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                [
                    (
                        run_id, it.model, it.model_id, it.suite, it.suite_version, it.sample_id,
                        json.dumps(it.sample, ensure_ascii=False), it.generation_key, it.output, it.error,
                        json.dumps(it.scores, ensure_ascii=False),
                    )
                    for it in items
                ],
            )

    def finish_run(self, run_id: str, summary: dict[str, Any], status: str) -> None:
        with self._tx():
            self.db.execute(
                "UPDATE runs SET summary = ?, status = ?, finished = ? WHERE run_id = ?",
                (json.dumps(summary, ensure_ascii=False, default=str), status, time.time(), run_id),
            )

    def update_summary(self, run_id: str, summary: dict[str, Any]) -> None:
        with self._tx():
            self.db.execute("UPDATE runs SET summary = ? WHERE run_id = ?", (json.dumps(summary, ensure_ascii=False, default=str), run_id))

    def _row_to_run(self, row) -> RunRecord:
        run_id, name, created, finished, status, cpath, config, summary, out_dir, accepted = row
        return RunRecord(
            run_id, name, created, finished, status, cpath,
            json.loads(config) if config else {}, json.loads(summary) if summary else None, out_dir, bool(accepted),
        )

    _RUN_COLS = "run_id, name, created, finished, status, config_path, config, summary, out_dir, accepted"

    def get_run(self, run_id: str) -> RunRecord:
        """A run by id, or by a unique prefix of its id; ``latest`` is the newest finished run."""
        if run_id == "latest":
            row = self.db.execute(f"SELECT {self._RUN_COLS} FROM runs WHERE status != 'running' ORDER BY created DESC LIMIT 1").fetchone()
        else:
            # a prefix match without LIKE, so '%' and '_' in user input are not wildcards
            rows = self.db.execute(
                f"SELECT {self._RUN_COLS} FROM runs WHERE substr(run_id, 1, ?) = ? ORDER BY created", (len(run_id), run_id)
            ).fetchall()
            if len(rows) > 1:
                exact = [r for r in rows if r[0] == run_id]
                if not exact:
                    raise UserError(f"run id '{run_id}' is ambiguous ({len(rows)} runs start with it)", where=self.path)
                rows = exact
            row = rows[0] if rows else None
        if row is None:
            raise UserError(f"no run '{run_id}' in the store", where=self.path)
        return self._row_to_run(row)

    def list_runs(self, limit: int = 50) -> list[RunRecord]:
        rows = self.db.execute(f"SELECT {self._RUN_COLS} FROM runs ORDER BY created DESC LIMIT ?", (limit,)).fetchall()
        return [self._row_to_run(r) for r in rows]

    def run_items(self, run_id: str) -> list[RunItem]:
        rows = self.db.execute(
            "SELECT run_id, model, model_id, suite, suite_version, sample_id, sample, generation_key, output, error, scores "
            "FROM run_items WHERE run_id = ? ORDER BY suite, sample_id, model",
            (run_id,),
        ).fetchall()
        return [
            RunItem(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6]), r[7], r[8], r[9], json.loads(r[10]))
            for r in rows
        ]

    def set_accepted(self, run_id: str, accepted: bool = True) -> None:
        with self._tx():
            self.db.execute("UPDATE runs SET accepted = ? WHERE run_id = ?", (1 if accepted else 0, run_id))

    def last_accepted(self, name: str | None = None, before: str | None = None) -> RunRecord | None:
        q = f"SELECT {self._RUN_COLS} FROM runs WHERE accepted = 1"
        args: list[Any] = []
        if name is not None:
            q += " AND name = ?"
            args.append(name)
        if before is not None:
            q += " AND run_id != ?"
            args.append(before)
        row = self.db.execute(q + " ORDER BY created DESC LIMIT 1", args).fetchone()
        return self._row_to_run(row) if row else None

    # --- plumbing -----------------------------------------------------------------------------

    class _Tx:
        def __init__(self, db: sqlite3.Connection):
            self.db = db

        def __enter__(self):
            self.db.execute("BEGIN IMMEDIATE")

        def __exit__(self, exc_type, *_):
            self.db.execute("ROLLBACK" if exc_type else "COMMIT")

    def _tx(self) -> "Store._Tx":
        return Store._Tx(self.db)

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Iterator[tuple]:
        """For stages that keep their own tables (review sessions)."""
        return iter(self.db.execute(sql, args).fetchall())

    def transaction(self) -> "Store._Tx":
        return self._tx()
