"""Rooms on a two-worker node: fan-out across workers, and a room whose worker is killed.

A room lives on its home worker, `home("room", name)` under the membership (0, 1); occupants'
sessions are placed on a chosen worker with `land_on`. The fan-out test counts the frames the
room's worker sends (status socket, `mesh.frames_out`): one per message for the other worker,
however many occupants live there. The failover test kills the room's worker and checks that
the room comes back at its new home with its configuration, affiliations and history, and that
occupants on the surviving worker are told (status 333) and can join again.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
import trio

from imactor.cluster.placement import home
from imactor.node.status import StatusUnavailable
from tests.integration.conftest import PASSWORD
from tests.support.chaos import kill_worker, land_on, node_status, wait_for_workers, wait_mesh_views
from tests.support.muc import (
    NS_MAM,
    configure,
    create_instant,
    create_without_waiting,
    from_room,
    heard,
    join,
    join_error,
    say,
    status_codes,
)
from tests.support.peer import C, Peer
from tests.support.server import ServerProcess, running_server
from tests.support.timeouts import WORKERS_TIMEOUT as TIMEOUT

pytestmark = pytest.mark.cluster

WORKERS = 2
SERVICE = "conference.localhost"
MESSAGES = 20
LISTENERS = 4


def room_homed_on(worker: int, prefix: str) -> str:
    name = next(f"{prefix}{n}" for n in range(10_000) if home("room", f"{prefix}{n}", (0, 1)) == worker)
    return f"{name}@{SERVICE}"


async def peer_on(server: ServerProcess, worker: int, username: str) -> Peer:
    open_ = partial(Peer.online, server.c2s_port, username, PASSWORD, "r")
    return await land_on(server.status_socket, worker, open_, Peer.aclose)


async def frames_out(path: Path, worker: int) -> int:
    document = await node_status(path)
    entry = next(w for w in document["workers"] if w["index"] == worker)
    return int(entry["mesh"]["frames_out"])


def account_homed_on(worker: int, prefix: str) -> str:
    return next(f"{prefix}{n}" for n in range(10_000) if home("user", f"{prefix}{n}", (0, 1)) == worker)


# The speaker's session and account on the room's worker: its own traffic crosses nothing.
SPEAKER = account_homed_on(0, "fan")
LISTENER_NAMES = [f"listen{n}" for n in range(LISTENERS)]
#: An account whose actor lives on worker 1, for a session on worker 0.
FAR_FROM_HOME = account_homed_on(1, "roamer")


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A two-worker node shared by the tests that kill no worker."""
    users = [(name, PASSWORD) for name in (SPEAKER, *LISTENER_NAMES, FAR_FROM_HOME)]
    with running_server(tmp_path_factory.mktemp("node"), users=users, workers=WORKERS) as server:
        yield server


async def test_a_broadcast_costs_one_frame_per_worker(node: ServerProcess) -> None:
    room = room_homed_on(0, "fanout")
    with trio.fail_after(TIMEOUT):
        path = node.status_socket
        await wait_for_workers(path, WORKERS)
        speaker = await peer_on(node, 0, SPEAKER)
        listeners = [await peer_on(node, 1, name) for name in LISTENER_NAMES]
        await create_instant(speaker, room, "speaker")
        for n, listener in enumerate(listeners, 1):
            await join(listener, room, f"listener{n}")
        before = await frames_out(path, 0)
        for n in range(MESSAGES):
            await say(speaker, room, f"to all {n}")
        for listener in listeners:
            got = [(await heard(listener, room, f"to all {n}")).findtext(f"{C}body") for n in range(MESSAGES)]
            assert got == [f"to all {n}" for n in range(MESSAGES)]
        await heard(speaker, room, f"to all {MESSAGES - 1}")
        sent = await frames_out(path, 0) - before
        # One Fanout frame per message for worker 1 (a frame per occupant would be 4 per message);
        # a few more for other traffic of the node (presence, pings) are tolerated.
        assert MESSAGES <= sent < MESSAGES + 5, f"{sent} frames, {MESSAGES} messages, {LISTENERS} occupants"
        for peer in (speaker, *listeners):
            await peer.aclose()


async def test_a_join_and_the_requests_behind_it_stay_in_order_across_workers(node: ServerProcess) -> None:
    """RFC 6120 §10.1 on a node: the client's session on worker 0, its account's actor on
    worker 1, a room on each worker. The join went session → account (worker 1) → room, and
    the configuration request sent right behind it went session → room, and came first: it got
    item-not-found and the room stayed locked. Now both take the same path."""
    with trio.fail_after(TIMEOUT):
        await wait_for_workers(node.status_socket, WORKERS)
        client = await peer_on(node, 0, FAR_FROM_HOME)
        for worker in (0, 1):
            await create_without_waiting(client, room_homed_on(worker, "inorder"), "roamer", f"w{worker}")
        await client.aclose()


async def test_a_room_comes_back_after_its_worker_dies(tmp_path: Path) -> None:
    users = [(name, PASSWORD) for name in ("owner", "member", "outsider")]
    room = room_homed_on(1, "survivor")
    with running_server(tmp_path, users=users, workers=WORKERS) as server, trio.fail_after(TIMEOUT):
        path = server.status_socket
        await wait_for_workers(path, WORKERS)
        owner = await peer_on(server, 0, "owner")
        member = await peer_on(server, 0, "member")
        await create_instant(owner, room, "boss")
        reply = await configure(owner, room, {"muc#roomconfig_roomname": "Survivors",
                                              "muc#roomconfig_persistentroom": "1",
                                              "muc#roomconfig_membersonly": "1"})  # fmt: skip
        assert reply.get("type") == "result"
        granted = await owner.iq("<query xmlns='http://jabber.org/protocol/muc#admin'>"
                                 "<item affiliation='member' jid='member@localhost'/></query>",
                                 type_="set", to=room)  # fmt: skip
        assert granted.get("type") == "result"
        await join(member, room, "mem")
        for n in range(3):
            await say(owner, room, f"before {n}")
            await heard(member, room, f"before {n}")

        await kill_worker(path, WORKERS, index=1)

        # Both occupants live on the survivor: each is told it left, with 333.
        for peer, nick in ((owner, "boss"), (member, "mem")):
            gone = await peer.expect(lambda e, nick=nick: e.get("from") == f"{room}/{nick}"  # type: ignore[misc]
                                     and e.get("type") == "unavailable")  # fmt: skip
            assert {"110", "333"} <= status_codes(gone)
        # Once every worker sees the replacement live, the room comes back at its home. (Joins
        # that race the room's move back home are another scenario: see test_occupants_stay_...)
        await wait_mesh_views(path, live=[0, 1])
        # Back, from storage: history, configuration and affiliations.
        again = await join(member, room, "mem", history="<history maxstanzas='10'/>")
        assert [m.findtext(f"{C}body") for m in again.history] == [f"before {n}" for n in range(3)]
        outsider = await peer_on(server, 0, "outsider")
        assert await join_error(outsider, room, "nobody") == "registration-required"
        info = await owner.iq("<query xmlns='http://jabber.org/protocol/disco#info'/>", to=room)
        identity = info.find(".//{http://jabber.org/protocol/disco#info}identity")
        assert identity is not None
        assert identity.get("name") == "Survivors"
        await join(owner, room, "boss")
        await say(owner, room, "after")
        await heard(member, room, "after")
        await owner.send(f"<iq type='set' id='mam' to='{room}'><query xmlns='{NS_MAM}'/></iq>")
        results = await owner.before(lambda e: e.tag == f"{C}iq" and e.get("id") == "mam")
        archived = [r for r in results if from_room(room)(r) and r.find(f"{{{NS_MAM}}}result") is not None]
        bodies = [r.findtext(f".//{C}body") for r in archived]
        assert bodies == ["before 0", "before 1", "before 2", "after"]
        for peer in (owner, member, outsider):
            await peer.aclose()


async def test_occupants_stay_when_the_room_moves_back_to_its_home(tmp_path: Path) -> None:
    """The room's home dies; while it is down the room runs on the survivor; when the home's
    replacement joins, the room moves back (`HandOff` → `RoomMoved`) with its occupants, who
    keep talking without joining again."""
    names = [n for n in (f"stay{i}" for i in range(10_000)) if home("user", n, (0, 1)) == 0][:2]
    room = room_homed_on(1, "mover")
    with running_server(tmp_path, users=[(n, PASSWORD) for n in names], workers=WORKERS) as server:
        with trio.fail_after(TIMEOUT):
            path = server.status_socket
            await wait_for_workers(path, WORKERS)
            first, second = [await peer_on(server, 0, name) for name in names]
            worker = (await wait_for_workers(path, WORKERS))[1]
            # Worker 0 hands nothing off while worker 1 is down (everything then lives at home
            # on 0): the count now is the one before the room's move.
            handoffs = await mesh_counter(path, 0, "handoffs")
            os.kill(int(worker["pid"]), signal.SIGKILL)
            await wait_membership(path, [0])
            # The node supervisor starts worker 1 again at once; on a loaded machine the room's
            # creation could take longer than that start, and the room would then be made at its
            # home with nothing to move. So the supervisor waits, stopped, until the room lives
            # on the survivor (worker 0 needs nothing from it meanwhile).
            os.kill(server.proc.pid, signal.SIGSTOP)
            try:
                await create_instant(first, room, "first")
                await join(second, room, "second")
            finally:
                os.kill(server.proc.pid, signal.SIGCONT)
            await wait_membership(path, [0, 1])
            await wait_counter(path, 0, "handoffs", handoffs + 1)
            await say(first, room, "after the move")
            got = await heard(second, room, "after the move")
            assert got.get("from") == f"{room}/first"
            # Nobody was told to leave: the room kept its occupants across the move.
            for peer in (first, second):
                assert not [e for e in peer.inbox if "333" in status_codes(e)]
                await peer.aclose()


async def wait_membership(path: Path, live: list[int]) -> None:
    while True:
        with contextlib.suppress(StatusUnavailable):
            if (await node_status(path))["supervisor"]["membership"]["live_workers"] == live:
                return
        await trio.sleep(0.02)


async def mesh_counter(path: Path, worker: int, name: str) -> int:
    document = await node_status(path)
    entry = next(w for w in document["workers"] if w["index"] == worker)
    return int(entry["mesh"][name])


async def wait_counter(path: Path, worker: int, name: str, at_least: int) -> None:
    while True:
        if await mesh_counter(path, worker, name) >= at_least:
            return
        await trio.sleep(0.05)
