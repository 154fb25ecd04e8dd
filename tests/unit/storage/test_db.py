"""The database layer: schema versioning, reopening, concurrency, pragmas, URLs, closing."""

from __future__ import annotations

import os
import re
import sqlite3
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from imactor.storage import AccountExists, RosterItem, Storage, StorageError, StorageFull, schema
from imactor.storage.db import Sql
from imactor.storage.schema import Migration
from tests.support.disk import fill, small_tmpfs
from tests.unit.storage.conftest import execute, sqlite_only, table_names

#: Fewer PBKDF2 rounds than production keep these tests fast (the value is still checked).
FAST_ITERATIONS = 512


def _path(url: str) -> Path:
    return Path(url.removeprefix("sqlite:///"))


_query = execute
#: "No such table" as SQLite and PostgreSQL say it.
NO_SUCH_TABLE = r"no such table|relation \"no_such_table\" does not exist"


async def test_open_creates_directory_schema_and_wal(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'deep' / 'er' / 'imactor.sqlite3'}"
    async with await Storage.open(url) as storage:
        assert storage.url == url
    assert _path(url).is_file()
    assert _query(url, "SELECT version FROM schema_version") == [(schema.current_version(),)]
    assert _query(url, "PRAGMA journal_mode") == [("wal",)]


async def test_reopening_keeps_data(db_url: str) -> None:
    async with await Storage.open(db_url) as storage:
        await storage.accounts.create("alice", "pw", iterations=FAST_ITERATIONS)
        await storage.roster.put("alice", RosterItem("bob@localhost", name="Bob"))
        await storage.offline.store("alice", b"<message/>")
    async with await Storage.open(db_url) as storage:
        assert await storage.accounts.list_usernames() == ["alice"]
        assert await storage.roster.get("alice") == (1, [RosterItem("bob@localhost", name="Bob")])
        assert [s for _, s in await storage.offline.fetch("alice")] == [b"<message/>"]
    assert _query(db_url, "SELECT count(*) FROM schema_version") == [(1,)]


async def test_newer_schema_is_refused(db_url: str) -> None:
    await (await Storage.open(db_url)).aclose()
    execute(db_url, "UPDATE schema_version SET version = 99")
    expected = rf"schema version 99 is newer than this imactor supports \({schema.current_version()}\)"
    with pytest.raises(StorageError, match=expected):
        await Storage.open(db_url)
    assert _query(db_url, "SELECT version FROM schema_version") == [(99,)]  # left untouched


def _create_extra(conn: Any) -> None:
    conn.exec_driver_sql("CREATE TABLE extra (x INTEGER)")


def _fill_extra(conn: Any) -> None:
    conn.exec_driver_sql("INSERT INTO extra VALUES (42)")


async def test_migrations_run_in_order_on_an_older_database(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with await Storage.open(db_url) as storage:
        await storage.accounts.create("alice", "pw", iterations=FAST_ITERATIONS)
    base = schema.current_version()
    steps = (
        *schema.MIGRATIONS,
        Migration(base + 1, "add a table", _create_extra),
        Migration(base + 2, "fill it", _fill_extra),
    )
    monkeypatch.setattr(schema, "MIGRATIONS", steps)
    async with await Storage.open(db_url) as storage:
        assert await storage.accounts.list_usernames() == ["alice"]
    assert _query(db_url, "SELECT version FROM schema_version") == [(base + 2,)]
    assert _query(db_url, "SELECT x FROM extra") == [(42,)]


async def test_failed_migration_leaves_the_old_schema(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    await (await Storage.open(db_url)).aclose()

    def broken(conn: object) -> None:
        raise RuntimeError("step failed")

    base = schema.current_version()
    steps = (
        *schema.MIGRATIONS,
        Migration(base + 1, "add a table", _create_extra),
        Migration(base + 2, "broken", broken),
    )
    monkeypatch.setattr(schema, "MIGRATIONS", steps)
    expected = rf"migration to schema version {base + 2} \(broken\) failed: step failed"
    with pytest.raises(StorageError, match=expected):
        await Storage.open(db_url)
    assert _query(db_url, "SELECT version FROM schema_version") == [(base,)]
    assert "extra" not in table_names(db_url)


async def test_tables_without_version_are_refused(db_url: str) -> None:
    if db_url.startswith("sqlite"):
        _path(db_url).parent.mkdir(parents=True)
    execute(db_url, "CREATE TABLE account (username TEXT)")
    with pytest.raises(StorageError, match="no schema_version"):
        await Storage.open(db_url)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("sqlite://", "in-memory"),
        ("sqlite:///:memory:", "in-memory"),
        ("not a url", "invalid database URL"),
        ("mysql://imactor:secret@localhost/imactor", "unsupported database; use SQLite .* or PostgreSQL"),
        ("postgresql+asyncpg://imactor@localhost/imactor", "with psycopg 3: use postgresql\\+psycopg://"),
    ],
)
async def test_unusable_urls(url: str, says: str) -> None:
    with pytest.raises(StorageError, match=says) as refused:
        await Storage.open(url)
    assert "secret" not in str(refused.value)


async def test_concurrent_writers_never_hit_database_is_locked(db_url: str) -> None:
    # Two Storage objects on one file behave like two worker processes: two writer connections.
    first, second = await Storage.open(db_url), await Storage.open(db_url)
    try:
        await first.accounts.create("alice", "pw", iterations=FAST_ITERATIONS)

        async def write(storage: Storage, i: int) -> None:
            await storage.offline.store("alice", b"<m%d/>" % i)
            await storage.roster.put("alice", RosterItem(f"contact{i}@localhost"))
            await storage.blocking.add("alice", [f"spam{i}@x"])

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for i in range(150):
                    nursery.start_soon(write, first if i % 2 else second, i)
        assert await first.offline.count("alice") == 150
        version, items = await second.roster.get("alice")
        assert version == 150
        assert len(items) == 150
        assert len(await first.blocking.get("alice")) == 150
    finally:
        await first.aclose()
        await second.aclose()


async def test_concurrent_writes_are_group_committed(storage: Storage, alice: str) -> None:
    before = storage.statistics()
    assert (before.transactions, before.writes, before.pending_writes) == (1, 1, 0)  # alice
    async with trio.open_nursery() as nursery:
        for i in range(20):
            nursery.start_soon(storage.offline.store, alice, b"<m%d/>" % i)
    after = storage.statistics()
    # The first writer yields once before taking the queue, by which time all 20 have queued.
    assert (after.transactions, after.writes, after.largest_batch) == (2, 21, 20)
    assert after.pending_writes == 0
    assert await storage.offline.count(alice) == 20


async def test_a_failing_write_does_not_undo_its_batch(storage: Storage) -> None:
    # Concurrent writes are group-committed; each runs under its own savepoint.
    outcomes: list[str] = []

    async def create(name: str) -> None:
        try:
            await storage.accounts.create(name, "pw", iterations=FAST_ITERATIONS)
        except AccountExists:
            outcomes.append("exists")
        else:
            outcomes.append("created")

    async with trio.open_nursery() as nursery:
        for i in range(40):
            nursery.start_soon(create, "dup" if i % 2 else f"user{i}")
    assert outcomes.count("created") == 21
    assert outcomes.count("exists") == 19
    assert len(await storage.accounts.list_usernames()) == 21


async def test_reads_run_while_a_write_is_pending(storage: Storage, alice: str) -> None:
    async with trio.open_nursery() as nursery:
        for i in range(20):
            nursery.start_soon(storage.offline.store, alice, b"<m%d/>" % i)
        counts = [await storage.offline.count(alice) for _ in range(5)]
    assert counts == sorted(counts)  # reads see committed prefixes, never going backwards
    assert await storage.offline.count(alice) == 20


async def test_closed_storage_refuses_calls(db_url: str) -> None:
    storage = await Storage.open(db_url)
    await storage.aclose()
    await storage.aclose()  # idempotent
    with pytest.raises(StorageError, match="closed"):
        await storage.accounts.exists("alice")
    with pytest.raises(StorageError, match="closed"):
        await storage.offline.store("alice", b"<m/>")


async def test_writes_queued_behind_close_are_refused(db_url: str) -> None:
    storage = await Storage.open(db_url)
    await storage.accounts.create("alice", "pw", iterations=FAST_ITERATIONS)
    results: list[str] = []

    async def store(i: int) -> None:
        try:
            await storage.offline.store("alice", b"<m%d/>" % i)
        except StorageError:
            results.append("refused")
        else:
            results.append("stored")

    async with trio.open_nursery() as nursery:
        for i in range(10):
            nursery.start_soon(store, i)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(storage.aclose)
    # Every write either committed before the close or was refused; none was lost silently.
    reopened = await Storage.open(db_url)
    try:
        assert await reopened.offline.count("alice") == results.count("stored")
    finally:
        await reopened.aclose()
    assert len(results) == 10


async def test_select_reads_rows_on_the_driver_connection(storage: Storage, alice: str) -> None:
    await storage.offline.store(alice, b"<m1/>")
    await storage.offline.store(alice, b"<m2/>")
    rows = await storage._db.select(
        "SELECT stanza FROM offline_message WHERE username = :username ORDER BY id", {"username": alice}
    )
    assert rows == [(b"<m1/>",), (b"<m2/>",)]
    assert await storage._db.select("SELECT 1 WHERE :x = 2", {"x": 1}) == []


async def test_select_errors_are_storage_errors_and_cannot_write(storage: Storage, alice: str) -> None:
    with pytest.raises(StorageError, match=NO_SUCH_TABLE):
        await storage._db.select("SELECT * FROM no_such_table", {})
    # The reader connections are read-only: a statement that writes is refused, not run.
    with pytest.raises(StorageError, match=r"readonly|read-only transaction"):
        await storage._db.select("DELETE FROM offline_message WHERE username = :u", {"u": alice})
    await storage.aclose()
    with pytest.raises(StorageError, match="closed"):
        await storage._db.select("SELECT 1", {})


@sqlite_only
async def test_select_when_sqlite_is_busy_retries_in_a_thread(
    storage: Storage, alice: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A WAL reader is busy only in rare moments (another connection recovering the WAL, or
    # holding the file in exclusive locking mode), which cannot be staged while the storage's own
    # connections are open. So the inline reader is swapped for one on a file another connection
    # holds exclusively: its real "database is locked" must send the read to a thread, which
    # reads the storage's database, instead of failing or waiting on the event loop.
    await storage.offline.store(alice, b"<m1/>")
    locked = tmp_path / "locked.sqlite3"
    holder = sqlite3.connect(locked, isolation_level=None)
    busy = sqlite3.connect(locked, isolation_level=None, check_same_thread=False)
    try:
        holder.execute("CREATE TABLE t (x)")
        holder.execute("BEGIN EXCLUSIVE")
        busy.execute("PRAGMA busy_timeout = 0")
        db = storage._db
        if db._inline_reader is not None:
            db._inline_reader.close()
        monkeypatch.setattr(db, "_inline_reader", busy)
        with trio.fail_after(10):
            rows = await db.select("SELECT stanza FROM offline_message", {})
        assert rows == [(b"<m1/>",)]
    finally:
        holder.close()


def _delete_then_fail(username: str) -> Callable[[Sql], None]:
    """A lean write that changes rows, then fails: its changes must not stand."""

    def write(sql: Sql) -> None:
        sql.run("DELETE FROM offline_message WHERE username = :u", {"u": username})
        sql.run("INSERT INTO no_such_table VALUES (1)", {})

    return write


async def test_lean_writes_fail_alone_and_roll_back_their_own_changes(storage: Storage, alice: str) -> None:
    from imactor.storage import AccountNotFound

    half_then_fail = _delete_then_fail(alice)
    await storage.offline.store(alice, b"<kept/>")
    outcomes: list[str] = []

    async def attempt(kind: int) -> None:
        try:
            if kind == 0:
                await storage.offline.store(alice, b"<m/>")
            elif kind == 1:
                await storage.offline.store("nobody", b"<m/>")
            else:
                await storage._db.write_sql(half_then_fail)
        except AccountNotFound:
            outcomes.append("no account")
        except StorageError as exc:
            outcomes.append("failed" if re.search(NO_SUCH_TABLE, str(exc)) else repr(exc))
        else:
            outcomes.append("stored")

    before = storage.statistics().transactions
    async with trio.open_nursery() as nursery:
        for i in range(30):
            nursery.start_soon(attempt, i % 3)
    assert sorted(set(outcomes)) == ["failed", "no account", "stored"]
    assert outcomes.count("stored") == outcomes.count("failed") == outcomes.count("no account") == 10
    assert storage.statistics().transactions - before == 1  # one lean batch, on the driver connection
    assert await storage.offline.count(alice) == 11  # the failed DELETEs were rolled back
    assert await storage.offline.count("nobody") == 0


async def test_a_lean_write_alone_that_fails_leaves_nothing(storage: Storage, alice: str) -> None:
    # A batch of one job runs without a SAVEPOINT: its failure rolls the whole transaction back.
    await storage.offline.store(alice, b"<kept/>")
    before = storage.statistics().transactions
    with pytest.raises(StorageError, match=NO_SUCH_TABLE):
        await storage._db.write_sql(_delete_then_fail(alice))
    assert storage.statistics().transactions - before == 1  # it was a batch of its own
    assert await storage.offline.count(alice) == 1  # the DELETE was rolled back
    await storage.offline.store(alice, b"<next/>")  # and the writer is not left mid-transaction
    assert await storage.offline.count(alice) == 2


async def test_lean_and_orm_writes_queued_together_all_commit(storage: Storage, alice: str) -> None:
    async with trio.open_nursery() as nursery:
        for i in range(10):
            nursery.start_soon(storage.offline.store, alice, b"<m%d/>" % i)
            nursery.start_soon(storage.roster.put, alice, RosterItem(f"c{i}@localhost"))
    assert await storage.offline.count(alice) == 10
    assert len((await storage.roster.get(alice))[1]) == 10


@sqlite_only
async def test_a_batch_holds_writes_of_one_kind(storage: Storage, alice: str) -> None:
    """An ORM write queued between lean ones is a batch of its own: the lean writes before and
    after it stay on their own path (on SQLite, the loop's thread), not the ORM's in a thread."""
    before = storage.statistics()
    async with trio.open_nursery() as nursery:
        # Queued in this order in one scheduler round (the leader's lock is a checkpoint).
        for i in range(2):
            nursery.start_soon(storage.offline.store, alice, b"<before%d/>" % i)
        nursery.start_soon(storage.roster.put, alice, RosterItem("c@localhost"))
        for i in range(2):
            nursery.start_soon(storage.offline.store, alice, b"<after%d/>" % i)
    after = storage.statistics()
    assert after.transactions - before.transactions == 3
    assert after.inline_batches - before.inline_batches == 2
    assert await storage.offline.count(alice) == 4


# ---- lean writes on the event loop's thread (imactor.storage.sqlite_inline) --------------------


@sqlite_only
async def test_lean_writes_commit_on_the_loop_thread(storage: Storage, alice: str) -> None:
    import threading

    threads: list[threading.Thread] = []

    def store(sql: Any) -> None:
        threads.append(threading.current_thread())
        sql.run("INSERT INTO offline_message (username, stanza, stored_at) VALUES (:u, :s, 0)",
                {"u": alice, "s": b"<m/>"})  # fmt: skip

    await storage._db.write_sql(store)
    assert threads == [threading.main_thread()]  # no trip to a worker thread
    stats = storage.statistics()
    assert (stats.inline_batches, stats.deferred_batches) == (1, 0)
    assert await storage.offline.count(alice) == 1


@sqlite_only
async def test_lean_writes_go_to_a_thread_while_another_process_writes(
    storage: Storage, alice: str, db_url: str
) -> None:
    # Another process holding the node's writer turn (the flock) or SQLite's write lock must not
    # stall the event loop: the batch goes to a thread, which waits its turn, and commits.
    import fcntl
    import os

    lock_fd = os.open(f"{_path(db_url)}-writer.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(lock_fd, fcntl.LOCK_EX)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(storage.offline.store, alice, b"<waited/>")
            await trio.testing.wait_all_tasks_blocked()
            assert storage.statistics().deferred_batches == 1
            assert await storage.offline.count(alice) == 0  # not written yet: waiting its turn
            fcntl.flock(lock_fd, fcntl.LOCK_UN)
    finally:
        os.close(lock_fd)
    assert await storage.offline.count(alice) == 1
    # SQLite's own lock, taken by a connection that does not use the flock (another program).
    holder = sqlite3.connect(_path(db_url), isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(storage.offline.store, alice, b"<waited too/>")
            await trio.testing.wait_all_tasks_blocked()
            assert storage.statistics().deferred_batches == 2
            holder.execute("COMMIT")
    finally:
        holder.close()
    assert await storage.offline.count(alice) == 2


@sqlite_only
async def test_inline_writes_checkpoint_the_wal_in_a_thread(
    storage: Storage, alice: str, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The inline writer never checkpoints on the loop's thread (wal_autocheckpoint = 0): every
    # CHECKPOINT_EVERY commits a thread copies the WAL into the database, after which SQLite
    # starts the WAL over, so it stays short. Without those checkpoints it would only grow.
    from imactor.storage import sqlite_inline

    writer = storage._db._inline_writer
    assert writer is not None

    async def write(count: int) -> int:
        start = _wal_bytes(db_url)
        for i in range(count):
            await storage.offline.store(alice, b"<m%d/>" % i)
            with trio.fail_after(10):
                while writer._checkpointing:  # noqa: ASYNC110 (cleared by the checkpoint thread)
                    await trio.sleep(0.005)
        return _wal_bytes(db_url) - start

    monkeypatch.setattr(sqlite_inline, "CHECKPOINT_EVERY", 10**9)
    grown = await write(60)
    monkeypatch.setattr(sqlite_inline, "CHECKPOINT_EVERY", 5)
    await write(5)  # the first checkpoint
    assert await write(60) == 0  # the WAL is reused from its start: it does not grow
    assert grown > 60 * 4096  # each commit appended at least a page
    assert await storage.offline.count(alice) == 125


def _wal_bytes(db_url: str) -> int:
    wal = Path(f"{_path(db_url)}-wal")
    return wal.stat().st_size if wal.exists() else 0


@pytest.fixture
def common_umask() -> Iterator[None]:
    """The usual umask 022, under which SQLite alone would create its files 0644."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.mark.usefixtures("common_umask")
async def test_a_new_database_its_wal_and_directory_are_private(tmp_path: Path) -> None:
    database = tmp_path / "data" / "imactor.sqlite3"
    async with await Storage.open(f"sqlite:///{database}") as storage:
        await storage.accounts.create("alice", "pw", iterations=FAST_ITERATIONS)
        await storage.offline.store("alice", b"<message/>")  # the inline writer: -wal and -shm
        modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in database.parent.iterdir()}
    assert stat.S_IMODE(database.parent.stat().st_mode) == 0o700
    assert modes == {
        "imactor.sqlite3": 0o600,
        "imactor.sqlite3-wal": 0o600,
        "imactor.sqlite3-shm": 0o600,
        "imactor.sqlite3-writer.lock": 0o600,
    }


async def test_a_full_disk_fails_writes_with_storage_full_and_they_work_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with small_tmpfs(tmp_path / "disk", "2m") as disk:
        async with await Storage.open(f"sqlite:///{disk / 'imactor.sqlite3'}") as storage:
            await storage.accounts.create("alice", "pw", iterations=FAST_ITERATIONS)
            filler = fill(disk)
            with pytest.raises(StorageFull, match="database or disk is full"):
                await storage.offline.store("alice", b"<message/>" * 500)  # lean, on the loop's thread
            with pytest.raises(StorageFull, match="database or disk is full"):
                await storage.private.set("alice", "k", b"<x/>" * 2000)  # ORM, in a thread
            filler.unlink()
            await storage.offline.store("alice", b"<message>kept</message>")
            await storage.private.set("alice", "k", b"<x/>")
            assert [s for _, s in await storage.offline.fetch("alice")] == [b"<message>kept</message>"]
            assert await storage.private.get("alice", "k") == b"<x/>"
    # One line when the writes begin to fail (the next within a minute are only counted), one
    # when they work again.
    lines = [r.getMessage() for r in caplog.records if r.name == "imactor.storage"]
    assert len(lines) == 2, lines
    assert re.search(r": 1 writes refused: .*database or disk is full; free disk space", lines[0]), lines
    assert re.search(r": writes succeed again after \d+ s; 2 writes were refused meanwhile$", lines[1]), lines
