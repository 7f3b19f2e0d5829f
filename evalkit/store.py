"""The SQLite run store (WAL): the generation and judgment caches, run history, run items.

Keys are content hashes, so an interrupted run resumes where it stopped (every batch is committed as
it finishes) and a rerun with nothing changed makes no model or judge calls. Reports, review sessions
and comparisons read the store, never live objects, so they can be rebuilt later.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from ._util.text import encodable, redact_url
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
  accepted INTEGER NOT NULL DEFAULT 0,
  owner TEXT,
  heartbeat REAL,
  reason TEXT
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
CREATE TABLE IF NOT EXISTS batches (
  id TEXT PRIMARY KEY,
  provider TEXT NOT NULL,
  endpoint TEXT NOT NULL,
  base_url TEXT,
  api_key_env TEXT,
  status TEXT NOT NULL,
  requests INTEGER NOT NULL,
  counts TEXT,
  created REAL NOT NULL,
  updated REAL,
  finished REAL
);
CREATE TABLE IF NOT EXISTS batch_requests (
  custom_id TEXT NOT NULL,
  batch_id TEXT NOT NULL,
  outcome TEXT,
  PRIMARY KEY (custom_id, batch_id)
);
CREATE INDEX IF NOT EXISTS batch_requests_by_batch ON batch_requests(batch_id);
"""

#: A provider batch that ended without answers: its requests are sent again, never waited for.
BATCH_DEAD = ("failed", "expired", "cancelled", "canceled")


def _txt(value: str | None) -> str | bytes | None:
    """Untrusted text for a TEXT column, losslessly: text UTF-8 cannot encode (a lone surrogate from a
    model) is kept as its surrogatepass bytes (a BLOB), which :func:`_untxt` turns back into the str.
    """
    if value is None or encodable(value):
        return value
    return value.encode("utf-8", "surrogatepass")


def _untxt(value: Any) -> Any:
    return value.decode("utf-8", "surrogatepass") if isinstance(value, bytes) else value


def _json(obj: Any) -> str:
    """JSON for a column; escapes (\\ud800) where raw UTF-8 cannot carry a character: still lossless."""
    text = json.dumps(obj, ensure_ascii=False, default=str)
    return text if encodable(text) else json.dumps(obj, ensure_ascii=True, default=str)


def _v2_run_owner(db: sqlite3.Connection) -> None:
    """Schema 2: who runs a run (host:pid), its heartbeat, and why it stopped."""
    cols = {r[1] for r in db.execute("PRAGMA table_info(runs)")}
    for col, kind in (("owner", "TEXT"), ("heartbeat", "REAL"), ("reason", "TEXT")):
        if col not in cols:
            db.execute(f"ALTER TABLE runs ADD COLUMN {col} {kind}")


# (schema version it brings the store to, the step). A new step appends here and bumps STORE_SCHEMA.
_MIGRATIONS: list[tuple[int, Callable[[sqlite3.Connection], None]]] = [(2, _v2_run_owner)]
STORE_SCHEMA = 2

HEARTBEAT_S = 5.0  # a running run refreshes its heartbeat at most this often (on every commit)
STALE_AFTER_S = 600.0  # a run on another host with no heartbeat for this long is shown as interrupted


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    name: str | None
    created: float
    finished: float | None
    status: str  # running | passed | failed | interrupted
    config_path: str | None
    config: dict[str, Any]
    summary: dict[str, Any] | None
    out_dir: str | None
    accepted: bool
    owner: str | None = None  # host:pid of the process that ran it
    heartbeat: float | None = None
    reason: str | None = None  # why a run failed or stopped before writing its reports


def _owner() -> str:
    import os
    import socket

    return f"{socket.gethostname()}:{os.getpid()}"


def _process_alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _effective_status(status: str, owner: str | None, heartbeat: float | None) -> tuple[str, str | None]:
    """A run stored as ``running`` whose process is gone (killed, crashed) is ``interrupted``."""
    if status != "running" or not owner:
        return status, None
    import socket

    host, _, pid = owner.rpartition(":")
    if host == socket.gethostname() and pid.isdigit():
        if not _process_alive(int(pid)):
            return "interrupted", f"process {pid} on {host} is gone (killed or crashed); rerun to resume"
        return status, None
    if heartbeat is not None and time.time() - heartbeat > STALE_AFTER_S:
        return "interrupted", f"no heartbeat from {owner} for {int(time.time() - heartbeat)} s; rerun to resume"
    return status, None


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


def store_file(location: str | Path) -> Path:
    """The SQLite file of a store value (a path or sqlite:///...); other URL schemes are refused."""
    from .config import store_location

    text = str(location)
    # Path() folds "postgresql://h/db" into "postgresql:/h/db": catch that form too
    m = re.match(r"^([A-Za-z][A-Za-z0-9+.\-]*):/", text)
    if m and not text.startswith(m.group(0) + "/") and m.group(1).lower() != "sqlite":
        text = f"{m.group(1)}://{text[len(m.group(0)):]}"
    try:
        return Path(store_location(text))
    except ValueError as e:
        raise UserError(f"store: {e}", where=redact_url(text)) from None


def open_existing_store(path: str | Path | None) -> "Store":
    """The store a read command (report, runs, review, export) works on: it must exist already."""
    p = store_file(path or Path(".evalkit") / "store.db")
    if not p.is_file():
        raise UserError("no store here; run `evalkit run eval.yaml` first, or pass --store PATH", where=p)
    return Store(p)


def locate_run(run: str, store: str | Path | None) -> tuple[str | Path | None, str]:
    """What a read command's RUN argument names: (store location, run id or 'latest' or a prefix).

    RUN may be a run's output folder (or its summary.json): its summary names the run id and the store
    it was written to, so a reviewer need not know where the store is. ``--store`` still wins. Anything
    else is a run id, a unique prefix of one, or 'latest', looked up in ``store``.
    """
    p = Path(run)
    summary_file = p / "summary.json" if p.is_dir() else p if p.name == "summary.json" else None
    if summary_file is None:
        if ("/" in run or "\\" in run) and not p.exists():
            raise UserError("no such run folder (a run's output folder holds its summary.json)", where=p)
        return store, run
    if not summary_file.is_file():
        raise UserError("not a run's output folder: it has no summary.json", where=p)
    from .config import read_json

    data = read_json(summary_file)
    run_id = data.get("run_id") if isinstance(data, dict) else None
    if not isinstance(run_id, str) or not run_id:
        raise UserError("summary.json has no run_id: not a run summary", where=summary_file)
    if store is not None:
        return store, run_id
    where = data.get("store")
    if not isinstance(where, str) or not where:
        raise UserError("summary.json does not say where its store is (an older evalkit wrote it): pass --store", where=summary_file)
    if not store_file(where).is_file():
        raise UserError(f"the store this run was written to is not here: {redact_url(where)} (pass --store)", where=summary_file)
    return where, run_id


class Store:
    def __init__(self, path: str | Path):
        self.path = store_file(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(str(self.path), timeout=30.0, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA busy_timeout=30000")
            self.db.executescript(SCHEMA)
            self._migrate()
        except sqlite3.DatabaseError as e:
            raise UserError(f"cannot open the store: {e}", where=self.path) from None
        self._active_run: str | None = None
        self._last_beat = 0.0

    def _migrate(self) -> None:
        """Bring a store written by an older evalkit up to :data:`STORE_SCHEMA` (nothing is lost);
        refuse one written by a newer evalkit, which this one cannot read safely.
        """
        self.db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        row = self.db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        version = int(row[0]) if row else 1  # stores from before the meta table are schema 1
        if version > STORE_SCHEMA:
            raise UserError(f"the store was written by a newer evalkit (store schema {version}; this evalkit knows up to {STORE_SCHEMA}): upgrade evalkit", where=self.path)
        for target, step in _MIGRATIONS:
            if version < target:
                with self._tx():
                    step(self.db)
                    self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)", (str(target),))
                version = target
        if row is None:
            with self._tx():
                self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)", (str(version),))

    def schema_version(self) -> int:
        row = self.db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        return int(row[0]) if row else 1

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- provider batches (evalkit.models.batch) -----------------------------------------------

    def put_batch(self, batch_id: str, *, provider: str, endpoint: str, base_url: str | None, api_key_env: str | None,
                  custom_ids: Sequence[str], status: str) -> None:
        """Record a submitted batch and the requests it carries, before anyone waits for it."""
        now = time.time()
        with self._tx():
            self.db.execute("INSERT OR REPLACE INTO batches VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                            (batch_id, provider, endpoint, base_url, api_key_env, status, len(custom_ids), None, now, now, None))
            self.db.executemany("INSERT OR REPLACE INTO batch_requests VALUES (?,?,NULL)", [(c, batch_id) for c in custom_ids])

    def update_batch(self, batch_id: str, status: str, counts: dict[str, Any] | None = None, *, ended: bool = False,
                     outcomes: dict[str, str] | None = None) -> None:
        now = time.time()
        with self._tx():
            self.db.execute("UPDATE batches SET status = ?, counts = COALESCE(?, counts), updated = ?, finished = COALESCE(finished, ?) WHERE id = ?",
                            (status, _json(counts) if counts is not None else None, now, now if ended else None, batch_id))
            if outcomes:
                self.db.executemany("UPDATE batch_requests SET outcome = ? WHERE batch_id = ? AND custom_id = ?",
                                    [(o, batch_id, c) for c, o in outcomes.items()])

    def open_batches_for(self, endpoint: str, custom_ids: Iterable[str]) -> dict[str, str]:
        """custom_id -> the newest batch of ``endpoint`` that carries it and may still answer it: in flight,
        or ended with its answer not yet read back (a run killed while waiting resumes from there).
        """
        ids = list(custom_ids)
        out: dict[str, tuple[float, str]] = {}
        dead = ",".join("?" * len(BATCH_DEAD))
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            q = (f"SELECT r.custom_id, b.id, b.created FROM batch_requests r JOIN batches b ON b.id = r.batch_id "
                 f"WHERE b.endpoint = ? AND b.status NOT IN ({dead}) AND (r.outcome IS NULL OR r.outcome = 'ok') "
                 f"AND r.custom_id IN ({','.join('?' * len(chunk))})")
            for cid, bid, created in self.db.execute(q, [endpoint, *BATCH_DEAD, *chunk]):
                if cid not in out or created > out[cid][0]:
                    out[cid] = (created, bid)
        return {c: b for c, (_, b) in out.items()}

    def list_batches(self, *, batch_id: str | None = None, active_only: bool = False) -> list[dict[str, Any]]:
        q = "SELECT id, provider, endpoint, base_url, api_key_env, status, requests, counts, created, updated, finished FROM batches"
        args: list[Any] = []
        if batch_id is not None:
            q += " WHERE id = ?"
            args.append(batch_id)
        elif active_only:
            q += " WHERE finished IS NULL"
        rows = []
        for r in self.db.execute(q + " ORDER BY created", args):
            rows.append({"id": r[0], "provider": r[1], "endpoint": r[2], "base_url": r[3], "api_key_env": r[4], "status": r[5], "requests": r[6],
                         "counts": json.loads(r[7]) if r[7] else {}, "created": r[8], "updated": r[9], "finished": r[10]})
        return rows

    # --- generations --------------------------------------------------------------------------

    def get_generations(self, keys: Iterable[str]) -> dict[str, Completion]:
        """Cached successful completions for ``keys`` (errors are not cached: they are retried)."""
        keys = list(keys)
        out: dict[str, Completion] = {}
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            q = f"SELECT key, text, finish_reason, tokens_in, tokens_out, latency_s FROM generations WHERE error IS NULL AND key IN ({','.join('?' * len(chunk))})"
            for k, text, fr, ti, to, lat in self.db.execute(q, chunk):
                out[k] = Completion(text=_untxt(text), finish_reason=fr, tokens_in=ti or 0, tokens_out=to or 0, latency_s=lat or 0.0)
        return out

    def put_generations(self, rows: Sequence[tuple[str, str, str, Completion]]) -> None:
        """Store ``(key, model_id, prompt_hash, completion)`` rows in one transaction."""
        now = time.time()
        with self._tx():
            self.db.executemany(
                "INSERT OR REPLACE INTO generations VALUES (?,?,?,?,?,?,?,?,?,?)",
                [
                    (k, mid, ph, _txt(c.text), c.finish_reason, c.tokens_in, c.tokens_out, c.latency_s, _txt(c.error), now)
                    for k, mid, ph, c in rows
                ],
            )
            self._beat()

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
                [(k, j, _json(p), now) for k, j, p in rows],
            )
            self._beat()

    # --- runs ---------------------------------------------------------------------------------

    def begin_run(self, *, name: str | None, config_path: str | None, config: dict[str, Any], out_dir: str | None) -> str:
        run_id = time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]
        now = time.time()
        with self._tx():
            self.db.execute(
                "INSERT INTO runs (run_id, name, created, status, config_path, config, out_dir, owner, heartbeat) VALUES (?,?,?,?,?,?,?,?,?)",
                (run_id, name, now, "running", config_path, _json(config), out_dir, _owner(), now),
            )
        self._active_run, self._last_beat = run_id, now
        return run_id

    def _beat(self) -> None:
        """Refresh the active run's heartbeat (inside the caller's transaction)."""
        now = time.time()
        if self._active_run is not None and now - self._last_beat >= HEARTBEAT_S:
            self.db.execute("UPDATE runs SET heartbeat = ? WHERE run_id = ?", (now, self._active_run))
            self._last_beat = now

    def fail_run(self, run_id: str, reason: str, status: str = "failed") -> None:
        """A run that stopped before its reports: ``failed`` (or ``interrupted``) with the reason."""
        with self._tx():
            self.db.execute(
                "UPDATE runs SET status = ?, reason = ?, finished = ? WHERE run_id = ? AND status = 'running'",
                (status, reason, time.time(), run_id),
            )
        if self._active_run == run_id:
            self._active_run = None

    def save_run_items(self, run_id: str, items: Sequence[RunItem]) -> None:
        with self._tx():
            self.db.execute("DELETE FROM run_items WHERE run_id = ?", (run_id,))
            self.db.executemany(
                "INSERT INTO run_items VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                [
                    (
                        run_id, it.model, it.model_id, it.suite, it.suite_version, it.sample_id,
                        _json(it.sample), it.generation_key, _txt(it.output), _txt(it.error),
                        _json(it.scores),
                    )
                    for it in items
                ],
            )

    def finish_run(self, run_id: str, summary: dict[str, Any], status: str) -> None:
        with self._tx():
            self.db.execute(
                "UPDATE runs SET summary = ?, status = ?, finished = ? WHERE run_id = ?",
                (_json(summary), status, time.time(), run_id),
            )
        if self._active_run == run_id:
            self._active_run = None

    def update_summary(self, run_id: str, summary: dict[str, Any]) -> None:
        with self._tx():
            self.db.execute("UPDATE runs SET summary = ? WHERE run_id = ?", (_json(summary), run_id))

    def _row_to_run(self, row) -> RunRecord:
        run_id, name, created, finished, status, cpath, config, summary, out_dir, accepted, owner, heartbeat, reason = row
        status, why = _effective_status(status, owner, heartbeat)
        return RunRecord(
            run_id, name, created, finished, status, cpath,
            json.loads(config) if config else {}, json.loads(summary) if summary else None, out_dir, bool(accepted),
            owner, heartbeat, reason or why,
        )

    _RUN_COLS = "run_id, name, created, finished, status, config_path, config, summary, out_dir, accepted, owner, heartbeat, reason"

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
            RunItem(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6]), r[7], _untxt(r[8]), _untxt(r[9]), json.loads(r[10]))
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
