"""The worker's component wing: the component listener, and the router's way to components.

A component's stream lands on whichever worker the kernel hands its connection to. That worker
tells every other live worker (`m.ComponentAt`, mesh kind ``component``), so each keeps a table
of domain → worker, and a stanza for the component takes one mesh hop (`m.Route` to kind
``component``) to the worker that holds its stream, whatever worker it started on. The tables
are soft state: each worker announces its components again after every membership change (a
restarted worker learns them at once), and forgets the entries of workers that left. One stream
per domain: a second handshake for a domain connected here or at a live worker gets
<conflict/>; two handshakes that race on two workers both win for a moment, and the first
announcement each side receives settles it (the lower worker number keeps its stream, the other
is closed with <conflict/>).

Stanzas for a component that is not connected bounce with `service-unavailable`, type `wait`
(`imactor.server.router.component_unavailable`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from imactor import messages as m
from imactor.actors import ActorAddress, ActorGone
from imactor.c2s.listener import serve_each
from imactor.cluster.placement import Membership
from imactor.components.connection import ComponentConnection
from imactor.components.table import ComponentTable
from imactor.mesh import codec
from imactor.server.router import component_unavailable
from imactor.xmpp import component as c
from imactor.xmpp.errors import StanzaError
from imactor.xmpp.stanza import Stanza

if TYPE_CHECKING:
    from imactor.server.services import Services

log = logging.getLogger("imactor.components")

#: The mesh kind of stanzas for a component's stream and of the workers' announcements.
KIND = "component"


@dataclass(frozen=True, slots=True)
class ComponentStatistics:
    here: tuple[str, ...]  #: domains whose component's stream this worker holds
    elsewhere: tuple[str, ...]  #: domains connected to other workers, as this one knows
    stanzas_in: int  #: stanzas the components here sent
    stanzas_out: int  #: stanzas queued for the components here
    bounced: int  #: stanzas for a component that was not connected (or not keeping up)


class ComponentWing:
    def __init__(self, services: Services, listeners: Sequence[trio.SocketListener]) -> None:
        self.services = services
        self.router = services.router
        self.config = services.config.listen.component
        self.protocol = c.ComponentConfig(
            secrets={domain: component.secret for domain, component in services.config.components.items()},
            max_stanza_size=services.config.limits.max_stanza_size,
        )
        self.domains = frozenset(self.protocol.secrets)
        self._listeners = listeners
        mesh = services.mesh
        #: The components whose stream is on this worker, and those on other workers.
        self.table: ComponentTable[ComponentConnection] = ComponentTable(
            mesh.index if mesh is not None else 0
        )
        self.stanzas_in = self._stanzas_out = self._bounced = 0
        services.status_records["components"] = self.statistics
        # Until the wing runs, stanzas for components bounce (no handler).
        self.router.serve_components(self.domains, None, self.connected)
        if mesh is not None:
            mesh.handle(KIND, self._on_frame)
            mesh.on_membership(self._on_membership)

    def connected(self) -> Iterator[str]:
        """The domains whose component is connected to some worker (disco#items)."""
        return self.table.connected()

    def statistics(self) -> ComponentStatistics:
        return ComponentStatistics(
            here=tuple(sorted(self.table.local)), elsewhere=tuple(sorted(self.table.remote)),
            stanzas_in=self.stanzas_in, stanzas_out=self._stanzas_out, bounced=self._bounced,
        )  # fmt: skip

    # ---- the worker's child --------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Accept components and route to them until cancelled."""
        async with trio.open_nursery() as nursery:
            for listener in self._listeners:
                await nursery.start(self._serve, listener)
            self.router.serve_components(self.domains, self.route, self.connected)
            for domain in self.domains:
                # A worker restarted under its old number: whatever the others remember of its
                # components is over (they forget only entries that name this worker).
                self._announce(domain, connected=False)
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                # Each connection says <system-shutdown/> as it is cancelled with the nursery.
                self.router.serve_components(self.domains, None, self.connected)

    async def _serve(
        self, listener: trio.SocketListener, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        async def handle(tcp: trio.SocketStream, remote: str) -> None:
            await ComponentConnection(self, tcp, remote).run()

        await serve_each(listener, handle, task_status=task_status)

    # ---- the router's side ---------------------------------------------------------------------

    async def route(self, stanza: Stanza) -> None:
        """A stanza for a component's domain: to its stream, here or on its worker (never waits)."""
        domain = stanza.to_jid.domainpart
        where, mesh = self.table.where(domain), self.services.mesh
        if isinstance(where, ComponentConnection):
            error = self._deliver(where, stanza)
            if error is not None:
                await self.router.bounce(stanza, error)
            return
        if where is not None and mesh is not None:
            try:
                mesh.send_nowait(ActorAddress(KIND, domain, where), m.Route(stanza))
                return
            except ActorGone:
                pass
        await self.bounce_unavailable(stanza)

    def _deliver(self, connection: ComponentConnection, stanza: Stanza) -> StanzaError | None:
        try:
            connection.deliver(stanza)
        except trio.WouldBlock:
            self._bounced += 1
            return StanzaError("resource-constraint", "the component is not keeping up")
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            self._bounced += 1
            return component_unavailable()
        self._stanzas_out += 1
        return None

    async def bounce_unavailable(self, stanza: Stanza) -> None:
        self._bounced += 1
        await self.router.bounce(stanza, component_unavailable())

    # ---- the connections' side -----------------------------------------------------------------

    def claim(self, domain: str, connection: object) -> bool:
        """May `connection`, which proved the secret of `domain`, carry its stanzas now?"""
        assert isinstance(connection, ComponentConnection)
        mesh = self.services.mesh
        if not self.table.claim(domain, connection, mesh.membership.live if mesh is not None else ()):
            return False
        self._announce(domain, connected=True)
        return True

    def release(self, connection: object) -> None:
        """`connection` ended; its domain is free again."""
        assert isinstance(connection, ComponentConnection)
        domain = connection.domain
        if domain is not None and self.table.release(domain, connection):
            log.info("component %s disconnected", domain)
            self._announce(domain, connected=False)

    # ---- the other workers ---------------------------------------------------------------------

    def _announce(self, domain: str, *, connected: bool) -> None:
        mesh = self.services.mesh
        if mesh is None:
            return
        news = m.ComponentAt(domain, mesh.index, connected)
        for worker in mesh.membership.live:
            if worker != mesh.index:
                with contextlib.suppress(ActorGone):
                    mesh.send_nowait(ActorAddress(KIND, domain, worker), news)

    def _on_frame(self, key: str, message: Any) -> None:
        mesh = self.services.mesh
        assert mesh is not None
        match message:
            case m.Route(stanza=stanza):
                local = self.table.local.get(key)
                if local is None:
                    self._bounced += 1
                error = component_unavailable() if local is None else self._deliver(local, stanza)
                if error is not None:
                    mesh.spawn(self.router.bounce, stanza, error)
            case m.ComponentAt():
                loser = self.table.heard(message)
                if loser is not None:
                    log.warning("component %s connected to w%d and here: this one goes", message.domain,
                                message.worker)  # fmt: skip
                    loser.kick("conflict", "this component is already connected")
            case _:
                raise codec.BodyError(f"{type(message).__name__} is not for a component")

    def _on_membership(self, old: Membership, new: Membership, lost: frozenset[int]) -> None:
        self.table.membership(new.live)
        # To every live worker, not only those that joined: a worker restarted between two polls
        # of the node supervisor is the same number in both memberships, and knows nothing.
        for domain in self.table.local:
            self._announce(domain, connected=True)
