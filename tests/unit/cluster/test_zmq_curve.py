"""The link between nodes: CURVE-encrypted, and only for keys the cluster knows.

Real ZeroMQ over tcp://127.0.0.1 on OS-chosen ports, under `trio.fail_after`. A refused peer
never delivers anything, so "nothing arrived" is shown by a later frame from an authorized peer
on the same receiving link (ZeroMQ's fair queue would have handed the earlier one first only if it
had been accepted; the refusal counter says the handshake was refused).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from imactor.cluster.wire import ActorMessage, Envelope, MembershipChanged
from imactor.cluster.zmq_link import CurveKeys, ZmqLink

TIMEOUT = 30


def message(n: int) -> ActorMessage:
    return ActorMessage("user", "alice@example.com", "stanza", n.to_bytes(4, "big"))


def node_link(worker: int, keys: CurveKeys, known: set[str]) -> ZmqLink:
    """A worker of a node: a local ipc-less link with a remote CURVE socket on a free port."""
    return ZmqLink(
        worker, f"inproc://unused-{worker}", remote_endpoint="tcp://127.0.0.1:0", curve=keys,
        authorized=known.__contains__,
    )  # fmt: skip


@asynccontextmanager
async def two_nodes() -> AsyncIterator[tuple[trio.Nursery, CurveKeys, CurveKeys, ZmqLink, ZmqLink]]:
    """Two registered nodes' links, running: a (w1024) and b (w2048, its remote socket bound)."""
    one, two = CurveKeys.generate(), CurveKeys.generate()
    known = {one.public, two.public}
    a, b = node_link(1024, one, known), node_link(2048, two, known)
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            for link in (a, b):
                await nursery.start(link.run)
            assert b.bound_remote_endpoint is not None
            yield nursery, one, two, a, b
            nursery.cancel_scope.cancel()


def test_keys_round_trip_through_the_secret() -> None:
    keys = CurveKeys.generate()
    assert len(keys.public) == len(keys.secret) == 40
    assert CurveKeys.from_secret(keys.secret) == keys
    with pytest.raises(ValueError, match="40 Z85 characters"):
        CurveKeys.from_secret("short")


def test_a_remote_socket_needs_keys_and_a_check() -> None:
    with pytest.raises(ValueError, match="CURVE keys"):
        ZmqLink(0, "inproc://x", remote_endpoint="tcp://127.0.0.1:0")
    with pytest.raises(ValueError, match="own key pair"):
        ZmqLink(0, "inproc://y").add_peer(1, "tcp://127.0.0.1:1", server_key=CurveKeys.generate().public)


async def test_registered_nodes_talk_and_an_unknown_key_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    one, two, stranger = CurveKeys.generate(), CurveKeys.generate(), CurveKeys.generate()
    known = {one.public, two.public}
    a, b = node_link(1024, one, known), node_link(2048, two, known)
    intruder = ZmqLink(4096, "inproc://intruder", curve=stranger)
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            for link in (a, b, intruder):
                await nursery.start(link.run)
            assert b.bound_remote_endpoint is not None
            a.add_peer(2048, b.bound_remote_endpoint, server_key=two.public)
            intruder.add_peer(2048, b.bound_remote_endpoint, server_key=two.public)
            intruder.send_nowait(2048, message(666))
            # Counted in ZeroMQ's authenticator thread: nothing in trio to wait on.
            while b.refused_keys == 0:  # noqa: ASYNC110
                await trio.sleep(0.01)
            a.send_nowait(2048, message(1))
            envelope = await b.receive_channel.receive()
            assert (envelope.source, envelope.message) == (1024, message(1))
            assert b.statistics().refused_keys == 1
            assert b.statistics().frames_in == 1
            nursery.cancel_scope.cancel()
    assert any("unregistered key " + stranger.public in r.getMessage() for r in caplog.records)


async def test_a_peer_with_the_wrong_server_key_cannot_connect() -> None:
    """A client that expects another server key (a node impersonated) never completes CURVE."""
    async with two_nodes() as (nursery, one, two, a, b):
        assert b.bound_remote_endpoint is not None
        a.add_peer(2048, b.bound_remote_endpoint, server_key=CurveKeys.generate().public)
        a.send_nowait(2048, message(1))
        # b hears nothing from a: its handshake fails. Prove it with a second, right peer.
        c = node_link(3072, one, {one.public, two.public})
        await nursery.start(c.run)
        c.add_peer(2048, b.bound_remote_endpoint, server_key=two.public)
        c.send_nowait(2048, message(2))
        envelope = await b.receive_channel.receive()
        assert (envelope.source, envelope.message) == (3072, message(2))
        assert b.statistics().frames_in == 1


async def test_membership_from_another_node_is_dropped() -> None:
    """Only this node's supervisor announces membership; a node that sends one is faulty."""
    async with two_nodes() as (_, _, two, a, b):
        assert b.bound_remote_endpoint is not None
        a.add_peer(2048, b.bound_remote_endpoint, server_key=two.public)
        await a.send(2048, MembershipChanged(99, (1024,)))
        await a.send(2048, message(3))
        envelope: Envelope = await b.receive_channel.receive()
        assert envelope.message == message(3)
        assert b.statistics().decode_errors == 1
