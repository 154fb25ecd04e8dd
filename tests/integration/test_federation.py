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

import base64
import hashlib
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
from tests.support.peer import (
    C,
    Element,
    Match,
    Peer,
    error_condition,
    item_state,
    marker,
    message,
    new_id,
    presence,
    push_until,
    pushed_item,
    roster_push,
    show,
    stanza_error,
    subscribe,
)
from tests.support.peer_install import ensure_peer
from tests.support.raw import DIALBACK_NS, RawClient, RawServer, client_context
from tests.support.server import ServerProcess, running_server
from tests.support.timeouts import TIMEOUT

IMACTOR, PROSODY = "imactor.test", "prosody.test"
PASSWORD = "federation password"
IMACTOR_USERS = ["alice", "amy", "anna", "abel", "bob", "carol", "dave", "erin", "fay", "gina",
                 "hana", "ivan", "jack", "kim", "lena", "mia", "nils", "omar"]
RAW_DOMAINS = 4
PROSODY_USERS = [f"bench{i}" for i in range(14)]
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

    async def imactor_user(self, name: str, presence_xml: str = "") -> Peer:
        return await Peer.online(self.imactor.c2s_port, name, PASSWORD, presence_xml=presence_xml,
                                 domain=IMACTOR)  # fmt: skip

    async def prosody_user(self, name: str, presence_xml: str = "") -> Peer:
        return await Peer.online(self.prosody.c2s_port, name, PASSWORD, presence_xml=presence_xml,
                                 domain=PROSODY)  # fmt: skip


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

# ---- what imactor does for its own users, with remote contacts (issue 17) -----------------------

NS_MAM, NS_SID, NS_FORWARD = "urn:xmpp:mam:2", "urn:xmpp:sid:0", "urn:xmpp:forward:0"
NS_BLOCKING = "urn:xmpp:blocking"
NS_PUBSUB, NS_EVENT = "http://jabber.org/protocol/pubsub", "http://jabber.org/protocol/pubsub#event"
NS_CAPS = "http://jabber.org/protocol/caps"


def stanza_id(element: Element, by: str) -> str | None:
    found = [sid.get("id") for sid in element.findall(f"{{{NS_SID}}}stanza-id") if sid.get("by") == by]
    return found[0] if found else None


async def archived(peer: Peer, with_: str) -> list[tuple[str, Element]]:
    """The account's XEP-0313 archive of its chats with `with_`: (archive id, archived message)."""
    query_id = new_id("q")
    form = (f"<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>"
            f"<value>{NS_MAM}</value></field>"
            f"<field var='with'><value>{with_}</value></field></x>")  # fmt: skip
    reply = await peer.iq(f"<query xmlns='{NS_MAM}' queryid='{query_id}'>{form}</query>", type_="set")
    assert reply.get("type") == "result", show(reply)
    results = []
    for element in list(peer.inbox):
        result = element.find(f"{{{NS_MAM}}}result")
        if result is not None and result.get("queryid") == query_id:
            peer.inbox.remove(element)
            inner = result.find(f"{{{NS_FORWARD}}}forwarded/{C}message")
            assert inner is not None, show(element)
            results.append((result.get("id", ""), inner))
    return results


async def test_federated_chat_is_archived(federation: Federation) -> None:
    """XEP-0313: both directions of a chat with a Prosody user are in the imactor user's
    archive, in order, under the remote JID; the incoming one under the stanza-id it arrived with."""
    with trio.fail_after(TIMEOUT):
        hana = await federation.imactor_user("hana")
        bench6 = await federation.prosody_user("bench6")
        await hana.send(f"<message to='{bench6.jid}' type='chat' id='a1'><body>to Prosody</body></message>")
        await bench6.expect(message(from_=hana.jid, id_="a1"))
        await bench6.send(
            f"<message to='{hana.bare}' type='chat' id='a2'><body>from Prosody</body></message>"
        )
        got = await hana.expect(message(from_=bench6.jid, id_="a2"))
        incoming_id = stanza_id(got, hana.bare)
        assert incoming_id is not None, show(got)
        archive = await archived(hana, bench6.bare)
        assert [(m.get("from"), m.get("to"), m.findtext(f"{C}body")) for _, m in archive] == [
            (hana.jid, bench6.jid, "to Prosody"),
            (bench6.jid, hana.bare, "from Prosody"),
        ]
        (outgoing_id, _), (archived_id, _) = archive
        assert archived_id == incoming_id
        assert outgoing_id
        assert outgoing_id != incoming_id


async def blocking(peer: Peer, action: str, jid: str) -> None:
    reply = await peer.iq(f"<{action} xmlns='{NS_BLOCKING}'><item jid='{jid}'/></{action}>", type_="set")
    assert reply.get("type") == "result", show(reply)


def error_reply(id_: str) -> Match:
    return lambda e: e.get("id") == id_ and e.get("type") == "error"


async def test_blocking_a_remote_contact(federation: Federation) -> None:
    """XEP-0191 with a Prosody contact: blocked, its messages bounce with service-unavailable
    (§3.5) and its presence is not shown; ours to it are refused with <blocked/> (§3.6); the
    blocked contact is told we went unavailable (§3.3); unblocked, messages flow again."""
    with trio.fail_after(TIMEOUT):
        ivan = await federation.imactor_user("ivan")
        omar = await federation.imactor_user("omar")
        bench7 = await federation.prosody_user("bench7")
        await subscribe(ivan, bench7)
        await subscribe(bench7, ivan)
        await blocking(ivan, "block", bench7.bare)
        await bench7.expect(presence(from_=ivan.jid, type_="unavailable"))
        await bench7.send("<presence><show>dnd</show></presence>")
        await bench7.send(f"<message to='{ivan.bare}' type='chat' id='b1'><body>hear me</body></message>")
        bounce = await bench7.expect(error_reply("b1"))
        assert stanza_error(bounce)[1] == "service-unavailable", show(bounce)
        # The bounce left ivan's actor after the presence before it: a marker through that
        # actor now proves that neither reached ivan.
        earlier = await marker(omar, ivan)
        from_bench7 = [e for e in earlier if e.get("from", "").startswith(bench7.bare)]
        assert from_bench7 == [], [show(e) for e in from_bench7]
        await ivan.send(f"<message to='{bench7.jid}' type='chat' id='b2'><body>psst</body></message>")
        refused = await ivan.expect(error_reply("b2"))
        assert stanza_error(refused) == ("cancel", "not-acceptable"), show(refused)
        assert refused.find(f"{C}error/{{urn:xmpp:blocking:errors}}blocked") is not None, show(refused)

        await blocking(ivan, "unblock", bench7.bare)
        await bench7.send(f"<message to='{ivan.bare}' type='chat' id='b3'><body>again</body></message>")
        got = await ivan.expect(message(from_=bench7.jid, id_="b3"))
        assert got.findtext(f"{C}body") == "again"
        await ivan.send(f"<message to='{bench7.jid}' type='chat' id='b4'><body>heard</body></message>")
        await bench7.expect(message(from_=ivan.jid, id_="b4"))


async def test_blocking_a_remote_domain(federation: Federation) -> None:
    """XEP-0191 §3.1: a domain JID in the block list blocks every JID of that server."""
    with trio.fail_after(TIMEOUT):
        omar = await federation.imactor_user("omar")
        bench13 = await federation.prosody_user("bench13")
        await blocking(omar, "block", PROSODY)
        await bench13.send(f"<message to='{omar.bare}' type='chat' id='d1'><body>hi</body></message>")
        assert error_condition(await bench13.expect(error_reply("d1"))) == "service-unavailable"
        await omar.send(f"<message to='{bench13.jid}' type='chat' id='d2'><body>hi</body></message>")
        refused = await omar.expect(error_reply("d2"))
        assert error_condition(refused) == "not-acceptable", show(refused)
        await blocking(omar, "unblock", PROSODY)
        await bench13.send(f"<message to='{omar.bare}' type='chat' id='d3'><body>now?</body></message>")
        await omar.expect(message(from_=bench13.jid, id_="d3"))


# XEP-0115 on the client side: the test's clients advertise +notify interests in their caps and
# answer the disco#info queries about them, from whichever PEP service asks (their own server's
# and the contact's, across s2s).


def caps_ver(features: list[str]) -> str:
    text = "client/pc//fed-test<" + "".join(f"{f}<" for f in sorted(features))
    return base64.b64encode(hashlib.sha1(text.encode()).digest()).decode()


def caps(features: list[str]) -> str:
    return f"<c xmlns='{NS_CAPS}' hash='sha-1' node='urn:test:fed' ver='{caps_ver(features)}'/>"


def notify_features(node: str) -> list[str]:
    # A feature of its own: no server has this ver in its caps cache, each one must ask.
    return [NS_DISCO_INFO, NS_CAPS, f"urn:test:unique:{new_id()}", node + "+notify"]


def is_caps_query(e: Element) -> bool:
    query = e.find(f"{{{NS_DISCO_INFO}}}query")
    return e.tag == f"{C}iq" and e.get("type") == "get" and query is not None and bool(query.get("node"))


async def expect_answering(peer: Peer, features: list[str], match: Match, asked: set[str]) -> Element:
    """`Peer.expect(match)`, answering every caps query that comes first; `asked`: who asked."""
    while True:
        found = await peer.expect(lambda e: match(e) or is_caps_query(e))
        if not is_caps_query(found):
            return found
        node = found.find(f"{{{NS_DISCO_INFO}}}query").get("node", "")  # type: ignore[union-attr]
        assert node == f"urn:test:fed#{caps_ver(features)}", show(found)
        asked.add(found.get("from", ""))
        body = "<identity category='client' type='pc' name='fed-test'/>"
        body += "".join(f"<feature var='{f}'/>" for f in features)
        await peer.send(f"<iq type='result' id='{found.get('id')}' to='{found.get('from')}'>"
                        f"<query xmlns='{NS_DISCO_INFO}' node='{node}'>{body}</query></iq>")  # fmt: skip


def event(owner: Peer, node: str, item_id: str) -> Match:
    def match(e: Element) -> bool:
        item = e.find(f"{{{NS_EVENT}}}event/{{{NS_EVENT}}}items/{{{NS_EVENT}}}item")
        return (
            e.tag == f"{C}message" and e.get("from") == owner.bare and item is not None
            and item.getparent().get("node") == node and item.get("id") == item_id  # type: ignore[union-attr]
        )  # fmt: skip

    return match


def publish_xml(node: str, item_id: str, text: str) -> str:
    item = f"<item id='{item_id}'><entry xmlns='urn:test'>{text}</entry></item>"
    return f"<pubsub xmlns='{NS_PUBSUB}'><publish node='{node}'>{item}</publish></pubsub>"


async def test_pep_notifications_across_servers(federation: Federation) -> None:
    """XEP-0163 both ways: imactor asks a Prosody client's caps over s2s and notifies it of its
    user's publish; Prosody's PEP asks the imactor client's caps and notifies it of its own."""
    ours, theirs = "urn:test:fed:tune", "urn:test:fed:mood"
    with trio.fail_after(TIMEOUT):
        jack = await federation.imactor_user("jack")
        bench8 = await federation.prosody_user("bench8")
        await subscribe(jack, bench8)
        await subscribe(bench8, jack)
        # The Prosody client now advertises +notify for `ours`: imactor's PEP of jack asks it.
        remote_features = notify_features(ours)
        await bench8.send(f"<presence>{caps(remote_features)}</presence>")
        asked: set[str] = set()
        reply = await jack.iq(publish_xml(ours, "t1", "across"), type_="set")
        assert reply.get("type") == "result", show(reply)
        # The notification, or (when the caps answer reaches jack's actor after the publish) the
        # last item sent once the caps are known: the same item either way.
        got = await expect_answering(bench8, remote_features, event(jack, ours, "t1"), asked)
        assert got.findtext(".//{urn:test}entry") == "across"
        assert jack.bare in asked, asked  # imactor asked the remote client's caps itself

        # And back: the imactor client advertises +notify for `theirs`; Prosody's PEP asks.
        local_features = notify_features(theirs)
        await jack.send(f"<presence>{caps(local_features)}</presence>")
        reply = await bench8.iq(publish_xml(theirs, "m1", "back"), type_="set")
        assert reply.get("type") == "result", show(reply)
        asked.clear()
        got = await expect_answering(jack, local_features, event(bench8, theirs, "m1"), asked)
        assert got.findtext(".//{urn:test}entry") == "back"
        assert bench8.bare in asked, asked


async def test_a_remote_subscription_request_denied(federation: Federation) -> None:
    """RFC 6121 §3.2: a request refused with 'unsubscribed', each way; nothing stays pending."""
    with trio.fail_after(TIMEOUT):
        kim = await federation.imactor_user("kim")
        bench9 = await federation.prosody_user("bench9")
        await bench9.send(f"<presence to='{kim.bare}' type='subscribe'/>")
        await kim.expect(presence(from_=bench9.bare, type_="subscribe"))
        await kim.send(f"<presence to='{bench9.bare}' type='unsubscribed'/>")
        await bench9.expect(presence(from_=kim.bare, type_="unsubscribed"))
        # §3.1.3: a refused request leaves no trace in kim's roster.
        assert bench9.bare not in await kim.roster_items()
        assert item_state((await bench9.roster_items()).get(kim.bare)) in (None, ("none", None))
        # Denied means denied: kim's presence does not reach bench9 (a later message overtakes nothing).
        await kim.send("<presence><status>still private</status></presence>")
        await kim.send(f"<message to='{bench9.jid}' type='chat' id='k1'><body>x</body></message>")
        earlier = await bench9.before(message(from_=kim.jid, id_="k1"))
        assert [e for e in earlier if presence(from_=kim.jid)(e)] == [], [show(e) for e in earlier]

        await kim.send(f"<presence to='{bench9.bare}' type='subscribe'/>")
        await push_until(kim, bench9.bare, ("none", "subscribe"))
        await bench9.expect(presence(from_=kim.bare, type_="subscribe"))
        await bench9.send(f"<presence to='{kim.bare}' type='unsubscribed'/>")
        await kim.expect(presence(from_=bench9.bare, type_="unsubscribed"))
        await push_until(kim, bench9.bare, ("none", None))
        assert item_state((await kim.roster_items()).get(bench9.bare)) == ("none", None)


async def test_remote_side_cancels_subscriptions(federation: Federation) -> None:
    """RFC 6121 §3.3 from the Prosody side: its user's 'unsubscribe' ends its subscription to
    ours, its 'unsubscribed' ends ours to it; both rosters follow, and ours is told the
    contact went unavailable (§3.2.3)."""
    with trio.fail_after(TIMEOUT):
        lena = await federation.imactor_user("lena")
        bench10 = await federation.prosody_user("bench10")
        await subscribe(lena, bench10)
        await subscribe(bench10, lena)
        await bench10.send(f"<presence to='{lena.bare}' type='unsubscribe'/>")
        await lena.expect(presence(from_=bench10.bare, type_="unsubscribe"))
        await push_until(lena, bench10.bare, ("to", None))
        await push_until(bench10, lena.bare, ("from", None))

        await bench10.send(f"<presence to='{lena.bare}' type='unsubscribed'/>")
        await lena.expect(presence(from_=bench10.bare, type_="unsubscribed"))
        await push_until(lena, bench10.bare, ("none", None))
        await push_until(bench10, lena.bare, ("none", None))
        await lena.expect(presence(from_=bench10.jid, type_="unavailable"))
        assert item_state((await lena.roster_items()).get(bench10.bare)) == ("none", None)


async def test_imactor_side_cancels_subscriptions(federation: Federation) -> None:
    """RFC 6121 §3.3 from imactor's side, as Prosody sees it."""
    with trio.fail_after(TIMEOUT):
        mia = await federation.imactor_user("mia")
        bench11 = await federation.prosody_user("bench11")
        await subscribe(mia, bench11)
        await subscribe(bench11, mia)
        await mia.send(f"<presence to='{bench11.bare}' type='unsubscribe'/>")
        await push_until(mia, bench11.bare, ("from", None))
        await bench11.expect(presence(from_=mia.bare, type_="unsubscribe"))
        await push_until(bench11, mia.bare, ("to", None))

        await mia.send(f"<presence to='{bench11.bare}' type='unsubscribed'/>")
        await push_until(mia, bench11.bare, ("none", None))
        await bench11.expect(presence(from_=mia.bare, type_="unsubscribed"))
        await push_until(bench11, mia.bare, ("none", None))
        await bench11.expect(presence(from_=mia.jid, type_="unavailable"))
        assert item_state((await bench11.roster_items()).get(mia.bare)) == ("none", None)


async def test_pre_approval_of_a_remote_contact(federation: Federation) -> None:
    """RFC 6121 §3.4: an imactor user approves a Prosody user before it asks; its request is
    then answered by imactor at once and never shown to our user."""
    with trio.fail_after(TIMEOUT):
        nils = await federation.imactor_user("nils")
        bench12 = await federation.prosody_user("bench12")
        await nils.send(f"<presence to='{bench12.bare}' type='subscribed'/>")
        item = await nils.push_for(bench12.bare)
        assert (item_state(item), item.get("approved")) == (("none", None), "true"), show(item)
        await bench12.send(f"<presence to='{nils.bare}' type='subscribe'/>")
        await bench12.expect(presence(from_=nils.bare, type_="subscribed"))
        await bench12.expect(presence(from_=nils.jid))
        await push_until(bench12, nils.bare, ("to", None))

        def now_from(e: Element) -> bool:
            return roster_push(e) and item_state(pushed_item(e)) == ("from", None)

        earlier = await nils.before(now_from)
        assert [e for e in earlier if presence(type_="subscribe")(e)] == [], [show(e) for e in earlier]


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
        # The limiter held some back. How many depends on how fast the server reads: on a busy
        # machine it reads slower than the rate by itself, and fewer stanzas have to wait.
        assert 0 < throttled <= count - FLOOD_BURST


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
