"""XEP-0484 FAST tokens, stored hashed, two slots per client (`imactor.xmpp.fast` explains both).

A client is an account and the <user-agent id/> its installation sent. `issue` puts a fresh
token in the ``new`` slot (dropping a previous unused one, XEP-0484 §4.5); `use` records a
successful login: a ``new`` token becomes ``current`` and the older ``current`` is gone, and
the login's `count` is kept, in one conditional UPDATE, so that of two logins replaying the same
count on two workers (or nodes) only one succeeds. `revoke_all` is ``imactor user
logout-everywhere``.
"""

from __future__ import annotations

from imactor.storage.db import Database, Sql
from imactor.xmpp.fast import CURRENT, NEW, StoredToken

__all__ = ["FastTokenStore"]

_WHERE = "WHERE username = :username AND client = :client"


class FastTokenStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def tokens(self, username: str, client: str) -> list[StoredToken]:
        """The client's stored tokens (none, one or two slots)."""
        return (await self.login(username, client))[0]

    async def login(self, username: str, client: str) -> tuple[list[StoredToken], bool]:
        """What a FAST login needs, in one read: the client's tokens (none, one or two slots),
        and whether the account is disabled (no account: no tokens)."""
        rows = await self._db.select(
            "SELECT a.disabled, t.slot, t.token_hash, t.mechanism, t.expires_at, t.last_count FROM account a "
            "LEFT JOIN fast_token t ON t.username = a.username AND t.client = :client "
            "WHERE a.username = :username",
            {"username": username, "client": client},
        )
        tokens = [
            StoredToken(str(slot), bytes.fromhex(str(key)), str(mechanism), float(expires), int(count))
            for _disabled, slot, key, mechanism, expires, count in rows
            if slot is not None
        ]
        return tokens, bool(rows[0][0]) if rows else False

    async def issue(self, username: str, client: str, key: bytes, mechanism: str, *, expires_at: float,
                    now: float) -> None:  # fmt: skip
        """Store a new token (its `key`, `imactor.xmpp.fast.token_key`) in the client's ``new``
        slot; the ``current`` one stays valid until this one is used."""

        def issue(sql: Sql) -> None:
            params = {"username": username, "client": client, "slot": NEW}
            sql.run(f"DELETE FROM fast_token {_WHERE} AND slot = :slot", params)
            sql.run(
                "INSERT INTO fast_token (username, client, slot, token_hash, mechanism, expires_at, "
                "last_count, created) "
                "VALUES (:username, :client, :slot, :hash, :mechanism, :expires_at, -1, :now)",
                {**params, "hash": key.hex(), "mechanism": mechanism, "expires_at": expires_at, "now": now},
            )

        await self._db.write_sql(issue)

    async def use(self, username: str, client: str, slot: str, count: int | None) -> bool:
        """Record a login with the token in `slot`; False when it is no longer there, or another
        login already used `count` (or a higher one) with it: a replay that lost the race."""

        def use(sql: Sql) -> bool:
            params = {
                "username": username,
                "client": client,
                "slot": slot,
                "count": -1 if count is None else count,
            }
            guard = "" if count is None else " AND last_count < :count"
            changed = sql.run(
                "UPDATE fast_token SET last_count = CASE WHEN last_count < :count THEN :count "
                f"ELSE last_count END {_WHERE} AND slot = :slot{guard}",
                params,
            )
            if changed != 1:
                return False
            if slot == NEW:
                # XEP-0484 §4.5: using the newer token ends the older one.
                sql.run(
                    f"DELETE FROM fast_token {_WHERE} AND slot = :current", {**params, "current": CURRENT}
                )
                sql.run(
                    f"UPDATE fast_token SET slot = :current {_WHERE} AND slot = :slot",
                    {**params, "current": CURRENT},
                )
            return True

        return await self._db.write_sql(use)

    async def invalidate(self, username: str, client: str, slot: str) -> None:
        """XEP-0484 §4.6: the client logged in with the token in `slot` and asked to end it."""

        def invalidate(sql: Sql) -> None:
            params = {"username": username, "client": client, "slot": slot}
            sql.run(f"DELETE FROM fast_token {_WHERE} AND slot = :slot", params)

        await self._db.write_sql(invalidate)

    async def revoke_all(self, username: str) -> int:
        """Every token of every client of the account; how many there were."""

        def revoke(sql: Sql) -> int:
            return sql.run("DELETE FROM fast_token WHERE username = :username", {"username": username})

        return await self._db.write_sql(revoke)
