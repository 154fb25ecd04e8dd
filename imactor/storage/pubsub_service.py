"""The data of publish-subscribe services (XEP-0060 at ``pubsub.<domain>``): nodes, items,
affiliations and subscriptions, keyed by the service's JID (`pubsub_tables`).

A node's configuration is opaque JSON (the protocol core's `ServiceConfig.to_json`). The service
runs in whichever worker receives a request, so every change is one transaction that first
locks the node's row (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite's writers take turns on
the file): two publishes to one node on two workers get distinct `seq` numbers, and the trim to
`max_items` sees both.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlmodel import Session, col, delete, func, select

from imactor.storage.db import Database
from imactor.storage.pubsub import StoredItem
from imactor.storage.pubsub_tables import PubsubAffiliation, PubsubItem, PubsubNode, PubsubSubscription

__all__ = ["ItemPage", "NodeRow", "PubsubServiceStore", "StoredItem", "Subscription"]


@dataclass(frozen=True, slots=True)
class NodeRow:
    """A node's configuration JSON and its affiliations (bare JID → affiliation)."""

    config: dict[str, object]
    affiliations: dict[str, str]


@dataclass(frozen=True, slots=True)
class Subscription:
    node: str
    jid: str  #: as subscribed (bare or full)
    subid: str


@dataclass(frozen=True, slots=True)
class ItemPage:
    """A page of a node's items, newest first (XEP-0059 on items retrieval)."""

    items: list[StoredItem]
    publishers: list[str]  #: the bare JID that published each item
    first_index: int  #: how many items of the node are newer than the page's first
    count: int  #: items of the node


class PubsubServiceStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    # ---- nodes ---------------------------------------------------------------------------

    async def nodes(self, service: str) -> dict[str, dict[str, object]]:
        """Every node of the service → its configuration JSON."""

        def query(session: Session) -> dict[str, dict[str, object]]:
            rows = session.exec(select(PubsubNode).where(col(PubsubNode.service) == service))
            return {row.node: dict(row.config) for row in rows}

        return await self._db.read(query)

    async def node(self, service: str, node: str) -> NodeRow | None:
        def query(session: Session) -> NodeRow | None:
            row = session.get(PubsubNode, (service, node))
            if row is None:
                return None
            return NodeRow(dict(row.config), _affiliations(session, service, node))

        return await self._db.read(query)

    async def create_node(
        self, service: str, node: str, config: dict[str, object], owner: str, max_nodes: int
    ) -> str:
        """Create a node owned by the bare JID `owner`: "created", "exists", or "full" (the
        service holds `max_nodes` nodes)."""

        def insert(session: Session) -> str:
            if session.get(PubsubNode, (service, node)) is not None:
                return "exists"
            count = session.exec(select(func.count()).where(col(PubsubNode.service) == service)).one()
            if count >= max_nodes:
                return "full"
            session.add(PubsubNode(service=service, node=node, config=config, created_at=time.time()))
            session.add(PubsubAffiliation(service=service, node=node, jid=owner, affiliation="owner"))
            return "created"

        return await self._db.write(insert)

    async def set_config(self, service: str, node: str, config: dict[str, object], max_items: int) -> bool:
        """Reconfigure a node, dropping the oldest items beyond `max_items`; False: no such node."""

        def update(session: Session) -> bool:
            row = _lock(session, service, node)
            if row is None:
                return False
            row.config = config
            session.add(row)
            _trim(session, service, node, max_items)
            return True

        return await self._db.write(update)

    async def delete_node(self, service: str, node: str) -> list[Subscription] | None:
        """Remove a node with its items, affiliations and subscriptions; returns the
        subscriptions it had (to notify them, §8.4.2), None if there was no such node."""

        def remove(session: Session) -> list[Subscription] | None:
            row = _lock(session, service, node)
            if row is None:
                return None
            subscriptions = _subscriptions(session, service, node)
            for model in (PubsubItem, PubsubAffiliation, PubsubSubscription):
                session.exec(delete(model).where(col(model.service) == service, col(model.node) == node))
            session.delete(row)
            return subscriptions

        return await self._db.write(remove)

    # ---- items ---------------------------------------------------------------------------

    async def publish(self, service: str, node: str, item_id: str, payload: bytes, publisher: str,
                      max_items: int) -> bool:  # fmt: skip
        """Store an item (one with the same id is replaced and becomes the newest) and trim the
        node to `max_items`; False: the node is gone."""

        def upsert(session: Session) -> bool:
            if _lock(session, service, node) is None:
                return False
            of_node = (col(PubsubItem.service) == service, col(PubsubItem.node) == node)
            newest = session.exec(select(func.max(PubsubItem.seq)).where(*of_node)).one()
            seq = (newest or 0) + 1
            row = session.get(PubsubItem, (service, node, item_id))
            if row is None:
                row = PubsubItem(service=service, node=node, item_id=item_id, seq=seq, payload=payload,
                                 publisher=publisher, published_at=time.time())  # fmt: skip
            else:
                row.seq, row.payload, row.publisher, row.published_at = seq, payload, publisher, time.time()
            session.add(row)
            session.flush()
            _trim(session, service, node, max_items)
            return True

        return await self._db.write(upsert)

    async def retract(
        self, service: str, node: str, item_ids: Sequence[str], *, by: str | None = None
    ) -> list[str] | None:
        """Delete items by id; returns the ids that existed. With `by` (a bare JID), only items
        that JID published may go: if any other is among them, nothing is deleted and None is
        returned."""

        def remove(session: Session) -> list[str] | None:
            rows = [session.get(PubsubItem, (service, node, i)) for i in item_ids]
            found = [row for row in rows if row is not None]
            if by is not None and any(row.publisher.split("/")[0] != by for row in found):
                return None
            ids = [row.item_id for row in found]
            if ids:
                session.exec(
                    delete(PubsubItem).where(
                        col(PubsubItem.service) == service,
                        col(PubsubItem.node) == node,
                        col(PubsubItem.item_id).in_(ids),
                    )
                )
            return ids

        return await self._db.write(remove)

    async def purge(self, service: str, node: str) -> None:
        def remove(session: Session) -> None:
            session.exec(
                delete(PubsubItem).where(col(PubsubItem.service) == service, col(PubsubItem.node) == node)
            )

        await self._db.write(remove)

    async def items(
        self, service: str, node: str, *, limit: int, item_ids: Sequence[str] = ()
    ) -> list[StoredItem]:
        """The newest `limit` items (only those of `item_ids`, if given), oldest first."""

        def query(session: Session) -> list[StoredItem]:
            statement = select(PubsubItem).where(
                col(PubsubItem.service) == service, col(PubsubItem.node) == node
            )
            if item_ids:
                statement = statement.where(col(PubsubItem.item_id).in_(list(item_ids)))
            rows = session.exec(statement.order_by(col(PubsubItem.seq).desc()).limit(limit)).all()
            return [StoredItem(r.item_id, r.payload, r.published_at) for r in reversed(rows)]

        return await self._db.read(query)

    async def page(
        self, service: str, node: str, *, limit: int, after: str | None = None, before: str | None = None
    ) -> ItemPage | None:
        """Up to `limit` items, newest first: the newest, those older than the item `after`, or
        those just newer than the item `before` ("": the oldest, XEP-0059 §2.5's last page).
        None when `after` or `before` names no item of the node."""

        def query(session: Session) -> ItemPage | None:
            of_node = (col(PubsubItem.service) == service, col(PubsubItem.node) == node)
            seq = col(PubsubItem.seq)
            statement = select(PubsubItem).where(*of_node)
            newest_first = True
            for anchor, older in ((after, True), (before or None, False)):
                if anchor is None:
                    continue
                row = session.get(PubsubItem, (service, node, anchor))
                if row is None:
                    return None
                statement = statement.where(seq < row.seq if older else seq > row.seq)
                newest_first = older
            if before == "":
                newest_first = False
            order = seq.desc() if newest_first else seq.asc()
            rows = list(session.exec(statement.order_by(order).limit(limit)).all())
            if not newest_first:
                rows.reverse()
            count = session.exec(select(func.count()).select_from(PubsubItem).where(*of_node)).one()
            newer = 0
            if rows:
                newer = session.exec(
                    select(func.count()).select_from(PubsubItem).where(*of_node, seq > rows[0].seq)
                ).one()
            return ItemPage(
                [StoredItem(r.item_id, r.payload, r.published_at) for r in rows],
                [r.publisher.split("/")[0] for r in rows],
                newer,
                count,
            )

        return await self._db.read(query)

    async def item_publisher(self, service: str, node: str, item_id: str) -> str | None:
        """The bare JID that published an item; None when there is no such item."""

        def query(session: Session) -> str | None:
            row = session.get(PubsubItem, (service, node, item_id))
            return None if row is None else row.publisher.split("/")[0]

        return await self._db.read(query)

    async def item_ids(self, service: str, node: str, *, limit: int) -> list[str]:
        """Ids of the newest `limit` items, newest first (disco#items of a node, §5.5)."""

        def query(session: Session) -> list[str]:
            rows = session.exec(
                select(PubsubItem.item_id)
                .where(col(PubsubItem.service) == service, col(PubsubItem.node) == node)
                .order_by(col(PubsubItem.seq).desc())
                .limit(limit)
            )
            return list(rows)

        return await self._db.read(query)

    # ---- affiliations and subscriptions --------------------------------------------------

    async def set_affiliations(self, service: str, node: str, changes: Mapping[str, str]) -> str:
        """Apply bare JID → affiliation changes ("none" removes the row; "outcast" also ends the
        JID's subscriptions, §8.9.2): "done", "no-node", or "no-owner" (the node would be left
        without an owner: nothing is changed)."""

        def update(session: Session) -> str:
            if _lock(session, service, node) is None:
                return "no-node"
            current = _affiliations(session, service, node)
            after = {**current, **changes}
            if "owner" not in after.values():
                return "no-owner"
            for jid, affiliation in changes.items():
                row = session.get(PubsubAffiliation, (service, node, jid))
                if affiliation == "none":
                    if row is not None:
                        session.delete(row)
                    continue
                if row is None:
                    row = PubsubAffiliation(service=service, node=node, jid=jid, affiliation=affiliation)
                row.affiliation = affiliation
                session.add(row)
                if affiliation == "outcast":
                    session.exec(
                        delete(PubsubSubscription).where(
                            col(PubsubSubscription.service) == service,
                            col(PubsubSubscription.node) == node,
                            col(PubsubSubscription.bare) == jid,
                        )
                    )
            return "done"

        return await self._db.write(update)

    async def affiliations_of(self, service: str, jid: str) -> list[tuple[str, str]]:
        """(node, affiliation) of one bare JID across the service (§5.7)."""

        def query(session: Session) -> list[tuple[str, str]]:
            rows = session.exec(
                select(PubsubAffiliation).where(
                    col(PubsubAffiliation.service) == service, col(PubsubAffiliation.jid) == jid
                )
            )
            return sorted((row.node, row.affiliation) for row in rows)

        return await self._db.read(query)

    async def subscribe(self, service: str, node: str, jid: str, bare: str, subid: str) -> str | None:
        """Subscribe `jid` (one subscription per JID and node: subscribing again keeps the first
        subid); returns its subid, None if the node is gone."""

        def upsert(session: Session) -> str | None:
            if _lock(session, service, node) is None:
                return None
            row = session.get(PubsubSubscription, (service, node, jid))
            if row is not None:
                return row.subid
            session.add(PubsubSubscription(service=service, node=node, jid=jid, bare=bare, subid=subid))
            return subid

        return await self._db.write(upsert)

    async def unsubscribe(self, service: str, node: str, jid: str) -> bool:
        """End `jid`'s subscription; False if it had none."""

        def remove(session: Session) -> bool:
            row = session.get(PubsubSubscription, (service, node, jid))
            if row is None:
                return False
            session.delete(row)
            return True

        return await self._db.write(remove)

    async def subscriptions(self, service: str, node: str) -> list[Subscription]:
        """Every subscription to a node (notifications, the owner's list, §8.8.1)."""

        def query(session: Session) -> list[Subscription]:
            return _subscriptions(session, service, node)

        return await self._db.read(query)

    async def subscriptions_of(self, service: str, bare: str) -> list[Subscription]:
        """An entity's subscriptions across the service, of all its JIDs (§5.6)."""

        def query(session: Session) -> list[Subscription]:
            rows = session.exec(
                select(PubsubSubscription).where(
                    col(PubsubSubscription.service) == service, col(PubsubSubscription.bare) == bare
                )
            )
            return sorted((Subscription(r.node, r.jid, r.subid) for r in rows), key=lambda s: (s.node, s.jid))

        return await self._db.read(query)


def _lock(session: Session, service: str, node: str) -> PubsubNode | None:
    """The node's row, locked until the transaction ends (module docstring)."""
    statement = select(PubsubNode).where(col(PubsubNode.service) == service, col(PubsubNode.node) == node)
    return session.exec(statement.with_for_update()).first()


def _affiliations(session: Session, service: str, node: str) -> dict[str, str]:
    rows = session.exec(
        select(PubsubAffiliation).where(
            col(PubsubAffiliation.service) == service, col(PubsubAffiliation.node) == node
        )
    )
    return {row.jid: row.affiliation for row in rows}


def _subscriptions(session: Session, service: str, node: str) -> list[Subscription]:
    rows = session.exec(
        select(PubsubSubscription).where(
            col(PubsubSubscription.service) == service, col(PubsubSubscription.node) == node
        )
    )
    return sorted((Subscription(node, r.jid, r.subid) for r in rows), key=lambda s: s.jid)


def _trim(session: Session, service: str, node: str, max_items: int) -> None:
    """Keep only the newest `max_items` items of a node."""
    of_node = (col(PubsubItem.service) == service, col(PubsubItem.node) == node)
    keep = select(PubsubItem.seq).where(*of_node)
    cutoff = session.exec(keep.order_by(col(PubsubItem.seq).desc()).offset(max_items).limit(1)).first()
    if cutoff is not None:
        session.exec(delete(PubsubItem).where(*of_node, col(PubsubItem.seq) <= cutoff))
