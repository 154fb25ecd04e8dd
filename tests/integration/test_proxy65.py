"""XEP-0065 SOCKS5 Bytestreams proxy over the wire, on a node of two workers.

slixmpp's XEP-0065 plugin finds the proxy through disco and sends a file through it byte for
byte; XEP-0047 in-band bytestreams between two slixmpp clients pass through the server as they
are. Then raw sockets: the relay both ways with bytes sent before activation, the activation's
errors (XEP-0065 §5.3.5), refused SOCKS5 (version, method, address type, a malformed hash), a
pair never activated, the flood limit. The SOCKS5 side runs on worker 0; the sessions that ask
for activation land on either worker (activations forwarded over the mesh).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator
from typing import Any

import pytest
import trio
from lxml import etree

from tests.integration.conftest import PASSWORD
from tests.support.clients import event_queue, run, slixmpp_client
from tests.support.peer import Peer, Peers, error_condition, show
from tests.support.server import ServerProcess, running_server
from tests.support.timeouts import TIMEOUT

pytestmark = pytest.mark.usefixtures("server_alive")

NS = "http://jabber.org/protocol/bytestreams"
DISCO_INFO = "http://jabber.org/protocol/disco#info"
DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
PROXY = "proxy.localhost"
ACTIVATION_TIMEOUT = 1.5
MAX_PENDING = 8
PROXY_CONFIG = f"""
[listen.proxy65]
host = "127.0.0.1"
port = 0

[proxy65]
enabled = true
activation_timeout = {ACTIVATION_TIMEOUT}
max_pending = {MAX_PENDING}
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    users = [(f"ft{i}", PASSWORD) for i in range(8)]
    with running_server(tmp_path_factory.mktemp("proxy65"), users=users, workers=2,
                        extra=PROXY_CONFIG) as process:  # fmt: skip
        yield process


def proxy_port(server: ServerProcess) -> int:
    return server.ports["proxy65"]


# ---- raw SOCKS5 -----------------------------------------------------------------------------------


def sha1_hash(sid: str, requester: str, target: str) -> str:
    import hashlib

    return hashlib.sha1(f"{sid}{requester}{target}".encode()).hexdigest()


def connect_request(address: str, port: int = 0, *, atyp: int = 3) -> bytes:
    raw = address.encode()
    return bytes((5, 1, 0, atyp, len(raw))) + raw + port.to_bytes(2, "big")


async def receive_exactly(stream: trio.SocketStream, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = await stream.receive_some(count - len(data))
        if not chunk:
            raise EOFError(f"closed after {data!r}")
        data += chunk
    return data


async def receive_until_closed(stream: trio.SocketStream) -> bytes:
    """Everything until the proxy closes (a reset counts as a close)."""
    data = b""
    with contextlib.suppress(trio.BrokenResourceError):
        while chunk := await stream.receive_some(65536):
            data += chunk
    return data


async def socks_connect(server: ServerProcess, address: str) -> trio.SocketStream:
    """A SOCKS5 connection to the proxy, CONNECT `address` accepted."""
    stream = await trio.open_tcp_stream("127.0.0.1", proxy_port(server))
    await stream.send_all(b"\x05\x01\x00")
    assert await receive_exactly(stream, 2) == b"\x05\x00"
    await stream.send_all(connect_request(address))
    raw = address.encode()
    assert await receive_exactly(stream, 7 + len(raw)) == bytes((5, 0, 0, 3, len(raw))) + raw + b"\x00\x00"
    return stream


async def activate(peer: Peer, sid: str, target: str) -> etree._Element:
    return await peer.iq(f"<query xmlns='{NS}' sid='{sid}'><activate>{target}</activate></query>",
                         type_="set", to=PROXY)  # fmt: skip


# ---- discovery --------------------------------------------------------------------------------------


async def test_the_proxy_is_listed_and_announces_its_streamhost(server: ServerProcess, peers: Peers) -> None:
    with trio.fail_after(TIMEOUT):
        (user,) = peers.accounts(1)
        peer = await peers.login(user)
        items = await peer.iq(f"<query xmlns='{DISCO_ITEMS}'/>", to="localhost")
        listed = [item.get("jid") for item in items.iter(f"{{{DISCO_ITEMS}}}item")]
        assert PROXY in listed, show(items)
        info = await peer.iq(f"<query xmlns='{DISCO_INFO}'/>", to=PROXY)
        identity = info.find(f"{{{DISCO_INFO}}}query/{{{DISCO_INFO}}}identity")
        assert identity is not None, show(info)
        assert (identity.get("category"), identity.get("type")) == ("proxy", "bytestreams")
        features = {f.get("var") for f in info.iter(f"{{{DISCO_INFO}}}feature")}
        assert NS in features
        address = await peer.iq(f"<query xmlns='{NS}'/>", to=PROXY)
        assert address.get("type") == "result", show(address)
        streamhost = address.find(f"{{{NS}}}query/{{{NS}}}streamhost")
        assert streamhost is not None, show(address)
        assert streamhost.attrib == {"jid": PROXY, "host": "127.0.0.1", "port": str(proxy_port(server))}


# ---- slixmpp: a file through the proxy; IBB through the server ---------------------------------------


def test_slixmpp_sends_a_file_through_the_proxy(server: ServerProcess) -> None:
    data = os.urandom(1024 * 1024)
    alice, bob = "ft0@localhost/pc", "ft1@localhost/phone"

    async def scenario() -> None:
        plugins = ("xep_0030", "xep_0065")
        async with (
            slixmpp_client(alice, PASSWORD, server.c2s_port, plugins=plugins) as a,
            slixmpp_client(bob, PASSWORD, server.c2s_port, plugins=plugins) as b,
        ):
            b.plugin["xep_0065"].auto_accept = True
            received = bytearray()
            closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            b.add_event_handler("socks5_data", received.extend)

            def on_closed(_: Any) -> None:
                if not closed.done():
                    closed.set_result(None)

            b.add_event_handler("socks5_closed", on_closed)
            sender = await a.plugin["xep_0065"].handshake(bob, timeout=TIMEOUT)
            assert sender is not None
            assert a.plugin["xep_0065"]._proxies == {PROXY: ("127.0.0.1", str(proxy_port(server)))}
            await sender.write(data)
            sender.transport.close()  # the proxy closes the other side once this one ends
            await asyncio.wait_for(closed, TIMEOUT)
            assert len(received) == len(data)
            assert bytes(received) == data

    run(scenario())


def test_in_band_bytestreams_pass_through_untouched(server: ServerProcess) -> None:
    data = os.urandom(100_000)
    alice, bob = "ft2@localhost/pc", "ft3@localhost/phone"

    async def scenario() -> None:
        plugins = ("xep_0030", "xep_0047")
        async with (
            slixmpp_client(alice, PASSWORD, server.c2s_port, plugins=plugins) as a,
            slixmpp_client(bob, PASSWORD, server.c2s_port, plugins=plugins) as b,
        ):
            b.plugin["xep_0047"].auto_accept = True
            starts = event_queue(b, "ibb_stream_start")
            stream = await a.plugin["xep_0047"].open_stream(bob, block_size=4096, timeout=TIMEOUT)
            incoming = await asyncio.wait_for(starts.get(), TIMEOUT)
            gathered = asyncio.ensure_future(incoming.gather(timeout=TIMEOUT))
            await stream.sendall(data, timeout=TIMEOUT)
            await stream.close(timeout=TIMEOUT)
            assert await asyncio.wait_for(gathered, TIMEOUT) == data

    run(scenario())


# ---- raw: relay, activation errors ---------------------------------------------------------------


async def mesh_counters(server: ServerProcess) -> dict[int, tuple[int, int]]:
    """(activations forwarded to the proxy's worker, activations served for another), by worker."""
    workers = (await trio.to_thread.run_sync(server.status))["workers"]
    return {w["index"]: (w["mesh"]["proxy65_forwarded"], w["mesh"]["proxy65_served"]) for w in workers}


async def relay_round(server: ServerProcess, requester: Peer, target: Peer, sid: str) -> None:
    """Connect both sides, send before activation, activate, relay both ways, end."""
    key = sha1_hash(sid, requester.jid, target.jid)
    to_target = await socks_connect(server, key)
    to_requester = await socks_connect(server, key)
    await to_target.send_all(b"sent by the target before activation;")
    await to_requester.send_all(b"sent by the requester before activation;")
    reply = await activate(requester, sid, target.jid)
    assert reply.get("type") == "result", show(reply)
    assert reply.get("from") == PROXY
    early = b"sent by the requester before activation;"
    assert await receive_exactly(to_target, len(early)) == early
    early = b"sent by the target before activation;"
    assert await receive_exactly(to_requester, len(early)) == early
    payload = os.urandom(200_000)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(to_requester.send_all, payload)
        assert await receive_exactly(to_target, len(payload)) == payload
    await to_target.send_all(b"and back")
    assert await receive_exactly(to_requester, 8) == b"and back"
    await to_requester.aclose()  # one side ends: the proxy closes the other
    assert await receive_until_closed(to_target) == b""
    await to_target.aclose()
    # The stream is gone: activating it again finds nothing.
    again = await activate(requester, sid, target.jid)
    assert error_condition(again) == "item-not-found", show(again)


async def test_activation_relays_both_ways_from_either_worker(server: ServerProcess, peers: Peers) -> None:
    """Requesters log in until one's session is on worker 1: its activation goes over the mesh
    to worker 0, which runs the SOCKS5 side (the status socket counts it on both)."""
    with trio.fail_after(TIMEOUT):
        before = await mesh_counters(server)
        for round_ in range(16):
            requester, target = await peers.online_users(2)
            await relay_round(server, requester, target, f"relay{round_}")
            after = await mesh_counters(server)
            if after[1][0] > before[1][0] and round_ >= 1:
                break
        else:
            pytest.fail("no requester's session landed on worker 1 in 16 logins")
        assert after[1][0] - before[1][0] == after[0][1] - before[0][1]  # forwarded by 1 = served by 0
        assert after[0][0] == before[0][0]  # worker 0 runs the proxy: it forwards nothing
        workers = (await trio.to_thread.run_sync(server.status))["workers"]
        proxy = next(w["proxy65"] for w in workers if w["index"] == 0)
        assert proxy["streams_total"] >= 2
        assert proxy["active"] == 0
        assert all("proxy65" not in w for w in workers if w["index"] != 0)


async def test_activation_errors(server: ServerProcess, peers: Peers) -> None:
    with trio.fail_after(TIMEOUT):
        requester, target, stranger = await peers.online_users(3)
        sid = "errors"
        key = sha1_hash(sid, requester.jid, target.jid)
        # Nothing connected: no such stream.
        reply = await activate(requester, sid, target.jid)
        assert error_condition(reply) == "item-not-found", show(reply)
        # Only the target connected: not allowed (§5.3.5).
        to_target = await socks_connect(server, key)
        reply = await activate(requester, sid, target.jid)
        assert error_condition(reply) == "not-allowed", show(reply)
        to_requester = await socks_connect(server, key)
        # A third connection with the same hash is refused (one target per stream).
        third = await trio.open_tcp_stream("127.0.0.1", proxy_port(server))
        await third.send_all(b"\x05\x01\x00" + connect_request(key))
        assert (await receive_until_closed(third))[:4] == b"\x05\x00\x05\x02"
        await third.aclose()
        # A non-party names the same sid and target: its own JID makes another hash.
        reply = await activate(stranger, sid, target.jid)
        assert error_condition(reply) == "item-not-found", show(reply)
        # Malformed activations.
        reply = await requester.iq(f"<query xmlns='{NS}'><activate>{target.jid}</activate></query>",
                                   type_="set", to=PROXY)  # fmt: skip
        assert error_condition(reply) == "bad-request", show(reply)
        reply = await requester.iq(f"<query xmlns='{NS}' sid='{sid}'/>", type_="set", to=PROXY)
        assert error_condition(reply) == "bad-request", show(reply)
        reply = await activate(requester, sid, "@bad@")
        assert error_condition(reply) == "jid-malformed", show(reply)
        # None of that disturbed the pair: the requester activates it.
        reply = await activate(requester, sid, target.jid)
        assert reply.get("type") == "result", show(reply)
        await to_requester.send_all(b"still here")
        assert await receive_exactly(to_target, 10) == b"still here"
        await to_requester.aclose()
        await to_target.aclose()


# ---- raw: refused SOCKS5 -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sent", "answer"),
    [
        (b"\x04\x01\x00\x50\x7f\x00\x00\x01\x00", b""),  # SOCKS4: no reply, closed
        (b"\x05\x01\x02", b"\x05\xff"),  # username/password only: no acceptable method
        (b"\x05\x01\x00" + bytes((5, 1, 0, 1, 127, 0, 0, 1, 0, 0)), b"\x05\x00\x05\x08"),  # IPv4 address
        (b"\x05\x01\x00" + bytes((5, 2, 0, 3, 1)) + b"x\x00\x00", b"\x05\x00\x05\x07"),  # BIND
        (b"\x05\x01\x00" + connect_request("example.com", 80), b"\x05\x00\x05\x04"),  # not a hash
        (b"\x05\x01\x00" + connect_request("ab" * 20, 1), b"\x05\x00\x05\x04"),  # port not 0
    ],
)
async def test_bad_socks5_gets_its_reply_and_is_closed(
    server: ServerProcess, sent: bytes, answer: bytes
) -> None:
    with trio.fail_after(TIMEOUT):
        stream = await trio.open_tcp_stream("127.0.0.1", proxy_port(server))
        await stream.send_all(sent)
        received = await receive_until_closed(stream)
        assert received[: len(answer)] == answer, received
        await stream.aclose()
        # Nothing else disturbed: a good handshake works right after.
        good = await socks_connect(server, sha1_hash("after-bad", "a@localhost/x", "b@localhost/y"))
        await good.aclose()


async def test_a_hash_no_one_else_names_is_never_activated(server: ServerProcess, peers: Peers) -> None:
    with trio.fail_after(TIMEOUT):
        requester, target = await peers.online_users(2)
        sid = "wrong-hash"
        to_target = await socks_connect(server, sha1_hash(sid, requester.jid, target.jid))
        # The requester hashes the JIDs the other way round: its connection waits alone.
        to_requester = await socks_connect(server, sha1_hash(sid, target.jid, requester.jid))
        reply = await activate(requester, sid, target.jid)
        assert error_condition(reply) == "not-allowed", show(reply)
        await to_requester.aclose()
        await to_target.aclose()


async def test_a_pair_never_activated_is_closed(server: ServerProcess, peers: Peers) -> None:
    with trio.fail_after(TIMEOUT):
        requester, target = await peers.online_users(2)
        sid = "never"
        key = sha1_hash(sid, requester.jid, target.jid)
        to_target = await socks_connect(server, key)
        to_requester = await socks_connect(server, key)
        started = trio.current_time()
        assert await receive_until_closed(to_target) == b""
        assert await receive_until_closed(to_requester) == b""
        assert trio.current_time() - started < ACTIVATION_TIMEOUT + 1.0
        reply = await activate(requester, sid, target.jid)
        assert error_condition(reply) == "item-not-found", show(reply)
        await to_target.aclose()
        await to_requester.aclose()


async def test_a_connection_flood_is_cut_at_max_pending(server: ServerProcess) -> None:
    with trio.fail_after(TIMEOUT):
        held = [await socks_connect(server, sha1_hash(f"flood{i}", "a@localhost/x", "b@localhost/y"))
                for i in range(MAX_PENDING)]  # fmt: skip
        extra = await trio.open_tcp_stream("127.0.0.1", proxy_port(server))
        with contextlib.suppress(trio.BrokenResourceError):
            await extra.send_all(b"\x05\x01\x00")
        assert await receive_until_closed(extra) == b""  # closed unread, no method chosen
        await extra.aclose()
        for stream in held:
            await stream.aclose()
        # The proxy sees them go (it watches pending connections) and takes new ones again.
        while True:
            try:
                stream = await socks_connect(server, sha1_hash("later", "a@localhost/x", "b@localhost/y"))
            except (EOFError, trio.BrokenResourceError):
                await trio.sleep(0.05)  # the proxy has not read the closes yet
                continue
            await stream.aclose()
            break

