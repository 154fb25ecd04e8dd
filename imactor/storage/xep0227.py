"""XEP-0227 import and export: an account's rows as the format's values, and back.

`Xep0227Store.read` gathers everything one account has that the format carries (credentials,
roster, vCard, private XML, offline messages, archive, PEP nodes) in one read transaction;
`Xep0227Store.apply` writes an `AccountChanges` in one write transaction, so an import never
leaves an account half-written. What to change is decided by the caller (`imactor.migration`),
which compares the file with what `read` returned: that is what makes an import idempotent and
its ``--dry-run`` exact.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlmodel import Session, col, func, select

from imactor.hosts import split_account_key
from imactor.storage.archive import ArchiveStore
from imactor.storage.db import Database
from imactor.storage.models import (
    Account,
    ArchivedMessage,
    Credential,
    OfflineMessage,
    PepItem,
    PepNode,
    PrivateData,
    RosterEntry,
    VCard,
)
from imactor.xmpp import pie
from imactor.xmpp.jid import JID, InvalidJID
from imactor.xmpp.roster import RosterItem
from imactor.xmpp.scram import ScramCredentials
from imactor.xmpp.stanza import parse


@dataclass(frozen=True, slots=True)
class StoredNode:
    """A PEP node as stored: its configuration JSON and its items, oldest first."""

    node: str
    config: dict[str, object]
    items: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True, slots=True)
class StoredAccount:
    """Everything of one account that XEP-0227 carries, as stored."""

    name: str
    credentials: list[ScramCredentials]
    roster: list[RosterItem]
    vcard: bytes | None
    private: dict[str, bytes]
    offline: list[bytes]
    archive: list[pie.Archived]
    pep: list[StoredNode]


@dataclass(slots=True)
class AccountChanges:
    """What an import writes for one account; empty fields change nothing."""

    name: str
    create: bool = False
    credentials: list[ScramCredentials] | None = None  #: replace all verifiers with these
    roster: list[RosterItem] = field(default_factory=list)  #: add or replace, by JID
    vcard: bytes | None = None
    private: dict[str, bytes] = field(default_factory=dict)  #: add or replace, by key
    offline: list[bytes] = field(default_factory=list)  #: append
    archive: list[pie.Archived] = field(default_factory=list)  #: append (ids not yet there)
    pep: list[tuple[StoredNode, int]] = field(default_factory=list)  #: node, max_items: set, publish

    def __bool__(self) -> bool:
        return bool(self.create or self.credentials is not None or self.roster or self.vcard is not None
                    or self.private or self.offline or self.archive or self.pep)  # fmt: skip


class Xep0227Store:
    """Whole accounts in and out, for `imactor export` and `imactor import`."""

    def __init__(self, db: Database, archive: ArchiveStore) -> None:
        self._db = db
        self._archive = archive

    async def read(self, username: str) -> StoredAccount | None:
        """The account's data, or None if there is no such account."""
        await self._archive.settle()  # the archive's newest messages wait in its journal
        return await self._db.read(lambda session: _read(session, username))

    async def apply(self, changes: AccountChanges, domain: str) -> None:
        """Write `changes` in one transaction (`domain`: this server's primary domain, which with
        the account key gives the account's own JID, for the archive's peers)."""
        await self._db.write(lambda session: _apply(session, changes, domain))


def _read(session: Session, username: str) -> StoredAccount | None:
    if session.get(Account, username) is None:
        return None
    credentials = [
        ScramCredentials(r.hash_name, r.salt, r.iterations, r.stored_key, r.server_key)
        for r in session.exec(select(Credential).where(col(Credential.username) == username)
                              .order_by(col(Credential.hash_name)))
    ]  # fmt: skip
    roster = [
        RosterItem(r.jid, r.name, r.subscription, r.ask, r.pending_in, r.approved, tuple(r.groups), r.listed)
        for r in session.exec(select(RosterEntry).where(col(RosterEntry.username) == username)
                              .order_by(col(RosterEntry.jid)))
    ]  # fmt: skip
    vcard = session.get(VCard, username)
    private = {
        r.key: r.data
        for r in session.exec(select(PrivateData).where(col(PrivateData.username) == username)
                              .order_by(col(PrivateData.key)))
    }  # fmt: skip
    offline = list(session.exec(select(OfflineMessage.stanza).where(col(OfflineMessage.username) == username)
                                .order_by(col(OfflineMessage.id))))  # fmt: skip
    archive = [
        pie.Archived(r.stanza_id, r.timestamp, r.stanza)
        for r in session.exec(select(ArchivedMessage).where(col(ArchivedMessage.username) == username)
                              .order_by(col(ArchivedMessage.id)))
    ]  # fmt: skip
    return StoredAccount(username, credentials, roster, None if vcard is None else vcard.data, private,
                         offline, archive, _read_pep(session, username))  # fmt: skip


def _read_pep(session: Session, username: str) -> list[StoredNode]:
    items: dict[str, list[tuple[str, bytes]]] = {}
    for item in session.exec(
        select(PepItem).where(col(PepItem.username) == username).order_by(col(PepItem.seq))
    ):
        items.setdefault(item.node, []).append((item.item_id, item.payload))
    nodes = session.exec(select(PepNode).where(col(PepNode.username) == username).order_by(col(PepNode.node)))
    return [StoredNode(r.node, dict(r.config), tuple(items.get(r.node, ()))) for r in nodes]


def _apply(session: Session, changes: AccountChanges, domain: str) -> None:
    name = changes.name
    account = session.get(Account, name)
    if account is None:
        account = Account(username=name, created_at=time.time())
        session.add(account)
        session.flush()
    if changes.credentials is not None:
        for row in session.exec(select(Credential).where(col(Credential.username) == name)):
            session.delete(row)
        session.flush()
        session.add_all(Credential(username=name, hash_name=c.hash_name, salt=c.salt, iterations=c.iterations,
                                   stored_key=c.stored_key, server_key=c.server_key)
                        for c in changes.credentials)  # fmt: skip
    if changes.roster:
        _put_roster(session, account, changes.roster)
    if changes.vcard is not None:
        vcard = session.get(VCard, name)
        if vcard is None:
            session.add(VCard(username=name, data=changes.vcard))
        else:
            vcard.data = changes.vcard
    for key, data in changes.private.items():
        found = session.get(PrivateData, (name, key))
        if found is None:
            session.add(PrivateData(username=name, key=key, data=data))
        else:
            found.data = data
    now = time.time()
    session.add_all(OfflineMessage(username=name, stanza=stanza, stored_at=now) for stanza in changes.offline)
    own = JID.make(*split_account_key(name, domain))
    session.add_all(_archive_row(name, own, message) for message in changes.archive)
    for node, max_items in changes.pep:
        _put_node(session, name, node, max_items)


def _put_roster(session: Session, account: Account, items: Sequence[RosterItem]) -> None:
    for item in items:
        row = session.get(RosterEntry, (account.username, item.jid))
        if row is None:
            row = RosterEntry(username=account.username, jid=item.jid)
            session.add(row)
        row.name, row.subscription, row.ask = item.name, item.subscription, item.ask
        row.pending_in, row.approved, row.groups = item.pending_in, item.approved, list(item.groups)
        row.listed = item.listed
    # RFC 6121 §2.6: a client holding an older version must get the imported roster in full.
    account.roster_version += 1


def _archive_row(name: str, own: JID, message: pie.Archived) -> ArchivedMessage:
    """The row of an archived message of the account `name` (its key), whose JID is `own`: the
    other party and the direction come from the message's `from` and `to` (a message from `own`
    was sent, "out")."""
    element = parse(message.message)
    sender, recipient = _jid(element.get("from")), _jid(element.get("to"))
    outgoing = sender is not None and sender.bare == own.bare
    peer = recipient if outgoing else sender
    return ArchivedMessage(
        username=name, stanza_id=message.stanza_id, timestamp=round(message.timestamp, 6),
        peer="" if peer is None else str(peer.bare),
        peer_resource="" if peer is None else peer.resourcepart or "",
        direction="out" if outgoing else "in", stanza=message.message,
    )  # fmt: skip


def _jid(text: str | None) -> JID | None:
    try:
        return JID.parse(text) if text else None
    except InvalidJID:
        return None


def _put_node(session: Session, name: str, node: StoredNode, max_items: int) -> None:
    row = session.get(PepNode, (name, node.node))
    if row is None:
        session.add(PepNode(username=name, node=node.node, config=node.config))
    else:
        row.config = node.config
        session.add(row)
    session.flush()
    of_node = (col(PepItem.username) == name, col(PepItem.node) == node.node)
    seq = session.exec(select(func.max(PepItem.seq)).where(*of_node)).one() or 0
    for item_id, payload in node.items:
        seq += 1
        found = session.get(PepItem, (name, node.node, item_id))
        if found is None:
            session.add(PepItem(username=name, node=node.node, item_id=item_id, seq=seq, payload=payload,
                                published_at=time.time()))  # fmt: skip
        else:
            found.seq, found.payload = seq, payload
    session.flush()
    # As a publish does (storage/pubsub.py): the node keeps its newest `max_items` only.
    newest = select(PepItem.seq).where(*of_node).order_by(col(PepItem.seq).desc())
    cutoff = session.exec(newest.offset(max_items).limit(1)).first()
    if cutoff is not None:
        for stale in session.exec(select(PepItem).where(*of_node, col(PepItem.seq) <= cutoff)):
            session.delete(stale)
