"""XEP-0313 archive store: append, paging, filters, preferences, deletion, and the v1 → v2 upgrade."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import trio
from sqlalchemy import create_engine

from imactor.storage import (
    AccountNotFound,
    ArchiveEntry,
    ArchiveFilter,
    ArchiveItemNotFound,
    ArchivePrefs,
    RosterItem,
    Storage,
    archiving_wanted,
    models,
    schema,
)
from imactor.storage import archive as archive_module
from tests.unit.storage.conftest import FAST_ITERATIONS, execute, sqlite_only


def entry(username: str, n: int, peer: str = "bob@localhost", direction: str = "in") -> ArchiveEntry:
    return ArchiveEntry(username, f"id{n}", peer, direction, b"<message id='%d'/>" % n, timestamp=1000.0 + n)


async def fill(storage: Storage, username: str, count: int) -> None:
    await storage.archive.append([entry(username, n) for n in range(count)])


def ids(page_items: list) -> list[str]:  # type: ignore[type-arg]
    return [item.stanza_id for item in page_items]


async def test_append_and_page_forwards_and_backwards(storage: Storage, alice: str) -> None:
    await fill(storage, alice, 60)
    assert await storage.archive.count(alice) == 60
    page = await storage.archive.query(alice, limit=25)
    assert ids(page.items) == [f"id{n}" for n in range(25)]
    assert (page.count, page.first_index, page.complete) == (60, 0, False)
    page = await storage.archive.query(alice, after="id24", limit=25)
    assert ids(page.items) == [f"id{n}" for n in range(25, 50)]
    assert (page.first_index, page.complete) == (25, False)
    page = await storage.archive.query(alice, after="id49", limit=25)
    assert ids(page.items) == [f"id{n}" for n in range(50, 60)]
    assert page.complete

    last = await storage.archive.query(alice, backwards=True, limit=25)
    assert ids(last.items) == [f"id{n}" for n in range(35, 60)]
    assert (last.first_index, last.complete) == (35, False)
    page = await storage.archive.query(alice, before="id35", backwards=True, limit=25)
    assert ids(page.items) == [f"id{n}" for n in range(10, 35)]
    page = await storage.archive.query(alice, before="id10", backwards=True, limit=25)
    assert ids(page.items) == [f"id{n}" for n in range(10)]
    assert page.complete

    only_count = await storage.archive.query(alice, limit=0)
    assert (only_count.items, only_count.count) == ([], 60)


async def test_filters(storage: Storage, alice: str) -> None:
    await storage.archive.append(
        [entry(alice, n, peer="bob@localhost" if n % 2 else "carol@localhost") for n in range(10)]
    )
    page = await storage.archive.query(alice, ArchiveFilter(with_jid="carol@localhost"))
    assert ids(page.items) == ["id0", "id2", "id4", "id6", "id8"]
    assert page.count == 5
    page = await storage.archive.query(alice, ArchiveFilter(start=1003.0, end=1005.0))
    assert ids(page.items) == ["id3", "id4", "id5"]
    page = await storage.archive.query(alice, ArchiveFilter(after_id="id6", before_id="id9"))
    assert ids(page.items) == ["id7", "id8"]
    assert page.count == 2
    with pytest.raises(ArchiveItemNotFound):
        await storage.archive.query(alice, after="nope")
    with pytest.raises(ArchiveItemNotFound):
        await storage.archive.query(alice, ArchiveFilter(before_id="nope"))


async def test_archives_are_per_account(storage: Storage, alice: str) -> None:
    await storage.accounts.create("bob", "pw", iterations=FAST_ITERATIONS)
    shared = ArchiveEntry(alice, "same", "bob@localhost", "out", b"<m/>")
    await storage.archive.append([shared, ArchiveEntry("bob", "same", "alice@localhost", "in", b"<m/>")])
    assert await storage.archive.count(alice) == 1
    assert await storage.archive.count("bob") == 1
    with pytest.raises(ArchiveItemNotFound):
        await storage.archive.query("nobody", after="same")
    with pytest.raises(AccountNotFound):
        await storage.archive.append([entry("nobody", 1)])


async def test_preferences_applied_when_appending(storage: Storage, alice: str) -> None:
    assert await storage.archive.get_prefs(alice) is None
    kept = await storage.archive.append_wanted([entry(alice, 1), entry("ghost", 2)], "always")
    assert [e.stanza_id for e in kept] == ["id1"]  # accounts that do not exist are skipped
    assert await storage.archive.append_wanted([entry(alice, 2)], "never") == []

    await storage.archive.set_prefs(alice, ArchivePrefs("roster", always=("dave@localhost",)))
    assert await storage.archive.get_prefs(alice) == ArchivePrefs("roster", ("dave@localhost",), ())
    await storage.roster.put(alice, RosterItem(jid="carol@localhost", subscription="both"))
    candidates = [
        entry(alice, 3, peer="carol@localhost"),
        entry(alice, 4),
        entry(alice, 5, peer="dave@localhost"),
    ]
    kept = await storage.archive.append_wanted(candidates, "always")
    assert [e.stanza_id for e in kept] == ["id3", "id5"]

    await storage.archive.set_prefs(alice, ArchivePrefs("always", never=("bob@localhost",)))
    assert await storage.archive.append_wanted([entry(alice, 6)], "always") == []
    with pytest.raises(ValueError, match="unknown archiving mode"):
        await storage.archive.set_prefs(alice, ArchivePrefs("sometimes"))
    with pytest.raises(AccountNotFound):
        await storage.archive.set_prefs("nobody", ArchivePrefs())


async def test_a_message_stored_again_under_its_stanza_id_keeps_one_row(
    storage: Storage, alice: str
) -> None:
    """A message its sender routed again (its first recipient worker died before confirming)
    comes back with the same stanza-id (`mam.stable_id`): the second write changes nothing."""
    first = entry(alice, 1)
    assert await storage.archive.append_wanted([first], "always") == [first]
    again = ArchiveEntry(alice, "id1", first.peer, first.direction, b"<message id='2nd'/>", timestamp=2e3)
    assert await storage.archive.append_wanted([again], "always") == [again]  # no error: kept once
    page = await storage.archive.query(alice, limit=10)
    assert ids(page.items) == ["id1"]
    assert page.count == 1


def test_archiving_wanted_never_wins() -> None:
    both = ArchivePrefs("always", always=("x@y",), never=("x@y",))
    assert not archiving_wanted(both, "x@y", True)
    assert archiving_wanted(ArchivePrefs("roster"), "x@y", True)
    assert not archiving_wanted(ArchivePrefs("roster"), "x@y", False)
    assert not archiving_wanted(ArchivePrefs("never"), "x@y", True)


async def test_delete_and_account_removal(storage: Storage, alice: str) -> None:
    await fill(storage, alice, 3)
    await storage.archive.set_prefs(alice, ArchivePrefs("never"))
    await storage.archive.delete(alice)
    assert await storage.archive.count(alice) == 0
    assert await storage.archive.get_prefs(alice) is None

    await fill(storage, alice, 3)
    await storage.archive.set_prefs(alice, ArchivePrefs("never"))
    await storage.accounts.delete(alice)  # ON DELETE CASCADE
    assert await storage.archive.count(alice) == 0
    assert await storage.archive.get_prefs(alice) is None


@sqlite_only  # a version-1 database is a SQLite file: PostgreSQL came later
async def test_a_version_1_database_is_upgraded(db_url: str) -> None:
    path = Path(db_url.removeprefix("sqlite:///"))
    path.parent.mkdir(parents=True)
    engine = create_engine(db_url)
    v1_names = {"schema_version", "account", "scram_credential", "roster_item", "offline_message",
                "private_data", "vcard", "blocked_jid", "last_activity"}  # fmt: skip
    v1_tables = [t for t in models.TABLES if t.name in v1_names]
    with engine.begin() as conn:
        for table in v1_tables:
            table.create(conn)
        conn.execute(models.TABLES[0].insert().values(id=1, version=1))
    engine.dispose()

    async with await Storage.open(db_url) as storage:
        await storage.accounts.create("alice", "pw", iterations=FAST_ITERATIONS)
        await fill(storage, "alice", 2)
        assert await storage.archive.count("alice") == 2
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(schema.current_version(),)]
        indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {t.name for t in models.TABLES} <= tables  # every later step ran
    assert {"ix_archive_username_timestamp", "ix_archive_username_peer"} <= indexes


# ---- the journal: appends land there, moves and reads take them into the archive ----------------


def _journal_and_archive(db_url: str) -> tuple[int, int]:
    """Rows in the journal and in the archive, read outside imactor."""
    ((journal,),) = execute(db_url, "SELECT count(*) FROM archive_journal")
    ((archive,),) = execute(db_url, "SELECT count(*) FROM archive")
    return int(journal), int(archive)  # type: ignore[call-overload]


async def test_appends_wait_in_the_journal_and_a_read_moves_them(
    storage: Storage, alice: str, db_url: str
) -> None:
    await storage.accounts.create("bob", "pw", iterations=FAST_ITERATIONS)
    for n in range(3):
        chat = [entry(alice, n, "bob@localhost", "in"), entry("bob", n, "alice@localhost", "out")]
        assert await storage.archive.append_wanted(chat, "always") == chat
    assert _journal_and_archive(db_url) == (6, 0)  # durable in the journal, not yet indexed
    page = await storage.archive.query(alice)
    assert ids(page.items) == ["id0", "id1", "id2"]
    assert _journal_and_archive(db_url) == (0, 6)
    assert await storage.archive.count("bob") == 3


async def test_moves_keep_each_accounts_order_and_drop_a_second_copy(
    storage: Storage, alice: str, db_url: str
) -> None:
    """Moved rows are sorted by account; within one account they keep the order they were
    appended in, across moves, and a message routed twice keeps its first row."""
    await storage.accounts.create("bob", "pw", iterations=FAST_ITERATIONS)
    for n in range(4):
        await storage.archive.append_wanted([entry("bob", n), entry(alice, n)], "always")
    assert await storage.archive.move_journal() == 8
    again = ArchiveEntry(alice, "id3", "bob@localhost", "in", b"<message id='2nd'/>")
    for n in (4, 5):
        await storage.archive.append_wanted([entry(alice, n), entry("bob", n)], "always")
    await storage.archive.append_wanted([again], "always")
    assert await storage.archive.move_journal() == 5  # left the journal; the second copy dropped
    assert await storage.archive.move_journal() == 0
    for name in (alice, "bob"):
        page = await storage.archive.query(name)
        assert ids(page.items) == [f"id{n}" for n in range(6)]
    kept = "SELECT stanza FROM archive WHERE username = 'alice' AND stanza_id = 'id3'"
    ((stanza,),) = execute(db_url, kept)
    assert bytes(stanza) == b"<message id='3'/>"  # type: ignore[arg-type]
    assert _journal_and_archive(db_url) == (0, 12)


async def test_a_deleted_accounts_journal_rows_go_with_it(storage: Storage, alice: str, db_url: str) -> None:
    """Not moved later into an account of the same name created meanwhile."""
    await storage.archive.append_wanted([entry(alice, 1)], "always")
    await storage.accounts.delete(alice)
    assert _journal_and_archive(db_url) == (0, 0)
    await storage.accounts.create(alice, "pw", iterations=FAST_ITERATIONS)
    assert await storage.archive.count(alice) == 0


async def test_deleting_an_archive_empties_its_journal_rows(
    storage: Storage, alice: str, db_url: str
) -> None:
    await storage.accounts.create("bob", "pw", iterations=FAST_ITERATIONS)
    await storage.archive.append_wanted([entry(alice, 1), entry("bob", 1)], "always")
    await storage.archive.delete(alice)
    assert _journal_and_archive(db_url) == (1, 0)  # bob's row stays
    assert await storage.archive.count("bob") == 1


async def test_run_moves_at_its_row_mark_and_what_is_left_when_it_stops(
    storage: Storage, alice: str, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The interval far away: only the row mark can start a move while the test watches.
    monkeypatch.setattr(archive_module, "MOVE_INTERVAL", 3600.0)
    monkeypatch.setattr(archive_module, "MOVE_ROWS", 4)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(storage.archive.run)
            await storage.archive.append_wanted([entry(alice, n) for n in range(4)], "always")
            # The move commits in the writer's thread and no event tells the test: watch the table.
            while _journal_and_archive(db_url) != (0, 4):  # noqa: ASYNC110
                await trio.sleep(0.01)
            await storage.archive.append_wanted([entry(alice, 4)], "always")  # under the mark
            assert _journal_and_archive(db_url) == (1, 4)
            nursery.cancel_scope.cancel()
    assert _journal_and_archive(db_url) == (0, 5)  # moved as it stopped
