"""SIGTERM: every connected client gets <system-shutdown/>, then the process exits 0.

Each test runs its own server: the signal ends it.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import trio

from tests.support.clients import (
    raw_connect,
    raw_starttls,
    run,
    slixmpp_client,
    stream_errors,
    wait_disconnected,
)
from tests.support.raw import RawClient
from tests.support.server import ServerProcess, running_server
from tests.support.timeouts import TIMEOUT

USERS = [("alice", "pw-a"), ("bob", "pw-b")]


async def _exit_code(server: ServerProcess, timeout: float = 15.0) -> int | None:
    return await trio.to_thread.run_sync(lambda: server.proc.wait(timeout))


async def test_sigterm_ends_every_stream(tmp_path: Path) -> None:
    with running_server(tmp_path, users=USERS) as server, trio.fail_after(TIMEOUT):
        bound = await raw_connect(server.c2s_port)
        assert await bound.login("alice", "pw-a", "desk") == "alice@localhost/desk"
        direct = await raw_connect(server.c2s_tls_port, direct_tls=True)
        assert await direct.login("bob", "pw-b", "phone") == "bob@localhost/phone"
        unauthenticated = await raw_connect(server.c2s_port)
        await raw_starttls(unauthenticated)
        cleartext = await raw_connect(server.c2s_port)
        await cleartext.open_stream()
        clients: list[RawClient] = [bound, direct, unauthenticated, cleartext]

        server.proc.send_signal(signal.SIGTERM)

        for client in clients:
            assert await client.stream_error() == "system-shutdown"
            await client.wait_closed()
            assert client.closed
        assert await _exit_code(server) == 0
        for client in clients:
            await client.aclose()
        # Nothing listens any more.
        try:
            late = await trio.open_tcp_stream("127.0.0.1", server.c2s_port)
        except OSError:
            pass
        else:
            await late.aclose()
            raise AssertionError("the c2s port still accepts connections after exit")


def test_sigterm_with_slixmpp_clients(tmp_path: Path) -> None:
    with running_server(tmp_path, users=USERS) as server:

        async def scenario() -> int | None:
            async with (
                slixmpp_client("alice@localhost/a", "pw-a", server.c2s_port) as alice,
                slixmpp_client("bob@localhost/b", "pw-b", server.c2s_tls_port, direct_tls=True) as bob,
            ):
                server.proc.send_signal(signal.SIGTERM)
                await wait_disconnected(alice, 15)
                await wait_disconnected(bob, 15)
                assert stream_errors(alice) == ["system-shutdown"]
                assert stream_errors(bob) == ["system-shutdown"]
            return await asyncio.get_running_loop().run_in_executor(None, server.proc.wait, 15)

        assert run(scenario()) == 0
