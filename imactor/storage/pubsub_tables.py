"""Tables of publish-subscribe services (XEP-0060 at ``pubsub.<domain>``; `storage.pubsub_service`).

Kept apart from `models.py`, which lists them in `TABLES` for fresh databases; schema version 12
adds them to older ones (`schema.py`). Every row names its `service` (the service's JID), so one
database serves the pubsub services of several domains. No foreign keys to accounts: owners,
publishers and subscribers may be users of other servers; deleting a node deletes its rows in the
same transaction (`PubsubServiceStore.delete_node`).
"""

from __future__ import annotations

from sqlalchemy import JSON, Column, Index
from sqlmodel import Field, SQLModel


class PubsubNode(SQLModel, table=True):
    """A node of a pubsub service: its configuration (`imactor.xmpp.pubsub_service.ServiceConfig.to_json`)."""

    __tablename__ = "pubsub_node"

    service: str = Field(primary_key=True)
    node: str = Field(primary_key=True)
    config: dict[str, object] = Field(sa_column=Column(JSON, nullable=False))
    created_at: float


class PubsubItem(SQLModel, table=True):
    """One published item; `seq` orders publications (a re-published id becomes the newest)."""

    __tablename__ = "pubsub_item"
    __table_args__ = (Index("ix_pubsub_item_node_seq", "service", "node", "seq"),)

    service: str = Field(primary_key=True)
    node: str = Field(primary_key=True)
    item_id: str = Field(primary_key=True)
    seq: int
    payload: bytes
    publisher: str  #: the publisher's full JID
    published_at: float


class PubsubAffiliation(SQLModel, table=True):
    """A bare JID's affiliation with a node (§4.1): owner, publisher, member or outcast ("none": no row)."""

    __tablename__ = "pubsub_affiliation"
    __table_args__ = (Index("ix_pubsub_affiliation_jid", "service", "jid"),)

    service: str = Field(primary_key=True)
    node: str = Field(primary_key=True)
    jid: str = Field(primary_key=True)
    affiliation: str


class PubsubSubscription(SQLModel, table=True):
    """A subscription of a JID (bare or full, as subscribed) to a node; one per JID and node."""

    __tablename__ = "pubsub_subscription"
    __table_args__ = (Index("ix_pubsub_subscription_bare", "service", "bare"),)

    service: str = Field(primary_key=True)
    node: str = Field(primary_key=True)
    jid: str = Field(primary_key=True)
    bare: str  #: the subscriber's bare JID (an entity's subscriptions, §5.6)
    subid: str
