"""Virtual hosts ([[hosts]]): two domains on one server, each with its own accounts and certificate.

One server for the module: the primary domain `alpha.test` and the host `beta.test`, each with a
certificate of the module's test CA; clients verify them against that CA (SNI picks the host's).
beta.test does without the `version` module and has its own upload size limit. Two workers, so
that the accounts of both hosts are homed on both and reach each other over the mesh.
"""

from __future__ import annotations

import base64
import hashlib
import socket
import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import slixmpp
import trio
from cryptography import x509
from lxml import etree

from imactor.cluster.placement import home
from imactor.tls import generate_self_signed
from imactor.xmpp.namespaces import NS_DISCO_INFO, NS_DISCO_ITEMS, NS_PING, NS_VERSION
from tests.integration.conftest import PASSWORD
from tests.integration.test_sasl2 import BIND2, FAST, HT, SASL2, Agent, fast_login, new_token, q, scram_login
from tests.support.ca import TestCA
from tests.support.clients import AuthFailed, aioxmpp_client, event_queue, run, slixmpp_client
from tests.support.muc import create_instant, heard, join, join_error, say
from tests.support.peer import Element, Peer, error_condition, show
from tests.support.raw import DIALBACK_NS, HEADER, RawClient, RawServer
from tests.support.server import ServerProcess, imactor_cli, running_server
from tests.support.timeouts import TIMEOUT
from tests.support.web_clients import BoshClient, ws_client

ALPHA, BETA = "alpha.test", "beta.test"
#: Fake remote servers: one that talks to our domains, one that our domains talk to.
REMOTE_IN, REMOTE_OUT = "remote-in.test", "remote-out.test"
BETA_UPLOAD_LIMIT = 1234
OTHER_PASSWORD = "a different secret"


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return TestCA(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def remote_servers() -> Iterator[dict[str, socket.socket]]:
    """Where imactor reaches the fake remote servers of the federation tests ([s2s] routes)."""
    sockets = {domain: socket.create_server(("127.0.0.1", 0)) for domain in (REMOTE_IN, REMOTE_OUT)}
    yield sockets
    for listening in sockets.values():
        listening.close()


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, ca: TestCA, remote_servers: dict[str, socket.socket]
) -> Iterator[ServerProcess]:
    alpha, beta = ca.issue(ALPHA), ca.issue(BETA)
    routes = ", ".join(f'"{domain}" = "127.0.0.1:{listening.getsockname()[1]}"'
                       for domain, listening in remote_servers.items())  # fmt: skip
    extra = (
        f'\n[listen.s2s]\nhost = "127.0.0.1"\nport = 0\n[s2s]\nenabled = true\nroutes = {{ {routes} }}\n'
        f'\n[tls]\ncertificate = "{alpha.certificate}"\nkey = "{alpha.key}"\n'
    )
    extra += (
        f'\n[[hosts]]\ndomain = "{BETA}"\ncertificate = "{beta.certificate}"\nkey = "{beta.key}"\n'
        'modules_disabled = ["version"]\n'
        f"[hosts.modules.http_upload]\nmax_file_size = {BETA_UPLOAD_LIMIT}\n"
    )
    users = [
        ("alice", PASSWORD), (f"alice@{BETA}", OTHER_PASSWORD),  # one name, two people
        ("anna", PASSWORD), (f"bob@{BETA}", PASSWORD), (f"bert@{BETA}", PASSWORD),
    ]  # fmt: skip
    # Two workers: accounts of both hosts are spread over them, and reach each other over the mesh.
    with running_server(tmp_path_factory.mktemp("hosts"), domain=ALPHA, extra=extra, users=users,
                        workers=2) as process:  # fmt: skip
        yield process


def _names(der: bytes | None) -> list[str]:
    assert der is not None
    certificate = x509.load_der_x509_certificate(der)
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return names.get_values_for_type(x509.DNSName)


def _verifying(ca: TestCA) -> ssl.SSLContext:
    """A client context that trusts only the test CA and checks the name it asked for."""
    return ssl.create_default_context(cafile=str(ca.path))


# ---- TLS: SNI picks the host's certificate ----------------------------------------------------


@pytest.mark.parametrize("domain", [ALPHA, BETA])
async def test_starttls_presents_the_certificate_of_the_named_host(
    server: ServerProcess, ca: TestCA, domain: str
) -> None:
    with trio.fail_after(TIMEOUT):
        client = await RawClient.connect(server.c2s_port, domain)
        await client.starttls(_verifying(ca))  # verification by name fails on the other certificate
        assert isinstance(client.stream, trio.SSLStream)
        assert _names(client.stream.getpeercert(binary_form=True)) == [domain]
        assert client.header is not None
        assert client.header.get("from") == domain
        await client.stream.aclose()


@pytest.mark.parametrize("domain", [ALPHA, BETA])
async def test_direct_tls_presents_the_certificate_of_the_named_host(
    server: ServerProcess, ca: TestCA, domain: str
) -> None:
    with trio.fail_after(TIMEOUT):
        client = await RawClient.connect(server.c2s_tls_port, domain, direct_tls=True, context=_verifying(ca))
        assert isinstance(client.stream, trio.SSLStream)
        assert _names(client.stream.getpeercert(binary_form=True)) == [domain]
        await client.stream.aclose()


async def test_without_sni_the_primary_certificate(server: ServerProcess) -> None:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with trio.fail_after(TIMEOUT):
        tcp = await trio.open_tcp_stream("127.0.0.1", server.c2s_tls_port)
        tls = trio.SSLStream(tcp, context, server_hostname=None)
        await tls.do_handshake()
        assert _names(tls.getpeercert(binary_form=True)) == [ALPHA]
        await tls.aclose()


async def test_a_third_name_is_host_unknown(server: ServerProcess) -> None:
    with trio.fail_after(TIMEOUT):
        client = await RawClient.connect(server.c2s_port, "gamma.test")
        await client.send(HEADER.format(domain="gamma.test"))
        assert await client.stream_error() == "host-unknown"


# ---- accounts: one localpart, two people ------------------------------------------------------


def test_the_same_localpart_on_two_hosts_is_two_accounts(server: ServerProcess, ca: TestCA) -> None:
    async def scenario() -> None:
        async with slixmpp_client(f"alice@{ALPHA}/pc", PASSWORD, server.c2s_port) as xmpp:
            assert str(xmpp.boundjid) == f"alice@{ALPHA}/pc"
            peer = xmpp.transport.get_extra_info("ssl_object")
            assert _names(peer.getpeercert(binary_form=True)) == [ALPHA]
        async with slixmpp_client(f"alice@{BETA}/pc", OTHER_PASSWORD, server.c2s_port) as xmpp:
            assert str(xmpp.boundjid) == f"alice@{BETA}/pc"
            peer = xmpp.transport.get_extra_info("ssl_object")
            assert _names(peer.getpeercert(binary_form=True)) == [BETA]
        # Each password opens only its own account.
        for jid, password in ((f"alice@{BETA}/x", PASSWORD), (f"alice@{ALPHA}/x", OTHER_PASSWORD)):
            with pytest.raises(AuthFailed) as failed:
                async with slixmpp_client(jid, password, server.c2s_port):
                    pass
            assert failed.value.condition == "not-authorized"
        # A user of one host does not exist on the other.
        with pytest.raises(AuthFailed):
            async with slixmpp_client(f"bob@{ALPHA}/x", PASSWORD, server.c2s_port):
                pass

    run(scenario())


async def test_one_localpart_two_actors(server: ServerProcess) -> None:
    """alice@alpha.test and alice@beta.test are two accounts and two actors: a message to one
    reaches only her sessions."""
    # Their keys place them on different workers of the two (and anna, who writes, with one).
    assert home("user", "alice", (0, 1)) != home("user", f"alice@{BETA}", (0, 1))
    with trio.fail_after(TIMEOUT):
        alpha_alice = await Peer.online(server.c2s_port, "alice", PASSWORD, "one", domain=ALPHA)
        beta_alice = await Peer.online(server.c2s_port, "alice", OTHER_PASSWORD, "one", domain=BETA)
        anna = await _online(server, "anna", ALPHA, "two-alices")
        for target, other in ((beta_alice, alpha_alice), (alpha_alice, beta_alice)):
            await anna.send(f"<message to='{target.bare}' type='chat' id='for-{target.bare}'><body>hi</body>"
                            "</message>")  # fmt: skip
            got = await target.expect(lambda e, target=target: e.get("id") == f"for-{target.bare}")
            assert got.get("from") == anna.jid
            # A marker sent after it to the other alice arrives with nothing of the first before it.
            await anna.send(f"<message to='{other.bare}' type='chat' id='marker-{target.bare}'/>")
            earlier = await other.before(lambda e, target=target: e.get("id") == f"marker-{target.bare}")
            assert [e for e in earlier if e.get("id") == f"for-{target.bare}"] == []


def test_scram_plus_binds_to_the_hosts_own_certificate(server: ServerProcess) -> None:
    """tls-server-end-point is the hash of the certificate the client got: the host's."""

    async def scenario() -> None:
        async with aioxmpp_client(f"bob@{BETA}/plus", PASSWORD, server.c2s_port,
                                  mechanism="SCRAM-SHA-256-PLUS") as client:  # fmt: skip
            assert str(client.local_jid) == f"bob@{BETA}/plus"

    run(scenario())


# ---- web clients name the host too ------------------------------------------------------------


async def test_websocket_and_bosh_clients_log_in_to_a_host(server: ServerProcess) -> None:
    with trio.fail_after(TIMEOUT):
        async with ws_client(server.http_port, domain=BETA) as ws:
            assert await ws.login("alice", OTHER_PASSWORD, "ws") == f"alice@{BETA}/ws"
        bosh = BoshClient(server.http_port, domain=BETA)
        assert await bosh.login("alice", OTHER_PASSWORD, "bosh") == f"alice@{BETA}/bosh"
        unknown = BoshClient(server.http_port, domain="gamma.test")
        answer = await unknown.post(to="gamma.test", wait="5", hold="1", xmpp_version="1.0", ver="1.11")
        assert (answer.get("type"), answer.get("condition")) == ("terminate", "host-unknown")


async def test_sasl2_and_fast_tokens_are_per_host_account(server: ServerProcess) -> None:
    """XEP-0388 with Bind 2 and a XEP-0484 token on beta.test: the JID is the host's, and the
    token opens alice@beta.test only, not alice@alpha.test."""
    agent = Agent()
    with trio.fail_after(TIMEOUT):
        client = await RawClient.connect(server.c2s_port, BETA)
        await client.starttls()
        inner = agent.element() + f"<request-token xmlns='{FAST}' mechanism='{HT}'/><bind xmlns='{BIND2}'/>"
        success = await scram_login(client, "alice", inner, password=OTHER_PASSWORD)
        assert success.tag == q(SASL2, "success"), etree.tostring(success)
        assert (success.findtext(q(SASL2, "authorization-identifier")) or "").startswith(f"alice@{BETA}/")
        token = new_token(success)
        assert token is not None
        await client.aclose()
        for domain, outcome in ((BETA, "success"), (ALPHA, "failure")):
            client = await RawClient.connect(server.c2s_port, domain)
            await client.starttls()
            answer = await fast_login(client, "alice", agent, token)
            assert answer.tag == q(SASL2, outcome), (domain, etree.tostring(answer))
            await client.aclose()


# ---- routing between the hosts: local, no federation ------------------------------------------


def test_chat_between_the_hosts(server: ServerProcess) -> None:
    async def scenario() -> None:
        async with (
            slixmpp_client(f"anna@{ALPHA}/pc", PASSWORD, server.c2s_port, send_presence=True) as anna,
            slixmpp_client(f"bob@{BETA}/pc", PASSWORD, server.c2s_port, send_presence=True) as bob,
        ):
            to_bob, to_anna = event_queue(bob, "message"), event_queue(anna, "message")
            anna.send_message(mto=f"bob@{BETA}", mbody="hello from alpha", mtype="chat")
            message = await to_bob.get()
            assert (str(message["from"]), message["body"]) == (f"anna@{ALPHA}/pc", "hello from alpha")
            bob.send_message(mto=f"anna@{ALPHA}/pc", mbody="hello from beta", mtype="chat")
            message = await to_anna.get()
            assert (str(message["from"]), message["body"]) == (f"bob@{BETA}/pc", "hello from beta")

    run(scenario())


def test_a_message_to_an_offline_user_of_the_other_host_waits_for_them(server: ServerProcess) -> None:
    async def scenario() -> None:
        async with slixmpp_client(f"anna@{ALPHA}/pc", PASSWORD, server.c2s_port,
                                  plugins=("xep_0199",)) as anna:  # fmt: skip
            anna.send_message(mto=f"bert@{BETA}", mbody="while you were out", mtype="chat")
            # A ping answered after it: the session has routed the message to bert's account.
            await anna.plugin["xep_0199"].ping(ALPHA)
        async with slixmpp_client(f"bert@{BETA}/pc", PASSWORD, server.c2s_port,
                                  plugins=("xep_0203",)) as bert:  # fmt: skip
            messages = event_queue(bert, "message")
            bert.send_presence()
            message = await messages.get()
            assert (str(message["from"]), message["body"]) == (f"anna@{ALPHA}/pc", "while you were out")
            assert message["delay"]["from"] == BETA  # stored by bert's host

    run(scenario())


def test_presence_subscription_between_the_hosts(server: ServerProcess) -> None:
    async def scenario() -> None:
        async with (
            slixmpp_client(f"alice@{ALPHA}/pc", PASSWORD, server.c2s_port) as alice,
            slixmpp_client(f"bob@{BETA}/sub", PASSWORD, server.c2s_port) as bob,
        ):
            await alice.get_roster()
            await bob.get_roster()
            bob.auto_authorize = None  # answered below
            requests = event_queue(bob, "presence_subscribe")
            approved = event_queue(alice, "presence_subscribed")
            available = event_queue(alice, "presence_available")
            bob.send_presence()
            alice.send_presence()
            alice.send_presence_subscription(pto=f"bob@{BETA}", ptype="subscribe")
            request = await requests.get()
            assert str(request["from"]) == f"alice@{ALPHA}"
            bob.send_presence_subscription(pto=f"alice@{ALPHA}", ptype="subscribed")
            assert str((await approved.get())["from"]) == f"bob@{BETA}"
            while str((presence := await available.get())["from"]) != f"bob@{BETA}/sub":
                pass
            assert presence["from"].bare == f"bob@{BETA}"
            # Both rosters are stored on their own host: a new session reads them.
            assert await _subscriptions(alice) == {f"bob@{BETA}": "to"}
            assert await _subscriptions(bob) == {f"alice@{ALPHA}": "from"}

    run(scenario())


async def _subscriptions(xmpp: slixmpp.ClientXMPP) -> dict[str, str]:
    """contact → subscription, from a roster get without a version (the whole stored roster)."""
    iq = xmpp.make_iq_get(queryxmlns="jabber:iq:roster")
    result = await iq.send()
    query = result.xml.find("{jabber:iq:roster}query")
    return {item.get("jid"): item.get("subscription") for item in query}


def test_disco_of_the_host_answers_from_the_host(server: ServerProcess) -> None:
    async def scenario() -> None:
        async with slixmpp_client(f"bob@{BETA}/disco", PASSWORD, server.c2s_port,
                                  plugins=("xep_0030",)) as bob:  # fmt: skip
            info = await bob.plugin["xep_0030"].get_info(jid=BETA)
            assert str(info["from"]) == BETA
            assert "urn:xmpp:ping" in info["disco_info"]["features"]

    run(scenario())


# ---- imactor user with a full JID -------------------------------------------------------------


def test_user_commands_take_a_full_jid(server: ServerProcess) -> None:
    config = server.config_path
    added = imactor_cli(config, "user", "add", f"carol@{BETA}", "--password", "carol's secret")
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip() == f"created carol@{BETA}"
    plain = imactor_cli(config, "user", "add", "carol", "--password", "the other carol")
    assert plain.stdout.strip() == f"created carol@{ALPHA}"  # a bare name: the primary domain
    listing = imactor_cli(config, "user", "list").stdout.split()
    assert "carol" in listing
    assert f"carol@{BETA}" in listing
    unknown = imactor_cli(config, "user", "add", "carol@gamma.test", "--password", "x")
    assert unknown.returncode != 0
    assert "'gamma.test' is not a domain of this server" in unknown.stderr

    async def scenario() -> None:
        async with slixmpp_client(f"carol@{BETA}/pc", "carol's secret", server.c2s_port) as xmpp:
            assert str(xmpp.boundjid) == f"carol@{BETA}/pc"
        with pytest.raises(AuthFailed):
            async with slixmpp_client(f"carol@{BETA}/pc", "the other carol", server.c2s_port):
                pass

    run(scenario())
    deleted = imactor_cli(config, "user", "del", f"carol@{BETA}")
    assert deleted.stdout.strip() == f"deleted carol@{BETA}", deleted.stderr
    listing = imactor_cli(config, "user", "list").stdout.split()
    assert "carol" in listing
    assert f"carol@{BETA}" not in listing


def test_bulk_accounts_of_a_host(server: ServerProcess, tmp_path: Path) -> None:
    accounts = tmp_path / "accounts.txt"
    accounts.write_text(f"dora@{BETA}:{PASSWORD}\n")
    result = imactor_cli(server.config_path, "user", "add", "--file", str(accounts))
    assert result.returncode == 0, result.stderr

    async def scenario() -> None:
        async with slixmpp_client(f"dora@{BETA}/pc", PASSWORD, server.c2s_port) as xmpp:
            assert str(xmpp.boundjid) == f"dora@{BETA}/pc"

    run(scenario())


# ---- each host's chat service -----------------------------------------------------------------


async def _online(server: ServerProcess, username: str, domain: str, resource: str = "r") -> Peer:
    return await Peer.online(server.c2s_port, username, PASSWORD, resource, domain=domain)


def _items(reply: Element) -> list[str]:
    assert reply.get("type") == "result", show(reply)
    return sorted(item.get("jid", "") for item in reply.iter(f"{{{NS_DISCO_ITEMS}}}item"))


async def test_each_host_has_its_own_chat_service(server: ServerProcess) -> None:
    alpha_room, beta_room = f"lobby@conference.{ALPHA}", f"lobby@conference.{BETA}"
    with trio.fail_after(TIMEOUT):
        anna = await _online(server, "anna", ALPHA, "muc")
        bob = await _online(server, "bob", BETA, "muc")
        # One name on both services: two rooms, each created by a user of its host.
        await create_instant(anna, alpha_room, "anna")
        await create_instant(bob, beta_room, "bob")
        # A user of one host may join the other's room (it is local: no federation) ...
        await join(bob, alpha_room, "bob")
        await say(bob, alpha_room, "hello alpha room")
        got = await heard(anna, alpha_room, "hello alpha room")
        assert got.get("from") == f"{alpha_room}/bob"
        # ... and a message in one room does not reach the other.
        await say(bob, beta_room, "only in beta")
        await heard(bob, beta_room, "only in beta")
        assert [e for e in anna.inbox if "only in beta" in show(e)] == []
        # Each service lists its own rooms.
        items = f"<query xmlns='{NS_DISCO_ITEMS}'/>"
        assert _items(await bob.iq(items, to=f"conference.{BETA}")) == [beta_room]
        assert _items(await anna.iq(items, to=f"conference.{ALPHA}")) == [alpha_room]
        # Rooms on a host's service are created by that host's users (as on the primary one).
        assert await join_error(anna, f"new@conference.{BETA}", "anna") == "not-allowed"


# ---- modules per host -------------------------------------------------------------------------


async def test_a_module_disabled_on_one_host_is_absent_there_only(server: ServerProcess) -> None:
    version = f"<query xmlns='{NS_VERSION}'/>"
    with trio.fail_after(TIMEOUT):
        anna = await _online(server, "anna", ALPHA, "mod")
        bob = await _online(server, "bob", BETA, "mod")
        info = await bob.iq(f"<query xmlns='{NS_DISCO_INFO}'/>", to=BETA)
        assert NS_VERSION not in _features(info)
        assert NS_PING in _features(info)  # the modules it keeps
        assert error_condition(await bob.iq(version, to=BETA)) == "service-unavailable"
        assert NS_VERSION in _features(await anna.iq(f"<query xmlns='{NS_DISCO_INFO}'/>", to=ALPHA))
        answer = await anna.iq(version, to=ALPHA)
        assert answer.get("type") == "result", show(answer)
        assert answer.findtext(f"{{{NS_VERSION}}}query/{{{NS_VERSION}}}name") == "imactor"


NS_CAPS = "http://jabber.org/protocol/caps"


async def test_each_host_offers_its_own_modules_stream_features(server: ServerProcess) -> None:
    """The features a client is offered once authenticated come from its host's modules: the
    XEP-0115 caps feature there hashes the host's own disco#info (beta has no software version),
    so a client that trusts the hash does not cache the other host's features."""

    def caps_ver(info: Element) -> str:
        # XEP-0115 §5.1: identities and features sorted, '<'-terminated, SHA-1, base64.
        lang = "{http://www.w3.org/XML/1998/namespace}lang"
        identities = sorted(
            "/".join((i.get("category", ""), i.get("type", ""), i.get(lang, ""), i.get("name", "")))
            for i in info.iter(f"{{{NS_DISCO_INFO}}}identity")
        )
        text = "".join(f"{item}<" for item in [*identities, *sorted(_features(info))])
        return base64.b64encode(hashlib.sha1(text.encode()).digest()).decode()

    async def offered_ver(domain: str, username: str, password: str) -> str:
        client = await RawClient.connect(server.c2s_port, domain)
        try:
            await client.starttls()
            token = base64.b64encode(f"\0{username}\0{password}".encode()).decode()
            sasl = "urn:ietf:params:xml:ns:xmpp-sasl"
            await client.send(f"<auth xmlns='{sasl}' mechanism='PLAIN'>{token}</auth>")
            await client.expect(f"{{{sasl}}}success")
            features = await client.open_stream()
            caps = features.find(f"{{{NS_CAPS}}}c")
            assert caps is not None, etree.tostring(features)
            return caps.get("ver", "")
        finally:
            await client.aclose()

    with trio.fail_after(TIMEOUT):
        anna = await _online(server, "anna", ALPHA, "caps")
        bob = await _online(server, "bob", BETA, "caps")
        info = f"<query xmlns='{NS_DISCO_INFO}'/>"
        alpha_ver = caps_ver(await anna.iq(info, to=ALPHA))
        beta_ver = caps_ver(await bob.iq(info, to=BETA))
        assert alpha_ver != beta_ver
        assert await offered_ver(ALPHA, "anna", PASSWORD) == alpha_ver
        assert await offered_ver(BETA, "bob", PASSWORD) == beta_ver


async def test_module_options_and_services_per_host(server: ServerProcess) -> None:
    with trio.fail_after(TIMEOUT):
        anna = await _online(server, "anna", ALPHA, "opt")
        bob = await _online(server, "bob", BETA, "opt")
        beta_items = _items(await bob.iq(f"<query xmlns='{NS_DISCO_ITEMS}'/>", to=BETA))
        assert beta_items == [f"conference.{BETA}", f"upload.{BETA}"]
        alpha_items = _items(await anna.iq(f"<query xmlns='{NS_DISCO_ITEMS}'/>", to=ALPHA))
        assert alpha_items == [f"conference.{ALPHA}", f"upload.{ALPHA}"]
        info = f"<query xmlns='{NS_DISCO_INFO}'/>"
        assert _upload_limit(await bob.iq(info, to=f"upload.{BETA}")) == str(BETA_UPLOAD_LIMIT)
        assert _upload_limit(await anna.iq(info, to=f"upload.{ALPHA}")) == "104857600"  # the default


def _features(reply: Element) -> list[str]:
    assert reply.get("type") == "result", show(reply)
    return [feature.get("var", "") for feature in reply.iter(f"{{{NS_DISCO_INFO}}}feature")]


def _upload_limit(reply: Element) -> str | None:
    assert reply.get("type") == "result", show(reply)
    for field in reply.iter("{jabber:x:data}field"):
        if field.get("var") == "max-file-size":
            return field.findtext("{jabber:x:data}value")
    return None


# ---- federation: a remote server talks to each of our domains ---------------------------------

TLS_NS = "urn:ietf:params:xml:ns:xmpp-tls"
PEER_HEADER = (
    "<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams'"
    " xmlns:db='jabber:server:dialback' from='{origin}' to='{to}' id='{id}' version='1.0'>"
)


class FakeRemoteServer:
    """The remote server `origin` at the other end of the streams imactor opens to it (XEP-0220):
    it takes each, does STARTTLS and dialback, answers imactor's <db:verify/> questions (valid for
    `good_key` only), checks imactor's own key by asking imactor back on its s2s port, and hands
    on the stanzas it receives, with the domain each stream came from."""

    def __init__(self, listening: socket.socket, origin: str, s2s_port: int, directory: Path) -> None:
        self._listening, self.origin, self._s2s_port = listening, origin, s2s_port
        cert, key = directory / f"{origin}.crt", directory / f"{origin}.key"
        cert_pem, key_pem = generate_self_signed(origin)
        cert.write_bytes(cert_pem)
        key.write_bytes(key_pem)
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(cert, key)
        self.good_key = "the real key"
        self._receive, self.received = trio.open_memory_channel[tuple[str, Element]](100)

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listener = trio.SocketListener(trio.socket.from_stdlib_socket(self._listening.dup()))
        task_status.started()
        async with trio.open_nursery() as nursery:
            while True:
                nursery.start_soon(self._stream, await listener.accept())

    async def _stream(self, stream: trio.SocketStream) -> None:
        peer = RawClient(stream, "")
        await _header(peer)
        assert peer.header is not None
        ours = peer.header.get("from", "")  # the domain of ours the stream speaks for
        starttls = f"<stream:features><starttls xmlns='{TLS_NS}'><required/></starttls></stream:features>"
        await peer.send(PEER_HEADER.format(origin=self.origin, to=ours, id="in1") + starttls)
        await peer.expect(f"{{{TLS_NS}}}starttls")
        await peer.send(f"<proceed xmlns='{TLS_NS}'/>")
        tls = trio.SSLStream(peer.stream, self._context, server_side=True)
        await tls.do_handshake()
        peer.stream = tls
        peer._new_parser()
        await _header(peer)
        dialback = "<stream:features><dialback xmlns='urn:xmpp:features:dialback'/></stream:features>"
        await peer.send(PEER_HEADER.format(origin=self.origin, to=ours, id="in2") + dialback)
        while True:
            element = await peer.next_element()
            name = etree.QName(element).localname
            if name == "verify":  # imactor checks a key we "sent" to it (the inbound test)
                verdict = "valid" if (element.text or "").strip() == self.good_key else "invalid"
                await peer.send(f"<db:verify xmlns:db='{DIALBACK_NS}' from='{self.origin}' to='{ours}' "
                                f"id='{element.get('id')}' type='{verdict}'/>")  # fmt: skip
            elif name == "result":  # imactor's own key for `ours`: asked back (XEP-0220 §2.3)
                verdict = await self._verify_back(ours, (element.text or "").strip(), "in2")
                await peer.send(f"<db:result xmlns:db='{DIALBACK_NS}' from='{self.origin}' to='{ours}' "
                                f"type='{verdict}'/>")  # fmt: skip
            else:
                await self._receive.send((ours, element))

    async def _verify_back(self, ours: str, key: str, stream_id: str) -> str:
        raw = await RawServer.connect_to(self._s2s_port, ours, self.origin)
        await raw.starttls()
        await raw.send(f"<db:verify xmlns:db='{DIALBACK_NS}' from='{self.origin}' to='{ours}' "
                       f"id='{stream_id}'>{key}</db:verify>")  # fmt: skip
        answer = await raw.expect(f"{{{DIALBACK_NS}}}verify")
        await raw.stream.aclose()
        return answer.get("type", "")


async def _header(peer: RawClient) -> None:
    while peer.header is None:
        assert await peer._read(), "imactor closed the stream"


@pytest.fixture
async def remote(
    server: ServerProcess, remote_servers: dict[str, socket.socket], tmp_path: Path
) -> AsyncIterator[dict[str, FakeRemoteServer]]:
    fakes = {domain: FakeRemoteServer(listening, domain, server.ports["s2s"], tmp_path)
             for domain, listening in remote_servers.items()}  # fmt: skip
    async with trio.open_nursery() as nursery:
        for fake in fakes.values():
            await nursery.start(fake.serve)
        yield fakes
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(("domain", "user"), [(ALPHA, "anna"), (BETA, "bob")])
async def test_a_remote_server_talks_to_each_of_our_domains(
    server: ServerProcess, remote: dict[str, FakeRemoteServer], domain: str, user: str
) -> None:
    with trio.fail_after(TIMEOUT):
        local = await _online(server, user, domain, f"s2s-{domain}")
        raw = await RawServer.connect_to(server.ports["s2s"], domain, REMOTE_IN)
        features = await raw.starttls()  # SNI: `domain`
        assert isinstance(raw.stream, trio.SSLStream)
        assert _names(raw.stream.getpeercert(binary_form=True)) == [domain]
        assert raw.header is not None
        assert raw.header.get("from") == domain
        assert features.find("{urn:xmpp:features:dialback}dialback") is not None
        # imactor asks REMOTE_IN's server (the fake) whether the key is good, on a stream of its
        # own from `domain`.
        verdict = await raw.dialback(remote[REMOTE_IN].good_key)
        assert verdict.get("type") == "valid", show(verdict)
        await raw.send(f"<message from='someone@{REMOTE_IN}/x' to='{local.bare}' type='chat' "
                       f"id='in-{domain}'><body>from afar</body></message>")  # fmt: skip
        got = await local.expect(lambda e: e.get("id") == f"in-{domain}")
        assert got.get("from") == f"someone@{REMOTE_IN}/x"
        await raw.stream.aclose()


@pytest.mark.parametrize(("domain", "user"), [(ALPHA, "anna"), (BETA, "bob")])
async def test_each_of_our_domains_dials_out_for_itself(
    server: ServerProcess, remote: dict[str, FakeRemoteServer], domain: str, user: str
) -> None:
    with trio.fail_after(TIMEOUT):
        local = await _online(server, user, domain, f"out-{domain}")
        await local.send(f"<message to='someone@{REMOTE_OUT}' type='chat' id='out-{domain}'>"
                         "<body>to afar</body></message>")  # fmt: skip
        # The stream that carried it speaks for `domain` and passed dialback for it: the fake
        # asked imactor back, on its s2s port, whether the key `domain` sent was good.
        while True:
            ours, element = await remote[REMOTE_OUT].received.receive()
            if element.get("id") == f"out-{domain}":
                break
        assert ours == domain
        assert element.get("from") == local.jid
