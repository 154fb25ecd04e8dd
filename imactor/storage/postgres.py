"""PostgreSQL: the lean path on psycopg's own connections, and what only PostgreSQL needs.

The lean calls (`Database.select_many`, `Database.write_sql`) are the message and login paths.
Through SQLAlchemy a lean write batch on PostgreSQL cost a BEGIN, a pool pre-ping, the statements
and a pool reset on top of the statements; here it runs on a plain psycopg connection in autocommit
mode with the transaction spelt out, which is also what lets a batch survive a server restart
between two batches:

- writes: one connection (the process's one writer): ``BEGIN``, the jobs (each under a SAVEPOINT
  when the batch has several, so one failing write does not undo the others), ``COMMIT``. If
  ``BEGIN`` itself fails because the connection is gone (the server restarted or failed over since
  the last batch), nothing of the batch has run, so it is retried once on a new connection: the
  first write after a restart succeeds instead of failing on a dead socket. A connection lost later
  fails the whole batch with `StorageError`: every caller hears that its write is not stored, even
  in the rare case where the server committed just before the connection broke;
- reads: idle connections kept for reuse (at most `Database`'s reader limit run at once), set
  read-only (``default_transaction_read_only``), one statement in autocommit or several in one
  REPEATABLE READ transaction (one snapshot). A read that finds its connection dead is run again
  on a new one: reads change nothing, so that is always safe.

Statements use the stores' ``:name`` parameters; `pyformat` turns them into psycopg's
``%(name)s`` once per distinct statement. psycopg prepares a statement on the server after its
fifth use on a connection, so the hot statements are parsed and planned once per connection.
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import psycopg

#: The advisory lock (`pg_advisory_xact_lock`) held around schema creation and migration, by
#: ``imactor db migrate`` and every server start alike: nodes starting at once take turns, and
#: each finds the schema the first one made. Any constant works; this is "imactor" in ASCII.
SCHEMA_LOCK_KEY = 0x696D6163746F72

#: Seconds to wait for a connection to the server before failing (libpq waits forever by default).
CONNECT_TIMEOUT = 10

_NAMED = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


@functools.lru_cache(maxsize=256)
def pyformat(sql: str) -> str:
    """``:name`` parameters as psycopg's ``%(name)s`` (a literal ``%`` doubled; ``::`` casts kept)."""
    return _NAMED.sub(r"%(\1)s", sql.replace("%", "%%"))


def connection_lost(exc: BaseException) -> bool:
    """Whether `exc` means the connection is unusable (server gone, restarted, failed over)."""
    if not isinstance(exc, psycopg.OperationalError):
        return False
    state = exc.sqlstate or ""
    # No SQLSTATE: libpq's own failure (refused, reset, EOF). 08: connection exception.
    # 57P01-57P03: admin shutdown, crash shutdown, cannot connect now (starting up).
    return state == "" or state.startswith("08") or state in ("57P01", "57P02", "57P03")


class LeanConnections:
    """The lean path's psycopg connections of one process (see the module docstring)."""

    __slots__ = ("_connect_kwargs", "_idle", "_lock", "_writer")

    def __init__(self, connect_kwargs: Mapping[str, Any]) -> None:
        kwargs = dict(connect_kwargs)
        kwargs.pop("context", None)  # SQLAlchemy's adapters: the lean path uses psycopg's own
        kwargs.setdefault("connect_timeout", CONNECT_TIMEOUT)
        self._connect_kwargs = kwargs
        self._writer: psycopg.Connection[tuple[Any, ...]] | None = None
        self._idle: list[psycopg.Connection[tuple[Any, ...]]] = []
        self._lock = threading.Lock()  # the idle list, shared by the reader threads

    def _connect(self, *, read_only: bool) -> psycopg.Connection[tuple[Any, ...]]:
        connection = psycopg.connect(autocommit=True, **self._connect_kwargs)
        if read_only:
            # A read function cannot write by mistake (SQLite's query_only, on PostgreSQL).
            connection.execute("SET default_transaction_read_only = on")
        return connection

    def write(self, body: Callable[[psycopg.Cursor[tuple[Any, ...]]], bool]) -> None:
        """Run `body` in one transaction on the writer connection; COMMIT if it returns True,
        else ROLLBACK. Runs in a thread (it waits on the network).

        Raises:
            psycopg.Error: The transaction failed (nothing of it is durable); whatever `body` raises.
        """
        for attempt in (1, 2):
            if self._writer is None or self._writer.closed:
                self._writer = self._connect(read_only=False)
            cursor = self._writer.cursor()
            try:
                cursor.execute("BEGIN")
            except psycopg.OperationalError as exc:
                cursor.close()
                self._drop_writer()
                if attempt == 1 and connection_lost(exc):
                    continue  # nothing ran: safe to run the batch on a new connection
                raise
            try:
                keep = body(cursor)
                cursor.execute("COMMIT" if keep else "ROLLBACK")
            except BaseException:
                self._abandon(self._writer)
                raise
            finally:
                cursor.close()
            return

    def select(self, queries: Sequence[tuple[str, Mapping[str, Any]]]) -> list[list[tuple[Any, ...]]]:
        """Run the SELECTs in one snapshot on an idle reader connection (a thread's call).

        Raises:
            psycopg.Error: The read failed (after one retry on a new connection if the old one
                was dead).
        """
        for attempt in (1, 2):
            connection = self._take_reader()
            try:
                results = _selects(connection, queries)
            except psycopg.OperationalError as exc:
                connection.close()
                if attempt == 1 and connection_lost(exc):
                    continue
                raise
            except BaseException:
                connection.close()
                raise
            with self._lock:
                self._idle.append(connection)
            return results
        raise AssertionError("unreachable")  # pragma: no cover

    def _take_reader(self) -> psycopg.Connection[tuple[Any, ...]]:
        with self._lock:
            while self._idle:
                connection = self._idle.pop()
                if not connection.closed:
                    return connection
        return self._connect(read_only=True)

    def _abandon(self, connection: psycopg.Connection[tuple[Any, ...]]) -> None:
        """After a failed transaction: roll back if the connection still works, else drop it."""
        try:
            if connection.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                connection.execute("ROLLBACK")
        except psycopg.Error:
            self._drop_writer()

    def _drop_writer(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def close(self) -> None:
        self._drop_writer()
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()


def _selects(
    connection: psycopg.Connection[tuple[Any, ...]], queries: Sequence[tuple[str, Mapping[str, Any]]]
) -> list[list[tuple[Any, ...]]]:
    several = len(queries) > 1
    with connection.cursor() as cursor:
        if several:
            # One snapshot for all of them, as SQLite's BEGIN ... ROLLBACK gives.
            cursor.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        try:
            results = []
            for sql, params in queries:
                cursor.execute(pyformat(sql), params)
                results.append(list(cursor.fetchall()))
        finally:
            if several and not connection.broken:
                cursor.execute("ROLLBACK")
    return results
