"""Rosters with versioning (RFC 6121 §2.6).

Each account has one integer roster version, bumped in the same transaction as every change, so a
client that presents the current version can be told "no change" and one that presents an older
version gets the full roster.
"""

from __future__ import annotations

from sqlmodel import Session, col, select

from imactor.storage.db import Database
from imactor.storage.models import Account, RosterEntry, require_account
from imactor.xmpp.roster import RosterItem as RosterItem  # re-exported: storage speaks this value

#: RFC 6121 §2.1.2.5 subscription states.
SUBSCRIPTIONS = frozenset({"none", "to", "from", "both"})


class RosterStore:
    """Read and change rosters. Usernames are prepared localparts (as found in a parsed JID)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def get(self, username: str) -> tuple[int, list[RosterItem]]:
        """The roster version and all items ordered by JID; ``(0, [])`` for an unknown account."""

        def query(session: Session) -> tuple[int, list[RosterItem]]:
            account = session.get(Account, username)
            if account is None:
                return 0, []
            rows = session.exec(
                select(RosterEntry)
                .where(col(RosterEntry.username) == username)
                .order_by(col(RosterEntry.jid))
            )
            return account.roster_version, [_to_item(row) for row in rows]

        return await self._db.read(query)

    async def get_item(self, username: str, jid: str) -> RosterItem | None:
        """One item, or None if `jid` is not in the roster."""

        def query(session: Session) -> RosterItem | None:
            row = session.get(RosterEntry, (username, jid))
            return None if row is None else _to_item(row)

        return await self._db.read(query)

    async def put(self, username: str, item: RosterItem) -> int:
        """Add or replace the item for ``item.jid``.

        Returns:
            The new roster version.

        Raises:
            AccountNotFound: No such account.
            ValueError: ``item.subscription`` is not a subscription state.
        """
        if item.subscription not in SUBSCRIPTIONS:
            raise ValueError(f"invalid subscription state {item.subscription!r}")

        def upsert(session: Session) -> int:
            account = require_account(session, username)
            row = session.get(RosterEntry, (username, item.jid))
            if row is None:
                row = RosterEntry(username=username, jid=item.jid)
                session.add(row)
            row.name = item.name
            row.subscription = item.subscription
            row.ask = item.ask
            row.pending_in = item.pending_in
            row.approved = item.approved
            row.groups = list(item.groups)
            row.listed = item.listed
            account.roster_version += 1
            return account.roster_version

        return await self._db.write(upsert)

    async def remove(self, username: str, jid: str) -> int:
        """Remove the item for `jid`; a JID not in the roster leaves the version unchanged.

        Returns:
            The roster version after the removal.

        Raises:
            AccountNotFound: No such account.
        """

        def delete(session: Session) -> int:
            account = require_account(session, username)
            row = session.get(RosterEntry, (username, jid))
            if row is not None:
                session.delete(row)
                account.roster_version += 1
            return account.roster_version

        return await self._db.write(delete)


def _to_item(row: RosterEntry) -> RosterItem:
    return RosterItem(
        jid=row.jid,
        name=row.name,
        subscription=row.subscription,
        ask=row.ask,
        pending_in=row.pending_in,
        approved=row.approved,
        groups=tuple(row.groups),
        listed=row.listed,
    )
