"""XEP-0313 message archives: append, page through, count, delete; archiving preferences.

Rows are ordered by their integer id (AUTOINCREMENT, so strictly increasing): the archive order is
the order in which the single writer committed them. A query has two kinds of bounds:

- `ArchiveFilter`: what the result set is (peer, time range, the XEP-0313 ``after-id`` /
  ``before-id`` fields); `ArchivePage.count` is the size of that set;
- the XEP-0059 page: ``after`` / ``before`` (exclusive, by stanza id) and `limit`, read forwards,
  or backwards (the page that ends just before ``before``, or the last page).

Appends go through the group-committing writer; `ArchiveStore.append_wanted` evaluates each
account's preferences inside the same write transaction, so the decision and the write are atomic.

Appends land in the journal (`archive_journal`: the archive's columns, no secondary index), not in
the indexed `archive`: on a chat message's path a row there costs a fraction of an indexed one.
The journal is durable like the archive (the same commit); its rows are moved into `archive` by
one INSERT ... SELECT per move, sorted by account (each account's index entries are then written
together), on the lean write path: on SQLite, on the loop's thread (the work is inside SQLite, no
Python per row: the row's b-tree entries, 8 µs a row on a small archive, 35-45 on one of 180,000
rows; run in the writer thread instead, it cost the process more, the thread and the loop taking
turns on the GIL around each statement):

- `ArchiveStore.run` (a child of each worker's tree) moves them every `MOVE_INTERVAL` seconds, or
  as soon as this process appended `MOVE_ROWS`, and what is left when it stops;
- every read of an archive (`query`, `count`, an XEP-0227 export) moves the journal first
  (`settle`), so it sees every message archived before it began, whichever process wrote it.

A moved row keeps the journal's order within its account (the order of `archive.id`); the unique
(username, stanza_id) of `archive` drops a second copy of a message routed twice, as it did when
rows were inserted there directly.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import trio
from sqlmodel import Session, col, delete, func, select

from imactor.storage.db import Database, Sql, json_list
from imactor.storage.errors import ArchiveItemNotFound, StorageError
from imactor.storage.models import (
    ArchivedMessage,
    ArchiveJournalRow,
    ArchivePrefsRow,
    RoomMessage,
    require_account,
)

#: XEP-0313 §6 default modes.
ARCHIVE_MODES = frozenset({"always", "roster", "never"})

#: Seconds between the moves of `ArchiveStore.run` while this process appends.
MOVE_INTERVAL = 0.25
#: Rows this process appends before `ArchiveStore.run` moves the journal without waiting for
#: the interval: a move holds the writer, and on SQLite the loop's thread, for 8 ms (a small
#: archive) to 50 ms (4 M rows) per thousand rows; larger moves cost less a row on a small
#: archive (fewer index pages written per row), hardly on a large one, and hold the loop longer.
MOVE_ROWS = 1_000
#: Most rows one move transaction takes: a journal that grew while moves failed (a full disk) is
#: moved in turns, with other work between them.
MOVE_LIMIT = 5_000

log = logging.getLogger("imactor.storage")


@dataclass(frozen=True, slots=True)
class ArchiveEntry:
    """A message to append to `username`'s archive."""

    username: str
    stanza_id: str
    peer: str  #: bare JID of the other party
    direction: str  #: "in" or "out"
    stanza: bytes
    peer_resource: str = ""
    timestamp: float | None = None  #: None: now


@dataclass(frozen=True, slots=True)
class ArchivedItem:
    """One archived message, as read back."""

    stanza_id: str
    timestamp: float
    peer: str
    peer_resource: str
    direction: str
    stanza: bytes


@dataclass(frozen=True, slots=True)
class ArchivePage:
    items: list[ArchivedItem]  #: in archive order (oldest first), even when read backwards
    count: int  #: size of the whole result set (the filter, without the page bounds)
    first_index: int | None  #: position of items[0] in the result set (XEP-0059 <first index>)
    complete: bool  #: the page reaches the end of the result set in its reading direction


@dataclass(frozen=True, slots=True)
class ArchiveFilter:
    """The result set of a query (XEP-0313 §4.1 form fields)."""

    with_jid: str | None = None  #: bare JID of the peer
    with_resource: str | None = None  #: and its resource (a `with` filter on a full JID)
    start: float | None = None  #: inclusive, unix time
    end: float | None = None  #: inclusive, unix time
    after_id: str | None = None  #: exclusive
    before_id: str | None = None  #: exclusive


@dataclass(frozen=True, slots=True)
class ArchivePrefs:
    """XEP-0313 §6: the default mode, and the JIDs always / never archived."""

    default: str = "always"
    always: tuple[str, ...] = ()
    never: tuple[str, ...] = ()


def archiving_wanted(prefs: ArchivePrefs, peer: str, in_roster: bool) -> bool:
    """Whether a message with `peer` (a bare JID) goes to the archive; "never" wins over "always"."""
    if peer in prefs.never:
        return False
    if peer in prefs.always:
        return True
    if prefs.default == "roster":
        return in_roster
    return prefs.default == "always"


#: Each account that exists and its archiving preferences (if it has any), in one lookup: the
#: ``IN`` list is filled with one parameter per account (`_accounts_and_prefs`).
_ACCOUNTS_PREFS = (
    "SELECT a.username, p.default_mode, p.always, p.never FROM account AS a "
    "LEFT JOIN archive_prefs AS p ON p.username = a.username WHERE a.username IN ({})"
)
#: A contact's subscription and pending "ask", for the "roster" archiving mode.
_ROSTER_STATE = "SELECT subscription, ask FROM roster_item WHERE username = :username AND jid = :jid"
_COLUMNS = "username, stanza_id, timestamp, peer, peer_resource, direction, stanza"
_INSERT_JOURNAL = (
    f"INSERT INTO archive_journal ({_COLUMNS}) "
    "VALUES (:username, :stanza_id, :timestamp, :peer, :peer_resource, :direction, :stanza)"
)
#: Does the journal hold a row? (A read of an archive moves it first only if so.)
_JOURNAL_USED = "SELECT 1 FROM archive_journal LIMIT 1"
#: SQLite (its writers take turns, so nothing is appended during a move): the last id of the
#: oldest `MOVE_LIMIT` rows, those rows into the archive sorted by account, then away.
_JOURNAL_BOUND = "SELECT max(id) FROM (SELECT id FROM archive_journal ORDER BY id LIMIT :limit) AS oldest"
_MOVE_SQLITE = (
    f"INSERT INTO archive ({_COLUMNS}) SELECT {_COLUMNS} FROM archive_journal WHERE id <= :last "
    "ORDER BY username, id "
    # A message its sender routed again (its first recipient worker died unconfirmed) comes back
    # with the same stanza-id (`MessageContext.message_key`): the archive keeps the first row.
    "ON CONFLICT DO NOTHING"
)
_FORGET_SQLITE = "DELETE FROM archive_journal WHERE id <= :last"
#: PostgreSQL: one statement, so one snapshot: the rows it deletes are exactly those it inserts,
#: while other nodes append (a DELETE after an INSERT ... SELECT could delete a row committed in
#: between, never moved). Two nodes moving at once take turns on the rows' locks; the later one
#: finds them gone.
_MOVE_PG = (
    "WITH moved AS (DELETE FROM archive_journal WHERE id IN "
    "(SELECT id FROM archive_journal ORDER BY id LIMIT :limit) "
    f"RETURNING id, {_COLUMNS}), "
    f"kept AS (INSERT INTO archive ({_COLUMNS}) SELECT {_COLUMNS} FROM moved ORDER BY username, id "
    "ON CONFLICT DO NOTHING) "
    "SELECT count(*) FROM moved"
)


class ArchiveStore:
    """Per-account message archives (XEP-0313) and their preferences."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._appended = 0  #: journal rows this process appended since its last move
        self._wake: trio.Event | None = None  #: set at `MOVE_ROWS` appended; None without `run`

    async def append(self, entries: Sequence[ArchiveEntry]) -> None:
        """Append every entry, in order, in one transaction. Raises `AccountNotFound`."""
        rows = list(entries)

        def insert(session: Session) -> None:
            for entry in rows:
                require_account(session, entry.username)
                session.add(ArchiveJournalRow(**_values(entry)))

        await self._db.write(insert)
        self._note_appended(len(rows))

    async def append_wanted(self, entries: Sequence[ArchiveEntry], default_mode: str) -> list[ArchiveEntry]:
        """Append the entries each account's preferences want archived; return those appended.

        `default_mode` applies to accounts without stored preferences. Entries for accounts that
        do not exist (any more) are skipped. The preferences are read in the write transaction.
        """
        rows = list(entries)

        def insert(sql: Sql) -> list[ArchiveEntry]:
            # On every chat message's path: one small statement for the accounts' preferences
            # and one executemany INSERT into the journal on the lean write path
            # (`Database.write_sql`), rather than ORM objects.
            prefs_of = _accounts_and_prefs(sql, {entry.username for entry in rows})
            kept: list[ArchiveEntry] = []
            for entry in rows:
                if entry.username not in prefs_of:
                    continue  # no such account (any more)
                prefs = prefs_of[entry.username] or ArchivePrefs(default_mode)
                in_roster = False
                if prefs.default == "roster":
                    item = sql.rows(_ROSTER_STATE, {"username": entry.username, "jid": entry.peer})
                    in_roster = bool(item) and (item[0][0] != "none" or bool(item[0][1]))
                if archiving_wanted(prefs, entry.peer, in_roster):
                    kept.append(entry)
            if kept:
                sql.run_many(_INSERT_JOURNAL, [_values(entry) for entry in kept])
            return kept

        kept = await self._db.write_sql(insert)
        self._note_appended(len(kept))
        return kept

    def _note_appended(self, rows: int) -> None:
        self._appended += rows
        if self._wake is not None and self._appended >= MOVE_ROWS:
            self._wake.set()

    async def move_journal(self) -> int:
        """Move every row the journal holds now into the archive; how many rows left the journal
        (a second copy of a message is dropped, not moved). On PostgreSQL, rows another node is
        moving at the same moment are left to it: this call waits for them only up to its first
        `MOVE_LIMIT` rows.

        Raises:
            StorageError: The database failed; the rows stay in the journal.
        """
        self._appended = 0
        postgres = self._db.dialect == "postgresql"
        total = 0
        while True:
            moved = await self._db.write_sql(_move_pg if postgres else _move_sqlite)
            total += moved
            if moved < MOVE_LIMIT:
                return total

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Move the journal while this process appends to it, until cancelled; then what is left
        (within 10 s). The first move takes what an earlier run (or a crash) left."""
        self._wake = wake = trio.Event()
        task_status.started()
        try:
            await self._move_logged()
            while True:
                with trio.move_on_after(MOVE_INTERVAL):
                    await wake.wait()
                self._wake = wake = trio.Event()
                if self._appended:
                    await self._move_logged()
        finally:
            self._wake = None
            with trio.move_on_after(10, shield=True):
                await self._move_logged()

    async def _move_logged(self) -> None:
        try:
            await self.move_journal()
        except StorageError as exc:
            # The rows wait in the journal, durable, for the next move. While the database refuses
            # writes (a full disk), it logs that itself, rate limited.
            level = logging.DEBUG if self._db.writes_failing else logging.WARNING
            log.log(level, "archive journal not moved: %s", exc)

    async def settle(self) -> None:
        """Before a read: move the journal if it holds anything, so that the read sees every
        message archived before it. If the move fails, the read goes on without the journal's
        rows (they are kept, and shown once a move succeeds)."""
        if await self._db.select(_JOURNAL_USED, {}):
            await self._move_logged()

    async def query(
        self,
        username: str,
        where: ArchiveFilter = ArchiveFilter(),  # frozen, so a safe default
        *,
        after: str | None = None,
        before: str | None = None,
        backwards: bool = False,
        limit: int = 50,
    ) -> ArchivePage:
        """One page of `username`'s archive.

        Args:
            where: The result set.
            after: Page starts after this stanza id (exclusive).
            before: Page ends before this stanza id (exclusive).
            backwards: Take the last `limit` items of the bounded range (XEP-0059 <before/>).
            limit: Most items on the page (0: only the count).

        Raises:
            ArchiveItemNotFound: A stanza id (filter or page bound) is not in this archive.
        """

        def run(session: Session) -> ArchivePage:
            owner = col(ArchivedMessage.username) == username
            return query_page(session, ArchivedMessage, owner, where, after=after, before=before,
                              backwards=backwards, limit=limit)  # fmt: skip

        await self.settle()
        return await self._db.read(run)

    async def count(self, username: str) -> int:
        """How many messages `username`'s archive holds."""

        def run(session: Session) -> int:
            statement = select(func.count()).where(col(ArchivedMessage.username) == username)
            return session.exec(statement).one()

        await self.settle()
        return await self._db.read(run)

    async def delete(self, username: str) -> None:
        """Empty `username`'s archive and forget its preferences (account deletion cascades too)."""

        def remove(session: Session) -> None:
            session.exec(delete(ArchivedMessage).where(col(ArchivedMessage.username) == username))
            session.exec(delete(ArchiveJournalRow).where(col(ArchiveJournalRow.username) == username))
            session.exec(delete(ArchivePrefsRow).where(col(ArchivePrefsRow.username) == username))

        await self._db.write(remove)

    async def get_prefs(self, username: str) -> ArchivePrefs | None:
        """The stored preferences, or None (the server's default applies)."""
        return await self._db.read(lambda session: _prefs(session.get(ArchivePrefsRow, username)))

    async def set_prefs(self, username: str, prefs: ArchivePrefs) -> None:
        """Replace the preferences. Raises `AccountNotFound`, or ValueError for an unknown mode."""
        if prefs.default not in ARCHIVE_MODES:
            raise ValueError(f"unknown archiving mode {prefs.default!r}")

        def upsert(session: Session) -> None:
            require_account(session, username)
            row = session.get(ArchivePrefsRow, username)
            if row is None:
                session.add(ArchivePrefsRow(username=username, default_mode=prefs.default,
                                            always=list(prefs.always), never=list(prefs.never)))  # fmt: skip
            else:
                row.default_mode = prefs.default
                row.always = list(prefs.always)
                row.never = list(prefs.never)

        await self._db.write(upsert)


def _move_sqlite(sql: Sql) -> int:
    """One move of SQLite's journal (`_MOVE_SQLITE`); how many rows left it."""
    ((last,),) = sql.rows(_JOURNAL_BOUND, {"limit": MOVE_LIMIT})
    if last is None:
        return 0
    sql.run(_MOVE_SQLITE, {"last": last})
    return sql.run(_FORGET_SQLITE, {"last": last})


def _move_pg(sql: Sql) -> int:
    """One move of PostgreSQL's journal (`_MOVE_PG`); how many rows left it."""
    ((moved,),) = sql.rows(_MOVE_PG, {"limit": MOVE_LIMIT})
    return int(moved)


def _accounts_and_prefs(sql: Sql, usernames: set[str]) -> dict[str, ArchivePrefs | None]:
    """The stored preferences of each of `usernames` that is an account (None: it has none)."""
    # One statement for a chat message's two accounts (sender and recipient): one fewer per message.
    if not usernames:
        return {}
    params = {f"u{i}": username for i, username in enumerate(sorted(usernames))}
    statement = _ACCOUNTS_PREFS.format(", ".join(f":{name}" for name in params))
    return {
        username: None if mode is None else ArchivePrefs(mode, json_list(always), json_list(never))
        for username, mode, always, never in sql.rows(statement, params)
    }


def _values(entry: ArchiveEntry) -> dict[str, Any]:
    return {
        "username": entry.username, "stanza_id": entry.stanza_id,
        "timestamp": round(time.time() if entry.timestamp is None else entry.timestamp, 6),  # µs, as shown
        "peer": entry.peer, "peer_resource": entry.peer_resource, "direction": entry.direction,
        "stanza": entry.stanza,
    }  # fmt: skip


def _item(row: ArchivedMessage | RoomMessage) -> ArchivedItem:
    return ArchivedItem(row.stanza_id, row.timestamp, row.peer, row.peer_resource, row.direction, row.stanza)


def _prefs(row: ArchivePrefsRow | None) -> ArchivePrefs | None:
    if row is None:
        return None
    return ArchivePrefs(row.default_mode, tuple(row.always), tuple(row.never))


#: An archive table: `ArchivedMessage` (accounts) or `RoomMessage` (rooms), which share columns.
ArchiveModel = type[ArchivedMessage] | type[RoomMessage]


def query_page(
    session: Session, model: ArchiveModel, owner: Any, where: ArchiveFilter, *, after: str | None,
    before: str | None, backwards: bool, limit: int,
) -> ArchivePage:  # fmt: skip
    """One page of the archive rows of `model` that match `owner` (a condition naming whose
    archive it is), in a read transaction. See `ArchiveStore.query` for the arguments."""
    conditions: list[Any] = [owner]
    if where.with_jid is not None:
        conditions.append(col(model.peer) == where.with_jid)
        if where.with_resource is not None:
            conditions.append(col(model.peer_resource) == where.with_resource)
    if where.start is not None:
        conditions.append(col(model.timestamp) >= where.start)
    if where.end is not None:
        conditions.append(col(model.timestamp) <= where.end)
    if where.after_id is not None:
        conditions.append(col(model.id) > _row_id(session, model, owner, where.after_id))
    if where.before_id is not None:
        conditions.append(col(model.id) < _row_id(session, model, owner, where.before_id))
    count = session.exec(select(func.count()).select_from(model).where(*conditions)).one()
    page = list(conditions)
    if after is not None:
        page.append(col(model.id) > _row_id(session, model, owner, after))
    if before is not None:
        page.append(col(model.id) < _row_id(session, model, owner, before))
    if limit <= 0:
        return ArchivePage([], count, None, count == 0)
    order = col(model.id).desc() if backwards else col(model.id)
    rows: list[Any] = list(session.exec(select(model).where(*page).order_by(order).limit(limit + 1)))
    complete = len(rows) <= limit
    rows = rows[:limit]
    if backwards:
        rows.reverse()
    first_index = None
    if rows:
        earlier = col(model.id) < rows[0].id
        first_index = session.exec(select(func.count()).select_from(model).where(*conditions, earlier)).one()
    return ArchivePage([_item(row) for row in rows], count, first_index, complete)


def _row_id(session: Session, model: ArchiveModel, owner: Any, stanza_id: str) -> int:
    statement = select(model.id).where(owner, col(model.stanza_id) == stanza_id)
    found = session.exec(statement).first()
    if found is None:
        raise ArchiveItemNotFound(stanza_id)
    return found
