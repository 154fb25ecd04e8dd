"""XEP-0357 push registrations: which app server nodes to notify for an account."""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlmodel import Session, col, delete, select

from imactor.storage.db import Database
from imactor.storage.models import PushRegistration, require_account


@dataclass(frozen=True, slots=True)
class PushTarget:
    service: str  #: the app server's JID
    node: str
    options: bytes  #: serialized publish-options form, or b""


class PushStore:
    """An account's push registrations (enabled by its clients, §5)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def targets(self, username: str) -> list[PushTarget]:
        """The account's registrations, oldest first."""

        def query(session: Session) -> list[PushTarget]:
            rows = session.exec(
                select(PushRegistration)
                .where(col(PushRegistration.username) == username)
                .order_by(col(PushRegistration.created_at))
            )
            return [PushTarget(row.service, row.node, row.options) for row in rows]

        return await self._db.read(query)

    async def enable(self, username: str, target: PushTarget) -> None:
        """Add or replace a registration (same service and node). Raises `AccountNotFound`."""

        def upsert(session: Session) -> None:
            require_account(session, username)
            row = session.get(PushRegistration, (username, target.service, target.node))
            if row is None:
                session.add(PushRegistration(username=username, service=target.service, node=target.node,
                                             options=target.options, created_at=time.time()))  # fmt: skip
            else:
                row.options = target.options

        await self._db.write(upsert)

    async def disable(self, username: str, service: str, node: str | None) -> None:
        """Remove the registration for `node` of `service`, or all of `service` (node None)."""

        def remove(session: Session) -> None:
            statement = delete(PushRegistration).where(
                col(PushRegistration.username) == username, col(PushRegistration.service) == service
            )
            if node is not None:
                statement = statement.where(col(PushRegistration.node) == node)
            session.exec(statement)

        await self._db.write(remove)
