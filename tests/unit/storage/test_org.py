"""The company directory in the database (`imactor.storage.org`), on SQLite and PostgreSQL."""

from __future__ import annotations

import sqlite3

import pytest

from imactor.directory.org import Department, Org, OrgError, Person, changes
from imactor.storage import Storage, schema
from tests.unit.storage.conftest import sqlite_only

ORG = Org(
    (Department("acme", "Acme", None), Department("sales", "Sales", "acme"),
     Department("rnd", "R&D", "acme", 1), Department("emea", "EMEA", "sales")),
    (Person("alice", "Alice Liu", "emea", "Manager", "+86 10 1234", "alice@example.com"),
     Person("bob", "鲍勃", "sales", position=0), Person("carol", "Carol", "emea", position=1)),
)  # fmt: skip


async def test_an_import_replaces_the_directory_and_bumps_the_counter(storage: Storage) -> None:
    assert await storage.org.version() == 0
    assert await storage.org.load() == (0, Org())
    assert await storage.org.replace(ORG) == 1
    version, loaded = await storage.org.load()
    assert version == 1
    assert changes(loaded, ORG) == []  # every field kept, in any row order
    moved = Org(ORG.departments, (Person("alice", "Alice Liu", "rnd"),))  # bob and carol left
    assert await storage.org.replace(moved) == 2
    version, loaded = await storage.org.load()
    assert (version, loaded.people) == (2, (Person("alice", "Alice Liu", "rnd"),))


async def test_a_cycle_changes_nothing(storage: Storage) -> None:
    await storage.org.replace(ORG)
    cyclic = Org((Department("a", "A", "b"), Department("b", "B", "a")), ())
    with pytest.raises(OrgError, match="its own ancestor"):
        await storage.org.replace(cyclic)
    assert await storage.org.version() == 1
    assert changes((await storage.org.load())[1], ORG) == []


@sqlite_only  # the version-6 file is made with sqlite3 (on PostgreSQL, `test_postgres` covers migrations)
async def test_a_version_6_database_gets_the_tables(db_url: str) -> None:
    """Schema version 7 adds the directory to a database written before it."""
    path = db_url.removeprefix("sqlite:///")
    async with await Storage.open(db_url):
        pass
    with sqlite3.connect(path) as conn:
        # and what came after (a real version 6 database has none of it)
        for table in ("org_person", "org_department", "org_version", "cluster_node", "cluster_state"):
            conn.execute(f"DROP TABLE {table}")
        conn.execute("UPDATE schema_version SET version = 6")
    async with await Storage.open(db_url) as storage:
        assert await storage.org.replace(ORG) == 1
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(schema.current_version(),)]


async def test_a_replace_against_an_older_version_changes_nothing(storage: Storage) -> None:
    from imactor.storage.org import OrgChanged

    version = await storage.org.replace(ORG)
    edited = Org(ORG.departments, ORG.people[:1])
    assert await storage.org.replace(edited, expected_version=version) == version + 1
    with pytest.raises(OrgChanged):  # another administrator's change, made against `version`
        await storage.org.replace(ORG, expected_version=version)
    now, loaded = await storage.org.load()
    assert now == version + 1
    assert changes(loaded, edited) == []
