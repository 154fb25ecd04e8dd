"""The pubsub service's store: nodes with their owner, items in publication order and trimmed,
affiliations (a node keeps an owner; outcasts lose their subscriptions), subscriptions, deletion,
separate services, and concurrent publishes from two connections (two workers)."""

from __future__ import annotations

import trio

from imactor.storage import Storage, schema
from imactor.storage.pubsub_service import Subscription
from tests.unit.storage.conftest import execute, table_names

SVC = "pubsub.example"


async def ids(storage: Storage, node: str, service: str = SVC) -> list[str]:
    return [item.item_id for item in await storage.pubsub.items(service, node, limit=100)]


async def test_create_publish_trim_retract_purge(storage: Storage) -> None:
    assert await storage.pubsub.create_node(SVC, "n", {"max_items": 3}, "a@example", 10) == "created"
    assert await storage.pubsub.create_node(SVC, "n", {}, "b@example", 10) == "exists"
    row = await storage.pubsub.node(SVC, "n")
    assert row is not None
    assert row.config == {"max_items": 3}
    assert row.affiliations == {"a@example": "owner"}
    for n in range(5):
        assert await storage.pubsub.publish(SVC, "n", f"i{n}", b"<p/>", "a@example/r", 3)
    assert await ids(storage, "n") == ["i2", "i3", "i4"]
    await storage.pubsub.publish(SVC, "n", "i2", b"<new/>", "a@example/r", 3)
    assert await ids(storage, "n") == ["i3", "i4", "i2"]
    assert await storage.pubsub.item_ids(SVC, "n", limit=2) == ["i2", "i4"]
    assert await storage.pubsub.retract(SVC, "n", ["i3", "nope"]) == ["i3"]
    await storage.pubsub.set_config(SVC, "n", {"max_items": 1}, 1)
    assert await ids(storage, "n") == ["i2"]
    await storage.pubsub.purge(SVC, "n")
    assert await ids(storage, "n") == []
    assert not await storage.pubsub.publish(SVC, "missing", "x", b"<p/>", "a@example/r", 3)


async def test_max_nodes_and_separate_services(storage: Storage) -> None:
    assert await storage.pubsub.create_node(SVC, "one", {}, "a@example", 1) == "created"
    assert await storage.pubsub.create_node(SVC, "two", {}, "a@example", 1) == "full"
    assert await storage.pubsub.create_node("pubsub.other", "one", {}, "b@other", 1) == "created"
    await storage.pubsub.publish(SVC, "one", "i", b"<p/>", "a@example/r", 5)
    assert await ids(storage, "one", "pubsub.other") == []
    assert list(await storage.pubsub.nodes(SVC)) == ["one"]


async def test_affiliations_subscriptions_and_delete(storage: Storage) -> None:
    await storage.pubsub.create_node(SVC, "n", {}, "a@example", 10)
    assert await storage.pubsub.subscribe(SVC, "n", "b@example/phone", "b@example", "s1") == "s1"
    assert await storage.pubsub.subscribe(SVC, "n", "b@example/phone", "b@example", "s2") == "s1"
    assert await storage.pubsub.subscribe(SVC, "n", "c@example", "c@example", "s3") == "s3"
    assert await storage.pubsub.subscribe(SVC, "gone", "c@example", "c@example", "s4") is None
    expected = [Subscription("n", "b@example/phone", "s1")]
    assert await storage.pubsub.subscriptions_of(SVC, "b@example") == expected
    assert await storage.pubsub.set_affiliations(SVC, "n", {"a@example": "none"}) == "no-owner"
    changes = {"b@example": "outcast", "c@example": "member", "d@example": "publisher"}
    assert await storage.pubsub.set_affiliations(SVC, "n", changes) == "done"
    # The outcast's subscriptions (of all its resources) are gone; the member's stays.
    assert [s.jid for s in await storage.pubsub.subscriptions(SVC, "n")] == ["c@example"]
    assert await storage.pubsub.affiliations_of(SVC, "d@example") == [("n", "publisher")]
    assert await storage.pubsub.set_affiliations(SVC, "n", {"d@example": "none"}) == "done"
    assert await storage.pubsub.affiliations_of(SVC, "d@example") == []
    assert await storage.pubsub.unsubscribe(SVC, "n", "c@example") is True
    assert await storage.pubsub.unsubscribe(SVC, "n", "c@example") is False
    await storage.pubsub.subscribe(SVC, "n", "e@example", "e@example", "s5")
    await storage.pubsub.publish(SVC, "n", "i", b"<p/>", "a@example/r", 5)
    assert await storage.pubsub.delete_node(SVC, "n") == [Subscription("n", "e@example", "s5")]
    assert await storage.pubsub.delete_node(SVC, "n") is None
    assert await storage.pubsub.node(SVC, "n") is None
    assert await storage.pubsub.affiliations_of(SVC, "a@example") == []
    # A node of the same name starts empty.
    await storage.pubsub.create_node(SVC, "n", {}, "a@example", 10)
    assert await ids(storage, "n") == []
    assert await storage.pubsub.subscriptions(SVC, "n") == []


async def test_concurrent_publishes_from_two_connections(db_url: str, storage: Storage) -> None:
    """Two `Storage` objects on one database, as two workers have: every publication gets its
    own place in the order and the node keeps exactly max_items."""
    await storage.pubsub.create_node(SVC, "busy", {}, "a@example", 10)
    other = await Storage.open(db_url)
    try:

        async def burst(store: Storage, name: str) -> None:
            for i in range(15):
                await store.pubsub.publish(SVC, "busy", f"{name}{i}", b"<p/>", "a@example/r", 20)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(burst, storage, "x")
            nursery.start_soon(burst, other, "y")
    finally:
        await other.aclose()
    kept = await ids(storage, "busy")
    assert len(kept) == 20
    assert len(set(kept)) == 20
    # The newest of each burst survived the trim.
    assert {"x14", "y14"} <= set(kept)


async def test_a_version_11_database_gets_the_tables(db_url: str) -> None:
    """Schema version 12 adds the pubsub service's tables to a database written before them."""
    async with await Storage.open(db_url):
        pass
    for table in ("pubsub_subscription", "pubsub_affiliation", "pubsub_item", "pubsub_node"):
        execute(db_url, f"DROP TABLE {table}")
    execute(db_url, "UPDATE schema_version SET version = 11")
    assert not {"pubsub_node", "pubsub_item"} & table_names(db_url)
    async with await Storage.open(db_url) as storage:
        assert await storage.pubsub.create_node(SVC, "n", {}, "a@example", 10) == "created"
        assert await storage.pubsub.publish(SVC, "n", "i", b"<p/>", "a@example/r", 5)
    assert execute(db_url, "SELECT version FROM schema_version") == [(schema.current_version(),)]


async def test_retract_by_a_publisher_of_its_own_items_only(storage: Storage) -> None:
    await storage.pubsub.create_node(SVC, "n", {}, "a@example", 10)
    await storage.pubsub.publish(SVC, "n", "mine", b"<p/>", "b@example/phone", 10)
    await storage.pubsub.publish(SVC, "n", "theirs", b"<p/>", "c@example/pc", 10)
    assert await storage.pubsub.retract(SVC, "n", ["mine", "theirs"], by="b@example") is None
    assert await ids(storage, "n") == ["mine", "theirs"]
    assert await storage.pubsub.retract(SVC, "n", ["mine", "nope"], by="b@example") == ["mine"]
    assert await storage.pubsub.retract(SVC, "n", ["theirs"]) == ["theirs"]


async def test_pages_newest_first_after_and_before_an_item(storage: Storage) -> None:
    """XEP-0059 on a node's items (circles): newest first, `after` pages back in time, `before`
    forward ("": the oldest page); an anchor that is no item of the node gives None."""
    await storage.pubsub.create_node(SVC, "feed", {}, SVC, 10)
    for n in range(7):
        await storage.pubsub.publish(SVC, "feed", f"p{n}", b"<p/>", f"u{n % 2}@example/r", 100)

    async def page(**anchor: str) -> tuple[list[str], int, int] | None:
        found = await storage.pubsub.page(SVC, "feed", limit=3, **anchor)
        return None if found is None else ([i.item_id for i in found.items], found.first_index, found.count)

    assert await page() == (["p6", "p5", "p4"], 0, 7)
    assert await page(after="p4") == (["p3", "p2", "p1"], 3, 7)
    assert await page(after="p1") == (["p0"], 6, 7)
    assert await page(after="p0") == ([], 0, 7)
    assert await page(before="p3") == (["p6", "p5", "p4"], 0, 7)
    assert await page(before="p5") == (["p6"], 0, 7)
    assert await page(before="") == (["p2", "p1", "p0"], 4, 7)
    assert await page(after="nope") is None
    assert await page(before="nope") is None
    publishers = await storage.pubsub.page(SVC, "feed", limit=2)
    assert publishers is not None
    assert publishers.publishers == ["u0@example", "u1@example"]
    assert await storage.pubsub.item_publisher(SVC, "feed", "p3") == "u1@example"
    assert await storage.pubsub.item_publisher(SVC, "feed", "nope") is None
    empty = await storage.pubsub.page(SVC, "no-such-node", limit=3)
    assert empty is not None
    assert (empty.items, empty.count) == ([], 0)
