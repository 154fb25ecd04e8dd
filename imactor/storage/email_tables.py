"""Tables of the offline-message email digests (`imactor.storage.email` reads and writes them).

Kept apart from `models.py`, which lists them in `TABLES` for fresh databases; schema version 10
adds them to older ones (`schema.py`).
"""

from __future__ import annotations

from sqlmodel import Field, SQLModel


class EmailDigestRow(SQLModel, table=True):
    """The digest an account has pending: one row from its first unseen message until the mail
    was sent (or given up on), or the account came online."""

    __tablename__ = "email_digest"

    username: str = Field(primary_key=True, foreign_key="account.username", ondelete="CASCADE")
    digest_id: str  #: names this digest's mail (its Message-ID): a resent mail keeps it
    first_at: float  #: when its first message was stored offline
    due_at: float  #: when to send it next (the quiet period's end, then the retries' times)
    attempts: int = 0  #: failed sends so far
    claimed_until: float = 0.0  #: a sender holds it until then (0: nobody)


class EmailDigestEntry(SQLModel, table=True):
    """One message of a pending digest: who sent it and, with ``include_text``, its text."""

    __tablename__ = "email_digest_entry"
    # Ids only grow: a sender deletes the entries up to the last one it mailed, and those that
    # arrived meanwhile stay for the next digest.
    __table_args__ = {"sqlite_autoincrement": True}

    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(foreign_key="account.username", ondelete="CASCADE", index=True)
    sender: str  #: the sender's bare JID
    text: str = ""  #: the body, only when the module's ``include_text`` was on
    stored_at: float


class EmailNotifyRow(SQLModel, table=True):
    """An account's choice about digests; no row: on."""

    __tablename__ = "email_notify"

    username: str = Field(primary_key=True, foreign_key="account.username", ondelete="CASCADE")
    enabled: bool
