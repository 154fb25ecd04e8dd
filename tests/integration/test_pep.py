"""XEP-0163 PEP on the XEP-0060 core, end to end over raw XML: publish, retrieve, retract,
configure, delete, purge, access models, publish-options, limits, +notify notifications (XEP-0115
caps asked by the server and verified) and last items on presence."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from tests.integration.conftest import PASSWORD, account_pool
from tests.support.peer import C, Element, Match, Peer, Peers, error_condition, make_contacts, new_id, show
from tests.support.postgres import PostgresServer
from tests.support.server import ServerProcess, running_server
from tests.support.timeouts import SLOW_TIMEOUT, TIMEOUT, WORKERS_TIMEOUT

pytestmark = pytest.mark.usefixtures("server_alive")

NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_OWNER = "http://jabber.org/protocol/pubsub#owner"
NS_EVENT = "http://jabber.org/protocol/pubsub#event"
NS_ERRORS = "http://jabber.org/protocol/pubsub#errors"
NS_DISCO = "http://jabber.org/protocol/disco#info"
NS_CAPS = "http://jabber.org/protocol/caps"
P = f"{{{NS_PUBSUB}}}"
EV = f"{{{NS_EVENT}}}"
MAX_ITEMS = 20  # [modules.pep] max_items of this module's server
MAX_BYTES = 2000


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """PEP nodes and items are stored: these tests run on SQLite and on PostgreSQL."""
    directory: Path = tmp_path_factory.mktemp(f"pep-{request.param}")
    extra = f"\n[modules.pep]\nmax_items = {MAX_ITEMS}\nmax_item_bytes = {MAX_BYTES}\nmax_nodes = 8\n"
    if request.param == "postgresql":
        postgres: PostgresServer = request.getfixturevalue("postgres")
        extra += f'\n[storage]\nurl = "{postgres.database_url("pep")}"\npartitions = 4\n'
    with running_server(directory, extra=extra) as process:
        yield process


@pytest.fixture(scope="module")
def pool(server: ServerProcess) -> Iterator[str]:
    return account_pool(server, "pep", 40)


async def befriend(server: ServerProcess, user: str, contact: str, kind: str) -> None:
    """`user` subscribes to `contact` ("to"), or both ways ("both"); all settled."""
    await make_contacts(server.c2s_port, [(user, contact, kind)], PASSWORD)


def form(form_type: str, **fields: str) -> str:
    body = f"<field var='FORM_TYPE' type='hidden'><value>{form_type}</value></field>"
    body += "".join(
        f"<field var='pubsub#{var}'><value>{value}</value></field>" for var, value in fields.items()
    )
    return f"<x xmlns='jabber:x:data' type='submit'>{body}</x>"


def publish_options(**fields: str) -> str:
    return f"<publish-options>{form(NS_PUBSUB + '#publish-options', **fields)}</publish-options>"


def publish_xml(node: str, item_id: str, text: str, options: str = "") -> str:
    item = f"<item id='{item_id}'><entry xmlns='urn:test'>{text}</entry></item>"
    return f"<pubsub xmlns='{NS_PUBSUB}'><publish node='{node}'>{item}</publish>{options}</pubsub>"


async def publish(peer: Peer, node: str, item_id: str, text: str, options: str = "") -> Element:
    return await peer.iq(publish_xml(node, item_id, text, options), type_="set")


async def items(peer: Peer, owner: str, node: str, extra: str = "", inner: str = "") -> Element:
    return await peer.iq(f"<pubsub xmlns='{NS_PUBSUB}'><items node='{node}'{extra}>{inner}</items></pubsub>",
                         to=owner)  # fmt: skip


def item_texts(reply: Element) -> list[tuple[str, str]]:
    assert reply.get("type") == "result", show(reply)
    return [(i.get("id", ""), i.findtext("{urn:test}entry") or "") for i in reply.iter(f"{P}item")]


def app_condition(reply: Element) -> str | None:
    error = reply.find(f"{C}error")
    assert error is not None, show(reply)
    found = [child.tag for child in error if child.tag.startswith(f"{{{NS_ERRORS}}}")]
    return found[0].split("}")[1] if found else None


def ok(reply: Element) -> Element:
    assert reply.get("type") == "result", show(reply)
    return reply


# ---- XEP-0115 helpers: a client that advertises +notify and answers the server's disco ---------


def caps_ver(features: list[str]) -> str:
    text = "client/pc//pep-test<" + "".join(f"{f}<" for f in sorted(features))
    return base64.b64encode(hashlib.sha1(text.encode()).digest()).decode()


def caps_presence(features: list[str]) -> str:
    return f"<c xmlns='{NS_CAPS}' hash='sha-1' node='urn:test:client' ver='{caps_ver(features)}'/>"


def is_disco_query(e: Element) -> bool:
    return e.tag == f"{C}iq" and e.get("type") == "get" and e.find(f"{{{NS_DISCO}}}query") is not None


async def answer_disco(peer: Peer, features: list[str], request: Element, *, lie: bool = False) -> None:
    """Answer a disco#info query about our caps (XEP-0115 §6.2); `lie`: leave a feature out."""
    node = request.find(f"{{{NS_DISCO}}}query").get("node", "")  # type: ignore[union-attr]
    assert node == f"urn:test:client#{caps_ver(features)}", show(request)
    advertised = features[:-1] if lie else features
    body = "<identity category='client' type='pc' name='pep-test'/>"
    body += "".join(f"<feature var='{f}'/>" for f in advertised)
    await peer.send(f"<iq type='result' id='{request.get('id')}' to='{request.get('from')}'>"
                    f"<query xmlns='{NS_DISCO}' node='{node}'>{body}</query></iq>")  # fmt: skip


async def expect_answering(peer: Peer, features: list[str], match: Match, *, lie: bool = False,
                           answered: list[Element] | None = None) -> Element:  # fmt: skip
    """Like `Peer.expect`, answering every disco#info query about our caps that comes first (the
    account's own PEP service asks, and so does each contact's); they go to `answered`."""
    while True:
        found = await peer.expect(lambda e: match(e) or is_disco_query(e))
        if not is_disco_query(found):
            return found
        await answer_disco(peer, features, found, lie=lie)
        if answered is not None:
            answered.append(found)


async def caps_answered(peer: Peer, features: list[str], owner: Peer, *, lie: bool = False) -> int:
    """Answer the caps queries about `peer` of its own PEP service and of `owner`'s: once
    `owner`'s actor has handled `peer`'s presence (a sync), both queries wait in `peer`'s actor's
    mailbox ahead of a marker message from `owner`."""
    await owner.sync()
    marker_id = new_id("marker")
    await owner.send(f"<message to='{peer.jid}' id='{marker_id}' type='chat'><body>m</body></message>")
    answered: list[Element] = []
    await expect_answering(peer, features, lambda e: e.get("id") == marker_id, lie=lie, answered=answered)
    await owner.sync()
    return len(answered)


async def notify_online(peers: Peers, user: str, nodes: list[str], resource: str = "r",
                        features: list[str] | None = None) -> tuple[Peer, list[str]]:  # fmt: skip
    """`user` online with caps asking +notify for `nodes` (and a unique feature, so that the
    server's per-worker caps cache never knows it beforehand); or with exactly `features`."""
    if features is None:
        features = [NS_DISCO, NS_CAPS, f"urn:test:unique:{new_id()}", *(n + "+notify" for n in nodes)]
    peer = await peers.login(user, resource)
    await peer.roster()
    await peer.send(f"<presence>{caps_presence(features)}</presence>")
    return peer, features


def event_from(owner: Peer, node: str):  # type: ignore[no-untyped-def]
    def match(e: Element) -> bool:
        ev = e.find(f"{EV}event")
        return (
            e.tag == f"{C}message" and e.get("from") == owner.bare and ev is not None
            and len(ev) > 0 and ev[0].get("node") == node
        )  # fmt: skip

    return match


# ---- publish and retrieve -------------------------------------------------------------------


async def test_publish_items_and_republish_same_id(peers: Peers, user: str) -> None:
    with trio.fail_after(TIMEOUT):
        alice = await peers.login(user)
        reply = ok(await publish(alice, "urn:test:mood", "a1", "happy"))
        assert reply.find(f"{P}pubsub/{P}publish/{P}item").get("id") == "a1"  # type: ignore[union-attr]
        assert item_texts(await items(alice, alice.bare, "urn:test:mood")) == [("a1", "happy")]
        # Default max_items is 1 (the last item): a new item replaces the old one.
        ok(await publish(alice, "urn:test:mood", "a2", "sad"))
        assert item_texts(await items(alice, alice.bare, "urn:test:mood")) == [("a2", "sad")]
        # No id: the service makes one.
        reply = ok(await publish(alice, "urn:test:noid", "", "x"))
        assert reply.find(f"{P}pubsub/{P}publish/{P}item").get("id")  # type: ignore[union-attr]


async def test_max_items_and_retrieval_bound(peers: Peers, user: str) -> None:
    with trio.fail_after(TIMEOUT):
        alice = await peers.login(user)
        opts = publish_options(max_items="max", access_model="open")
        ok(await publish(alice, "urn:test:log", "i0", "0", opts))
        for n in range(1, 6):
            ok(await publish(alice, "urn:test:log", f"i{n}", str(n), opts))
        ok(await publish(alice, "urn:test:log", "i2", "two again", opts))  # republished: newest
        got = item_texts(await items(alice, alice.bare, "urn:test:log"))
        expected = [("i0", "0"), ("i1", "1"), ("i3", "3"), ("i4", "4"), ("i5", "5"), ("i2", "two again")]
        assert got == expected
        newest = item_texts(await items(alice, alice.bare, "urn:test:log", " max_items='2'"))
        assert [i for i, _ in newest] == ["i5", "i2"]
        specific = await items(alice, alice.bare, "urn:test:log", inner="<item id='i3'/>")
        assert item_texts(specific) == [("i3", "3")]
        bad = await items(alice, alice.bare, "urn:test:log", " max_items='lots'")
        assert error_condition(bad) == "bad-request"


async def test_node_with_thousands_of_items_is_bounded(peers: Peers, user: str) -> None:
    """A client that pushes 1000 items keeps at most max_items of them; retrieval is bounded."""
    with trio.fail_after(SLOW_TIMEOUT):
        alice = await peers.login(user)
        opts = publish_options(max_items="max")
        ids = [new_id("flood") for _ in range(1000)]

        async def read_answers() -> None:
            for item_id in ids:
                reply = await alice.expect(lambda e, i=item_id: e.get("id") == i)  # type: ignore[misc]
                ok(reply)

        # Pipelined, with the answers read as they come: a client that sent everything before
        # reading anything could fill both directions' socket buffers, and a server rightly cuts
        # off a client that does not read its answers (the write timeout).
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_answers)
            for n, item_id in enumerate(ids):
                payload = publish_xml("urn:test:flood", f"f{n}", str(n), opts)
                await alice.send(f"<iq type='set' id='{item_id}'>{payload}</iq>")
        got = item_texts(await items(alice, alice.bare, "urn:test:flood"))
        assert [i for i, _ in got] == [f"f{n}" for n in range(1000 - MAX_ITEMS, 1000)]
        # More than the service allows cannot be configured.
        too_many = await publish(
            alice, "urn:test:flood2", "x", "x", publish_options(max_items=str(MAX_ITEMS + 1))
        )
        assert error_condition(too_many) == "conflict"


# ---- bad input --------------------------------------------------------------------------------


async def test_publish_to_another_users_node_is_forbidden(peers: Peers, pool: Iterator[str]) -> None:
    alice_name, mallory_name = next(pool), next(pool)
    with trio.fail_after(TIMEOUT):
        alice = await peers.login(alice_name)
        mallory = await peers.login(mallory_name)
        ok(await publish(alice, "urn:test:mood", "a", "mine"))
        attack = await mallory.iq(publish_xml("urn:test:mood", "a", "yours"), type_="set", to=alice.bare)
        assert error_condition(attack) == "forbidden"
        retract = (
            f"<pubsub xmlns='{NS_PUBSUB}'><retract node='urn:test:mood'><item id='a'/></retract></pubsub>"
        )
        assert error_condition(await mallory.iq(retract, type_="set", to=alice.bare)) == "forbidden"
        delete = f"<pubsub xmlns='{NS_OWNER}'><delete node='urn:test:mood'/></pubsub>"
        assert error_condition(await mallory.iq(delete, type_="set", to=alice.bare)) == "forbidden"
        assert item_texts(await items(alice, alice.bare, "urn:test:mood")) == [("a", "mine")]


async def test_oversized_item_is_refused(peers: Peers, user: str) -> None:
    with trio.fail_after(TIMEOUT):
        alice = await peers.login(user)
        reply = await publish(alice, "urn:test:big", "b", "x" * (MAX_BYTES + 10))
        assert error_condition(reply) == "not-acceptable"
        assert app_condition(reply) == "payload-too-big"
        no_item = f"<pubsub xmlns='{NS_PUBSUB}'><publish node='urn:test:big'/></pubsub>"
        assert error_condition(await alice.iq(no_item, type_="set")) == "bad-request"
        no_node = (
            f"<pubsub xmlns='{NS_PUBSUB}'><publish><item id='x'><a xmlns='b'/></item></publish></pubsub>"
        )
        assert app_condition(await alice.iq(no_node, type_="set")) == "nodeid-required"
        assert error_condition(await items(alice, alice.bare, "urn:test:big")) == "item-not-found"


async def test_publish_options_preconditions(peers: Peers, user: str) -> None:
    with trio.fail_after(TIMEOUT):
        alice = await peers.login(user)
        # Auto-created with the options as configuration, then met again.
        ok(await publish(alice, "urn:test:devices", "current", "1", publish_options(access_model="open")))
        ok(await publish(alice, "urn:test:devices", "current", "2", publish_options(access_model="open")))
        mismatch = await publish(
            alice, "urn:test:devices", "current", "3", publish_options(access_model="whitelist")
        )
        assert error_condition(mismatch) == "conflict"
        assert app_condition(mismatch) == "precondition-not-met"
        unknown = await publish(alice, "urn:test:devices", "current", "3", publish_options(frobnicate="1"))
        assert app_condition(unknown) == "precondition-not-met"
        assert item_texts(await items(alice, alice.bare, "urn:test:devices")) == [("current", "2")]


@pytest.mark.parametrize(
    "options",
    [
        # no FORM_TYPE
        "<publish-options><x xmlns='jabber:x:data' type='submit'>"
        "<field var='pubsub#access_model'><value>open</value></field></x></publish-options>",
        # a form of another kind
        "<publish-options><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>"
        "<value>urn:other</value></field></x></publish-options>",
        # not a form type at all
        "<publish-options><x xmlns='jabber:x:data' type='bogus'/></publish-options>",
        # a field without var
        "<publish-options><x xmlns='jabber:x:data' type='submit'><field><value>1</value></field></x>"
        "</publish-options>",
    ],
)
async def test_malformed_publish_options_are_bad_request(peers: Peers, user: str, options: str) -> None:
    with trio.fail_after(TIMEOUT):
        alice = await peers.login(user)
        reply = await publish(alice, "urn:test:malformed", "x", "x", options)
        assert error_condition(reply) == "bad-request", show(reply)


# ---- access models --------------------------------------------------------------------------


async def test_access_models(peers: Peers, pool: Iterator[str], server: ServerProcess) -> None:
    alice_name, friend_name, stranger_name = next(pool), next(pool), next(pool)
    with trio.fail_after(TIMEOUT):
        await befriend(server, friend_name, alice_name, "to")
        alice = await peers.login(alice_name)
        friend = await peers.login(friend_name)
        stranger = await peers.login(stranger_name)
        ok(await publish(alice, "urn:test:presence", "1", "p"))
        ok(await publish(alice, "urn:test:open", "1", "o", publish_options(access_model="open")))
        ok(await publish(alice, "urn:test:white", "1", "w", publish_options(access_model="whitelist")))
        assert item_texts(await items(friend, alice.bare, "urn:test:presence")) == [("1", "p")]
        denied = await items(stranger, alice.bare, "urn:test:presence")
        assert (error_condition(denied), app_condition(denied)) == (
            "not-authorized",
            "presence-subscription-required",
        )
        assert item_texts(await items(stranger, alice.bare, "urn:test:open")) == [("1", "o")]
        closed = await items(friend, alice.bare, "urn:test:white")
        assert (error_condition(closed), app_condition(closed)) == ("not-allowed", "closed-node")
        assert item_texts(await items(alice, alice.bare, "urn:test:white")) == [("1", "w")]


# ---- owner use cases --------------------------------------------------------------------------


async def test_configure_retract_purge_delete(peers: Peers, user: str) -> None:
    with trio.fail_after(TIMEOUT):
        alice = await peers.login(user)
        create = f"<pubsub xmlns='{NS_PUBSUB}'><create node='urn:test:cfg'/><configure>" + form(
            NS_PUBSUB + "#node_config", max_items="3") + "</configure></pubsub>"  # fmt: skip
        ok(await alice.iq(create, type_="set"))
        assert error_condition(await alice.iq(create, type_="set")) == "conflict"
        got = ok(await alice.iq(f"<pubsub xmlns='{NS_OWNER}'><configure node='urn:test:cfg'/></pubsub>"))
        values = {f.get("var"): f.findtext("{jabber:x:data}value") for f in got.iter("{jabber:x:data}field")}
        assert values["pubsub#max_items"] == "3"
        assert values["pubsub#access_model"] == "presence"
        default = ok(await alice.iq(f"<pubsub xmlns='{NS_OWNER}'><default/></pubsub>"))
        assert default.find(f"{{{NS_OWNER}}}pubsub/{{{NS_OWNER}}}default/{{jabber:x:data}}x") is not None
        for n in range(5):
            ok(await publish(alice, "urn:test:cfg", f"c{n}", str(n)))
        assert [i for i, _ in item_texts(await items(alice, alice.bare, "urn:test:cfg"))] == [
            "c2",
            "c3",
            "c4",
        ]
        # Reconfigure to 2 items: the oldest goes.
        configure = f"<pubsub xmlns='{NS_OWNER}'><configure node='urn:test:cfg'>" + form(
            NS_PUBSUB + "#node_config", max_items="2") + "</configure></pubsub>"  # fmt: skip
        ok(await alice.iq(configure, type_="set"))
        assert [i for i, _ in item_texts(await items(alice, alice.bare, "urn:test:cfg"))] == ["c3", "c4"]
        bad = f"<pubsub xmlns='{NS_OWNER}'><configure node='urn:test:cfg'>" + form(
            NS_PUBSUB + "#node_config", access_model="everyone") + "</configure></pubsub>"  # fmt: skip
        assert error_condition(await alice.iq(bad, type_="set")) == "not-acceptable"
        retract = (
            f"<pubsub xmlns='{NS_PUBSUB}'><retract node='urn:test:cfg'><item id='c3'/></retract></pubsub>"
        )
        ok(await alice.iq(retract, type_="set"))
        assert error_condition(await alice.iq(retract, type_="set")) == "item-not-found"
        assert [i for i, _ in item_texts(await items(alice, alice.bare, "urn:test:cfg"))] == ["c4"]
        ok(await alice.iq(f"<pubsub xmlns='{NS_OWNER}'><purge node='urn:test:cfg'/></pubsub>", type_="set"))
        assert item_texts(await items(alice, alice.bare, "urn:test:cfg")) == []
        ok(await alice.iq(f"<pubsub xmlns='{NS_OWNER}'><delete node='urn:test:cfg'/></pubsub>", type_="set"))
        assert error_condition(await items(alice, alice.bare, "urn:test:cfg")) == "item-not-found"
        subscribe_xml = f"<pubsub xmlns='{NS_PUBSUB}'><subscribe node='x' jid='{alice.jid}'/></pubsub>"
        assert error_condition(await alice.iq(subscribe_xml, type_="set")) == "feature-not-implemented"


async def test_too_many_nodes(peers: Peers, user: str) -> None:
    with trio.fail_after(TIMEOUT):
        alice = await peers.login(user)
        for n in range(8):
            ok(await publish(alice, f"urn:test:n{n}", "x", "x"))
        reply = await publish(alice, "urn:test:one-too-many", "x", "x")
        assert (error_condition(reply), app_condition(reply)) == ("not-allowed", "max-nodes-exceeded")


# ---- notifications ----------------------------------------------------------------------------


async def test_notifications_follow_notify_caps(
    peers: Peers, pool: Iterator[str], server: ServerProcess
) -> None:
    alice_name, bob_name, carol_name = next(pool), next(pool), next(pool)
    with trio.fail_after(TIMEOUT):
        await befriend(server, alice_name, bob_name, "both")
        await befriend(server, alice_name, carol_name, "both")
        alice = await peers.online(alice_name)
        bob, bob_features = await notify_online(peers, bob_name, ["urn:test:tune"])
        await caps_answered(bob, bob_features, alice)
        carol, carol_features = await notify_online(peers, carol_name, ["urn:test:other"])
        await caps_answered(carol, carol_features, alice)
        ok(await publish(alice, "urn:test:tune", "t1", "song"))
        event = await bob.expect(event_from(alice, "urn:test:tune"))
        assert event.get("type") == "headline"
        assert event.findtext(f"{EV}event/{EV}items/{EV}item/{{urn:test}}entry") == "song"
        # Carol did not ask for urn:test:tune: she gets nothing (the marker proves it).
        ok(await publish(alice, "urn:test:other", "o1", "for carol"))
        earlier = await carol.before(event_from(alice, "urn:test:other"))
        assert not [e for e in earlier if event_from(alice, "urn:test:tune")(e)], [show(e) for e in earlier]
        # Retraction with notify='true' is announced.
        retract = (f"<pubsub xmlns='{NS_PUBSUB}'><retract node='urn:test:tune' notify='true'>"
                   "<item id='t1'/></retract></pubsub>")  # fmt: skip
        ok(await alice.iq(retract, type_="set"))
        event = await bob.expect(event_from(alice, "urn:test:tune"))
        assert event.find(f"{EV}event/{EV}items/{EV}retract").get("id") == "t1"  # type: ignore[union-attr]
        # After bob goes offline, nothing is sent to him any more (no error, no hang).
        await bob.send("<presence type='unavailable'/>")
        await alice.sync()
        ok(await publish(alice, "urn:test:tune", "t2", "later"))


async def test_caps_that_do_not_verify_are_not_trusted(
    peers: Peers, pool: Iterator[str], server: ServerProcess
) -> None:
    alice_name, bob_name = next(pool), next(pool)
    with trio.fail_after(TIMEOUT):
        await befriend(server, alice_name, bob_name, "both")
        alice = await peers.online(alice_name)
        bob, features = await notify_online(peers, bob_name, ["urn:test:lie"])
        await caps_answered(bob, features, alice, lie=True)  # the answer does not hash to the ver
        ok(await publish(alice, "urn:test:lie", "1", "x"))
        ok(await publish(alice, "urn:test:after", "1", "x"))  # a marker through alice's actor
        await alice.sync()
        marker_id = new_id("marker")
        await alice.send(f"<message to='{bob.jid}' id='{marker_id}' type='chat'><body>m</body></message>")
        earlier = await bob.before(lambda e: e.get("id") == marker_id)
        assert not [e for e in earlier if event_from(alice, "urn:test:lie")(e)], [show(e) for e in earlier]


async def test_last_item_on_presence_and_own_resources(
    peers: Peers, pool: Iterator[str], server: ServerProcess
) -> None:
    alice_name, bob_name = next(pool), next(pool)
    with trio.fail_after(TIMEOUT):
        await befriend(server, alice_name, bob_name, "both")
        alice = await peers.online(alice_name)
        ok(await publish(alice, "urn:test:geo", "g1", "old place"))
        ok(await publish(alice, "urn:test:geo", "g2", "here"))
        # Bob comes online later: he gets the last item once his caps are known.
        bob, features = await notify_online(peers, bob_name, ["urn:test:geo"])
        event = await expect_answering(bob, features, event_from(alice, "urn:test:geo"))
        assert [i.get("id") for i in event.iter(f"{EV}item")] == ["g2"]
        # Alice's own second resource with +notify gets it too, and later notifications.
        alice2, own_features = await notify_online(peers, alice_name, ["urn:test:geo"], resource="second")
        event = await expect_answering(alice2, own_features, event_from(alice, "urn:test:geo"))
        assert event.findtext(f"{EV}event/{EV}items/{EV}item/{{urn:test}}entry") == "here"
        ok(await publish(alice, "urn:test:geo", "g3", "there"))
        for peer in (bob, alice2):
            event = await peer.expect(event_from(alice, "urn:test:geo"))
            assert event.findtext(f"{EV}event/{EV}items/{EV}item/{{urn:test}}entry") == "there"


async def test_caps_are_cached_only_once_verified(
    peers: Peers, pool: Iterator[str], server: ServerProcess
) -> None:
    """XEP-0115 §5.4: an answer that does not hash to its ver is not cached (the next client with
    that ver is asked again); a verified one is (the next client is not asked at all)."""
    alice_name, bob_name, carol_name, dave_name = next(pool), next(pool), next(pool), next(pool)
    with trio.fail_after(TIMEOUT):
        for contact in (bob_name, carol_name, dave_name):
            await befriend(server, alice_name, contact, "both")
        alice = await peers.online(alice_name)
        bob, features = await notify_online(peers, bob_name, ["urn:test:cache"])
        assert await caps_answered(bob, features, alice, lie=True) >= 1
        carol, _ = await notify_online(peers, carol_name, [], features=features)
        assert await caps_answered(carol, features, alice) >= 1  # not served from a cache
        dave, _ = await notify_online(peers, dave_name, [], features=features)
        assert await caps_answered(dave, features, alice) == 0  # served from the cache
        ok(await publish(alice, "urn:test:cache", "1", "cached"))
        for peer in (carol, dave):
            event = await peer.expect(event_from(alice, "urn:test:cache"))
            assert event.findtext(f"{EV}event/{EV}items/{EV}item/{{urn:test}}entry") == "cached"


async def test_disco_of_nodes_and_items(peers: Peers, pool: Iterator[str]) -> None:
    """XEP-0060 §5.2 / §5.5: the account lists its nodes (those the asker may access) and the
    items of a node; its disco#info says it is a PEP service (XEP-0163 §6.1)."""
    alice_name, stranger_name = next(pool), next(pool)
    disco_items = "http://jabber.org/protocol/disco#items"
    with trio.fail_after(TIMEOUT):
        alice = await peers.login(alice_name)
        stranger = await peers.login(stranger_name)
        ok(await publish(alice, "urn:test:hidden", "h", "x"))
        ok(
            await publish(
                alice, "urn:test:public", "p1", "x", publish_options(access_model="open", max_items="5")
            )
        )
        ok(
            await publish(
                alice, "urn:test:public", "p2", "x", publish_options(access_model="open", max_items="5")
            )
        )

        def listed(reply: Element) -> list[tuple[str | None, str | None]]:
            ok(reply)
            return [(i.get("node"), i.get("name")) for i in reply.iter(f"{{{disco_items}}}item")]

        own = listed(await alice.iq(f"<query xmlns='{disco_items}'/>", to=alice.bare))
        assert own == [("urn:test:hidden", None), ("urn:test:public", None)]
        theirs = listed(await stranger.iq(f"<query xmlns='{disco_items}'/>", to=alice.bare))
        assert theirs == [("urn:test:public", None)]
        items_of = listed(
            await stranger.iq(f"<query xmlns='{disco_items}' node='urn:test:public'/>", to=alice.bare)
        )
        assert items_of == [(None, "p2"), (None, "p1")]
        hidden = await stranger.iq(f"<query xmlns='{disco_items}' node='urn:test:hidden'/>", to=alice.bare)
        assert error_condition(hidden) == "not-authorized"
        missing = await alice.iq(f"<query xmlns='{disco_items}' node='urn:test:nothing'/>", to=alice.bare)
        assert error_condition(missing) == "item-not-found"


async def test_roster_access_model_and_transient_items(peers: Peers, pool: Iterator[str]) -> None:
    """§4.5 roster access (only contacts in an allowed roster group) and XEP-0223's opposite,
    `persist_items` false: nothing is kept to retrieve."""
    alice_name, friend_name, colleague_name = next(pool), next(pool), next(pool)
    with trio.fail_after(TIMEOUT):
        alice = await peers.login(alice_name)
        friend = await peers.login(friend_name)
        colleague = await peers.login(colleague_name)
        ok(await alice.roster_set(f"<item jid='{friend.bare}'><group>Friends</group></item>"))
        ok(await alice.roster_set(f"<item jid='{colleague.bare}'><group>Work</group></item>"))
        configure = form(NS_PUBSUB + "#node_config", access_model="roster", roster_groups_allowed="Friends")
        create = (
            f"<pubsub xmlns='{NS_PUBSUB}'><create node='urn:test:roster'/>"
            f"<configure>{configure}</configure></pubsub>"
        )
        ok(await alice.iq(create, type_="set"))
        ok(await publish(alice, "urn:test:roster", "r", "for friends"))
        assert item_texts(await items(friend, alice.bare, "urn:test:roster")) == [("r", "for friends")]
        denied = await items(colleague, alice.bare, "urn:test:roster")
        assert (error_condition(denied), app_condition(denied)) == ("not-authorized", "not-in-roster-group")
        ok(await publish(alice, "urn:test:transient", "t", "gone", publish_options(persist_items="false")))
        assert item_texts(await items(alice, alice.bare, "urn:test:transient")) == []


def _homed_pair() -> tuple[str, str]:
    """Two account names whose user actors live on different workers (membership (0, 1))."""
    from imactor.cluster.placement import home

    found: dict[int, str] = {}
    for number in range(1000):
        found.setdefault(home("user", f"pepmesh{number}", (0, 1)), f"pepmesh{number}")
        if len(found) == 2:
            break
    return found[0], found[1]


async def test_pep_across_workers(tmp_path: Path) -> None:
    """Caps queries, their answers, notifications and last items between accounts homed on
    different worker processes (they cross the actor mesh as ordinary stanzas)."""
    alice_name, bob_name = _homed_pair()
    users = [(alice_name, PASSWORD), (bob_name, PASSWORD)]
    with running_server(tmp_path, users=users, workers=2) as two_workers:
        logins = Peers(two_workers.c2s_port, PASSWORD)
        try:
            with trio.fail_after(WORKERS_TIMEOUT):
                await befriend(two_workers, alice_name, bob_name, "both")
                alice = await logins.online(alice_name)
                ok(await publish(alice, "urn:test:mesh", "m1", "first"))
                bob, features = await notify_online(logins, bob_name, ["urn:test:mesh"])
                event = await expect_answering(bob, features, event_from(alice, "urn:test:mesh"))
                assert event.findtext(f"{EV}event/{EV}items/{EV}item/{{urn:test}}entry") == "first"
                ok(await publish(alice, "urn:test:mesh", "m2", "second"))
                event = await expect_answering(bob, features, event_from(alice, "urn:test:mesh"))
                assert event.findtext(f"{EV}event/{EV}items/{EV}item/{{urn:test}}entry") == "second"
        finally:
            await logins.aclose()
