"""The table of scheduled reminders (`imactor.storage.reminders` reads and writes it).

Kept apart from `models.py`, which lists it in `TABLES` for fresh databases; schema version 11
adds it to older ones (`schema.py`). Times are UTC seconds since the epoch.
"""

from __future__ import annotations

from sqlalchemy import Index
from sqlmodel import Field, SQLModel


class ReminderRow(SQLModel, table=True):
    """One reminder: who set it, for whom, what it says and when it is due next.

    `pending_at` is the occurrence being delivered (its due time): set in the same transaction
    that claims the reminder and advances `next_at`, cleared once the message was routed. A row
    whose `pending_at` outlives its claimer is delivered again, with the same stanza id.
    """

    __tablename__ = "reminder"
    __table_args__ = (Index("ix_reminder_state_next_at", "state", "next_at"),)

    id: int | None = Field(default=None, primary_key=True)
    owner: str = Field(index=True, foreign_key="account.username", ondelete="CASCADE")
    recipients: str  #: JSON list of bare JIDs; ["*"]: every account of the server
    text: str
    next_at: float  #: the next (or, once done, the last) due time
    repeat: str = "none"  #: none, daily, weekdays or weekly
    state: str = "active"  #: active, done or cancelled
    pending_at: float | None = None
    claimed_by: str | None = None  #: the worker that claimed the pending occurrence
    claimed_at: float | None = None
    created: float
