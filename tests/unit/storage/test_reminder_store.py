"""The reminders' table (`ReminderStore`) on each backend: the owner's bounds, the claim that
only one worker wins, the pending occurrence and its takeover, and schema version 11."""

from __future__ import annotations

import pytest

from imactor.storage import Storage, schema
from imactor.storage.reminders import ALL_USERS, ReminderLimit
from tests.unit.storage.conftest import FAST_ITERATIONS, execute

NOW = 1_800_000_000.0
ME, OTHER = "node0:100", "node1:200"


async def test_add_list_and_cancel(storage: Storage, alice: str) -> None:
    store = storage.reminders
    later = await store.add(alice, ("alice@localhost",), "later", NOW + 600, "daily", now=NOW, limit=3)
    sooner = await store.add(alice, (ALL_USERS,), "sooner", NOW + 60, "none", now=NOW, limit=3)
    mine = await store.of_owner(alice)
    assert [(r.id, r.text, r.next_at, r.repeat, r.recipients) for r in mine] == [
        (sooner, "sooner", NOW + 60, "none", (ALL_USERS,)),
        (later, "later", NOW + 600, "daily", ("alice@localhost",)),
    ]
    assert await store.of_owner("bob") == []
    assert not await store.cancel("bob", sooner)  # not bob's
    assert await store.cancel(alice, sooner)
    assert not await store.cancel(alice, sooner)  # gone
    assert [r.id for r in await store.of_owner(alice)] == [later]
    assert await store.next_due() == NOW + 600


async def test_an_owner_has_at_most_the_limit(storage: Storage, alice: str) -> None:
    for n in range(2):
        await storage.reminders.add(alice, ("alice@localhost",), f"r{n}", NOW + n, "none", now=NOW, limit=2)
    with pytest.raises(ReminderLimit):
        await storage.reminders.add(alice, ("alice@localhost",), "one more", NOW, "none", now=NOW, limit=2)


async def test_of_two_claims_of_one_due_occurrence_one_wins(storage: Storage, alice: str) -> None:
    store = storage.reminders
    rid = await store.add(alice, ("alice@localhost",), "x", NOW, "daily", now=NOW - 10, limit=5)
    assert await store.due(NOW - 1) == []
    (seen_here,) = await store.due(NOW)
    (seen_there,) = await store.due(NOW)  # another node read the same row
    assert await store.claim(seen_here, NOW + 86400, ME, NOW)
    assert not await store.claim(seen_there, NOW + 86400, OTHER, NOW)
    assert await store.due(NOW + 10) == []  # pending and advanced: nothing else is due
    assert await store.next_due() is None  # not while its occurrence is being delivered
    (pending,) = await store.of_owner(alice)
    assert (pending.pending_at, pending.next_at, pending.claimed_by) == (NOW, NOW + 86400, ME)
    await store.sent(rid, NOW, OTHER)  # not the claimer's record: nothing changes
    assert (await store.of_owner(alice))[0].pending_at == NOW
    await store.sent(rid, NOW, ME)
    (done,) = await store.of_owner(alice)
    assert (done.pending_at, done.claimed_by, done.next_at) == (None, None, NOW + 86400)
    assert await store.next_due() == NOW + 86400


async def test_a_one_off_reminder_is_forgotten_once_sent(storage: Storage, alice: str, db_url: str) -> None:
    store = storage.reminders
    rid = await store.add(alice, ("alice@localhost",), "once", NOW, "none", now=NOW - 10, limit=5)
    (due,) = await store.due(NOW)
    assert await store.claim(due, None, ME, NOW)
    assert await store.of_owner(alice) == []  # done: no longer listed
    assert await store.orphans("node0:101", "node0:", NOW - 120)  # pending still, for a successor
    await store.sent(rid, NOW, ME)
    assert rows_of(db_url, rid) == 0


def rows_of(db_url: str, rid: int) -> int:
    """How many rows the table keeps for the reminder `rid`."""
    return len(execute(db_url, f"SELECT id FROM reminder WHERE id = {rid}"))


async def test_a_cancelled_reminder_still_delivers_the_occurrence_under_way(
    storage: Storage, alice: str, db_url: str
) -> None:
    store = storage.reminders
    rid = await store.add(alice, ("alice@localhost",), "x", NOW, "weekly", now=NOW - 10, limit=5)
    (due,) = await store.due(NOW)
    assert await store.claim(due, NOW + 7 * 86400, ME, NOW)
    assert await store.cancel(alice, rid)
    assert await store.of_owner(alice) == []
    await store.sent(rid, NOW, ME)
    assert rows_of(db_url, rid) == 0
    assert await store.next_due() is None


async def test_pending_occurrences_of_a_dead_claimer_are_taken_over_once(
    storage: Storage, alice: str
) -> None:
    store = storage.reminders
    await store.add(alice, ("alice@localhost",), "x", NOW, "daily", now=NOW - 10, limit=5)
    (due,) = await store.due(NOW)
    assert await store.claim(due, NOW + 86400, "node0:100", NOW)
    # The same process, or another node before the claim is stale: not an orphan.
    assert await store.orphans("node0:100", "node0:", NOW - 120) == []
    assert await store.orphans("node1:300", "node1:", NOW - 120) == []
    # The node's next first worker (another pid) takes it at once; another node once it is stale.
    (orphan,) = await store.orphans("node0:101", "node0:", NOW - 120)
    (also,) = await store.orphans("node1:300", "node1:", NOW + 1)
    assert await store.reclaim(orphan, "node0:101", NOW + 5)
    assert not await store.reclaim(also, "node1:300", NOW + 5)  # the first taker won
    (mine,) = await store.orphans("node0:102", "node0:", NOW - 120)
    assert mine.claimed_by == "node0:101"


async def test_a_version_10_database_gets_the_table(db_url: str) -> None:
    async with await Storage.open(db_url) as storage:
        await storage.accounts.create("alice", "secret", iterations=FAST_ITERATIONS)
    execute(db_url, "DROP TABLE reminder")
    execute(db_url, "UPDATE schema_version SET version = 10")
    async with await Storage.open(db_url) as storage:
        await storage.reminders.add("alice", ("alice@localhost",), "x", NOW, "none", now=NOW, limit=1)
        assert len(await storage.reminders.of_owner("alice")) == 1
    assert execute(db_url, "SELECT version FROM schema_version") == [(schema.current_version(),)]


async def test_a_renewed_claim_is_not_stale(storage: Storage, alice: str) -> None:
    store = storage.reminders
    rid = await store.add(alice, ("alice@localhost",), "x", NOW, "none", now=NOW - 10, limit=5)
    (due,) = await store.due(NOW)
    assert await store.claim(due, None, OTHER, NOW)
    assert len(await store.orphans(ME, "node0:", NOW + 1)) == 1  # stale for node 0 after NOW
    await store.renew(rid, NOW, "node2:1", NOW + 100)  # not the claimer: no effect
    assert len(await store.orphans(ME, "node0:", NOW + 1)) == 1
    await store.renew(rid, NOW, OTHER, NOW + 100)
    assert await store.orphans(ME, "node0:", NOW + 1) == []
    assert len(await store.orphans(ME, "node0:", NOW + 101)) == 1


async def test_every_owners_active_reminders_soonest_first(storage: Storage, alice: str) -> None:
    await storage.accounts.create("bob", "pw", iterations=FAST_ITERATIONS)
    store = storage.reminders
    late = await store.add(alice, (ALL_USERS,), "late", NOW + 900, "none", now=NOW, limit=3)
    early = await store.add("bob", ("alice@localhost",), "early", NOW + 60, "weekly", now=NOW, limit=3)
    gone = await store.add("bob", ("bob@localhost",), "cancelled", NOW + 30, "none", now=NOW, limit=3)
    assert await store.cancel("bob", gone)
    assert [(r.id, r.owner) for r in await store.active()] == [(early, "bob"), (late, alice)]
    assert [r.id for r in await store.active(limit=1)] == [early]
