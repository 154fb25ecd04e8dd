"""The cluster's membership in PostgreSQL: node registration, leases and the membership epoch.

No home-made consensus: the database serializes every change. Each node supervisor calls `renew`
on a heartbeat; one transaction renews its lease, reads every node whose lease has not expired,
and, if the live (node, worker) pairs differ from those of the current epoch, bumps the epoch
(under the one-row `cluster_state` lock, so two nodes that see the same change at once make one
epoch, not two). Every lease is granted and judged by the database server's clock (``now()``), so
the nodes' own clocks may differ by any amount; a node judges its *own* lease by its monotonic
clock from the moment it asked for the renewal, which is never later than the moment the database
granted it (`imactor.node.lease`).

Calls are synchronous (psycopg, autocommit off, one short transaction each) and meant for a
worker thread; each connection sets short connect and statement timeouts, so a lost database
turns into an error in seconds, never a hang.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
from sqlalchemy.engine import make_url

T = TypeVar("T")
_Cursor = psycopg.Cursor[tuple[Any, ...]]

#: Seconds to wait for a connection or a statement before giving up (a lease is a few seconds).
TIMEOUT = 2


class NodeNameInUse(Exception):
    """Another live process holds this node name's lease."""


class LeaseLost(Exception):
    """This node's row was taken over (another process registered the same name)."""


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """What a node says of itself when it registers."""

    name: str
    incarnation: str
    public_key: str
    endpoints: Mapping[int, str]  #: worker index → its tcp:// mesh endpoint
    clients: Mapping[str, Any]  #: how clients reach it (host, ports), for redirects


@dataclass(frozen=True, slots=True)
class LiveNode:
    """A node whose lease has not expired, as the database sees it."""

    id: int
    name: str
    public_key: str
    endpoints: Mapping[int, str]
    live_workers: tuple[int, ...]
    clients: Mapping[str, Any]
    sessions: int
    lease_age: float  #: seconds since its last renewal (database clock)
    lease_left: float  #: seconds until its lease expires

    def members(self) -> list[tuple[int, int]]:
        return [(self.id, index) for index in self.live_workers]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The membership after a renewal: its epoch, its (node id, worker index) pairs, and the live
    nodes."""

    epoch: int
    members: tuple[tuple[int, int], ...]
    nodes: tuple[LiveNode, ...]


def connect_kwargs(url: str) -> dict[str, Any]:
    """psycopg's arguments for a SQLAlchemy URL (``postgresql+psycopg://user:pw@host/db``)."""
    parsed = make_url(url)
    args: dict[str, Any] = parsed.translate_connect_args(username="user", database="dbname")
    args.update({k: v for k, v in parsed.query.items() if isinstance(v, str)})
    args["connect_timeout"] = TIMEOUT
    # A network that drops packets (no reset) must fail a call in seconds too, not after TCP's
    # retransmissions give up (minutes): libpq's TCP user timeout and keepalives.
    args.update(tcp_user_timeout=TIMEOUT * 1000, keepalives=1, keepalives_idle=1, keepalives_interval=1,
                keepalives_count=2)  # fmt: skip
    limits = f"-c statement_timeout={TIMEOUT * 1000} -c lock_timeout={TIMEOUT * 1000}"
    args["options"] = f"{args['options']} {limits}" if args.get("options") else limits
    return args


class ClusterStore:
    """The cluster tables, for one node supervisor (not thread-safe: one call at a time)."""

    def __init__(self, url: str) -> None:
        self._kwargs = connect_kwargs(url)
        self._connection: psycopg.Connection[tuple[Any, ...]] | None = None

    def _cursor(self) -> psycopg.Cursor[tuple[Any, ...]]:
        if self._connection is None or self._connection.closed:
            self._connection = psycopg.connect(**self._kwargs)
        return self._connection.cursor()

    def _run(self, body: Callable[[_Cursor], T]) -> T:
        """`body(cursor)` in one transaction; a failed one drops the connection (it may be dead)."""
        try:
            with self._cursor() as cursor:
                result = body(cursor)
            assert self._connection is not None
            self._connection.commit()
            return result
        except BaseException:
            self.close()
            raise

    def abandon(self) -> None:
        """Forget the connection without closing it: a call given up on (its thread may still be
        blocked in it) keeps it, and closes it when it fails; the next call opens a new one."""
        self._connection = None

    def close(self) -> None:
        if self._connection is not None:
            try:
                self._connection.close()
            finally:
                self._connection = None

    # ---- registration --------------------------------------------------------------------------

    def register(self, node: NodeRecord, lease: float) -> int:
        """Take the row of `node.name` (creating it), with a fresh lease; returns the node id.

        Raises:
            NodeNameInUse: another incarnation holds an unexpired lease on the name.
            psycopg.Error: the database cannot be reached or refused the statements.
        """

        def body(cursor: psycopg.Cursor[tuple[Any, ...]]) -> int:
            cursor.execute(
                "SELECT pg_advisory_xact_lock(hashtext('imactor.cluster_node:' || %s))", (node.name,)
            )
            cursor.execute(
                "SELECT id, incarnation, lease_expires > EXTRACT(EPOCH FROM now()) "
                "FROM cluster_node WHERE name = %s FOR UPDATE",
                (node.name,),
            )
            row = cursor.fetchone()
            values = {
                "name": node.name, "incarnation": node.incarnation, "key": node.public_key,
                "endpoints": json.dumps({str(i): e for i, e in node.endpoints.items()}),
                "clients": json.dumps(dict(node.clients)), "lease": lease,
            }  # fmt: skip
            if row is None:
                cursor.execute(
                    "INSERT INTO cluster_node (name, public_key, incarnation, endpoints, live_workers, "
                    "clients, sessions, lease_expires, renewed_at) VALUES (%(name)s, %(key)s, "
                    "%(incarnation)s, %(endpoints)s, '[]', %(clients)s, 0, "
                    "EXTRACT(EPOCH FROM now()) + %(lease)s, EXTRACT(EPOCH FROM now())) RETURNING id",
                    values,
                )
                created = cursor.fetchone()
                assert created is not None
                return int(created[0])
            node_id, incarnation, live = row
            if live and incarnation != node.incarnation:
                raise NodeNameInUse(node.name)
            cursor.execute(
                "UPDATE cluster_node SET public_key = %(key)s, incarnation = %(incarnation)s, "
                "endpoints = %(endpoints)s, live_workers = '[]', clients = %(clients)s, sessions = 0, "
                "lease_expires = EXTRACT(EPOCH FROM now()) + %(lease)s, "
                "renewed_at = EXTRACT(EPOCH FROM now()) WHERE id = %(id)s",
                {**values, "id": node_id},
            )
            return int(node_id)

        return self._run(body)

    def lease_of(self, name: str) -> tuple[str, float] | None:
        """(incarnation, seconds left) of the lease on `name`, None if the name has no row."""

        def body(cursor: psycopg.Cursor[tuple[Any, ...]]) -> tuple[str, float] | None:
            cursor.execute(
                "SELECT incarnation, lease_expires - EXTRACT(EPOCH FROM now()) "
                "FROM cluster_node WHERE name = %s",
                (name,),
            )
            row = cursor.fetchone()
            return None if row is None else (str(row[0]), float(row[1]))

        return self._run(body)

    # ---- the heartbeat -------------------------------------------------------------------------

    def renew(
        self, node_id: int, incarnation: str, live_workers: Sequence[int], sessions: int, lease: float
    ) -> Snapshot:
        """Renew this node's lease and return the membership, bumping its epoch if it changed.

        Raises:
            LeaseLost: the row now belongs to another incarnation (a second node took the name),
                or the lease ran out before this renewal: the others may have taken over this
                node's users meanwhile, so it must not go on serving as if nothing happened.
            psycopg.Error: the database cannot be reached, or the statements timed out.
        """

        def body(cursor: psycopg.Cursor[tuple[Any, ...]]) -> Snapshot:
            cursor.execute(
                "SELECT lease_expires > EXTRACT(EPOCH FROM now()) FROM cluster_node "
                "WHERE id = %s AND incarnation = %s FOR UPDATE",
                (node_id, incarnation),
            )
            held = cursor.fetchone()
            if held is None:
                raise LeaseLost(f"node {node_id}: its row belongs to another process now")
            if not held[0]:
                raise LeaseLost(f"node {node_id}: its lease ran out before it was renewed")
            cursor.execute(
                "UPDATE cluster_node SET lease_expires = EXTRACT(EPOCH FROM now()) + %s, "
                "renewed_at = EXTRACT(EPOCH FROM now()), live_workers = %s, sessions = %s "
                "WHERE id = %s AND incarnation = %s",
                (lease, json.dumps(sorted(live_workers)), sessions, node_id, incarnation),
            )
            if cursor.rowcount != 1:
                raise LeaseLost(f"node {node_id}: its row belongs to another process now")
            nodes = _live_nodes(cursor)
            members = sorted(pair for node in nodes for pair in node.members())
            cursor.execute("SELECT epoch, members FROM cluster_state WHERE id = 1 FOR UPDATE")
            row = cursor.fetchone()
            if row is None:
                cursor.execute(
                    "INSERT INTO cluster_state (id, epoch, members) VALUES (1, 1, %s)", (json.dumps(members),)
                )
                return Snapshot(1, tuple(members), nodes)
            epoch, stored = int(row[0]), [tuple(pair) for pair in json.loads(row[1])]
            if stored != members:
                epoch += 1
                cursor.execute(
                    "UPDATE cluster_state SET epoch = %s, members = %s WHERE id = 1",
                    (epoch, json.dumps(members)),
                )
            return Snapshot(epoch, tuple(members), nodes)

        return self._run(body)

    def retire(self, node_id: int, incarnation: str) -> None:
        """End this node's lease now (a clean stop): the others re-home its users at once."""

        def body(cursor: psycopg.Cursor[tuple[Any, ...]]) -> None:
            cursor.execute(
                "UPDATE cluster_node SET lease_expires = 0, live_workers = '[]' "
                "WHERE id = %s AND incarnation = %s",
                (node_id, incarnation),
            )

        self._run(body)

    def is_registered(self, public_key: str) -> bool:
        """Whether a node of the cluster has this CURVE public key (live or not).

        Raises:
            psycopg.Error: the database cannot be reached.
        """

        def body(cursor: psycopg.Cursor[tuple[Any, ...]]) -> bool:
            cursor.execute("SELECT 1 FROM cluster_node WHERE public_key = %s", (public_key,))
            return cursor.fetchone() is not None

        return self._run(body)

    def nodes(self) -> tuple[list[LiveNode], int]:
        """Every registered node (live or not, lease fields as the database sees them), and the
        current epoch: for ``imactor cluster nodes``."""

        def body(cursor: psycopg.Cursor[tuple[Any, ...]]) -> tuple[list[LiveNode], int]:
            nodes = list(_live_nodes(cursor, every=True))
            cursor.execute("SELECT epoch FROM cluster_state WHERE id = 1")
            row = cursor.fetchone()
            return nodes, 0 if row is None else int(row[0])

        return self._run(body)


def _live_nodes(cursor: psycopg.Cursor[tuple[Any, ...]], *, every: bool = False) -> tuple[LiveNode, ...]:
    where = "" if every else "WHERE lease_expires > EXTRACT(EPOCH FROM now())"
    cursor.execute(
        "SELECT id, name, public_key, endpoints, live_workers, clients, sessions, "
        "EXTRACT(EPOCH FROM now()) - renewed_at, lease_expires - EXTRACT(EPOCH FROM now()) "
        f"FROM cluster_node {where} ORDER BY id"
    )
    nodes = []
    for node_id, name, key, endpoints, live, clients, sessions, age, left in cursor.fetchall():
        nodes.append(
            LiveNode(
                id=int(node_id),
                name=str(name),
                public_key=str(key),
                endpoints={int(i): str(e) for i, e in json.loads(endpoints).items()},
                live_workers=tuple(int(w) for w in json.loads(live)),
                clients=json.loads(clients),
                sessions=int(sessions),
                lease_age=float(age),
                lease_left=float(left),
            )
        )
    return tuple(nodes)
