"""Failover of a two-worker node, seen by clients (docs/design.md, "The failover promise").

When a worker is killed with SIGKILL: sessions on the surviving worker go on without a break,
even when their accounts' user actors lived on the dead one; the killed worker's users go
unavailable to their contacts and come back when they log in again; and a user actor that lived
on the dead worker is re-activated from storage elsewhere and comes back to its home's
replacement with its state (roster, block list, offline messages, online sessions).

Each test runs its own server and kills worker `KILLED`; `SURVIVOR` holds the sessions that must
not notice. Which worker a connection lands on is the kernel's choice: `land_on` tries until the
status socket shows the new session on the wanted worker. Accounts are picked by their home
worker under the membership (0, 1) (`imactor.cluster.placement.home`). Waits on the server poll
its status socket in bounded loops; every test runs under `trio.fail_after`.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from imactor.cluster.placement import home
from imactor.node.status import StatusUnavailable
from tests.integration.conftest import PASSWORD
from tests.support.chaos import SmClient, kill_worker, land_on, node_status, wait_for_workers, wait_mesh_views
from tests.support.peer import Element, Match, Peer, any_message, bare, message, presence, show, subscribe
from tests.support.raw import PING
from tests.support.server import ServerProcess, running_server
from tests.support.timeouts import WORKERS_TIMEOUT as TIMEOUT

#: Seconds for an expected stanza to arrive (after a failover, too).
EXPECT_TIMEOUT = 15
WORKERS = 2
SURVIVOR, KILLED = 0, 1
#: Messages written at once by a sender that keeps an account busy across a move.
BURST = 5
NS_BLOCKING = "urn:xmpp:blocking"
NS_DISCO = "http://jabber.org/protocol/disco#info"
NS_ROSTER = "jabber:iq:roster"


def homed_on(worker: int, prefix: str, count: int = 1) -> list[str]:
    """`count` account names whose user actors live on `worker` while both workers run."""
    names = (f"{prefix}{number}" for number in range(10_000))
    return [name for name in names if home("user", name, (0, 1)) == worker][:count]


async def expect_within(peer: Peer, match: Match, what: str, seconds: float = EXPECT_TIMEOUT) -> Element:
    """`peer.expect(match)`, failing after `seconds` with what the peer got meanwhile."""
    with trio.move_on_after(seconds):
        return await peer.expect(match)
    raise AssertionError(f"{peer.jid}: no {what} within {seconds} s; got {[show(e) for e in peer.inbox]}")


async def peer_on(server: ServerProcess, worker: int, username: str, resource: str) -> Peer:
    """`username` online (roster requested, initial presence sent) with its session on `worker`."""
    open_ = partial(Peer.online, server.c2s_port, username, PASSWORD, resource)
    return await land_on(server.status_socket, worker, open_, Peer.aclose)


def sm_opener(nursery: trio.Nursery, server: ServerProcess, username: str,
              available: bool = True) -> Callable[[], Awaitable[SmClient]]:  # fmt: skip
    async def open_() -> SmClient:
        client = SmClient(username, PASSWORD, server.c2s_port, available=available)
        await nursery.start(client.run)
        return client

    return open_


async def wait_membership(path: Path, done: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """Poll the status socket until the supervisor's announced membership satisfies `done`."""
    while True:
        with contextlib.suppress(StatusUnavailable):
            membership: dict[str, Any] = (await node_status(path))["supervisor"]["membership"]
            if done(membership):
                return membership
        await trio.sleep(0.05)


async def pong_times(client: SmClient, stop: trio.Event, times: list[float]) -> None:
    """XEP-0199 pings to the server, one every 0.1 s until `stop`; each round trip in `times`."""
    while not stop.is_set():
        started = trio.current_time()
        reply = await client.iq(PING, to="localhost")
        assert reply.get("type") == "result", show(reply)
        times.append(trio.current_time() - started)
        with trio.move_on_after(0.1):
            await stop.wait()


async def chat_steadily(sender: SmClient, to: str, pair: int, stop: trio.Event) -> None:
    n = 0
    while not stop.is_set():
        n += 1
        await sender.send_chat(to, pair, n)
        with trio.move_on_after(0.05):
            await stop.wait()


# ---- (a) sessions on a surviving worker -----------------------------------------------------------


async def test_sessions_on_a_surviving_worker_see_no_interruption(tmp_path: Path) -> None:
    """Two pairs chat and ping from sessions on the survivor, with XEP-0198: one pair's user
    actors live on the killed worker, the other's on the survivor. Neither connection drops, no
    ping goes unanswered, every message arrives live (not from offline storage)."""
    away_a, away_b = homed_on(KILLED, "faraway", 2)  # sessions here, user actors on the killed worker
    home_a, home_b = homed_on(SURVIVOR, "athome", 2)
    (victim,) = homed_on(KILLED, "victim")
    users = [(name, PASSWORD) for name in (away_a, away_b, home_a, home_b, victim)]
    with running_server(tmp_path, users=users, workers=WORKERS) as server, trio.fail_after(TIMEOUT):
        path = server.status_socket
        await wait_for_workers(path, WORKERS)
        async with trio.open_nursery() as nursery:
            close = SmClient.aclose
            clients = {
                name: await land_on(path, SURVIVOR, sm_opener(nursery, server, name), close)
                for name in (away_a, away_b, home_a, home_b)
            }
            cut = await land_on(path, KILLED, sm_opener(nursery, server, victim), close)
            pairs = [(clients[away_a], clients[away_b]), (clients[home_a], clients[home_b])]
            stop = trio.Event()
            rtts: list[float] = []
            async with trio.open_nursery() as traffic:
                for number, (sender, receiver) in enumerate(pairs):
                    traffic.start_soon(chat_steadily, sender, receiver.bare, number, stop)
                    traffic.start_soon(pong_times, receiver, stop, rtts)
                for sender, _ in pairs:
                    await sender.wait_acked(20)
                kill = await kill_worker(path, WORKERS, index=KILLED)
                for sender, _ in pairs:
                    await sender.wait_acked(len(sender.books.acked) + 40)
                stop.set()
            for sender, _ in pairs:
                assert await sender.wait_all_acked(20), sender.unacked
            await cut.wait_ready()
            for client in [*clients.values(), cut]:
                await client.aclose()
    print(f"worker {KILLED} replaced after {kill.replaced_after:.2f} s; {len(rtts)} pings, "
          f"slowest {max(rtts) * 1000:.0f} ms")  # fmt: skip
    assert cut.books.drops, "the session on the killed worker was not cut"
    for name, client in clients.items():
        assert client.books.drops == [], f"{name}'s connection dropped"
        assert [c.how for c in client.books.connections] == ["login"], name
        assert client.books.stream_errors == [], name
    for number, (sender, receiver) in enumerate(pairs):
        live = {r.n for r in receiver.books.receipts if r.pair == number and r.how == "live"}
        others = [r for r in receiver.books.receipts if r.how != "live"]
        assert sender.books.acked == set(sender.books.sent)
        missing = sorted(sender.books.acked - live)
        assert not missing, f"pair {number}: acked, not received live: {missing}; other receipts: {others}"
        assert others == [], others
    assert max(rtts) < 5.0, max(rtts)


# ---- (b) presence of the killed worker's users ------------------------------------------------------


@pytest.mark.parametrize(
    ("victim_home", "watcher_home"),
    [(KILLED, SURVIVOR), (SURVIVOR, KILLED)],
    ids=["victim-homed-on-killed", "victim-homed-on-survivor"],
)
async def test_presence_of_the_killed_workers_users_goes_unavailable_and_back(
    tmp_path: Path, victim_home: int, watcher_home: int
) -> None:
    """The victim's session is on the killed worker, the watcher's on the survivor; they are
    subscribed to each other. One of their user actors dies with the worker too."""
    (victim,) = homed_on(victim_home, "victim")
    (watcher,) = homed_on(watcher_home, "watcher")
    users = [(victim, PASSWORD), (watcher, PASSWORD)]
    with running_server(tmp_path, users=users, workers=WORKERS) as server, trio.fail_after(TIMEOUT):
        await wait_for_workers(server.status_socket, WORKERS)
        w = await peer_on(server, SURVIVOR, watcher, "desk")
        v = await peer_on(server, KILLED, victim, "phone")
        await subscribe(w, v)
        await subscribe(v, w)
        await kill_worker(server.status_socket, WORKERS, index=KILLED)
        await expect_within(
            w, presence(from_=v.jid, type_="unavailable"), "unavailable presence from the victim"
        )
        await v.raw.wait_closed()
        await v.aclose()
        back = await Peer.online(server.c2s_port, victim, PASSWORD, "phone")
        await expect_within(w, presence(from_=back.jid), "available presence from the victim")
        await expect_within(back, presence(from_=w.jid), "the watcher's presence (a probe's answer)")
        items = await w.roster_items()
        assert items[back.bare].get("subscription") == "both", show(items[back.bare])
        pong = await w.iq(PING, to="localhost")  # the watcher's stream never broke
        assert pong.get("type") == "result", show(pong)
        await back.aclose()
        await w.aclose()


# ---- (c) a user actor moves and comes back ------------------------------------------------------


async def test_a_user_actor_moves_and_comes_back_with_its_state(tmp_path: Path) -> None:
    """`homer`'s user actor lives on the killed worker while his session is on the survivor; `away`
    (also homed there) is offline with messages waiting. After the kill, while the worker is down
    and once it is replaced, both accounts' actors are re-activated from storage and know what
    they knew: roster (names, groups, subscriptions), block list, offline messages, and homer's
    online session and its presence."""
    homer, away = homed_on(KILLED, "homer", 2)  # `away` has no subscriptions
    (friend,) = homed_on(SURVIVOR, "friend")
    spammer = "spammer@localhost"
    users = [(homer, PASSWORD), (away, PASSWORD), (friend, PASSWORD)]
    with running_server(tmp_path, users=users, workers=WORKERS) as server, trio.fail_after(TIMEOUT):
        path = server.status_socket
        await wait_for_workers(path, WORKERS)
        f = await peer_on(server, SURVIVOR, friend, "desk")
        h = await peer_on(server, SURVIVOR, homer, "desk")
        await subscribe(h, f)
        await subscribe(f, h)
        pushed = await h.roster_set(f"<item jid='{f.bare}' name='Friend'><group>Work</group></item>")
        assert pushed.get("type") == "result", show(pushed)
        blocked = await h.iq(f"<block xmlns='{NS_BLOCKING}'><item jid='{spammer}'/></block>", type_="set")
        assert blocked.get("type") == "result", show(blocked)
        for text in ("before-1", "before-2"):
            await f.send(f"<message to='{bare(away)}' type='chat' id='{text}'><body>{text}</body></message>")
        await f.iq(f"<query xmlns='{NS_DISCO}'/>", to=bare(away))  # an answer from away's actor: stored
        h.inbox.clear()
        f.inbox.clear()

        before = await node_status(path)
        pid = next(w["pid"] for w in before["workers"] if w["index"] == KILLED)
        epoch = before["supervisor"]["membership"]["epoch"]
        os.kill(pid, signal.SIGKILL)
        # Once the node knows (a new membership epoch): stanzas for both accounts, which the
        # survivor handles (their temporary home) or holds until the replacement is back.
        membership = await wait_membership(path, lambda m: m["epoch"] > epoch)
        print(f"membership when the stanzas were sent: {membership}")
        await f.send(f"<message to='{bare(homer)}' type='chat' id='during'><body>during</body></message>")
        await f.send(f"<message to='{bare(away)}' type='chat' id='during-away'><body>during</body></message>")
        answer = await f.iq(f"<query xmlns='{NS_DISCO}'/>", to=bare(homer))
        assert answer.get("type") == "result", show(answer)
        await wait_for_workers(path, WORKERS, not_pids=[pid])

        await f.send(f"<message to='{bare(homer)}' type='chat' id='after'><body>after</body></message>")
        for message_id in ("during", "after"):
            got = await expect_within(h, message(id_=message_id), f"message {message_id!r}")
            assert got.find("{urn:xmpp:delay}delay") is None, show(got)  # live, not from storage
        items = await h.roster_items()
        item = items[f.bare]
        assert (item.get("name"), item.get("subscription"), item.findtext(f"{{{NS_ROSTER}}}group")) == (
            "Friend", "both", "Work")  # fmt: skip
        blocklist = await h.iq(f"<blocklist xmlns='{NS_BLOCKING}'/>")
        assert [i.get("jid") for i in blocklist.iter(f"{{{NS_BLOCKING}}}item")] == [spammer], show(blocklist)
        # Presence both ways: homer's actor knows his session and his subscribers.
        await h.send("<presence><show>away</show></presence>")
        seen = await expect_within(f, presence(from_=h.jid), "homer's new presence")
        assert seen.findtext("{jabber:client}show") == "away", show(seen)
        await f.send("<presence><show>dnd</show></presence>")
        seen = await expect_within(h, presence(from_=f.jid), "friend's new presence")
        assert seen.findtext("{jabber:client}show") == "dnd", show(seen)

        a = await Peer.online(server.c2s_port, away, PASSWORD, "laptop")
        offline = [await expect_within(a, any_message, "offline messages") for _ in range(3)]
        bodies = [m.findtext("{jabber:client}body", "") for m in offline]
        assert sorted(bodies) == ["before-1", "before-2", "during"], bodies
        pong = await h.iq(PING, to="localhost")  # homer's stream never broke
        assert pong.get("type") == "result", show(pong)
        for peer in (a, h, f):
            await peer.aclose()


async def test_messages_to_an_account_moving_back_home_arrive_live(tmp_path: Path) -> None:
    """`homer`'s actor lives on the killed worker; his session, and his friend's, on the survivor.
    While the killed worker's replacement joins and the account moves back home, friend sends him
    a steady stream of messages: each one arrives live (none stored offline for an account
    whose session never left, none bounced), in order. The account's new home must not handle a
    message before it knows the resources its previous home had."""
    (homer,) = homed_on(KILLED, "mover")
    (friend,) = homed_on(SURVIVOR, "sender")
    users = [(homer, PASSWORD), (friend, PASSWORD)]
    with running_server(tmp_path, users=users, workers=WORKERS) as server, trio.fail_after(TIMEOUT):
        path = server.status_socket
        await wait_for_workers(path, WORKERS)
        f = await peer_on(server, SURVIVOR, friend, "desk")
        h = await peer_on(server, SURVIVOR, homer, "desk")
        before = await node_status(path)
        pid = next(w["pid"] for w in before["workers"] if w["index"] == KILLED)
        epoch = before["supervisor"]["membership"]["epoch"]
        os.kill(pid, signal.SIGKILL)
        # From the moment the survivor knows: no message is sent to the dead worker (one would
        # wait for its successor, out of order with those the survivor handles meanwhile).
        await wait_membership(path, lambda m: m["epoch"] > epoch)
        await wait_mesh_views(path, live=[SURVIVOR], seen_by=[SURVIVOR])
        sent, got = 0, list[Element]()
        replaced, all_sent, all_received = trio.Event(), trio.Event(), trio.Event()

        async def replacement() -> None:
            await wait_for_workers(path, WORKERS, not_pids=[pid])
            replaced.set()

        async def receive() -> None:
            while not all_sent.is_set() or len(got) < sent:
                got.append(await h.expect(message()))
            all_received.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(replacement)
            nursery.start_soon(receive)
            # Bursts of messages every 10 ms while the replacement starts and 1 s after it is up:
            # some land in the moment the account moves back home.
            deadline = math.inf
            while trio.current_time() < deadline:
                burst = [f"<message to='{bare(homer)}' type='chat' id='m{n}'><body>{n}</body></message>"
                         for n in range(sent + 1, sent + 1 + BURST)]  # fmt: skip
                sent += BURST
                await f.send("".join(burst))
                await trio.sleep(0.01)
                if replaced.is_set() and deadline == math.inf:
                    deadline = trio.current_time() + 1.0
            all_sent.set()
            with trio.move_on_after(EXPECT_TIMEOUT):
                await all_received.wait()
            nursery.cancel_scope.cancel()
        ids = [m.get("id") for m in got]
        missing = sorted(set(range(1, sent + 1)) - {int(i[1:]) for i in ids if i})
        assert not missing, f"{len(missing)} of {sent} messages never arrived live: {missing[:20]}"
        expected = [f"m{n}" for n in range(1, sent + 1)]
        first = next((n for n, (a, b) in enumerate(zip(ids, expected, strict=True)) if a != b), None)
        assert first is None, f"out of order from the {first + 1}th: {ids[max(0, first - 3) : first + 8]}"
        stored = [m.get("id") for m in got if m.find("{urn:xmpp:delay}delay") is not None]
        assert stored == [], f"delivered from offline storage instead of live: {stored}"
        assert not [e for e in f.inbox if e.get("type") == "error"], [show(e) for e in f.inbox]
        for peer in (h, f):
            await peer.aclose()
