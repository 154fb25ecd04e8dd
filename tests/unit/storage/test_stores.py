"""Offline, private, vCard, blocking and last-activity stores."""

from __future__ import annotations

import pytest
import trio

from imactor.storage import AccountNotFound, RosterItem, Storage
from tests.unit.storage.conftest import FAST_ITERATIONS, execute


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


async def test_last_activity_stamps_noted_while_run_runs_are_written_together(
    storage: Storage, alice: str, db_url: str
) -> None:
    await storage.accounts.create("bob", "secret", iterations=FAST_ITERATIONS)
    await storage.accounts.create("carol", "secret", iterations=FAST_ITERATIONS)
    await storage.accounts.delete("carol")
    stores = storage.last_activity
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(stores.run)
            before = storage._db.statistics().transactions
            await stores.set(alice, 1.0, "a")
            await stores.set("bob", 2.0, "b")
            await stores.set(alice, 3.0, "a again")  # replaces the noted one
            await stores.set("carol", 4.0, "")  # deleted: dropped when written, no error
            assert await stores.get(alice) == (3.0, "a again")  # seen before it is written
            assert _rows(db_url) == []
            # Due LAST_ACTIVITY_DELAY after the first stamp; the database file tells no event.
            while not (written := _rows(db_url)):  # noqa: ASYNC110 (a file, no event to await)
                await trio.sleep(0.05)
            assert written == [("alice", 3.0, "a again"), ("bob", 2.0, "b")]
            assert storage._db.statistics().transactions == before + 1  # one write for all
            await stores.set("bob", 5.0, "late")
            nursery.cancel_scope.cancel()  # the stamps still noted are written on the way out
    assert _rows(db_url) == [("alice", 3.0, "a again"), ("bob", 5.0, "late")]
    with pytest.raises(AccountNotFound):  # without run, written at once
        await stores.set("carol", 6.0, "")


def _rows(db_url: str) -> list[tuple[object, ...]]:
    return execute(db_url, "SELECT username, timestamp, status FROM last_activity ORDER BY username")


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
