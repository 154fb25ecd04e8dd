"""Fixtures: the real server (`imactor supervise`) on OS-chosen ports, with accounts made by the CLI.

`server` is shared by the tests of one module (start-up costs about a second); tests keep out of
each other's way by using their own accounts from `accounts`. A test that needs its own config
uses `running_server` directly.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.server import ServerProcess, add_users, running_server

PASSWORD = "correct horse battery staple"
_counter = itertools.count()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    directory = tmp_path_factory.mktemp("server")
    with running_server(directory, registration=True) as process:
        yield process


@pytest.fixture
def accounts(server: ServerProcess) -> Callable[..., list[str]]:
    """`accounts(n)` creates n fresh accounts (password `PASSWORD`) and returns their usernames."""

    def make(count: int = 2, prefix: str = "user") -> list[str]:
        names = [f"{prefix}{next(_counter)}" for _ in range(count)]
        add_users(server.config_path, [(name, PASSWORD) for name in names])
        return names

    return make


def server_log(server: ServerProcess) -> str:
    return (Path(server.config_path).parent / "server.log").read_text(errors="replace")
