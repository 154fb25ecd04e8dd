"""The server's services over the network: disco, caps, ping, version, time, last activity, vCard,
private storage, blocking and keepalive.

Real client libraries (slixmpp, aioxmpp) where they have a plugin, so the server is checked against
what clients actually send and parse; raw XML (trio) for error conditions and for proving that
something was *not* delivered (a marker sent afterwards must arrive first).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import importlib
import os
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import aioxmpp
import aioxmpp.disco
import aioxmpp.errors
import aioxmpp.ping
import aioxmpp.vcard
import aioxmpp.version
import aioxmpp.xso
import pytest
import trio
from lxml import etree
from slixmpp import JID
from slixmpp.exceptions import IqError
from slixmpp.xmlstream import ElementBase

import imactor
from imactor.config import DEFAULT_MODULES
from tests.integration.conftest import PASSWORD, Accounts
from tests.support.clients import (
    HOST,
    Clients,
    event_queue,
    make_slixmpp,
    raw_authenticated,
    raw_bind_request,
    raw_login,
    run,
    slixmpp_client,
    stream_errors,
)
from tests.support.peer import any_message, any_presence, error_condition, stanza_error
from tests.support.raw import RawClient
from tests.support.server import ServerProcess, add_users, running_server
from tests.support.timeouts import TIMEOUT

pytestmark = pytest.mark.usefixtures("server_alive")

CLIENT = "jabber:client"
DISCO_INFO = "http://jabber.org/protocol/disco#info"
DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
CAPS = "http://jabber.org/protocol/caps"
PING = "urn:xmpp:ping"
VERSION = "jabber:iq:version"
TIME = "urn:xmpp:time"
LAST = "jabber:iq:last"
VCARD = "vcard-temp"
PRIVATE = "jabber:iq:private"
BLOCKING = "urn:xmpp:blocking"
BLOCKING_ERRORS = "urn:xmpp:blocking:errors"


# ---- raw helpers (trio) ------------------------------------------------------------------------


def result(reply: etree._Element) -> etree._Element:
    assert reply.get("type") == "result", etree.tostring(reply)
    return reply


async def subscribe(watcher: RawClient, watcher_name: str, contact: RawClient, contact_name: str) -> None:
    """`watcher` subscribes to `contact`'s presence and `contact` approves (both are available)."""
    await watcher.send(f"<presence type='subscribe' to='{contact_name}@localhost'/>")
    await contact.next_element(lambda e: any_presence(e) and e.get("type") == "subscribe"
                               and e.get("from") == f"{watcher_name}@localhost")  # fmt: skip
    await contact.send(f"<presence type='subscribed' to='{watcher_name}@localhost'/>")
    # The contact's current presence follows the approval: the subscription is in place.
    contact_resource = f"{contact_name}@localhost/"
    await watcher.next_element(lambda e: any_presence(e) and e.get("type") is None
                               and (e.get("from") or "").startswith(contact_resource))  # fmt: skip


async def watching(port: int, watcher_name: str, contact_name: str) -> tuple[RawClient, RawClient]:
    """Both logged in and available, and the watcher subscribed to the contact's presence."""
    watcher = await raw_login(port, watcher_name, PASSWORD, available=True)
    contact = await raw_login(port, contact_name, PASSWORD, available=True)
    await subscribe(watcher, watcher_name, contact, contact_name)
    return watcher, contact


async def first_message(client: RawClient) -> etree._Element:
    return await client.next_element(any_message)


def enabled_module_features() -> set[str]:
    """Every feature every enabled module declares (the test server runs the default modules)."""
    features: set[str] = set()
    for name in DEFAULT_MODULES:
        features.update(importlib.import_module(f"imactor.modules.{name}").module.features)
    return features


#: The features of the services this file tests; each must be advertised.
SERVICE_FEATURES = {DISCO_INFO, DISCO_ITEMS, CAPS, PING, VERSION, TIME, LAST, VCARD, PRIVATE, BLOCKING}


def caps_verification(identities: list[tuple[str, str, str, str]], features: list[str]) -> str:
    """XEP-0115 §5.1, written here independently of the server: S, SHA-1, base64."""
    text = "".join(f"{c}/{t}/{lang}/{name}<" for c, t, lang, name in sorted(identities))
    text += "".join(f"{feature}<" for feature in sorted(features))
    return base64.b64encode(hashlib.sha1(text.encode()).digest()).decode()


def disco_identities(query: etree._Element) -> list[tuple[str, str, str, str]]:
    lang_attr = "{http://www.w3.org/XML/1998/namespace}lang"
    return [(i.get("category", ""), i.get("type", ""), i.get(lang_attr, ""), i.get("name", ""))
            for i in query.iterfind(f"{{{DISCO_INFO}}}identity")]  # fmt: skip


def disco_features(query: etree._Element) -> list[str]:
    return [f.get("var", "") for f in query.iterfind(f"{{{DISCO_INFO}}}feature")]


# ---- XEP-0030 service discovery ---------------------------------------------------------------


def test_disco_info_of_the_server_slixmpp(
    server: ServerProcess, clients: Clients, accounts: Accounts
) -> None:
    (alice,) = accounts(1)

    async def scenario() -> None:
        async with clients.slixmpp(alice, plugins=("xep_0030",)) as xmpp:
            info = (await xmpp.plugin["xep_0030"].get_info(jid="localhost"))["disco_info"]
            assert ("server", "im") in {(c, t) for c, t, _lang, _name in info["identities"]}
            features = info.get_features(dedupe=False)
            assert len(features) == len(set(features)), "duplicate features"
            assert set(features) == enabled_module_features()
            assert set(features) >= SERVICE_FEATURES
            items = (await xmpp.plugin["xep_0030"].get_items(jid="localhost"))["disco_items"]
            # The server's services: the multi-user chat service, the upload service (XEP-0363).
            services = sorted(jid for jid, _node, _name in items["items"])  # slixmpp gives a set
            assert services == ["conference.localhost", "upload.localhost"]

    run(scenario())


def test_disco_info_of_the_server_aioxmpp(
    server: ServerProcess, clients: Clients, accounts: Accounts
) -> None:
    (alice,) = accounts(1)

    async def scenario() -> None:
        async with clients.aioxmpp(alice, "aio") as client:
            disco = client.summon(aioxmpp.DiscoClient)
            info = await disco.query_info(aioxmpp.JID.fromstr("localhost"), require_fresh=True)
            assert ("server", "im") in {(i.category, i.type_) for i in info.identities}
            assert set(info.features) == enabled_module_features()
            items = await disco.query_items(aioxmpp.JID.fromstr("localhost"), require_fresh=True)
            assert [str(item.jid) for item in items.items] == ["conference.localhost", "upload.localhost"]

    run(scenario())


async def test_disco_raw_details(server: ServerProcess, accounts: Accounts) -> None:
    alice, bob, carol = accounts(3)
    with trio.fail_after(TIMEOUT):
        client = await raw_login(server.c2s_port, alice, PASSWORD)
        query = result(await client.iq(f"<query xmlns='{DISCO_INFO}'/>", to="localhost"))[0]
        assert disco_identities(query) == [("server", "im", "", "imactor")]
        reply = await client.iq(f"<query xmlns='{DISCO_INFO}' node='no-such-node'/>", to="localhost")
        assert error_condition(reply) == "item-not-found"
        reply = await client.iq(f"<query xmlns='{DISCO_ITEMS}' node='no-such-node'/>", to="localhost")
        assert error_condition(reply) == "item-not-found"
        # An account answers for itself: to its owner, account/registered...
        own = result(await client.iq(f"<query xmlns='{DISCO_INFO}'/>", to=f"{alice}@localhost"))
        assert own.get("from") == f"{alice}@localhost"
        # (and pubsub/pep: the account is a PEP service, XEP-0163 §6.1)
        identities = [(c, t) for c, t, _, _ in disco_identities(own[0])]
        assert identities == [("account", "registered"), ("pubsub", "pep")]
        # No 'to' is the same as the own bare JID (RFC 6120 §10.3.3), not the server.
        no_to = result(await client.iq(f"<query xmlns='{DISCO_INFO}'/>"))
        assert disco_identities(no_to[0]) == disco_identities(own[0])
        # ...to a contact with a presence subscription, and to nobody else.
        other = await raw_login(server.c2s_port, bob, PASSWORD, available=True)
        await client.send("<presence/>")
        await subscribe(other, bob, client, alice)
        contact_view = await other.iq(f"<query xmlns='{DISCO_INFO}'/>", to=f"{alice}@localhost")
        assert result(contact_view).get("from") == f"{alice}@localhost"
        stranger = await raw_login(server.c2s_port, carol, PASSWORD)
        reply = await stranger.iq(f"<query xmlns='{DISCO_INFO}'/>", to=f"{alice}@localhost")
        assert error_condition(reply) == "service-unavailable"
        for c in (client, other, stranger):
            await c.aclose()


# ---- XEP-0115 entity capabilities of the server -------------------------------------------------


async def login_with_features(
    port: int, user: str, resource: str = "caps"
) -> tuple[RawClient, etree._Element]:
    """Log in step by step; return the client and the stream features offered after SASL."""
    client = await raw_authenticated(port, user, PASSWORD)
    features = await client.open_stream()
    result(await raw_bind_request(client, resource, "bind"))
    return client, features


async def test_caps_in_stream_features_match_disco(server: ServerProcess, accounts: Accounts) -> None:
    (alice,) = accounts(1)
    with trio.fail_after(TIMEOUT):
        client, features = await login_with_features(server.c2s_port, alice)
        caps = features.find(f"{{{CAPS}}}c")
        assert caps is not None, etree.tostring(features)
        assert caps.get("hash") == "sha-1"
        node, ver = caps.get("node"), caps.get("ver")
        assert node
        assert ver
        plain = result(await client.iq(f"<query xmlns='{DISCO_INFO}'/>", to="localhost"))[0]
        assert caps_verification(disco_identities(plain), disco_features(plain)) == ver
        # §6.2: disco#info on node#ver answers the same identities and features, echoing the node.
        on_node = result(
            await client.iq(f"<query xmlns='{DISCO_INFO}' node='{node}#{ver}'/>", to="localhost")
        )
        query = on_node[0]
        assert query.get("node") == f"{node}#{ver}"
        assert sorted(disco_identities(query)) == sorted(disco_identities(plain))
        assert sorted(disco_features(query)) == sorted(disco_features(plain))
        assert len(disco_features(query)) == len(set(disco_features(query)))
        assert caps_verification(disco_identities(query), disco_features(query)) == ver
        await client.aclose()


def test_caps_verified_by_slixmpp(server: ServerProcess, accounts: Accounts) -> None:
    (alice,) = accounts(1)

    async def scenario() -> None:
        xmpp = make_slixmpp(f"{alice}@localhost/caps", PASSWORD, plugins=("xep_0030", "xep_0115"))
        caps_events = event_queue(xmpp, "entity_caps")
        started = event_queue(xmpp, "session_start")
        xmpp.connect(HOST, server.c2s_port)
        try:
            await started.get()
            announced = await caps_events.get()  # slixmpp turns the stream feature into this event
            assert announced["from"] == JID("localhost")
            caps = announced["caps"]
            assert caps["hash"] == "sha-1"
            info = await xmpp.plugin["xep_0030"].get_info(
                jid="localhost", node=f"{caps['node']}#{caps['ver']}"
            )
            assert xmpp.plugin["xep_0115"].generate_verstring(info["disco_info"], "sha-1") == caps["ver"]
        finally:
            await asyncio.wait_for(xmpp.disconnect(wait=2.0), TIMEOUT)
            xmpp.abort()

    run(scenario())


# ---- XEP-0199 ping, XEP-0092 version, XEP-0202 time ------------------------------------------


def test_ping_server_and_client_to_client_slixmpp(
    server: ServerProcess, clients: Clients, accounts: Accounts
) -> None:
    alice, bob, carol = accounts(3)

    async def scenario() -> None:
        async with (
            clients.slixmpp(alice, "a", plugins=("xep_0199",)) as a,
            clients.slixmpp(bob, "b", plugins=("xep_0199",)) as b,
        ):
            # send_ping raises IqError on an error (ping() would count an error from the server as a pong).
            pong = await a.plugin["xep_0199"].send_ping("localhost", timeout=TIMEOUT)
            assert pong["type"] == "result"
            assert pong["from"] == JID("localhost")
            # Through the server to Bob's client, which answers itself.
            pong = await a.plugin["xep_0199"].send_ping(b.boundjid, timeout=TIMEOUT)
            assert pong["type"] == "result"
            assert pong["from"] == b.boundjid
            pong = await b.plugin["xep_0199"].send_ping(a.boundjid, timeout=TIMEOUT)
            assert pong["from"] == a.boundjid
            # A resource that does not exist: the server answers for it.
            with pytest.raises(IqError) as caught:
                await a.plugin["xep_0199"].send_ping(JID(f"{carol}@localhost/nowhere"), timeout=TIMEOUT)
            assert caught.value.iq["error"]["condition"] == "service-unavailable"

    run(scenario())


def test_ping_aioxmpp(clients: Clients, accounts: Accounts) -> None:
    alice, bob = accounts(2)

    async def scenario() -> None:
        async with (
            clients.aioxmpp(alice, "a") as a,
            clients.aioxmpp(bob, "b") as b,
        ):
            b.summon(aioxmpp.PingService)  # Bob's client answers pings
            await aioxmpp.ping.ping(a, aioxmpp.JID.fromstr("localhost"))
            await aioxmpp.ping.ping(a, b.local_jid)

    run(scenario())


async def test_ping_raw_addressing(server: ServerProcess, accounts: Accounts) -> None:
    alice, bob = accounts(2)
    with trio.fail_after(TIMEOUT):
        a = await raw_login(server.c2s_port, alice, PASSWORD, "a")
        b = await raw_login(server.c2s_port, bob, PASSWORD, "b")
        pong = result(await a.iq(f"<ping xmlns='{PING}'/>", to="localhost"))
        assert pong.get("from") == "localhost"
        assert pong.get("to") == f"{alice}@localhost/a"
        assert len(pong) == 0
        # Client to client: Bob sees Alice's full JID, and his answer reaches her.
        await a.send(f"<iq type='get' id='c2c' to='{bob}@localhost/b'><ping xmlns='{PING}'/></iq>")
        request = await b.next_element(lambda e: e.get("id") == "c2c")
        assert request.get("from") == f"{alice}@localhost/a"
        assert request.get("type") == "get"
        await b.send(f"<iq type='result' id='c2c' to='{alice}@localhost/a'/>")
        answer = await a.next_element(lambda e: e.get("id") == "c2c")
        assert answer.get("type") == "result"
        assert answer.get("from") == f"{bob}@localhost/b"
        await a.aclose()
        await b.aclose()


UNKNOWN_NS = "urn:example:imactor:unknown"


class UnknownQuery(aioxmpp.xso.XSO):
    """A payload no server module knows, for aioxmpp to send."""

    TAG = (UNKNOWN_NS, "query")


aioxmpp.IQ.as_payload_class(UnknownQuery)


async def test_iq_without_to_is_answered_for_the_account(server: ServerProcess, accounts: Accounts) -> None:
    """RFC 6120 §10.3.3: an IQ get/set without 'to' is handled on behalf of the account, so its
    answer comes from the account's bare JID (§8.1.2.1): an unknown payload gets
    service-unavailable, a known service its result."""
    (alice,) = accounts(1)
    with trio.fail_after(TIMEOUT):
        a = await raw_login(server.c2s_port, alice, PASSWORD, "raw")
        reply = await a.iq(f"<query xmlns='{UNKNOWN_NS}'/>")
        assert stanza_error(reply) == ("cancel", "service-unavailable")
        assert reply.get("from") == f"{alice}@localhost"
        assert reply.get("to") == f"{alice}@localhost/raw"
        pong = result(await a.iq(f"<ping xmlns='{PING}'/>"))
        assert pong.get("from") == f"{alice}@localhost"
        await a.aclose()


def test_iq_without_to_gets_an_error_the_client_matches(clients: Clients, accounts: Accounts) -> None:
    """aioxmpp matches the answer to a request sent without 'to' only if it comes from nobody or
    from its bare JID; slixmpp also takes its domain. Both get the error, not a timeout."""
    (alice,) = accounts(1)

    async def scenario() -> None:
        async with clients.aioxmpp(alice, "aio") as client:
            request = aioxmpp.IQ(type_=aioxmpp.IQType.GET, payload=UnknownQuery())
            with pytest.raises(aioxmpp.errors.XMPPCancelError) as error:
                await client.send(request, timeout=TIMEOUT)
            assert error.value.condition == aioxmpp.ErrorCondition.SERVICE_UNAVAILABLE
        async with clients.slixmpp(alice) as x:
            with pytest.raises(IqError) as iq_error:
                await x.make_iq_get(queryxmlns=UNKNOWN_NS).send(timeout=TIMEOUT)
            assert iq_error.value.iq["error"]["condition"] == "service-unavailable"

    run(scenario())


def test_software_version(clients: Clients, accounts: Accounts) -> None:
    (alice,) = accounts(1)

    async def scenario() -> None:
        async with clients.slixmpp(alice, plugins=("xep_0092",)) as xmpp:
            answer = await xmpp.plugin["xep_0092"].get_version("localhost")
            version = answer["software_version"]
            assert version["name"] == "imactor"
            assert version["version"] == imactor.__version__
            assert not version["os"]  # show_os defaults to false
        async with clients.aioxmpp(alice, "aio") as client:
            query = await aioxmpp.version.query_version(client.stream, aioxmpp.JID.fromstr("localhost"))
            assert (query.name, query.version, query.os) == ("imactor", imactor.__version__, None)

    run(scenario())


def test_entity_time(clients: Clients, accounts: Accounts) -> None:
    (alice,) = accounts(1)

    async def scenario() -> None:
        async with clients.slixmpp(alice, plugins=("xep_0202",)) as xmpp:
            answer = await xmpp.plugin["xep_0202"].get_entity_time("localhost")
            stamp = answer["entity_time"]
            raw_utc = stamp.xml.findtext(f"{{{TIME}}}utc")
            raw_tzo = stamp.xml.findtext(f"{{{TIME}}}tzo")
            # XEP-0202 §3 / XEP-0082: UTC date-time with a Z, and an offset [+-]hh:mm.
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", raw_utc or ""), raw_utc
            assert re.fullmatch(r"[+-]\d\d:[0-5]\d", raw_tzo or ""), raw_tzo
            utc = datetime.strptime(raw_utc[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
            assert abs(utc.timestamp() - time.time()) < 60
            # (slixmpp's stamp["utc"] and stamp["tzo"] cannot parse the XEP's own example format,
            # so the raw values are checked instead.)

    run(scenario())


# ---- XEP-0012 last activity ---------------------------------------------------------------------


def process_age(pid: int) -> float:
    """Seconds since process `pid` started (Linux /proc)."""
    with open("/proc/uptime") as uptime, open(f"/proc/{pid}/stat") as stat:
        since_boot = float(uptime.read().split()[0])
        started = int(stat.read().rsplit(")", 1)[1].split()[19]) / os.sysconf("SC_CLK_TCK")
    return since_boot - started


def test_server_uptime_slixmpp(server: ServerProcess, clients: Clients, accounts: Accounts) -> None:
    (alice,) = accounts(1)

    async def scenario() -> None:
        async with clients.slixmpp(alice, plugins=("xep_0012",)) as xmpp:
            answer = (await xmpp.plugin["xep_0012"].get_last_activity("localhost"))["last_activity"]
            # The uptime is about the age of the server process (which starts up in a few seconds).
            age = process_age(server.proc.pid)
            assert age - 10 <= int(answer["seconds"]) <= age + 1, (answer["seconds"], age)
            assert not answer["status"]

    run(scenario())


async def test_last_activity_of_a_contact(server: ServerProcess, accounts: Accounts) -> None:
    watcher_name, contact_name, stranger_name = accounts(3)
    with trio.fail_after(TIMEOUT):
        watcher, contact = await watching(server.c2s_port, watcher_name, contact_name)
        # Online: 0 seconds (§4).
        online = result(await watcher.iq(f"<query xmlns='{LAST}'/>", to=f"{contact_name}@localhost"))
        assert online[0].get("seconds") == "0"
        assert online.get("from") == f"{contact_name}@localhost"
        # Without a subscription: forbidden.
        stranger = await raw_login(server.c2s_port, stranger_name, PASSWORD)
        reply = await stranger.iq(f"<query xmlns='{LAST}'/>", to=f"{contact_name}@localhost")
        assert error_condition(reply) == "forbidden"
        # After logout: seconds since the last resource left.
        await contact.aclose()
        await watcher.next_element(lambda e: any_presence(e) and e.get("type") == "unavailable"
                                   and e.get("from") == f"{contact_name}@localhost/raw")  # fmt: skip
        offline = result(await watcher.iq(f"<query xmlns='{LAST}'/>", to=f"{contact_name}@localhost"))
        assert 0 <= int(offline[0].get("seconds", "-1")) < 10
        reply = await stranger.iq(f"<query xmlns='{LAST}'/>", to=f"{contact_name}@localhost")
        assert error_condition(reply) == "forbidden"
        # An account may ask about itself (here: online, so 0).
        await stranger.send("<presence/>")
        own = result(await stranger.iq(f"<query xmlns='{LAST}'/>", to=f"{stranger_name}@localhost"))
        assert own[0].get("seconds") == "0"
        await watcher.aclose()
        await stranger.aclose()


async def test_last_activity_after_explicit_unavailable_keeps_its_status(
    server: ServerProcess, accounts: Accounts
) -> None:
    """§4: a contact that went offline with unavailable presence: its seconds and status text."""
    watcher_name, contact_name = accounts(2)
    with trio.fail_after(TIMEOUT):
        watcher, contact = await watching(server.c2s_port, watcher_name, contact_name)
        await contact.send("<presence type='unavailable'><status>gone fishing</status></presence>")
        await watcher.next_element(lambda e: any_presence(e) and e.get("type") == "unavailable")
        await contact.aclose()
        reply = result(await watcher.iq(f"<query xmlns='{LAST}'/>", to=f"{contact_name}@localhost"))
        assert 0 <= int(reply[0].get("seconds", "-1")) < 10
        assert reply[0].text == "gone fishing"
        await watcher.aclose()


# ---- XEP-0054 vcard-temp --------------------------------------------------------------------------


def test_vcard_slixmpp(clients: Clients, accounts: Accounts) -> None:
    alice, bob, carol = accounts(3)

    async def scenario() -> None:
        async with (
            clients.slixmpp(alice, "a", plugins=("xep_0054",)) as a,
            clients.slixmpp(bob, "b", plugins=("xep_0054",)) as b,
        ):
            card = a.plugin["xep_0054"].make_vcard()
            card["FN"] = "Alice Liddell"
            card["NICKNAME"] = "alice"
            await a.plugin["xep_0054"].publish_vcard(card)
            own = await a.plugin["xep_0054"].get_vcard(JID(f"{alice}@localhost"), local=False)
            assert own["vcard_temp"]["FN"] == "Alice Liddell"
            theirs = await b.plugin["xep_0054"].get_vcard(JID(f"{alice}@localhost"), local=False)
            assert theirs["from"] == JID(f"{alice}@localhost")
            assert theirs["vcard_temp"]["FN"] == "Alice Liddell"
            assert theirs["vcard_temp"].xml.findtext(f"{{{VCARD}}}NICKNAME") == "alice"
            # No vCard stored: an empty one (§3.1), not an error.
            empty = await b.plugin["xep_0054"].get_vcard(JID(f"{carol}@localhost"), local=False)
            assert empty["type"] == "result"
            assert len(empty["vcard_temp"].xml) == 0

    run(scenario())


def test_vcard_photo_aioxmpp(clients: Clients, accounts: Accounts) -> None:
    alice, bob = accounts(2)
    photo = bytes(range(256)) * 40

    async def scenario() -> None:
        async with clients.aioxmpp(alice, "a") as a:
            vcards = a.summon(aioxmpp.vcard.VCardService)
            card = await vcards.get_vcard()
            card.set_photo_data("image/png", photo)
            await vcards.set_vcard(card)
        async with clients.aioxmpp(bob, "b") as b:
            card = await b.summon(aioxmpp.vcard.VCardService).get_vcard(
                aioxmpp.JID.fromstr(f"{alice}@localhost")
            )
            assert card.get_photo_mime_type() == "image/png"
            assert card.get_photo_data() == photo

    run(scenario())


async def test_vcard_errors_raw(server: ServerProcess, accounts: Accounts) -> None:
    alice, bob = accounts(2)
    with trio.fail_after(TIMEOUT):
        a = await raw_login(server.c2s_port, alice, PASSWORD)
        b = await raw_login(server.c2s_port, bob, PASSWORD)
        # Nothing stored: an empty vCard element.
        empty = result(await a.iq(f"<vCard xmlns='{VCARD}'/>", to=f"{bob}@localhost"))
        assert [child.tag for child in empty] == [f"{{{VCARD}}}vCard"]
        assert len(empty[0]) == 0
        result(await b.iq(f"<vCard xmlns='{VCARD}'><FN>Bob</FN></vCard>", type_="set"))
        # Setting someone else's vCard is forbidden, and changes nothing.
        reply = await a.iq(
            f"<vCard xmlns='{VCARD}'><FN>Mallory</FN></vCard>", to=f"{bob}@localhost", type_="set"
        )
        assert error_condition(reply) == "forbidden"
        card = result(await a.iq(f"<vCard xmlns='{VCARD}'/>", to=f"{bob}@localhost"))
        assert card[0].findtext(f"{{{VCARD}}}FN") == "Bob"
        # Over the size limit (131072 bytes by default): not-acceptable, the old vCard stays.
        huge = "x" * 140000
        reply = await b.iq(f"<vCard xmlns='{VCARD}'><FN>{huge}</FN></vCard>", type_="set")
        assert error_condition(reply) == "not-acceptable"
        own = result(await b.iq(f"<vCard xmlns='{VCARD}'/>"))
        assert own[0].findtext(f"{{{VCARD}}}FN") == "Bob"
        # The server's own vCard: empty.
        server_card = result(await a.iq(f"<vCard xmlns='{VCARD}'/>", to="localhost"))
        assert server_card[0].tag == f"{{{VCARD}}}vCard"
        assert len(server_card[0]) == 0
        await a.aclose()
        await b.aclose()


# ---- XEP-0049 private XML storage ---------------------------------------------------------------


class Prefs(ElementBase):  # type: ignore[misc]
    name = "prefs"
    namespace = "urn:example:imactor:prefs"
    plugin_attrib = "imactor_prefs"
    interfaces = {"color"}
    sub_interfaces = {"color"}


def test_private_storage_slixmpp(clients: Clients, accounts: Accounts) -> None:
    (alice,) = accounts(1)

    async def scenario() -> None:
        async with clients.slixmpp(alice, "a", plugins=("xep_0049",)) as xmpp:
            xmpp.plugin["xep_0049"].register(Prefs)
            empty = await xmpp.plugin["xep_0049"].retrieve("imactor_prefs")
            assert empty["private"]["imactor_prefs"]["color"] == ""
            prefs = Prefs()
            prefs["color"] = "blue"
            await xmpp.plugin["xep_0049"].store(prefs)
            stored = await xmpp.plugin["xep_0049"].retrieve("imactor_prefs")
            assert stored["private"]["imactor_prefs"]["color"] == "blue"
        # Another session of the account reads the same data.
        async with clients.slixmpp(alice, "b", plugins=("xep_0049",)) as xmpp:
            xmpp.plugin["xep_0049"].register(Prefs)
            stored = await xmpp.plugin["xep_0049"].retrieve("imactor_prefs")
            assert stored["private"]["imactor_prefs"]["color"] == "blue"

    run(scenario())


async def test_private_storage_errors_raw(server: ServerProcess, accounts: Accounts) -> None:
    alice, bob = accounts(2)
    with trio.fail_after(TIMEOUT):
        a = await raw_login(server.c2s_port, alice, PASSWORD)
        b = await raw_login(server.c2s_port, bob, PASSWORD)
        stored = "<game xmlns='urn:example:game'><level>7</level></game>"
        result(await a.iq(f"<query xmlns='{PRIVATE}'>{stored}</query>", type_="set"))
        got = result(await a.iq(f"<query xmlns='{PRIVATE}'><game xmlns='urn:example:game'/></query>"))
        assert got[0][0].findtext("{urn:example:game}level") == "7"
        # Reserved namespaces (§3): jabber:client, jabber:iq:private (also inherited), none.
        for payload in ("<x xmlns='jabber:client'/>", "<x/>", f"<x xmlns='{PRIVATE}'/>", "<x xmlns=''/>"):
            reply = await a.iq(f"<query xmlns='{PRIVATE}'>{payload}</query>", type_="set")
            assert error_condition(reply) == "not-acceptable", payload
        reply = await a.iq(f"<query xmlns='{PRIVATE}'/>")
        assert error_condition(reply) == "not-acceptable"
        # Another account's storage: refused both ways, and nothing leaks.
        reply = await b.iq(f"<query xmlns='{PRIVATE}'><game xmlns='urn:example:game'/></query>",
                         to=f"{alice}@localhost")  # fmt: skip
        assert error_condition(reply) == "forbidden"
        assert b"level" not in etree.tostring(reply)
        reply = await b.iq(f"<query xmlns='{PRIVATE}'>{stored}</query>", to=f"{alice}@localhost", type_="set")
        assert error_condition(reply) == "forbidden"
        # Bob's own storage under the same name is separate (and empty).
        own = result(await b.iq(f"<query xmlns='{PRIVATE}'><game xmlns='urn:example:game'/></query>"))
        assert len(own[0][0]) == 0
        await a.aclose()
        await b.aclose()


# ---- XEP-0191 blocking command ----------------------------------------------------------------


def test_blocking_list_and_pushes_slixmpp(clients: Clients, accounts: Accounts) -> None:
    alice, bob, carol = accounts(3)
    bob_jid, carol_jid = JID(f"{bob}@localhost"), JID(f"{carol}@localhost")

    async def scenario() -> None:
        plugins = ("xep_0191",)
        async with (
            clients.slixmpp(alice, "one", plugins=plugins) as one,
            clients.slixmpp(alice, "two", plugins=plugins) as two,
        ):
            assert await one.plugin["xep_0191"].get_blocked_jids() == set()
            assert await two.plugin["xep_0191"].get_blocked_jids() == set()
            pushes = [event_queue(one, "blocked"), event_queue(two, "blocked")]
            await one.plugin["xep_0191"].block([bob_jid, carol_jid])
            for queue in pushes:
                push = await queue.get()
                assert push["from"] in (JID(""), JID(f"{alice}@localhost")), push  # only the account pushes
                assert {item["jid"] for item in push["block"]} == {bob_jid, carol_jid}
            assert await two.plugin["xep_0191"].get_blocked_jids() == {bob_jid, carol_jid}
            unpushes = [event_queue(one, "unblocked"), event_queue(two, "unblocked")]
            await two.plugin["xep_0191"].unblock(bob_jid)
            for queue in unpushes:
                push = await queue.get()
                assert [item["jid"] for item in push["unblock"]] == [bob_jid]
            assert await one.plugin["xep_0191"].get_blocked_jids() == {carol_jid}
            # Unblock all: an empty <unblock/>, pushed as such.
            iq = one.make_iq_set()
            iq.enable("unblock")
            await iq.send()
            for queue in unpushes:
                push = await queue.get()
                assert list(push["unblock"]) == []
            assert await two.plugin["xep_0191"].get_blocked_jids() == set()

    run(scenario())


async def block(client: RawClient, *jids: str, tag: str = "block") -> None:
    items = "".join(f"<item jid='{jid}'/>" for jid in jids)
    result(await client.iq(f"<{tag} xmlns='{BLOCKING}'>{items}</{tag}>", type_="set"))


async def test_blocking_enforcement_raw(server: ServerProcess, accounts: Accounts) -> None:
    alice, bob, carol = accounts(3)
    with trio.fail_after(TIMEOUT):
        a = await raw_login(server.c2s_port, alice, PASSWORD, available=True)
        b = await raw_login(server.c2s_port, bob, PASSWORD, available=True)
        c = await raw_login(server.c2s_port, carol, PASSWORD)
        await block(a, f"{bob}@localhost")
        # Inbound from the blocked contact: message and IQ refused with service-unavailable (§3.3)...
        await b.send(f"<message to='{alice}@localhost' id='in1' type='chat'><body>let me in</body></message>")
        bounced = await b.next_element(lambda e: e.get("id") == "in1")
        assert any_message(bounced)
        assert error_condition(bounced) == "service-unavailable"
        reply = await b.iq(f"<ping xmlns='{PING}'/>", to=f"{alice}@localhost/raw")
        assert error_condition(reply) == "service-unavailable"
        # ...and never delivered: Carol's later marker is the first message Alice sees.
        await c.send(f"<message to='{alice}@localhost' id='marker1' type='chat'><body>m</body></message>")
        assert (await first_message(a)).get("id") == "marker1"
        # Outbound to the blocked contact: not-acceptable with <blocked/> (§3.3), not delivered.
        await a.send(f"<message to='{bob}@localhost/raw' id='out1' type='chat'><body>hi</body></message>")
        refused = await a.next_element(lambda e: e.get("id") == "out1")
        assert error_condition(refused) == "not-acceptable"
        assert refused.find(f"{{{CLIENT}}}error/{{{BLOCKING_ERRORS}}}blocked") is not None, etree.tostring(
            refused
        )
        reply = await a.iq(f"<ping xmlns='{PING}'/>", to=f"{bob}@localhost/raw")
        assert error_condition(reply) == "not-acceptable"
        await c.send(f"<message to='{bob}@localhost/raw' id='marker2' type='chat'><body>m</body></message>")
        assert (await first_message(b)).get("id") == "marker2"
        # Unblocked: messages flow both ways again.
        await block(a, f"{bob}@localhost", tag="unblock")
        await b.send(f"<message to='{alice}@localhost' id='in2' type='chat'><body>again</body></message>")
        assert (await first_message(a)).get("id") == "in2"
        await a.send(f"<message to='{bob}@localhost/raw' id='out2' type='chat'><body>hi</body></message>")
        assert (await first_message(b)).get("id") == "out2"
        # Unblock all clears every entry, and the domain-wide entry stops blocking too.
        await block(a, f"{bob}@localhost", f"{carol}@localhost")
        listing = result(await a.iq(f"<blocklist xmlns='{BLOCKING}'/>"))
        assert sorted(i.get("jid") for i in listing[0]) == sorted([f"{bob}@localhost", f"{carol}@localhost"])
        await block(a, tag="unblock")
        listing = result(await a.iq(f"<blocklist xmlns='{BLOCKING}'/>"))
        assert len(listing[0]) == 0
        await c.send(f"<message to='{alice}@localhost' id='in3' type='chat'><body>free</body></message>")
        assert (await first_message(a)).get("id") == "in3"
        for client in (a, b, c):
            await client.aclose()


async def test_blocking_errors_raw(server: ServerProcess, accounts: Accounts) -> None:
    alice, bob = accounts(2)
    with trio.fail_after(TIMEOUT):
        a = await raw_login(server.c2s_port, alice, PASSWORD)
        b = await raw_login(server.c2s_port, bob, PASSWORD)
        reply = await a.iq(f"<block xmlns='{BLOCKING}'/>", type_="set")
        assert error_condition(reply) == "bad-request"  # §3.3: a block needs items
        reply = await a.iq(f"<block xmlns='{BLOCKING}'><item jid='a@b@c'/></block>", type_="set")
        assert error_condition(reply) == "jid-malformed"
        # Nobody reads or changes another account's block list.
        reply = await b.iq(f"<blocklist xmlns='{BLOCKING}'/>", to=f"{alice}@localhost")
        assert error_condition(reply) in ("forbidden", "service-unavailable")
        reply = await b.iq(f"<block xmlns='{BLOCKING}'><item jid='x@localhost'/></block>",
                         to=f"{alice}@localhost", type_="set")  # fmt: skip
        assert error_condition(reply) in ("forbidden", "service-unavailable")
        assert len(result(await a.iq(f"<blocklist xmlns='{BLOCKING}'/>"))[0]) == 0
        await a.aclose()
        await b.aclose()


async def test_blocking_and_presence(server: ServerProcess, accounts: Accounts) -> None:
    """§3.3: a blocked contact that may see the user's presence gets unavailable; nobody else does."""
    alice, subscriber, stranger, carol = accounts(4)
    with trio.fail_after(TIMEOUT):
        a = await raw_login(server.c2s_port, alice, PASSWORD, available=True)
        s = await raw_login(server.c2s_port, subscriber, PASSWORD, available=True)
        x = await raw_login(server.c2s_port, stranger, PASSWORD, available=True)
        c = await raw_login(server.c2s_port, carol, PASSWORD)
        await subscribe(s, subscriber, a, alice)
        await block(a, f"{subscriber}@localhost", f"{stranger}@localhost")
        gone = await s.next_element(any_presence)
        assert gone.get("type") == "unavailable"
        assert gone.get("from") == f"{alice}@localhost/raw"
        # The stranger never saw Alice's presence, so it learns nothing from the block either.
        await c.send(f"<message to='{stranger}@localhost/raw' id='mk'><body>m</body></message>")
        first = await x.next_element(lambda e: any_message(e) or any_presence(e))
        assert first.get("id") == "mk", etree.tostring(first)
        for client in (a, s, x, c):
            await client.aclose()


async def test_blocked_subscriber_gets_no_presence_updates(server: ServerProcess, accounts: Accounts) -> None:
    """§3.3: while blocked, a subscriber gets none of the user's presence broadcasts."""
    alice, subscriber, carol = accounts(3)
    with trio.fail_after(TIMEOUT):
        a = await raw_login(server.c2s_port, alice, PASSWORD, available=True)
        s = await raw_login(server.c2s_port, subscriber, PASSWORD, available=True)
        c = await raw_login(server.c2s_port, carol, PASSWORD)
        await subscribe(s, subscriber, a, alice)
        await block(a, f"{subscriber}@localhost")
        await s.next_element(lambda e: any_presence(e) and e.get("type") == "unavailable")
        await a.send("<presence><show>away</show></presence>")
        await a.next_element(lambda e: any_presence(e) and e.findtext(f"{{{CLIENT}}}show") == "away")
        await c.send(f"<message to='{subscriber}@localhost/raw' id='mk'><body>m</body></message>")
        first = await s.next_element(lambda e: any_message(e) or any_presence(e))
        assert first.get("id") == "mk", etree.tostring(first)
        for client in (a, s, c):
            await client.aclose()


# ---- server keepalive (XEP-0199 §4.2) ---------------------------------------------------------

KEEPALIVE = "\n[limits]\nidle_timeout = 1.0\nping_timeout = 1.0\n"


@pytest.fixture(scope="module")
def keepalive_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    directory = tmp_path_factory.mktemp("keepalive")
    with running_server(directory, extra=KEEPALIVE) as process:
        yield process


def is_server_ping(element: etree._Element) -> bool:
    return (element.tag == f"{{{CLIENT}}}iq" and element.get("type") == "get"
            and element.find(f"{{{PING}}}ping") is not None)  # fmt: skip


async def test_idle_client_is_pinged_and_dropped_without_answer(keepalive_server: ServerProcess) -> None:
    add_users(keepalive_server.config_path, [("silent", PASSWORD)])
    with trio.fail_after(TIMEOUT):
        client = await raw_login(keepalive_server.c2s_port, "silent", PASSWORD)
        request = await client.next_element()
        assert is_server_ping(request), etree.tostring(request)
        assert request.get("from") == "localhost"
        assert request.get("to") == "silent@localhost/raw"
        assert request.get("id")
        # No answer: the stream ends with connection-timeout.
        assert await client.stream_error() == "connection-timeout"
        await client.wait_closed()


async def test_idle_client_that_answers_stays_connected(keepalive_server: ServerProcess) -> None:
    add_users(keepalive_server.config_path, [("chatty", PASSWORD)])
    with trio.fail_after(TIMEOUT):
        client = await raw_login(keepalive_server.c2s_port, "chatty", PASSWORD)
        for _ in range(3):
            request = await client.next_element()
            assert is_server_ping(request), etree.tostring(request)
            await client.send(f"<iq type='result' id='{request.get('id')}' to='localhost'/>")
        # Three rounds took longer than idle + ping timeout: answering kept the stream open.
        result(await client.iq(f"<ping xmlns='{PING}'/>", to="localhost"))
        await client.aclose()


def test_slixmpp_answers_server_keepalive(keepalive_server: ServerProcess) -> None:
    add_users(keepalive_server.config_path, [("lib", PASSWORD)])

    async def scenario() -> None:
        async with slixmpp_client("lib@localhost/sx", PASSWORD, keepalive_server.c2s_port,
                                  plugins=("xep_0199",)) as xmpp:  # fmt: skip
            pings: asyncio.Queue[Any] = asyncio.Queue()
            from slixmpp.xmlstream.handler import Callback
            from slixmpp.xmlstream.matcher import StanzaPath

            xmpp.register_handler(Callback("count pings", StanzaPath("iq@type=get/ping"), pings.put_nowait))
            for _ in range(3):
                request = await pings.get()
                assert request["from"] == JID("localhost")
            pong = await xmpp.plugin["xep_0199"].send_ping("localhost", timeout=TIMEOUT)
            assert pong["type"] == "result"
            assert stream_errors(xmpp) == []

    run(scenario())
