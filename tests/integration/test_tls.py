"""TLS: STARTTLS required by default, direct TLS (XEP-0368), old TLS versions refused, and the
features a TLS stream offers (XEP-0478 stanza size limits)."""

from __future__ import annotations

import base64
import contextlib
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from lxml import etree

from tests.integration.conftest import PASSWORD, account_pool
from tests.support.clients import (
    SASL_NS,
    Clients,
    ScramClient,
    aioxmpp_client,
    bound_jid,
    channel_binding_types,
    mechanisms,
    raw_bind,
    raw_client_context,
    raw_connect,
    raw_plain,
    raw_scram,
    raw_tls_stream,
    run,
    sasl_condition,
    slixmpp_client,
    tls_channel_binding,
)
from tests.support.raw import TLS_NS, RawClient, assert_pong
from tests.support.server import ServerProcess, running_server
from tests.support.timeouts import TIMEOUT

LIMITS = "{urn:xmpp:stanza-limits:0}"
REGISTER_FEATURE = "{http://jabber.org/features/iq-register}register"


@pytest.fixture(scope="module")
def pool(server: ServerProcess) -> Iterator[str]:
    return account_pool(server, "tls", 20)


def assert_stanza_limits(features: etree._Element) -> None:
    limits = features.find(f"{LIMITS}limits")
    assert limits is not None, etree.tostring(features)
    assert limits.findtext(f"{LIMITS}max-bytes") == "262144"
    assert int(limits.findtext(f"{LIMITS}idle-seconds") or "0") > 0


# ---- STARTTLS required -------------------------------------------------------------------------


async def test_only_starttls_offered_before_tls(server: ServerProcess) -> None:
    with trio.fail_after(TIMEOUT):
        client = await raw_connect(server.c2s_port)
        features = await client.open_stream()
        starttls = features.find(f"{{{TLS_NS}}}starttls")
        assert starttls is not None
        assert starttls.find(f"{{{TLS_NS}}}required") is not None
        # Nothing to authenticate or register with yet.
        assert mechanisms(features) == []
        assert features.find(REGISTER_FEATURE) is None
        await client.aclose()


async def test_auth_before_starttls(server: ServerProcess, user: str) -> None:
    with trio.fail_after(TIMEOUT):
        client = await raw_connect(server.c2s_port)
        await client.open_stream()
        await client.send(f"<auth xmlns='{SASL_NS}' mechanism='SCRAM-SHA-256'>biwsbj1hLHI9eA==</auth>")
        assert await client.stream_error() == "policy-violation"
        await client.wait_closed()
        assert client.closed


@pytest.mark.parametrize(
    "stanza",
    [
        "<message to='localhost'><body>hi</body></message>",
        "<presence/>",
        "<iq type='get' id='v1' to='localhost'><query xmlns='jabber:iq:version'/></iq>",
        "<iq type='get' id='r1'><query xmlns='jabber:iq:register'/></iq>",
    ],
)
async def test_stanza_before_starttls(server: ServerProcess, stanza: str) -> None:
    """RFC 6120 §4.9.3.12: stanzas before authentication (here: before TLS, even) end the stream."""
    with trio.fail_after(TIMEOUT):
        client = await raw_connect(server.c2s_port)
        await client.open_stream()
        await client.send(stanza)
        assert await client.stream_error() == "not-authorized"
        await client.wait_closed()


async def test_no_registration_in_cleartext(server: ServerProcess) -> None:
    """The password of an in-band registration must not cross the wire before TLS (XEP-0077 §8)."""
    with trio.fail_after(TIMEOUT):
        client = await raw_connect(server.c2s_port)
        await client.open_stream()
        await client.send(
            "<iq type='set' id='reg'><query xmlns='jabber:iq:register'>"
            "<username>cleartext</username><password>sniffed</password></query></iq>"
        )
        assert await client.stream_error() == "not-authorized"
        await client.aclose()
        # No account was made.
        client, _ = await raw_tls_stream(server.c2s_port)
        assert sasl_condition(await raw_plain(client, "cleartext", "sniffed")) == "not-authorized"
        await client.aclose()


async def test_features_after_starttls(server: ServerProcess, user: str) -> None:
    with trio.fail_after(TIMEOUT):
        client, features = await raw_tls_stream(server.c2s_port)
        assert features.find(f"{{{TLS_NS}}}starttls") is None
        assert "PLAIN" in mechanisms(features)
        assert features.find(REGISTER_FEATURE) is not None  # the shared server allows registration
        assert_stanza_limits(features)
        # XEP-0478 limits are announced again once authenticated.
        assert (await raw_plain(client, user, PASSWORD)).tag == f"{{{SASL_NS}}}success"
        assert_stanza_limits(await client.open_stream())
        await client.aclose()


async def test_starttls_twice(server: ServerProcess) -> None:
    with trio.fail_after(TIMEOUT):
        client, _ = await raw_tls_stream(server.c2s_port)
        await client.send(f"<starttls xmlns='{TLS_NS}'/>")
        assert await client.stream_error() == "policy-violation"
        await client.aclose()


async def test_cleartext_after_starttls_is_dropped(server: ServerProcess) -> None:
    """Bytes pipelined behind <starttls/> are not processed (CVE-2011-0411 class injection)."""
    with trio.fail_after(TIMEOUT):
        client = await raw_connect(server.c2s_port)
        await client.open_stream()
        # One write: <starttls/> and a cleartext stream restart an attacker could have injected.
        await client.send(
            f"<starttls xmlns='{TLS_NS}'/><stream:stream xmlns='jabber:client'"
            " xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>"
        )
        await client.expect(f"{{{TLS_NS}}}proceed")
        tls = trio.SSLStream(client.stream, raw_client_context(), server_hostname="localhost")
        await tls.do_handshake()
        client.stream = tls
        # The server waits for a header sent under TLS: it did not take the injected one.
        features = await client.open_stream()
        assert "SCRAM-SHA-256" in mechanisms(features)
        assert client.header is not None
        assert client.header.get("id")
        await client.aclose()


# ---- direct TLS (XEP-0368) ---------------------------------------------------------------------


async def test_direct_tls_raw(server: ServerProcess, user: str) -> None:
    with trio.fail_after(TIMEOUT):
        client = await raw_connect(
            server.c2s_tls_port, direct_tls=True, context=raw_client_context(alpn=["xmpp-client"])
        )
        assert client.stream.selected_alpn_protocol() == "xmpp-client"  # type: ignore[attr-defined]
        features = await client.open_stream()
        assert features.find(f"{{{TLS_NS}}}starttls") is None
        assert mechanisms(features) == [
            "SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN",
        ]  # fmt: skip
        assert channel_binding_types(features) == ["tls-server-end-point"]
        assert_stanza_limits(features)
        assert (await raw_plain(client, user, PASSWORD)).tag == f"{{{SASL_NS}}}success"
        bound = await raw_bind(client, "direct")
        assert bound_jid(bound) == f"{user}@localhost/direct"
        # STARTTLS makes no sense on a TLS stream.
        await client.send(f"<starttls xmlns='{TLS_NS}'/>")
        assert await client.stream_error() in ("policy-violation", "unsupported-stanza-type")
        await client.aclose()


@pytest.mark.parametrize("cb_type", ["tls-unique", "tls-server-end-point"])
async def test_direct_tls_scram_plus(server: ServerProcess, user: str, cb_type: str) -> None:
    """Channel binding works on direct TLS too (TLS 1.2 here, so both types are offered)."""
    with trio.fail_after(TIMEOUT):
        client = await raw_connect(server.c2s_tls_port, direct_tls=True, context=raw_client_context("1.2"))
        features = await client.open_stream()
        assert channel_binding_types(features) == ["tls-server-end-point", "tls-unique"]
        scram = ScramClient("SCRAM-SHA-1-PLUS", user, PASSWORD, cb_type=cb_type,
                            cb_data=tls_channel_binding(client, cb_type))  # fmt: skip
        success, _ = await raw_scram(client, scram, "SCRAM-SHA-1-PLUS")
        assert success.tag == f"{{{SASL_NS}}}success", etree.tostring(success)
        assert scram.verify(base64.b64decode(success.text or ""))
        await client.aclose()


def test_direct_tls_slixmpp(server: ServerProcess, user: str) -> None:
    async def scenario() -> None:
        async with slixmpp_client(
            f"{user}@localhost/sx", PASSWORD, server.c2s_tls_port, direct_tls=True
        ) as x:
            assert x.socket.version() in ("TLSv1.2", "TLSv1.3")
            assert str(x.boundjid) == f"{user}@localhost/sx"

    run(scenario())


def test_direct_tls_aioxmpp(server: ServerProcess, user: str) -> None:
    async def scenario() -> None:
        async with aioxmpp_client(f"{user}@localhost/ax", PASSWORD, server.c2s_tls_port, direct_tls=True,
                                  mechanism="SCRAM-SHA-256-PLUS") as c:  # fmt: skip
            assert str(c.local_jid) == f"{user}@localhost/ax"

    run(scenario())


# ---- direct TLS on the STARTTLS port -----------------------------------------------------------


async def test_client_hello_on_the_starttls_port_gets_direct_tls(server: ServerProcess, user: str) -> None:
    """A client that starts TLS at once on the STARTTLS port is served direct TLS on that very
    connection, as on the XEP-0368 port: no STARTTLS offered, channel binding to that TLS session,
    then a full login."""
    with trio.fail_after(TIMEOUT):
        client = await raw_connect(
            server.c2s_port, direct_tls=True, context=raw_client_context(alpn=["xmpp-client"])
        )
        assert client.stream.selected_alpn_protocol() == "xmpp-client"  # type: ignore[attr-defined]
        features = await client.open_stream()
        assert features.find(f"{{{TLS_NS}}}starttls") is None
        assert "SCRAM-SHA-256-PLUS" in mechanisms(features)
        assert channel_binding_types(features) == ["tls-server-end-point"]
        cb_data = tls_channel_binding(client, "tls-server-end-point")
        scram = ScramClient("SCRAM-SHA-256-PLUS", user, PASSWORD, cb_type="tls-server-end-point",
                            cb_data=cb_data)  # fmt: skip
        success, _ = await raw_scram(client, scram, "SCRAM-SHA-256-PLUS")
        assert success.tag == f"{{{SASL_NS}}}success", etree.tostring(success)
        assert scram.verify(base64.b64decode(success.text or ""))
        bound = await raw_bind(client, "sniffed")
        assert bound_jid(bound) == f"{user}@localhost/sniffed"
        await assert_pong(client)
        await client.aclose()


def test_slixmpp_direct_tls_first_on_the_starttls_port(clients: Clients, user: str) -> None:
    """slixmpp's own order (since 1.9, for a domain without SRV records): direct TLS to the port it
    was given, then STARTTLS. Its direct TLS attempt succeeds on the STARTTLS port, at once: it
    never falls back to STARTTLS, and never waits for the handshake timeout (30 s here)."""

    async def scenario() -> None:
        async with clients.slixmpp(user, "first", direct_tls=True, starttls_fallback=True) as x:
            assert x.enable_direct_tls
            assert x.enable_starttls
            assert "starttls" not in x.features  # the stream was TLS from its first byte
            assert x.socket.version() in ("TLSv1.2", "TLSv1.3")
            assert str(x.boundjid) == f"{user}@localhost/first"

    run(scenario())


async def test_plaintext_on_direct_tls_port(server: ServerProcess) -> None:
    """A cleartext client on the TLS port gets no XMPP at all."""
    with trio.fail_after(TIMEOUT):
        client = RawClient(await trio.open_tcp_stream("127.0.0.1", server.c2s_tls_port), "localhost")
        await client.send(
            "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
            "xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>"
        )
        data = b""
        # The failed handshake ends the connection, with a reset when our bytes were left unread.
        with trio.move_on_after(5), contextlib.suppress(trio.BrokenResourceError):
            while chunk := await client.stream.receive_some(4096):
                data += chunk
        assert b"<stream:features" not in data
        assert b"mechanism" not in data
        await client.aclose()


# ---- TLS versions ------------------------------------------------------------------------------


def _old_tls_context(version: ssl.TLSVersion) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = version
    context.maximum_version = version
    context.set_ciphers("ALL:@SECLEVEL=0")  # let our side offer the old version at all
    return context


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
@pytest.mark.parametrize("version", ["TLSv1", "TLSv1_1"])
@pytest.mark.parametrize("direct_tls", [False, True])
async def test_old_tls_refused(server: ServerProcess, version: str, direct_tls: bool) -> None:
    context = _old_tls_context(getattr(ssl.TLSVersion, version))
    with trio.fail_after(TIMEOUT):
        tcp = await trio.open_tcp_stream("127.0.0.1", server.c2s_tls_port if direct_tls else server.c2s_port)
        client = RawClient(tcp, "localhost")
        if not direct_tls:
            await client.request_starttls()
        tls = trio.SSLStream(tcp, context, server_hostname="localhost")
        with pytest.raises((trio.BrokenResourceError, ssl.SSLError)) as refused:
            await tls.do_handshake()
        # The hello went out (our side could speak the old version); the server turned it down.
        cause = refused.value if isinstance(refused.value, ssl.SSLError) else refused.value.__cause__
        assert "NO_PROTOCOLS_AVAILABLE" not in str(cause)
        await client.aclose()


async def test_tls12_accepted_by_default(server: ServerProcess) -> None:
    """The control for the refusals: the same kind of client at TLS 1.2 gets through."""
    context = _old_tls_context(ssl.TLSVersion.TLSv1_2)
    with trio.fail_after(TIMEOUT):
        client = await raw_connect(server.c2s_tls_port, direct_tls=True, context=context)
        assert client.stream.version() == "TLSv1.2"  # type: ignore[attr-defined]
        assert "PLAIN" in mechanisms(await client.open_stream())
        await client.aclose()


@pytest.fixture
def tls13_server(tmp_path: Path) -> Iterator[ServerProcess]:
    with running_server(tmp_path, extra='\n[tls]\nmin_version = "1.3"\n') as process:
        yield process


async def test_min_version_13(tls13_server: ServerProcess) -> None:
    with trio.fail_after(TIMEOUT):
        tls13 = await raw_connect(tls13_server.c2s_tls_port, direct_tls=True)
        assert tls13.stream.version() == "TLSv1.3"  # type: ignore[attr-defined]
        await tls13.aclose()
        for port in (tls13_server.c2s_tls_port, tls13_server.c2s_port):
            tcp = await trio.open_tcp_stream("127.0.0.1", port)
            client = RawClient(tcp, "localhost")
            if port == tls13_server.c2s_port:
                await client.request_starttls()
            tls = trio.SSLStream(tcp, raw_client_context("1.2"), server_hostname="localhost")
            with pytest.raises((trio.BrokenResourceError, ssl.SSLError)):
                await tls.do_handshake()
            await client.aclose()
