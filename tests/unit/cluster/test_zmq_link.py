"""ZmqLink over real ZeroMQ: ipc:// in tmp_path and tcp://127.0.0.1 on OS-chosen ports.

Every test runs under `trio.fail_after`; none sleeps. Waiting is on the data itself (a message
that follows another on the same pipe proves the first was handled) or on
`wait_all_tasks_blocked`.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio.testing
import zmq

from imactor.cluster.wire import ActorMessage, Envelope, Heartbeat, MembershipChanged, Message, encode
from imactor.cluster.zmq_link import UnknownPeer, ZmqLink

TIMEOUT = 30
N = 10_000


def numbered(seq: int) -> ActorMessage:
    return ActorMessage("user", f"u{seq % 7}@example.com", "stanza", seq.to_bytes(4, "big"))


def seq_of(envelope: Envelope) -> int:
    assert isinstance(envelope.message, ActorMessage)
    return int.from_bytes(envelope.message.body, "big")


@pytest.fixture
def ipc_dir(tmp_path: Path) -> Iterator[Path]:
    """tmp_path, unless it is too long for a unix socket path (108 bytes with the name)."""
    if len(str(tmp_path)) < 80:
        yield tmp_path
    else:  # pragma: no cover - depends on the test name and the machine
        with tempfile.TemporaryDirectory(prefix="imz") as short:
            yield Path(short)


EndpointFactory = Callable[[int], str]


@pytest.fixture(params=["ipc", "tcp"])
def endpoint(request: pytest.FixtureRequest, ipc_dir: Path) -> EndpointFactory:
    """worker → a bind endpoint: ipc://<tmp>/w<N>.sock, or tcp://127.0.0.1:0 (OS-chosen port)."""
    if request.param == "ipc":
        return lambda worker: f"ipc://{ipc_dir}/w{worker}.sock"
    return lambda worker: "tcp://127.0.0.1:0"


@asynccontextmanager
async def running(*links: ZmqLink) -> AsyncIterator[trio.Nursery]:
    """Run `links` (fully meshed by their bound endpoints) until the block ends."""
    async with trio.open_nursery() as nursery:
        for link in links:
            await nursery.start(link.run)
        for link in links:
            for other in links:
                if other is not link and other.worker not in link.peers:
                    link.add_peer(other.worker, other.bound_endpoint)
        yield nursery
        nursery.cancel_scope.cancel()


async def send_numbered(link: ZmqLink, peer: int, count: int, start: int = 0) -> None:
    """Queue without waiting while there is room, wait only when the outbox is full."""
    for seq in range(start, start + count):
        try:
            link.send_nowait(peer, numbered(seq))
        except trio.WouldBlock:
            await link.send(peer, numbered(seq))


async def receive_numbered(link: ZmqLink, count: int) -> dict[int, list[int]]:
    """source → sequence numbers, in arrival order."""
    seen: dict[int, list[int]] = {}
    for _ in range(count):
        envelope = await link.receive_channel.receive()
        seen.setdefault(envelope.source, []).append(seq_of(envelope))
    return seen


# ---- binding ------------------------------------------------------------------------------------


async def test_bind_to_an_os_chosen_tcp_port_and_report_it() -> None:
    with trio.fail_after(TIMEOUT):
        link = ZmqLink(0, "tcp://127.0.0.1:0")
        with pytest.raises(RuntimeError, match="not bound"):
            _ = link.bound_endpoint
        async with trio.open_nursery() as nursery:
            started = await nursery.start(link.run)
            assert started == link.bound_endpoint
            host, _, port = link.bound_endpoint.rpartition(":")
            assert host == "tcp://127.0.0.1"
            assert int(port) > 0
            assert link.statistics().endpoint == link.bound_endpoint
            nursery.cancel_scope.cancel()


async def test_bind_to_ipc_in_a_directory(ipc_dir: Path) -> None:
    with trio.fail_after(TIMEOUT):
        link = ZmqLink(0, f"ipc://{ipc_dir}/w0.sock")
        async with trio.open_nursery() as nursery:
            assert await nursery.start(link.run) == f"ipc://{ipc_dir}/w0.sock"
            assert (ipc_dir / "w0.sock").is_socket()
            nursery.cancel_scope.cancel()
        # libzmq leaves the socket file behind; a restarted worker's bind replaces it.
        again, sender = ZmqLink(0, f"ipc://{ipc_dir}/w0.sock"), ZmqLink(1, f"ipc://{ipc_dir}/w1.sock")
        async with running(again, sender):
            sender.send_nowait(0, numbered(5))
            assert await receive_numbered(again, 1) == {1: [5]}


async def test_bad_endpoints_raise_from_run_and_add_peer() -> None:
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            first = ZmqLink(0, "tcp://127.0.0.1:0")
            await nursery.start(first.run)
            with pytest.raises(OSError, match="cannot bind") as caught:
                await nursery.start(ZmqLink(1, first.bound_endpoint).run)
            assert caught.value.errno is not None
            with pytest.raises(ValueError, match="cannot connect to w1"):
                await nursery.start(ZmqLink(2, "tcp://127.0.0.1:0", {1: "bogus://nowhere"}).run)
            with pytest.raises(ValueError, match="cannot connect to w3"):
                first.add_peer(3, "tcp://127.0.0.1")  # no port
            assert 3 not in first.peers
            with pytest.raises(ValueError, match="this worker"):
                first.add_peer(0, "tcp://127.0.0.1:1")
            first.add_peer(4, "tcp://127.0.0.1:1")
            with pytest.raises(ValueError, match="already a peer"):
                first.add_peer(4, "tcp://127.0.0.1:2")
            nursery.cancel_scope.cancel()


# ---- traffic ------------------------------------------------------------------------------------


async def test_two_links_exchange_ten_thousand_messages_each_way(endpoint: EndpointFactory) -> None:
    with trio.fail_after(TIMEOUT):
        a, b = ZmqLink(0, endpoint(0)), ZmqLink(1, endpoint(1))
        results: dict[int, dict[int, list[int]]] = {}

        async def receive(link: ZmqLink) -> None:
            results[link.worker] = await receive_numbered(link, N)

        async with running(a, b), trio.open_nursery() as traffic:
            traffic.start_soon(receive, a)
            traffic.start_soon(receive, b)
            traffic.start_soon(send_numbered, a, 1, N)
            traffic.start_soon(send_numbered, b, 0, N)

        assert results == {0: {1: list(range(N))}, 1: {0: list(range(N))}}
        for link, peer in ((a, b), (b, a)):
            stats = link.statistics()
            assert (stats.frames_out, stats.frames_in, stats.decode_errors, stats.dropped) == (N, N, 0, 0)
            # Whatever queued while the owner was busy left in one multipart send.
            assert stats.batches_out * 10 <= stats.frames_out
            assert stats.batches_out == peer.statistics().batches_in


async def test_three_links_exchange_ten_thousand_messages_each_way(ipc_dir: Path) -> None:
    with trio.fail_after(TIMEOUT):
        links = [ZmqLink(worker, f"ipc://{ipc_dir}/w{worker}.sock") for worker in range(3)]
        results: dict[int, dict[int, list[int]]] = {}

        async def receive(link: ZmqLink) -> None:
            results[link.worker] = await receive_numbered(link, 2 * N)

        async with running(*links), trio.open_nursery() as traffic:
            for link in links:
                traffic.start_soon(receive, link)
                for peer in range(3):
                    if peer != link.worker:
                        traffic.start_soon(send_numbered, link, peer, N)

        for link in links:
            expected = {peer: list(range(N)) for peer in range(3) if peer != link.worker}
            assert results[link.worker] == expected
            assert link.statistics().frames_out == 2 * N


async def test_every_message_kind_crosses_with_its_envelope(endpoint: EndpointFactory) -> None:
    with trio.fail_after(TIMEOUT):
        a, b = ZmqLink(0, endpoint(0), epoch=3), ZmqLink(1, endpoint(1))
        messages: list[Message] = [
            numbered(1),
            Heartbeat(worker=0, epoch=3, sent_at=12.5),
            MembershipChanged(epoch=4, live_workers=(0, 1)),
        ]
        async with running(a, b):
            for message in messages[:2]:
                await a.send(1, message)
            a.set_epoch(4)
            a.send_nowait(1, messages[2])
            received = [await b.receive_channel.receive() for _ in messages]
        assert received == [
            Envelope(0, 3, messages[0]),
            Envelope(0, 3, messages[1]),
            Envelope(0, 4, messages[2]),
        ]
        with pytest.raises(ValueError, match="only grow"):
            a.set_epoch(3)


async def test_everything_queued_goes_in_one_multipart_send(ipc_dir: Path) -> None:
    with trio.fail_after(TIMEOUT):
        b = ZmqLink(1, f"ipc://{ipc_dir}/w1.sock")
        a = ZmqLink(0, f"ipc://{ipc_dir}/w0.sock", {1: f"ipc://{ipc_dir}/w1.sock"})
        for seq in range(100):  # queued before the link runs
            a.send_nowait(1, numbered(seq))
        assert a.statistics().outbox_depth == {1: 100}
        async with running(b, a):
            assert await receive_numbered(b, 100) == {0: list(range(100))}
        assert (a.statistics().batches_out, a.statistics().frames_out) == (1, 100)
        assert (b.statistics().batches_in, b.statistics().frames_in) == (1, 100)


# ---- bad input ----------------------------------------------------------------------------------


async def test_garbage_is_dropped_counted_and_logged_while_traffic_continues(
    endpoint: EndpointFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="imactor.cluster")
    valid = encode(Envelope(7, 0, numbered(0)))
    garbage: list[list[bytes]] = [
        [b""],
        [b"garbage"],
        [b"\x09" + valid[1:]],  # unknown version
        [valid, valid[:10]],  # one truncated frame spoils its batch
        [valid, encode(Envelope(8, 0, numbered(1)))],  # two sources in one batch
    ]
    with trio.fail_after(TIMEOUT):
        a, b = ZmqLink(0, endpoint(0)), ZmqLink(1, endpoint(1))
        context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        raw = context.socket(zmq.PUSH)
        try:
            async with running(a, b):
                raw.setsockopt(zmq.LINGER, 0)
                raw.connect(b.bound_endpoint)
                for frames in garbage:
                    raw.send_multipart(frames, zmq.NOBLOCK)
                # Same pipe, so once this arrives every batch before it has been handled.
                raw.send_multipart([encode(Envelope(7, 0, numbered(42)))], zmq.NOBLOCK)
                assert await receive_numbered(b, 1) == {7: [42]}
                stats = b.statistics()
                assert stats.decode_errors == len(garbage)
                assert stats.batches_in == len(garbage) + 1
                assert stats.frames_in == sum(map(len, garbage)) + 1
                # The link carries on: real traffic still flows both ways.
                await send_numbered(a, 1, 500)
                await send_numbered(b, 0, 500)
                assert await receive_numbered(b, 500) == {0: list(range(500))}
                assert await receive_numbered(a, 500) == {1: list(range(500))}
        finally:
            raw.close(linger=0)
            context.destroy(linger=0)
    warnings = [record for record in caplog.records if record.name == "imactor.cluster"]
    assert len(warnings) == len(garbage)
    assert "truncated header: 0 bytes" in warnings[0].getMessage()
    assert "unsupported version 9" in warnings[2].getMessage()
    assert "frame 1 of 2" in warnings[3].getMessage()
    assert "source w8 in a batch from w7" in warnings[4].getMessage()


# ---- membership -------------------------------------------------------------------------------


async def test_a_peer_removed_and_re_added(endpoint: EndpointFactory) -> None:
    with trio.fail_after(TIMEOUT):
        a, b = ZmqLink(0, endpoint(0)), ZmqLink(1, endpoint(1))
        async with running(a, b):
            await send_numbered(a, 1, 100)
            assert await receive_numbered(b, 100) == {0: list(range(100))}

            a.remove_peer(1)
            assert 1 not in a.peers
            assert a.statistics().outbox_depth == {}
            with pytest.raises(UnknownPeer):
                a.send_nowait(1, numbered(100))
            with pytest.raises(UnknownPeer):
                await a.send(1, numbered(100))
            with pytest.raises(UnknownPeer):
                a.remove_peer(1)
            # Only a's way out is gone: b still reaches a.
            await send_numbered(b, 0, 10)
            assert await receive_numbered(a, 10) == {1: list(range(10))}

            a.add_peer(1, b.bound_endpoint)
            await send_numbered(a, 1, 100, start=100)
            assert await receive_numbered(b, 100) == {0: list(range(100, 200))}


async def test_a_restarted_peer_is_reached_at_its_new_endpoint() -> None:
    with trio.fail_after(TIMEOUT):
        a = ZmqLink(0, "tcp://127.0.0.1:0")
        async with running(a) as nursery:
            b = ZmqLink(1, "tcp://127.0.0.1:0")
            async with trio.open_nursery() as first_life:
                await first_life.start(b.run)
                a.add_peer(1, b.bound_endpoint)
                await send_numbered(a, 1, 10)
                assert await receive_numbered(b, 10) == {0: list(range(10))}
                first_life.cancel_scope.cancel()  # b "dies": its sockets close, its channel ends
            with pytest.raises(trio.EndOfChannel):
                await b.receive_channel.receive()
            with pytest.raises(UnknownPeer):
                b.send_nowait(0, numbered(0))

            reborn = ZmqLink(1, "tcp://127.0.0.1:0")
            await nursery.start(reborn.run)
            a.remove_peer(1)
            a.add_peer(1, reborn.bound_endpoint)
            await send_numbered(a, 1, 10, start=10)
            assert await receive_numbered(reborn, 10) == {0: list(range(10, 20))}


async def test_a_send_waiting_for_a_removed_peer_gets_unknown_peer() -> None:
    with trio.fail_after(TIMEOUT):
        a = ZmqLink(0, "tcp://127.0.0.1:0", {1: "tcp://127.0.0.1:1"}, outbox_capacity=2)
        a.send_nowait(1, numbered(0))
        a.send_nowait(1, numbered(1))
        outcome: list[BaseException] = []

        async def blocked_send() -> None:
            try:
                await a.send(1, numbered(2))
            except UnknownPeer as exc:
                outcome.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(blocked_send)
            await trio.testing.wait_all_tasks_blocked()
            assert outcome == []
            a.remove_peer(1)
        assert len(outcome) == 1
        assert a.statistics().dropped == 2  # the two frames still in the outbox


# ---- back-pressure --------------------------------------------------------------------------------


def test_a_full_outbox_raises_would_block_before_run() -> None:
    """Synchronous (no I/O, nothing to time out): the outbox exists before the link runs."""
    a = ZmqLink(0, "tcp://127.0.0.1:0", {1: "tcp://127.0.0.1:1"}, outbox_capacity=4)
    for seq in range(4):
        a.send_nowait(1, numbered(seq))
    with pytest.raises(trio.WouldBlock):
        a.send_nowait(1, numbered(4))
    assert a.statistics().outbox_depth == {1: 4}
    with pytest.raises(UnknownPeer):
        a.send_nowait(2, numbered(0))
    with pytest.raises(ValueError, match="target_kind"):
        a.send_nowait(1, ActorMessage("k" * 300, "", "", b""))  # encoded in the caller's task
    a.remove_peer(1)
    assert a.statistics().dropped == 4


async def fill_until_stuck(link: ZmqLink, peer: int, capacity: int) -> int:
    """Queue numbered messages until `peer`'s outbox stays full; returns how many were queued.

    Only for a peer nobody is bound for: then no ZeroMQ I/O thread can make progress behind
    `wait_all_tasks_blocked`'s back, and a full outbox after it means the owner is stuck on POLLOUT.
    """
    sent = 0
    while True:
        try:
            link.send_nowait(peer, numbered(sent))
            sent += 1
            continue
        except trio.WouldBlock:
            pass
        await trio.testing.wait_all_tasks_blocked()
        if link.statistics().outbox_depth[peer] == capacity:
            return sent
        assert sent < 100 * capacity, "the outbox never stayed full"


async def test_an_absent_peer_fills_the_outbox_then_everything_drains(ipc_dir: Path) -> None:
    """HWM reached → owner waits for POLLOUT → outbox full → WouldBlock; the peer comes → all drains."""
    capacity = 8
    with trio.fail_after(TIMEOUT):
        peer_endpoint = f"ipc://{ipc_dir}/w1.sock"  # nobody is bound there yet
        a = ZmqLink(0, f"ipc://{ipc_dir}/w0.sock", {1: peer_endpoint}, outbox_capacity=capacity, hwm=1)
        async with running(a) as nursery:
            sent = await fill_until_stuck(a, 1, capacity)
            with pytest.raises(trio.WouldBlock):
                a.send_nowait(1, numbered(sent))
            assert sent >= capacity + 1  # the outbox, plus at least one batch held by ZeroMQ

            waiting_sender_done = trio.Event()

            async def wait_for_room() -> None:
                await a.send(1, numbered(sent))
                waiting_sender_done.set()

            nursery.start_soon(wait_for_room)
            await trio.testing.wait_all_tasks_blocked()
            assert not waiting_sender_done.is_set()

            b = ZmqLink(1, peer_endpoint)
            await nursery.start(b.run)
            assert await receive_numbered(b, sent + 1) == {0: list(range(sent + 1))}
            await waiting_sender_done.wait()
            assert a.statistics().outbox_depth == {1: 0}


async def test_removing_a_stuck_peer_drops_and_counts_what_it_held(ipc_dir: Path) -> None:
    capacity = 8
    with trio.fail_after(TIMEOUT):
        a = ZmqLink(
            0, f"ipc://{ipc_dir}/w0.sock", {1: f"ipc://{ipc_dir}/w1.sock"}, outbox_capacity=capacity, hwm=1
        )
        async with running(a):
            sent = await fill_until_stuck(a, 1, capacity)
            a.remove_peer(1)
            await trio.testing.wait_all_tasks_blocked()  # the owner has stopped and counted
            stats = a.statistics()
            # Every frame either went to ZeroMQ (and dies with the socket: LINGER 0) or is counted:
            # the full outbox plus the batch the owner held while it waited for POLLOUT.
            assert stats.dropped > capacity
            assert stats.frames_out + stats.dropped == sent
            assert stats.outbox_depth == {}


async def test_a_slow_consumer_pushes_back_on_the_sender(endpoint: EndpointFactory) -> None:
    """b's receive channel fills, b stops reading ZeroMQ, socket buffers and a's outbox fill: a
    gets WouldBlock, with a bounded number of messages in flight; then b reads them all, in order.

    ZeroMQ moves bytes in its own I/O threads, which `wait_all_tasks_blocked` cannot see, so the
    loop waits for the state it wants (both ends full) rather than for a quiet moment.
    """
    padding = b"p" * 1000  # fill the kernel's socket buffers with fewer messages
    with trio.fail_after(TIMEOUT):
        a = ZmqLink(0, endpoint(0), outbox_capacity=16, hwm=1)
        b = ZmqLink(1, endpoint(1), receive_capacity=4, hwm=1)
        async with running(a, b):
            sent = 0
            while True:
                try:
                    a.send_nowait(1, ActorMessage("user", "u@x", "stanza", sent.to_bytes(4, "big") + padding))
                    sent += 1
                    continue
                except trio.WouldBlock:
                    pass
                await trio.testing.wait_all_tasks_blocked()
                if a.statistics().outbox_depth[1] == 16 and b.statistics().receive_backlog == 4:
                    break
                assert sent < 200_000, "the sender was never pushed back"
            seen = [
                int.from_bytes(envelope.message.body[:4], "big")
                for envelope in [await b.receive_channel.receive() for _ in range(sent)]
                if isinstance(envelope.message, ActorMessage)
            ]
            assert seen == list(range(sent))


# ---- shutdown -------------------------------------------------------------------------------------


async def test_run_exits_cleanly_and_releases_everything() -> None:
    with trio.fail_after(TIMEOUT):
        a = ZmqLink(0, "tcp://127.0.0.1:0", {1: "tcp://127.0.0.1:1"})
        async with trio.open_nursery() as nursery:
            endpoint = await nursery.start(a.run)
            nursery.cancel_scope.cancel()
        with pytest.raises(trio.EndOfChannel):
            await a.receive_channel.receive()
        with pytest.raises(UnknownPeer):
            a.send_nowait(1, numbered(0))
        with pytest.raises(RuntimeError, match="stopped"):
            a.add_peer(2, "tcp://127.0.0.1:2")
        with pytest.raises(RuntimeError, match="runs once"):
            await a.run()
        assert a.statistics().outbox_depth == {}
        # The port is free again: a new link binds exactly the same endpoint.
        again = ZmqLink(0, endpoint)
        async with trio.open_nursery() as nursery:
            assert await nursery.start(again.run) == endpoint
            nursery.cancel_scope.cancel()


# ---- quiet traffic: direct sends and synchronous dispatch ---------------------------------------


async def test_a_frame_to_an_idle_owner_leaves_at_once_and_order_holds(ipc_dir: Path) -> None:
    # One frame at a time (a quiet chat): the caller hands it to ZeroMQ itself, without waking
    # the peer's owner task. Under a burst the frames queue behind the owner as before, and the
    # two paths never reorder what one sender sent.
    with trio.fail_after(TIMEOUT):
        a, b = ZmqLink(0, f"ipc://{ipc_dir}/w0.sock"), ZmqLink(1, f"ipc://{ipc_dir}/w1.sock")
        async with running(a, b):
            await trio.testing.wait_all_tasks_blocked()  # the owners wait on empty outboxes
            before = a.statistics().batches_out
            a.send_nowait(1, numbered(0))
            assert a.statistics().batches_out == before + 1  # sent before any task ran
            assert seq_of(await b.receive_channel.receive()) == 0
            for burst in range(20):
                await trio.testing.wait_all_tasks_blocked()
                for seq in range(1 + burst * 50, 1 + (burst + 1) * 50):
                    a.send_nowait(1, numbered(seq))  # the first direct, the rest queued
            got = [seq_of(await b.receive_channel.receive()) for _ in range(1000)]
            assert got == list(range(1, 1001))
            assert a.statistics().batches_out < 200  # the bursts still went out in batches


async def test_on_receive_gets_every_envelope_in_order_without_a_reader(ipc_dir: Path) -> None:
    with trio.fail_after(TIMEOUT):
        received: list[int] = []
        done = trio.Event()

        def handle(envelope: Envelope) -> None:
            received.append(seq_of(envelope))
            if len(received) == N:
                done.set()

        a = ZmqLink(0, f"ipc://{ipc_dir}/w0.sock")
        b = ZmqLink(1, f"ipc://{ipc_dir}/w1.sock", on_receive=handle)
        async with running(a, b):
            await send_numbered(a, 1, N)
            await done.wait()
        assert received == list(range(N))
        assert b.statistics().receive_backlog == 0  # nothing went through the channel
