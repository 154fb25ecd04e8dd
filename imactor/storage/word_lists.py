"""The sensitive-word filter's lists (`imactor.modules.word_filter`, `imactor filter ...`).

A list has a name, a scope ("server", "domain:<domain>", "room:<room bare JID>"), an action
("mask", "reject", "alert") and words, stored folded (`imactor.wordmatch.fold_word`: ``Bad`` and
``ＢＡＤ`` are one word). Every change bumps the one-row counter `word_filter_version` in the same
transaction, so that a running worker learns of it from one small read.

Plain SQL with ``:name`` parameters (`Database.select_many`, `Database.write_sql`) that runs on
SQLite and PostgreSQL alike (``INSERT ... ON CONFLICT DO NOTHING`` is in both).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass

from imactor.storage.db import Database, Sql
from imactor.wordmatch import ACTIONS, fold_word
from imactor.xmpp.jid import JID, InvalidJID, prep_localpart

#: A list's name: short, for commands and alerts.
NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")

_VERSION = "SELECT version FROM word_filter_version WHERE id = 1"
_LISTS = "SELECT name, scope, action FROM word_list ORDER BY name"
_WORDS = "SELECT name, word FROM word_list_word ORDER BY name, word"
_BUMP = (
    "INSERT INTO word_filter_version (id, version) VALUES (1, 0) ON CONFLICT (id) DO NOTHING",
    "UPDATE word_filter_version SET version = version + 1 WHERE id = 1",
)
_EXISTS = "SELECT 1 FROM word_list WHERE name = :name"
_CREATE = "INSERT INTO word_list (name, scope, action, updated_at) VALUES (:name, :scope, :action, :now)"
_INSERT_WORD = (
    "INSERT INTO word_list_word (name, word) VALUES (:name, :word) ON CONFLICT (name, word) DO NOTHING"
)
_DELETE_WORD = "DELETE FROM word_list_word WHERE name = :name AND word = :word"
_SET_SCOPE = "UPDATE word_list SET scope = :scope, updated_at = :now WHERE name = :name"
_SET_ACTION = "UPDATE word_list SET action = :action, updated_at = :now WHERE name = :name"
_TOUCH = "UPDATE word_list SET updated_at = :now WHERE name = :name"
_DROP = ("DELETE FROM word_list_word WHERE name = :name", "DELETE FROM word_list WHERE name = :name")


class NoSuchList(LookupError):
    """No word list of that name."""


@dataclass(frozen=True, slots=True)
class StoredWordList:
    name: str
    scope: str
    action: str
    words: tuple[str, ...]  #: folded, sorted


@dataclass(frozen=True, slots=True)
class WordLists:
    """Every list, as one read saw them, and the change counter at that read."""

    version: int
    lists: tuple[StoredWordList, ...]


def check_name(name: str) -> str:
    """Raises `ValueError` unless `name` is a list name (`NAME`)."""
    if not NAME.fullmatch(name):
        raise ValueError(f"invalid list name {name!r}: lower-case letters, digits, '_', '.', '-' (<= 64)")
    return name


def check_action(action: str) -> str:
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}: expected one of {', '.join(ACTIONS)}")
    return action


def parse_scope(raw: str, domain: str, room_domain: str) -> str:
    """A list's scope as stored, from what an administrator typed: "server", "domain:<domain>"
    or "room:<room>" (a bare room name is a room of `room_domain`, the rooms of `domain`).

    Raises:
        ValueError: not one of those forms, or not a valid domain or room (the message starts
            with `raw`).
    """
    kind, _, value = raw.partition(":")
    if kind == "server" and not value:
        return "server"
    try:
        if kind == "domain" and value:
            jid = JID.parse(value)
            if jid.localpart is None and jid.resourcepart is None:
                return f"domain:{jid}"
        elif kind == "room" and value:
            if "@" not in value:
                return f"room:{prep_localpart(value)}@{room_domain}"
            jid = JID.parse(value)
            if jid.localpart is not None and jid.resourcepart is None:
                return f"room:{jid}"
    except (InvalidJID, ValueError) as exc:
        raise ValueError(f"{raw}: {exc}") from None
    raise ValueError(f'{raw}: expected "server", "domain:DOMAIN" or "room:ROOM"')


class WordListStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def version(self) -> int:
        """The change counter (0: never changed): a small indexed read, cheap to poll."""
        rows = await self._db.select(_VERSION, {})
        return int(rows[0][0]) if rows else 0

    async def load(self) -> WordLists:
        """Every list with its words, in one read transaction."""
        version, lists, words = await self._db.select_many([(_VERSION, {}), (_LISTS, {}), (_WORDS, {})])
        by_name: dict[str, list[str]] = {name: [] for name, _, _ in lists}
        for name, word in words:
            by_name.setdefault(name, []).append(word)
        stored = tuple(
            StoredWordList(name, scope, action, tuple(by_name[name])) for name, scope, action in lists
        )
        return WordLists(int(version[0][0]) if version else 0, stored)

    async def add_words(
        self, name: str, words: Iterable[str], *, scope: str | None = None, action: str | None = None
    ) -> int:
        """Add words to the list `name`, creating it (default scope "server", action "mask")
        if there is none; a given `scope` or `action` is set on the list. Returns how many words
        were new.

        Raises:
            BadWord: a word is empty once folded or too long; nothing was changed.
            ValueError: a bad name or action.
        """
        check_name(name)
        if action is not None:
            check_action(action)
        folded = sorted({fold_word(word) for word in words})

        def add(sql: Sql) -> int:
            _ensure(sql, name, scope, action)
            added = sum(sql.run(_INSERT_WORD, {"name": name, "word": word}) for word in folded)
            _bump(sql)
            return added

        return await self._db.write_sql(add)

    async def remove_words(self, name: str, words: Iterable[str]) -> int:
        """Remove words from the list `name`; returns how many were there.

        Raises:
            NoSuchList: there is no such list.
        """
        folded = sorted({fold_word(word) for word in words})

        def remove(sql: Sql) -> int:
            _require(sql, name)
            removed = sum(sql.run(_DELETE_WORD, {"name": name, "word": word}) for word in folded)
            if removed:
                sql.run(_TOUCH, {"name": name, "now": time.time()})
                _bump(sql)
            return removed

        return await self._db.write_sql(remove)

    async def configure(self, name: str, *, scope: str | None = None, action: str | None = None) -> None:
        """Set the scope and/or action of the list `name`.

        Raises:
            NoSuchList: there is no such list.
            ValueError: a bad action.
        """
        if action is not None:
            check_action(action)

        def update(sql: Sql) -> None:
            _require(sql, name)
            _ensure(sql, name, scope, action)
            _bump(sql)

        await self._db.write_sql(update)

    async def drop(self, name: str) -> bool:
        """Delete the list `name` with its words; False if there was none."""

        def delete(sql: Sql) -> bool:
            sql.run(_DROP[0], {"name": name})
            existed = sql.run(_DROP[1], {"name": name}) > 0
            if existed:
                _bump(sql)
            return existed

        return await self._db.write_sql(delete)


def _require(sql: Sql, name: str) -> None:
    if not sql.rows(_EXISTS, {"name": name}):
        raise NoSuchList(name)


def _ensure(sql: Sql, name: str, scope: str | None, action: str | None) -> None:
    """Create the list with defaults if it is new; set what is given."""
    now = time.time()
    if not sql.rows(_EXISTS, {"name": name}):
        sql.run(_CREATE, {"name": name, "scope": scope or "server", "action": action or "mask", "now": now})
        return
    if scope is not None:
        sql.run(_SET_SCOPE, {"name": name, "scope": scope, "now": now})
    if action is not None:
        sql.run(_SET_ACTION, {"name": name, "action": action, "now": now})
    sql.run(_TOUCH, {"name": name, "now": now})


def _bump(sql: Sql) -> None:
    for statement in _BUMP:
        sql.run(statement, {})
