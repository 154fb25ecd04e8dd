"""A node's place in a cluster: its lease in PostgreSQL, the membership it announces, fencing.

The node supervisor of a cluster node runs one `ClusterMember` in place of the single node's
`MembershipAnnouncer`:

- `join` registers the node (`imactor.storage.cluster`): a fresh lease on its name, refused while
  another live process holds it (two nodes configured with the same name). A name whose lease is
  still running but no longer renewed (this node, killed and restarted at once) is taken over
  once that lease runs out.
- `run` renews the lease every `heartbeat` seconds, and at once when one of its own workers
  starts or dies. Each renewal returns the cluster's membership (epoch, live workers of every
  node), which goes to this node's workers as a `ClusterView`: the workers of this node by their
  ipc:// endpoints, the others' by their tcp:// endpoints and their node's CURVE key.
- Fencing: a node judges its own lease by its monotonic clock from the moment it *asked* for the
  last renewal that succeeded, which is never later than the moment the database granted it. When
  `fence_after` seconds (three quarters of the lease: the last quarter is the margin for killing
  the workers on a loaded machine) pass without one, `run` raises `Fenced` before the others can
  see the lease expire: the supervisor then stops serving (its workers are killed, its listeners
  closed) so that an account never has two live homes; it serves again once a renewal succeeds
  (`rejoin`). Until then it serves on: while its lease runs, no other node can take its users
  (membership changes only in the database), so a database restart shorter than that costs no
  node its clients; a renewal that finds the lease already expired fences the node too.
"""

from __future__ import annotations

import contextlib
import logging
import math
import secrets
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import psycopg
import trio

from imactor.cluster.endpoints import NODE_STRIDE, worker_id
from imactor.cluster.placement import Membership
from imactor.cluster.wire import ClusterView, Message, PeerWorker
from imactor.cluster.zmq_link import UnknownPeer
from imactor.storage.cluster import ClusterStore, LeaseLost, NodeNameInUse, NodeRecord, Snapshot

log = logging.getLogger("imactor.cluster")

#: Seconds between two looks at this node's own workers (a cheap snapshot of N records).
POLL_INTERVAL = 0.05
#: The part of its lease a node serves without a renewal before it fences itself (module doc).
FENCE_FRACTION = 0.75


class Fenced(Exception):
    """The node could not renew its lease in time: it must stop serving now."""


class Link(Protocol):
    def set_epoch(self, epoch: int) -> None: ...

    def send_nowait(self, peer: int, message: Message) -> None: ...


class ClusterMember:
    """This node in the cluster (module doc).

    Args:
        store: The cluster tables.
        node: What this node registers (its name, key, endpoints, how clients reach it).
        lease: Seconds a renewal keeps the node live in the others' eyes.
        heartbeat: Seconds between renewals.
        local_endpoints: This node's workers by index → their ipc:// endpoints.
        bind_endpoints: This node's workers by index → where they bind their tcp:// mesh socket.
        live_local: The indices of this node's workers that run now.
        redirect_margin: Send new clients to the least loaded node when this one holds this many
            sessions more than it (RFC 6120 see-other-host); None: never.
    """

    def __init__(
        self,
        store: ClusterStore,
        node: NodeRecord,
        *,
        lease: float,
        heartbeat: float,
        local_endpoints: Mapping[int, str],
        bind_endpoints: Mapping[int, str],
        live_local: Callable[[], list[int]],
        redirect_margin: int | None = None,
    ) -> None:
        self._store = store
        self.node = node
        self.lease = lease
        self.heartbeat = heartbeat
        self.fence_after = lease * FENCE_FRACTION
        self._local_endpoints = local_endpoints
        self.bind_endpoints = bind_endpoints
        self._live_local = live_local
        self.redirect_margin = redirect_margin
        #: The client sessions this node holds (its load), kept up to date by the supervisor.
        self.sessions = 0
        self.node_id = 0  #: set by `join`
        self.snapshot: Snapshot | None = None  #: the last membership the database returned
        self.renewed_at = -math.inf  #: trio time at which the last successful renewal was asked
        self.failures = 0  #: renewals that failed in a row
        self._link: Link | None = None

    def close(self) -> None:
        self._store.close()

    def watch(self, live_local: Callable[[], list[int]]) -> None:
        """Where to read which of this node's workers run (the supervisor of this run)."""
        self._live_local = live_local

    @staticmethod
    def new_incarnation() -> str:
        return secrets.token_hex(8)

    def worker_id(self, index: int) -> int:
        return worker_id(self.node_id, index)

    async def _call(self, function: Callable[..., Any], *args: Any, deadline: float = math.inf) -> Any:
        """A store call in a thread, abandoned (not waited for, its connection forgotten) if it
        outlives two heartbeats or `deadline`: a database lost behind a silent network must not
        stall the fencing clock.

        Raises:
            trio.TooSlowError: given up on.
        """
        with trio.fail_at(min(deadline, trio.current_time() + max(self.heartbeat, 1.0) * 2)):
            try:
                return await trio.to_thread.run_sync(function, *args, abandon_on_cancel=True)
            except trio.Cancelled:
                self._store.abandon()
                raise

    # ---- joining ---------------------------------------------------------------------------------

    async def join(self) -> int:
        """Register; returns the node id.

        Raises:
            NodeNameInUse: another process keeps renewing a lease on this node's name.
            psycopg.Error, trio.TooSlowError: the database cannot be reached.
        """
        deadline = trio.current_time() + self.lease + 2 * self.heartbeat
        while True:
            try:
                self.node_id = await self._call(self._store.register, self.node, self.lease)
            except NodeNameInUse:
                if trio.current_time() >= deadline:
                    raise NodeNameInUse(
                        f"cluster.node = {self.node.name!r}: another live node uses this name "
                        f"(its lease was renewed within the last {self.lease:g} s); "
                        "give each node its own name"
                    ) from None
                log.warning(
                    "node name %r: a lease is still running; waiting for it to expire", self.node.name
                )
                await trio.sleep(self.heartbeat)
                continue
            self.renewed_at = trio.current_time()
            log.info("node %r joined the cluster as node %d", self.node.name, self.node_id)
            return self.node_id

    async def rejoin(self) -> None:
        """After fencing: retry until the database answers again (same incarnation)."""
        while True:
            try:
                await self.join()
                return
            except (psycopg.Error, trio.TooSlowError, OSError) as exc:
                log.warning("node %r cannot reach the cluster database yet: %s", self.node.name, exc)
                await trio.sleep(self.heartbeat)

    async def retire(self) -> None:
        """A clean stop: end the lease now, so that the others take over at once."""
        try:
            await self._call(self._store.retire, self.node_id, self.node.incarnation)
        except (psycopg.Error, trio.TooSlowError, OSError) as exc:
            log.warning("node %r could not end its lease (it expires by itself): %s", self.node.name, exc)

    # ---- what the status shows -----------------------------------------------------------------

    @property
    def epoch(self) -> int:
        return 0 if self.snapshot is None else self.snapshot.epoch

    @property
    def members(self) -> tuple[int, ...]:
        """The worker ids of the current membership."""
        pairs = () if self.snapshot is None else self.snapshot.members
        return tuple(worker_id(node, index) for node, index in pairs)

    @property
    def live(self) -> tuple[int, ...]:
        """The indices of this node's workers in the current membership."""
        pairs = () if self.snapshot is None else self.snapshot.members
        return tuple(index for node, index in pairs if node == self.node_id)

    def local_home(self, kind: str, key: str) -> int | None:
        members = self.members
        if not members:
            return None
        home = Membership(self.epoch, members).home(kind, key)
        return home % NODE_STRIDE if home // NODE_STRIDE == self.node_id else None

    def document(self) -> dict[str, object]:
        snapshot = self.snapshot
        nodes = [] if snapshot is None else [
            {"id": n.id, "name": n.name, "live_workers": list(n.live_workers), "sessions": n.sessions,
             "lease_age": round(n.lease_age, 3), "clients": dict(n.clients)}
            for n in snapshot.nodes
        ]  # fmt: skip
        return {
            "epoch": self.epoch, "live_workers": list(self.live), "node": self.node.name,
            "node_id": self.node_id, "members": list(self.members),
            "nodes": nodes, "renewal_failures": self.failures, "sessions": self.sessions,
            "redirect": self.redirect(),
        }  # fmt: skip

    # ---- serving ---------------------------------------------------------------------------------

    async def run(self, link: Link) -> None:
        """Renew and announce until cancelled; raises `Fenced` (module doc)."""
        self._link = link  # the fencing clock runs from the last renewal, or from `join`
        local = tuple(sorted(self._live_local()))
        next_renewal = -math.inf
        while True:
            now = trio.current_time()
            current = tuple(sorted(self._live_local()))
            if now >= next_renewal or current != local:
                local = current
                await self._renew(local)
                next_renewal = trio.current_time() + self.heartbeat
            if trio.current_time() - self.renewed_at > self.fence_after:
                raise Fenced(
                    f"no lease renewal for {trio.current_time() - self.renewed_at:.1f} s "
                    f"({self.failures} failed in a row)"
                )
            await trio.sleep(POLL_INTERVAL)

    async def _renew(self, local: tuple[int, ...]) -> None:
        asked = trio.current_time()
        try:
            snapshot: Snapshot = await self._call(
                self._store.renew, self.node_id, self.node.incarnation, local, self.sessions, self.lease,
                deadline=self.renewed_at + self.fence_after,
            )  # fmt: skip
        except LeaseLost as exc:
            raise Fenced(str(exc)) from None
        except (psycopg.Error, trio.TooSlowError, OSError) as exc:
            self.failures += 1
            if self.failures in (1, 3) or self.failures % 10 == 0:
                log.warning(
                    "node %r: lease renewal failed (%d in a row): %s", self.node.name, self.failures, exc
                )
            return
        if self.failures:
            log.info("node %r: lease renewed again after %d failures", self.node.name, self.failures)
        self.failures = 0
        self.renewed_at = asked
        if self.snapshot is None or snapshot.epoch != self.snapshot.epoch:
            log.info("cluster epoch %d: %d node(s), workers (node, index) %s", snapshot.epoch,
                     len(snapshot.nodes), list(snapshot.members))  # fmt: skip
        self.snapshot = snapshot
        self.announce(local)

    def view(self) -> ClusterView | None:
        """The membership as this node's workers need it (module doc)."""
        snapshot = self.snapshot
        if snapshot is None or not snapshot.members:
            return None
        peers = []
        members = set(snapshot.members)
        for node in snapshot.nodes:
            for index in node.live_workers:
                wid = worker_id(node.id, index)
                if (node.id, index) not in members:
                    continue  # live since the epoch was numbered: the next epoch has it
                if node.id == self.node_id:
                    peers.append(PeerWorker(wid, self._local_endpoints[index]))
                elif index in node.endpoints:
                    peers.append(PeerWorker(wid, node.endpoints[index], node.public_key))
        return ClusterView(snapshot.epoch, tuple(peers), self.redirect(), self.web_listeners())

    def web_listeners(self) -> tuple[str, ...]:
        """The other live nodes' web listeners, for host-meta (XEP-0156)."""
        snapshot, found = self.snapshot, list[str]()
        for node in () if snapshot is None else snapshot.nodes:
            if node.id == self.node_id or not node.live_workers:
                continue
            host = str(node.clients.get("host", ""))
            host = f"[{host}]" if ":" in host else host
            ports = {scheme: node.clients.get(scheme) for scheme in ("http", "https")}
            found.extend(f"{scheme}://{host}:{port}" for scheme, port in ports.items() if port)
        return tuple(found)

    def redirect(self) -> str:
        """Where new clients go instead of here: the least loaded other node, when this one holds
        `redirect_margin` sessions more (as both last reported); "" to take them here."""
        snapshot = self.snapshot
        if self.redirect_margin is None or snapshot is None:
            return ""
        others = [
            n for n in snapshot.nodes if n.id != self.node_id and n.live_workers and n.clients.get("c2s")
        ]
        if not others:
            return ""
        least = min(others, key=lambda node: (node.sessions, node.id))
        if self.sessions - least.sessions < self.redirect_margin:
            return ""
        host = str(least.clients.get("host", ""))
        return f"{f'[{host}]' if ':' in host else host}:{least.clients['c2s']}"

    def announce(self, local: tuple[int, ...]) -> None:
        """Send the view to this node's running workers, without waiting (resent every beat)."""
        view = self.view()
        if view is None or self._link is None:
            return
        self._link.set_epoch(view.epoch)
        for index in local:
            # A full outbox or a worker gone: the next beat resends.
            with contextlib.suppress(trio.WouldBlock, UnknownPeer):
                self._link.send_nowait(self.worker_id(index), view)
