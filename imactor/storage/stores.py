"""The small per-account stores: offline messages, private XML, vCards, blocklists, last activity.

Usernames are prepared localparts, as found in a parsed JID. Reads of an unknown account return
the empty value; writes that would create data for one raise `AccountNotFound`, because the
caller (a module answering a stanza) must have checked the account exists.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import trio
from sqlmodel import Session, col, delete, func, select

from imactor.storage.db import Database, Sql
from imactor.storage.errors import AccountNotFound, StorageError
from imactor.storage.models import (
    BlockedJid,
    LastActivity,
    OfflineMessage,
    PrivateData,
    VCard,
    require_account,
)

#: Values per ``IN (...)`` clause; well under SQLite's bound-parameter limit.
_IN_CHUNK = 500

log = logging.getLogger("imactor.storage")

#: Seconds a noted last-activity stamp waits, so that the logouts of that time share one write.
LAST_ACTIVITY_DELAY = 0.5

#: Append an offline message; no row at all if the account does not exist. The username comes
#: from the account row: PostgreSQL types a parameter once per statement, and the same one as a
#: select-list value (text) and as a comparison with a column (varchar) is refused.
_STORE_OFFLINE = (
    "INSERT INTO offline_message (username, stanza, stored_at) "
    "SELECT username, :stanza, :stored_at FROM account WHERE username = :username"
)
#: An account's offline messages, oldest first (ids only grow: see `OfflineMessage`).
_OFFLINE_OF = "SELECT id, stanza FROM offline_message WHERE username = :username ORDER BY id"
#: Insert or replace an account's last activity; no row at all if the account does not exist
#: (SQLite 3.24+ and PostgreSQL share this upsert syntax; SQLite needs the WHERE before ON
#: CONFLICT to parse an INSERT ... SELECT).
_UPSERT_LAST_ACTIVITY = (
    "INSERT INTO last_activity (username, timestamp, status) "
    "SELECT username, :timestamp, :status FROM account WHERE username = :username "
    "ON CONFLICT (username) DO UPDATE SET timestamp = excluded.timestamp, status = excluded.status"
)


class OfflineStore:
    """Messages kept for an account while it has no available session."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def store(self, username: str, stanza: bytes) -> None:
        """Append a serialized stanza. Raises `AccountNotFound`."""

        values = {"username": username, "stanza": stanza, "stored_at": time.time()}

        def insert(sql: Sql) -> None:
            # Every message to an offline account: the lean write path.
            if sql.run(_STORE_OFFLINE, values) == 0:
                raise AccountNotFound(username)

        await self._db.write_sql(insert)

    async def fetch(self, username: str) -> list[tuple[int, bytes]]:
        """All stored messages as ``(id, stanza)``, oldest first; pass the ids to `delete`."""

        # Asked at every login's initial presence, and usually empty: the lean read.
        rows = await self._db.select(_OFFLINE_OF, {"username": username})
        return [(row_id, bytes(stanza)) for row_id, stanza in rows]

    async def delete(self, username: str, ids: Sequence[int]) -> None:
        """Delete the given messages of this account; unknown ids are ignored."""
        wanted = list(ids)
        if not wanted:
            return

        def remove(session: Session) -> None:
            for start in range(0, len(wanted), _IN_CHUNK):
                session.exec(
                    delete(OfflineMessage).where(
                        col(OfflineMessage.username) == username,
                        col(OfflineMessage.id).in_(wanted[start : start + _IN_CHUNK]),
                    )
                )

        await self._db.write(remove)

    async def count(self, username: str) -> int:
        """How many messages are stored for this account."""

        def query(session: Session) -> int:
            statement = select(func.count()).where(col(OfflineMessage.username) == username)
            return session.exec(statement).one()

        return await self._db.read(query)


class PrivateStore:
    """XEP-0049 private XML storage: one serialized element per key."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def get(self, username: str, key: str) -> bytes | None:
        """The stored data for `key`, or None."""

        def query(session: Session) -> bytes | None:
            row = session.get(PrivateData, (username, key))
            return None if row is None else row.data

        return await self._db.read(query)

    async def set(self, username: str, key: str, data: bytes) -> None:
        """Store `data` under `key`, replacing any previous value. Raises `AccountNotFound`."""

        def upsert(session: Session) -> None:
            require_account(session, username)
            row = session.get(PrivateData, (username, key))
            if row is None:
                session.add(PrivateData(username=username, key=key, data=data))
            else:
                row.data = data

        await self._db.write(upsert)


class VCardStore:
    """XEP-0054 vCards, stored as serialized XML."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def get(self, username: str) -> bytes | None:
        """The stored vCard, or None."""

        def query(session: Session) -> bytes | None:
            row = session.get(VCard, username)
            return None if row is None else row.data

        return await self._db.read(query)

    async def set(self, username: str, data: bytes | None) -> None:
        """Store the vCard, or delete it when `data` is None. Raises `AccountNotFound`."""

        def upsert(session: Session) -> None:
            require_account(session, username)
            row = session.get(VCard, username)
            if data is None:
                if row is not None:
                    session.delete(row)
            elif row is None:
                session.add(VCard(username=username, data=data))
            else:
                row.data = data

        await self._db.write(upsert)


class BlockingStore:
    """XEP-0191 blocklists."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def get(self, username: str) -> list[str]:
        """The blocked JIDs, sorted."""

        def query(session: Session) -> list[str]:
            statement = (
                select(BlockedJid.jid)
                .where(col(BlockedJid.username) == username)
                .order_by(col(BlockedJid.jid))
            )
            return list(session.exec(statement))

        return await self._db.read(query)

    async def add(self, username: str, jids: Sequence[str]) -> None:
        """Block `jids`; JIDs already blocked are left alone. Raises `AccountNotFound`."""
        wanted = list(dict.fromkeys(jids))

        def insert(session: Session) -> None:
            require_account(session, username)
            for jid in wanted:
                if session.get(BlockedJid, (username, jid)) is None:
                    session.add(BlockedJid(username=username, jid=jid))

        await self._db.write(insert)

    async def remove(self, username: str, jids: Sequence[str] | None) -> None:
        """Unblock `jids`, or every JID when `jids` is None."""
        wanted = None if jids is None else list(jids)

        def remove(session: Session) -> None:
            condition = col(BlockedJid.username) == username
            if wanted is None:
                session.exec(delete(BlockedJid).where(condition))
                return
            for start in range(0, len(wanted), _IN_CHUNK):
                chunk = wanted[start : start + _IN_CHUNK]
                session.exec(delete(BlockedJid).where(condition, col(BlockedJid.jid).in_(chunk)))

        await self._db.write(remove)


class LastActivityStore:
    """XEP-0012: when each account was last seen, with its last status text.

    Every logout writes a stamp. While `run` runs (a worker's tree has it as a child), `set` only
    notes the stamp, and `run` writes what was noted in one transaction `LAST_ACTIVITY_DELAY`
    after the first of them: a trip to the writer thread per logout was a tenth of a login's CPU
    (docs/benchmarks.md). The stamps wait in memory, so a crash may lose that much XEP-0012
    history, and nothing else: no stanza waits on them. Without `run`, `set` writes at once.
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        self._noted: dict[str, tuple[float, str]] = {}  #: waiting for `run` to write them
        self._writing: dict[str, tuple[float, str]] = {}  #: being written: `get` still sees them
        self._wake: trio.Event | None = None  #: set when a stamp is noted; None without `run`

    async def get(self, username: str) -> tuple[float, str] | None:
        """``(unix timestamp, status)`` of the last logout, or None if never recorded."""
        pending = self._noted.get(username) or self._writing.get(username)
        if pending is not None:
            await trio.lowlevel.checkpoint()
            return pending

        def query(session: Session) -> tuple[float, str] | None:
            row = session.get(LastActivity, username)
            return None if row is None else (row.timestamp, row.status)

        return await self._db.read(query)

    async def set(self, username: str, timestamp: float, status: str) -> None:
        """Record the last activity, replacing the previous one.

        Raises:
            AccountNotFound: Only when written at once (no `run`); a noted stamp of an account
                deleted meanwhile is dropped when written.
        """
        if self._wake is None:
            await self._write({username: (timestamp, status)}, strict=True)
            return
        self._noted[username] = (timestamp, status)
        self._wake.set()
        await trio.lowlevel.checkpoint()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Write the noted stamps in batches until cancelled, then what is left (within 10 s)."""
        self._wake = wake = trio.Event()
        task_status.started()
        try:
            while True:
                await wake.wait()
                await trio.sleep(LAST_ACTIVITY_DELAY)  # let more logouts join the batch
                self._wake = wake = trio.Event()
                await self.flush()
        finally:
            self._wake = None  # from now on `set` writes at once
            with trio.move_on_after(10, shield=True):
                await self.flush()

    async def flush(self) -> None:
        """Write the noted stamps now. A database failure is logged: they are history, not mail."""
        if not self._noted:
            return
        self._writing, self._noted = self._noted, {}
        try:
            await self._write(self._writing, strict=False)
        except StorageError as exc:
            # While the database refuses writes (a full disk), it logs that itself, rate limited.
            level = logging.DEBUG if self._db.writes_failing else logging.WARNING
            log.log(level, "last activity of %d accounts not saved: %s", len(self._writing), exc)
        finally:
            self._writing = {}

    async def _write(self, stamps: dict[str, tuple[float, str]], *, strict: bool) -> None:
        # Sorted: two nodes writing stamps of the same accounts lock their rows in one order.
        rows = [{"username": u, "timestamp": t, "status": s} for u, (t, s) in sorted(stamps.items())]

        def upsert(sql: Sql) -> None:
            # Lean write path; the statement writes nothing for an account that no longer exists.
            for row in rows:
                if sql.run(_UPSERT_LAST_ACTIVITY, row) == 0 and strict:
                    raise AccountNotFound(row["username"])

        await self._db.write_sql(upsert)
