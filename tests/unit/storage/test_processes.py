"""Several processes write to one SQLite file through the real `Storage` API (the workers of a
node do): while a third one holds the write lock, their writes wait and retry, none fails."""

from __future__ import annotations

import fcntl
import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import trio

from imactor.storage import Storage
from tests.unit.storage.conftest import FAST_ITERATIONS, sqlite_only

PROGRAM = Path(__file__).parent / "programs" / "writer.py"
WRITES = 150
TIMEOUT = 60


@sqlite_only  # SQLite's write lock and busy handler
async def test_concurrent_processes_never_see_database_is_locked(db_url: str, tmp_path: Path) -> None:
    async with await Storage.open(db_url) as storage:
        await storage.accounts.create("alice", "secret", iterations=FAST_ITERATIONS)
    database = db_url.removeprefix("sqlite:///")
    blocker = sqlite3.connect(database, isolation_level=None)
    with trio.fail_after(TIMEOUT):
        blocker.execute("BEGIN IMMEDIATE")  # the write lock, held while the writers start
        processes = [
            await trio.lowlevel.open_process(
                [sys.executable, str(PROGRAM), db_url, name, str(WRITES)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for name in ("a", "b")
        ]
        outputs = {process.pid: bytearray() for process in processes}
        errors = {process.pid: bytearray() for process in processes}
        # A foreign connection holds SQLite's lock: the writer whose turn it is (the two queue on
        # the writer lock file first) waits on it, retrying; the other waits for its turn.
        one_waited = trio.Event()
        try:

            async def read(stream: trio.abc.ReceiveStream, into: bytearray) -> None:
                async for chunk in stream:
                    into.extend(chunk)
                    if any(b"retrying" in seen for seen in errors.values()):
                        one_waited.set()
                one_waited.set()  # a writer ended (failed?): its exit status tells

            async with trio.open_nursery() as nursery:
                for process in processes:
                    assert process.stdout is not None
                    assert process.stderr is not None
                    nursery.start_soon(read, process.stdout, outputs[process.pid])
                    nursery.start_soon(read, process.stderr, errors[process.pid])
                # A writer hit the lock and is retrying; now let them through.
                await one_waited.wait()
                blocker.execute("COMMIT")
                for process in processes:
                    assert await process.wait() == 0, errors[process.pid].decode()
        finally:
            blocker.close()
            for process in processes:
                if process.returncode is None:
                    process.kill()
                    await process.wait()
    for process in processes:
        assert outputs[process.pid].startswith(b"done "), errors[process.pid].decode()
        assert b"Traceback" not in errors[process.pid]
    async with await Storage.open(db_url) as storage:
        assert await storage.offline.count("alice") == 2 * WRITES


@sqlite_only  # the flock of a SQLite file
async def test_writers_of_other_processes_wait_for_the_writer_lock(db_url: str) -> None:
    """A process holding the writer lock file keeps every other writer out until it lets go."""
    async with await Storage.open(db_url) as storage:
        lock_path = db_url.removeprefix("sqlite:///") + "-writer.lock"
        assert stat.S_IMODE(os.stat(lock_path).st_mode) == 0o600  # made by the first write
        holder = os.open(lock_path, os.O_RDWR)  # another open file description: another writer
        written = trio.Event()

        async def write() -> None:
            await storage.accounts.create("bob", "secret", iterations=FAST_ITERATIONS)
            written.set()

        try:
            with trio.fail_after(TIMEOUT):
                fcntl.flock(holder, fcntl.LOCK_EX)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(write)
                    # A negative can only be watched for a while: the write must still wait.
                    await trio.sleep(0.5)
                    assert not written.is_set(), "a write went through while another writer held the lock"
                    fcntl.flock(holder, fcntl.LOCK_UN)
                    await written.wait()
        finally:
            os.close(holder)
        assert await storage.accounts.exists("bob")
