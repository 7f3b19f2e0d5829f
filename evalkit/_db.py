"""The two databases a store can live in: a SQLite file (embedded, the default) or a PostgreSQL server.

The store writes one portable SQL: ``?`` placeholders, ``INSERT ... ON CONFLICT``, ``substr``,
``COALESCE``; this module turns it into each driver's dialect and makes untrusted text round-trip
losslessly in both. SQLite keeps text UTF-8 cannot encode (a lone surrogate from a model) as its
surrogatepass bytes in the same column; PostgreSQL's TEXT refuses NUL and lone surrogates, so such a
value is stored as ``U+FFFF`` + its ASCII JSON (and so is any value that itself starts with U+FFFF,
a noncharacter, so the form is unambiguous). Readers never see either form.
"""

from __future__ import annotations

import functools
import json
import re
import sqlite3
from pathlib import Path
from typing import Any, Iterable, Sequence

from ._util.location import StoreLocation, is_postgres_url
from ._util.text import encodable, terminal_safe
from .errors import UserError

_MARK = "\uffff"


def libpq_url(value: str) -> str:
    """The URL libpq takes (checked strictly): SQLAlchemy's ``postgresql+psycopg://`` spelling becomes ``postgresql://``."""
    try:
        return StoreLocation.parse(value).url
    except ValueError as e:
        raise UserError(f"store: {e}") from None


def display_url(value: str) -> str:
    """A PostgreSQL URL safe to print or store: the user stays, the password and secret options go."""
    try:
        return StoreLocation.parse(value).display
    except ValueError:
        return re.sub(r"//[^/@\s]*@", "//***@", value)


class ConnectionLost(Exception):
    """The connection to the database server went away (a restart, a failover, a network blip).

    The store retries the whole transaction on a new connection (every write is an idempotent,
    keyed transaction), so nothing is written twice; it gives up after its retry bound.
    """


class Database:
    """A connection in one dialect: ``execute`` / ``executemany`` take portable SQL with ``?``."""

    dialect = ""
    where: str | Path = ""
    raw: Any = None  # the driver's own connection

    def execute(self, sql: str, args: Sequence[Any] = ()) -> list[tuple]:
        raise NotImplementedError

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        raise NotImplementedError

    _begin = "BEGIN"

    def begin(self) -> None:
        self.raw.execute(self._begin)

    def commit(self) -> None:
        self.raw.execute("COMMIT")

    def rollback(self) -> None:
        self.raw.execute("ROLLBACK")

    def close(self) -> None:
        self.raw.close()

    def has_table(self, name: str) -> bool:
        raise NotImplementedError

    def columns(self, table: str) -> set[str]:
        raise NotImplementedError

    def reconnect(self) -> None:
        """A new connection after :class:`ConnectionLost` (a file database never loses it)."""
        raise NotImplementedError

    def lock_schema(self) -> None:
        """Inside a transaction: keep other processes out of schema creation until it ends."""

    def ddl(self, sql: str) -> str:
        return sql


class SQLiteDatabase(Database):
    dialect = "sqlite"
    _begin = "BEGIN IMMEDIATE"  # take the write lock now: writers queue instead of failing mid-transaction

    def __init__(self, path: Path):
        self.where = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.raw = sqlite3.connect(str(path), timeout=30.0, isolation_level=None, check_same_thread=False)
        self.raw.execute("PRAGMA journal_mode=WAL")
        self.raw.execute("PRAGMA synchronous=NORMAL")
        self.raw.execute("PRAGMA busy_timeout=30000")

    @staticmethod
    def _arg(v: Any) -> Any:
        return v.encode("utf-8", "surrogatepass") if isinstance(v, str) and not encodable(v) else v

    @staticmethod
    def _row(row: tuple) -> tuple:
        if any(isinstance(v, bytes) for v in row):
            return tuple(v.decode("utf-8", "surrogatepass") if isinstance(v, bytes) else v for v in row)
        return row

    def execute(self, sql: str, args: Sequence[Any] = ()) -> list[tuple]:
        return [self._row(r) for r in self.raw.execute(sql, [self._arg(a) for a in args]).fetchall()]

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self.raw.executemany(sql, ([self._arg(a) for a in r] for r in rows))

    def has_table(self, name: str) -> bool:
        return bool(self.raw.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone())

    def columns(self, table: str) -> set[str]:
        return {r[1] for r in self.raw.execute(f"PRAGMA table_info({table})")}


@functools.lru_cache(maxsize=256)
def _pg_sql(sql: str) -> str:
    return sql.replace("%", "%%").replace("?", "%s")


def _pg_arg(v: Any) -> Any:
    if isinstance(v, str) and ("\x00" in v or v.startswith(_MARK) or not encodable(v)):
        return _MARK + json.dumps(v)
    return v


def _pg_row(row: tuple) -> tuple:
    if any(isinstance(v, str) and v.startswith(_MARK) for v in row):
        return tuple(json.loads(v[1:]) if isinstance(v, str) and v.startswith(_MARK) else v for v in row)
    return row


def _pg_message(e: BaseException) -> str:
    """Libpq's message, first meaningful line: 'connection to server at ... failed: Connection refused'."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    text = " ".join(lines) if lines else type(e).__name__
    text = re.sub(r"^(connection failed: )", "", text)
    return terminal_safe(text, one_line=True)


class PostgresDatabase(Database):
    dialect = "postgresql"

    def __init__(self, url: str, *, connect_timeout: int = 10):
        try:
            import psycopg
        except ImportError as e:
            from .errors import missing_extra

            raise missing_extra("a PostgreSQL store", "postgres", e) from None
        self.where = display_url(url)
        self._psycopg = psycopg
        self._url, self._timeout = libpq_url(url), connect_timeout
        try:
            self.raw = self._connect()
        except psycopg.OperationalError as e:
            msg = _pg_message(e)
            hint = ""
            if "does not exist" in msg and "database" in msg:
                hint = " (create it first: createdb, or CREATE DATABASE)"
            elif "password" in msg:
                hint = " (a password comes from PGPASSWORD or ~/.pgpass, never from a log)"
            raise UserError(f"cannot connect to the PostgreSQL store: {msg}{hint}", where=self.where) from None

    def _connect(self) -> Any:
        return self._psycopg.connect(self._url, autocommit=True, connect_timeout=self._timeout, application_name="evalkit")

    def _lost(self, e: BaseException) -> bool:
        """Whether ``e`` means the connection is gone (not a bad statement on a live one)."""
        return isinstance(e, (self._psycopg.OperationalError, self._psycopg.InterfaceError)) and bool(self.raw.closed or self.raw.broken)

    def _failed(self, e: BaseException) -> Exception:
        if self._lost(e):
            return ConnectionLost(_pg_message(e))
        return UserError(f"the PostgreSQL store failed: {_pg_message(e)}", where=self.where)

    def reconnect(self) -> None:
        try:
            self.raw.close()
        except Exception:  # the old connection is dead either way
            pass
        try:
            self.raw = self._connect()
        except self._psycopg.OperationalError as e:  # still restarting ("the database system is starting up"), or down
            raise ConnectionLost(_pg_message(e)) from None

    def _run(self, statement: str) -> None:
        try:
            self.raw.execute(statement)
        except (self._psycopg.OperationalError, self._psycopg.InterfaceError) as e:
            raise self._failed(e) from None

    def begin(self) -> None:
        self._run(self._begin)

    def commit(self) -> None:
        self._run("COMMIT")

    def rollback(self) -> None:
        if self.raw.closed or self.raw.broken:
            return  # nothing to roll back: the server dropped the transaction with the connection
        self._run("ROLLBACK")

    def close(self) -> None:
        try:
            self.raw.close()
        except Exception:  # closing a dead connection must not hide the error that killed it
            pass

    def execute(self, sql: str, args: Sequence[Any] = ()) -> list[tuple]:
        try:
            cur = self.raw.execute(_pg_sql(sql), [_pg_arg(a) for a in args])
            return [] if cur.description is None else [_pg_row(r) for r in cur.fetchall()]
        except (self._psycopg.OperationalError, self._psycopg.InterfaceError) as e:
            raise self._failed(e) from None

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        try:
            with self.raw.cursor() as cur:
                cur.executemany(_pg_sql(sql), [[_pg_arg(a) for a in r] for r in rows])
        except (self._psycopg.OperationalError, self._psycopg.InterfaceError) as e:
            raise self._failed(e) from None

    def has_table(self, name: str) -> bool:
        return bool(self.execute("SELECT 1 FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = ?", (name,)))

    def columns(self, table: str) -> set[str]:
        return {r[0] for r in self.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = ?", (table,))}

    def lock_schema(self) -> None:
        self.raw.execute("SELECT pg_advisory_xact_lock(727174)")  # evalkit's schema lock, one per database

    def ddl(self, sql: str) -> str:
        # REAL is 4 bytes in PostgreSQL: timestamps and latencies need DOUBLE PRECISION; counts BIGINT.
        # Text sorts by code point, as in SQLite, not by the server's locale: the same ORDER BY gives
        # the same order (items, verdicts) on both stores.
        sql = re.sub(r"\bREAL\b", "DOUBLE PRECISION", re.sub(r"\bINTEGER\b", "BIGINT", sql))
        return re.sub(r"\bTEXT\b", 'TEXT COLLATE "C"', sql)


def connect(location: str | Path) -> Database:
    """A SQLite file path or a PostgreSQL URL, opened."""
    text = str(location)
    if is_postgres_url(text):
        return PostgresDatabase(text)
    try:
        return SQLiteDatabase(Path(text))
    except sqlite3.DatabaseError as e:
        raise UserError(f"cannot open the store: {e}", where=text) from None
