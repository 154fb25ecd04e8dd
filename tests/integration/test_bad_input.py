"""Hostile and broken input, as bytes on the wire: each gets the RFC 6120 answer, nothing else breaks.

Every test checks the stream error (or stanza error) the server sends, and that the connection is
closed when it must be. The `server_alive` fixture checks after each test that the server process is
still running; the last test proves it still serves a fresh login.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from pathlib import Path

import pytest
import trio
from lxml import etree

from tests.integration.conftest import PASSWORD, Accounts
from tests.support.clients import raw_login
from tests.support.peer import error_condition
from tests.support.raw import PING, STREAM_NS, RawClient, assert_pong
from tests.support.server import ServerProcess, add_users, running_server
from tests.support.timeouts import SLOW_TIMEOUT, TIMEOUT

pytestmark = pytest.mark.usefixtures("server_alive")

CLIENT = "jabber:client"
HEADER = (
    "<?xml version='1.0'?><stream:stream xmlns='{content}' xmlns:stream='{streams}' to='{domain}'"
    " version='{version}'>"
)


def header(*, content: str = CLIENT, streams: str = STREAM_NS, domain: str = "localhost",
           version: str = "1.0") -> str:  # fmt: skip
    return HEADER.format(content=content, streams=streams, domain=domain, version=version)


async def connect(server: ServerProcess) -> RawClient:
    return await RawClient.connect(server.c2s_port)


async def closed_with(client: RawClient, condition: str) -> None:
    """The server sends the stream error `condition` and then closes the stream."""
    assert await client.stream_error() == condition
    await client.wait_closed()
    assert client.closed


async def send_tolerant(client: RawClient, data: bytes) -> None:
    """Send, ignoring a connection the server closes midway (it may stop reading once it has decided)."""
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        await client.send(data)


# ---- XML the server must refuse -----------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"<message><body>hi</message>", id="tag-mismatch"),
        pytest.param(b"<message a='1' a='2'/>", id="duplicate-attribute"),
        pytest.param(b"<foo:message/>", id="unbound-prefix"),
        pytest.param(b"<message><body>\xff\xfe</body></message>", id="invalid-utf8"),
        pytest.param(b"<message><body>a & b</body></message>", id="bare-ampersand"),
        pytest.param(b"<message><body>\x01</body></message>", id="control-character"),
        # Not a URI reference: every later parse of the stored bytes would refuse it (found by fuzzing).
        pytest.param(b"<message><x xmlns='urn:a]]>b'/></message>", id="namespace-not-a-uri"),
    ],
)
async def test_malformed_xml_is_not_well_formed(server: ServerProcess, payload: bytes) -> None:
    with trio.fail_after(TIMEOUT):
        client = await connect(server)
        await client.open_stream()
        await client.send(payload)
        await closed_with(client, "not-well-formed")


async def test_malformed_xml_after_bind(server: ServerProcess, accounts: Accounts) -> None:
    (alice,) = accounts(1)
    with trio.fail_after(TIMEOUT):
        client = await raw_login(server.c2s_port, alice, PASSWORD)
        await client.send("<message to='x@localhost'><body>hi</message>")
        await closed_with(client, "not-well-formed")


BILLION_LAUGHS = (
    "<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'>"
    + "".join(
        f"<!ENTITY lol{i} '{('&lol' + str(i - 1) + ';') * 10 if i > 1 else '&lol;' * 10}'>"
        for i in range(1, 10)
    )
    + "]>"
)


async def test_entity_bomb_in_prolog_is_restricted_xml_and_worker_stays_responsive(
    server: ServerProcess, accounts: Accounts
) -> None:
    (bob,) = accounts(1)
    with trio.fail_after(TIMEOUT):
        bystander = await raw_login(server.c2s_port, bob, PASSWORD)
        attacker = await connect(server)
        await attacker.send(BILLION_LAUGHS + header() + "<message><body>&lol9;</body></message>")
        await closed_with(attacker, "restricted-xml")
        await assert_pong(bystander)
        await bystander.aclose()


async def test_entity_reference_in_stanza_is_restricted_xml(
    server: ServerProcess, accounts: Accounts
) -> None:
    alice, bob = accounts(2)
    with trio.fail_after(TIMEOUT):
        bystander = await raw_login(server.c2s_port, bob, PASSWORD)
        client = await raw_login(server.c2s_port, alice, PASSWORD)
        await client.send(f"<message to='{bob}@localhost'><body>&lol9;</body></message>")
        await closed_with(client, "restricted-xml")
        await assert_pong(bystander)
        await bystander.aclose()


async def test_doctype_inside_the_stream_is_refused(server: ServerProcess, accounts: Accounts) -> None:
    (alice,) = accounts(1)
    with trio.fail_after(TIMEOUT):
        client = await raw_login(server.c2s_port, alice, PASSWORD)
        await client.send("<!DOCTYPE x [<!ENTITY a 'aaaaaaaaaa'>]><message><body>&a;</body></message>")
        assert await client.stream_error() in ("restricted-xml", "not-well-formed")
        await client.wait_closed()


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param("<!-- a comment -->", id="comment"),
        pytest.param("<?php echo 1; ?>", id="processing-instruction"),
        pytest.param("<message><body>x<!-- inside --></body></message>", id="comment-in-stanza"),
        pytest.param("<message><?pi inside?></message>", id="pi-in-stanza"),
    ],
)
@pytest.mark.parametrize("bound", [False, True], ids=["before-auth", "after-bind"])
async def test_comments_and_processing_instructions_are_restricted_xml(
    server: ServerProcess, accounts: Accounts, payload: str, bound: bool
) -> None:
    with trio.fail_after(TIMEOUT):
        if bound:
            client = await raw_login(server.c2s_port, accounts(1)[0], PASSWORD)
        else:
            client = await connect(server)
            await client.open_stream()
        await client.send(payload)
        await closed_with(client, "restricted-xml")


async def test_comment_before_the_stream_header_is_restricted_xml(server: ServerProcess) -> None:
    with trio.fail_after(TIMEOUT):
        client = await connect(server)
        await client.send("<?xml version='1.0'?><!-- hello -->" + header())
        await closed_with(client, "restricted-xml")


async def test_oversized_stanza_is_a_policy_violation(server: ServerProcess, accounts: Accounts) -> None:
    alice, bob = accounts(2)
    with trio.fail_after(TIMEOUT):
        bystander = await raw_login(server.c2s_port, bob, PASSWORD)
        client = await raw_login(server.c2s_port, alice, PASSWORD)
        body = "x" * 262144
        await send_tolerant(client, f"<message to='{bob}@localhost'><body>{body}</body></message>".encode())
        await closed_with(client, "policy-violation")
        # The oversized message never reached Bob: the first message he gets is the marker.
        await bystander.send("<presence/>")
        await bystander.expect(f"{{{CLIENT}}}presence")
        marker = await raw_login(server.c2s_port, alice, PASSWORD, "marker")
        await marker.send(f"<message to='{bob}@localhost/raw' id='marker'><body>m</body></message>")
        received = await bystander.expect(f"{{{CLIENT}}}message")
        assert received.get("id") == "marker"
        await marker.aclose()
        await bystander.aclose()


async def test_stanza_just_under_the_limit_is_accepted(server: ServerProcess, accounts: Accounts) -> None:
    (alice,) = accounts(1)
    with trio.fail_after(TIMEOUT):
        client = await raw_login(server.c2s_port, alice, PASSWORD)
        envelope = "<message to='{}@localhost/raw' id='big'><body>{}</body></message>"
        size = 262144 - len(envelope.format(alice, ""))
        await client.send(envelope.format(alice, "y" * size))
        echoed = await client.expect(f"{{{CLIENT}}}message")
        assert echoed.get("id") == "big"
        assert len(echoed.findtext(f"{{{CLIENT}}}body") or "") == size
        await assert_pong(client)
        await client.aclose()


# ---- stream-level mistakes ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "stanza",
    [
        pytest.param("<message to='someone@localhost'><body>hi</body></message>", id="message"),
        pytest.param(f"<iq type='get' id='p1' to='localhost'>{PING}</iq>", id="iq"),
        pytest.param("<presence/>", id="presence"),
    ],
)
async def test_stanza_before_authentication_is_not_authorized(server: ServerProcess, stanza: str) -> None:
    with trio.fail_after(TIMEOUT):
        tls = await connect(server)
        await tls.starttls()
        await tls.send(stanza)
        await closed_with(tls, "not-authorized")
        # Before STARTTLS too (TLS is required: not even a register IQ may come in clear).
        plain = await connect(server)
        await plain.open_stream()
        await plain.send(stanza)
        await closed_with(plain, "not-authorized")


@pytest.mark.parametrize(
    ("stream_header", "condition"),
    [
        pytest.param(header(content="jabber:server"), "invalid-namespace", id="content-namespace"),
        pytest.param(
            header(streams="http://example.com/streams"), "invalid-namespace", id="stream-namespace"
        ),
        pytest.param(header(domain="elsewhere.example"), "host-unknown", id="unknown-host"),
        pytest.param(header(version="2.0"), "unsupported-version", id="version-2"),
        pytest.param(
            "<?xml version='1.0' encoding='ISO-8859-1'?>" + header()[len("<?xml version='1.0'?>") :],
            "unsupported-encoding",
            id="latin-1",
        ),
    ],
)
async def test_bad_stream_header(server: ServerProcess, stream_header: str, condition: str) -> None:
    with trio.fail_after(TIMEOUT):
        client = await connect(server)
        await client.send(stream_header)
        # RFC 6120 §4.9.1.2: the server answers with its own header before the error.
        await closed_with(client, condition)
        assert client.header is not None
        assert client.header.tag == f"{{{STREAM_NS}}}stream"


async def test_stream_header_without_to_is_improper_addressing(server: ServerProcess) -> None:
    """RFC 6120 §4.7.2: the initiating entity MUST include 'to' in its initial stream header."""
    with trio.fail_after(TIMEOUT):
        client = await connect(server)
        await client.send(header().replace(" to='localhost'", ""))
        await closed_with(client, "improper-addressing")
        assert client.header is not None  # §4.9.1.2: our header first


@pytest.mark.parametrize(
    "first_bytes",
    [
        pytest.param(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n", id="http-request"),
        pytest.param(b"\r\n  hello", id="text"),
        pytest.param(b"\x80\x2e\x01\x03\x01", id="sslv2-hello"),
    ],
)
async def test_bytes_that_cannot_begin_a_stream_are_refused_at_once(
    server: ServerProcess, first_bytes: bytes
) -> None:
    """Answered as they arrive (RFC 6120 §4.9.3.13), not after the 30 s handshake timeout: after
    optional whitespace, an XML stream begins with '<'. (A TLS ClientHello is served as direct
    TLS instead: test_tls.py.)"""
    with trio.fail_after(5):
        client = await connect(server)
        await client.send(first_bytes)
        await closed_with(client, "not-well-formed")
        assert client.header is not None


async def test_spoofed_from_is_invalid_from(server: ServerProcess, accounts: Accounts) -> None:
    alice, bob = accounts(2)
    with trio.fail_after(TIMEOUT):
        bystander = await raw_login(server.c2s_port, bob, PASSWORD)
        await bystander.send("<presence/>")
        await bystander.expect(f"{{{CLIENT}}}presence")
        client = await raw_login(server.c2s_port, alice, PASSWORD)
        await client.send(
            f"<message from='{bob}@localhost/raw' to='{bob}@localhost' id='spoof'><body>x</body></message>"
        )
        await closed_with(client, "invalid-from")
        # The spoofed message was not delivered: the marker comes first.
        marker = await raw_login(server.c2s_port, alice, PASSWORD, "marker")
        await marker.send(f"<message to='{bob}@localhost' id='marker'><body>m</body></message>")
        assert (await bystander.expect(f"{{{CLIENT}}}message")).get("id") == "marker"
        await marker.aclose()
        await bystander.aclose()


async def test_own_from_addresses_are_accepted(server: ServerProcess, accounts: Accounts) -> None:
    (alice,) = accounts(1)
    with trio.fail_after(TIMEOUT):
        client = await raw_login(server.c2s_port, alice, PASSWORD)
        for i, own in enumerate(
            (f"{alice}@localhost/raw", f"{alice}@localhost", f"{alice.upper()}@LOCALHOST")
        ):
            await client.send(f"<iq type='get' id='own{i}' from='{own}' to='localhost'>{PING}</iq>")
            reply = await client.next_element(lambda e, i=i: e.get("id") == f"own{i}")
            assert reply.get("type") == "result"
        await client.aclose()


@pytest.mark.parametrize(
    "bad_jid", ["a@b@localhost", "@localhost", "user@", "user@localhost/", "us er@localhost"]
)
async def test_invalid_to_is_jid_malformed_and_the_stream_stays_up(
    server: ServerProcess, accounts: Accounts, bad_jid: str
) -> None:
    (alice,) = accounts(1)
    with trio.fail_after(TIMEOUT):
        client = await raw_login(server.c2s_port, alice, PASSWORD)
        await client.send(f"<message to='{bad_jid}' id='bad'><body>x</body></message>")
        reply = await client.next_element(lambda e: e.get("id") == "bad")
        assert reply.tag == f"{{{CLIENT}}}message"
        assert reply.get("type") == "error"
        assert error_condition(reply) == "jid-malformed"
        await client.send(f"<iq type='get' id='badiq' to='{bad_jid}'>{PING}</iq>")
        reply = await client.next_element(lambda e: e.get("id") == "badiq")
        assert reply.get("type") == "error"
        assert error_condition(reply) == "jid-malformed"
        await assert_pong(client)
        await client.aclose()


@pytest.mark.parametrize(
    "iq",
    [
        pytest.param(f"<iq type='get' to='localhost'>{PING}</iq>", id="no-id"),
        pytest.param(f"<iq type='get' id='' to='localhost'>{PING}</iq>", id="empty-id"),
        pytest.param(f"<iq type='get' id='two' to='localhost'>{PING}{PING}</iq>", id="two-payloads"),
        pytest.param("<iq type='get' id='none' to='localhost'/>", id="no-payload"),
        pytest.param(f"<iq type='fetch' id='type' to='localhost'>{PING}</iq>", id="bad-type"),
        pytest.param(f"<iq id='notype' to='localhost'>{PING}</iq>", id="no-type"),
        pytest.param(f"<iq type='set' id='two-own'>{PING}{PING}</iq>", id="two-payloads-no-to"),
    ],
)
async def test_invalid_iq_is_bad_request(server: ServerProcess, accounts: Accounts, iq: str) -> None:
    (alice,) = accounts(1)
    with trio.fail_after(TIMEOUT):
        client = await raw_login(server.c2s_port, alice, PASSWORD)
        await client.send(iq)
        reply = await client.expect(f"{{{CLIENT}}}iq")
        assert reply.get("type") == "error", etree.tostring(reply)
        assert error_condition(reply) == "bad-request"
        await assert_pong(client)
        await client.aclose()


@pytest.mark.parametrize(
    "element",
    [
        pytest.param("<query xmlns='jabber:client'/>", id="client-namespace"),
        pytest.param("<foo xmlns='urn:example:foo'/>", id="other-namespace"),
        pytest.param("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>", id="starttls-after-bind"),
    ],
)
async def test_unknown_top_level_element_after_bind(server: ServerProcess, accounts: Accounts,
                                                     element: str) -> None:  # fmt: skip
    (alice,) = accounts(1)
    with trio.fail_after(TIMEOUT):
        client = await raw_login(server.c2s_port, alice, PASSWORD)
        await client.send(element)
        await closed_with(client, "unsupported-stanza-type")


async def test_character_data_at_stream_level_is_bad_format(
    server: ServerProcess, accounts: Accounts
) -> None:
    (alice,) = accounts(1)
    with trio.fail_after(TIMEOUT):
        client = await raw_login(server.c2s_port, alice, PASSWORD)
        await client.send("  \n hello")
        await closed_with(client, "bad-format")


# ---- load and slow peers ------------------------------------------------------------------------

FLOOD = 3000


async def test_flood_does_not_starve_other_clients_and_loses_nothing(
    server: ServerProcess, accounts: Accounts
) -> None:
    flooder_name, other_name = accounts(2)
    answered: set[str] = set()
    with trio.fail_after(SLOW_TIMEOUT):
        flooder = await raw_login(server.c2s_port, flooder_name, PASSWORD)
        other = await raw_login(server.c2s_port, other_name, PASSWORD)
        other_done = trio.Event()
        first_answer = trio.Event()
        answered_while_flooding: list[int] = []

        async def flood() -> None:
            batch = []
            for i in range(FLOOD):
                batch.append(f"<iq type='get' id='f{i}' to='localhost'>{PING}</iq>")
                if len(batch) == 100:
                    await flooder.send("".join(batch))
                    batch.clear()

        async def collect() -> None:
            while len(answered) < FLOOD:
                reply = await flooder.next_element()
                assert reply.get("type") == "result", etree.tostring(reply)
                answered.add(reply.get("id") or "")
                first_answer.set()

        async def keep_pinging() -> None:
            # Wait until the flood is being answered, then ping while it is still going on.
            await first_answer.wait()
            for _ in range(5):
                with trio.fail_after(5):  # the check: each pong comes within seconds, flood or not
                    await assert_pong(other)
                answered_while_flooding.append(len(answered))
            other_done.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(flood)
            nursery.start_soon(collect)
            nursery.start_soon(keep_pinging)
        assert other_done.is_set()
        # The other client's pings were answered while the flood was still in progress.
        assert answered_while_flooding[-1] < FLOOD, answered_while_flooding
        assert answered == {f"f{i}" for i in range(FLOOD)}
        await assert_pong(flooder)
        await flooder.aclose()
        await other.aclose()


async def test_client_that_stops_reading_is_disconnected(server: ServerProcess, accounts: Accounts) -> None:
    sender_name, reader_name = accounts(2)
    with trio.fail_after(SLOW_TIMEOUT):
        stalled = await raw_login(server.c2s_port, reader_name, PASSWORD, "stalled")
        await stalled.send("<presence/>")
        # From here on `stalled` never reads again. Its second resource watches for it going away.
        watcher = await raw_login(server.c2s_port, reader_name, PASSWORD, "watcher")
        await watcher.send("<presence/>")
        await watcher.next_element(lambda e: e.get("from") == f"{reader_name}@localhost/watcher")
        sender = await raw_login(server.c2s_port, sender_name, PASSWORD)
        gone = trio.Event()
        body = "z" * 60000

        async def send_until_gone() -> None:
            i = 0
            while not gone.is_set():
                # Headlines to a resource that is gone are dropped, so nothing piles up elsewhere.
                await sender.send(
                    f"<message type='headline' to='{reader_name}@localhost/stalled' id='h{i}'>"
                    f"<body>{body}</body></message>"
                )
                i += 1

        async def watch() -> None:
            unavailable = await watcher.next_element(
                lambda e: (
                    e.get("from") == f"{reader_name}@localhost/stalled" and e.get("type") == "unavailable"
                )
            )
            assert unavailable.tag == f"{{{CLIENT}}}presence"
            gone.set()

        # Well before the 30 s write timeout: a full mailbox alone must end the session.
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(send_until_gone)
                nursery.start_soon(watch)
        # The sender's session is fine, the watcher too, and the server still serves new logins.
        await assert_pong(sender)
        await assert_pong(watcher)
        fresh = await raw_login(server.c2s_port, sender_name, PASSWORD, "fresh")
        await assert_pong(fresh)
        for client in (fresh, sender, watcher, stalled):
            await client.aclose()


@pytest.mark.parametrize("how", ["eof-without-tls-close", "tcp-reset"])
async def test_abrupt_disconnect_is_a_clean_logout(
    server: ServerProcess, accounts: Accounts, how: str
) -> None:
    """A TLS client that vanishes (no close_notify, or a TCP RST) is logged out like any other; the
    server logs no crash (checked by the `server_alive` fixture)."""
    (name,) = accounts(1)
    with trio.fail_after(TIMEOUT):
        watcher = await raw_login(server.c2s_port, name, PASSWORD, "watcher")
        await watcher.send("<presence/>")
        await watcher.next_element(lambda e: e.get("from") == f"{name}@localhost/watcher")
        doomed = await raw_login(server.c2s_port, name, PASSWORD, "doomed")
        await doomed.send("<presence/>")
        await watcher.next_element(lambda e: e.get("from") == f"{name}@localhost/doomed")
        tls = doomed.stream
        assert isinstance(tls, trio.SSLStream)
        tcp = tls.transport_stream
        assert isinstance(tcp, trio.SocketStream)
        if how == "tcp-reset":
            tcp.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await tcp.aclose()
        gone = await watcher.next_element(lambda e: e.get("from") == f"{name}@localhost/doomed")
        assert gone.get("type") == "unavailable"
        await assert_pong(watcher)
        await watcher.aclose()


async def test_plaintext_on_the_direct_tls_port_is_dropped(server: ServerProcess) -> None:
    with trio.fail_after(TIMEOUT):
        stream = await trio.open_tcp_stream("127.0.0.1", server.c2s_tls_port)
        await stream.send_all(header().encode())
        # The server gives up on the TLS handshake (at most a TLS alert comes back) and closes:
        # with a reset when the bytes it could not use were left unread.
        received = b""
        with contextlib.suppress(trio.BrokenResourceError):
            while chunk := await stream.receive_some(1024):
                received += chunk
        assert b"<stream" not in received
        await stream.aclose()


def test_handshake_timeout(tmp_path: Path) -> None:
    extra = "\n[limits]\nhandshake_timeout = 1.0\nidle_timeout = 2.0\n"
    with running_server(tmp_path, users=[("slow", PASSWORD)], extra=extra) as custom:

        async def main() -> None:
            with trio.fail_after(TIMEOUT):
                silent = await RawClient.connect(custom.c2s_port)
                await closed_with(silent, "connection-timeout")
                # On the direct TLS port nothing can be said before TLS: the socket is just closed.
                tls_silent = await trio.open_tcp_stream("127.0.0.1", custom.c2s_tls_port)
                assert await tls_silent.receive_some(1024) == b""
                await tls_silent.aclose()
                opened = await RawClient.connect(custom.c2s_port)
                await opened.starttls()
                await closed_with(opened, "connection-timeout")
                # A client that logs in in time is not cut off at the handshake deadline: it is
                # still there for the keepalive ping, which comes after the deadline.
                client = await RawClient.connect(custom.c2s_port)
                await client.login("slow", PASSWORD)
                keepalive = await client.next_element()
                assert keepalive.find("{urn:xmpp:ping}ping") is not None, etree.tostring(keepalive)
                await assert_pong(client)
                await client.aclose()

        trio.run(main)


async def test_server_still_serves_a_fresh_login(server: ServerProcess) -> None:
    add_users(server.config_path, [("survivor", PASSWORD)])
    with trio.fail_after(TIMEOUT):
        client = await raw_login(server.c2s_port, "survivor", PASSWORD)
        await assert_pong(client)
        await client.aclose()


async def test_extension_names_that_are_not_ascii_reach_the_recipient_as_xml(
    server: ServerProcess, accounts: Accounts
) -> None:
    """Found by the fuzzers: a child element or attribute whose name is not ASCII (well-formed:
    XML 1.0 §2.3) went out as "<b&#246;dy>" (lxml's ASCII serialization), so the recipient's
    parser failed on it: live, and from offline storage at each later login."""
    alice, bob = accounts(2)
    extension = "<bödy xmlns='urn:example:names' ä='1'>hé</bödy>"
    with trio.fail_after(TIMEOUT):
        sender = await raw_login(server.c2s_port, alice, PASSWORD)
        # Offline first: stored, then delivered at Bob's initial presence.
        await sender.send(f"<message to='{bob}@localhost' id='u-offline' type='chat'>{extension}</message>")
        await assert_pong(sender)  # the message was handled (stored) before Bob comes
        recipient = await raw_login(server.c2s_port, bob, PASSWORD, available=True)
        await sender.send(f"<message to='{bob}@localhost' id='u-live' type='chat'>{extension}</message>")
        for message_id in ("u-offline", "u-live"):
            message = await recipient.next_element(lambda e, i=message_id: e.get("id") == i)
            child = message.find("{urn:example:names}bödy")
            assert child is not None, etree.tostring(message)
            assert (child.get("ä"), child.text) == ("1", "hé")
        await assert_pong(recipient)  # its stream is still up
        await recipient.aclose()
        await sender.aclose()
