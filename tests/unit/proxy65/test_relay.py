"""The proxy's pairing, activation and relay over memory streams, on a mock clock: the limits
(bandwidth, idle and activation timeouts, max_transfer, max_active, max_pending) in virtual time."""

from __future__ import annotations

import dataclasses

import pytest
import trio
import trio.testing

from imactor.config import Proxy65Config
from imactor.proxy65.relay import Proxy
from imactor.xmpp import socks5
from imactor.xmpp.socks5 import stream_hash

KEY = stream_hash("sid", "alice@localhost/pc", "bob@localhost/phone")
OTHER = stream_hash("sid2", "alice@localhost/pc", "bob@localhost/phone")


def config(**changes: object) -> Proxy65Config:
    return dataclasses.replace(Proxy65Config(enabled=True), **changes)  # type: ignore[arg-type]


def request(key: str) -> bytes:
    return b"\x05\x01\x00" + bytes((5, 1, 0, 3, len(key))) + key.encode() + b"\x00\x00"


async def receive_exactly(stream: trio.abc.ReceiveStream, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = await stream.receive_some(count - len(data))
        assert chunk, f"closed after {len(data)} bytes"
        data += chunk
    return data


async def receive_all(stream: trio.abc.ReceiveStream) -> bytes:
    data = b""
    while chunk := await stream.receive_some(65536):
        data += chunk
    return data


async def connect(proxy: Proxy, nursery: trio.Nursery, key: str = KEY) -> trio.abc.HalfCloseableStream:
    client, server_side = trio.testing.memory_stream_pair()
    assert proxy.admit()
    nursery.start_soon(proxy.handle, server_side)
    await client.send_all(request(key))
    assert await receive_exactly(client, 2 + 7 + len(key)) == b"\x05\x00" + socks5.reply(0, key)
    return client


async def active_pair(proxy: Proxy, nursery: trio.Nursery, key: str = KEY) -> tuple[
    trio.abc.HalfCloseableStream, trio.abc.HalfCloseableStream
]:  # fmt: skip
    target = await connect(proxy, nursery, key)
    requester = await connect(proxy, nursery, key)
    assert proxy.activate(key) is None
    return requester, target


async def test_relay_both_ways_then_one_end_closes_both() -> None:
    proxy = Proxy(config())
    async with trio.open_nursery() as nursery:
        target = await connect(proxy, nursery)
        await target.send_all(b"early")
        requester = await connect(proxy, nursery)
        assert proxy.statistics().pending == 2
        assert proxy.activate(KEY) is None
        assert (proxy.statistics().pending, proxy.statistics().active) == (0, 1)
        assert await receive_exactly(requester, 5) == b"early"
        await requester.send_all(b"x" * 100_000)
        assert await receive_exactly(target, 100_000) == b"x" * 100_000
        await requester.aclose()
        assert await receive_all(target) == b""
    stats = proxy.statistics()
    assert (stats.pending, stats.active, stats.streams_total, stats.bytes_total) == (0, 0, 1, 100_005)


async def test_activation_errors_and_the_one_target_rule() -> None:
    proxy = Proxy(config(max_active=1))
    async with trio.open_nursery() as nursery:
        assert proxy.activate(KEY) == "item-not-found"
        target = await connect(proxy, nursery)
        assert proxy.activate(KEY) == "not-allowed"
        requester = await connect(proxy, nursery)
        client, server_side = trio.testing.memory_stream_pair()  # a third: refused
        assert proxy.admit()
        nursery.start_soon(proxy.handle, server_side)
        await client.send_all(request(KEY))
        assert await receive_all(client) == b"\x05\x00" + socks5.reply(socks5.NOT_ALLOWED, KEY)
        other_target = await connect(proxy, nursery, OTHER)
        other_requester = await connect(proxy, nursery, OTHER)
        assert proxy.activate(KEY) is None
        assert proxy.activate(KEY) == "not-allowed"  # already active
        assert proxy.activate(OTHER) == "resource-constraint"  # max_active = 1
        for stream in (requester, target, other_target, other_requester):
            await stream.aclose()
    assert proxy.statistics().pending == 0


async def test_bandwidth_paces_each_direction(autojump_clock: trio.testing.MockClock) -> None:
    proxy = Proxy(config(bandwidth=1000))
    async with trio.open_nursery() as nursery:
        requester, target = await active_pair(proxy, nursery)
        started = trio.current_time()
        await requester.send_all(b"a" * 3000)
        assert await receive_exactly(target, 3000) == b"a" * 3000
        # One second's worth at once, then 1000 bytes a second.
        assert trio.current_time() - started == pytest.approx(2.0, abs=0.01)
        await requester.aclose()
        await target.aclose()


async def test_idle_timeout_closes_an_active_stream(autojump_clock: trio.testing.MockClock) -> None:
    proxy = Proxy(config(idle_timeout=5.0))
    async with trio.open_nursery() as nursery:
        requester, target = await active_pair(proxy, nursery)
        await trio.sleep(4.0)
        await requester.send_all(b"ping")  # activity moves the deadline
        assert await receive_exactly(target, 4) == b"ping"
        started = trio.current_time()
        assert await receive_all(target) == b""
        assert await receive_all(requester) == b""
        assert trio.current_time() - started == pytest.approx(5.0, abs=0.01)


async def test_max_transfer_sends_what_fits_then_cuts(autojump_clock: trio.testing.MockClock) -> None:
    proxy = Proxy(config(max_transfer=1000))
    async with trio.open_nursery() as nursery:
        requester, target = await active_pair(proxy, nursery)
        await requester.send_all(b"b" * 600)
        assert await receive_exactly(target, 600) == b"b" * 600
        await requester.send_all(b"c" * 600)
        assert await receive_all(target) == b"c" * 400
    assert proxy.statistics().active == 0


async def test_a_pair_never_activated_is_closed(autojump_clock: trio.testing.MockClock) -> None:
    proxy = Proxy(config(activation_timeout=3.0))
    async with trio.open_nursery() as nursery:
        target = await connect(proxy, nursery)
        requester = await connect(proxy, nursery)
        assert await receive_all(target) == b""
        assert await receive_all(requester) == b""
        assert trio.current_time() == pytest.approx(3.0, abs=0.01)
        assert proxy.activate(KEY) == "item-not-found"
    assert proxy.statistics().pending == 0


async def test_a_silent_connection_is_dropped_after_the_handshake_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    proxy = Proxy(config())
    async with trio.open_nursery() as nursery:
        client, server_side = trio.testing.memory_stream_pair()
        assert proxy.admit()
        nursery.start_soon(proxy.handle, server_side)
        await client.send_all(b"\x05")  # and nothing more
        assert await receive_all(client) == b""
        assert trio.current_time() == pytest.approx(10.0, abs=0.01)
    assert proxy.statistics().pending == 0


async def test_a_side_that_leaves_before_activation_ends_the_pair() -> None:
    proxy = Proxy(config())
    async with trio.open_nursery() as nursery:
        target = await connect(proxy, nursery)
        requester = await connect(proxy, nursery)
        await target.aclose()
        assert await receive_all(requester) == b""
        assert proxy.activate(KEY) == "item-not-found"
    assert proxy.statistics().pending == 0


def test_max_pending_admits_no_more() -> None:
    proxy = Proxy(config(max_pending=2))
    assert proxy.admit()
    assert proxy.admit()
    assert not proxy.admit()
    assert proxy.statistics().refused_total == 1
