"""Scheduled reminders (the ``adhoc`` module's reminder commands and their delivery task).

A reminder is one row (`ReminderRow`). Its delivery is claimed with one conditional UPDATE
(`claim`): the row changes only if it still has the due time the claimer read, so of two
workers or nodes that read the same due row one claims it and the other changes nothing. The
claim advances `next_at` by the repeat rule (or marks a one-off reminder done) and records the
occurrence being delivered (`pending_at`) in the same statement; `sent` clears it once the
message was routed. The `imactor.modules.adhoc.reminders` docstring says why that gives each
occurrence once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from sqlalchemy import text as sql_text
from sqlmodel import Session

from imactor.storage.db import Database, Sql
from imactor.storage.errors import AccountNotFound, StorageError
from imactor.storage.models import Account
from imactor.storage.reminder_tables import ReminderRow

__all__ = ["ALL_USERS", "Reminder", "ReminderLimit", "ReminderStore"]

#: The recipients value that means every account of the server.
ALL_USERS = "*"

_COUNT = "SELECT COUNT(*) FROM reminder WHERE owner = :owner AND state = 'active'"
_COLUMNS = "id, owner, recipients, text, next_at, repeat, state, pending_at, claimed_by, claimed_at"


class ReminderLimit(StorageError):
    """The owner has as many active reminders as allowed."""


@dataclass(frozen=True, slots=True)
class Reminder:
    id: int
    owner: str  #: the username of the account that set it
    recipients: tuple[str, ...]  #: bare JIDs, or (`ALL_USERS`,)
    text: str
    next_at: float  #: UTC seconds
    repeat: str
    state: str
    pending_at: float | None = None
    claimed_by: str | None = None
    claimed_at: float | None = None


def _reminder(row: tuple[object, ...]) -> Reminder:
    rid, owner, recipients, text, next_at, repeat, state, pending_at, claimed_by, claimed_at = row
    return Reminder(int(str(rid)), str(owner), tuple(json.loads(str(recipients))), str(text),
                    float(str(next_at)), str(repeat), str(state),
                    None if pending_at is None else float(str(pending_at)),
                    None if claimed_by is None else str(claimed_by),
                    None if claimed_at is None else float(str(claimed_at)))  # fmt: skip


class ReminderStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def add(self, owner: str, recipients: tuple[str, ...], text: str, next_at: float, repeat: str,
                  *, now: float, limit: int) -> int:  # fmt: skip
        """Store a new active reminder; its id.

        Raises:
            ReminderLimit: `owner` has `limit` active reminders already.
            AccountNotFound: no such account.
        """

        def insert(session: Session) -> int:
            if session.get(Account, owner) is None:
                raise AccountNotFound(owner)
            count = session.execute(sql_text(_COUNT), {"owner": owner}).scalar_one()
            if count >= limit:
                raise ReminderLimit(f"{owner} has {count} reminders, the most allowed")
            row = ReminderRow(owner=owner, recipients=json.dumps(list(recipients)), text=text,
                              next_at=next_at, repeat=repeat, state="active", created=now)  # fmt: skip
            session.add(row)
            session.flush()
            assert row.id is not None
            return row.id

        return await self._db.write(insert)

    async def of_owner(self, owner: str) -> list[Reminder]:
        """The owner's active reminders, the soonest first."""
        rows = await self._db.select(f"SELECT {_COLUMNS} FROM reminder "
                                     "WHERE owner = :owner AND state = 'active' ORDER BY next_at, id",
                                     {"owner": owner})  # fmt: skip
        return [_reminder(row) for row in rows]

    async def active(self, limit: int = 500) -> list[Reminder]:
        """Every owner's active reminders, the soonest first (the first `limit`)."""
        rows = await self._db.select(f"SELECT {_COLUMNS} FROM reminder WHERE state = 'active' "
                                     "ORDER BY next_at, id LIMIT :limit", {"limit": limit})  # fmt: skip
        return [_reminder(row) for row in rows]

    async def cancel(self, owner: str, reminder_id: int) -> bool:
        """Cancel one of the owner's active reminders; False when it has none by that id. An
        occurrence being delivered right now still arrives."""

        def cancel(sql: Sql) -> bool:
            params = {"id": reminder_id, "owner": owner}
            where = "WHERE id = :id AND owner = :owner AND state = 'active'"
            if sql.run(f"DELETE FROM reminder {where} AND pending_at IS NULL", params):
                return True
            return sql.run(f"UPDATE reminder SET state = 'cancelled' {where}", params) > 0

        return await self._db.write_sql(cancel)

    async def next_due(self) -> float | None:
        """The earliest due time of an active reminder."""
        # Not one being delivered: its next time comes when the delivery is recorded (`sent`).
        rows = await self._db.select("SELECT MIN(next_at) FROM reminder WHERE state = 'active' "
                                     "AND pending_at IS NULL", {})  # fmt: skip
        return None if not rows or rows[0][0] is None else float(rows[0][0])

    async def due(self, now: float, limit: int = 100) -> list[Reminder]:
        """Active reminders due at `now`, the oldest first (at most `limit`)."""
        sql = (f"SELECT {_COLUMNS} FROM reminder WHERE state = 'active' AND next_at <= :now "
               "AND pending_at IS NULL ORDER BY next_at, id LIMIT :limit")  # fmt: skip
        rows = await self._db.select(sql, {"now": now, "limit": limit})
        return [_reminder(row) for row in rows]

    async def claim(self, reminder: Reminder, following: float | None, claimant: str, now: float) -> bool:
        """Claim the due occurrence `reminder.next_at`: record it as pending (claimed by
        `claimant`) and advance the reminder to `following` (None: it is done), all in one
        statement that changes nothing if another worker claimed it first (or it was cancelled)."""
        state, next_at = ("done", reminder.next_at) if following is None else ("active", following)

        def claim(sql: Sql) -> bool:
            changed = sql.run(
                "UPDATE reminder SET pending_at = next_at, next_at = :next_at, state = :state, "
                "claimed_by = :claimant, claimed_at = :now "
                "WHERE id = :id AND next_at = :due AND state = 'active' AND pending_at IS NULL",
                {"next_at": next_at, "state": state, "claimant": claimant, "now": now, "id": reminder.id,
                 "due": reminder.next_at},
            )  # fmt: skip
            return changed == 1

        return await self._db.write_sql(claim)

    async def sent(self, reminder_id: int, occurrence: float, claimant: str) -> None:
        """The pending `occurrence` was routed: clear it (and forget a reminder that is over)."""

        def clear(sql: Sql) -> None:
            params = {"id": reminder_id, "due": occurrence, "claimant": claimant}
            sql.run("UPDATE reminder SET pending_at = NULL, claimed_by = NULL, claimed_at = NULL "
                    "WHERE id = :id AND pending_at = :due AND claimed_by = :claimant", params)  # fmt: skip
            sql.run("DELETE FROM reminder WHERE id = :id AND state <> 'active' AND pending_at IS NULL",
                    params)  # fmt: skip

        await self._db.write_sql(clear)

    async def renew(self, reminder_id: int, occurrence: float, claimant: str, now: float) -> None:
        """The claimer is still delivering `occurrence` (to many recipients): its claim is fresh."""

        def renew(sql: Sql) -> None:
            sql.run("UPDATE reminder SET claimed_at = :now WHERE id = :id AND pending_at = :due "
                    "AND claimed_by = :claimant", {"now": now, "id": reminder_id, "due": occurrence,
                                                   "claimant": claimant})  # fmt: skip

        await self._db.write_sql(renew)

    async def orphans(self, mine: str, claimant_prefix: str, stale_before: float) -> list[Reminder]:
        """Pending occurrences whose claimer is gone: claimed by an earlier incarnation of this
        worker (a claimant with `claimant_prefix` other than `mine`), or by anyone before
        `stale_before`."""
        rows = await self._db.select(
            f"SELECT {_COLUMNS} FROM reminder WHERE pending_at IS NOT NULL AND claimed_by <> :mine "
            "AND (claimed_by LIKE :prefix OR claimed_at < :before) ORDER BY pending_at, id",
            {"mine": mine, "prefix": claimant_prefix.replace("%", "") + "%", "before": stale_before},
        )  # fmt: skip
        return [_reminder(row) for row in rows]

    async def reclaim(self, reminder: Reminder, claimant: str, now: float) -> bool:
        """Take over an orphaned pending occurrence (as `claim`: only one taker wins)."""

        def reclaim(sql: Sql) -> bool:
            return sql.run(
                "UPDATE reminder SET claimed_by = :claimant, claimed_at = :now WHERE id = :id "
                "AND pending_at = :due AND claimed_by = :old AND claimed_at = :old_at",
                {"claimant": claimant, "now": now, "id": reminder.id, "due": reminder.pending_at,
                 "old": reminder.claimed_by, "old_at": reminder.claimed_at},
            ) == 1  # fmt: skip

        return await self._db.write_sql(reclaim)
