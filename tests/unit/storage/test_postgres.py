"""What only PostgreSQL has: hash partitions by user, a server that goes away and comes back,
several nodes migrating one database at once (`imactor db migrate`). On the session's throw-away
server (`tests/support/postgres.py`)."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
import trio
import trio.testing

from imactor.storage import RosterItem, Storage, StorageError
from imactor.storage.archive import ArchiveEntry
from imactor.storage.models import ArchivedMessage, OfflineMessage
from imactor.storage.postgres import SCHEMA_LOCK_KEY
from imactor.storage.schema import current_version
from tests.support.postgres import SUPERUSER, PostgresServer
from tests.unit.storage.conftest import FAST_ITERATIONS, execute

pytestmark = pytest.mark.postgres

USERS = [f"user{i}" for i in range(24)]
#: `imactor db migrate` processes started at once.
NODES = 3


@pytest.fixture
def pg_url(postgres: PostgresServer) -> Iterator[str]:
    """A fresh schema of its own on the session's server."""
    schema, url = postgres.schema_url()
    try:
        yield url
    finally:
        postgres.drop_schema(schema)


def _partitions(url: str, table: str) -> list[str]:
    """The partitions of `table` in the URL's schema, by name."""
    rows = execute(
        url, f"SELECT inhrelid::regclass::text FROM pg_inherits WHERE inhparent = '{table}'::regclass"
    )
    return sorted(str(name) for (name,) in rows)


async def test_archive_and_offline_messages_are_partitioned_by_user(pg_url: str) -> None:
    async with await Storage.open(pg_url, partitions=4) as storage:
        await storage.accounts.create_many([(name, "pw") for name in USERS], iterations=FAST_ITERATIONS)
        entries = [
            ArchiveEntry(name, f"{name}-{i}", "peer@localhost", "in", b"<m/>")
            for name in USERS
            for i in range(2)
        ]
        await storage.archive.append(entries)
        await storage.archive.move_journal()  # from the journal into the partitioned archive
        for name in USERS:
            await storage.offline.store(name, b"<offline/>")
        for table in ("archive", "offline_message"):
            assert _partitions(pg_url, table) == [f"{table}_p{i}" for i in range(4)]
            # Each user's rows all land in one partition, and the users spread over all four.
            placed = execute(pg_url, f"SELECT username, tableoid::regclass::text FROM {table}")
            homes: dict[str, set[str]] = {}
            for username, partition in placed:
                homes.setdefault(str(username), set()).add(str(partition))
            assert set(homes) == set(USERS)
            assert all(len(parts) == 1 for parts in homes.values()), homes
            assert {part for parts in homes.values() for part in parts} == set(_partitions(pg_url, table))
        # Reads through the stores find them, and a query that names the user reads one partition.
        page = await storage.archive.query("user3")
        assert [item.stanza_id for item in page.items] == ["user3-0", "user3-1"]
        assert [stanza for _, stanza in await storage.offline.fetch("user3")] == [b"<offline/>"]
        plan = "\n".join(
            str(line)
            for (line,) in execute(
                pg_url, "EXPLAIN SELECT id FROM archive WHERE username = 'user3' ORDER BY id"
            )
        )
        assert len(set(re.findall(r"archive_p\d+", plan))) == 1, plan  # pruned to the user's partition
        # Deleting an account cascades into its partition.
        await storage.accounts.delete("user3")
        assert await storage.archive.count("user3") == 0
        assert await storage.offline.count("user3") == 0
        assert await storage.archive.count("user4") == 2


async def test_nodes_moving_the_journal_at_once_keep_every_message_once_in_order(pg_url: str) -> None:
    """Two nodes (two storages on one database) append to the archive's journal and move it at
    the same time: each message ends in its archive once, and each node's messages to one
    account keep the order they were appended in."""
    users = USERS[:4]
    async with await Storage.open(pg_url) as one, await Storage.open(pg_url) as two:
        await one.accounts.create_many([(name, "pw") for name in users], iterations=FAST_ITERATIONS)

        async def node(storage: Storage, tag: str) -> None:
            for i in range(48):
                entry = ArchiveEntry(users[i % 4], f"{tag}-{i}", "peer@localhost", "in", b"<m/>")
                await storage.archive.append_wanted([entry], "always")
                if i % 3 == 0:
                    await storage.archive.move_journal()

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(node, one, "a")
                nursery.start_soon(node, two, "b")
        for k, name in enumerate(users):
            page = await two.archive.query(name, limit=100)
            ids = [item.stanza_id for item in page.items]
            for tag in ("a", "b"):
                assert [i for i in ids if i.startswith(tag)] == [f"{tag}-{i}" for i in range(k, 48, 4)]
            assert len(ids) == 24
        assert execute(pg_url, "SELECT count(*) FROM archive_journal") == [(0,)]


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
async def test_a_url_without_the_driver_means_psycopg(pg_url: str, scheme: str) -> None:
    async with await Storage.open(pg_url.replace("postgresql+psycopg", scheme)) as storage:
        await storage.accounts.create("alice", "pw", iterations=FAST_ITERATIONS)
        assert await storage.accounts.list_usernames() == ["alice"]


async def test_partitions_zero_gives_plain_tables(pg_url: str) -> None:
    await (await Storage.open(pg_url, partitions=0)).aclose()
    kinds = dict(
        execute(
            pg_url, "SELECT relname, relkind FROM pg_class WHERE relname IN ('archive', 'offline_message')"
        )
    )
    assert kinds == {"archive": "r", "offline_message": "r"}
    assert _partitions(pg_url, "archive") == []


async def test_partitioned_tables_have_the_models_columns(pg_url: str) -> None:
    # The partitioned tables are written as DDL (schema.PARTITIONED): they must not drift from
    # the models, which make the plain tables (SQLite's and partitions = 0).
    await (await Storage.open(pg_url, partitions=2)).aclose()
    for model in (ArchivedMessage, OfflineMessage):
        table = model.__table__  # type: ignore[attr-defined]
        rows = execute(
            pg_url,
            "SELECT column_name, is_nullable FROM information_schema.columns "
            f"WHERE table_name = '{table.name}' AND table_schema = current_schema()",
        )
        assert dict(rows) == {c.name: "YES" if c.nullable else "NO" for c in table.columns}, table.name


async def test_a_restarting_server_fails_writes_clearly_and_they_work_again(
    postgres: PostgresServer, pg_url: str
) -> None:
    async with await Storage.open(pg_url) as storage:
        await storage.accounts.create("alice", "pw", iterations=FAST_ITERATIONS)
        await storage.offline.store("alice", b"<before/>")  # the lean writer's connection is open
        await storage.roster.put("alice", RosterItem("bob@localhost"))  # and the ORM writer's
        assert await storage.offline.fetch("alice")  # and a lean reader's
        await trio.to_thread.run_sync(postgres.halt)
        try:
            # Down: every write is refused with an error (never acknowledged), and so are reads.
            with pytest.raises(StorageError, match="PostgreSQL server is unreachable or restarting"):
                await storage.offline.store("alice", b"<lost/>")
            with pytest.raises(StorageError, match="PostgreSQL server is unreachable or restarting"):
                await storage.roster.put("alice", RosterItem("carol@localhost"))
            with pytest.raises(StorageError, match="unreachable or restarting"):
                await storage.offline.fetch("alice")
            assert storage._db.writes_failing
        finally:
            await trio.to_thread.run_sync(postgres.resume)
        # Back: the first write on each path succeeds (the dead connections are replaced).
        await storage.offline.store("alice", b"<after/>")
        await storage.roster.put("alice", RosterItem("dave@localhost"))
        assert [stanza for _, stanza in await storage.offline.fetch("alice")] == [b"<before/>", b"<after/>"]
        assert [item.jid for item in (await storage.roster.get("alice"))[1]] == [
            "bob@localhost",
            "dave@localhost",
        ]
        assert not storage._db.writes_failing


async def test_a_server_restarted_between_writes_loses_no_write(
    postgres: PostgresServer, pg_url: str
) -> None:
    # A restart (or failover) between two batches: the next batch finds its connection dead at
    # BEGIN, before anything ran, and runs on a new connection instead of failing.
    async with await Storage.open(pg_url) as storage:
        await storage.accounts.create("alice", "pw", iterations=FAST_ITERATIONS)
        await storage.offline.store("alice", b"<one/>")
        assert await storage.offline.fetch("alice")
        await trio.to_thread.run_sync(postgres.halt)
        await trio.to_thread.run_sync(postgres.resume)
        await storage.offline.store("alice", b"<two/>")
        assert [stanza for _, stanza in await storage.offline.fetch("alice")] == [b"<one/>", b"<two/>"]


async def test_pg_dump_and_pg_restore_as_documented(postgres: PostgresServer, tmp_path: Path) -> None:
    # docs/postgresql.md, "Backups": pg_dump of a live database, pg_restore into a new one,
    # the server pointed at it.
    url = postgres.database_url("live")
    async with await Storage.open(url, partitions=2) as storage:
        await storage.accounts.create("alice", "pw", iterations=FAST_ITERATIONS)
        await storage.archive.append([ArchiveEntry("alice", "s1", "bob@localhost", "in", b"<m/>")])
        await storage.offline.store("alice", b"<offline/>")
        dump = tmp_path / "imactor.dump"
        libpq = url.replace("postgresql+psycopg://", "postgresql://")
        await trio.to_thread.run_sync(_tool, postgres, "pg_dump", "--format=custom", f"--file={dump}", libpq)
    restored = postgres.database_url("restored")
    await trio.to_thread.run_sync(
        _tool, postgres, "pg_restore", "--no-owner", f"--dbname={restored.replace('+psycopg', '')}", str(dump)
    )
    async with await Storage.open(restored) as storage:
        assert storage.schema_change is not None
        assert storage.schema_change.describe().startswith("the schema is current")
        assert await storage.accounts.get_credentials("alice")
        assert [item.stanza_id for item in (await storage.archive.query("alice")).items] == ["s1"]
        assert [stanza for _, stanza in await storage.offline.fetch("alice")] == [b"<offline/>"]
    database = restored.rsplit("/", 1)[1]
    partitions = "SELECT count(*) FROM pg_inherits WHERE inhparent = 'archive'::regclass"
    assert postgres.execute(partitions, database) == [(2,)]


def _tool(postgres: PostgresServer, name: str, *args: str) -> None:
    done = subprocess.run(
        [str(postgres.bin_dir / name), *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr


async def test_a_batch_caught_in_a_deadlock_with_another_node_is_run_again(
    postgres: PostgresServer, pg_url: str
) -> None:
    # Another node's transaction holds bob's account row; this node's batch (two roster changes,
    # group-committed) locks alice, then waits for bob; the other node then asks for alice: a
    # deadlock. PostgreSQL fails the batch's statement; the batch is rolled back (releasing
    # alice, so the other node goes on) and run again, and both writes succeed.
    async with await Storage.open(pg_url) as storage:
        await storage.accounts.create_many([("alice", "pw"), ("bob", "pw")], iterations=FAST_ITERATIONS)
        schema = pg_url.rsplit("%3D", 1)[1]
        other = psycopg.connect(f"host=127.0.0.1 port={postgres.port} user={SUPERUSER} dbname=postgres")
        try:
            other.execute(f'SET search_path = "{schema}"')
            # The batch's session (deadlock_timeout 1 s) looks for the deadlock first: it is
            # the one PostgreSQL fails.
            other.execute("SET deadlock_timeout = '20s'")
            other.execute("SELECT 1 FROM account WHERE username = 'bob' FOR UPDATE")
            versions: list[int] = []

            async def put(owner: str) -> None:
                versions.append(await storage.roster.put(owner, RosterItem(f"friend-of-{owner}@localhost")))

            with trio.fail_after(30):
                async with trio.open_nursery() as nursery:
                    # Held while both queue: one batch, in this order (alice's lock, then bob's).
                    async with storage._db._write_lock:
                        for owner in ("alice", "bob"):
                            nursery.start_soon(put, owner)
                            await trio.testing.wait_all_tasks_blocked()
                    await _polled(lambda: _row_lock_waiters(postgres) >= 1)  # the batch waits for bob
                    await trio.to_thread.run_sync(
                        other.execute, "SELECT 1 FROM account WHERE username = 'alice' FOR UPDATE"
                    )
                    other.commit()
            assert sorted(versions) == [1, 1]
            assert storage.statistics().transactions == 2  # the accounts, then one batch of both
            # It did meet the deadlock (twice, when its new transaction took alice's row again
            # before the other side's waiting request got it).
            assert storage.statistics().retried_batches >= 1
        finally:
            other.close()
        assert (await storage.roster.get("alice"))[0] == 1
        assert [item.jid for item in (await storage.roster.get("bob"))[1]] == ["friend-of-bob@localhost"]


async def _polled(condition: Callable[[], bool]) -> None:
    """Until `condition` holds: pg_locks tells what a session waits for, no event does."""
    for _ in range(1000):
        if condition():
            return
        await trio.sleep(0.02)
    raise AssertionError("timed out")


def _row_lock_waiters(postgres: PostgresServer) -> int:
    """Sessions waiting for a row (or transaction) lock, on any database of the server."""
    query = "SELECT count(*) FROM pg_locks WHERE NOT granted AND locktype IN ('transactionid', 'tuple')"
    [(count,)] = postgres.execute(query)
    return int(str(count))


def _lock_waiters(postgres: PostgresServer, database: str) -> int:
    """Sessions of `database` waiting for an advisory lock."""
    query = (
        "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
        f"WHERE l.locktype = 'advisory' AND NOT l.granted AND d.datname = '{database}'"
    )
    [(count,)] = postgres.execute(query)
    return int(str(count))


def _migrate(config: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "imactor", "db", "migrate", "--config", str(config)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_several_nodes_migrating_at_once_create_the_schema_once(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    url = postgres.database_url("migrate")
    database = url.rsplit("/", 1)[1]
    config = tmp_path / "imactor.toml"
    config.write_text(
        f'[server]\ndata_dir = "{tmp_path / "data"}"\n[storage]\nurl = "{url}"\npartitions = 3\n'
    )
    # The test holds the schema lock while three nodes start, so that all three reach it (each
    # waits there), then lets them go at once: without the lock they would race to create the
    # same tables, and all but one would fail.
    gate = psycopg.connect(f"host=127.0.0.1 port={postgres.port} user={SUPERUSER} dbname={database}")
    try:
        gate.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK_KEY,))
        processes = [_migrate(config) for _ in range(NODES)]
        deadline = time.monotonic() + 60
        while _lock_waiters(postgres, database) < NODES:
            assert all(process.poll() is None for process in processes), "a node did not wait for the lock"
            assert time.monotonic() < deadline, "the nodes did not all wait for the schema lock"
            time.sleep(0.05)
        gate.commit()  # releases the lock: they go one after the other
        outputs = [process.communicate(timeout=120) for process in processes]
    finally:
        gate.close()
    assert [process.returncode for process in processes] == [0] * NODES, outputs
    said = sorted(out.split(" (")[0] for out, _ in outputs)
    version = current_version()
    assert said == [f"created the schema, version {version}"] + [
        f"the schema is current, version {version}"
    ] * (NODES - 1)
    assert postgres.execute("SELECT id, version FROM schema_version", database) == [(1, version)]
    assert (
        len(
            postgres.execute(
                "SELECT inhrelid FROM pg_inherits WHERE inhparent = 'archive'::regclass", database
            )
        )
        == 3
    )
    # Once more, with the schema there: nothing to do; the password never shows.
    again = _migrate(config)
    out, err = again.communicate(timeout=120)
    assert (again.returncode, out) == (0, f"the schema is current, version {version} ({url})\n"), err
