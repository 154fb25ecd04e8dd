"""SQLModel tables of the server's own data.

Every per-account table references `account.username` with ``ON DELETE CASCADE``, so deleting an
account row removes all of its data in the same transaction. Per-account tables have `username` as
the first primary-key column, which gives them their username index; tables with a surrogate key
declare one explicitly.

These tables are plain storage rows: the store classes convert them into frozen values before they
leave the writer or reader thread, so no ORM object ever reaches Trio code.
"""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Column, Index, Integer, Table, UniqueConstraint, false
from sqlmodel import Field, Session, SQLModel

from imactor.storage.cluster_tables import ClusterNodeRow, ClusterStateRow
from imactor.storage.email_tables import EmailDigestEntry, EmailDigestRow, EmailNotifyRow
from imactor.storage.errors import AccountNotFound
from imactor.storage.fast_token_tables import FastTokenRow
from imactor.storage.org_tables import OrgDepartment, OrgPerson, OrgVersion
from imactor.storage.pubsub_tables import PubsubAffiliation, PubsubItem, PubsubNode, PubsubSubscription
from imactor.storage.reminder_tables import ReminderRow
from imactor.storage.word_list_tables import WordFilterVersion, WordListRow, WordListWord


class SchemaVersion(SQLModel, table=True):
    """The single row that records which schema version the database holds."""

    __tablename__ = "schema_version"

    id: int = Field(default=1, primary_key=True)
    version: int


class Account(SQLModel, table=True):
    """One local account; the parent of every other per-account row."""

    __tablename__ = "account"

    username: str = Field(primary_key=True)  # PRECIS-prepared localpart
    created_at: float
    roster_version: int = 0  # RFC 6121 §2.6: bumped on every roster change
    #: XEP-0133 disable-user: the account keeps its data but cannot log in (re-enable-user).
    disabled: bool = Field(default=False, sa_column_kwargs={"server_default": false()})


class Motd(SQLModel, table=True):
    """The server's message of the day (XEP-0133 set-motd), sent to each session as it starts;
    one row at most (id 1), none when no message is set."""

    __tablename__ = "motd"

    id: int = Field(default=1, primary_key=True)
    text: str
    set_at: float


class Credential(SQLModel, table=True):
    """The SCRAM verifier of one account for one hash function; never the password itself."""

    __tablename__ = "scram_credential"

    username: str = Field(primary_key=True, foreign_key="account.username", ondelete="CASCADE")
    hash_name: str = Field(primary_key=True)  # "SHA-1" or "SHA-256"
    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes


class RosterEntry(SQLModel, table=True):
    """One contact in an account's roster (RFC 6121 §2.1)."""

    __tablename__ = "roster_item"

    username: str = Field(primary_key=True, foreign_key="account.username", ondelete="CASCADE")
    jid: str = Field(primary_key=True)
    name: str | None = None
    subscription: str = "none"
    ask: bool = False
    pending_in: bool = False
    approved: bool = False
    # Groups are only ever read together with their item, so a JSON list beats a join table.
    groups: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    listed: bool = False  # `RosterItem.listed` (schema version 13)


class OfflineMessage(SQLModel, table=True):
    """A serialized stanza waiting for its recipient to come online."""

    __tablename__ = "offline_message"
    # AUTOINCREMENT keeps ids strictly increasing even after the newest row is deleted, so
    # "oldest first" is simply "ordered by id".
    __table_args__ = {"sqlite_autoincrement": True}

    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(foreign_key="account.username", ondelete="CASCADE", index=True)
    stanza: bytes
    stored_at: float


class PrivateData(SQLModel, table=True):
    """XEP-0049 private XML, one serialized element per (account, key)."""

    __tablename__ = "private_data"

    username: str = Field(primary_key=True, foreign_key="account.username", ondelete="CASCADE")
    key: str = Field(primary_key=True)  # "{namespace}element" of the stored child
    data: bytes


class VCard(SQLModel, table=True):
    """XEP-0054 vCard of an account, stored as serialized XML."""

    __tablename__ = "vcard"

    username: str = Field(primary_key=True, foreign_key="account.username", ondelete="CASCADE")
    data: bytes


class BlockedJid(SQLModel, table=True):
    """XEP-0191 blocklist entry."""

    __tablename__ = "blocked_jid"

    username: str = Field(primary_key=True, foreign_key="account.username", ondelete="CASCADE")
    jid: str = Field(primary_key=True)


class LastActivity(SQLModel, table=True):
    """XEP-0012: when the account's last session ended, and its last status text."""

    __tablename__ = "last_activity"

    username: str = Field(primary_key=True, foreign_key="account.username", ondelete="CASCADE")
    timestamp: float
    status: str = ""


class ArchivedMessage(SQLModel, table=True):
    """XEP-0313: one message of an account's archive (schema version 2).

    `id` orders the archive (AUTOINCREMENT: strictly increasing); `stanza_id` is the XEP-0359 id
    clients see, unique within the account's archive (both copies of one chat message, in the
    sender's and in the recipient's archive, share it).
    """

    __tablename__ = "archive"
    __table_args__ = (
        UniqueConstraint("username", "stanza_id", name="uq_archive_username_stanza_id"),
        Index("ix_archive_username_timestamp", "username", "timestamp"),
        Index("ix_archive_username_peer", "username", "peer"),
        {"sqlite_autoincrement": True},
    )

    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(foreign_key="account.username", ondelete="CASCADE")
    stanza_id: str
    timestamp: float
    peer: str  # bare JID of the other party
    peer_resource: str = ""  # its resource, when known (for `with` filters on a full JID)
    direction: str  # "in" (received) or "out" (sent)
    stanza: bytes


class ArchiveJournalRow(SQLModel, table=True):
    """XEP-0313: a message appended to an account's archive and not yet moved into `archive`
    (schema version 15).

    The message path appends here: a table without secondary indexes takes a row for a fraction
    of what the indexed archive costs (docs/benchmarks.md), and `imactor.storage.archive` moves
    the rows into `archive` in batches sorted by account, four times a second, and before every
    read of an archive. The table stays small (a few seconds of messages), so it has
    no index on `username`: an account's deletion scans it for the cascade.
    """

    __tablename__ = "archive_journal"

    # BIGINT on PostgreSQL (a sequence that never restarts: billions of rows over the years);
    # SQLite's INTEGER PRIMARY KEY is its rowid, already 64-bit.
    id: int | None = Field(
        default=None, sa_column=Column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    )
    username: str = Field(foreign_key="account.username", ondelete="CASCADE")
    stanza_id: str
    timestamp: float
    peer: str
    peer_resource: str = ""
    direction: str
    stanza: bytes


class ArchivePrefsRow(SQLModel, table=True):
    """XEP-0313 §6 archiving preferences of an account (schema version 2); no row: defaults."""

    __tablename__ = "archive_prefs"

    username: str = Field(primary_key=True, foreign_key="account.username", ondelete="CASCADE")
    default_mode: str  # "always", "roster" or "never"
    always: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    never: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))


class RoomRow(SQLModel, table=True):
    """A multi-user chat room (XEP-0045) that exists: its configuration, affiliations and
    subject as the room's own JSON (`imactor.muc.state.RoomState.to_json`). Rooms belong to the
    service, not to an account, so no foreign key; `public` and `creator` are copied out of the
    JSON for the service's room list and the rooms-per-user limit."""

    __tablename__ = "muc_room"

    name: str = Field(primary_key=True)  # the room's localpart
    state: dict[str, object] = Field(sa_column=Column(JSON, nullable=False))
    public: bool = True
    persistent: bool = False
    creator: str = Field(default="", index=True)  # bare JID of the creator
    updated: float = 0.0


class RoomMessage(SQLModel, table=True):
    """One message of a room's archive (XEP-0313 on the room's JID): its history after a
    restart, too. The same shape as `ArchivedMessage` (peer = room JID, peer_resource = the
    sender's nick), so one query serves both archives."""

    __tablename__ = "muc_archive"
    __table_args__ = (
        UniqueConstraint("room", "stanza_id", name="uq_muc_archive_room_stanza_id"),
        Index("ix_muc_archive_room_timestamp", "room", "timestamp"),
        {"sqlite_autoincrement": True},
    )

    id: int | None = Field(default=None, primary_key=True)
    room: str
    stanza_id: str
    timestamp: float
    peer: str  # the room's bare JID
    peer_resource: str = ""  # the sender's nick
    real_jid: str = ""  # the sender's real full JID (shown per the room's whois setting)
    direction: str = "in"
    stanza: bytes


class PepNode(SQLModel, table=True):
    """A PEP node (XEP-0163) of an account: its configuration as `NodeConfig.to_json`."""

    __tablename__ = "pep_node"

    username: str = Field(primary_key=True, foreign_key="account.username", ondelete="CASCADE")
    node: str = Field(primary_key=True)
    config: dict[str, object] = Field(sa_column=Column(JSON, nullable=False))


class PepItem(SQLModel, table=True):
    """One published item of a PEP node; `seq` orders publications (a re-published id moves
    to the end, XEP-0060 §7.1.2)."""

    __tablename__ = "pep_item"
    __table_args__ = (Index("ix_pep_item_node_seq", "username", "node", "seq"),)

    username: str = Field(primary_key=True, foreign_key="account.username", ondelete="CASCADE")
    node: str = Field(primary_key=True)
    item_id: str = Field(primary_key=True)
    seq: int
    payload: bytes
    published_at: float


class PushRegistration(SQLModel, table=True):
    """XEP-0357: one push service (app server) node an account's client enabled."""

    __tablename__ = "push_registration"

    username: str = Field(primary_key=True, foreign_key="account.username", ondelete="CASCADE")
    service: str = Field(primary_key=True)  # the app server's JID
    node: str = Field(primary_key=True)
    options: bytes = b""  # the serialized publish-options form, if the client gave one
    created_at: float


def _table(model: type[SQLModel]) -> Table:
    table = getattr(model, "__table__", None)
    assert isinstance(table, Table), model
    return table


#: The tables of the current schema version, in creation order (parents before children).
TABLES: tuple[Table, ...] = tuple(
    _table(m)
    for m in (
        SchemaVersion,
        Account,
        Motd,
        Credential,
        RosterEntry,
        OfflineMessage,
        PrivateData,
        VCard,
        BlockedJid,
        LastActivity,
        ArchivedMessage,
        ArchiveJournalRow,
        ArchivePrefsRow,
        RoomRow,
        RoomMessage,
        PepNode,
        PepItem,
        PushRegistration,
        WordListRow,
        WordListWord,
        WordFilterVersion,
        OrgDepartment,
        OrgPerson,
        OrgVersion,
        ClusterNodeRow,
        ClusterStateRow,
        EmailDigestRow,
        EmailDigestEntry,
        EmailNotifyRow,
        ReminderRow,
        FastTokenRow,
        PubsubNode,
        PubsubItem,
        PubsubAffiliation,
        PubsubSubscription,
    )
)


def require_account(session: Session, username: str) -> Account:
    """The account row, for writes that must not create data of a nonexistent account.

    The row is locked until the transaction ends (``SELECT ... FOR NO KEY UPDATE`` on PostgreSQL;
    SQLite has no row locks and needs none, its writers take turns): writers in several
    processes or nodes that change one account's data take turns on it, so a read-modify-write
    such as the roster version bump never loses an update. NO KEY: the foreign-key checks of
    the message path's inserts (archive, offline) need not wait for it.

    Raises:
        AccountNotFound: No such account.
    """
    account = session.get(Account, username, with_for_update={"key_share": True})
    if account is None:
        raise AccountNotFound(username)
    return account
