"""Schema creation and versioning.

The database records its schema version in the one-row `schema_version` table. At open:

- an empty database gets every table of the current version;
- an older database is upgraded by running the steps of `MIGRATIONS` in order, in the same
  transaction as the version bump, so a failed upgrade leaves the old schema intact;
- a newer database (written by a later imactor) is refused: guessing at a schema we do not know
  could corrupt it.

To change the schema, edit `models.py` (fresh databases are created from it) *and* append a step
here that brings a database of the previous version to the same shape.

On PostgreSQL:

- the whole check, creation or upgrade runs under a transaction-scoped advisory lock
  (`imactor.storage.postgres.SCHEMA_LOCK_KEY`): several nodes starting at once, or
  ``imactor db migrate`` run on each, take turns, and the later ones find the work done
  (PostgreSQL's DDL is transactional, so a failed step leaves nothing behind either);
- a new database may get its large per-user tables (`PARTITIONED`: the archive and the offline
  messages) as PostgreSQL's declarative partitions by hash of the username, `partitions` of
  them. Each row lands in the partition of its user, and every query of these tables names the
  user, so the planner reads one partition (pruning) and each partition's indexes stay small.
  The count is fixed when the tables are created (docs/postgresql.md says how to change it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Connection, Table, inspect, select, text

from imactor.storage.errors import StorageError
from imactor.storage.models import TABLES, ArchivedMessage, ArchivePrefsRow, RoomMessage, RoomRow
from imactor.storage.postgres import SCHEMA_LOCK_KEY

#: The default number of hash partitions of each large per-user table on PostgreSQL.
DEFAULT_PARTITIONS = 16
#: Most partitions allowed: each is a table with its indexes, and every query plans over them.
MAX_PARTITIONS = 1024


@dataclass(frozen=True, slots=True)
class SchemaChange:
    """What `ensure_schema` found and left."""

    before: int | None  #: the version found; None: an empty database
    after: int  #: the version it has now

    def describe(self) -> str:
        if self.before is None:
            return f"created the schema, version {self.after}"
        if self.before == self.after:
            return f"the schema is current, version {self.after}"
        return f"upgraded the schema from version {self.before} to {self.after}"


#: PostgreSQL DDL of the partitioned per-user tables, with the columns, keys and indexes of
#: `models.py` (the test suite checks that both give the same columns). PostgreSQL wants the
#: partition key in every unique constraint, so the primary key is (username, id) instead of (id);
#: id still comes from one sequence, so it still orders the rows of each user (bigint: a
#: company's archive outgrows 2^31 rows).
PARTITIONED: dict[str, str] = {
    "archive": """
        CREATE TABLE archive (
            id BIGSERIAL NOT NULL,
            username VARCHAR NOT NULL REFERENCES account (username) ON DELETE CASCADE,
            stanza_id VARCHAR NOT NULL,
            timestamp FLOAT NOT NULL,
            peer VARCHAR NOT NULL,
            peer_resource VARCHAR NOT NULL,
            direction VARCHAR NOT NULL,
            stanza BYTEA NOT NULL,
            PRIMARY KEY (username, id),
            CONSTRAINT uq_archive_username_stanza_id UNIQUE (username, stanza_id)
        ) PARTITION BY HASH (username);
        CREATE INDEX ix_archive_username_timestamp ON archive (username, timestamp);
        CREATE INDEX ix_archive_username_peer ON archive (username, peer)""",
    "offline_message": """
        CREATE TABLE offline_message (
            id BIGSERIAL NOT NULL,
            username VARCHAR NOT NULL REFERENCES account (username) ON DELETE CASCADE,
            stanza BYTEA NOT NULL,
            stored_at FLOAT NOT NULL,
            PRIMARY KEY (username, id)
        ) PARTITION BY HASH (username)""",
}


def create_table(conn: Connection, table: Table, partitions: int) -> None:
    """Create `table`: from `models.py`, or partitioned by user on PostgreSQL (`PARTITIONED`)."""
    ddl = PARTITIONED.get(table.name)
    if ddl is None or partitions <= 0 or conn.dialect.name != "postgresql":
        table.create(conn)
        return
    for statement in ddl.split(";"):
        conn.execute(text(statement))
    for remainder in range(partitions):
        conn.execute(text(
            f"CREATE TABLE {table.name}_p{remainder} PARTITION OF {table.name} "
            f"FOR VALUES WITH (MODULUS {partitions}, REMAINDER {remainder})"
        ))  # fmt: skip


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


def _add_org(conn: Connection) -> None:
    """Version 7: the company directory: departments, people and its change counter."""
    from imactor.storage.org_tables import OrgDepartment, OrgPerson, OrgVersion

    for model in (OrgDepartment, OrgPerson, OrgVersion):
        getattr(model, "__table__").create(conn)  # noqa: B009 - SQLModel declares it untyped


def _add_cluster(conn: Connection) -> None:
    """Version 8: the cluster's nodes and membership."""
    from imactor.storage.cluster_tables import ClusterNodeRow, ClusterStateRow

    for model in (ClusterNodeRow, ClusterStateRow):
        getattr(model, "__table__").create(conn)  # noqa: B009 - SQLModel declares it untyped


def _add_admin(conn: Connection) -> None:
    """Version 9: XEP-0133 administration: the accounts' disabled flag and the message of the day.

    Idempotent: a database that gained them from `models.py` (tests that roll the version back)
    is left as it is."""
    from imactor.storage.models import Motd

    columns = {column["name"] for column in inspect(conn).get_columns("account")}
    if "disabled" not in columns:
        false = "FALSE" if conn.dialect.name == "postgresql" else "0"
        conn.execute(text(f"ALTER TABLE account ADD COLUMN disabled BOOLEAN NOT NULL DEFAULT {false}"))
    if not inspect(conn).has_table("motd"):
        getattr(Motd, "__table__").create(conn)  # noqa: B009 - SQLModel declares it untyped


def _add_email(conn: Connection) -> None:
    """Version 10: the offline-message email digests and the accounts' choice about them."""
    from imactor.storage.email_tables import EmailDigestEntry, EmailDigestRow, EmailNotifyRow

    for model in (EmailDigestRow, EmailDigestEntry, EmailNotifyRow):
        if not inspect(conn).has_table(getattr(model, "__table__").name):  # noqa: B009 - untyped
            getattr(model, "__table__").create(conn)  # noqa: B009 - SQLModel declares it untyped


def _add_reminders(conn: Connection) -> None:
    """Version 11: scheduled reminders (the adhoc module's schedule-reminder command).

    Idempotent, like `_add_admin`."""
    from imactor.storage.reminder_tables import ReminderRow

    if not inspect(conn).has_table("reminder"):
        getattr(ReminderRow, "__table__").create(conn)  # noqa: B009 - SQLModel declares it untyped


def _add_pubsub_service(conn: Connection) -> None:
    """Version 12: the nodes, items, affiliations and subscriptions of XEP-0060
    services (``pubsub.<domain>``).

    Idempotent: a database that has them from `models.py` (tests that roll the version back) is
    left as it is."""
    from imactor.storage.pubsub_tables import PubsubAffiliation, PubsubItem, PubsubNode, PubsubSubscription

    for model in (PubsubNode, PubsubItem, PubsubAffiliation, PubsubSubscription):
        getattr(model, "__table__").create(conn, checkfirst=True)  # noqa: B009 - SQLModel declares it untyped


def _add_roster_listed(conn: Connection) -> None:
    """Version 13: `roster_item.listed`, set once the user has had the item on their roster, so a
    contact's subscription request no longer takes a bare item (no name, no group) off it.

    Rows stored before keep the flag unset: their visibility stays as it was, and the roster sets
    the flag at the next change of a visible item. Idempotent, like `_add_admin`."""
    columns = {column["name"] for column in inspect(conn).get_columns("roster_item")}
    if "listed" not in columns:
        false = "FALSE" if conn.dialect.name == "postgresql" else "0"
        conn.execute(text(f"ALTER TABLE roster_item ADD COLUMN listed BOOLEAN NOT NULL DEFAULT {false}"))


def _add_fast_tokens(conn: Connection) -> None:
    """Version 14: the XEP-0484 FAST tokens of clients (stored hashed).

    Idempotent, like `_add_pubsub_service`."""
    from imactor.storage.fast_token_tables import FastTokenRow

    getattr(FastTokenRow, "__table__").create(conn, checkfirst=True)  # noqa: B009 - SQLModel declares it untyped


def _add_archive_journal(conn: Connection) -> None:
    """Version 15: the archive's journal, where the message path appends (`ArchiveJournalRow`)."""
    from imactor.storage.models import ArchiveJournalRow

    getattr(ArchiveJournalRow, "__table__").create(conn, checkfirst=True)  # noqa: B009 - SQLModel declares it untyped


#: Upgrade steps; version 1 is the schema created by `models.py` before any step existed.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(2, "message archive (XEP-0313)", _add_archive),
    Migration(3, "multi-user chat rooms (XEP-0045) and their archives", _add_rooms),
    Migration(4, "PEP nodes and items (XEP-0163)", _add_pep),
    Migration(5, "push registrations (XEP-0357)", _add_push),
    Migration(6, "sensitive-word filter lists", _add_word_lists),
    Migration(7, "company directory: departments and people", _add_org),
    Migration(8, "cluster nodes and membership", _add_cluster),
    Migration(9, "disabled accounts and the message of the day (XEP-0133)", _add_admin),
    Migration(10, "offline-message email digests", _add_email),
    Migration(11, "scheduled reminders", _add_reminders),
    Migration(12, "publish-subscribe service nodes and items (XEP-0060)", _add_pubsub_service),
    Migration(13, "roster items the user has listed stay listed (RFC 6121 §3.1.3)", _add_roster_listed),
    Migration(14, "FAST authentication tokens (XEP-0484)", _add_fast_tokens),
    Migration(15, "the message archive's journal of recent messages", _add_archive_journal),
)


def current_version() -> int:
    """The schema version this code writes: the initial version plus one per migration step."""
    return 1 + len(MIGRATIONS)


def ensure_schema(conn: Connection, *, partitions: int = 0) -> SchemaChange:
    """Create or upgrade the schema inside the caller's transaction.

    Args:
        conn: A connection inside a write transaction.
        partitions: PostgreSQL: hash partitions of each `PARTITIONED` table, if created now
            (0: plain tables). Ignored elsewhere.

    Returns:
        The version found and the version the database now has.

    Raises:
        StorageError: The database was written by a newer imactor, or holds imactor tables without
            a version, or a migration step is missing.
    """
    # Read at call time (not bound as a default) so a test can add a step.
    migrations = MIGRATIONS
    target = current_version()
    if not 0 <= partitions <= MAX_PARTITIONS:
        raise StorageError(f"partitions = {partitions}: expected 0 (none) to {MAX_PARTITIONS}")
    if conn.dialect.name == "postgresql":
        # Released at the end of the caller's transaction: the next node then sees its result.
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK_KEY})
    version_table = TABLES[0]
    existing = set(inspect(conn).get_table_names())
    if version_table.name not in existing:
        ours = sorted(existing & {t.name for t in TABLES})
        if ours:
            raise StorageError(f"database has imactor tables {ours} but no schema_version table")
        for table in TABLES:
            create_table(conn, table, partitions)
        conn.execute(version_table.insert().values(id=1, version=target))
        return SchemaChange(None, target)
    found = conn.execute(select(version_table.c.version)).scalar_one_or_none()
    if found is None:
        raise StorageError("database has an empty schema_version table")
    if found > target:
        raise StorageError(
            f"database schema version {found} is newer than this imactor supports ({target}); "
            "upgrade imactor or use a different database"
        )
    before = found
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
    if found != before:
        conn.execute(version_table.update().values(version=found))
    return SchemaChange(before, found)
