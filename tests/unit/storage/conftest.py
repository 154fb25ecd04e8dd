"""Fixtures: a fresh database per test, on each backend: a SQLite file in the test's temporary
directory, and a schema of its own on the session's throw-away PostgreSQL server
(`tests/support/postgres.py`). Tests of what only SQLite has (its files, their modes, WAL,
its backup API, its locks) take `sqlite_url` instead of `db_url` and run once."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.pool import NullPool

from imactor.storage import Storage
from tests.support.postgres import PostgresServer

#: Fewer PBKDF2 rounds than production keeps the account tests fast; the value is still stored
#: and checked, so the parameter is exercised.
FAST_ITERATIONS = 512


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite database file (not created yet), for the SQLite-only tests."""
    return f"sqlite:///{tmp_path / 'db' / 'imactor.sqlite3'}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, sqlite_url: str) -> Iterator[str]:
    """A fresh, empty database on each backend."""
    if request.param == "sqlite":
        yield sqlite_url
        return
    server: PostgresServer = request.getfixturevalue("postgres")
    schema, url = server.schema_url()
    try:
        yield url
    finally:
        server.drop_schema(schema)


#: Marks a test of what only SQLite has (its files and their modes, WAL, its locks, the inline
#: path on the loop's thread): `db_url` and `storage` are then SQLite's alone.
sqlite_only = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


@pytest.fixture
async def storage(db_url: str) -> AsyncIterator[Storage]:
    opened = await Storage.open(db_url)
    try:
        yield opened
    finally:
        await opened.aclose()


@pytest.fixture
async def alice(storage: Storage) -> str:
    """An existing account for the per-account stores."""
    await storage.accounts.create("alice", "secret", iterations=FAST_ITERATIONS)
    return "alice"


def execute(url: str, sql: str) -> list[tuple[object, ...]]:
    """Run one statement on the database at `url` (either backend), outside imactor, and commit."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.begin() as conn:
            result = conn.execute(text(sql))
            return [tuple(row) for row in result] if result.returns_rows else []
    finally:
        engine.dispose()


def table_names(url: str) -> set[str]:
    engine = create_engine(url, poolclass=NullPool)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
