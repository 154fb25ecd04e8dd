"""Engines, SQLite pragmas and the thread offload of every database call.

No database call runs on the Trio loop: `Database.read` and `Database.write` run a plain function
of a `Session` in a worker thread.

- **Reads** run concurrently, up to `READERS` at a time, each in its own short transaction. Reader
  connections are ``query_only``, so a read function cannot write by mistake.
  `Database.select` is the lean form for the hottest lookups (a login's credentials, its offline
  messages): one SELECT, no ORM session and, on SQLite, straight on the driver's connection in
  autocommit, where a single statement is its own consistent snapshot. A measured ORM read cost
  about 460 µs of CPU, this one about 120 µs, most of it the hop to the thread.
- **Writes** go through one writer connection, one at a time, because SQLite has a single writer
  anyway and a second one would only wait on the lock. Writes are *group-committed*: the tasks
  that ask to write while a transaction is running are batched into the next transaction, each
  under its own SAVEPOINT, so one failing write does not undo the others and a burst of offline
  messages costs one commit rather than one each (docs/design.md "Storage"). A batch holds
  writes of one kind (`write` or `write_sql`, below), the oldest queued ones.
  `Database.write_sql` is the lean form for the writes on the message path (archive rows,
  offline messages, last activity): a function of `Sql` (plain statements with ``:name``
  parameters) instead of a `Session`. A batch made only of those runs, on SQLite, straight on the
  driver's connection (BEGIN IMMEDIATE, a SAVEPOINT per write when there are several, COMMIT;
  a write alone that fails rolls the transaction back) without SQLAlchemy's
  session and statement machinery, which a profile of chat traffic showed to be about half of the
  writer thread's time.

SQLite runs in WAL mode (readers never block the writer), ``synchronous=NORMAL`` (durable at
checkpoints; a power cut may lose the last commits but never corrupts), with a busy timeout for the
other processes of a node, and foreign keys on so that account deletion cascades.

**Several processes** (the workers of a node, the ``imactor user`` commands) share one SQLite file.
SQLite lets one of them write at a time; "database is locked" must never reach a caller, since it
would bounce or lose a message. So:

- each process has one writer connection, and every write transaction starts with
  ``BEGIN IMMEDIATE``: it takes the write lock before reading anything, so it waits in SQLite's
  busy handler (`BUSY_TIMEOUT_MS`) rather than failing when it upgrades a read to a write (a
  deferred transaction cannot wait there: its snapshot may be stale);
- the writers of the processes sharing a file queue on an advisory lock (`flock` on
  ``<file>-writer.lock``) before BEGIN: SQLite's busy handler polls with growing sleeps (up to
  100 ms) while the kernel wakes a `flock` waiter the moment the lock is released, so two
  workers taking turns hand the file over in microseconds instead of tens of milliseconds; the
  lock dies with its process, so a killed worker never leaves it taken;
- a BEGIN that still finds the lock taken after the busy timeout (a heavy burst from the other
  processes) is retried, with a warning, for up to `LOCK_PATIENCE` seconds: nothing has run
  yet, so a retry is safe. Group commit keeps each lock holding short (one transaction per
  batch, at most `MAX_BATCH` writes) and makes such waits rare;
- in WAL mode COMMIT does not wait for readers, and readers need no lock, except in rare
  moments (WAL recovery after a crash, a checkpoint resetting the log) when SQLite reports
  busy to a reader: a read function is retried the same way (it is read-only, so re-running it
  is safe);
- the node supervisor opens the database once before any worker starts, so the schema is
  created or upgraded by one process, and the switch to WAL (which needs an exclusive lock)
  happens before anyone else is connected.

**PostgreSQL** (``postgresql+psycopg://``; docs/postgresql.md) has none of the above: no file,
no flock, no BEGIN IMMEDIATE or PRAGMA. Every call runs in a thread (each is a network round
trip); the group commit is the same (one transaction per batch, a SAVEPOINT per write), the
lean calls run on psycopg's own connections (`imactor.storage.postgres`), and the ORM calls on
SQLAlchemy's pools, pinged before use so that a restarted server costs no failed call. The
writers of several nodes are ordered by PostgreSQL's row locks: a batch that loses a deadlock is
rolled back and run again (`TRANSIENT_RETRIES`); a lost connection fails its batch with
`StorageError`, which `_WriteFaults` logs like a full disk.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import math
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar, cast

import psycopg
import trio
from sqlalchemy import CursorResult, Engine, create_engine, event, make_url, text
from sqlalchemy.engine.interfaces import DBAPICursor
from sqlalchemy.exc import ArgumentError, OperationalError, SQLAlchemyError
from sqlalchemy.pool import PoolProxiedConnection
from sqlmodel import Session

from imactor.histogram import LatencyHistogram
from imactor.storage import postgres, sqlite_inline
from imactor.storage.errors import StorageError, StorageFull
from imactor.storage.files import private_directory, private_file
from imactor.storage.postgres import LeanConnections
from imactor.storage.schema import SchemaChange, ensure_schema
from imactor.storage.sqlite_inline import InlineWriter, is_busy, run_selects

T = TypeVar("T")

#: Concurrent read transactions (threads and pooled connections).
READERS = 4
#: Most writes committed in one transaction; bounds the time a batch holds the write lock.
MAX_BATCH = 256
#: How long a connection waits for another process's write lock before failing, in milliseconds.
BUSY_TIMEOUT_MS = 10_000
#: Seconds a transaction keeps retrying after busy timeouts before the error reaches the caller.
LOCK_PATIENCE = 120.0
#: Seconds between two log lines about writes that keep failing (a full disk fails every write:
#: one line each would flood the log that the administrator needs to read).
FAULT_LOG_INTERVAL = 60.0

log = logging.getLogger("imactor.storage")


@dataclass(frozen=True, slots=True)
class StorageStatistics:
    """A snapshot of the database offload, for the status socket."""

    pending_writes: int  #: writes queued for the next transaction
    transactions: int  #: write transactions committed (or failed) so far
    writes: int  #: writes run in those transactions
    largest_batch: int  #: most writes group-committed in one transaction
    reads_in_flight: int  #: read transactions running in threads now
    #: SQLite: lean batches committed on the loop's thread, and those that found the file busy
    #: (another process writing) and went to a thread (`imactor.storage.sqlite_inline`).
    inline_batches: int = 0
    deferred_batches: int = 0
    #: PostgreSQL: batches rolled back and run again after a deadlock with another node's writes.
    retried_batches: int = 0


class Sql:
    """Plain SQL with ``:name`` parameters inside a write transaction (`Database.write_sql`)."""

    __slots__ = ("_convert", "_cursor", "_session")

    def __init__(
        self,
        *,
        cursor: DBAPICursor | None = None,
        session: Session | None = None,
        convert: Callable[[str], str] | None = None,
    ) -> None:
        self._cursor = cursor
        self._session = session
        #: The driver's own parameter style, when it does not take ``:name`` (psycopg).
        self._convert = convert or _same

    def rows(self, sql: str, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """Run a statement and return its rows."""
        if self._cursor is not None:
            self._cursor.execute(self._convert(sql), params)
            return list(self._cursor.fetchall())
        assert self._session is not None
        return [tuple(row) for row in self._session.execute(text(sql), params)]

    def run(self, sql: str, params: Mapping[str, Any]) -> int:
        """Run a statement and return how many rows it changed."""
        if self._cursor is not None:
            self._cursor.execute(self._convert(sql), params)
            return self._cursor.rowcount
        assert self._session is not None
        return cast("CursorResult[Any]", self._session.execute(text(sql), params)).rowcount

    def run_many(self, sql: str, rows: Sequence[Mapping[str, Any]]) -> None:
        """Run a statement once per parameter set (one executemany)."""
        if self._cursor is not None:
            self._cursor.executemany(self._convert(sql), rows)
            return
        assert self._session is not None
        self._session.execute(text(sql), list(rows))


def _same(sql: str) -> str:
    return sql


class _Job(Generic[T]):
    """One queued write and, once the writer ran it, its outcome."""

    __slots__ = ("error", "fn", "lean", "ran", "taken", "value")

    # A function of a `Session`, or of `Sql` when `lean`.
    def __init__(self, fn: Callable[[Any], T], *, lean: bool = False) -> None:
        self.fn = fn
        self.lean = lean  #: `fn` takes `Sql`, not a `Session`
        self.taken = False  # handed to a writer batch: it will run even if its caller is cancelled
        self.ran = False
        self.value: T | None = None
        self.error: BaseException | None = None

    def unwrap(self) -> T:
        if self.error is not None:
            raise self.error
        assert self.ran
        return self.value  # type: ignore[return-value]  # T may itself include None


class Database:
    """The two engines of one database URL and the offload of calls to threads.

    Create it with `Database.open`. Store code passes plain functions of a `Session` to
    `read` / `write`; those functions must return plain values, never ORM rows.
    """

    def __init__(
        self, url: str, write_engine: Engine, read_engine: Engine, writer_lock: Path | None = None,
        *, partitions: int = 0,
    ) -> None:  # fmt: skip
        self.url = url
        #: PostgreSQL: hash partitions of the per-user tables when the schema is created here.
        self.partitions = partitions
        #: Taken around every write transaction; None for a server database (no SQLite file).
        self._writer_lock_path = writer_lock
        self._writer_lock_fd: int | None = None
        self._write_engine = write_engine
        self._read_engine = read_engine
        self._pending: list[_Job[Any]] = []
        self._write_lock = trio.Lock()
        self._write_limiter = trio.CapacityLimiter(1)
        self._read_limiter = trio.CapacityLimiter(READERS)
        self._closed = False
        #: SQLite: the connection `select_many` uses on the event loop's own thread (see there).
        self._inline_reader: sqlite3.Connection | None = None
        #: SQLite: the writer of lean batches on the event loop's own thread (`_queue`).
        self._inline_writer: InlineWriter | None = None
        if write_engine.dialect.name == "sqlite":
            database = make_url(url).database
            assert database is not None  # _make_engines refused a URL without a file
            lock = None if writer_lock is None else str(writer_lock)
            self._inline_writer = InlineWriter(database, lock)
        #: PostgreSQL: the lean path's own psycopg connections (`imactor.storage.postgres`).
        self._lean_pg: LeanConnections | None = None
        if write_engine.dialect.name == "postgresql":
            _, connect_kwargs = write_engine.dialect.create_connect_args(write_engine.url)
            self._lean_pg = LeanConnections(connect_kwargs)
        self._transactions = 0
        self._writes = 0
        self._largest_batch = 0
        self._retried_batches = 0
        #: Seconds each batch's commit took (its transaction, inline or in a thread).
        self.commit_latency = LatencyHistogram()
        #: What opening the database did to its schema (`imactor db migrate` reports it).
        self.schema_change: SchemaChange | None = None
        self._faults = _WriteFaults(
            make_url(url).render_as_string(hide_password=True), server=self._lean_pg is not None
        )

    def statistics(self) -> StorageStatistics:
        """Counters of the write batching and the readers (Trio's ``statistics()`` convention)."""
        return StorageStatistics(
            pending_writes=len(self._pending),
            transactions=self._transactions,
            writes=self._writes,
            largest_batch=self._largest_batch,
            reads_in_flight=self._read_limiter.borrowed_tokens,
            inline_batches=0 if self._inline_writer is None else self._inline_writer.inline_batches,
            deferred_batches=0 if self._inline_writer is None else self._inline_writer.deferred_batches,
            retried_batches=self._retried_batches,
        )

    @property
    def dialect(self) -> str:
        """The database's SQL dialect: ``sqlite`` or ``postgresql``."""
        return self._write_engine.dialect.name

    @property
    def writes_failing(self) -> bool:
        """Whether the last write batch failed because of the database (already logged)."""
        return self._faults.failing

    @classmethod
    async def open(cls, url: str, *, partitions: int = 0) -> Database:
        """Connect to `url`, creating the SQLite file's directory and the schema as needed.

        Args:
            partitions: PostgreSQL: hash partitions of the per-user tables, if the schema is
                created now (`imactor.storage.schema`); 0: plain tables. Ignored on SQLite.

        Raises:
            StorageError: Bad URL, unreachable database, or a schema newer than this code.
        """
        write_engine, read_engine = await trio.to_thread.run_sync(_make_engines, url)
        db = cls(url, write_engine, read_engine, _writer_lock_path(url), partitions=partitions)
        try:
            await trio.to_thread.run_sync(db._create_schema, limiter=db._write_limiter)
        except StorageError as exc:
            with trio.CancelScope(shield=True):
                await db.aclose()
            # Name the database (without its password) so the operator knows which one.
            raise StorageError(f"{make_url(url).render_as_string(hide_password=True)}: {exc}") from exc
        except BaseException:
            with trio.CancelScope(shield=True):
                await db.aclose()
            raise
        return db

    def _create_schema(self) -> None:
        try:
            # Under the write lock, like any write (and on PostgreSQL an advisory lock, which
            # other nodes take too): a second process opening the database at the same moment
            # waits for the first to finish the schema, then finds it done.
            with self._locked_session() as session:
                self.schema_change = ensure_schema(session.connection(), partitions=self.partitions)
                session.commit()
        except SQLAlchemyError as exc:
            raise storage_error("cannot initialise the database schema", exc) from exc

    async def aclose(self) -> None:
        """Wait for queued writes, then close every connection. Idempotent."""
        if self._closed:
            return
        async with self._write_lock:
            self._closed = True
        await trio.to_thread.run_sync(self._dispose)

    def _dispose(self) -> None:
        if self._inline_reader is not None:
            self._inline_reader.close()
            self._inline_reader = None
        if self._inline_writer is not None:
            self._inline_writer.close()
        if self._lean_pg is not None:
            self._lean_pg.close()
        self._write_engine.dispose()
        self._read_engine.dispose()
        if self._writer_lock_fd is not None:
            os.close(self._writer_lock_fd)
            self._writer_lock_fd = None

    async def read(self, fn: Callable[[Session], T]) -> T:
        """Run `fn` in a read-only transaction in a worker thread and return its result.

        Raises:
            StorageError: The database failed; whatever `fn` raises otherwise.
        """
        self._check_open()
        try:
            return await trio.to_thread.run_sync(self._run_read, fn, limiter=self._read_limiter)
        except StorageError as exc:
            self._faults.observe_read(exc)
            raise

    def _run_read(self, fn: Callable[[Session], T]) -> T:
        deadline = time.monotonic() + LOCK_PATIENCE
        while True:
            try:
                with Session(self._read_engine) as session:
                    return fn(session)
            except OperationalError as exc:
                if not _should_retry(exc, deadline):
                    raise storage_error("database read failed", exc) from exc
            except SQLAlchemyError as exc:
                raise storage_error("database read failed", exc) from exc

    async def select(self, sql: str, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """Run one SELECT with ``:name`` parameters in a worker thread and return its rows.

        Raises:
            StorageError: The database failed.
        """
        return (await self.select_many([(sql, params)]))[0]

    async def select_many(
        self, queries: Sequence[tuple[str, Mapping[str, Any]]]
    ) -> list[list[tuple[Any, ...]]]:
        """Run several SELECTs in one read transaction (one snapshot).

        On SQLite they run right here, on the event loop's thread: these are small indexed reads
        of pages the OS has cached, a few µs of SQLite plus the building of the rows, which holds
        the GIL wherever it runs; the trip to a worker thread and back cost ten times that. The
        inline connection never waits for a lock (WAL readers do not wait for writers; in the
        rare case SQLite says busy, the read goes to a thread, which waits and retries). Other
        databases are always read in a thread.

        Raises:
            StorageError: The database failed.
        """
        self._check_open()
        if self._read_engine.dialect.name == "sqlite":
            try:
                return run_selects(self._inline_connection().cursor(), queries)
            except sqlite3.OperationalError as exc:
                if not is_busy(exc):
                    raise StorageError(f"database read failed: {exc}") from exc
            except sqlite3.Error as exc:
                raise StorageError(f"database read failed: {exc}") from exc
        try:
            return await trio.to_thread.run_sync(self._run_selects, queries, limiter=self._read_limiter)
        except StorageError as exc:
            self._faults.observe_read(exc)
            raise

    def _inline_connection(self) -> sqlite3.Connection:
        connection = self._inline_reader
        if connection is None:
            database = make_url(self.url).database
            assert database is not None  # _make_engines refused a URL without a file
            # Autocommit: each statement is its own snapshot unless run_selects opens a
            # transaction. Busy timeout 0: never sleep on this thread.
            connection = self._inline_reader = sqlite_inline.connect(database, query_only=True)
        return connection

    def _run_selects(self, queries: Sequence[tuple[str, Mapping[str, Any]]]) -> list[list[tuple[Any, ...]]]:
        if self._lean_pg is not None:
            try:
                return self._lean_pg.select(queries)
            except psycopg.Error as exc:
                raise storage_error("database read failed", exc) from exc
        deadline = time.monotonic() + LOCK_PATIENCE
        while True:
            try:
                if self._read_engine.dialect.name != "sqlite":
                    with self._read_engine.connect() as conn:
                        return [
                            [tuple(row) for row in conn.execute(text(sql), params)] for sql, params in queries
                        ]
                with _driver_cursor(self._read_engine) as (_, cursor):
                    return run_selects(cursor, queries)
            except (OperationalError, sqlite3.OperationalError) as exc:
                if not _should_retry(exc, deadline):
                    raise storage_error("database read failed", exc) from exc
            except (SQLAlchemyError, sqlite3.Error) as exc:
                raise storage_error("database read failed", exc) from exc

    async def write(self, fn: Callable[[Session], T]) -> T:
        """Run `fn` in the writer's next transaction and return its result once committed.

        `fn` runs under a SAVEPOINT: if it raises, only its own changes are rolled back and the
        exception is re-raised here. If the caller is cancelled after the write was handed to the
        writer, the write still commits.

        Raises:
            StorageError: The database failed or the commit did not happen.
        """
        return await self._queue(_Job(fn))

    async def write_sql(self, fn: Callable[[Sql], T]) -> T:
        """Like `write`, for a function of plain statements (`Sql`): the lean path of hot writes.

        Raises:
            StorageError: The database failed or the commit did not happen.
        """
        return await self._queue(_Job(fn, lean=True))

    async def _queue(self, job: _Job[T]) -> T:
        self._check_open()
        self._pending.append(job)
        try:
            # The lock holder drains the queue; tasks that queued meanwhile usually find their
            # job already done when they get the lock (leader/follower group commit). Taking a
            # free lock is a checkpoint: the tasks that run in the same scheduler round queue
            # their writes first, and join the leader's batch.
            async with self._write_lock:
                if self._closed and not job.taken:
                    raise StorageError("storage is closed")
                while not job.taken:
                    batch = self._next_batch()
                    for queued in batch:
                        queued.taken = True
                    self._transactions += 1
                    self._writes += len(batch)
                    self._largest_batch = max(self._largest_batch, len(batch))
                    started = time.perf_counter()
                    if not self._run_inline(batch):
                        await trio.to_thread.run_sync(self._run_batch, batch, limiter=self._write_limiter)
                    self.commit_latency.observe(time.perf_counter() - started)
                    self._faults.observe(batch)
        except BaseException:
            if not job.taken:
                self._pending.remove(job)
            raise
        return job.unwrap()

    def _next_batch(self) -> list[_Job[Any]]:
        """The oldest queued jobs of one kind, lean or not (at most `MAX_BATCH`): a batch with one
        `Session` job runs every job of it through the ORM in a thread, and a lean write caught
        in it (a chat message's archive rows) would cost several times its own path."""
        lean = self._pending[0].lean
        size = 1
        while size < min(MAX_BATCH, len(self._pending)) and self._pending[size].lean == lean:
            size += 1
        batch = self._pending[:size]
        del self._pending[:size]
        return batch

    def _run_inline(self, batch: list[_Job[Any]]) -> bool:
        """A batch of lean writes on SQLite, on the loop's thread if no other process is writing
        (`imactor.storage.sqlite_inline`); False: not run, write it in a thread."""
        writer = self._inline_writer
        if writer is None or not all(job.lean for job in batch):
            return False
        try:
            if not writer.run(lambda cursor: _run_lean_jobs(batch, cursor)):
                return False
        except (sqlite3.Error, OSError) as exc:  # OSError: the lock file on a read-only disk
            _fail_batch(batch, exc)
        writer.maybe_checkpoint()
        return True

    def _run_batch(self, batch: list[_Job[Any]]) -> None:
        try:
            if self._lean_pg is not None and all(job.lean for job in batch):
                self._run_lean_batch_pg(self._lean_pg, batch)
                return
            if self._write_engine.dialect.name == "sqlite" and all(job.lean for job in batch):
                self._run_lean_batch(batch)
                return
            for attempt in range(TRANSIENT_RETRIES + 1):
                with self._locked_session() as session:
                    for job in batch:
                        _run_nested(session, job)
                    if attempt < TRANSIENT_RETRIES and _must_retry(batch):
                        self._retried_batches += 1
                        session.rollback()
                        _back_off(attempt)
                        continue
                    session.commit()
                    return
        except Exception as exc:
            _fail_batch(batch, exc)

    def _run_lean_batch_pg(self, lean: LeanConnections, batch: list[_Job[Any]]) -> None:
        """A batch of lean writes on PostgreSQL's own connection (`imactor.storage.postgres`)."""
        for attempt in range(TRANSIENT_RETRIES + 1):
            again = False

            def body(cursor: Any, may_retry: bool = attempt < TRANSIENT_RETRIES) -> bool:
                nonlocal again
                keep = _run_lean_jobs_pg(batch, cursor)
                again = may_retry and _must_retry(batch)
                return keep and not again  # ROLLBACK before running it again

            lean.write(body)
            if not again:
                return
            self._retried_batches += 1
            _back_off(attempt)

    def _run_lean_batch(self, batch: list[_Job[Any]]) -> None:
        """`_run_batch` on SQLite's own connection: same transaction shape, no SQLAlchemy."""
        with self._writer_turn(), _driver_cursor(self._write_engine) as (connection, cursor):
            _begin_immediate(cursor)
            try:
                cursor.execute("COMMIT" if _run_lean_jobs(batch, cursor) else "ROLLBACK")
            except BaseException:
                if connection.driver_connection.in_transaction:  # type: ignore[union-attr]
                    cursor.execute("ROLLBACK")
                raise

    @contextmanager
    def _locked_session(self) -> Iterator[Session]:
        """A writer session whose transaction has begun, so it holds SQLite's write lock.

        Raises:
            OperationalError: The lock stayed taken for `LOCK_PATIENCE` seconds, or another
                failure.
        """
        with self._writer_turn():
            deadline = time.monotonic() + LOCK_PATIENCE
            while True:
                session = Session(self._write_engine)
                try:
                    session.connection()  # runs BEGIN IMMEDIATE (see _tune_sqlite)
                except OperationalError as exc:
                    session.close()
                    if _should_retry(exc, deadline):
                        continue
                    raise
                except BaseException:
                    session.close()
                    raise
                with session:
                    yield session
                return

    @contextmanager
    def _writer_turn(self) -> Iterator[None]:
        """This process's turn to write among those sharing the SQLite file (module docstring)."""
        if self._writer_lock_path is None:
            yield
            return
        if self._writer_lock_fd is None:
            self._writer_lock_fd = os.open(self._writer_lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._writer_lock_fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._writer_lock_fd, fcntl.LOCK_UN)

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError("storage is closed")


def _should_retry(exc: Exception, deadline: float) -> bool:
    """Whether `exc` is SQLite's "database is locked" (busy) and there is time left to retry.

    `exc` is SQLAlchemy's wrapper or, from `Database.select`, the sqlite3 module's own error.
    """
    if not is_busy(exc) or time.monotonic() >= deadline:
        return False
    log.warning("database busy for %d ms (other processes writing); retrying", BUSY_TIMEOUT_MS)
    return True


def _run_lean_jobs(batch: Sequence[_Job[Any]], cursor: Any) -> bool:
    """The jobs of a lean batch inside an open SQLite transaction (`_run_jobs_in_transaction`)."""
    # SQLite rolls the whole transaction back itself on a full disk or an I/O error: nothing
    # of the batch stands, and there is no savepoint left to roll back to.
    return _run_jobs_in_transaction(batch, cursor, Sql(cursor=cursor), sqlite3.Error,
                                    lambda: not cursor.connection.in_transaction)  # fmt: skip


def _run_jobs_in_transaction(
    batch: Sequence[_Job[Any]], cursor: Any, sql: Sql, driver_error: type[Exception],
    transaction_lost: Callable[[], bool],
) -> bool:  # fmt: skip
    """The jobs of a lean batch inside an open transaction on the driver's `cursor`, each under a
    SAVEPOINT: a failing job is rolled back alone and keeps its error; the others go on. True:
    commit. A `driver_error` after which `transaction_lost()` re-raises: nothing of the batch
    stands.

    A batch of one job (a quiet user's message arrives alone) needs no SAVEPOINT: if it fails,
    the caller rolls the whole transaction back (False), which saves two statements (on
    PostgreSQL, two round trips to the server)."""
    alone = len(batch) == 1
    for job in batch:
        job.ran, job.error = False, None  # a batch run again after a deadlock starts afresh
        if not alone:
            cursor.execute("SAVEPOINT job")
        try:
            job.value = job.fn(sql)
            job.ran = True
        except driver_error as exc:
            job.error = storage_error("database write failed", exc)
            if transaction_lost():
                raise
        except Exception as exc:
            job.error = exc
        if not alone:
            if job.error is not None:
                cursor.execute("ROLLBACK TO job")
            cursor.execute("RELEASE job")
    return not alone or batch[0].error is None


def _run_nested(session: Session, job: _Job[Any]) -> None:
    """One job of an ORM batch under its own SAVEPOINT: if it fails, only its own changes are
    rolled back and it keeps its error."""
    job.ran, job.error = False, None
    try:
        with session.begin_nested():
            job.value = job.fn(Sql(session=session) if job.lean else session)
        job.ran = True
    except SQLAlchemyError as exc:
        job.error = storage_error("database write failed", exc)
    except Exception as exc:
        job.error = exc
    finally:
        # Each job must see the database, not ORM rows cached by an earlier job of the batch
        # (a cascade in SQL does not update the identity map).
        session.expunge_all()


#: SQLSTATEs of a transaction PostgreSQL chose to fail so that others go on, which may succeed
#: when run again: a deadlock (writers of two nodes locking the same accounts in opposite
#: orders) and a serialization failure.
_PG_TRANSIENT = frozenset({"40P01", "40001"})
#: Times a batch is run again from its start after such a failure.
TRANSIENT_RETRIES = 3


def _back_off(attempt: int) -> None:
    """Before a batch runs again after a deadlock (in the writer's thread): 10, 20, 40 ms, so that
    the other side, whose waiting request our rollback granted, gets the rows first."""
    time.sleep(0.01 * 2**attempt)


def _is_transient(exc: BaseException) -> bool:
    return getattr(exc, "sqlstate", None) in _PG_TRANSIENT


def _must_retry(batch: Sequence[_Job[Any]]) -> bool:
    """Whether a job of the batch failed in a deadlock: then the whole batch is rolled back and
    run again. Rolling back only that job's savepoint would not do: the locks the other side
    waits for may be held by an earlier job of the batch, and the deadlock would recur."""
    if not any(job.error is not None and _caused_by(job.error, _is_transient) for job in batch):
        return False
    log.info("a write batch met a deadlock with another node's writes: rolled back, run again")
    for job in batch:
        job.ran, job.error, job.value = False, None, None
    return True


def _run_lean_jobs_pg(batch: Sequence[_Job[Any]], cursor: Any) -> bool:
    """The jobs of a lean batch inside an open PostgreSQL transaction (`_run_jobs_in_transaction`)."""
    return _run_jobs_in_transaction(batch, cursor, Sql(cursor=cursor, convert=postgres.pyformat),
                                    psycopg.Error, lambda: bool(cursor.connection.broken))  # fmt: skip


def _fail_batch(batch: Sequence[_Job[Any]], exc: Exception) -> None:
    """Nothing of this batch is durable: every job fails, including those that "succeeded"."""
    for job in batch:
        job.error = exc if isinstance(exc, StorageError) else storage_error("database commit failed", exc)


def storage_error(what: str, exc: BaseException) -> StorageError:
    """`StorageError` for a database failure, `StorageFull` when the disk (or quota) is full."""
    detail = str(exc)
    if _caused_by(exc, postgres.connection_lost):
        # libpq's message spans lines ("Is the server running...?"): the first one says it.
        detail = "the PostgreSQL server is unreachable or restarting: " + detail.strip().splitlines()[0]
    error = (StorageFull if _caused_by(exc, _is_full) else StorageError)(f"{what}: {detail}")
    error.__cause__ = exc
    return error


def _caused_by(exc: BaseException | None, test: Callable[[BaseException], bool]) -> bool:
    """Whether `exc` or an exception in its chain (causes, contexts, SQLAlchemy's ``orig``) passes `test`."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        orig = getattr(exc, "orig", None)
        if test(exc) or (isinstance(orig, BaseException) and test(orig)):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _is_full(exc: BaseException) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF == sqlite3.SQLITE_FULL
    if isinstance(exc, psycopg.Error):
        return exc.sqlstate == _PG_DISK_FULL
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


#: PostgreSQL's SQLSTATE for a full disk (class 53, insufficient resources).
_PG_DISK_FULL = "53100"
#: SQLSTATE of a write sent to a read-only server: a standby, e.g. just after a failover.
_PG_READ_ONLY = "25006"


def _is_fault(exc: BaseException) -> bool:
    """A failure of the database itself (disk full, read-only file, I/O error, lock timeout;
    on PostgreSQL also a lost connection or a read-only standby), as opposed to a write it
    refused (a constraint) or an error of the store's own code."""
    if isinstance(exc, psycopg.Error) and exc.sqlstate == _PG_READ_ONLY:
        return True
    return isinstance(
        exc, sqlite3.OperationalError | OperationalError | OSError | psycopg.OperationalError
    ) or _is_full(exc)


class _WriteFaults:
    """The log of writes that fail because of the database (a full disk, a read-only file):
    one error line when it starts, at most one every `FAULT_LOG_INTERVAL` seconds while it lasts
    (with how many writes were refused), and one line when a transaction commits again. The
    callers turn each refused write into an error for whoever asked for it."""

    __slots__ = ("_last_line", "_name", "_refused", "_server", "_since", "_total")

    def __init__(self, name: str, *, server: bool = False) -> None:
        self._name = name
        self._server = server  #: a database server (PostgreSQL), not a file
        self._since: float | None = None  #: when the writes began to fail; None: they work
        self._last_line = -math.inf
        self._refused = 0  #: since the last line
        self._total = 0  #: since `_since`

    @property
    def failing(self) -> bool:
        return self._since is not None

    def observe_read(self, error: StorageError) -> None:
        """Account for a read that failed: logged like failing writes (a database server that is
        down fails the reads of logins and deliveries first), rate limited with them. The next
        write that succeeds ends the episode."""
        if not _caused_by(error, _is_fault):
            return
        now = time.monotonic()
        if self._since is None:
            self._since = now
            self._total = self._refused = 0
            self._last_line = -math.inf
        if now - self._last_line < FAULT_LOG_INTERVAL:
            return
        log.error("database %s: reads fail: %s; %s", self._name, error,
                  self._hint(full=False).replace("writes resume", "reads and writes resume"))  # fmt: skip
        self._last_line = now

    def _hint(self, *, full: bool) -> str:
        if full:
            return "free disk space: writes resume by themselves"
        if self._server:
            return "writes resume by themselves once the database server answers again"
        return "writes resume by themselves once the database file is writable again"

    def observe(self, batch: Sequence[_Job[Any]]) -> None:
        """Account for a batch the writer has run (committed or failed)."""
        faults = [job.error for job in batch if job.error is not None and _caused_by(job.error, _is_fault)]
        now = time.monotonic()
        if not faults:
            if self._since is not None and any(job.ran for job in batch):
                log.warning("database %s: writes succeed again after %.0f s; %d writes were refused "
                            "meanwhile", self._name, now - self._since, self._total)  # fmt: skip
                self._since = None
            return
        self._refused += len(faults)
        self._total += len(faults)
        if self._since is None:
            self._since = now
            self._total = self._refused = len(faults)
            self._last_line = -math.inf
        if now - self._last_line < FAULT_LOG_INTERVAL:
            return
        full = any(isinstance(error, StorageFull) for error in faults)
        log.error("database %s: %d writes refused%s: %s; %s", self._name, self._refused,
                  "" if self._refused == self._total else f" ({self._total} since the first)",
                  faults[-1], self._hint(full=full))  # fmt: skip
        self._refused = 0
        self._last_line = now


@contextmanager
def _driver_cursor(engine: Engine) -> Iterator[tuple[PoolProxiedConnection, DBAPICursor]]:
    """A pooled connection's own driver cursor (no SQLAlchemy session), given back afterwards."""
    connection = engine.raw_connection()
    try:
        cursor = connection.cursor()
        try:
            yield connection, cursor
        finally:
            cursor.close()
    finally:
        connection.close()  # back to the pool


def json_list(value: object) -> tuple[str, ...]:
    """A JSON list column as plain SQL reads it: text on SQLite, already decoded on PostgreSQL."""
    return tuple(json.loads(value) if isinstance(value, (str, bytes)) else value or ())  # type: ignore[arg-type]


def _begin_immediate(cursor: DBAPICursor) -> None:
    """BEGIN IMMEDIATE on a driver cursor, retried like `Database._locked_session` when busy."""
    deadline = time.monotonic() + LOCK_PATIENCE
    while True:
        try:
            cursor.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            if not _should_retry(exc, deadline):
                raise


def url_without_password(url: str) -> str:
    """The database URL as messages show it: with its password hidden."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL; None for other databases (or a bad URL)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    return Path(parsed.database)


def _writer_lock_path(url: str) -> Path | None:
    """``<file>-writer.lock`` beside a SQLite database file; None for other databases."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    return Path(f"{parsed.database}-writer.lock")


def _make_engines(url: str) -> tuple[Engine, Engine]:
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise StorageError(f"invalid database URL {url!r}: {exc}") from exc
    if parsed.get_backend_name() in ("postgresql", "postgres"):
        return _postgresql_engines(url)
    if parsed.get_backend_name() != "sqlite":
        raise StorageError(
            f"{parsed.render_as_string(hide_password=True)}: unsupported database; use SQLite "
            "(sqlite:////path/file) or PostgreSQL (postgresql+psycopg://user:password@host/database)"
        )
    database = parsed.database
    if not database or database == ":memory:" or parsed.query.get("mode") == "memory":
        raise StorageError(f"{url}: an in-memory SQLite database is not supported; use a file")
    # Private from the first instant (`imactor.storage.files`): SQLite would create the file 0644
    # and its -wal and -shm files after it with the same mode.
    private_directory(Path(database).parent)
    private_file(Path(database))
    write_engine = create_engine(url, pool_size=1, max_overflow=0)
    read_engine = create_engine(url, pool_size=READERS, max_overflow=0)
    _tune_sqlite(write_engine, begin="BEGIN IMMEDIATE", query_only=False)
    _tune_sqlite(read_engine, begin="BEGIN", query_only=True)
    return write_engine, read_engine


def postgresql_url(url: str) -> str:
    """A PostgreSQL URL with imactor's driver: ``postgresql://`` and ``postgres://`` mean psycopg 3
    (SQLAlchemy would pick psycopg2, which imactor does not install).

    Raises:
        StorageError: Another PostgreSQL driver is named.
    """
    parsed = make_url(
        url.replace("postgres://", "postgresql://", 1) if url.startswith("postgres://") else url
    )
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.drivername != "postgresql+psycopg":
        raise StorageError(
            f"{parsed.drivername}: imactor talks to PostgreSQL with psycopg 3: use postgresql+psycopg://"
        )
    return parsed.render_as_string(hide_password=False)


def _postgresql_engines(url: str) -> tuple[Engine, Engine]:
    """The ORM's writer (one connection) and reader pool on PostgreSQL.

    Both ping a pooled connection before use: after a server restart or failover the old
    connections are dead, and the ping replaces them instead of failing the call (the lean path
    has its own connections and retries: `imactor.storage.postgres`).
    """
    url = postgresql_url(url)
    connect_args = {"connect_timeout": postgres.CONNECT_TIMEOUT}
    if "connect_timeout" in make_url(url).query:
        connect_args = {}
    write_engine = create_engine(
        url, pool_size=1, max_overflow=0, pool_pre_ping=True, connect_args=connect_args
    )
    read_engine = create_engine(
        url, pool_size=READERS, max_overflow=0, pool_pre_ping=True, connect_args=connect_args
    )

    @event.listens_for(read_engine, "connect")
    def _read_only(dbapi_connection: Any, _record: Any) -> None:
        # A read function cannot write by mistake (SQLite's query_only).
        autocommit = dbapi_connection.autocommit
        dbapi_connection.autocommit = True
        dbapi_connection.execute("SET default_transaction_read_only = on")
        dbapi_connection.autocommit = autocommit

    return write_engine, read_engine


def _tune_sqlite(engine: Engine, *, begin: str, query_only: bool) -> None:
    """Install the pragmas and take over BEGIN from the sqlite3 module.

    The sqlite3 module's legacy transaction handling skips BEGIN before SELECT and SAVEPOINT,
    which breaks savepoints; SQLAlchemy documents emitting BEGIN ourselves instead. The writer
    uses BEGIN IMMEDIATE so it takes the write lock up front (waiting up to the busy timeout)
    instead of failing with "database is locked" when a read transaction upgrades to a write.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.execute("PRAGMA foreign_keys = ON")
            if query_only:
                cursor.execute("PRAGMA query_only = ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql(begin)
