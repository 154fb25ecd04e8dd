"""BOSH on a two-worker node: a session lives on the worker that created it (its sid says which),
and requests that the kernel hands to the other worker are forwarded to it over the actor mesh.

`BoshClient` opens a new TCP connection per request, so the kernel spreads its requests over both
workers. Which worker took a request is read on the status socket: the mesh counts the requests a
worker forwarded (`bosh_forwarded`) and those it served for another one (`bosh_served`). Polls of
the status socket are bounded loops (no event crosses processes); every test runs under
`trio.fail_after`.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from lxml import etree

from tests.integration.conftest import PASSWORD
from tests.support.peer import Peer, message
from tests.support.server import ServerProcess, running_server
from tests.support.timeouts import WORKERS_TIMEOUT as TIMEOUT
from tests.support.web_clients import SM, BoshClient, show, tag

#: Most tries at getting a request onto a given worker (the kernel chooses; each try is a coin toss).
MAX_TRIES = 30
USERS = [(f"bw{i}", PASSWORD) for i in range(8)]
PING = "<iq xmlns='jabber:client' type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>"
UNAVAILABLE = "<presence xmlns='jabber:client' type='unavailable'/>"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    directory = tmp_path_factory.mktemp("bosh-workers")
    with running_server(directory, users=USERS, workers=2) as process:
        yield process


async def status(server: ServerProcess) -> dict[str, Any]:
    return await trio.to_thread.run_sync(server.status)


async def counters(server: ServerProcess) -> dict[int, tuple[int, int]]:
    """(requests forwarded, requests served for the other worker), by worker."""
    workers = (await status(server))["workers"]
    return {w["index"]: (w["mesh"]["bosh_forwarded"], w["mesh"]["bosh_served"]) for w in workers}


def owner(client: BoshClient) -> int:
    assert client.sid is not None
    prefix, dot, _ = client.sid.partition(".")
    assert dot, client.sid
    assert prefix.isdigit(), client.sid
    return int(prefix)


async def forwarded_by(server: ServerProcess, worker: int) -> int:
    return (await counters(server))[worker][0]


def ids(answer: etree._Element) -> list[str | None]:
    return [e.get("id") for e in answer]


async def held_round(server: ServerProcess, client: BoshClient, tcp: Peer, number: int) -> bool:
    """One empty request, held until a message from `tcp` arrives. True: it was held on the other
    worker's behalf (forwarded, seen on the status socket before the message was sent) and
    carried the message; False: the owner took it itself and answered it empty after 'wait'."""
    other = 1 - owner(client)
    before = await forwarded_by(server, other)
    answers: list[etree._Element] = []
    sent = False
    async with trio.open_nursery() as nursery:

        async def poll() -> None:
            answers.append(await client.send_body(client.body()))

        nursery.start_soon(poll)
        while not answers:
            if await forwarded_by(server, other) > before:
                await tcp.send(f"<message to='{client.jid}' id='held{number}' type='chat'><body/></message>")
                sent = True
                break
            await trio.sleep(0.05)
    (answer,) = answers
    if not sent:
        assert len(answer) == 0, show(answer)
        return False
    assert ids(answer) == [f"held{number}"], show(answer)
    return True


async def test_a_session_is_served_by_both_workers(server: ServerProcess) -> None:
    """Login, chat both ways, held requests and a repeated rid, with requests on both workers."""
    with trio.fail_after(TIMEOUT):
        start = await counters(server)
        client = BoshClient(server.http_port)
        jid = await client.login("bw0", PASSWORD, "bosh")
        assert jid == "bw0@localhost/bosh"
        home, other = owner(client), 1 - owner(client)
        tcp = await Peer.login(server.c2s_port, "bw1", PASSWORD, "desk")
        try:
            for n in range(4):
                await client.post(f"<message xmlns='jabber:client' to='{tcp.jid}' id='b{n}' type='chat'>"
                                  "<body>from bosh</body></message>")  # fmt: skip
                got = await tcp.expect(message(id_=f"b{n}"))
                assert got.get("from") == jid
                await tcp.send(f"<message to='{jid}' id='t{n}' type='chat'><body>from tcp</body></message>")
                back = await client.expect(lambda e, n=n: e.get("id") == f"t{n}")  # type: ignore[misc]
                assert back.get("from") == tcp.jid

            # XEP-0124 §7: a request held on the owner for the other worker carries the message.
            for n in range(MAX_TRIES):
                if await held_round(server, client, tcp, n):
                    break
            else:
                raise AssertionError("no held request reached the other worker")

            # §14.3: a request repeated on the other worker gets the answer the first copy got.
            data = client.body(PING)
            before = await forwarded_by(server, other)
            first = await client.send_body(data)
            first_elsewhere = await forwarded_by(server, other) > before
            assert ids(first) == ["p1"], show(first)
            for _ in range(MAX_TRIES):
                before = await forwarded_by(server, other)
                again = await client.send_body(data)
                assert show(again) == show(first)
                if (await forwarded_by(server, other) > before) != first_elsewhere:
                    break
            else:
                raise AssertionError("the repeat never reached the other worker")

            # Stream management works across the two as well.
            await client.post(f"<enable xmlns='{SM}'/>")
            await client.expect(lambda e: e.tag == tag(SM, "enabled"))
            await client.post(f"<r xmlns='{SM}'/>")
            ack = await client.expect(lambda e: e.tag == tag(SM, "a"))
            assert ack.get("h") == "0", show(ack)
            answer = await client.post(UNAVAILABLE, type="terminate")
            assert (answer.get("type"), answer.get("condition")) == ("terminate", None)
            after = await client.post()
            assert (after.get("type"), after.get("condition")) == ("terminate", "item-not-found")
        finally:
            await tcp.aclose()
        end = await counters(server)
        # Both workers served this client: the other one forwarded requests, the owner served them.
        forwarded = end[other][0] - start[other][0]
        assert forwarded > 0
        assert end[home][1] - start[home][1] == forwarded
        assert end[home][0] == start[home][0]  # the owner forwards nothing of its own sessions


async def bosh_on(server: ServerProcess, worker: int, username: str) -> BoshClient:
    """A logged-in BOSH client whose session the worker `worker` owns (sessions are created where
    the kernel hands the first request; those created elsewhere are ended and tried again)."""
    for _ in range(MAX_TRIES):
        client = BoshClient(server.http_port)
        await client.login(username, PASSWORD, f"r{client.rid}")
        if owner(client) == worker:
            return client
        await client.post(type="terminate")
    raise AssertionError(f"no session created on worker {worker}")


def workers_live(document: dict[str, Any], pid: int) -> bool:
    """Both workers run, the killed one replaced, and each knows the other is live."""
    workers = document["workers"]
    return all(
        w["state"] == "running" and w["pid"] not in (None, pid) and w["mesh"]["live_workers"] == [0, 1]
        for w in workers
    )


def is_dead(pid: int) -> bool:
    """Gone, or a zombie that its supervisor has not reaped yet."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


async def wait_dead(pid: int) -> None:
    """Poll /proc until `pid` has died (no event crosses processes; the caller bounds it)."""
    while True:
        if is_dead(pid):
            return
        await trio.sleep(0.01)


async def wait_status(server: ServerProcess, check: Any) -> dict[str, Any]:
    while True:
        document = await status(server)
        if check(document):
            return document
        await trio.sleep(0.1)


@pytest.mark.cluster
async def test_a_session_whose_worker_was_killed_ends_and_a_new_one_starts(server: ServerProcess) -> None:
    """XEP-0124 §17.2: the owner's death ends its sessions: `remote-connection-failed` while it is
    down (or `item-not-found` from its successor), `item-not-found` once it is replaced; the
    client then starts a new session."""
    with trio.fail_after(TIMEOUT):
        victim = owner(first := await bosh_on(server, 0, "bw2"))
        second = await bosh_on(server, victim, "bw3")
        pid = (await status(server))["workers"][victim]["pid"]
        os.kill(pid, signal.SIGKILL)
        await wait_dead(pid)  # so that no request of ours reaches it any more

        gone = await first.post()  # reaches the survivor (or waits in the backlog for the successor)
        assert gone.get("type") == "terminate", show(gone)
        assert gone.get("condition") in ("remote-connection-failed", "item-not-found"), show(gone)

        await wait_status(server, lambda document: workers_live(document, pid))
        for _ in range(4):  # wherever the request lands, the session is unknown
            after = await second.post()
            assert (after.get("type"), after.get("condition")) == ("terminate", "item-not-found"), show(after)

        second.sid = None
        jid = await second.login("bw3", PASSWORD, "again")
        assert jid == "bw3@localhost/again"
        tcp = await Peer.login(server.c2s_port, "bw4", PASSWORD, "desk")
        try:
            await tcp.send(f"<message to='{jid}' id='back1' type='chat'><body>welcome back</body></message>")
            got = await second.expect(lambda e: e.get("id") == "back1")
            assert got.findtext("{jabber:client}body") == "welcome back"
        finally:
            await tcp.aclose()
        await second.post(type="terminate")
