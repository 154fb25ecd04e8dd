"""`TLSSocketStream`: the server's TLS stream, with OpenSSL on the socket, against trio's own
client-side `SSLStream` over real loopback sockets."""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from imactor.c2s.socket_stream import SocketStream
from imactor.c2s.tls_stream import TLSSocketStream
from imactor.tls import generate_self_signed, make_server_context

TIMEOUT = 10


@pytest.fixture
def server_context(tmp_path: Path) -> ssl.SSLContext:
    cert_pem, key_pem = generate_self_signed("localhost")
    (tmp_path / "cert.pem").write_bytes(cert_pem)
    (tmp_path / "key.pem").write_bytes(key_pem)
    return make_server_context(tmp_path / "cert.pem", tmp_path / "key.pem")


def client_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


@asynccontextmanager
async def tls_pair(
    server_context: ssl.SSLContext,
) -> AsyncIterator[tuple[TLSSocketStream, trio.SSLStream[trio.SocketStream]]]:
    """A handshaken (server, client) pair over a fresh loopback TCP connection."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with listeners[0]:
        client_tcp = await trio.testing.open_stream_to_socket_listener(listeners[0])
        server_tcp = await listeners[0].accept()
    server = TLSSocketStream.server_side(server_tcp, server_context)
    client = trio.SSLStream(client_tcp, client_context(), server_hostname="localhost")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.do_handshake)
        await client.do_handshake()
    try:
        yield server, client
    finally:
        with trio.move_on_after(1) as cleanup:
            cleanup.shield = True
            await server.aclose()
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await client.aclose()  # some tests broke or closed it on purpose


async def receive_exactly(stream: trio.abc.ReceiveStream, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = await stream.receive_some(65536)
        assert chunk, f"EOF after {len(data)} of {size} bytes"
        data += chunk
    return bytes(data)


async def test_bulk_both_ways_at_once(server_context: ssl.SSLContext) -> None:
    # Far more than the socket buffers hold, so both sides must wait for the other to read.
    to_client, to_server = os.urandom(3_000_000), os.urandom(1_000_000)
    with trio.fail_after(TIMEOUT):
        async with tls_pair(server_context) as (server, client), trio.open_nursery() as nursery:
            results: dict[str, bytes] = {}

            async def read(name: str, stream: trio.abc.ReceiveStream, size: int) -> None:
                results[name] = await receive_exactly(stream, size)

            nursery.start_soon(read, "client", client, len(to_client))
            nursery.start_soon(read, "server", server, len(to_server))
            nursery.start_soon(server.send_all, to_client)
            nursery.start_soon(client.send_all, to_server)
    assert results == {"client": to_client, "server": to_server}


async def test_no_session_tickets(server_context: ssl.SSLContext) -> None:
    # See make_server_context: the ticket key would outlive forward secrecy.
    with trio.fail_after(TIMEOUT):
        async with tls_pair(server_context) as (server, client):
            await server.send_all(b"x")  # TLS 1.3 tickets come after the handshake
            assert await client.receive_some(10) == b"x"
            assert client.version() == "TLSv1.3"
            assert client.session is not None
            assert not client.session.has_ticket


async def test_close_notify_reads_as_end_of_stream(server_context: ssl.SSLContext) -> None:
    with trio.fail_after(TIMEOUT):
        async with tls_pair(server_context) as (server, client):
            await client.send_all(b"last words")
            await client.aclose()
            assert await receive_exactly(server, 10) == b"last words"
            assert await server.receive_some(100) == b""


async def test_server_close_reaches_the_client(server_context: ssl.SSLContext) -> None:
    with trio.fail_after(TIMEOUT):
        async with tls_pair(server_context) as (server, client):
            await server.send_all(b"</stream:stream>")
            await server.aclose()
            assert await receive_exactly(client, 16) == b"</stream:stream>"
            assert await client.receive_some(100) == b""  # our close_notify, then FIN
            with pytest.raises(trio.ClosedResourceError):
                await server.send_all(b"x")


async def test_close_wakes_a_waiting_receiver(server_context: ssl.SSLContext) -> None:
    outcome: list[BaseException] = []

    async def receive() -> None:
        try:
            await server.receive_some(100)
        except trio.ClosedResourceError as exc:
            outcome.append(exc)

    with trio.fail_after(TIMEOUT):
        async with tls_pair(server_context) as (server, _client), trio.open_nursery() as nursery:
            nursery.start_soon(receive)
            await trio.testing.wait_all_tasks_blocked()
            await server.aclose()
    assert len(outcome) == 1


async def test_reset_or_ragged_end_reads_as_end_of_stream(server_context: ssl.SSLContext) -> None:
    # No close_notify: the XMPP layer, not TLS, tells a clean end (</stream:stream>), so a session
    # ended this way stays resumable (XEP-0198) whether the kernel says reset or end of file.
    with trio.fail_after(TIMEOUT):
        async with tls_pair(server_context) as (server, client):
            raw = client.transport_stream.socket
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            raw.close()  # RST instead of FIN
            with contextlib.suppress(trio.BrokenResourceError):  # trio's own sockets say this
                assert await server.receive_some(100) == b""


async def test_a_send_the_peer_never_reads_gives_up_after_its_patience(
    server_context: ssl.SSLContext,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with tls_pair(server_context) as (server, _client):
            server.send_patience = 0.3
            await server.send_all(b"fits")  # room in the socket: no timer at all
            start = trio.current_time()
            with pytest.raises(trio.BrokenResourceError, match="not reading"):
                await server.send_all(b"x" * 50_000_000)  # the client never reads
            assert trio.current_time() - start >= 0.3


async def test_one_receiver_at_a_time(server_context: ssl.SSLContext) -> None:
    with trio.fail_after(TIMEOUT):
        async with tls_pair(server_context) as (server, client), trio.open_nursery() as nursery:
            nursery.start_soon(server.receive_some, 100)
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(trio.BusyResourceError):
                await server.receive_some(100)
            await client.send_all(b"x")  # lets the first receiver finish


async def test_handshake_failure_is_broken_resource(server_context: ssl.SSLContext) -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    with trio.fail_after(TIMEOUT):
        async with listeners[0]:
            client = await trio.testing.open_stream_to_socket_listener(listeners[0])
            server = TLSSocketStream.server_side(await listeners[0].accept(), server_context)
        await client.send_all(b"<?xml version='1.0'?><stream:stream>")  # not a ClientHello
        with pytest.raises(trio.BrokenResourceError):
            await server.do_handshake()
        await server.aclose()
        await client.aclose()


async def test_a_write_before_a_silent_handshake_gives_up_after_its_patience(
    server_context: ssl.SSLContext,
) -> None:
    """A session that ends before TLS came up must not wait for a handshake forever (the peer
    connected on the direct TLS port and never said a word)."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    with trio.fail_after(TIMEOUT):
        async with listeners[0]:
            client = await trio.testing.open_stream_to_socket_listener(listeners[0])
            server = TLSSocketStream.server_side(await listeners[0].accept(), server_context)
        server.send_patience = 0.3
        assert not server.handshaken
        with pytest.raises(trio.BrokenResourceError, match="handshake"):
            await server.send_all(b"<stream:error/>")
        await server.aclose()
        await client.aclose()


# ---- writes without waiting, and reads that wait first (SocketStream) -------------------------


@asynccontextmanager
async def plain_pair() -> AsyncIterator[tuple[SocketStream, trio.SocketStream]]:
    """A (server, client) pair of plain TCP streams over loopback."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with listeners[0]:
        client = await trio.testing.open_stream_to_socket_listener(listeners[0])
        server = SocketStream.from_trio(await listeners[0].accept())
    try:
        yield server, client
    finally:
        await server.aclose()
        await client.aclose()


async def test_send_nowait_then_send_all_with_the_rest(server_context: ssl.SSLContext) -> None:
    # What a session does for a delivery: write what the socket takes at once, and hand the rest
    # to the writer task; for TLS, OpenSSL wants exactly the same bytes again (and may get more).
    payload = os.urandom(4_000_000)  # more than the socket buffers hold while nobody reads
    more = os.urandom(1000)
    with trio.fail_after(TIMEOUT):
        async with tls_pair(server_context) as (server, client):
            assert server.send_nowait(b"small") == 5
            assert await receive_exactly(client, 5) == b"small"
            done = server.send_nowait(payload)
            assert done == 0  # all or nothing over TLS, and the socket filled up first
            async with trio.open_nursery() as nursery:
                nursery.start_soon(server.send_all, payload + more)
                assert await receive_exactly(client, len(payload) + len(more)) == payload + more


async def test_plain_send_nowait_takes_part_and_the_rest_follows() -> None:
    payload = os.urandom(4_000_000)
    with trio.fail_after(TIMEOUT):
        async with plain_pair() as (server, client):
            done = server.send_nowait(payload)
            assert 0 < done < len(payload)  # the kernel took what fitted
            async with trio.open_nursery() as nursery:
                nursery.start_soon(server.send_all, payload[done:])
                assert await receive_exactly(client, len(payload)) == payload


async def test_plain_send_nowait_to_a_closed_peer_is_broken_resource() -> None:
    with trio.fail_after(TIMEOUT):
        async with plain_pair() as (server, client):
            raw = client.socket
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            await client.aclose()  # RST
            with pytest.raises(trio.BrokenResourceError):
                await server.receive_some(100)
            with pytest.raises(trio.BrokenResourceError):
                server.send_nowait(b"x")


async def test_reads_after_a_drained_read_wait_and_see_everything() -> None:
    with trio.fail_after(TIMEOUT):
        async with plain_pair() as (server, client):
            for round_ in range(20):
                await client.send_all(b"stanza %d;" % round_)
                assert await server.receive_some(65536) == b"stanza %d;" % round_  # drained
            # Bytes that arrive while the reader is parked wake it.
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.send_all, b"late")
                assert await server.receive_some(65536) == b"late"
            await server.aclose()
            with pytest.raises(trio.ClosedResourceError):
                await server.receive_some(100)


async def test_tls_reads_in_small_pieces_use_what_openssl_holds(server_context: ssl.SSLContext) -> None:
    # A record bigger than the reads: the rest is decrypted already, in OpenSSL, not in the
    # socket, so a read must not wait for the socket first.
    with trio.fail_after(TIMEOUT):
        async with tls_pair(server_context) as (server, client):
            await client.send_all(b"0123456789" * 10)
            pieces = [await server.receive_some(10) for _ in range(10)]
            assert b"".join(pieces) == b"0123456789" * 10
