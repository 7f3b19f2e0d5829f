"""The run store: the generation and judgment caches, run history, run items, review sessions.

It lives in a SQLite file (WAL; the default, for one machine) or a PostgreSQL database (a team: CI
runners and reviewers on many machines share one cache and one history). Keys are content hashes,
inserted idempotently (``ON CONFLICT``), so many runners writing at once never duplicate or lose an
item; so an interrupted run resumes where it stopped (every batch is committed as
it finishes) and a rerun with nothing changed makes no model or judge calls. Reports, review sessions
and comparisons read the store, never live objects, so they can be rebuilt later.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar

from ._db import ConnectionLost, Database, connect, display_url, is_postgres_url
from ._util.text import encodable, redact_secrets, redact_url, redact_userinfo, terminal_safe
from .errors import UserError
from .record import Draw, RunItem, RunSummary
from .types import Completion

T = TypeVar("T")


class StoreUnavailable(UserError):
    """The store's server stayed unreachable past the reconnect bound (``$EVALKIT_STORE_RETRY_S``)."""

RETRY_ENV = "EVALKIT_STORE_RETRY_S"  # how long a lost PostgreSQL connection is retried (seconds)
DEFAULT_RETRY_S = 60.0

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
  created REAL NOT NULL,
  reasoning TEXT,
  loglikelihoods TEXT
);
CREATE TABLE IF NOT EXISTS judgments (
  key TEXT PRIMARY KEY,
  judge TEXT NOT NULL,
  payload TEXT NOT NULL,
  created REAL NOT NULL,
  ok INTEGER
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
  draws TEXT,
  finish_reason TEXT,
  reasoning TEXT,
  loglikelihoods TEXT,
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
CREATE TABLE IF NOT EXISTS review_sessions (
  session_id TEXT PRIMARY KEY,
  run_id TEXT NOT NULL,
  created REAL NOT NULL,
  model_a TEXT NOT NULL,
  model_b TEXT NOT NULL,
  n INTEGER NOT NULL,
  seed INTEGER NOT NULL,
  options TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS review_pairs (
  session_id TEXT NOT NULL,
  position INTEGER NOT NULL,
  token TEXT NOT NULL UNIQUE,
  suite TEXT NOT NULL,
  sample_id TEXT NOT NULL,
  left_model TEXT NOT NULL CHECK (left_model IN ('a', 'b')),
  identical INTEGER NOT NULL,
  stratum TEXT,
  PRIMARY KEY (session_id, position)
);
CREATE TABLE IF NOT EXISTS review_verdicts (
  session_id TEXT NOT NULL,
  token TEXT NOT NULL,
  reviewer TEXT NOT NULL,
  verdict TEXT CHECK (verdict IS NULL OR verdict IN ('left', 'right', 'tie', 'both_bad')),
  ship_left INTEGER,
  ship_right INTEGER,
  note TEXT NOT NULL DEFAULT '',
  source TEXT NOT NULL,
  updated REAL NOT NULL,
  PRIMARY KEY (session_id, token, reviewer)
);
CREATE TABLE IF NOT EXISTS review_results (
  session_id TEXT PRIMARY KEY,
  run_id TEXT NOT NULL,
  created REAL NOT NULL,
  result TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS review_reviewers (
  session_id TEXT NOT NULL,
  reviewer TEXT NOT NULL,
  token_hash TEXT NOT NULL UNIQUE,
  created REAL NOT NULL,
  revoked REAL,
  PRIMARY KEY (session_id, reviewer)
);
CREATE TABLE IF NOT EXISTS review_assignments (
  session_id TEXT NOT NULL,
  token TEXT NOT NULL,
  reviewer TEXT NOT NULL,
  PRIMARY KEY (session_id, token, reviewer)
);
"""

#: Every table of the store but meta, with its key, in the order ``store copy`` inserts them.
TABLE_KEYS: dict[str, tuple[str, ...]] = {
    "runs": ("run_id",), "generations": ("key",), "judgments": ("key",), "run_items": ("run_id", "model", "suite", "sample_id"),
    "batches": ("id",), "batch_requests": ("custom_id", "batch_id"), "review_sessions": ("session_id",),
    "review_pairs": ("session_id", "position"), "review_verdicts": ("session_id", "token", "reviewer"),
    "review_results": ("session_id",), "review_reviewers": ("session_id", "reviewer"),
    "review_assignments": ("session_id", "token", "reviewer"),
}

#: A provider batch that ended without answers: its requests are sent again, never waited for.
BATCH_DEAD = ("failed", "expired", "cancelled", "canceled")


def _json(obj: Any) -> str:
    """JSON for a column; escapes (\\ud800) where raw UTF-8 cannot carry a character: still lossless."""
    text = json.dumps(obj, ensure_ascii=False, default=str)
    return text if encodable(text) else json.dumps(obj, ensure_ascii=True, default=str)


def _v2_run_owner(db: Database) -> None:
    """Schema 2: who runs a run (host:pid), its heartbeat, and why it stopped."""
    cols = db.columns("runs")
    for col, kind in (("owner", "TEXT"), ("heartbeat", "REAL"), ("reason", "TEXT")):
        if col not in cols:
            db.execute(db.ddl(f"ALTER TABLE runs ADD COLUMN {col} {kind}"))


def _v3_team_review(db: Database) -> None:
    """Schema 3: the review tables belong to the store's schema (new: reviewers' hashed links and their
    assignments, created by :data:`SCHEMA`); a judgment records whether it is a verdict (``ok``), so a
    runner's error never overwrites another runner's verdict for the same key.
    """
    if "ok" not in db.columns("judgments"):
        db.execute(db.ddl("ALTER TABLE judgments ADD COLUMN ok INTEGER"))


def _v4_samples(db: Database) -> None:
    """Schema 4: an item's K samples (``generation: {samples: K}``), as JSON beside its first."""
    if "draws" not in db.columns("run_items"):
        db.execute(db.ddl("ALTER TABLE run_items ADD COLUMN draws TEXT"))


def _v5_finish_and_reasoning(db: Database) -> None:
    """Schema 5: why an item's generation ended (``finish_reason``: length when the token limit cut it),
    and a reasoning model's thinking kept apart from its answer (items and cached generations).
    """
    cols = db.columns("run_items")
    for col in ("finish_reason", "reasoning"):
        if col not in cols:
            db.execute(db.ddl(f"ALTER TABLE run_items ADD COLUMN {col} TEXT"))
    if "reasoning" not in db.columns("generations"):
        db.execute(db.ddl("ALTER TABLE generations ADD COLUMN reasoning TEXT"))


def _v6_loglikelihoods(db: Database) -> None:
    """Schema 6: log-likelihood items (multiple choice, perplexity): each choice's summed log-probability,
    or a text's rolling log-likelihood, as a JSON list (cached answers and run items).
    """
    for table in ("generations", "run_items"):
        if "loglikelihoods" not in db.columns(table):
            db.execute(db.ddl(f"ALTER TABLE {table} ADD COLUMN loglikelihoods TEXT"))


# (schema version it brings the store to, the step), for SQLite and PostgreSQL alike: every step works
# through :class:`Database`. A new step appends here and bumps STORE_SCHEMA.
_MIGRATIONS: list[tuple[int, Callable[[Database], None]]] = [
    (2, _v2_run_owner), (3, _v3_team_review), (4, _v4_samples), (5, _v5_finish_and_reasoning),
    (6, _v6_loglikelihoods),
]
STORE_SCHEMA = 6

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

    @property
    def record(self) -> RunSummary | None:
        """The stored summary as the typed run record (None until the run finished)."""
        return RunSummary.load(self.summary) if self.summary is not None else None


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


NOISE_PREFIX = "noise:"  # `evalkit noise` stores its result as a run named noise:<config name>


def latest_noise(store: "Store | None", run_name: str | None) -> dict[str, Any] | None:
    """The latest ``evalkit noise`` result stored for the config ``run_name`` (its summary's ``noise``)."""
    if store is None or not run_name:
        return None
    for r in store.list_runs(limit=200):
        if r.name == NOISE_PREFIX + run_name and r.summary and isinstance(r.summary.get("noise"), dict):
            return {**r.summary["noise"], "run_id": r.run_id}
    return None


DEFAULT_STORE = Path(".evalkit") / "store.db"
STORE_ENV = "EVALKIT_STORE"  # a store location for every command, as --store would give it


def store_target(location: str | Path) -> str | Path:
    """What a store value names: a PostgreSQL URL (kept as text) or a SQLite file path."""
    from ._util.location import StoreLocation, unfold

    text = unfold(location)
    try:
        loc = StoreLocation.parse(text)
    except ValueError as e:  # a PostgreSQL URL's message shows it already, redacted
        raise UserError(f"store: {e}", where=None if is_postgres_url(text) else redact_url(text)) from None
    return text if loc.is_postgres else Path(str(loc.path))


def store_display(location: str | Path) -> str:
    """A store location as it may be printed and written into a summary: no password, absolute paths."""
    target = store_target(location)
    return display_url(target) if isinstance(target, str) else str(target.resolve())


def chosen_store(flag: str | Path | None, configured: str | Path | None = None) -> str | Path:
    """Which store a command uses: ``--store``, else $EVALKIT_STORE, else eval.yaml's ``store:``, else
    .evalkit/store.db in the current folder.
    """
    return flag or os.environ.get(STORE_ENV) or configured or DEFAULT_STORE


def open_existing_store(path: str | Path | None) -> "Store":
    """The store a read command (report, runs, review, export) works on: it must exist already."""
    target = store_target(chosen_store(path))
    if isinstance(target, Path) and not target.is_file():
        raise UserError("no store here; run `evalkit run eval.yaml` first, or pass --store PATH", where=target)
    return Store(target, create=False)


def locate_run(run: str, store: str | Path | None) -> tuple[str | Path | None, str]:
    """What a read command's RUN argument names: (store location, run id or 'latest' or a prefix).

    RUN may be a run's output folder (or its summary.json): its summary names the run id and the store
    it was written to, so a reviewer need not know where the store is. ``--store`` (or $EVALKIT_STORE)
    still wins. Anything else is a run id, a unique prefix of one, or 'latest', looked up in ``store``.
    """
    store = store or os.environ.get(STORE_ENV) or None
    p = Path(run)
    summary_file = p / "summary.json" if p.is_dir() else p if p.name == "summary.json" else None
    if summary_file is None:
        if ("/" in run or "\\" in run) and not p.exists():
            raise UserError("no such run folder (a run's output folder holds its summary.json)", where=p)
        return store, run
    if not summary_file.is_file():
        raise UserError("not a run's output folder: it has no summary.json", where=p)
    from ._util.fs import read_json

    data = read_json(summary_file)
    run_id = data.get("run_id") if isinstance(data, dict) else None
    if not isinstance(run_id, str) or not run_id:
        raise UserError("summary.json has no run_id: not a run summary", where=summary_file)
    if store is not None:
        return store, run_id
    where = data.get("store")
    if not isinstance(where, str) or not where:
        raise UserError("summary.json does not say where its store is (an older evalkit wrote it): pass --store", where=summary_file)
    target = store_target(where)
    if isinstance(target, Path) and not target.is_file():
        raise UserError(f"the store this run was written to is not here: {redact_url(where)} (pass --store)", where=summary_file)
    return where, run_id


class Store:
    """The store in a SQLite file or a PostgreSQL database; ``create=False`` refuses an empty one."""

    def __init__(self, path: str | Path, *, create: bool = True):
        target = store_target(path)
        self._in_tx = False
        self.retry_s = _retry_seconds()
        self.reconnects = 0  # connections re-made after a loss (a server restart), for tests and logs
        self.secrets: tuple[str, ...] = ()  # configured API keys: never stored (see redact)
        self._db = connect(target)
        self.dialect = self._db.dialect
        #: where the store is, for messages: the SQLite file, or the URL without its password
        self.path: Path | str = self._db.where
        #: the driver's own connection (sqlite3 or psycopg), for tests and ad-hoc SQL
        self.db: Any = self._db.raw
        try:
            if not create and not self._db.has_table("runs"):
                raise UserError("no evalkit store in this database yet; run `evalkit run eval.yaml --store URL` first", where=self.path)
            self._migrate()
        except UserError:
            self._db.close()
            raise
        except Exception as e:  # sqlite3.DatabaseError, psycopg.Error: a file or database evalkit cannot use
            self._db.close()
            raise UserError(f"cannot open the store: {terminal_safe(str(e), one_line=True)}", where=self.path) from None
        self._active_run: str | None = None
        self._last_beat = 0.0

    def _version(self) -> int | None:
        if not self._db.has_table("meta"):
            return None
        rows = self._q("SELECT value FROM meta WHERE key = 'schema_version'")
        return int(rows[0][0]) if rows else None

    def _migrate(self) -> None:
        """Create the schema, bring a store written by an older evalkit up to :data:`STORE_SCHEMA` (nothing
        is lost), refuse one written by a newer evalkit, which this one cannot read safely. One process at
        a time: on PostgreSQL an advisory lock, on SQLite the write lock.
        """
        version = self._version()
        if version == STORE_SCHEMA:
            return
        if version is not None and version > STORE_SCHEMA:
            raise UserError(f"the store was written by a newer evalkit (store schema {version}; this evalkit knows up to {STORE_SCHEMA}): upgrade evalkit", where=self.path)
        def _body() -> None:
            self._db.lock_schema()
            had_runs = self._db.has_table("runs")
            for stmt in SCHEMA.split(";"):
                if stmt.strip():
                    self._q(self._db.ddl(stmt))
            self._q("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            rows = self._q("SELECT value FROM meta WHERE key = 'schema_version'")
            # a store from before the meta table is schema 1; a new one starts at the newest schema
            version = int(rows[0][0]) if rows else (1 if had_runs else STORE_SCHEMA)
            if version > STORE_SCHEMA:
                raise UserError(f"the store was written by a newer evalkit (store schema {version}; this evalkit knows up to {STORE_SCHEMA}): upgrade evalkit", where=self.path)
            for target, step in _MIGRATIONS:
                if version < target:
                    step(self._db)
                    version = target
            self._q("INSERT INTO meta (key, value) VALUES ('schema_version', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                             (str(version),))
        self.write(_body)

    def schema_version(self) -> int:
        return self._version() or 1

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- provider batches (evalkit.models.batch) -----------------------------------------------

    def put_batch(self, batch_id: str, *, provider: str, endpoint: str, base_url: str | None, api_key_env: str | None,
                  custom_ids: Sequence[str], status: str) -> None:
        """Record a submitted batch and the requests it carries, before anyone waits for it."""
        now = time.time()
        def _body() -> None:
            self._q("INSERT INTO batches VALUES (?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (id) DO UPDATE SET status = excluded.status, "
                             "requests = excluded.requests, updated = excluded.updated",
                            (batch_id, provider, endpoint, redact_url(base_url) if base_url else base_url, api_key_env, status, len(custom_ids), None, now, now, None))
            self._db.executemany("INSERT INTO batch_requests VALUES (?,?,NULL) ON CONFLICT (custom_id, batch_id) DO NOTHING",
                                 [(c, batch_id) for c in sorted(custom_ids)])
        self.write(_body)

    def update_batch(self, batch_id: str, status: str, counts: dict[str, Any] | None = None, *, ended: bool = False,
                     outcomes: dict[str, str] | None = None) -> None:
        now = time.time()
        def _body() -> None:
            self._q("UPDATE batches SET status = ?, counts = COALESCE(?, counts), updated = ?, finished = COALESCE(finished, ?) WHERE id = ?",
                            (self.redact(status), _json(counts) if counts is not None else None, now, now if ended else None, batch_id))
            if outcomes:
                self._db.executemany("UPDATE batch_requests SET outcome = ? WHERE batch_id = ? AND custom_id = ?",
                                    [(self.redact(o), batch_id, c) for c, o in outcomes.items()])
        self.write(_body)

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
            for cid, bid, created in self._q(q, [endpoint, *BATCH_DEAD, *chunk]):
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
        for r in self._q(q + " ORDER BY created", args):
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
            q = (f"SELECT key, text, finish_reason, tokens_in, tokens_out, latency_s, reasoning, loglikelihoods FROM generations "
                 f"WHERE error IS NULL AND key IN ({','.join('?' * len(chunk))})")
            for k, text, fr, ti, to, lat, reasoning, lls in self._q(q, chunk):
                out[k] = Completion(text=text, finish_reason=fr, tokens_in=ti or 0, tokens_out=to or 0, latency_s=lat or 0.0, reasoning=reasoning,
                                    loglikelihoods=tuple(json.loads(lls)) if lls else None)
        return out

    def put_generations(self, rows: Sequence[tuple[str, str, str, Completion]]) -> None:
        """Store ``(key, model_id, prompt_hash, completion)`` rows in one transaction."""
        now = time.time()
        def _body() -> None:
            # sorted keys: concurrent writers lock rows in one order, so they cannot deadlock
            self._db.executemany(
                "INSERT INTO generations (key, model_id, prompt_hash, text, finish_reason, tokens_in, tokens_out, latency_s, error, created, "
                "reasoning, loglikelihoods) VALUES (?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (key) DO UPDATE SET "
                "text = excluded.text, finish_reason = excluded.finish_reason, tokens_in = excluded.tokens_in, reasoning = excluded.reasoning, "
                "loglikelihoods = excluded.loglikelihoods, "
                "tokens_out = excluded.tokens_out, latency_s = excluded.latency_s, error = excluded.error, created = excluded.created "
                "WHERE generations.error IS NOT NULL",
                [
                    (k, mid, ph, c.text, c.finish_reason, c.tokens_in, c.tokens_out, c.latency_s, self.redact(c.error), now, c.reasoning,
                     _json(list(c.loglikelihoods)) if c.loglikelihoods is not None else None)
                    for k, mid, ph, c in sorted(rows, key=lambda r: r[0])
                ],
            )
            self._beat()
        self.write(_body)

    # --- judgments (the judge stage owns the payload format) ----------------------------------

    def get_judgments(self, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
        keys = list(keys)
        out: dict[str, dict[str, Any]] = {}
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            q = f"SELECT key, payload FROM judgments WHERE key IN ({','.join('?' * len(chunk))})"
            for k, payload in self._q(q, chunk):
                out[k] = json.loads(payload)
        return out

    def put_judgments(self, rows: Sequence[tuple[str, str, dict[str, Any]]]) -> None:
        """Store ``(key, judge, payload)`` rows in one transaction."""
        now = time.time()
        def _body() -> None:
            self._db.executemany(
                "INSERT INTO judgments (key, judge, payload, created, ok) VALUES (?,?,?,?,?) ON CONFLICT (key) DO UPDATE SET "
                "judge = excluded.judge, payload = excluded.payload, created = excluded.created, ok = excluded.ok "
                "WHERE judgments.ok IS NULL OR judgments.ok = 0",
                [(k, j, self.redact(_json(p)), now, int(p.get("verdict") is not None and not p.get("error"))) for k, j, p in sorted(rows, key=lambda r: r[0])],
            )
            self._beat()
        self.write(_body)

    # --- runs ---------------------------------------------------------------------------------

    def begin_run(self, *, name: str | None, config_path: str | None, config: dict[str, Any], out_dir: str | None) -> str:
        run_id = time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]
        now = time.time()
        def _body() -> None:
            self._q(
                "INSERT INTO runs (run_id, name, created, status, config_path, config, out_dir, owner, heartbeat) VALUES (?,?,?,?,?,?,?,?,?) "
                "ON CONFLICT (run_id) DO NOTHING",  # a retried transaction whose first commit did land
                (run_id, name, now, "running", config_path, _json(config), out_dir, _owner(), now),
            )
        self.write(_body)
        self._active_run, self._last_beat = run_id, now
        return run_id

    def _beat(self) -> None:
        """Refresh the active run's heartbeat (inside the caller's transaction)."""
        now = time.time()
        if self._active_run is not None and now - self._last_beat >= HEARTBEAT_S:
            self._q("UPDATE runs SET heartbeat = ? WHERE run_id = ?", (now, self._active_run))
            self._last_beat = now

    def fail_run(self, run_id: str, reason: str, status: str = "failed") -> None:
        """A run that stopped before its reports: ``failed`` (or ``interrupted``) with the reason."""
        def _body() -> None:
            self._q(
                "UPDATE runs SET status = ?, reason = ?, finished = ? WHERE run_id = ? AND status = 'running'",
                (status, self.redact(reason), time.time(), run_id),
            )
        self.write(_body)
        if self._active_run == run_id:
            self._active_run = None

    def save_run_items(self, run_id: str, items: Sequence[RunItem]) -> None:
        def _body() -> None:
            self._q("DELETE FROM run_items WHERE run_id = ?", (run_id,))
            self._db.executemany(
                "INSERT INTO run_items (run_id, model, model_id, suite, suite_version, sample_id, sample, generation_key, output, error, "
                "scores, draws, finish_reason, reasoning, loglikelihoods) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                [
                    (
                        run_id, it.model, it.model_id, it.suite, it.suite_version, it.sample_id,
                        _json(it.sample), it.generation_key, it.output, self.redact(it.error),
                        _json({k: sc.as_dict() for k, sc in it.scores.items()}),
                        _json([{**d.as_dict(), "error": self.redact(d.error)} for d in it.draws]) if it.draws else None,
                        it.finish_reason, it.reasoning, _json(list(it.loglikelihoods)) if it.loglikelihoods is not None else None,
                    )
                    for it in items
                ],
            )
        self.write(_body)

    def finish_run(self, run_id: str, summary: dict[str, Any], status: str) -> None:
        def _body() -> None:
            self._q(
                "UPDATE runs SET summary = ?, status = ?, finished = ? WHERE run_id = ?",
                (_json(summary), status, time.time(), run_id),
            )
        self.write(_body)
        if self._active_run == run_id:
            self._active_run = None

    def update_summary(self, run_id: str, summary: dict[str, Any], status: str | None = None) -> None:
        def _body() -> None:
            self._q("UPDATE runs SET summary = ?, status = COALESCE(?, status) WHERE run_id = ?", (_json(summary), status, run_id))
        self.write(_body)

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
            found = self._q(f"SELECT {self._RUN_COLS} FROM runs WHERE status != 'running' ORDER BY created DESC LIMIT 1")
            row = found[0] if found else None
        else:
            # a prefix match without LIKE, so '%' and '_' in user input are not wildcards
            rows = self._q(
                f"SELECT {self._RUN_COLS} FROM runs WHERE substr(run_id, 1, CAST(? AS INTEGER)) = ? ORDER BY created", (len(run_id), run_id)
            )
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
        rows = self._q(f"SELECT {self._RUN_COLS} FROM runs ORDER BY created DESC LIMIT ?", (limit,))
        return [self._row_to_run(r) for r in rows]

    def run_items(self, run_id: str) -> list[RunItem]:
        rows = self._q(
            "SELECT run_id, model, model_id, suite, suite_version, sample_id, sample, generation_key, output, error, scores, draws, finish_reason, reasoning, "
            "loglikelihoods FROM run_items WHERE run_id = ? ORDER BY suite, sample_id, model",
            (run_id,),
        )
        return [
            RunItem(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6]), r[7], r[8], r[9], json.loads(r[10]),
                    tuple(Draw.from_dict(d) for d in json.loads(r[11])) if r[11] else (), r[12], r[13],
                    tuple(json.loads(r[14])) if r[14] else None)
            for r in rows
        ]

    def set_accepted(self, run_id: str, accepted: bool = True) -> None:
        def _body() -> None:
            self._q("UPDATE runs SET accepted = ? WHERE run_id = ?", (1 if accepted else 0, run_id))
        self.write(_body)

    def last_accepted(self, name: str | None = None, before: str | None = None) -> RunRecord | None:
        q = f"SELECT {self._RUN_COLS} FROM runs WHERE accepted = 1"
        args: list[Any] = []
        if name is not None:
            q += " AND name = ?"
            args.append(name)
        if before is not None:
            q += " AND run_id != ?"
            args.append(before)
        rows = self._q(q + " ORDER BY created DESC LIMIT 1", args)
        return self._row_to_run(rows[0]) if rows else None

    # --- plumbing -----------------------------------------------------------------------------

    def write(self, body: Callable[[], T]) -> T:
        """Run ``body`` (statements through :meth:`execute` / :meth:`executemany`) as one write
        transaction (SQLite: BEGIN IMMEDIATE, so writers queue instead of failing) and return what it
        returns. On PostgreSQL a lost connection (a server restart, a failover) rolls it back and runs
        it again on a new connection, for up to ``retry_s`` seconds: every write evalkit makes is a
        keyed, idempotent transaction, so a retried one never writes anything twice.
        """
        if self._in_tx:
            return body()  # already inside the caller's transaction

        def attempt() -> T:
            self._in_tx = True
            try:
                self._db.begin()
                try:
                    out = body()
                except BaseException:
                    self._db.rollback()
                    raise
                self._db.commit()
                return out
            finally:
                self._in_tx = False

        return self._retrying(attempt)

    def _retrying(self, fn: Callable[[], T]) -> T:
        """``fn()``, reconnecting and calling it again while the connection is lost, up to ``retry_s``."""
        deadline = time.monotonic() + self.retry_s
        delay, told = 0.2, False
        while True:
            try:
                return fn()
            except ConnectionLost as e:
                lost = str(e)
            while True:
                if time.monotonic() + delay > deadline:
                    raise StoreUnavailable(f"lost the connection to the store and could not reconnect within {self.retry_s:.0f} s: "
                                    f"{lost} (retry bound: ${RETRY_ENV})", where=self.path) from None
                if not told:
                    print(f"note: the store's connection was lost ({terminal_safe(lost, one_line=True)}); reconnecting "
                          f"for up to {self.retry_s:.0f} s", file=sys.stderr, flush=True)
                    told = True
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
                try:
                    self._db.reconnect()
                    break
                except ConnectionLost as e:
                    lost = str(e)
            self.reconnects += 1

    def _q(self, sql: str, args: Sequence[Any] = ()) -> list[tuple]:
        if self._in_tx:
            return self._db.execute(sql, args)
        return self._retrying(lambda: self._db.execute(sql, args))

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Iterator[tuple]:
        """Portable SQL (``?`` placeholders), for stages that keep their own tables (review sessions).
        Outside :meth:`write`, a read rides through a lost connection as a write does.
        """
        if self._in_tx:
            return iter(self._q(sql, args))
        return iter(self._retrying(lambda: self._q(sql, args)))

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        rows = list(rows)
        if self._in_tx:
            self._db.executemany(sql, rows)
        else:
            self._retrying(lambda: self._db.executemany(sql, rows))

    def columns(self, table: str) -> set[str]:
        if self._in_tx:
            return self._db.columns(table)
        return self._retrying(lambda: self._db.columns(table))

    def redact(self, text: str | None) -> str | None:
        """An error string as it may be stored: no URL credentials, no configured secret (API keys)."""
        return None if text is None else redact_secrets(redact_userinfo(text), self.secrets)


# --- moving a history between stores ------------------------------------------------------------


@dataclass(frozen=True)
class CopiedTable:
    table: str
    source: int  # rows in the source
    copied: int  # rows new in the destination
    present: int  # rows the destination had already (same key): left as they were


def store_counts(st: Store) -> dict[str, int]:
    """Rows per table (every table but meta)."""
    return {t: next(st.execute(f"SELECT COUNT(*) FROM {t}"))[0] for t in TABLE_KEYS}


def copy_store(src: Store, dst: Store, *, chunk: int = 1000, progress: Callable[[int], None] | None = None) -> list[CopiedTable]:
    """Copy every row of ``src`` into ``dst`` (SQLite -> PostgreSQL, or back) in one transaction.

    Rows whose key ``dst`` holds already are left alone (``ON CONFLICT DO NOTHING``), so copying twice,
    or into a store that shares part of the history, never duplicates anything. Text goes through each
    side's lossless encoding. Verified before the commit: every source row's key is in the destination,
    and each table grew by exactly the rows it did not have; otherwise nothing is committed.
    """
    same = (Path(src.path).resolve() == Path(dst.path).resolve()) if src.dialect == dst.dialect == "sqlite" else str(src.path) == str(dst.path)
    if src.dialect == dst.dialect and same:
        raise UserError("the source and destination are the same store", where="DST")
    out: list[CopiedTable] = []
    done = [0]

    def _body() -> None:
        out.clear()
        if done[0] and progress is not None:
            progress(-done[0])  # a lost connection restarts the copy: the bar starts over too
        done[0] = 0
        for table, key in TABLE_KEYS.items():
            cols = sorted(src.columns(table) & dst.columns(table))
            rows = src._q(f"SELECT {', '.join(cols)} FROM {table}")
            had = {tuple(r) for r in dst._q(f"SELECT {', '.join(key)} FROM {table}")}
            sql = f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({','.join('?' * len(cols))}) ON CONFLICT DO NOTHING"
            for i in range(0, len(rows), chunk):
                dst._db.executemany(sql, rows[i : i + chunk])
                if progress is not None:
                    progress(len(rows[i : i + chunk]))
                    done[0] += len(rows[i : i + chunk])
            at = [cols.index(k) for k in key]
            wanted = {tuple(r[j] for j in at) for r in rows}
            now = {tuple(r) for r in dst._q(f"SELECT {', '.join(key)} FROM {table}")}
            present = len(wanted & had)
            copied = len(now) - len(had)
            if not wanted <= now or copied != len(wanted) - present:
                raise UserError(f"copy check failed for {table}: {len(wanted - now)} source rows missing, {copied} added where "
                                f"{len(wanted) - present} were expected; nothing was committed", where=dst.path)
            out.append(CopiedTable(table, len(rows), copied, present))

    dst.write(_body)
    return out


def _retry_seconds() -> float:
    """``$EVALKIT_STORE_RETRY_S`` (how long a lost connection is retried), default 60 s."""
    raw = os.environ.get(RETRY_ENV)
    if raw is None or raw == "":
        return DEFAULT_RETRY_S
    try:
        value = float(raw)
    except ValueError:
        raise UserError(f"${RETRY_ENV} must be a number of seconds, not {raw!r}") from None
    if not value >= 0:
        raise UserError(f"${RETRY_ENV} must be a number of seconds >= 0, not {raw!r}")
    return value
