"""SQLite on the event loop's own thread: the lean reads and the message path's writes.

A company's load is many quiet users: most chat messages arrive alone, so each pays in full for
whatever its durable write costs. Handing a small write to a worker thread and back costs about
170 µs of CPU (a thread wake-up, the GIL changing hands twice, trio's wake-up socket); the write
itself, a few indexed rows on pages the OS has cached, costs tens of µs. So the lean writes
(`Database.write_sql`) run here, on the loop's thread, whenever that cannot wait:

- the process's writer turn (`flock` of ``<file>-writer.lock``, shared with the node's other
  workers and the CLI) is taken with ``LOCK_NB``, and ``BEGIN IMMEDIATE`` runs on a connection
  whose busy timeout is 0: if another process holds either, nothing ran and the batch goes to the
  worker thread, which waits its turn as before (`InlineWriter.run` returns False);
- WAL mode with ``synchronous = NORMAL`` makes COMMIT an append to the WAL file, with no fsync;
- the checkpoint, which does fsync and copies pages into the database file, is taken off this
  connection (``wal_autocheckpoint = 0``) and run every `CHECKPOINT_EVERY` commits in a thread
  of its own, on a connection of its own (`InlineWriter.maybe_checkpoint`).

Reads (`InlineReader`) are the same idea: a ``query_only`` autocommit connection with a busy
timeout of 0; SQLite reports busy to a WAL reader only in rare moments (recovery after a crash,
a log reset), and then the read goes to a thread, which waits and retries.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import trio

log = logging.getLogger("imactor.storage")

#: Bytes of the database file each inline connection maps (address space, not memory).
MMAP_SIZE = 256 << 20
#: Inline commits between two checkpoints (SQLite's own default is 1,000 WAL pages; a chat
#: message's commit writes about four).
CHECKPOINT_EVERY = 250


def is_busy(exc: BaseException) -> bool:
    """Whether `exc` (SQLAlchemy's wrapper or the sqlite3 module's own) is SQLite's busy/locked."""
    code = getattr(getattr(exc, "orig", exc), "sqlite_errorcode", None)
    return (code & 0xFF) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) if isinstance(code, int) else False


def connect(database: str, *, query_only: bool) -> sqlite3.Connection:
    """An autocommit connection that never sleeps on a lock (busy timeout 0)."""
    # check_same_thread=False: the owner hands the connection to a thread only when it is idle.
    connection = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
    connection.execute("PRAGMA busy_timeout = 0")
    # Pages read through a memory map instead of a pread each: a chat message's write reads
    # the b-tree pages it changes (a quarter of its SQLite time, measured on the archive insert).
    connection.execute(f"PRAGMA mmap_size = {MMAP_SIZE}")
    if query_only:
        connection.execute("PRAGMA query_only = ON")
    else:
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("PRAGMA synchronous = NORMAL")
        connection.execute("PRAGMA foreign_keys = ON")
        connection.execute("PRAGMA wal_autocheckpoint = 0")
    return connection


def run_selects(
    cursor: Any, queries: Sequence[tuple[str, Mapping[str, Any]]]
) -> list[list[tuple[Any, ...]]]:
    """Run `queries` on an autocommit SQLite cursor, several in one snapshot (one BEGIN)."""
    # sqlite3 takes ``:name`` parameters itself.
    several = len(queries) > 1
    if several:
        cursor.execute("BEGIN")
    try:
        results = []
        for sql, params in queries:
            cursor.execute(sql, params)
            results.append(list(cursor.fetchall()))
    finally:
        if several:
            cursor.execute("ROLLBACK")  # read only: nothing to keep
    return results


class InlineWriter:
    """The loop thread's writer connection for one SQLite file, and its checkpoints."""

    __slots__ = (
        "_checkpointing",
        "_commits",
        "_connection",
        "_database",
        "_lock_fd",
        "_lock_path",
        "deferred_batches",
        "inline_batches",
    )  # fmt: skip

    def __init__(self, database: str, lock_path: str | None) -> None:
        self._database = database
        self._lock_path = lock_path
        self._lock_fd: int | None = None
        self._connection: sqlite3.Connection | None = None
        self._commits = 0
        self._checkpointing = False
        #: Batches committed here, and batches that found the file busy and went to a thread.
        self.inline_batches = 0
        self.deferred_batches = 0

    def run(self, body: Callable[[sqlite3.Cursor], bool]) -> bool:
        """Run `body` in one write transaction (BEGIN IMMEDIATE ... COMMIT) on the loop's thread;
        when `body` returns False the transaction is rolled back instead.

        Returns False, having run nothing, when another process holds the writer turn or
        SQLite's write lock: the caller then writes in a thread, which may wait.

        Raises:
            sqlite3.Error: The transaction failed (it was rolled back: nothing of it is durable);
                also whatever `body` raises.
        """
        if not self._take_turn():
            self.deferred_batches += 1
            return False
        try:
            cursor = self._cursor()
            try:
                try:
                    cursor.execute("BEGIN IMMEDIATE")
                except sqlite3.OperationalError as exc:
                    if is_busy(exc):
                        self.deferred_batches += 1
                        return False
                    raise
                try:
                    cursor.execute("COMMIT" if body(cursor) else "ROLLBACK")
                except BaseException:
                    if self._connection is not None and self._connection.in_transaction:
                        cursor.execute("ROLLBACK")
                    raise
            finally:
                cursor.close()
        finally:
            self._end_turn()
        self.inline_batches += 1
        self._commits += 1
        return True

    def maybe_checkpoint(self) -> None:
        """Every `CHECKPOINT_EVERY` commits, copy the WAL into the database in a thread."""
        if self._commits < CHECKPOINT_EVERY or self._checkpointing:
            return
        self._commits = 0
        self._checkpointing = True
        trio.lowlevel.start_thread_soon(self._checkpoint, self._checkpoint_done)

    def _checkpoint(self) -> None:
        # A connection of its own: the inline one may be in use on the loop's thread meanwhile.
        # PASSIVE copies what no reader still needs and never waits for anyone.
        connection = sqlite3.connect(self._database, isolation_level=None)
        try:
            connection.execute("PRAGMA busy_timeout = 0")
            connection.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            connection.close()

    def _checkpoint_done(self, result: Any) -> None:
        # Runs in the checkpoint's thread; a plain attribute store is atomic under the GIL.
        self._checkpointing = False
        error = getattr(result, "error", None)
        if error is not None and not is_busy(error):
            log.warning("WAL checkpoint failed: %r", error)

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _cursor(self) -> sqlite3.Cursor:
        if self._connection is None:
            self._connection = connect(self._database, query_only=False)
        return self._connection.cursor()

    def _take_turn(self) -> bool:
        if self._lock_path is None:
            return True
        if self._lock_fd is None:
            self._lock_fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _end_turn(self) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
