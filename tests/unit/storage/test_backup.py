"""`imactor.storage.backup`: online backups while writes go on, restores that keep the old files."""

from __future__ import annotations

import shutil
import sqlite3
import stat
from pathlib import Path

import pytest
import trio

from imactor.storage import Storage, StorageError
from imactor.storage.backup import backup, restore

FAST_ITERATIONS = 512


def _offline(database: Path, username: str) -> list[bytes]:
    with sqlite3.connect(database) as conn:
        rows = conn.execute("SELECT stanza FROM offline_message WHERE username = ? ORDER BY id", (username,))
        return [bytes(stanza) for (stanza,) in rows]


def _wal_bytes(database: Path) -> int | None:
    """The size of the database's -wal file; None when it has none."""
    wal = Path(f"{database}-wal")
    return wal.stat().st_size if wal.exists() else None


async def test_a_backup_taken_during_writes_is_consistent_and_private(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'data' / 'imactor.sqlite3'}"
    destination = tmp_path / "backups"
    destination.mkdir()
    async with await Storage.open(url) as storage:
        await storage.accounts.create("alice", "pw", iterations=FAST_ITERATIONS)

        async def write_on() -> None:
            for n in range(200):
                await storage.offline.store("alice", b"<message>%d</message>" % n)
                await trio.lowlevel.checkpoint()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(write_on)
            summary = await trio.to_thread.run_sync(backup, url, destination)
    assert summary.path.parent == destination
    assert stat.S_IMODE(summary.path.stat().st_mode) == 0o600
    assert summary.rows["account"] == 1
    stored = _offline(summary.path, "alice")  # a prefix of the writes: none torn, none skipped
    assert stored == [b"<message>%d</message>" % n for n in range(len(stored))]
    assert _wal_bytes(summary.path) is None  # one self-contained file


async def test_restore_keeps_the_old_database_with_its_own_wal(tmp_path: Path) -> None:
    backup_url = f"sqlite:///{tmp_path / 'old' / 'imactor.sqlite3'}"
    async with await Storage.open(backup_url) as storage:
        await storage.accounts.create("alice", "pw", iterations=FAST_ITERATIONS)
        await storage.offline.store("alice", b"<message>from the backup</message>")
    saved = backup(backup_url, tmp_path / "saved.sqlite3").path

    target = tmp_path / "data" / "imactor.sqlite3"
    url = f"sqlite:///{target}"
    async with await Storage.open(url) as storage:
        await storage.accounts.create("alice", "pw", iterations=FAST_ITERATIONS)
        await storage.offline.store("alice", b"<message>committed in the WAL</message>")
        # A crash now leaves the commit in the -wal file: copy the files as they are.
        crashed = tmp_path / "crashed"
        crashed.mkdir()
        for path in target.parent.iterdir():
            shutil.copy(path, crashed / path.name)
    shutil.rmtree(target.parent)
    shutil.copytree(crashed, target.parent)
    assert _wal_bytes(target)

    summary, kept = restore(saved, url)
    assert summary.path == target
    assert kept is not None
    # The restored file gets no frame of the old WAL; the old database keeps its commit.
    assert _offline(target, "alice") == [b"<message>from the backup</message>"]
    assert _offline(kept, "alice") == [b"<message>committed in the WAL</message>"]
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


async def test_restore_refuses_what_is_not_a_database(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"not a database" * 100)
    with pytest.raises(StorageError, match="is not an imactor database"):
        restore(garbage, f"sqlite:///{tmp_path / 'data' / 'imactor.sqlite3'}")
    assert not (tmp_path / "data" / "imactor.sqlite3").exists()


def test_postgresql_is_pointed_at_pg_dump(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="pg_dump"):
        backup("postgresql+psycopg://imactor@db/imactor", tmp_path)
