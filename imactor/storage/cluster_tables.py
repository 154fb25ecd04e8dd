"""Tables of a cluster's membership (`imactor.storage.cluster` reads and writes them).

Kept apart from `models.py`, which lists them in `TABLES` for fresh databases; schema version 8
adds them to older ones (`schema.py`). Only a cluster (on PostgreSQL) writes them. Times are the
database server's clock in seconds (``EXTRACT(EPOCH FROM now())``): a lease is granted and judged
by that one clock, so nodes whose clocks differ still agree on who is live.
"""

from __future__ import annotations

from sqlmodel import Field, SQLModel


class ClusterNodeRow(SQLModel, table=True):
    """One node of the cluster: its identity, where its workers listen, and its lease."""

    __tablename__ = "cluster_node"

    id: int | None = Field(default=None, primary_key=True)  #: the node's number (worker ids derive from it)
    name: str = Field(unique=True)
    public_key: str  #: its CURVE public key (Z85): links from any other key are refused
    incarnation: str  #: a random id per start of the node supervisor
    endpoints: str  #: JSON: worker index → tcp:// endpoint of its mesh socket
    live_workers: str  #: JSON: the indices of its workers that are running
    clients: str  #: JSON: how clients reach it ({"host": ..., "c2s": port, ...}), for redirects
    sessions: int = 0  #: client sessions it holds (its load, for the node directory)
    lease_expires: float  #: database time after which the node counts as dead
    renewed_at: float  #: database time of its last renewal


class ClusterStateRow(SQLModel, table=True):
    """One row: the membership epoch and the live (node, worker) pairs it numbers."""

    __tablename__ = "cluster_state"

    id: int = Field(default=1, primary_key=True)
    epoch: int = 0
    members: str = "[]"  #: JSON: the sorted [node id, worker index] pairs of the membership of `epoch`
