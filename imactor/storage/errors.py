"""Exceptions raised by the storage layer.

Callers outside `imactor.storage` never see SQLAlchemy exceptions: database failures arrive as
`StorageError`, so no other package needs to import sqlalchemy (STYLE §12 rule 2).
"""

from __future__ import annotations


class StorageError(Exception):
    """The database failed or cannot be used (I/O error, newer schema, unsupported URL…)."""


class StorageFull(StorageError):
    """A write failed because the disk (or the user's quota) is full: nothing of it was stored,
    and the same write may succeed once space returns."""


class AccountExists(Exception):
    """An account with this username already exists."""


class AccountNotFound(Exception):
    """No account has this username."""


class ArchiveItemNotFound(Exception):
    """No message with this stanza id in the account's archive (XEP-0313 item-not-found)."""
