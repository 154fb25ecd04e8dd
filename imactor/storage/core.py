"""`Storage`: the one object through which the server reaches its database."""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType

from imactor.storage.accounts import AccountStore
from imactor.storage.archive import ArchiveStore
from imactor.storage.db import Database, StorageStatistics, json_list
from imactor.storage.email import EmailDigestStore
from imactor.storage.fast_tokens import FastTokenStore
from imactor.storage.motd import MotdStore
from imactor.storage.org import OrgStore
from imactor.storage.pubsub import PepStore
from imactor.storage.pubsub_service import PubsubServiceStore
from imactor.storage.push import PushStore
from imactor.storage.reminders import ReminderStore
from imactor.storage.rooms import RoomStore
from imactor.storage.roster import RosterItem, RosterStore
from imactor.storage.schema import DEFAULT_PARTITIONS, SchemaChange
from imactor.storage.stores import (
    BlockingStore,
    LastActivityStore,
    OfflineStore,
    PrivateStore,
    VCardStore,
)
from imactor.storage.word_lists import WordListStore
from imactor.storage.xep0227 import Xep0227Store

#: What a user actor reads when it starts: the account, its roster and its blocklist.
_ACCOUNT_SNAPSHOT = (
    "SELECT roster_version FROM account WHERE username = :username",
    "SELECT jid, name, subscription, ask, pending_in, approved, groups, listed FROM roster_item "
    "WHERE username = :username ORDER BY jid",
    "SELECT jid FROM blocked_jid WHERE username = :username ORDER BY jid",
)


@dataclass(frozen=True, slots=True)
class AccountSnapshot:
    """An account's roster and blocklist as one read saw them (`Storage.account_snapshot`)."""

    roster_version: int
    roster: list[RosterItem]
    blocked: list[str]


class Storage:
    """The typed stores of one database, sharing its reader pool and its single writer.

    Open with ``await Storage.open(url)`` and close with `aclose` (or use ``async with``). All
    methods of all stores are safe to call concurrently from many Trio tasks.
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        self.accounts = AccountStore(db)
        self.motd = MotdStore(db)
        self.roster = RosterStore(db)
        self.offline = OfflineStore(db)
        self.private = PrivateStore(db)
        self.vcards = VCardStore(db)
        self.blocking = BlockingStore(db)
        self.last_activity = LastActivityStore(db)
        self.archive = ArchiveStore(db)
        self.pep = PepStore(db)
        self.pubsub = PubsubServiceStore(db)
        self.push = PushStore(db)
        self.rooms = RoomStore(db)
        self.xep0227 = Xep0227Store(db, self.archive)
        self.word_lists = WordListStore(db)
        self.org = OrgStore(db)
        self.email = EmailDigestStore(db)
        self.reminders = ReminderStore(db)
        self.fast_tokens = FastTokenStore(db)

    @classmethod
    async def open(cls, url: str, *, partitions: int = DEFAULT_PARTITIONS) -> Storage:
        """Open the database at `url`, creating the SQLite file's directory and the schema.

        Args:
            url: A SQLAlchemy URL, e.g. ``sqlite:////abs/path/imactor.sqlite3`` or
                ``postgresql+psycopg://imactor:secret@db.example.com/imactor``.
            partitions: PostgreSQL: hash partitions of the per-user tables when the schema is
                created by this call (``[storage] partitions``); ignored on SQLite.

        Raises:
            StorageError: Bad URL, unreachable database, or a schema newer than this code.
        """
        return cls(await Database.open(url, partitions=partitions))

    @property
    def schema_change(self) -> SchemaChange | None:
        """What opening the database did to its schema."""
        return self._db.schema_change

    @property
    def url(self) -> str:
        """The database URL this storage was opened with."""
        return self._db.url

    async def account_snapshot(self, username: str) -> AccountSnapshot | None:
        """The account's roster and blocklist, or None if there is no such account.

        A user actor starts with this at every login after an idle spell: one read transaction
        and one trip to a thread, where the separate stores would take three of each.
        """
        params = {"username": username}
        account, roster, blocked = await self._db.select_many([(sql, params) for sql in _ACCOUNT_SNAPSHOT])
        if not account:
            return None
        items = [
            RosterItem(
                jid=jid,
                name=name,
                subscription=subscription,
                ask=bool(ask),
                pending_in=bool(pending_in),
                approved=bool(approved),
                groups=json_list(groups),
                listed=bool(listed),
            )
            for jid, name, subscription, ask, pending_in, approved, groups, listed in roster
        ]
        return AccountSnapshot(account[0][0], items, [jid for (jid,) in blocked])

    def statistics(self) -> StorageStatistics:
        """Write batching and reader counters (see `StorageStatistics`)."""
        return self._db.statistics()

    def commit_latency(self) -> dict[str, object]:
        """The histogram of the write batches' commit times (`imactor.histogram`)."""
        return self._db.commit_latency.snapshot()

    async def aclose(self) -> None:
        """Write what is noted or queued and close the database. Idempotent."""
        await self.last_activity.flush()
        await self._db.aclose()

    async def __aenter__(self) -> Storage:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
