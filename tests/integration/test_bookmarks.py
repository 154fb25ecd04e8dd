"""XEP-0402 bookmarks on PEP, unified with XEP-0048 bookmarks in private storage (XEP-0049):
what a modern client publishes, a legacy client reads, and the other way round, with
notifications and retractions; bookmarks stay private (whitelist)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import trio

from tests.integration.conftest import account_pool
from tests.integration.test_pep import (
    EV,
    NS_PUBSUB,
    app_condition,
    caps_answered,
    event_from,
    notify_online,
    ok,
)
from tests.support.peer import Element, Peer, Peers, error_condition, show
from tests.support.server import ServerProcess
from tests.support.timeouts import TIMEOUT


@pytest.fixture(scope="module")
def server(server_on_each_backend: ServerProcess) -> ServerProcess:
    """Bookmarks (private and PEP storage) are stored: these tests run on SQLite and on PostgreSQL."""
    return server_on_each_backend

pytestmark = pytest.mark.usefixtures("server_alive")

NS_BOOKMARKS = "urn:xmpp:bookmarks:1"
NS_LEGACY = "storage:bookmarks"
NS_PRIVATE = "jabber:iq:private"
NS_DISCO = "http://jabber.org/protocol/disco#info"
B = f"{{{NS_BOOKMARKS}}}"
L = f"{{{NS_LEGACY}}}"

OPTIONS = (
    "<publish-options><x xmlns='jabber:x:data' type='submit'>"
    "<field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>"
    "<field var='pubsub#persist_items'><value>true</value></field>"
    "<field var='pubsub#max_items'><value>max</value></field>"
    "<field var='pubsub#send_last_published_item'><value>never</value></field>"
    "<field var='pubsub#access_model'><value>whitelist</value></field>"
    "</x></publish-options>"
)


@pytest.fixture(scope="module")
def pool(server: ServerProcess) -> Iterator[str]:
    return account_pool(server, "bookmarks", 10)


async def publish_bookmark(peer: Peer, room: str, name: str, nick: str) -> Element:
    conference = (
        f"<conference xmlns='{NS_BOOKMARKS}' name='{name}' autojoin='true'><nick>{nick}</nick></conference>"
    )
    return await peer.iq(
        f"<pubsub xmlns='{NS_PUBSUB}'><publish node='{NS_BOOKMARKS}'><item id='{room}'>{conference}</item>"
        f"</publish>{OPTIONS}</pubsub>",
        type_="set",
    )


async def native(peer: Peer) -> dict[str, Element]:
    reply = ok(await peer.iq(f"<pubsub xmlns='{NS_PUBSUB}'><items node='{NS_BOOKMARKS}'/></pubsub>"))
    return {
        item.get("id", ""): item.find(f"{B}conference")  # type: ignore[misc]
        for item in reply.iter(f"{{{NS_PUBSUB}}}item")
    }


async def legacy(peer: Peer) -> dict[str, Element]:
    reply = ok(await peer.iq(f"<query xmlns='{NS_PRIVATE}'><storage xmlns='{NS_LEGACY}'/></query>"))
    return {c.get("jid", ""): c for c in reply.iter(f"{L}conference")}


async def store_legacy(peer: Peer, conferences: str) -> None:
    ok(
        await peer.iq(
            f"<query xmlns='{NS_PRIVATE}'><storage xmlns='{NS_LEGACY}'>{conferences}</storage></query>",
            type_="set",
        )
    )


async def test_native_bookmarks_are_seen_by_legacy_clients(peers: Peers, user: str) -> None:
    with trio.fail_after(TIMEOUT):
        alice = await peers.login(user)
        await store_legacy(alice, "<url name='site' url='https://example.org'/>")  # not in XEP-0402
        ok(await publish_bookmark(alice, "council@conference.localhost", "Council", "Puck"))
        ok(await publish_bookmark(alice, "tea@conference.localhost", "Tea", "Puck"))
        got = await native(alice)
        assert sorted(got) == ["council@conference.localhost", "tea@conference.localhost"]
        old = await legacy(alice)
        assert sorted(old) == ["council@conference.localhost", "tea@conference.localhost"]
        council = old["council@conference.localhost"]
        assert (council.get("name"), council.get("autojoin"), council.findtext(f"{L}nick")) == (
            "Council",
            "true",
            "Puck",
        )
        # Retracting a native bookmark removes it from the legacy list too.
        retract = (
            f"<pubsub xmlns='{NS_PUBSUB}'><retract node='{NS_BOOKMARKS}' notify='true'>"
            "<item id='tea@conference.localhost'/></retract></pubsub>"
        )
        ok(await alice.iq(retract, type_="set"))
        assert sorted(await legacy(alice)) == ["council@conference.localhost"]
        # The URL bookmark, which XEP-0402 does not carry, is still in the legacy list.
        reply = ok(await alice.iq(f"<query xmlns='{NS_PRIVATE}'><storage xmlns='{NS_LEGACY}'/></query>"))
        assert [u.get("url") for u in reply.iter(f"{L}url")] == ["https://example.org"]


async def test_legacy_bookmarks_become_native_items_with_notifications(peers: Peers, user: str) -> None:
    with trio.fail_after(TIMEOUT):
        legacy_client = await peers.login(user, "legacy")
        modern, features = await notify_online(peers, user, [NS_BOOKMARKS], resource="modern")
        await caps_answered(modern, features, legacy_client)
        await store_legacy(
            legacy_client,
            "<conference jid='a@conference.localhost' name='A' autojoin='true'><nick>al</nick></conference>"
            "<conference jid='b@conference.localhost' name='B'/>"
            "<conference jid='not a jid@@' name='broken'/>"
            "<url name='site' url='https://example.org'/>",
        )
        for _ in range(2):
            event = await modern.expect(event_from(legacy_client, NS_BOOKMARKS))
            assert event.find(f"{EV}event/{EV}items/{EV}item/{B}conference") is not None, show(event)
        got = await native(modern)
        assert sorted(got) == ["a@conference.localhost", "b@conference.localhost"]
        assert got["a@conference.localhost"].get("autojoin") == "true"
        assert got["a@conference.localhost"].findtext(f"{B}nick") == "al"
        # A shorter legacy list retracts what is gone.
        await store_legacy(legacy_client, "<conference jid='a@conference.localhost' name='A2'/>")
        seen: set[str] = set()
        while not {"published", "retracted"} <= seen:
            event = await modern.expect(event_from(legacy_client, NS_BOOKMARKS))
            if event.find(f"{EV}event/{EV}items/{EV}retract") is not None:
                assert event.find(f"{EV}event/{EV}items/{EV}retract").get("id") == "b@conference.localhost"  # type: ignore[union-attr]
                seen.add("retracted")
            else:
                seen.add("published")
        got = await native(modern)
        assert sorted(got) == ["a@conference.localhost"]
        assert got["a@conference.localhost"].get("name") == "A2"


async def test_bookmarks_are_private_and_compat_is_announced(peers: Peers, pool: Iterator[str]) -> None:
    alice_name, mallory_name = next(pool), next(pool)
    with trio.fail_after(TIMEOUT):
        alice = await peers.login(alice_name)
        mallory = await peers.login(mallory_name)
        ok(await publish_bookmark(alice, "secret@conference.localhost", "Secret", "a"))
        peek = await mallory.iq(
            f"<pubsub xmlns='{NS_PUBSUB}'><items node='{NS_BOOKMARKS}'/></pubsub>", to=alice.bare
        )
        assert (error_condition(peek), app_condition(peek)) == ("not-allowed", "closed-node")
        info = ok(await alice.iq(f"<query xmlns='{NS_DISCO}'/>", to=alice.bare))
        features = {f.get("var") for f in info.iter(f"{{{NS_DISCO}}}feature")}
        assert f"{NS_BOOKMARKS}#compat" in features
        assert "http://jabber.org/protocol/pubsub#publish-options" in features
        identities = {(i.get("category"), i.get("type")) for i in info.iter(f"{{{NS_DISCO}}}identity")}
        assert ("pubsub", "pep") in identities  # XEP-0163 §6.1
