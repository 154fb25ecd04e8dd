"""Multi-user chat rooms (XEP-0045): the rooms that exist and their archives (XEP-0313).

A room's state is stored whole, as the JSON its sans-IO core writes (`RoomState.to_json`), on
every change; the store does not look inside except for the copies of `public`, `persistent` and
`creator` kept in columns for listing and limits. The archive shares its query with the
accounts' archives (`imactor.storage.archive.query_page`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlmodel import Session, col, delete, func, select

from imactor.storage.archive import ArchiveFilter, ArchivePage, query_page
from imactor.storage.db import Database, Sql
from imactor.storage.models import RoomMessage, RoomRow


@dataclass(frozen=True, slots=True)
class StoredRoom:
    name: str
    state: dict[str, Any]
    public: bool
    persistent: bool
    creator: str


@dataclass(frozen=True, slots=True)
class RoomArchiveEntry:
    """One broadcast message of a room, as archived (and replayed as history after a restart)."""

    room: str  #: the room's localpart
    room_jid: str  #: its bare JID
    stanza_id: str
    timestamp: float
    nick: str
    real_jid: str
    stanza: bytes


_INSERT = (
    "INSERT INTO muc_archive (room, stanza_id, timestamp, peer, peer_resource, real_jid, direction, stanza) "
    "VALUES (:room, :stanza_id, :timestamp, :peer, :peer_resource, :real_jid, 'in', :stanza)"
)


#: A filter that keeps every message (frozen, so a safe default).
_EVERYTHING = ArchiveFilter()


class RoomStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def load(self, name: str) -> StoredRoom | None:
        def run(session: Session) -> StoredRoom | None:
            row = session.get(RoomRow, name)
            return None if row is None else _stored(row)

        return await self._db.read(run)

    async def save(self, room: StoredRoom) -> None:
        """Create or replace the room's row."""

        def upsert(session: Session) -> None:
            row = session.get(RoomRow, room.name)
            if row is None:
                row = RoomRow(name=room.name, state=room.state)
                session.add(row)
            row.state, row.public, row.persistent = room.state, room.public, room.persistent
            row.creator, row.updated = room.creator, time.time()

        await self._db.write(upsert)

    async def delete(self, name: str) -> bool:
        """Forget the room and its archive; False when there was no such room."""

        def remove(session: Session) -> bool:
            row = session.get(RoomRow, name)
            session.exec(delete(RoomMessage).where(col(RoomMessage.room) == name))
            if row is None:
                return False
            session.delete(row)
            return True

        return await self._db.write(remove)

    async def listing(self, *, public_only: bool = False) -> list[StoredRoom]:
        """The rooms that exist, by name."""

        def run(session: Session) -> list[StoredRoom]:
            statement = select(RoomRow).order_by(col(RoomRow.name))
            if public_only:
                statement = statement.where(col(RoomRow.public))
            return [_stored(row) for row in session.exec(statement)]

        return await self._db.read(run)

    async def count_created_by(self, creator: str) -> int:
        def run(session: Session) -> int:
            statement = select(func.count()).select_from(RoomRow).where(col(RoomRow.creator) == creator)
            return session.exec(statement).one()

        return await self._db.read(run)

    # ---- the archive ---------------------------------------------------------------------------

    async def append(self, entries: Sequence[RoomArchiveEntry]) -> None:
        """Archive broadcast messages, in one write transaction."""
        if not entries:
            return

        def insert(sql: Sql) -> None:
            sql.run_many(_INSERT, [_values(entry) for entry in entries])

        await self._db.write_sql(insert)

    async def recent(self, name: str, limit: int) -> list[RoomArchiveEntry]:
        """The room's last `limit` archived messages, oldest first (its history after a restart)."""

        def run(session: Session) -> list[RoomArchiveEntry]:
            statement = (
                select(RoomMessage).where(col(RoomMessage.room) == name)
                .order_by(col(RoomMessage.id).desc()).limit(limit)
            )  # fmt: skip
            rows = list(session.exec(statement))
            rows.reverse()
            return [
                RoomArchiveEntry(row.room, row.peer, row.stanza_id, row.timestamp, row.peer_resource,
                                 row.real_jid, row.stanza)
                for row in rows
            ]  # fmt: skip

        return await self._db.read(run) if limit > 0 else []

    async def query(
        self, name: str, where: ArchiveFilter = _EVERYTHING, *, after: str | None = None,
        before: str | None = None, backwards: bool = False, limit: int = 50,
    ) -> ArchivePage:  # fmt: skip
        """One page of the room's archive (see `ArchiveStore.query`)."""

        def run(session: Session) -> ArchivePage:
            return query_page(session, RoomMessage, col(RoomMessage.room) == name, where,
                              after=after, before=before, backwards=backwards, limit=limit)  # fmt: skip

        return await self._db.read(run)


def _stored(row: RoomRow) -> StoredRoom:
    return StoredRoom(row.name, dict(row.state), row.public, row.persistent, row.creator)


def _values(entry: RoomArchiveEntry) -> dict[str, Any]:
    return {
        "room": entry.room, "stanza_id": entry.stanza_id, "timestamp": round(entry.timestamp, 6),
        "peer": entry.room_jid, "peer_resource": entry.nick, "real_jid": entry.real_jid,
        "stanza": entry.stanza,
    }  # fmt: skip
