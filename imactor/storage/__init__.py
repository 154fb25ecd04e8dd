"""Persistent storage: the only package that imports sqlmodel / SQLAlchemy (STYLE §12 rule 2).

SQLite (WAL) by default, or PostgreSQL through psycopg 3 (a cluster's store; partitioned by
user). Every call is a coroutine (its SQL in a worker thread, or on SQLite for the lean calls on
the loop's own thread); writes are group-committed by one writer per process. See
`imactor.storage.db` for the concurrency model, `imactor.storage.postgres` for PostgreSQL and
`imactor.storage.schema` for versioning and partitions.
"""

from __future__ import annotations

from imactor.storage.accounts import HASH_NAMES, AccountStore
from imactor.storage.archive import (
    ARCHIVE_MODES,
    ArchivedItem,
    ArchiveEntry,
    ArchiveFilter,
    ArchivePage,
    ArchivePrefs,
    ArchiveStore,
    archiving_wanted,
)
from imactor.storage.core import Storage
from imactor.storage.db import StorageStatistics
from imactor.storage.errors import (
    AccountExists,
    AccountNotFound,
    ArchiveItemNotFound,
    StorageError,
    StorageFull,
)
from imactor.storage.roster import SUBSCRIPTIONS, RosterItem, RosterStore
from imactor.storage.stores import (
    BlockingStore,
    LastActivityStore,
    OfflineStore,
    PrivateStore,
    VCardStore,
)

__all__ = [
    "ARCHIVE_MODES",
    "HASH_NAMES",
    "SUBSCRIPTIONS",
    "AccountExists",
    "AccountNotFound",
    "AccountStore",
    "ArchiveEntry",
    "ArchiveFilter",
    "ArchiveItemNotFound",
    "ArchivePage",
    "ArchivePrefs",
    "ArchiveStore",
    "ArchivedItem",
    "BlockingStore",
    "LastActivityStore",
    "OfflineStore",
    "PrivateStore",
    "RosterItem",
    "RosterStore",
    "Storage",
    "StorageError",
    "StorageFull",
    "StorageStatistics",
    "VCardStore",
    "archiving_wanted",
]
