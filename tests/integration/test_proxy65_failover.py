"""The XEP-0065 proxy's worker dies (SIGKILL of worker 0, which runs the SOCKS5 side): the
streams it held are cut, its successor accepts on the port the node supervisor kept, and
transfers work again, activated from either worker. A module of its own: the kill logs the
worker's exit, which the other proxy tests' `server_alive` check would take for a crash."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import trio

from tests.integration.test_proxy65 import (
    PROXY_CONFIG,
    receive_until_closed,
    relay_round,
    sha1_hash,
    socks_connect,
)
from tests.support.chaos import kill_worker, wait_mesh_views
from tests.support.peer import Peers
from tests.support.server import ServerProcess, running_server
from tests.support.timeouts import START_TIMEOUT, TIMEOUT


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    directory = tmp_path_factory.mktemp("proxy65-failover")
    with running_server(directory, workers=2, extra=PROXY_CONFIG) as process:
        yield process


async def test_the_proxy_comes_back_with_its_worker(server: ServerProcess, peers: Peers) -> None:
    with trio.fail_after(START_TIMEOUT + TIMEOUT):
        waiting = await socks_connect(server, sha1_hash("cut", "a@localhost/x", "b@localhost/y"))
        kill = await kill_worker(server.status_socket, 2, index=0)
        assert kill.new_pid != kill.pid
        assert await receive_until_closed(waiting) == b""  # cut with its worker
        await waiting.aclose()
        await wait_mesh_views(server.status_socket, live=[0, 1])
        for round_ in range(3):
            requester, target = await peers.online_users(2)
            await relay_round(server, requester, target, f"after-kill{round_}")
