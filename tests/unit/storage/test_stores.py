"""Offline, private, vCard, blocking and last-activity stores."""

from __future__ import annotations

import pytest

from imactor.storage import AccountNotFound, RosterItem, Storage


async def test_offline_messages_oldest_first(storage: Storage, alice: str) -> None:
    assert await storage.offline.fetch(alice) == []
    for i in range(5):
        await storage.offline.store(alice, b"<message id='%d'/>" % i)
    stored = await storage.offline.fetch(alice)
    assert [stanza for _, stanza in stored] == [b"<message id='%d'/>" % i for i in range(5)]
    ids = [i for i, _ in stored]
    assert ids == sorted(ids)
    assert await storage.offline.count(alice) == 5

    await storage.offline.delete(alice, ids[:3])
    assert await storage.offline.fetch(alice) == stored[3:]
    assert await storage.offline.count(alice) == 2
    await storage.offline.delete(alice, [])  # nothing to do


async def test_offline_ids_never_go_backwards(storage: Storage, alice: str) -> None:
    await storage.offline.store(alice, b"<a/>")
    [(first, _)] = await storage.offline.fetch(alice)
    await storage.offline.delete(alice, [first])
    await storage.offline.store(alice, b"<b/>")
    [(second, _)] = await storage.offline.fetch(alice)
    assert second > first


async def test_offline_delete_only_touches_the_owner(storage: Storage, alice: str) -> None:
    await storage.accounts.create("bob", "pw", iterations=512)
    await storage.offline.store("bob", b"<m/>")
    [(bob_id, _)] = await storage.offline.fetch("bob")
    await storage.offline.delete(alice, [bob_id])
    assert await storage.offline.count("bob") == 1


async def test_private_storage(storage: Storage, alice: str) -> None:
    assert await storage.private.get(alice, "{storage:bookmarks}storage") is None
    await storage.private.set(alice, "{storage:bookmarks}storage", b"<storage/>")
    await storage.private.set(alice, "{other}x", b"<x/>")
    assert await storage.private.get(alice, "{storage:bookmarks}storage") == b"<storage/>"
    await storage.private.set(alice, "{storage:bookmarks}storage", b"<storage><c/></storage>")
    assert await storage.private.get(alice, "{storage:bookmarks}storage") == b"<storage><c/></storage>"
    assert await storage.private.get(alice, "{other}x") == b"<x/>"


async def test_vcard(storage: Storage, alice: str) -> None:
    assert await storage.vcards.get(alice) is None
    await storage.vcards.set(alice, b"<vCard><FN>A</FN></vCard>")
    await storage.vcards.set(alice, b"<vCard><FN>Alice</FN></vCard>")
    assert await storage.vcards.get(alice) == b"<vCard><FN>Alice</FN></vCard>"
    await storage.vcards.set(alice, None)
    assert await storage.vcards.get(alice) is None
    await storage.vcards.set(alice, None)  # deleting nothing is fine


async def test_blocking(storage: Storage, alice: str) -> None:
    assert await storage.blocking.get(alice) == []
    await storage.blocking.add(alice, ["c@x", "a@x", "a@x"])
    await storage.blocking.add(alice, ["b@x", "c@x"])
    assert await storage.blocking.get(alice) == ["a@x", "b@x", "c@x"]
    await storage.blocking.remove(alice, ["b@x", "not-blocked@x"])
    assert await storage.blocking.get(alice) == ["a@x", "c@x"]
    await storage.blocking.remove(alice, None)
    assert await storage.blocking.get(alice) == []


async def test_last_activity(storage: Storage, alice: str) -> None:
    assert await storage.last_activity.get(alice) is None
    await storage.last_activity.set(alice, 1700000000.5, "Gone fishing")
    assert await storage.last_activity.get(alice) == (1700000000.5, "Gone fishing")
    await storage.last_activity.set(alice, 1700000100.0, "")
    assert await storage.last_activity.get(alice) == (1700000100.0, "")


async def test_writes_for_unknown_account_raise(storage: Storage) -> None:
    with pytest.raises(AccountNotFound):
        await storage.offline.store("nobody", b"<m/>")
    with pytest.raises(AccountNotFound):
        await storage.private.set("nobody", "{a}b", b"<b/>")
    with pytest.raises(AccountNotFound):
        await storage.vcards.set("nobody", b"<vCard/>")
    with pytest.raises(AccountNotFound):
        await storage.blocking.add("nobody", ["a@x"])
    with pytest.raises(AccountNotFound):
        await storage.last_activity.set("nobody", 1.0, "")
    assert await storage.offline.count("nobody") == 0


async def test_account_snapshot_matches_the_stores(storage: Storage, alice: str) -> None:
    assert await storage.account_snapshot("nobody") is None
    empty = await storage.account_snapshot(alice)
    assert empty is not None
    assert (empty.roster, empty.blocked) == ([], [])
    await storage.roster.put(alice, RosterItem("bob@localhost", name="Bob", groups=("Friends", "Work")))
    await storage.roster.put(
        alice, RosterItem("carol@localhost", subscription="both", ask=True, pending_in=True, approved=True)
    )
    await storage.blocking.add(alice, ["spam@evil.example", "ads@evil.example"])
    snapshot = await storage.account_snapshot(alice)
    assert snapshot is not None
    assert (snapshot.roster_version, snapshot.roster) == await storage.roster.get(alice)
    assert snapshot.roster[0].groups == ("Friends", "Work")
    assert snapshot.roster[1].approved is True
    assert snapshot.blocked == await storage.blocking.get(alice) == ["ads@evil.example", "spam@evil.example"]
