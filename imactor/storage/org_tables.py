"""Tables of the company directory (`imactor.storage.org` reads and writes them).

Kept apart from `models.py`, which lists them in `TABLES` for fresh databases; schema version 7
adds them to older ones (`schema.py`). No foreign keys: an import replaces the whole directory in
one transaction, and a person may be listed before their account is created.
"""

from __future__ import annotations

from sqlmodel import Field, SQLModel


class OrgDepartment(SQLModel, table=True):
    """One department: its parent (None: top level) and its place among its siblings."""

    __tablename__ = "org_department"

    key: str = Field(primary_key=True)
    name: str
    parent: str | None = None
    position: int = 0


class OrgPerson(SQLModel, table=True):
    """One person of the directory, by account name."""

    __tablename__ = "org_person"

    username: str = Field(primary_key=True)
    name: str
    department: str
    title: str = ""
    phone: str = ""
    email: str = ""
    position: int = 0


class OrgVersion(SQLModel, table=True):
    """One row: bumped by every change of the directory, so that running workers see it with one
    small read (and re-read the directory only then)."""

    __tablename__ = "org_version"

    id: int = Field(default=1, primary_key=True)
    version: int = 0
