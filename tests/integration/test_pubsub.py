"""XEP-0060 publish-subscribe service at pubsub.localhost (module `pubsub`), end to end.

One server for the module, two workers (the service answers in whichever worker routes the
request: its state is the database's). slixmpp's xep_0060 plugin drives the use cases as a
client application would (create, configure, subscribe, publish, notifications, retrieval,
retract, delete); raw XML checks the exact errors of XEP-0060 and the service discovery.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import slixmpp
import trio
from slixmpp.exceptions import IqError

from imactor.config import DEFAULT_MODULES
from tests.integration.conftest import PASSWORD, Accounts
from tests.support.clients import Clients, event_queue, run
from tests.support.peer import C, Element, Peer, Peers, error_condition, new_id, show
from tests.support.postgres import PostgresServer
from tests.support.server import ServerProcess, running_server
from tests.support.timeouts import TIMEOUT

pytestmark = pytest.mark.usefixtures("server_alive")

SERVICE = "pubsub.localhost"
NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_OWNER = "http://jabber.org/protocol/pubsub#owner"
NS_EVENT = "http://jabber.org/protocol/pubsub#event"
NS_ERRORS = "http://jabber.org/protocol/pubsub#errors"
NS_INFO = "http://jabber.org/protocol/disco#info"
NS_ITEMS = "http://jabber.org/protocol/disco#items"
P, OWN, EV = f"{{{NS_PUBSUB}}}", f"{{{NS_OWNER}}}", f"{{{NS_EVENT}}}"
MAX_ITEMS = 5
MAX_BYTES = 1000
MODULES = "modules = [" + ", ".join(f'"{name}"' for name in (*DEFAULT_MODULES, "pubsub")) + "]\n"
SETTINGS = (
    f"\n[modules.pubsub]\nmax_items = {MAX_ITEMS}\ndefault_max_items = 3\nmax_item_bytes = {MAX_BYTES}\n"
)


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """The service's state is the database's: these tests run on SQLite and on PostgreSQL (where
    the node's row lock orders concurrent publishes)."""
    extra = SETTINGS
    if request.param == "postgresql":
        postgres: PostgresServer = request.getfixturevalue("postgres")
        extra += f'\n[storage]\nurl = "{postgres.database_url("pubsub")}"\npartitions = 4\n'
    with running_server(tmp_path_factory.mktemp(f"pubsub-{request.param}"), server_options=MODULES,
                        extra=extra, workers=2) as process:  # fmt: skip
        yield process


# ---- raw XML helpers ----------------------------------------------------------------------


def form(form_type: str, **fields: str) -> str:
    body = f"<field var='FORM_TYPE' type='hidden'><value>{form_type}</value></field>"
    body += "".join(f"<field var='pubsub#{k}'><value>{v}</value></field>" for k, v in fields.items())
    return f"<x xmlns='jabber:x:data' type='submit'>{body}</x>"


def ok(reply: Element) -> Element:
    assert reply.get("type") == "result", show(reply)
    return reply


def errors(reply: Element) -> tuple[str | None, str | None]:
    """(the stanza error condition, the pubsub#errors condition)."""
    assert reply.get("type") == "error", show(reply)
    error = reply.find(f"{C}error")
    assert error is not None
    app = [c.tag.split("}")[1] for c in error if c.tag.startswith(f"{{{NS_ERRORS}}}")]
    return error_condition(reply), (app[0] if app else None)


async def ps(peer: Peer, body: str, type_: str = "set", ns: str = NS_PUBSUB) -> Element:
    return await peer.iq(f"<pubsub xmlns='{ns}'>{body}</pubsub>", type_=type_, to=SERVICE)


async def create(peer: Peer, node: str, **config: str) -> Element:
    configure = f"<configure>{form(NS_PUBSUB + '#node_config', **config)}</configure>" if config else ""
    return await ps(peer, f"<create node='{node}'/>{configure}")


async def publish(peer: Peer, node: str, item_id: str, text: str, extra: str = "") -> Element:
    item = (
        f"<item id='{item_id}'><entry xmlns='urn:test'>{text}</entry></item>" if item_id is not None else ""
    )
    return await ps(peer, f"<publish node='{node}'>{item}</publish>{extra}")


async def items(peer: Peer, node: str, inner: str = "", extra: str = "") -> Element:
    return await ps(peer, f"<items node='{node}'{extra}>{inner}</items>", type_="get")


def item_texts(reply: Element) -> list[tuple[str, str]]:
    ok(reply)
    return [(i.get("id", ""), i.findtext("{urn:test}entry") or "") for i in reply.iter(f"{P}item")]


def event(node: str):  # type: ignore[no-untyped-def]
    def match(e: Element) -> bool:
        ev = e.find(f"{EV}event")
        return (
            e.tag == f"{C}message"
            and e.get("from") == SERVICE
            and ev is not None
            and ev[0].get("node") == node
        )

    return match


# ---- service discovery --------------------------------------------------------------------


async def test_disco_info_items_and_node_info(peers: Peers) -> None:
    with trio.fail_after(TIMEOUT):
        (alice,) = await peers.online_users(1)
        info = ok(await alice.iq(f"<query xmlns='{NS_INFO}'/>", to=SERVICE))
        identity = info.find(f"{{{NS_INFO}}}query/{{{NS_INFO}}}identity")
        assert identity is not None
        assert (identity.get("category"), identity.get("type")) == (
            "pubsub",
            "service",
        )
        features = {f.get("var") for f in info.iter(f"{{{NS_INFO}}}feature")}
        for name in (
            "create-nodes",
            "publish",
            "subscribe",
            "retrieve-items",
            "retract-items",
            "delete-nodes",
            "config-node",
            "manage-subscriptions",
            "persistent-items",
            "instant-nodes",
        ):
            assert f"{NS_PUBSUB}#{name}" in features, name
        # The service is listed by the server.
        listed = ok(await alice.iq(f"<query xmlns='{NS_ITEMS}'/>", to="localhost"))
        assert SERVICE in {i.get("jid") for i in listed.iter(f"{{{NS_ITEMS}}}item")}
        node = new_id("disco")
        ok(await create(alice, node, title="News of the day"))
        ok(await publish(alice, node, "n1", "first"))
        found = ok(await alice.iq(f"<query xmlns='{NS_ITEMS}'/>", to=SERVICE))
        entries = {i.get("node"): i for i in found.iter(f"{{{NS_ITEMS}}}item")}
        assert entries[node].get("jid") == SERVICE
        assert entries[node].get("name") == "News of the day"
        of_node = ok(await alice.iq(f"<query xmlns='{NS_ITEMS}' node='{node}'/>", to=SERVICE))
        assert [i.get("name") for i in of_node.iter(f"{{{NS_ITEMS}}}item")] == ["n1"]
        node_info = ok(await alice.iq(f"<query xmlns='{NS_INFO}' node='{node}'/>", to=SERVICE))
        identity = node_info.find(f"{{{NS_INFO}}}query/{{{NS_INFO}}}identity")
        assert identity is not None
        assert identity.get("type") == "leaf"
        owners = [
            v.text
            for f in node_info.iter("{jabber:x:data}field")
            if f.get("var") == "pubsub#owner"
            for v in f
        ]
        assert owners == [alice.bare]
        missing = await alice.iq(f"<query xmlns='{NS_INFO}' node='no-such-{node}'/>", to=SERVICE)
        assert errors(missing)[0] == "item-not-found"


# ---- create, configure, delete -------------------------------------------------------------


async def test_create_instant_conflict_and_default_config(peers: Peers) -> None:
    with trio.fail_after(TIMEOUT):
        alice, bob = await peers.online_users(2)
        node = new_id("node")
        ok(await create(alice, node))
        assert errors(await create(bob, node)) == ("conflict", None)
        instant = ok(await ps(alice, "<create/>"))
        made = instant.find(f"{P}pubsub/{P}create")
        assert made is not None
        assert made.get("node")
        configure = ok(await ps(alice, f"<configure node='{node}'/>", type_="get", ns=NS_OWNER))
        values = {f.get("var"): [v.text for v in f.findall("{jabber:x:data}value")]
                  for f in configure.iter("{jabber:x:data}field")}  # fmt: skip
        assert values["pubsub#access_model"] == ["open"]
        assert values["pubsub#publish_model"] == ["publishers"]
        assert values["pubsub#max_items"] == ["3"]
        # Only an owner configures; a value out of range is refused.
        assert (
            errors(await ps(bob, f"<configure node='{node}'/>", type_="get", ns=NS_OWNER))[0] == "forbidden"
        )
        too_many = form(NS_PUBSUB + "#node_config", max_items=str(MAX_ITEMS + 1))
        refused = await ps(alice, f"<configure node='{node}'>{too_many}</configure>", ns=NS_OWNER)
        assert errors(refused)[0] == "not-acceptable"
        presence_model = form(NS_PUBSUB + "#node_config", access_model="presence")
        refused = await ps(alice, f"<configure node='{node}'>{presence_model}</configure>", ns=NS_OWNER)
        assert errors(refused)[0] == "not-acceptable"


async def test_publish_to_a_missing_node(peers: Peers) -> None:
    """No auto-create: publishing to a node that does not exist is item-not-found (§7.1.3.3)."""
    with trio.fail_after(TIMEOUT):
        (alice,) = await peers.online_users(1)
        assert errors(await publish(alice, new_id("nowhere"), "i", "x"))[0] == "item-not-found"


async def test_delete_notifies_subscribers(peers: Peers) -> None:
    with trio.fail_after(TIMEOUT):
        alice, bob = await peers.online_users(2)
        node = new_id("gone")
        ok(await create(alice, node))
        ok(await ps(bob, f"<subscribe node='{node}' jid='{bob.jid}'/>"))
        assert errors(await ps(bob, f"<delete node='{node}'/>", ns=NS_OWNER))[0] == "forbidden"
        ok(await ps(alice, f"<delete node='{node}'/>", ns=NS_OWNER))
        deleted = await bob.expect(event(node))
        assert deleted.find(f"{EV}event/{EV}delete") is not None
        assert errors(await items(alice, node))[0] == "item-not-found"


# ---- publish, items, retract, purge ---------------------------------------------------------


async def test_publish_retrieve_max_items_retract_purge(peers: Peers) -> None:
    with trio.fail_after(TIMEOUT):
        alice, bob = await peers.online_users(2)
        node = new_id("log")
        ok(await create(alice, node))
        for n in range(5):
            ok(await publish(alice, node, f"i{n}", str(n)))
        # default_max_items is 3: the oldest two are gone.
        assert item_texts(await items(bob, node)) == [("i2", "2"), ("i3", "3"), ("i4", "4")]
        assert item_texts(await items(bob, node, extra=" max_items='1'")) == [("i4", "4")]
        assert item_texts(await items(bob, node, "<item id='i3'/>")) == [("i3", "3")]
        assert errors(await items(bob, node, "<item id='i0'/>"))[0] == "item-not-found"
        bare_item = "<item><entry xmlns='urn:test'>g</entry></item>"
        generated = ok(await ps(alice, f"<publish node='{node}'>{bare_item}</publish>"))
        item = generated.find(f"{P}pubsub/{P}publish/{P}item")
        assert item is not None
        assert item.get("id")
        # Publishers publish; others may not (publish_model publishers).
        assert errors(await publish(bob, node, "b", "x"))[0] == "forbidden"
        assert errors(await ps(bob, f"<retract node='{node}'><item id='i4'/></retract>"))[0] == "forbidden"
        ok(await ps(alice, f"<retract node='{node}'><item id='i4'/></retract>"))
        assert (
            errors(await ps(alice, f"<retract node='{node}'><item id='i4'/></retract>"))[0]
            == "item-not-found"
        )
        assert "i4" not in [i for i, _ in item_texts(await items(bob, node))]
        ok(await ps(alice, f"<purge node='{node}'/>", ns=NS_OWNER))
        assert item_texts(await items(bob, node)) == []


async def test_payload_checks_and_preconditions(peers: Peers) -> None:
    with trio.fail_after(TIMEOUT):
        (alice,) = await peers.online_users(1)
        node = new_id("checks")
        ok(await create(alice, node))
        assert errors(await publish(alice, node, "big", "x" * (MAX_BYTES + 10))) == (
            "not-acceptable",
            "payload-too-big",
        )
        assert errors(await ps(alice, f"<publish node='{node}'/>")) == ("bad-request", "item-required")
        options = form(NS_PUBSUB + "#publish-options", access_model="whitelist")
        options = f"<publish-options>{options}</publish-options>"
        assert errors(await publish(alice, node, "p", "x", options)) == ("conflict", "precondition-not-met")
        same = (
            f"<publish-options>{form(NS_PUBSUB + '#publish-options', access_model='open')}</publish-options>"
        )
        ok(await publish(alice, node, "p", "x", same))


async def test_open_publish_model_and_own_retractions(peers: Peers) -> None:
    """publish_model open: anyone publishes, and retracts only what it published."""
    with trio.fail_after(TIMEOUT):
        alice, bob, carol = await peers.online_users(3)
        node = new_id("wall")
        ok(await create(alice, node, publish_model="open"))
        ok(await publish(bob, node, "by-bob", "b"))
        ok(await publish(carol, node, "by-carol", "c"))
        refused = await ps(bob, f"<retract node='{node}'><item id='by-carol'/></retract>")
        assert errors(refused)[0] == "forbidden"
        ok(await ps(bob, f"<retract node='{node}'><item id='by-bob'/></retract>"))
        ok(await ps(alice, f"<retract node='{node}'><item id='by-carol'/></retract>"))  # the owner: any
        assert item_texts(await items(carol, node)) == []
        long_id = "x" * 1025
        assert errors(await publish(bob, node, long_id, "x"))[0] == "not-acceptable"


async def test_bad_requests(peers: Peers) -> None:
    with trio.fail_after(TIMEOUT):
        (alice,) = await peers.online_users(1)
        node = new_id("bad")
        ok(await create(alice, node))
        assert errors(await ps(alice, ""))[0] == "bad-request"
        both = f"<publish node='{node}'/><retract node='{node}'/>"
        assert errors(await ps(alice, both))[0] == "bad-request"
        assert errors(await ps(alice, "<publish/>")) == ("bad-request", "nodeid-required")
        two = "<item id='a'><a xmlns='urn:test'/><b xmlns='urn:test'/></item>"
        assert errors(await ps(alice, f"<publish node='{node}'>{two}</publish>")) == ("bad-request",
                                                                                  "invalid-payload")
        assert errors(await items(alice, node, extra=" max_items='many'"))[0] == "bad-request"
        wrong = f"<affiliation jid='{alice.bare}' affiliation='king'/>"
        wrong = f"<affiliations node='{node}'>{wrong}</affiliations>"
        assert errors(await ps(alice, wrong, ns=NS_OWNER))[0] == "bad-request"
        other_form = f"<configure node='{node}'>{form('urn:other', title='x')}</configure>"
        assert errors(await ps(alice, other_form, ns=NS_OWNER))[0] == "bad-request"
        nobody = await alice.iq(f"<pubsub xmlns='{NS_PUBSUB}'><items node='{node}'/></pubsub>",
                                to=f"someone@{SERVICE}")  # fmt: skip
        assert errors(nobody)[0] == "service-unavailable"
        # After all of it, the node still answers.
        assert item_texts(await items(alice, node)) == []


# ---- subscriptions, affiliations, access -----------------------------------------------------


async def test_subscribe_notify_unsubscribe(peers: Peers) -> None:
    with trio.fail_after(TIMEOUT):
        alice, bob = await peers.online_users(2)
        node = new_id("feed")
        ok(await create(alice, node))
        ok(await publish(alice, node, "old", "before"))
        reply = ok(await ps(bob, f"<subscribe node='{node}' jid='{bob.bare}'/>"))
        sub = reply.find(f"{P}pubsub/{P}subscription")
        assert sub is not None
        assert sub.get("subscription") == "subscribed"
        assert sub.get("subid")
        last = await bob.expect(event(node))  # send_last_published_item on_sub
        assert last.findtext(f"{EV}event/{EV}items/{EV}item/{{urn:test}}entry") == "before"
        ok(await publish(alice, node, "new", "after"))
        notified = await bob.expect(event(node))
        assert notified.findtext(f"{EV}event/{EV}items/{EV}item/{{urn:test}}entry") == "after"
        ok(await ps(alice, f"<retract node='{node}' notify='true'><item id='new'/></retract>"))
        retracted = await bob.expect(event(node))
        assert retracted.find(f"{EV}event/{EV}items/{EV}retract").get("id") == "new"  # type: ignore[union-attr]
        mine = ok(await ps(bob, "<subscriptions/>", type_="get"))
        assert [(s.get("node"), s.get("jid")) for s in mine.iter(f"{P}subscription")] == [(node, bob.bare)]
        managed = ok(await ps(alice, f"<subscriptions node='{node}'/>", type_="get", ns=NS_OWNER))
        assert [s.get("jid") for s in managed.iter(f"{OWN}subscription")] == [bob.bare]
        # Another's JID is refused; unsubscribing twice is not-subscribed.
        refused = await ps(bob, f"<subscribe node='{node}' jid='{alice.bare}'/>")
        assert errors(refused) == ("bad-request", "invalid-jid")
        ok(await ps(bob, f"<unsubscribe node='{node}' jid='{bob.bare}'/>"))
        options = await ps(bob, f"<options node='{node}' jid='{bob.bare}'/>", type_="get")
        assert errors(options) == ("feature-not-implemented", "unsupported")
        unsupported = options.find(f"{C}error/{{{NS_ERRORS}}}unsupported")
        assert unsupported is not None
        assert unsupported.get("feature") == "subscription-options"
        assert errors(await ps(bob, f"<unsubscribe node='{node}' jid='{bob.bare}'/>")) == (
            "unexpected-request",
            "not-subscribed",
        )
        ok(await publish(alice, node, "later", "x"))
        marker = new_id("marker")
        await alice.send(f"<message to='{bob.jid}' id='{marker}' type='chat'><body>m</body></message>")
        between = await bob.before(lambda e: e.get("id") == marker)
        assert not [e for e in between if event(node)(e)], [show(e) for e in between]


async def test_whitelist_affiliations_and_outcasts(peers: Peers) -> None:
    with trio.fail_after(TIMEOUT):
        alice, bob, carol = await peers.online_users(3)
        node = new_id("private")
        ok(await create(alice, node, access_model="whitelist"))
        assert errors(await ps(bob, f"<subscribe node='{node}' jid='{bob.bare}'/>")) == (
            "not-allowed",
            "closed-node",
        )
        assert errors(await items(bob, node)) == ("not-allowed", "closed-node")
        change = (f"<affiliations node='{node}'><affiliation jid='{bob.bare}' affiliation='member'/>"
                  f"<affiliation jid='{carol.bare}' affiliation='publisher'/></affiliations>")  # fmt: skip
        assert errors(await ps(bob, change, ns=NS_OWNER))[0] == "forbidden"
        ok(await ps(alice, change, ns=NS_OWNER))
        ok(await ps(bob, f"<subscribe node='{node}' jid='{bob.bare}'/>"))
        ok(await publish(carol, node, "c1", "from carol"))
        got = await bob.expect(event(node))
        assert got.findtext(f"{EV}event/{EV}items/{EV}item/{{urn:test}}entry") == "from carol"
        listed = ok(await ps(alice, f"<affiliations node='{node}'/>", type_="get", ns=NS_OWNER))
        assert {(a.get("jid"), a.get("affiliation")) for a in listed.iter(f"{OWN}affiliation")} == {
            (alice.bare, "owner"),
            (bob.bare, "member"),
            (carol.bare, "publisher"),
        }
        mine = ok(await ps(carol, "<affiliations/>", type_="get"))
        assert [(a.get("node"), a.get("affiliation")) for a in mine.iter(f"{P}affiliation")] == [
            (node, "publisher")
        ]
        # An outcast loses its subscription and its access.
        outcast = f"<affiliation jid='{bob.bare}' affiliation='outcast'/>"
        ok(await ps(alice, f"<affiliations node='{node}'>{outcast}</affiliations>", ns=NS_OWNER))
        assert errors(await items(bob, node))[0] == "forbidden"
        managed = ok(await ps(alice, f"<subscriptions node='{node}'/>", type_="get", ns=NS_OWNER))
        assert list(managed.iter(f"{OWN}subscription")) == []
        # The last owner stays.
        alone = (
            f"<affiliations node='{node}'><affiliation jid='{alice.bare}' affiliation='none'/></affiliations>"
        )
        assert errors(await ps(alice, alone, ns=NS_OWNER))[0] == "not-acceptable"
        bad = f"<affiliations node='{node}'><affiliation jid='@@' affiliation='member'/></affiliations>"
        assert errors(await ps(alice, bad, ns=NS_OWNER)) == ("bad-request", "invalid-jid")


async def test_concurrent_publishes_keep_every_item(peers: Peers) -> None:
    """Publishers on several connections (and so, often, both workers) publish at once: every
    publication gets its own place and the node keeps exactly max_items."""
    with trio.fail_after(TIMEOUT):
        owner, *publishers = await peers.online_users(4)
        node = new_id("busy")
        ok(await create(owner, node, max_items=str(MAX_ITEMS)))
        grant = "".join(f"<affiliation jid='{p.bare}' affiliation='publisher'/>" for p in publishers)
        ok(await ps(owner, f"<affiliations node='{node}'>{grant}</affiliations>", ns=NS_OWNER))
        replies: list[Element] = []

        async def burst(peer: Peer, n: int) -> None:
            for i in range(4):
                reply = await publish(peer, node, f"p{n}-{i}", f"{n}.{i}")
                replies.append(reply)

        async with trio.open_nursery() as nursery:
            for n, peer in enumerate(publishers):
                nursery.start_soon(burst, peer, n)
        assert all(r.get("type") == "result" for r in replies), [show(r) for r in replies]
        kept = item_texts(await items(owner, node))
        assert len(kept) == MAX_ITEMS
        assert len({i for i, _ in kept}) == MAX_ITEMS


# ---- a server of its own: only admins create, and items survive a restart --------------------


async def test_admins_create_and_nodes_survive_a_restart(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """On the backend of the module's server (its parameter)."""
    options = MODULES + 'admins = ["boss@localhost"]\n'
    extra = '\n[modules.pubsub]\ncreators = "admins"\n'
    if request.node.callspec.params["server"] == "postgresql":
        postgres: PostgresServer = request.getfixturevalue("postgres")
        extra += f'\n[storage]\nurl = "{postgres.database_url("pubsub_restart")}"\npartitions = 4\n'
    users = [("boss", PASSWORD), ("staff", PASSWORD)]
    with running_server(tmp_path, users=users, server_options=options, extra=extra) as first:
        with trio.fail_after(TIMEOUT):
            boss = await Peer.login(first.c2s_port, "boss", PASSWORD)
            staff = await Peer.online(first.c2s_port, "staff", PASSWORD)
            assert errors(await create(staff, "staff-node"))[0] == "forbidden"
            ok(await create(boss, "kept", title="Kept"))
            ok(await publish(boss, "kept", "k1", "one"))
            ok(await publish(boss, "kept", "k2", "two"))
            ok(await ps(staff, f"<subscribe node='kept' jid='{staff.bare}'/>"))
            await staff.expect(event("kept"))  # the last item
            await boss.aclose()
            await staff.aclose()
    with running_server(tmp_path, server_options=options, extra=extra) as second:
        with trio.fail_after(TIMEOUT):
            boss = await Peer.login(second.c2s_port, "boss", PASSWORD)
            staff = await Peer.online(second.c2s_port, "staff", PASSWORD)
            assert item_texts(await items(staff, "kept")) == [("k1", "one"), ("k2", "two")]
            ok(await publish(boss, "kept", "k3", "three"))
            got = await staff.expect(event("kept"))
            assert got.findtext(f"{EV}event/{EV}items/{EV}item/{{urn:test}}entry") == "three"
            await boss.aclose()
            await staff.aclose()


# ---- slixmpp's xep_0060 as a client application uses it ------------------------------------


def test_slixmpp_pubsub_flow(clients: Clients, accounts: Accounts) -> None:
    owner, reader = accounts(2)
    node = f"slix-{new_id()}"

    async def scenario() -> None:
        async with (
            clients.slixmpp(owner, plugins=("xep_0004", "xep_0030", "xep_0060"), send_presence=True) as alice,
            clients.slixmpp(reader, plugins=("xep_0004", "xep_0030", "xep_0060"), send_presence=True) as bob,
        ):
            pubsub_a, pubsub_b = alice.plugin["xep_0060"], bob.plugin["xep_0060"]
            config = alice.plugin["xep_0004"].make_form("submit")
            config.add_field("FORM_TYPE", ftype="hidden", value=f"{NS_PUBSUB}#node_config")
            config.add_field("pubsub#title", value="slixmpp news")
            config.add_field("pubsub#max_items", value="4")
            await pubsub_a.create_node(SERVICE, node, config=config)
            got = await pubsub_a.get_node_config(SERVICE, node)
            assert got["pubsub_owner"]["configure"]["form"].get_values()["pubsub#title"] == "slixmpp news"
            events = event_queue(bob, "pubsub_publish")
            await pubsub_b.subscribe(SERVICE, node)
            payload = slixmpp.ET.fromstring("<entry xmlns='urn:test'>hello</entry>")
            await pubsub_a.publish(SERVICE, node, id="first", payload=payload)
            message = await asyncio.wait_for(events.get(), TIMEOUT)
            assert message["pubsub_event"]["items"]["item"]["id"] == "first"
            assert message["pubsub_event"]["items"]["node"] == node
            fetched = await pubsub_b.get_items(SERVICE, node)
            assert [i["id"] for i in fetched["pubsub"]["items"]] == ["first"]
            retracts = event_queue(bob, "pubsub_retract")
            await pubsub_a.retract(SERVICE, node, "first", notify=True)
            retracted = await asyncio.wait_for(retracts.get(), TIMEOUT)
            assert retracted["pubsub_event"]["items"]["retract"]["id"] == "first"
            deletes = event_queue(bob, "pubsub_delete")
            await pubsub_a.delete_node(SERVICE, node)
            await asyncio.wait_for(deletes.get(), TIMEOUT)
            with pytest.raises(IqError) as gone:
                await pubsub_b.get_items(SERVICE, node)
            assert gone.value.condition == "item-not-found"

    run(scenario())
