"""The server's message of the day (XEP-0133 set-motd / edit-motd / delete-motd).

One row (`Motd`, id 1) while a message is set. It is read at the start of every client session
that sends its initial presence, so the read is the lean single-statement one.
"""

from __future__ import annotations

import time

from sqlmodel import Session

from imactor.storage.db import Database
from imactor.storage.models import Motd

_READ = "SELECT text FROM motd WHERE id = 1"


class MotdStore:
    """Read, set and delete the message of the day."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def get(self) -> str | None:
        """The message of the day; None when none is set."""
        rows = await self._db.select(_READ, {})
        return str(rows[0][0]) if rows else None

    async def set(self, text: str) -> None:
        """Set (or replace) the message of the day."""

        def upsert(session: Session) -> None:
            row = session.get(Motd, 1)
            if row is None:
                session.add(Motd(id=1, text=text, set_at=time.time()))
            else:
                row.text, row.set_at = text, time.time()
                session.add(row)

        await self._db.write(upsert)

    async def delete(self) -> bool:
        """Delete the message of the day; False when none was set."""

        def remove(session: Session) -> bool:
            row = session.get(Motd, 1)
            if row is None:
                return False
            session.delete(row)
            return True

        return await self._db.write(remove)
