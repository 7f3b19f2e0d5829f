"""Fixtures every test folder shares: a real PostgreSQL database for the store (see tests/support/postgres.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from tests.support.postgres import PgTestDatabase, server_error, session_database


@pytest.fixture(scope="session")
def pg_database() -> Iterator[PgTestDatabase]:
    """This pytest session's own database on the local PostgreSQL server (dropped afterwards)."""
    why = server_error()
    if why is not None:
        pytest.skip(why)
    yield from session_database()


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
