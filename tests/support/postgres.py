"""A real PostgreSQL server for the store's tests: one database per pytest session, dropped at the end.

The project's machines run PostgreSQL 15 on 127.0.0.1:5432 with trust auth; ``EVALKIT_TEST_PG`` names
another server (a URL without the database: ``postgresql://user@host:port``). Each test gets its own
schema in the session's database (``search_path`` in the URL), so tests never see each other's rows.
Fixtures: ``pg_database`` (session), ``pg_url`` (a fresh store location on PostgreSQL), ``store_url``
(parametrized: a SQLite file, then a PostgreSQL database).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Iterator

import pytest

SERVER = os.environ.get("EVALKIT_TEST_PG", "postgresql://postgres@127.0.0.1:5432").rstrip("/")


def server_error() -> str | None:
    """Why no PostgreSQL server can be used here, or None when one answers."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install -e '.[postgres]')"
    try:
        with psycopg.connect(f"{SERVER}/postgres", connect_timeout=3):
            return None
    except psycopg.Error as e:
        return f"no PostgreSQL server answers at {SERVER}: {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}"


class PgTestDatabase:
    """A database made for this pytest session; ``schema_url()`` hands out a fresh, empty schema in it."""

    def __init__(self) -> None:
        import psycopg

        self.name = f"evalkit_test_{os.getpid()}_{secrets.token_hex(3)}"
        with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as con:
            con.execute(f'CREATE DATABASE "{self.name}"')
        self.url = f"{SERVER}/{self.name}"

    def schema_url(self) -> str:
        import psycopg

        schema = "t_" + secrets.token_hex(4)
        with psycopg.connect(self.url, autocommit=True) as con:
            con.execute(f'CREATE SCHEMA "{schema}"')
        return f"{self.url}?options=-csearch_path%3D{schema}"

    def drop(self) -> None:
        import psycopg

        with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as con:
            con.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_database() -> Iterator[PgTestDatabase]:
    """This pytest session's own database on the local PostgreSQL server (dropped afterwards)."""
    why = server_error()
    if why is not None:
        pytest.skip(why)
    db = PgTestDatabase()
    try:
        yield db
    finally:
        db.drop()


@pytest.fixture
def pg_url(pg_database: PgTestDatabase) -> str:
    """A fresh, empty store location on PostgreSQL (its own schema in the session's database)."""
    return pg_database.schema_url()


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request, tmp_path: Path) -> str:
    """A fresh store location, once a SQLite file and once a PostgreSQL database: the same tests run on both."""
    if request.param == "sqlite":
        return str(tmp_path / "s.db")
    return request.getfixturevalue("pg_url")


# --- losing the server: a real restart, and a proxy that can drop every connection ----------------


def restart_postgres() -> float:
    """Restart the local PostgreSQL cluster (``pg_ctlcluster VERSION main restart``, fast mode: every
    connection is dropped); seconds it took. Skips when this machine cannot (no cluster, not root).
    """
    import shutil
    import subprocess
    import time

    versions = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
    if not versions or shutil.which("pg_ctlcluster") is None or os.geteuid() != 0 or "EVALKIT_TEST_PG" in os.environ:
        pytest.skip("restarting PostgreSQL needs the local cluster (pg_ctlcluster) and root")
    t0 = time.monotonic()
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "restart", "-m", "fast"],
                   check=True, capture_output=True, timeout=120)
    return time.monotonic() - t0


class TcpProxy:
    """A loopback TCP proxy in front of the PostgreSQL server: ``down()`` drops every connection and
    refuses new ones (the server seen from a client during an outage), ``up()`` serves again on the
    same port. The real server is never touched.
    """

    def __init__(self, target: tuple[str, int] = ("127.0.0.1", 5432)):
        import socket
        import threading

        self.target = target
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._listener: socket.socket | None = None
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self.up()

    def up(self) -> None:
        import socket
        import threading

        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener) -> None:
        import socket
        import threading

        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src, dst) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass

    def down(self) -> None:
        import socket

        if self._listener is not None:
            try:
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
            except OSError:
                pass
            self._listener.close()
            self._listener = None
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass

    def url(self, server_url: str) -> str:
        """``server_url`` (a store URL on the real server) with this proxy's port instead."""
        host = f"127.0.0.1:{self.target[1]}"
        assert host in server_url, server_url
        return server_url.replace(host, f"127.0.0.1:{self.port}")
