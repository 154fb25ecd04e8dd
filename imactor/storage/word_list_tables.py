"""Tables of the sensitive-word filter (`imactor.storage.word_lists` reads and writes them).

Kept apart from `models.py`, which lists them in `TABLES` for fresh databases; schema version 6
adds them to older ones (`schema.py`). Column types are plain (text, integer, float), so that
the store's SQL runs unchanged on SQLite and PostgreSQL.
"""

from __future__ import annotations

from sqlmodel import Field, SQLModel


class WordListRow(SQLModel, table=True):
    """One named word list: where it applies ("server", "domain:<domain>", "room:<room JID>")
    and what it does ("mask", "reject", "alert")."""

    __tablename__ = "word_list"

    name: str = Field(primary_key=True)
    scope: str
    action: str
    updated_at: float


class WordListWord(SQLModel, table=True):
    """One word of a list, as the matcher compares it (folded: `imactor.wordmatch.fold_word`)."""

    __tablename__ = "word_list_word"

    name: str = Field(primary_key=True, foreign_key="word_list.name", ondelete="CASCADE")
    word: str = Field(primary_key=True)


class WordFilterVersion(SQLModel, table=True):
    """One row: bumped by every change of any list, so that running workers see that the lists
    changed with one small read (and rebuild their matcher only then)."""

    __tablename__ = "word_filter_version"

    id: int = Field(default=1, primary_key=True)
    version: int = 0
