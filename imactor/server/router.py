"""The router: to-JID → the actor that owns it. A service, not an actor, on purpose.

Routing is a pure decision plus a registry lookup; putting it behind one mailbox would make every
stanza of the worker queue through a single task. Routing table (ARCHITECTURE.md):

| `to`                     | goes to                                                     |
|--------------------------|-------------------------------------------------------------|
| local user (bare/full)   | that user's `UserActor` at its home worker, activated on demand |
| (of any served domain)   | (keyed by its account key, `imactor.hosts`)                 |
| room@<muc domain>[/nick] | that room's `RoomActor` at its home worker, activated on demand; |
| (conference.<each host>) | (keyed by `room_key`)                                       |
|                          | a session's presence too (see `to_user`), in order with its IQs |
| the MUC service's domain | answered here (`MucService.handle_service_stanza`)          |
| a module's service JID   | answered here (`module_services.ModuleServiceHandler`)      |
| a component's domain     | its stream, on whichever worker holds it (`serve_components`, |
| (and JIDs under it)      | `imactor.components`); bounced while it is not connected    |
| a served domain          | a client's own IQs: answered in its session (host scope);   |
|                          | IQs that reach the router (other servers' users, components, |
|                          | accounts' actors): `serve_host` (`host_iqs.HostIqHandler`)  |
| any other domain         | the s2s wing (`federate`, [s2s] enabled); else bounced:     |
|                          | `remote-server-not-found`                                   |
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from imactor import messages as m
from imactor.actors import ActorGone, ActorRef, Registry
from imactor.hosts import Hosts, account_key
from imactor.xmpp import stanza as st
from imactor.xmpp.errors import StanzaError
from imactor.xmpp.jid import JID
from imactor.xmpp.stanza import Stanza

if TYPE_CHECKING:
    from imactor.mesh.mesh import Mesh

#: Starts the actor of a key on this worker (registered by the worker's root per actor kind).
Starter = Callable[[str], Awaitable[ActorRef[Any]]]
#: Answers a stanza to the room service's own JID (disco of the service).
ServiceHandler = Callable[[Stanza], Awaitable[None]]
#: Takes a stanza for another server's domain (the s2s wing); it must not wait on the network.
Federation = Callable[[Stanza], Awaitable[None]]
#: Takes a stanza for an external component's domain (the component wing); never waits on it.
Components = Callable[[Stanza], Awaitable[None]]

log = logging.getLogger("imactor.router")


@dataclass(frozen=True, slots=True)
class RouterStatistics:
    routed_total: int  #: stanzas handed to a user actor
    bounced_total: int  #: error replies sent back instead


class Router:
    def __init__(self, domain: str, registry: Registry, hosts: Hosts | None = None) -> None:
        self.domain = domain
        #: Every domain whose accounts are ours ([server] domain and [[hosts]]): all local.
        self.hosts = hosts or Hosts(domain, frozenset({domain}))
        self._registry = registry
        self._starters: dict[str, Starter] = {}
        #: The primary domain's room service ([muc] enabled; see `serve_rooms`), and every served
        #: domain's (conference.<host>) with its own handler.
        self.room_domain: str | None = None
        self._room_services: dict[str, ServiceHandler] = {}
        #: The modules' own service domains (`Module.service`: upload.<domain>), see `serve`.
        self._module_services: dict[str, ServiceHandler] = {}
        self.routed_total = 0
        self.bounced_total = 0
        #: The node's other workers (set by the worker tree); None: every account lives here.
        self.mesh: Mesh | None = None
        #: Where stanzas to other servers go (the s2s wing); None: federation is off.
        self._federation: Federation | None = None
        #: The external components' domains ([components]) and where their stanzas go.
        self.component_domains: frozenset[str] = frozenset()
        self._components: Components | None = None
        self._connected_components: Callable[[], Iterable[str]] = tuple
        #: Answers IQ get/set to a served bare domain that reach the router (none: bounced).
        self._host_handlers: dict[str, ServiceHandler] = {}

    def starts(self, kind: str, starter: Starter) -> None:
        """How an actor of `kind` ("user", "room") starts on this worker (the root's to say)."""
        self._starters[kind] = starter

    def serve_rooms(self, domain: str, service: ServiceHandler) -> None:
        """Stanzas to `domain` go to room actors; to the bare domain, to `service`. The first
        call names the primary domain's service, whose rooms keep their bare names as keys."""
        if self.room_domain is None:
            self.room_domain = domain
        self._room_services[domain] = service

    def room_key(self, jid: JID) -> str | None:
        """The key of the room `jid` names (its actor, its rows), or None if it names none: the
        room's name on the primary domain's service, ``name@conference.<host>`` on a host's
        (as account keys are, `imactor.hosts`)."""
        if jid.localpart is None or jid.domainpart not in self._room_services or self.room_domain is None:
            return None
        return account_key(jid.localpart, jid.domainpart, self.room_domain)

    def is_room_domain(self, domain: str) -> bool:
        """Whether `domain` is one of the served chat services."""
        return domain in self._room_services

    def serve(self, domain: str, service: ServiceHandler) -> None:
        """Stanzas to `domain` (and to JIDs under it) go to `service`, in the routing task."""
        self._module_services[domain] = service

    def serve_host(self, handler: ServiceHandler | None, domain: str | None = None) -> None:
        """IQ get/set to the bare `domain` (the primary's by default; a [[hosts]] host's) go to
        `handler` (host scope; see the table); None: they bounce."""
        domain = domain or self.domain
        if handler is None:
            self._host_handlers.pop(domain, None)
        else:
            self._host_handlers[domain] = handler

    def federate(self, federation: Federation | None) -> None:
        """Stanzas to domains not served here go to `federation` (None: they bounce)."""
        self._federation = federation

    def serve_components(
        self, domains: frozenset[str], handler: Components | None,
        connected: Callable[[], Iterable[str]] = tuple,
    ) -> None:  # fmt: skip
        """Stanzas to these domains (and JIDs under them) go to `handler` (None: the wing is
        down, they bounce); `connected` names the domains whose component is connected now."""
        self.component_domains = domains
        self._components, self._connected_components = handler, connected

    def connected_components(self) -> list[str]:
        """The domains of the components connected to some worker of the node (disco#items)."""
        return sorted(self._connected_components())

    def statistics(self) -> RouterStatistics:
        return RouterStatistics(routed_total=self.routed_total, bounced_total=self.bounced_total)

    async def user(self, username: str) -> ActorRef[m.UserMessage]:
        """The account's actor: here (activated on demand) or at its home worker."""
        return await self.actor("user", username)

    async def actor(self, kind: str, key: str) -> ActorRef[Any]:
        """The user or room actor of `key`: here (activated on demand) or at its home worker."""
        mesh = self.mesh
        if mesh is not None:
            home = mesh.home(kind, key)
            if home != mesh.index:
                return mesh.remote(kind, key, home)
            if mesh.holds(kind, key):
                return mesh.local_ref(kind, key)  # its previous home is handing it over
        return await self.local(kind, key)

    async def local_user(self, username: str) -> ActorRef[m.UserMessage]:
        """The account's actor in this worker, started if it is not running."""
        return await self.local("user", username)

    async def local(self, kind: str, key: str) -> ActorRef[Any]:
        """The user or room actor of `key` in this worker, started if it is not running."""
        starter = self._starters[kind]

        async def start() -> ActorRef[Any]:
            return await starter(key)

        return await self._registry.get_or_start(kind, key, start)

    def is_external(self, domain: str) -> bool:
        """`domain` is none of this server's own (its accounts', its rooms', its modules'
        services'): another server's or a component's, whose actors are not ours."""
        return not (
            self.hosts.is_local(domain) or domain in self._room_services or domain in self._module_services
        )

    async def route(
        self, stanza: Stanza, *, wait: bool = True, completion: m.Completion | None = None,
        origin: int | None = None,
    ) -> None:  # fmt: skip
        """Deliver `stanza` to the actor owning its `to`.

        Args:
            wait: True from sessions (a full mailbox slows the sender: back-pressure). False from
                actors, which must never wait on each other (two full mailboxes would deadlock):
                a full mailbox then bounces the stanza with `resource-constraint`.
            completion: signalled once the stanza is durably handled: by the user actor it reaches,
                or here when it reaches none (bounced or dropped).
            origin: the worker of the session a presence stanza speaks for (see `m.Route`).
        """
        try:
            to = stanza.to_jid
            room_service = self._room_services.get(to.domainpart)
            if room_service is not None:
                room = self.room_key(to)
                if room is None:
                    await room_service(stanza)
                elif await self.to_actor("room", room, m.Route(stanza, completion, origin), stanza,
                                         wait=wait):  # fmt: skip
                    completion = None  # the room's to signal now
                return
            module_service = self._module_services.get(to.domainpart)
            if module_service is not None:
                await module_service(stanza)
                return
            if to.domainpart in self.component_domains:
                await self._to_component(stanza)
                return
            if not self.hosts.is_local(to.domainpart):
                await self._to_remote(stanza)
                return
            if to.localpart is None:
                if stanza.kind == "iq" and stanza.type in ("get", "set"):
                    host = self._host_handlers.get(to.domainpart)
                    if host is not None and to.resourcepart is None:
                        await host(stanza)
                    else:
                        await self.bounce(stanza, StanzaError("service-unavailable"))
                return  # messages and presence to the server, and answers to it, end here
            key = self.hosts.key(to)
            assert key is not None
            if await self.to_user(key, m.Route(stanza, completion, origin), stanza, wait=wait):
                completion = None  # the user actor's to signal now
        finally:
            if completion is not None:
                completion.done()

    async def to_user(
        self, username: str, message: m.UserMessage, stanza: Stanza | None, *, wait: bool
    ) -> bool:
        """Send `message` to the account's actor; False: it could not (`stanza` was bounced).

        A session's presence to a chat room goes to the room from here (`_presence_to_room`);
        the account gets it marked `routed`, to record it only.
        """
        if isinstance(message, m.FromResource) and await self._presence_to_room(message, wait=wait):
            message = m.FromResource(message.stanza, routed=True)
        return await self.to_actor("user", username, message, stanza, wait=wait)

    async def _presence_to_room(self, message: m.FromResource, *, wait: bool) -> bool:
        """Deliver a session's available or unavailable presence to a room (a join, a change, an
        exit) straight to the room actor; True when it was (or bounced). Other presence, or
        presence already routed, is the account's to route.

        Why not through the account, as other directed presence (RFC 6121 §4.6): the session's
        IQs and messages to the room come here, to the room, directly. Presence taking a detour
        through the account's actor (maybe on another worker) was overtaken by what the client
        sent after it: a join followed by the owner's configuration request got item-not-found
        (no room yet), against RFC 6120 §10.1 (in-order processing). Now every stanza from one
        session to one room takes one path, and a mailbox, the mesh link and activation on
        demand each keep their order.
        """
        presence = message.stanza
        room = self.room_key(presence.to_jid)
        if message.routed or presence.kind != "presence" or presence.type not in ("", "unavailable"):
            return False
        if room is None:
            return False
        origin = self.mesh.index if self.mesh is not None else None  # the session's worker: this one
        await self.to_actor("room", room, m.Route(presence, None, origin), presence, wait=wait)
        return True

    async def to_actor(self, kind: str, key: str, message: Any, stanza: Stanza | None, *, wait: bool) -> bool:
        """Send `message` to a user or room actor; False: it could not (`stanza` was bounced)."""
        for _attempt in range(3):
            ref = await self.actor(kind, key)
            try:
                if wait:
                    await ref.send(message)
                else:
                    ref.send_nowait(message)
            except ActorGone:
                # Stopped between lookup and send, or crashed (a crash skips its own unregister):
                # forget it so that the next lookup starts its successor.
                self._registry.unregister(kind, key, ref)
                continue
            except trio.WouldBlock:
                if stanza is not None:
                    await self.bounce(stanza, StanzaError("resource-constraint", "recipient is overloaded"))
                return False
            self.routed_total += 1
            return True
        log.error("could not reach %s actor %s", kind, key)
        if stanza is not None:
            await self.bounce(stanza, StanzaError("internal-server-error"))
        return False

    async def _to_remote(self, stanza: Stanza) -> None:
        if self._federation is None:
            await self.bounce(stanza, StanzaError("remote-server-not-found", "federation is not enabled"))
            return
        self.routed_total += 1
        await self._federation(stanza)

    async def _to_component(self, stanza: Stanza) -> None:
        if self._components is None:
            await self.bounce(stanza, component_unavailable())
            return
        self.routed_total += 1
        await self._components(stanza)

    async def bounce(self, stanza: Stanza, error: StanzaError) -> None:
        """Send an error back to the sender, unless the stanza is itself an error or result."""
        if stanza.type in ("error", "result"):
            return
        self.bounced_total += 1
        reply = st.error_reply(stanza.element(), error)
        if reply.get("from") is None:
            reply.set("from", self.domain)
        back = Stanza.from_element(reply)
        key, room = self.hosts.key(back.to_jid), self.room_key(back.to_jid)
        if key is not None:
            await self.to_user(key, m.Route(back), None, wait=False)
        elif room is not None:
            await self.to_actor("room", room, m.Route(back), None, wait=False)
        elif back.to_jid.domainpart in self.component_domains:
            if self._components is not None:
                await self._components(back)  # an error about what a component sent
        elif (
            not self.hosts.is_local(back.to_jid.domainpart)
            and back.to_jid.domainpart not in self._room_services
            and self._federation is not None
        ):
            await self._federation(back)  # the sender is on another server: the error goes back there


def component_unavailable() -> StanzaError:
    """The error for a stanza to a configured component that is not connected. RFC 6120
    §8.3.3.19 `service-unavailable`, type `wait` (it may connect again; Prosody answers the
    same): the domain is ours, so `remote-server-not-found` (§8.3.3.16, for a domain that
    cannot be reached) would tell the sender something false."""
    return StanzaError("service-unavailable", "the component is not connected", error_type="wait")
