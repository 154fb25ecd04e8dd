"""PEP nodes and items (XEP-0163 on XEP-0060), per account.

A node's configuration is stored as opaque JSON (the protocol core's `NodeConfig.to_json`), so
this store knows nothing of access models. Items keep their publication order in `seq`; a
publish trims the node to its `max_items` in the same transaction, so a node never holds more
than its configuration allows, whatever a client sends.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from sqlmodel import Session, col, delete, func, select

from imactor.storage.db import Database
from imactor.storage.models import PepItem, PepNode, require_account


@dataclass(frozen=True, slots=True)
class StoredItem:
    item_id: str
    payload: bytes
    published_at: float


#: The newest items of a node, newest first.
_NEWEST_ITEMS = (
    "SELECT item_id, payload, published_at FROM pep_item WHERE username = :username AND node = :node "
    "ORDER BY seq DESC LIMIT :limit"
)


class PepStore:
    """The PEP service's data: `node` rows (config JSON) and their items."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def nodes(self, username: str) -> dict[str, dict[str, object]]:
        """Every node of the account → its configuration JSON."""

        def query(session: Session) -> dict[str, dict[str, object]]:
            rows = session.exec(select(PepNode).where(col(PepNode.username) == username))
            return {row.node: dict(row.config) for row in rows}

        return await self._db.read(query)

    async def node(self, username: str, node: str) -> dict[str, object] | None:
        def query(session: Session) -> dict[str, object] | None:
            row = session.get(PepNode, (username, node))
            return None if row is None else dict(row.config)

        return await self._db.read(query)

    async def set_node(self, username: str, node: str, config: dict[str, object], max_items: int) -> None:
        """Create or reconfigure a node, dropping the oldest items beyond `max_items`."""

        def upsert(session: Session) -> None:
            require_account(session, username)
            row = session.get(PepNode, (username, node))
            if row is None:
                session.add(PepNode(username=username, node=node, config=config))
            else:
                row.config = config
                session.add(row)
            _trim(session, username, node, max_items)

        await self._db.write(upsert)

    async def delete_node(self, username: str, node: str) -> bool:
        """Remove a node and its items; False if there was none."""

        def remove(session: Session) -> bool:
            row = session.get(PepNode, (username, node))
            if row is None:
                return False
            session.exec(delete(PepItem).where(col(PepItem.username) == username, col(PepItem.node) == node))
            session.delete(row)
            return True

        return await self._db.write(remove)

    async def publish(self, username: str, node: str, item_id: str, payload: bytes, max_items: int) -> None:
        """Store an item (replacing one with the same id, which becomes the newest) and trim."""

        def upsert(session: Session) -> None:
            require_account(session, username)
            of_node = (col(PepItem.username) == username, col(PepItem.node) == node)
            newest = session.exec(select(func.max(PepItem.seq)).where(*of_node)).one()
            seq = (newest or 0) + 1
            row = session.get(PepItem, (username, node, item_id))
            if row is None:
                row = PepItem(username=username, node=node, item_id=item_id, seq=seq, payload=payload,
                              published_at=time.time())  # fmt: skip
            else:
                row.seq, row.payload, row.published_at = seq, payload, time.time()
            session.add(row)
            session.flush()
            _trim(session, username, node, max_items)

        await self._db.write(upsert)

    async def retract(self, username: str, node: str, item_ids: Sequence[str]) -> list[str]:
        """Delete items by id; returns the ids that existed."""

        def remove(session: Session) -> list[str]:
            found = [
                item_id for item_id in item_ids if session.get(PepItem, (username, node, item_id)) is not None
            ]
            if found:
                session.exec(
                    delete(PepItem).where(
                        col(PepItem.username) == username,
                        col(PepItem.node) == node,
                        col(PepItem.item_id).in_(found),
                    )
                )
            return found

        return await self._db.write(remove)

    async def purge(self, username: str, node: str) -> None:
        def remove(session: Session) -> None:
            session.exec(delete(PepItem).where(col(PepItem.username) == username, col(PepItem.node) == node))

        await self._db.write(remove)

    async def items(
        self, username: str, node: str, *, limit: int, item_ids: Sequence[str] = ()
    ) -> list[StoredItem]:
        """The newest `limit` items (or those of `item_ids` that exist), oldest first."""
        if not item_ids:
            # The common case (the last item sent at presence, the avatar's hash at login): lean.
            params = {"username": username, "node": node, "limit": limit}
            newest = await self._db.select(_NEWEST_ITEMS, params)
            return [
                StoredItem(item_id, bytes(payload), published_at)
                for item_id, payload, published_at in reversed(newest)
            ]

        def query(session: Session) -> list[StoredItem]:
            statement = select(PepItem).where(col(PepItem.username) == username, col(PepItem.node) == node)
            if item_ids:
                statement = statement.where(col(PepItem.item_id).in_(list(item_ids)))
            rows = session.exec(statement.order_by(col(PepItem.seq).desc()).limit(limit)).all()
            return [StoredItem(r.item_id, r.payload, r.published_at) for r in reversed(rows)]

        return await self._db.read(query)

    async def item_ids(self, username: str, node: str, *, limit: int) -> list[str]:
        """Ids of the newest `limit` items, newest first (disco#items of a node)."""

        def query(session: Session) -> list[str]:
            rows = session.exec(
                select(PepItem.item_id)
                .where(col(PepItem.username) == username, col(PepItem.node) == node)
                .order_by(col(PepItem.seq).desc())
                .limit(limit)
            )
            return list(rows)

        return await self._db.read(query)


def _trim(session: Session, username: str, node: str, max_items: int) -> None:
    """Keep only the newest `max_items` items of a node."""
    keep = select(PepItem.seq).where(col(PepItem.username) == username, col(PepItem.node) == node)
    cutoff = session.exec(keep.order_by(col(PepItem.seq).desc()).offset(max_items).limit(1)).first()
    if cutoff is not None:
        session.exec(
            delete(PepItem).where(
                col(PepItem.username) == username, col(PepItem.node) == node, col(PepItem.seq) <= cutoff
            )
        )
