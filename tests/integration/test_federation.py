"""Federation with a real Prosody (Debian's package): imactor.test <-> prosody.test on loopback.

Both servers start once for the module; imactor with two workers (each keeps its own outgoing
streams, and a remote server's stream may land on either). imactor reaches Prosody through
`[s2s] routes`; Prosody reaches imactor through its own resolver's static configuration (an SRV
record in a local zone of libunbound: Prosody 0.12 has no static s2s route, see
bench/peers/prosody.py). No real DNS, no /etc/hosts. The first pair authenticates with Server
Dialback over STARTTLS (self-signed certificates: `require_valid_certificates = false` here,
`s2s_secure_auth = false` there); the second (`certified`) with certificates a test CA signed,
SASL EXTERNAL both ways and no dialback.

Prosody's accounts are bench0, bench1, ... (the shared helper's naming).
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
from lxml import etree

from bench.peers.common import free_ports
from bench.peers.prosody import FederatedProsody, running_federated_prosody
from imactor.tls import generate_self_signed
from imactor.xmpp.namespaces import NS_DISCO_INFO, NS_PING, NS_TIME, NS_VERSION
from tests.support.ca import TestCA
from tests.support.muc import create_instant, heard, join, say
from tests.support.peer import Peer, error_condition, marker, message, presence, subscribe
from tests.support.peer_install import ensure_peer
from tests.support.raw import DIALBACK_NS, RawClient, RawServer, client_context
from tests.support.server import ServerProcess, running_server
from tests.support.timeouts import TIMEOUT

IMACTOR, PROSODY = "imactor.test", "prosody.test"
PASSWORD = "federation password"
IMACTOR_USERS = ["alice", "amy", "anna", "abel", "bob", "carol", "dave", "erin", "fay", "gina"]
RAW_DOMAINS = 4
PROSODY_USERS = [f"bench{i}" for i in range(6)]
#: raw3.test's own inbound rate ([s2s] rate_overrides): low, for the flood test; every other
#: domain (Prosody's too) has the default, so the other tests are not slowed down.
FLOOD_RATE, FLOOD_BURST = 20, 10



@dataclass
class Federation:
    imactor: ServerProcess
    prosody: FederatedProsody
    #: Where imactor connects for raw<N>.test: the tests' fake authoritative server listens here.
    authority: socket.socket
    directory: Path

    async def imactor_user(self, name: str) -> Peer:
        return await Peer.online(self.imactor.c2s_port, name, PASSWORD, domain=IMACTOR)

    async def prosody_user(self, name: str) -> Peer:
        return await Peer.online(self.prosody.c2s_port, name, PASSWORD, domain=PROSODY)


def s2s_config(routes: dict[str, str], options: str = "") -> str:
    pinned = ", ".join(f'"{domain}" = "{target}"' for domain, target in routes.items())
    return f"""
[listen.s2s]
host = "127.0.0.1"
port = 0

[s2s]
enabled = true
connect_timeout = 10.0
handshake_timeout = 10.0
deny = ["denied.test"]
routes = {{ {pinned} }}
{options}"""


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    ensure_peer("prosody")
    directory = tmp_path_factory.mktemp("federation")
    # Prosody's s2s port is chosen first (by the OS) so that imactor's route can name it;
    # imactor's is then the OS's choice at bind time, which Prosody's resolver is told.
    (prosody_s2s, closed) = free_ports(2)
    routes = {PROSODY: f"127.0.0.1:{prosody_s2s}", "closed.test": f"127.0.0.1:{closed}"}
    # The raw tests' own authoritative server for raw<N>.test, and a server that never speaks.
    authority, silent = _listening(), _listening()
    routes |= {f"raw{n}.test": f"127.0.0.1:{authority.getsockname()[1]}" for n in range(RAW_DOMAINS)}
    routes |= {name: f"127.0.0.1:{silent.getsockname()[1]}" for name in ("silent.test", "silent2.test")}
    extra = s2s_config(
        routes, f'rate_overrides = {{ "raw3.test" = {{ rate = {FLOOD_RATE}, burst = {FLOOD_BURST} }} }}\n'
    )
    imactor_users = [(name, PASSWORD) for name in IMACTOR_USERS]
    prosody_users = [(name, PASSWORD) for name in PROSODY_USERS]
    home = _mkdir(directory / "imactor")
    with (
        running_server(home, domain=IMACTOR, extra=extra, users=imactor_users, workers=2) as imactor,
        running_federated_prosody(directory, prosody_users, domain=PROSODY, s2s_port=prosody_s2s,
                                  peer=IMACTOR, peer_port=imactor.ports["s2s"]) as prosody,
    ):  # fmt: skip
        yield Federation(imactor, prosody, authority, directory)
    authority.close()
    silent.close()


def _listening() -> socket.socket:
    """A loopback socket listening on a port of the OS's choice (nobody accepts until a test does)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    return sock


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


async def test_chat_from_imactor_to_prosody(federation: Federation) -> None:
    with trio.fail_after(TIMEOUT):
        alice = await federation.imactor_user("alice")
        bench0 = await federation.prosody_user("bench0")
        await alice.send(
            f"<message to='{bench0.jid}' type='chat' id='m1'><body>hello Prosody</body></message>"
        )
        got = await bench0.expect(message(from_=alice.jid, id_="m1"))
        assert got.findtext("{jabber:client}body") == "hello Prosody"


async def test_chat_from_prosody_to_imactor(federation: Federation) -> None:
    with trio.fail_after(TIMEOUT):
        amy = await federation.imactor_user("amy")
        bench1 = await federation.prosody_user("bench1")
        await bench1.send(
            f"<message to='{amy.bare}' type='chat' id='m2'><body>hello imactor</body></message>"
        )
        got = await amy.expect(message(from_=bench1.jid, id_="m2"))
        assert got.findtext("{jabber:client}body") == "hello imactor"
        # And the answer goes back on imactor's own outbound stream.
        await amy.send(f"<message to='{bench1.jid}' type='chat' id='m3'><body>hi back</body></message>")
        back = await bench1.expect(message(from_=amy.jid, id_="m3"))
        assert back.findtext("{jabber:client}body") == "hi back"


async def test_presence_subscriptions_both_ways(federation: Federation) -> None:
    with trio.fail_after(TIMEOUT):
        anna = await federation.imactor_user("anna")
        bench2 = await federation.prosody_user("bench2")
        await subscribe(anna, bench2)  # imactor user subscribes to the Prosody user, approved
        await subscribe(bench2, anna)  # and back: both now "both"
        assert (await anna.roster_items())[bench2.bare].get("subscription") == "both"
        assert (await bench2.roster_items())[anna.bare].get("subscription") == "both"
        # A presence change crosses both ways to the subscribed contact.
        await anna.send("<presence><status>federated</status></presence>")
        seen = await bench2.expect(presence(from_=anna.jid))
        assert seen.findtext("{jabber:client}status") == "federated"
        await bench2.send("<presence><show>away</show></presence>")
        seen = await anna.expect(presence(from_=bench2.jid))
        assert seen.findtext("{jabber:client}show") == "away"


async def test_unknown_prosody_user_bounces_back(federation: Federation) -> None:
    with trio.fail_after(TIMEOUT):
        abel = await federation.imactor_user("abel")
        await abel.send(
            f"<iq type='get' id='v1' to='nobody@{PROSODY}'><query xmlns='jabber:iq:version'/></iq>"
        )
        reply = await abel.expect(lambda e: e.get("id") == "v1")
        assert error_condition(reply) == "service-unavailable"


async def test_a_prosody_user_in_an_imactor_room(federation: Federation) -> None:
    """The room's stanzas leave from conference.imactor.test, on a stream authenticated for that
    domain (Prosody checks it by dialback against conference.imactor.test)."""
    room = f"lounge@conference.{IMACTOR}"
    with trio.fail_after(TIMEOUT):
        erin = await federation.imactor_user("erin")
        await create_instant(erin, room, "erin")
        bench3 = await federation.prosody_user("bench3")
        joined = await join(bench3, room, "visitor")
        assert joined.self_presence.get("from") == f"{room}/visitor"
        await say(erin, room, "welcome across")
        await heard(bench3, room, "welcome across")
        await say(bench3, room, "glad to be here")
        await heard(erin, room, "glad to be here")

# ---- remote users ask the server itself (host IQs over s2s) --------------------------------------


async def test_a_prosody_user_pings_the_server(federation: Federation) -> None:
    with trio.fail_after(TIMEOUT):
        bench0 = await federation.prosody_user("bench0")
        reply = await bench0.iq(f"<ping xmlns='{NS_PING}'/>", to=IMACTOR)
        assert (reply.get("type"), reply.get("from")) == ("result", IMACTOR)


async def test_a_prosody_user_discovers_the_server(federation: Federation) -> None:
    with trio.fail_after(TIMEOUT):
        bench1 = await federation.prosody_user("bench1")
        reply = await bench1.iq(f"<query xmlns='{NS_DISCO_INFO}'/>", to=IMACTOR)
        assert reply.get("type") == "result", etree.tostring(reply)
        identity = reply.find(f".//{{{NS_DISCO_INFO}}}identity")
        assert identity is not None
        assert (identity.get("category"), identity.get("type")) == ("server", "im")
        features = {feature.get("var") for feature in reply.iter(f"{{{NS_DISCO_INFO}}}feature")}
        assert {NS_DISCO_INFO, NS_PING, NS_VERSION, NS_TIME} <= features
        items = await bench1.iq("<query xmlns='http://jabber.org/protocol/disco#items'/>", to=IMACTOR)
        assert items.get("type") == "result"


async def test_a_prosody_user_asks_version_and_time(federation: Federation) -> None:
    with trio.fail_after(TIMEOUT):
        bench2 = await federation.prosody_user("bench2")
        version = await bench2.iq(f"<query xmlns='{NS_VERSION}'/>", to=IMACTOR)
        assert version.get("type") == "result"
        assert version.findtext(f".//{{{NS_VERSION}}}name") == "imactor"
        clock = await bench2.iq(f"<time xmlns='{NS_TIME}'/>", to=IMACTOR)
        assert clock.get("type") == "result"
        assert clock.findtext(f".//{{{NS_TIME}}}utc", "").endswith("Z")


async def test_account_features_of_the_server_stay_local(federation: Federation) -> None:
    """XEP-0077 to the server speaks for the sender's own account: a remote user gets
    service-unavailable (its <remove/> would otherwise name an account of ours)."""
    with trio.fail_after(TIMEOUT):
        bench3 = await federation.prosody_user("bench3")
        reply = await bench3.iq("<query xmlns='jabber:iq:register'/>", to=IMACTOR)
        assert error_condition(reply) == "service-unavailable"


async def test_disco_of_an_account_needs_a_subscription(federation: Federation) -> None:
    """disco#info of an account's bare JID: a remote contact is treated as a local one, answered
    once it has a presence subscription (XEP-0030 §3.1, RFC 6121 §8.5.2.1.3)."""
    with trio.fail_after(TIMEOUT):
        gina = await federation.imactor_user("gina")
        bench4 = await federation.prosody_user("bench4")
        before = await bench4.iq(f"<query xmlns='{NS_DISCO_INFO}'/>", to=gina.bare)
        assert error_condition(before) == "service-unavailable"
        await subscribe(bench4, gina)
        after = await bench4.iq(f"<query xmlns='{NS_DISCO_INFO}'/>", to=gina.bare)
        assert after.get("type") == "result", etree.tostring(after)
        identity = after.find(f".//{{{NS_DISCO_INFO}}}identity")
        assert identity is not None
        assert (identity.get("category"), identity.get("type")) == ("account", "registered")


# ---- imactor's outbound streams that cannot be set up -------------------------------------------


@pytest.mark.parametrize(
    ("domain", "condition"),
    [
        ("closed.test", "remote-server-not-found"),  # nothing listens on the pinned port
        ("silent.test", "remote-server-timeout"),  # a TCP peer that never answers our header
        ("denied.test", "remote-server-not-found"),  # [s2s] deny: no connection is even tried
    ],
)
async def test_unreachable_servers_bounce(federation: Federation, domain: str, condition: str) -> None:
    with trio.fail_after(TIMEOUT):
        bob = await federation.imactor_user("bob")
        await bob.send(f"<message to='someone@{domain}' id='u-{domain}'><body>anyone?</body></message>")
        reply = await bob.expect(lambda e: e.get("id") == f"u-{domain}")
        assert error_condition(reply) == condition


async def test_a_server_that_failed_is_not_tried_again_at_once(federation: Federation) -> None:
    """Reconnection backs off: after a failed attempt (here the handshake timeout, 10 s), the
    next stanzas bounce at once with the same condition instead of waiting out another attempt."""
    with trio.fail_after(TIMEOUT):
        bob = await federation.imactor_user("bob")
        await bob.send("<message to='someone@silent2.test' id='first'><body>anyone?</body></message>")
        assert error_condition(await bob.expect(lambda e: e.get("id") == "first")) == "remote-server-timeout"
        with trio.fail_after(5.0):  # well under the 10 s another attempt would take
            await bob.send("<message to='someone@silent2.test' id='second'><body>still?</body></message>")
            second = await bob.expect(lambda e: e.get("id") == "second")
        assert error_condition(second) == "remote-server-timeout"

# ---- bad input from remote servers, raw XML -------------------------------------------------------


TLS = "urn:ietf:params:xml:ns:xmpp-tls"
AUTH_HEADER = (
    "<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams'"
    " xmlns:db='jabber:server:dialback' from='{origin}' to='{to}' id='{id}' version='1.0'>"
)


def _server_context(directory: Path, domain: str) -> ssl.SSLContext:
    cert_pem, key_pem = generate_self_signed(domain)
    cert, key = directory / f"{domain}.crt", directory / f"{domain}.key"
    cert.write_bytes(cert_pem)
    key.write_bytes(key_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


async def authoritative_server(federation: Federation, origin: str, good_key: str) -> None:
    """The authoritative server of `origin` as imactor sees it (XEP-0220 §2.1.3): it takes the
    stream imactor opens there, does STARTTLS, accepts imactor's own key, and answers each
    <db:verify/> with valid only for `good_key`. Runs until cancelled."""
    listener = trio.SocketListener(trio.socket.from_stdlib_socket(federation.authority.dup()))
    stream = await listener.accept()
    peer = RawClient(stream, IMACTOR)
    await _header(peer)
    starttls = f"<stream:features><starttls xmlns='{TLS}'><required/></starttls></stream:features>"
    await peer.send(AUTH_HEADER.format(origin=origin, to=IMACTOR, id="auth1") + starttls)
    await peer.expect(f"{{{TLS}}}starttls")
    await peer.send(f"<proceed xmlns='{TLS}'/>")
    tls = trio.SSLStream(peer.stream, _server_context(federation.directory, origin), server_side=True)
    await tls.do_handshake()
    peer.stream = tls
    peer._new_parser()
    await _header(peer)
    dialback = "<stream:features><dialback xmlns='urn:xmpp:features:dialback'/></stream:features>"
    await peer.send(AUTH_HEADER.format(origin=origin, to=IMACTOR, id="auth2") + dialback)
    while True:
        element = await peer.next_element()
        kind = etree.QName(element).localname
        if kind == "verify":
            verdict = "valid" if (element.text or "").strip() == good_key else "invalid"
            await peer.send(f"<db:verify xmlns:db='{DIALBACK_NS}' from='{origin}' to='{IMACTOR}' "
                            f"id='{element.get('id')}' type='{verdict}'/>")  # fmt: skip
        elif kind == "result":
            await peer.send(
                f"<db:result xmlns:db='{DIALBACK_NS}' from='{origin}' to='{IMACTOR}' type='valid'/>"
            )


async def _header(peer: RawClient) -> None:
    while peer.header is None:
        assert await peer._read(), "imactor closed the stream"


async def raw_server(federation: Federation, origin: str) -> RawServer:
    raw = await RawServer.connect_to(federation.imactor.ports["s2s"], IMACTOR, origin)
    features = await raw.starttls()
    assert features.find("{urn:xmpp:features:dialback}dialback") is not None
    return raw


async def test_forged_from_is_refused_then_ends_the_stream(federation: Federation) -> None:
    with trio.fail_after(TIMEOUT):
        carol = await federation.imactor_user("carol")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(authoritative_server, federation, "raw0.test", "good-key")
            raw = await raw_server(federation, "raw0.test")
            verdict = await raw.dialback("good-key")
            assert verdict.get("type") == "valid"
            # A domain the stream did not authenticate: refused (RFC 6120 §8.1.2.2), not delivered.
            await raw.send(
                f"<message from='mallory@evil.test' to='{carol.bare}' id='forged1'><body>x</body></message>"
            )
            await raw.send(
                f"<message from='someone@raw0.test' to='{carol.bare}' id='honest'><body>y</body></message>"
            )
            earlier = await carol.before(message(id_="honest"))
            assert [e for e in earlier if e.get("id") == "forged1"] == []
            # The second offence ends the stream with <invalid-from/>.
            await raw.send(f"<message from='mallory@evil.test' to='{carol.bare}' id='forged2'/>")
            assert await raw.stream_error() == "invalid-from"
            nursery.cancel_scope.cancel()


async def test_a_dialback_key_that_does_not_verify(federation: Federation) -> None:
    with trio.fail_after(TIMEOUT):
        dave = await federation.imactor_user("dave")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(authoritative_server, federation, "raw1.test", "the real key")
            raw = await raw_server(federation, "raw1.test")
            verdict = await raw.dialback("a guessed key")
            assert verdict.get("type") == "invalid"
            # Not authenticated: its stanzas are refused; the stream itself stays up for now.
            await raw.send(
                f"<message from='x@raw1.test' to='{dave.bare}' id='unverified'><body>x</body></message>"
            )
            await raw.send(f"<message from='x@raw1.test' to='{dave.bare}' id='unverified2'/>")
            assert await raw.stream_error() == "invalid-from"
            nursery.cancel_scope.cancel()
        # Nothing reached dave: a marker from a local sender overtakes nothing.
        alice = await federation.imactor_user("alice")
        earlier = await marker(alice, dave)
        assert [e for e in earlier if str(e.get("id", "")).startswith("unverified")] == []


async def test_a_flooding_server_is_read_slower_and_loses_nothing(federation: Federation) -> None:
    """[s2s] rate_overrides gives raw3.test 20 stanzas/s with a burst of 10: 70 messages sent at
    once all arrive, in order, and no sooner than the rate allows ((70 - 10) / 20 = 3 s)."""
    count = 70
    with trio.fail_after(TIMEOUT):
        fay = await federation.imactor_user("fay")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(authoritative_server, federation, "raw3.test", "flood-key")
            raw = await raw_server(federation, "raw3.test")
            assert (await raw.dialback("flood-key")).get("type") == "valid"
            started = time.monotonic()
            flood = (f"<message from='x@raw3.test' to='{fay.bare}' id='f{n}'><body>{n}</body></message>"
                     for n in range(count))  # fmt: skip
            await raw.send("".join(flood))
            received = [await fay.expect(message(id_=f"f{n}")) for n in range(count)]
            elapsed = time.monotonic() - started
            nursery.cancel_scope.cancel()
        assert [m.findtext("{jabber:client}body") for m in received] == [str(n) for n in range(count)]
        assert elapsed >= (count - FLOOD_BURST) / FLOOD_RATE * 0.99, elapsed
        assert fay.inbox == []  # no error, nothing twice
        workers = (await trio.to_thread.run_sync(federation.imactor.status))["workers"]
        throttled = sum(worker["s2s"]["throttled"] for worker in workers)
        assert throttled >= count - FLOOD_BURST


async def test_a_peer_that_never_authenticates_times_out(federation: Federation) -> None:
    with trio.fail_after(TIMEOUT):
        raw = await RawServer.connect_to(federation.imactor.ports["s2s"], IMACTOR, "raw2.test")
        await raw.open_stream()  # and then nothing: no STARTTLS, no key
        with trio.fail_after(10.0 + 10.0):  # [s2s] handshake_timeout here is 10 s
            assert await raw.stream_error() == "connection-timeout"
        await raw.wait_closed()
        assert raw.closed


# ---- certificates from a CA both trust: SASL EXTERNAL both ways (XEP-0178) ----------------------


@pytest.fixture(scope="module")
def certified(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    """A second pair where both sides require certificates that a test CA signed for their
    domains: imactor neither offers nor accepts dialback, Prosody has s2s_secure_auth."""
    directory = tmp_path_factory.mktemp("certified")
    _mkdir(directory / "imactor")
    ca = TestCA(_mkdir(directory / "ca"))
    ours, theirs = ca.issue(IMACTOR), ca.issue(PROSODY)
    (prosody_s2s,) = free_ports(1)
    options = f"""require_valid_certificates = true
ca_file = "{ca.path}"

[tls]
certificate = "{ours.certificate}"
key = "{ours.key}"
"""
    extra = s2s_config({PROSODY: f"127.0.0.1:{prosody_s2s}"}, options)
    imactor_users = [(name, PASSWORD) for name in IMACTOR_USERS]
    prosody_users = [(name, PASSWORD) for name in PROSODY_USERS]
    with (
        running_server(directory / "imactor", domain=IMACTOR, extra=extra, users=imactor_users) as imactor,
        running_federated_prosody(directory, prosody_users, domain=PROSODY, s2s_port=prosody_s2s,
                                  peer=IMACTOR, peer_port=imactor.ports["s2s"],
                                  ca=(theirs.certificate, theirs.key, ca.path)) as prosody,
    ):  # fmt: skip
        unused = _listening()
        yield Federation(imactor, prosody, unused, directory)
        unused.close()


async def test_chat_both_ways_with_certificates(certified: Federation) -> None:
    with trio.fail_after(TIMEOUT):
        alice = await certified.imactor_user("alice")
        bench0 = await certified.prosody_user("bench0")
        await alice.send(f"<message to='{bench0.jid}' type='chat' id='c1'><body>signed out</body></message>")
        got = await bench0.expect(message(from_=alice.jid, id_="c1"))
        assert got.findtext("{jabber:client}body") == "signed out"
        await bench0.send(f"<message to='{alice.jid}' type='chat' id='c2'><body>signed in</body></message>")
        back = await alice.expect(message(from_=bench0.jid, id_="c2"))
        assert back.findtext("{jabber:client}body") == "signed in"


async def test_direct_tls_on_the_s2s_port(federation: Federation) -> None:
    """XEP-0368: a TLS ClientHello as the first byte makes the stream direct TLS (ALPN
    xmpp-server); the features then offer dialback at once, with no STARTTLS."""
    context = client_context()
    context.set_alpn_protocols(["xmpp-server"])
    with trio.fail_after(TIMEOUT):
        port = federation.imactor.ports["s2s"]
        raw = await RawServer.connect_to(port, IMACTOR, "raw2.test", context=context)
        assert isinstance(raw.stream, trio.SSLStream)
        assert raw.stream.selected_alpn_protocol() == "xmpp-server"
        features = await raw.open_stream()
        assert features.find(f"{{{TLS}}}starttls") is None
        assert features.find("{urn:xmpp:features:dialback}dialback") is not None
        await raw.aclose()
