"""The word filter's lists in the database (`imactor.storage.word_lists`)."""

from __future__ import annotations

import sqlite3

import pytest

from imactor.storage import Storage, schema
from imactor.storage.word_lists import NoSuchList, StoredWordList
from imactor.wordmatch import BadWord
from tests.unit.storage.conftest import sqlite_only


async def test_lists_words_and_the_change_counter(storage: Storage) -> None:
    lists = storage.word_lists
    assert await lists.version() == 0
    assert await lists.add_words("profanity", ["Darn", "ＤＡＲＮ", "heck"]) == 2  # one word, folded
    assert (
        await lists.add_words("secrets", ["绝密"], scope="room:lobby@conference.localhost", action="reject")
        == 1
    )
    assert await lists.add_words("profanity", ["darn"]) == 0
    await lists.configure("profanity", action="alert")
    assert await lists.remove_words("profanity", ["HECK", "never there"]) == 1
    loaded = await lists.load()
    assert loaded.lists == (
        StoredWordList("profanity", "server", "alert", ("darn",)),
        StoredWordList("secrets", "room:lobby@conference.localhost", "reject", ("绝密",)),
    )
    assert loaded.version == await lists.version() == 5  # every change bumped it (the no-op add too)
    assert await lists.drop("secrets")
    assert not await lists.drop("secrets")
    assert [wl.name for wl in (await lists.load()).lists] == ["profanity"]


async def test_bad_input_changes_nothing(storage: Storage) -> None:
    lists = storage.word_lists
    await lists.add_words("profanity", ["darn"])
    version = await lists.version()
    with pytest.raises(BadWord):
        await lists.add_words("profanity", ["fine", "..."])
    with pytest.raises(ValueError, match="invalid list name"):
        await lists.add_words("Not A Name", ["x"])
    with pytest.raises(ValueError, match="unknown action"):
        await lists.configure("profanity", action="shout")
    with pytest.raises(NoSuchList):
        await lists.remove_words("nothing", ["x"])
    with pytest.raises(NoSuchList):
        await lists.configure("nothing", action="mask")
    assert await lists.version() == version
    assert (await lists.load()).lists == (StoredWordList("profanity", "server", "mask", ("darn",)),)


@sqlite_only  # the version-5 file is made with sqlite3 (on PostgreSQL, `test_postgres` covers migrations)
async def test_a_version_5_database_gets_the_tables(db_url: str) -> None:
    """Schema version 6 adds the word lists to a database written before them."""
    path = db_url.removeprefix("sqlite:///")
    async with await Storage.open(db_url):
        pass
    with sqlite3.connect(path) as conn:
        for table in ("word_list_word", "word_list", "word_filter_version",  # and what came after them
                      "org_person", "org_department", "org_version", "cluster_node", "cluster_state"):
            conn.execute(f"DROP TABLE {table}")
        conn.execute("UPDATE schema_version SET version = 5")
    async with await Storage.open(db_url) as storage:
        assert await storage.word_lists.add_words("profanity", ["darn"]) == 1
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(schema.current_version(),)]
