"""Fixtures: a fresh SQLite database per test, in the test's temporary directory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from imactor.storage import Storage

#: Fewer PBKDF2 rounds than production keeps the account tests fast; the value is still stored
#: and checked, so the parameter is exercised.
FAST_ITERATIONS = 512


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'db' / 'imactor.sqlite3'}"


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
