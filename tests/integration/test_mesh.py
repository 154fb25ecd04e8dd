"""The actor mesh of a two-worker node: accounts live at their home worker, sessions wherever their
socket was accepted, and stanzas, binds, XEP-0198 acks and resumptions cross between the two.

Which worker accepts a connection is the kernel's choice (both share the listening socket); the
tests use enough accounts that both workers hold sessions and homes, and read the mesh's counters
on the status socket to check that frames really crossed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from lxml import etree

from imactor.cluster.endpoints import MASTER
from imactor.cluster.placement import home
from imactor.cluster.wire import ActorMessage, MembershipChanged
from imactor.cluster.zmq_link import ZmqLink
from tests.integration.conftest import PASSWORD
from tests.integration.test_sasl2 import BIND2, SASL2, SM, Agent, after_success, q, sasl2_stream, scram_login
from tests.integration.test_stream_management import (
    ack,
    drop_connection,
    enable,
    failed_condition,
    login,
    message,
    messages,
    resume,
    tag,
)
from tests.support.raw import RawClient
from tests.support.server import ServerProcess, running_server
from tests.support.timeouts import START_TIMEOUT
from tests.support.timeouts import WORKERS_TIMEOUT as TIMEOUT


def _homed(per_worker: int) -> dict[int, list[str]]:
    """Account names by home worker under the membership (0, 1), `per_worker` each."""
    homed: dict[int, list[str]] = {0: [], 1: []}
    for number in range(1000):
        name = f"mesh{number}"
        if len(homed[home("user", name, (0, 1))]) < per_worker:
            homed[home("user", name, (0, 1))].append(name)
    return homed


HOMED = _homed(4)
USERS = HOMED[0] + HOMED[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    directory = tmp_path_factory.mktemp("mesh-server")
    users = [(name, PASSWORD) for name in USERS]
    extra = "[limits]\nresume_timeout = 30\n"
    with running_server(directory, users=users, workers=2, extra=extra) as process:
        yield process


def status(server: ServerProcess) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "imactor", "status", "--json", "--config", str(server.config_path)],
        capture_output=True, text=True, timeout=START_TIMEOUT, check=True,
    )  # fmt: skip
    doc: dict[str, Any] = json.loads(out.stdout)
    return doc


def mesh_counters(server: ServerProcess) -> dict[int, dict[str, Any]]:
    return {worker["index"]: worker["mesh"] for worker in status(server)["workers"]}


def jid(name: str, resource: str | None = None) -> str:
    return f"{name}@localhost" + (f"/{resource}" if resource else "")


async def available(server: ServerProcess, name: str, resource: str = "raw") -> RawClient:
    client = await login(server, name, resource)
    await client.send("<presence/>")
    own = jid(name, resource)
    await client.next_element(lambda e: e.tag == "{jabber:client}presence" and e.get("from") == own)
    return client


def test_every_account_reaches_every_other_across_workers(server: ServerProcess) -> None:
    before = mesh_counters(server)

    async def scenario() -> None:
        with trio.fail_after(TIMEOUT):
            clients = {name: await available(server, name) for name in USERS}
            for sender, client in clients.items():
                for recipient in USERS:
                    if recipient != sender:
                        await message(client, jid(recipient), f"from {sender}")
            for name, client in clients.items():
                got = sorted(await messages(client, len(USERS) - 1))
                assert got == sorted(f"from {sender}" for sender in USERS if sender != name)
            for client in clients.values():
                await client.aclose()

    trio.run(scenario)
    after = mesh_counters(server)
    assert set(after) == {0, 1}
    for index in (0, 1):
        # Both workers received frames: binds, routes and deliveries crossed in both directions.
        assert after[index]["frames_in"] > before[index]["frames_in"], after
        assert after[index]["decode_errors"] == 0
        assert after[index]["live_workers"] == [0, 1]


def test_subscription_and_presence_cross_workers(server: ServerProcess) -> None:
    alice, bob = HOMED[0][0], HOMED[1][0]

    async def scenario() -> None:
        with trio.fail_after(TIMEOUT):
            a = await available(server, alice)
            b = await available(server, bob)
            await a.send(f"<presence to='{jid(bob)}' type='subscribe'/>")
            await b.next_element(lambda e: e.get("type") == "subscribe" and e.get("from") == jid(alice))
            await b.send(f"<presence to='{jid(alice)}' type='subscribed'/>")
            # RFC 6121 §3.1.6: the subscriber then gets the contact's current presence.
            await a.next_element(lambda e: e.tag.endswith("presence") and e.get("from") == jid(bob, "raw")
                                 and e.get("type") is None)  # fmt: skip
            await b.aclose()
            bob_raw = jid(bob, "raw")
            gone = await a.next_element(lambda e: e.tag.endswith("presence") and e.get("from") == bob_raw)
            assert gone.get("type") == "unavailable"
            await a.aclose()

    trio.run(scenario)


def test_resumption_works_whichever_worker_the_new_connection_lands_on(server: ServerProcess) -> None:
    """A client resumes again and again; each new connection lands on either worker, and the mesh
    counts those that moved the session from the other one (it must happen within the tries)."""
    sender, receiver = HOMED[0][1], HOMED[1][1]
    moved_before = sum(c["resumed_here"] for c in mesh_counters(server).values())

    async def scenario() -> int:
        with trio.fail_after(TIMEOUT * 2):
            other = await available(server, sender)
            client = await login(server, receiver, "phone")
            enabled = await enable(client)
            previd = enabled.get("id")
            assert previd
            handled = 0
            for attempt in range(12):
                await message(other, jid(receiver, "phone"), f"before drop {attempt}")
                assert await messages(client, 1) == [f"before drop {attempt}"]
                handled += 1
                await client.send(f"<a xmlns='urn:xmpp:sm:3' h='{handled}'/>")
                drop_connection(client)
                # Sent while the session is detached: held for the resumption.
                await message(other, jid(receiver, "phone"), f"while detached {attempt}")
                client, answer = await resume(server, receiver, previd, handled)
                assert answer.tag == tag("resumed"), etree.tostring(answer)
                assert answer.get("previd") == previd
                assert await messages(client, 1) == [f"while detached {attempt}"]
                handled += 1
                # The resumed stream is a working session: acks count, messages flow both ways.
                await message(client, jid(sender), f"after resume {attempt}")
                assert await messages(other, 1) == [f"after resume {attempt}"]
                assert await ack(client, until=attempt + 1) == attempt + 1
                if sum(c["resumed_here"] for c in mesh_counters(server).values()) > moved_before:
                    return attempt
            return -1

    attempt = trio.run(scenario)
    assert attempt >= 0, "no resumption landed on the other worker in 12 tries"


def test_sasl2_inline_resumption_works_whichever_worker_the_new_connection_lands_on(
    server: ServerProcess,
) -> None:
    """As above, with XEP-0198 enabled inside Bind 2 and resumed inside a SASL2 <authenticate/>:
    when the detached session lives on the other worker, its state comes over the mesh and the
    <success/> that carries <resumed/> is written here."""
    sender, receiver = HOMED[0][3], HOMED[1][3]
    agent = Agent()
    moved_before = sum(c["resumed_here"] for c in mesh_counters(server).values())

    async def scenario() -> int:
        with trio.fail_after(TIMEOUT * 2):
            other = await available(server, sender)
            client, _ = await sasl2_stream(server)
            bind = f"<bind xmlns='{BIND2}'><tag>Phone</tag><enable xmlns='{SM}' resume='true'/></bind>"
            success = await scram_login(client, receiver, agent.element() + bind)
            full = success.findtext(q(SASL2, "authorization-identifier")) or ""
            enabled = success.find(f"{q(BIND2, 'bound')}/{q(SM, 'enabled')}")
            assert enabled is not None, etree.tostring(success)
            previd = enabled.get("id")
            await after_success(client)
            for attempt in range(12):
                drop_connection(client)
                await message(other, full, f"while detached {attempt}")
                client, _ = await sasl2_stream(server)
                resume_inline = f"<resume xmlns='{SM}' previd='{previd}' h='{attempt}'/>"
                success = await scram_login(client, receiver, agent.element() + resume_inline)
                resumed = success.find(q(SM, "resumed"))
                assert resumed is not None, etree.tostring(success)
                assert success.findtext(q(SASL2, "authorization-identifier")) == full
                await after_success(client)
                assert await messages(client, 1) == [f"while detached {attempt}"]
                if sum(c["resumed_here"] for c in mesh_counters(server).values()) > moved_before:
                    return attempt
            return -1

    attempt = trio.run(scenario)
    assert attempt >= 0, "no resumption landed on the other worker in 12 tries"


def test_a_foreign_or_forged_resumption_id_is_item_not_found(server: ServerProcess) -> None:
    owner, intruder = HOMED[1][2], HOMED[0][2]

    async def scenario() -> None:
        with trio.fail_after(TIMEOUT):
            client = await login(server, owner, "mine")
            previd = (await enable(client)).get("id")
            assert previd
            drop_connection(client)
            # Another account cannot take the session over, on either worker, nor can made-up ids.
            for forged in (previd, "0.forged", "1.forged", "7.x", "nodot", "99999999999.x"):
                for _ in range(2):
                    stranger, answer = await resume(server, intruder, forged, 0)
                    assert failed_condition(answer) == "item-not-found"
                    await stranger.aclose()
            # The owner still can.
            again, answer = await resume(server, owner, previd, 0)
            assert answer.tag == tag("resumed"), etree.tostring(answer)
            await again.aclose()

    trio.run(scenario)


def test_a_frame_that_does_not_decode_is_dropped_and_the_worker_carries_on(server: ServerProcess) -> None:
    workers = status(server)["workers"]
    endpoints = {w["index"]: w["link"]["endpoint"] for w in workers}
    errors_before = {w["index"]: w["mesh"]["decode_errors"] for w in workers}

    async def scenario() -> None:
        with trio.fail_after(TIMEOUT):
            run_dir = Path(endpoints[0].removeprefix("ipc://")).parent
            link = ZmqLink(7, f"ipc://{run_dir / 'test-intruder.sock'}", endpoints)
            async with trio.open_nursery() as nursery:
                await nursery.start(link.run)
                for worker in endpoints:
                    link.send_nowait(worker, ActorMessage("user", USERS[0], "Route", b"\x00\x00\x00\xffjunk"))
                    link.send_nowait(worker, ActorMessage("user", USERS[0], "NoSuchMessage", b""))
                    link.send_nowait(worker, ActorMessage("nobody", "x", "Kick", b""))
                with trio.fail_after(TIMEOUT):
                    while True:
                        counters = mesh_counters(server)
                        if all(counters[w]["decode_errors"] >= errors_before[w] + 3 for w in endpoints):
                            break
                        await trio.sleep(0.1)
                nursery.cancel_scope.cancel()
            # A membership with no live worker (the node going down) places nothing: ignored.
            master = ZmqLink(MASTER, f"ipc://{run_dir / 'test-master.sock'}", endpoints)
            async with trio.open_nursery() as nursery:
                await nursery.start(master.run)
                for worker in endpoints:
                    await master.send(worker, MembershipChanged(2**40, ()))
                with trio.fail_after(TIMEOUT):
                    # Handed to ZeroMQ (the link counts it; there is no event to wait on).
                    while master.statistics().frames_out < 2:  # noqa: ASYNC110
                        await trio.sleep(0.05)
                nursery.cancel_scope.cancel()
            # Both workers still serve.
            for name in (HOMED[0][0], HOMED[1][0]):
                client = await available(server, name)
                await message(client, jid(name), "still here")
                assert await messages(client, 1) == ["still here"]
                await client.aclose()

    trio.run(scenario)
    workers = status(server)["workers"]
    assert all(w["state"] == "running" for w in workers)
    assert all(w["restarts"] == 0 for w in workers)
    assert all(w["mesh"]["epoch"] < 2**40 for w in workers)


def test_status_shows_the_mesh_of_each_worker(server: ServerProcess) -> None:
    counters = mesh_counters(server)
    assert sorted(counters) == [0, 1]
    for index, mesh in counters.items():
        assert mesh["epoch"] >= 1, f"w{index} never heard the node supervisor's membership"
        assert mesh["dropped"] == 0
