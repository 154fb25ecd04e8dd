"""The table of XEP-0484 FAST tokens (`imactor.storage.fast_tokens` reads and writes it).

Kept apart from `models.py`, which lists it in `TABLES` for fresh databases; schema version 14
adds it to older ones (`schema.py`). Times are UTC seconds since the epoch.
"""

from __future__ import annotations

from sqlmodel import Field, SQLModel


class FastTokenRow(SQLModel, table=True):
    """One slot of one client's tokens: ``new`` (the last issued) or ``current`` (the last used).

    `token_hash` is the token's SHA-256 (hex), never the token (`imactor.xmpp.fast` says why that
    is enough to check a login). `client` is the client's XEP-0388 <user-agent id/>.
    """

    __tablename__ = "fast_token"

    username: str = Field(primary_key=True, foreign_key="account.username", ondelete="CASCADE")
    client: str = Field(primary_key=True, max_length=128)
    slot: str = Field(primary_key=True, max_length=8)
    token_hash: str = Field(max_length=64)
    mechanism: str = Field(max_length=40)
    expires_at: float
    last_count: int = -1  #: the highest XEP-0484 'count' accepted with it; -1: none yet
    created: float
