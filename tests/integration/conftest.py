"""Fixtures: the real server (`imactor supervise`) on OS-chosen ports, with accounts made by the CLI.

`server` is shared by the tests of one module (start-up costs about a second); tests keep out of
each other's way by using their own accounts from `accounts` (or `user`, from the module's `pool`
made by `account_pool`). A test that needs its own config uses `running_server` directly. `peers`
logs accounts in as raw `Peer`s and closes them after the test. A module whose tests try to break
the server opts in to the `server_alive` check with
``pytestmark = pytest.mark.usefixtures("server_alive")``.
"""

from __future__ import annotations

import itertools
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from tests.support.clients import Clients
from tests.support.peer import Peers
from tests.support.postgres import PostgresServer
from tests.support.server import ServerProcess, add_users, running_server
from tests.support.timeouts import TIMEOUT

PASSWORD = "correct horse battery staple"
_counter = itertools.count()

#: The type of the `accounts` fixture.
Accounts = Callable[..., list[str]]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    directory = tmp_path_factory.mktemp("server")
    with running_server(directory, registration=True) as process:
        yield process


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def server_on_each_backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """The module's server, once on SQLite and once on a database of its own on the session's
    PostgreSQL server (`tests/support/postgres.py`): a module whose tests are about what is
    stored opts in with a `server` fixture that returns this one; its tests then run on both."""
    directory = tmp_path_factory.mktemp(f"server-{request.param}")
    extra = ""
    if request.param == "postgresql":
        postgres: PostgresServer = request.getfixturevalue("postgres")
        extra = f'\n[storage]\nurl = "{postgres.database_url("server")}"\npartitions = 4\n'
    with running_server(directory, registration=True, extra=extra) as process:
        yield process


#: Marks a test of a module on both backends that is about SQLite alone (its files, its backup).
sqlite_server_only = pytest.mark.parametrize("server_on_each_backend", ["sqlite"], indirect=True)


#: Accounts made per bulk creation by `accounts`: each is a database transaction and a SCRAM
#: derivation per account, so one makes a stock for many tests instead of one per test.
STOCK_BATCH = 48


class _Stock:
    """Fresh `user<n>` accounts of one module's server, made `STOCK_BATCH` at a time."""

    def __init__(self, server: ServerProcess) -> None:
        self._server = server
        self._ready: list[str] = []

    def take(self, count: int, prefix: str) -> list[str]:
        if prefix != "user":
            names = [f"{prefix}{next(_counter)}" for _ in range(count)]
            add_users(self._server.config_path, [(name, PASSWORD) for name in names])
            return names
        if len(self._ready) < count:
            batch = [f"user{next(_counter)}" for _ in range(max(STOCK_BATCH, count))]
            add_users(self._server.config_path, [(name, PASSWORD) for name in batch])
            self._ready.extend(batch)
        taken, self._ready = self._ready[:count], self._ready[count:]
        return taken


@pytest.fixture(scope="module")
def _account_stock(server: ServerProcess) -> _Stock:
    return _Stock(server)


@pytest.fixture
def accounts(_account_stock: _Stock) -> Accounts:
    """`accounts(n)` gives n fresh accounts (password `PASSWORD`), never used before, and returns
    their usernames; they come from a stock the module's server made in one bulk creation."""

    def make(count: int = 2, prefix: str = "user") -> list[str]:
        return _account_stock.take(count, prefix)

    return make


def account_pool(server: ServerProcess, prefix: str, count: int) -> Iterator[str]:
    """`count` fresh accounts (password `PASSWORD`) made in one bulk creation: what a module's
    module-scoped `pool` fixture returns, for the `user` fixture to hand out."""
    names = [f"{prefix}{i}" for i in range(count)]
    add_users(server.config_path, [(name, PASSWORD) for name in names])
    return iter(names)


@pytest.fixture
def user(pool: Iterator[str]) -> str:
    """The next fresh account of the module's `pool` fixture."""
    return next(pool)


@pytest.fixture
async def peers(server: ServerProcess, _account_stock: _Stock) -> AsyncIterator[Peers]:
    """Logs accounts of `server` in as `Peer`s (password `PASSWORD`); all are closed after the test.

    Its fresh accounts come from the same stock as `accounts`: `await peers.online_users(2)`,
    `await peers.friends()`, `await peers.devices("phone", "laptop")` (tests/support/peer.py).
    """
    logins = Peers(server.c2s_port, PASSWORD, lambda count: _account_stock.take(count, "user"))
    try:
        yield logins
    finally:
        await logins.aclose()


@pytest.fixture
def clients(server: ServerProcess) -> Clients:
    """Logs accounts of `server` in with slixmpp or aioxmpp (password `PASSWORD`):
    ``async with clients.slixmpp(alice, "pc") as xmpp`` (tests/support/clients.py)."""
    return Clients(server.c2s_port, PASSWORD)


def server_log(server: ServerProcess) -> str:
    return (Path(server.config_path).parent / "server.log").read_text(errors="replace")


def _round_trip(server: ServerProcess) -> None:
    """Open a stream and read the server's features: a full trip through its event loop."""
    with socket.create_connection(("127.0.0.1", server.c2s_port), timeout=TIMEOUT) as sock:
        sock.sendall(b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'"
                     b" to='localhost' version='1.0'>")  # fmt: skip
        received = b""
        while b"</stream:features>" not in received:
            chunk = sock.recv(4096)
            assert chunk, received
            received += chunk


@pytest.fixture
def server_alive(server: ServerProcess) -> Iterator[None]:
    """After the test: the server process runs and logged no crash (a traceback) meanwhile."""
    before = len(server_log(server))
    yield
    assert server.proc.poll() is None, "the server process died"
    _round_trip(server)  # lets the server finish (and log) whatever the test's last step started
    new_log = server_log(server)[before:]
    assert "Traceback" not in new_log, new_log
