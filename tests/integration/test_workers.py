"""The node's process tree with real processes: a supervisor and its workers, killed and hung.

Each test runs its own `imactor supervise` (it kills or signals processes). Waits on the other
processes poll the status socket in bounded loops (there is no event to await across processes),
and every test runs under `trio.fail_after`.
"""

from __future__ import annotations

import base64
import os
import signal
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import trio
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from lxml import etree

from imactor import tls
from tests.integration.conftest import PASSWORD
from tests.support.chaos import land_on
from tests.support.raw import RawClient, assert_pong
from tests.support.server import ServerProcess, running_server
from tests.support.timeouts import WORKERS_TIMEOUT as TIMEOUT

#: Most logins tried before every worker holds a session (the kernel picks the accepting worker).
MAX_SPREAD = 40
USERS = [("alice", PASSWORD), ("bob", PASSWORD)]


async def status(server: ServerProcess) -> dict[str, Any]:
    return await trio.to_thread.run_sync(server.status)


async def wait_status(server: ServerProcess, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """Poll the status socket until `predicate` holds (the caller's fail_after bounds it)."""
    while True:
        document = await status(server)
        if predicate(document):
            return document
        await trio.sleep(0.1)


def title(pid: int) -> str:
    """The process title as /proc shows it (setproctitle rewrites the command line)."""
    return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode().strip()


def is_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def log_count(server: ServerProcess, text: str) -> int:
    return (server.config_path.parent / "server.log").read_text(errors="replace").count(text)


async def wait_log(server: ServerProcess, text: str, count: int) -> None:
    while log_count(server, text) < count:  # noqa: ASYNC110 - the log is written by other processes
        await trio.sleep(0.05)


@asynccontextmanager
async def clients_on_every_worker(server: ServerProcess) -> AsyncIterator[list[RawClient]]:
    """Logged-in clients, as many as it takes for every worker to hold at least one."""
    clients: list[RawClient] = []
    try:
        for number in range(MAX_SPREAD):
            client = await RawClient.connect(server.c2s_port)
            clients.append(client)
            await client.login("alice", PASSWORD, f"r{number}")
            workers = (await status(server))["workers"]
            if all(worker["sessions"]["by_state"].get("established", 0) for worker in workers):
                break
        else:
            raise AssertionError(f"{MAX_SPREAD} connections, and a worker got none")
        yield clients
    finally:
        for client in clients:
            await client.aclose()


async def answers(client: RawClient) -> bool:
    """Whether the client's stream still works (a ping comes back); False once it was cut."""
    try:
        await assert_pong(client)
    except (EOFError, trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError):
        return False
    return True


async def login_works(server: ServerProcess, resource: str) -> None:
    client = await RawClient.connect(server.c2s_port)
    try:
        assert await client.login("bob", PASSWORD, resource) == f"bob@localhost/{resource}"
        await assert_pong(client)
    finally:
        await client.aclose()


async def authentication_works(server: ServerProcess) -> None:
    """A new connection is accepted and served up to SASL success (all within the accepting
    worker: no other worker, alive or not, takes part)."""
    client = await RawClient.connect(server.c2s_port)
    try:
        await client.starttls()
        token = base64.b64encode(f"\0bob\0{PASSWORD}".encode()).decode()
        await client.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>")
        assert (await client.next_element()).tag == "{urn:ietf:params:xml:ns:xmpp-sasl}success"
    finally:
        await client.aclose()


def running(
    index: int, *, other_than: int, live: list[int] | None = None
) -> Callable[[dict[str, Any]], bool]:
    """Worker `index` runs in a new process (and, given `live`, the supervisor has announced it)."""

    def check(document: dict[str, Any]) -> bool:
        worker = document["workers"][index]
        if live is not None and document["supervisor"]["membership"]["live_workers"] != live:
            return False
        return bool(worker["state"] == "running" and worker["pid"] not in (None, other_than))

    return check


async def test_a_killed_worker_is_replaced_and_the_others_serve_on(tmp_path: Path) -> None:
    with running_server(tmp_path, users=USERS, workers=2) as server, trio.fail_after(TIMEOUT):
        document = await status(server)
        workers = document["workers"]
        assert [w["index"] for w in workers] == [0, 1]
        assert [w["state"] for w in workers] == ["running", "running"]
        pids = [w["pid"] for w in workers]
        assert len(set(pids)) == 2
        assert server.proc.pid not in pids
        assert [title(pid) for pid in pids] == ["imactor-worker[0]", "imactor-worker[1]"]
        assert title(server.proc.pid) == "imactor-supervisor"
        assert document["supervisor"]["membership"] == {"epoch": 1, "live_workers": [0, 1]}

        async with clients_on_every_worker(server) as clients:
            os.kill(pids[0], signal.SIGKILL)
            # New connections succeed while worker 0 restarts: worker 1 accepts them, and the
            # supervisor's listening socket keeps any that arrive in between.
            for _ in range(4):
                await authentication_works(server)
            alive = [client for client in clients if await answers(client)]
            # Worker 0's clients were cut; worker 1's did not notice.
            assert 0 < len(alive) < len(clients)

            restarted_and_announced = running(0, other_than=pids[0], live=[0, 1])
            document = await wait_status(server, restarted_and_announced)
            restarted, untouched = document["workers"]
            assert restarted["restarts"] == 1
            assert restarted["last_exit_signal"] == signal.SIGKILL
            assert title(restarted["pid"]) == "imactor-worker[0]"
            assert (untouched["pid"], untouched["restarts"]) == (pids[1], 0)
            assert document["supervisor"]["restarts_total"] == 1
            # Down, then back: two more membership epochs, all workers live again.
            assert document["supervisor"]["membership"] == {"epoch": 3, "live_workers": [0, 1]}
            await login_works(server, "after")
            for client in alive:
                await assert_pong(client)
            # XEP-0012: the server's uptime is the node's, on the replacement worker too.
            open_bob = partial(bob_online, server)
            on_replacement = await land_on(server.status_socket, 0, open_bob, RawClient.aclose)
            node_uptime = (await status(server))["node"]["uptime"]
            assert await server_uptime(on_replacement) >= int(node_uptime) - 1
            await on_replacement.aclose()
        assert is_gone(pids[0])


async def bob_online(server: ServerProcess) -> RawClient:
    client = await RawClient.connect(server.c2s_port)
    await client.login("bob", PASSWORD, "uptime")
    return client


async def server_uptime(client: RawClient) -> int:
    """XEP-0012 §4: the server's uptime, asked of its domain."""
    reply = await client.iq("<query xmlns='jabber:iq:last'/>", to="localhost")
    query = reply.find("{jabber:iq:last}query")
    assert query is not None, etree.tostring(reply)
    return int(query.get("seconds", "-1"))


async def test_a_hung_worker_is_killed_and_replaced(tmp_path: Path) -> None:
    with running_server(tmp_path, users=USERS, workers=2) as server, trio.fail_after(TIMEOUT):
        pids = [w["pid"] for w in (await status(server))["workers"]]
        os.kill(pids[1], signal.SIGSTOP)  # alive, but its event loop answers nothing
        try:
            # Its own status socket does not answer either: the supervisor says so.
            hung = await wait_status(server, lambda d: d["workers"][1]["state"] == "unresponsive")
            assert hung["workers"][1]["pid"] == pids[1]
            assert hung["workers"][0]["state"] == "running"
            await authentication_works(server)
            # Health ping every second, pong due within 5 s: killed and replaced.
            document = await wait_status(server, running(1, other_than=pids[1]))
        finally:
            if not is_gone(pids[1]):
                os.kill(pids[1], signal.SIGCONT)
        assert document["workers"][1]["restarts"] == 1
        assert document["workers"][1]["last_exit_signal"] == signal.SIGKILL
        assert document["workers"][0]["pid"] == pids[0]
        assert log_count(server, "unresponsive: no pong") == 1
        await login_works(server, "after")


async def test_a_restart_storm_exhausts_the_budget_and_the_node_exits_3(tmp_path: Path) -> None:
    extra = "[supervision]\nintensity = 2\nperiod = 60\n"
    with running_server(tmp_path, users=USERS, extra=extra) as server, trio.fail_after(TIMEOUT):
        (worker,) = (await status(server))["workers"]
        # Every new worker now fails at start (it reads the config file), so the supervisor
        # restarts it again and again, until the budget runs out.
        server.config_path.write_text("this is not [toml\n")
        os.kill(worker["pid"], signal.SIGKILL)
        code = await trio.to_thread.run_sync(server.proc.wait)
        assert code == 3
        assert log_count(server, "restart budget exceeded") >= 1
        assert not server.status_socket.exists()
        assert is_gone(worker["pid"])


async def test_sigterm_stops_every_worker_and_every_stream(tmp_path: Path) -> None:
    with running_server(tmp_path, users=USERS, workers=2) as server, trio.fail_after(TIMEOUT):
        pids = [w["pid"] for w in (await status(server))["workers"]]
        async with clients_on_every_worker(server) as clients:
            server.proc.send_signal(signal.SIGTERM)
            for client in clients:
                assert await client.stream_error() == "system-shutdown"
            assert await trio.to_thread.run_sync(server.proc.wait) == 0
        assert all(is_gone(pid) for pid in pids)
        assert not server.status_socket.exists()


def _write_pair(directory: Path) -> bytes:
    """A fresh self-signed certificate and key at the configured paths; returns the DER."""
    cert_pem, key_pem = tls.generate_self_signed("localhost")
    (directory / "key.pem").write_bytes(key_pem)
    (directory / "cert.pem").write_bytes(cert_pem)
    return x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)


async def _presented(server: ServerProcess) -> tuple[bytes, str | None]:
    """A new direct-TLS connection: the certificate it sees and the max-bytes it is offered."""
    client = await RawClient.connect(server.c2s_tls_port, direct_tls=True)
    try:
        assert isinstance(client.stream, trio.SSLStream)
        der = client.stream.getpeercert(binary_form=True)
        features = await client.open_stream()
        max_bytes = features.findtext(".//{urn:xmpp:stanza-limits:0}max-bytes")
    finally:
        await client.aclose()
    assert der is not None
    return der, max_bytes


async def test_sighup_reloads_certificate_and_limits_without_dropping_sessions(tmp_path: Path) -> None:
    first = _write_pair(tmp_path)
    extra = (
        f'[tls]\ncertificate = "{tmp_path / "cert.pem"}"\nkey = "{tmp_path / "key.pem"}"\n'
        "[limits]\nmax_stanza_size = 100000\n"
    )
    with (
        running_server(tmp_path, users=USERS, workers=2, extra=extra, log_level="info") as server,
        trio.fail_after(TIMEOUT),
    ):
        assert await _presented(server) == (first, "100000")
        async with clients_on_every_worker(server) as clients:
            second = _write_pair(tmp_path)
            config = server.config_path.read_text()
            server.config_path.write_text(config.replace("100000", "120000"))
            server.proc.send_signal(signal.SIGHUP)
            await wait_log(server, "configuration reloaded", 2)  # one line per worker
            for _ in range(6):  # whichever worker accepts
                assert await _presented(server) == (second, "120000")
            for client in clients:
                await assert_pong(client)  # the sessions opened before are still there

            # A config that does not load is reported, and the running one stays.
            server.config_path.write_text("this is not [toml\n")
            server.proc.send_signal(signal.SIGHUP)
            await wait_log(server, "reload failed, keeping the running configuration", 2)
            for _ in range(4):
                assert await _presented(server) == (second, "120000")
            for client in clients:
                await assert_pong(client)
            server.config_path.write_text(config)  # so that the shutdown reads a good file
