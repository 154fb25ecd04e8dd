"""`Storage`: the one object through which the server reaches its database."""

from __future__ import annotations

from types import TracebackType

from imactor.storage.accounts import AccountStore
from imactor.storage.archive import ArchiveStore
from imactor.storage.db import Database, StorageStatistics
from imactor.storage.pubsub import PepStore
from imactor.storage.push import PushStore
from imactor.storage.rooms import RoomStore
from imactor.storage.roster import RosterStore
from imactor.storage.stores import (
    BlockingStore,
    LastActivityStore,
    OfflineStore,
    PrivateStore,
    VCardStore,
)


class Storage:
    """The typed stores of one database, sharing its reader pool and its single writer.

    Open with ``await Storage.open(url)`` and close with `aclose` (or use ``async with``). All
    methods of all stores are safe to call concurrently from many Trio tasks.
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        self.accounts = AccountStore(db)
        self.roster = RosterStore(db)
        self.offline = OfflineStore(db)
        self.private = PrivateStore(db)
        self.vcards = VCardStore(db)
        self.blocking = BlockingStore(db)
        self.last_activity = LastActivityStore(db)
        self.archive = ArchiveStore(db)
        self.pep = PepStore(db)
        self.push = PushStore(db)
        self.rooms = RoomStore(db)

    @classmethod
    async def open(cls, url: str) -> Storage:
        """Open the database at `url`, creating the SQLite file's directory and the schema.

        Args:
            url: A SQLAlchemy URL, e.g. ``sqlite:////abs/path/imactor.sqlite3``.

        Raises:
            StorageError: Bad URL, unreachable database, or a schema newer than this code.
        """
        return cls(await Database.open(url))

    @property
    def url(self) -> str:
        """The database URL this storage was opened with."""
        return self._db.url

    def statistics(self) -> StorageStatistics:
        """Write batching and reader counters (see `StorageStatistics`)."""
        return self._db.statistics()

    async def aclose(self) -> None:
        """Wait for queued writes and close the database. Idempotent."""
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
