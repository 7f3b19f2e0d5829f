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
