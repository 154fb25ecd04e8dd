"""Pending offline-message email digests and the accounts' choice about them (`email_digest`).

A digest is one row per account (`email_digest`) and one row per message in it
(`email_digest_entry`). The row is created by the account's first message stored offline and
is due a quiet period later; messages stored meanwhile add entries. A sender *claims* a due
digest (`claim`: an UPDATE that only one caller, of any process or node, can win), mails it and
then `finish`es it, which deletes the entries it mailed; entries that arrived during the send
start the next digest. A failed send is put back with a later due time (`retry`), or given up
on (`finish` as well). Everything is a plain statement on the lean paths (`Database.write_sql`,
`Database.select`), which both SQLite and PostgreSQL run.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass

from imactor.storage.db import Database, Sql

#: A new digest, unless one is pending; nothing for an unknown account (the SELECT is empty).
_OPEN = (
    "INSERT INTO email_digest (username, digest_id, first_at, due_at, attempts, claimed_until) "
    "SELECT username, :digest_id, :now, :due_at, 0, 0 FROM account WHERE username = :username "
    "ON CONFLICT (username) DO NOTHING"
)
_ADD = (
    "INSERT INTO email_digest_entry (username, sender, text, stored_at) "
    "SELECT username, :sender, :text, :now FROM account WHERE username = :username"
)
#: The account came online: a digest that no sender holds is dropped, entries and all.
_SEEN = "DELETE FROM email_digest WHERE username = :username AND claimed_until < :now"
_SEEN_ENTRIES = (
    "DELETE FROM email_digest_entry WHERE username = :username "
    "AND NOT EXISTS (SELECT 1 FROM email_digest WHERE username = :username)"
)
_DUE = (
    "SELECT username FROM email_digest WHERE due_at <= :now AND claimed_until < :now "
    "ORDER BY due_at LIMIT :limit"
)
_CLAIM = (
    "UPDATE email_digest SET claimed_until = :until "
    "WHERE username = :username AND due_at <= :now AND claimed_until < :now"
)
_DIGEST = "SELECT digest_id, first_at, attempts FROM email_digest WHERE username = :username"
_ENTRIES = "SELECT id, sender, text, stored_at FROM email_digest_entry WHERE username = :username ORDER BY id"
_DROP_ENTRIES = "DELETE FROM email_digest_entry WHERE username = :username AND id <= :last"
_LEFT = "SELECT min(stored_at) FROM email_digest_entry WHERE username = :username"
_DROP = "DELETE FROM email_digest WHERE username = :username"
_RENEW = (
    "UPDATE email_digest SET digest_id = :digest_id, first_at = :first_at, due_at = :due_at, "
    "attempts = 0, claimed_until = 0 WHERE username = :username"
)
_RETRY = (
    "UPDATE email_digest SET attempts = attempts + 1, due_at = :due_at, claimed_until = 0 "
    "WHERE username = :username"
)
_ENABLED = "SELECT enabled FROM email_notify WHERE username = :username"
_SET_ENABLED = (
    "INSERT INTO email_notify (username, enabled) SELECT username, :enabled FROM account "
    "WHERE username = :username ON CONFLICT (username) DO UPDATE SET enabled = excluded.enabled"
)


def new_digest_id() -> str:
    return secrets.token_hex(12)


@dataclass(frozen=True, slots=True)
class DigestEntry:
    id: int
    sender: str  #: bare JID
    text: str  #: "" unless the text was kept
    stored_at: float


@dataclass(frozen=True, slots=True)
class Digest:
    """A claimed digest, as its sender reads it."""

    username: str
    digest_id: str
    first_at: float
    attempts: int  #: failed sends before this one
    entries: tuple[DigestEntry, ...]

    @property
    def last_id(self) -> int:
        return self.entries[-1].id if self.entries else 0


class EmailDigestStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def add(self, username: str, sender: str, text: str, *, quiet_period: float) -> None:
        """Note one message stored offline: into the pending digest, or a new one due
        `quiet_period` seconds from now. Nothing for an unknown account."""
        now = time.time()
        values = {"username": username, "digest_id": new_digest_id(), "now": now,
                  "due_at": now + quiet_period, "sender": sender, "text": text}  # fmt: skip

        def insert(sql: Sql) -> None:
            sql.run(_OPEN, values)
            sql.run(_ADD, values)

        await self._db.write_sql(insert)

    async def seen(self, username: str) -> None:
        """The account came online and got its messages: drop its digest unless it is being sent."""
        values = {"username": username, "now": time.time()}

        def delete(sql: Sql) -> None:
            sql.run(_SEEN, values)
            sql.run(_SEEN_ENTRIES, values)

        await self._db.write_sql(delete)

    async def due(self, now: float, limit: int = 100) -> list[str]:
        """Accounts whose digest is due and held by no sender, the most overdue first."""
        rows = await self._db.select(_DUE, {"now": now, "limit": limit})
        return [str(row[0]) for row in rows]

    async def claim(self, username: str, now: float, lease: float) -> Digest | None:
        """Hold the account's due digest for `lease` seconds and read it; None when it is not due
        or another sender holds it (a sender that died lets go when its lease ends)."""
        values = {"username": username, "now": now, "until": now + lease}

        def take(sql: Sql) -> Digest | None:
            if sql.run(_CLAIM, values) != 1:
                return None
            digest_id, first_at, attempts = sql.rows(_DIGEST, values)[0]
            entries = tuple(DigestEntry(int(i), str(s), str(t or ""), float(at))
                            for i, s, t, at in sql.rows(_ENTRIES, values))  # fmt: skip
            return Digest(username, str(digest_id), float(first_at), int(attempts), entries)

        return await self._db.write_sql(take)

    async def finish(self, digest: Digest, *, quiet_period: float) -> None:
        """The digest was sent (or given up on): delete what it held. Entries added while it was
        being sent become a new digest, due a quiet period after the oldest of them."""
        values = {"username": digest.username, "last": digest.last_id}

        def close(sql: Sql) -> None:
            sql.run(_DROP_ENTRIES, values)
            oldest = sql.rows(_LEFT, values)[0][0]
            if oldest is None:
                sql.run(_DROP, values)
            else:
                sql.run(_RENEW, {"username": digest.username, "digest_id": new_digest_id(),
                                 "first_at": oldest, "due_at": float(oldest) + quiet_period})  # fmt: skip

        await self._db.write_sql(close)

    async def retry(self, username: str, due_at: float) -> None:
        """A send failed: count it and let the digest be claimed again at `due_at`."""
        await self._db.write_sql(lambda sql: sql.run(_RETRY, {"username": username, "due_at": due_at}))

    async def enabled(self, username: str) -> bool:
        """Whether the account wants digests (the default)."""
        rows = await self._db.select(_ENABLED, {"username": username})
        return bool(rows[0][0]) if rows else True

    async def set_enabled(self, username: str, enabled: bool) -> bool:
        """Turn the account's digests on or off; False when there is no such account."""
        values = {"username": username, "enabled": enabled}
        return await self._db.write_sql(lambda sql: sql.run(_SET_ENABLED, values) == 1)

    async def pending(self) -> Sequence[tuple[str, int]]:
        """(account, messages) of every pending digest: for the administrator and the tests."""
        rows = await self._db.select(
            "SELECT username, count(*) FROM email_digest_entry GROUP BY username ORDER BY username", {}
        )
        return [(str(u), int(n)) for u, n in rows]
