"""The company directory (`imactor.org`): departments and people, replaced whole by an import.

Plain SQL with ``:name`` parameters that runs on SQLite and PostgreSQL alike. Every change bumps
the one-row counter `org_version` in the same transaction (as the word lists do), so that a
running worker learns of it from one small read.
"""

from __future__ import annotations

from imactor.directory.org import Department, Org, Person, check
from imactor.storage.db import Database, Sql

_VERSION = "SELECT version FROM org_version WHERE id = 1"
_DEPARTMENTS = "SELECT key, name, parent, position FROM org_department ORDER BY parent, position, key"
_PEOPLE = "SELECT username, name, department, title, phone, email, position FROM org_person ORDER BY username"
_CLEAR = ("DELETE FROM org_person", "DELETE FROM org_department")
_INSERT_DEPARTMENT = (
    "INSERT INTO org_department (key, name, parent, position) VALUES (:key, :name, :parent, :position)"
)
_INSERT_PERSON = (
    "INSERT INTO org_person (username, name, department, title, phone, email, position) "
    "VALUES (:username, :name, :department, :title, :phone, :email, :position)"
)
_BUMP = (
    "INSERT INTO org_version (id, version) VALUES (1, 0) ON CONFLICT (id) DO NOTHING",
    "UPDATE org_version SET version = version + 1 WHERE id = 1",
)


class OrgChanged(Exception):
    """The directory changed since the version a change was made against (another
    administrator, an import): nothing was written; read it again."""


class OrgStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def version(self) -> int:
        """The change counter (0: never imported): a small indexed read, cheap to poll."""
        rows = await self._db.select(_VERSION, {})
        return int(rows[0][0]) if rows else 0

    async def load(self) -> tuple[int, Org]:
        """The change counter and the whole directory, in one read transaction."""
        version, departments, people = await self._db.select_many(
            [(_VERSION, {}), (_DEPARTMENTS, {}), (_PEOPLE, {})]
        )
        org = Org(
            tuple(Department(key, name, parent, int(pos)) for key, name, parent, pos in departments),
            tuple(Person(u, n, d, t, p, e, int(pos)) for u, n, d, t, p, e, pos in people),
        )
        return (int(version[0][0]) if version else 0), org

    async def replace(self, org: Org, *, expected_version: int | None = None) -> int:
        """Make `org` the directory (the old one is dropped in the same transaction); returns
        the new change counter. With `expected_version`, only if the counter still has that
        value (a change made against what one read, as the admin console's are).

        Raises:
            OrgError: `org` is not a tree (`imactor.org.check`); nothing was changed.
            OrgChanged: the counter is not `expected_version`; nothing was changed.
        """
        check(org)

        def write(sql: Sql) -> int:
            if expected_version is not None:
                rows = sql.rows(_VERSION, {})
                if (int(rows[0][0]) if rows else 0) != expected_version:
                    raise OrgChanged("the directory changed meanwhile")
            for statement in _CLEAR:
                sql.run(statement, {})
            if org.departments:
                sql.run_many(_INSERT_DEPARTMENT, [
                    {"key": d.key, "name": d.name, "parent": d.parent, "position": d.position}
                    for d in org.departments
                ])  # fmt: skip
            if org.people:
                sql.run_many(_INSERT_PERSON, [
                    {"username": p.username, "name": p.name, "department": p.department, "title": p.title,
                     "phone": p.phone, "email": p.email, "position": p.position}
                    for p in org.people
                ])  # fmt: skip
            for statement in _BUMP:
                sql.run(statement, {})
            return int(sql.rows(_VERSION, {})[0][0])

        return await self._db.write_sql(write)
