"""PEP nodes and items: publication order, replacement, trimming to max_items, retract, purge,
delete, per-account isolation and cascade on account removal."""

from __future__ import annotations

import pytest

from imactor.storage import AccountNotFound, Storage


async def ids(storage: Storage, user: str, node: str, limit: int = 100) -> list[str]:
    return [item.item_id for item in await storage.pep.items(user, node, limit=limit)]


async def test_publish_orders_replaces_and_trims(storage: Storage, alice: str) -> None:
    await storage.pep.set_node(alice, "n", {"max_items": 3}, 3)
    assert await storage.pep.nodes(alice) == {"n": {"max_items": 3}}
    for n in range(5):
        await storage.pep.publish(alice, "n", f"i{n}", b"<p%d/>" % n, 3)
    assert await ids(storage, alice, "n") == ["i2", "i3", "i4"]
    await storage.pep.publish(alice, "n", "i2", b"<new/>", 3)  # re-published: now the newest
    assert await ids(storage, alice, "n") == ["i3", "i4", "i2"]
    assert (await storage.pep.items(alice, "n", limit=1))[0].payload == b"<new/>"
    assert await ids(storage, alice, "n", limit=2) == ["i4", "i2"]
    assert await storage.pep.item_ids(alice, "n", limit=10) == ["i2", "i4", "i3"]
    specific = await storage.pep.items(alice, "n", limit=10, item_ids=["i3", "nope"])
    assert [i.item_id for i in specific] == ["i3"]
    # Reconfiguring to fewer items drops the oldest.
    await storage.pep.set_node(alice, "n", {"max_items": 1}, 1)
    assert await ids(storage, alice, "n") == ["i2"]


async def test_retract_purge_delete(storage: Storage, alice: str) -> None:
    await storage.pep.set_node(alice, "n", {}, 10)
    for n in range(3):
        await storage.pep.publish(alice, "n", f"i{n}", b"<p/>", 10)
    assert await storage.pep.retract(alice, "n", ["i1", "missing"]) == ["i1"]
    assert await ids(storage, alice, "n") == ["i0", "i2"]
    await storage.pep.purge(alice, "n")
    assert await ids(storage, alice, "n") == []
    assert await storage.pep.node(alice, "n") == {}
    await storage.pep.publish(alice, "n", "x", b"<p/>", 10)
    assert await storage.pep.delete_node(alice, "n") is True
    assert await storage.pep.delete_node(alice, "n") is False
    assert await storage.pep.node(alice, "n") is None
    assert await ids(storage, alice, "n") == []


async def test_accounts_are_separate_and_removal_cascades(storage: Storage, alice: str) -> None:
    await storage.accounts.create("bob", "pw", iterations=512)
    for user in (alice, "bob"):
        await storage.pep.set_node(user, "n", {}, 5)
        await storage.pep.publish(user, "n", user, b"<p/>", 5)
    assert await ids(storage, alice, "n") == [alice]
    await storage.accounts.delete("bob")
    assert await storage.pep.nodes("bob") == {}
    assert await ids(storage, "bob", "n") == []
    with pytest.raises(AccountNotFound):
        await storage.pep.publish("nobody", "n", "x", b"<p/>", 5)
