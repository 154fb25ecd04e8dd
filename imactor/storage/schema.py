"""Schema creation and versioning.

The database records its schema version in the one-row `schema_version` table. At open:

- an empty database gets every table of the current version;
- an older database is upgraded by running the steps of `MIGRATIONS` in order, in the same
  transaction as the version bump, so a failed upgrade leaves the old schema intact;
- a newer database (written by a later imactor) is refused: guessing at a schema we do not know
  could corrupt it.

To change the schema, edit `models.py` (fresh databases are created from it) *and* append a step
here that brings a database of the previous version to the same shape.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Connection, inspect, select

from imactor.storage.errors import StorageError
from imactor.storage.models import TABLES, ArchivedMessage, ArchivePrefsRow, RoomMessage, RoomRow


@dataclass(frozen=True, slots=True)
class Migration:
    """One upgrade step, from version ``to_version - 1`` to `to_version`."""

    to_version: int
    description: str
    apply: Callable[[Connection], None]


def _add_archive(conn: Connection) -> None:
    """Version 2: the XEP-0313 archive and its preferences (tables with their indexes)."""
    for model in (ArchivedMessage, ArchivePrefsRow):
        table = getattr(model, "__table__")  # noqa: B009 - SQLModel declares it untyped
        table.create(conn)


def _add_rooms(conn: Connection) -> None:
    """Version 3: multi-user chat rooms and their archives."""
    for model in (RoomRow, RoomMessage):
        getattr(model, "__table__").create(conn)  # noqa: B009 - SQLModel declares it untyped


def _add_pep(conn: Connection) -> None:
    """Version 4: PEP nodes and their items (XEP-0163)."""
    from imactor.storage.models import PepItem, PepNode

    for model in (PepNode, PepItem):
        getattr(model, "__table__").create(conn)  # noqa: B009 - SQLModel declares it untyped


def _add_push(conn: Connection) -> None:
    """Version 5: the push registrations of accounts (XEP-0357)."""
    from imactor.storage.models import PushRegistration

    getattr(PushRegistration, "__table__").create(conn)  # noqa: B009 - SQLModel declares it untyped


def _add_word_lists(conn: Connection) -> None:
    """Version 6: the sensitive-word filter's lists, words and change counter."""
    from imactor.storage.word_list_tables import WordFilterVersion, WordListRow, WordListWord

    for model in (WordListRow, WordListWord, WordFilterVersion):
        getattr(model, "__table__").create(conn)  # noqa: B009 - SQLModel declares it untyped


#: Upgrade steps; version 1 is the schema created by `models.py` before any step existed.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(2, "message archive (XEP-0313)", _add_archive),
    Migration(3, "multi-user chat rooms (XEP-0045) and their archives", _add_rooms),
    Migration(4, "PEP nodes and items (XEP-0163)", _add_pep),
    Migration(5, "push registrations (XEP-0357)", _add_push),
    Migration(6, "sensitive-word filter lists", _add_word_lists),
)


def current_version() -> int:
    """The schema version this code writes: the initial version plus one per migration step."""
    return 1 + len(MIGRATIONS)


def ensure_schema(conn: Connection) -> int:
    """Create or upgrade the schema inside the caller's transaction.

    Args:
        conn: A connection inside a write transaction.

    Returns:
        The schema version the database now has.

    Raises:
        StorageError: The database was written by a newer imactor, or holds imactor tables without
            a version, or a migration step is missing.
    """
    # Read at call time (not bound as a default) so a test can add a step.
    migrations = MIGRATIONS
    target = current_version()
    version_table = TABLES[0]
    existing = set(inspect(conn).get_table_names())
    if version_table.name not in existing:
        ours = sorted(existing & {t.name for t in TABLES})
        if ours:
            raise StorageError(f"database has imactor tables {ours} but no schema_version table")
        for table in TABLES:
            table.create(conn)
        conn.execute(version_table.insert().values(id=1, version=target))
        return target
    found = conn.execute(select(version_table.c.version)).scalar_one_or_none()
    if found is None:
        raise StorageError("database has an empty schema_version table")
    if found > target:
        raise StorageError(
            f"database schema version {found} is newer than this imactor supports ({target}); "
            "upgrade imactor or use a different database"
        )
    for step in migrations:
        if step.to_version <= found:
            continue
        if step.to_version != found + 1:
            raise StorageError(f"no migration from schema version {found} to {step.to_version}")
        try:
            step.apply(conn)
        except Exception as exc:
            # The caller's transaction rolls back: the database keeps its old version intact.
            raise StorageError(
                f"migration to schema version {step.to_version} ({step.description}) failed: {exc}"
            ) from exc
        found = step.to_version
    conn.execute(version_table.update().values(version=found))
    return found
