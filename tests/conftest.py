"""Fixtures every test directory may use: the throw-away PostgreSQL server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.postgres import PostgresServer, server_or_fail


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One PostgreSQL server per pytest process (each xdist worker starts its own, when it
    first runs a test that needs one), stopped and removed at the end of the session."""
    server = server_or_fail()
    try:
        yield server
    finally:
        server.stop()
