"""UserActor: one per bare JID that is online or addressed (RFC 6121 delivery, presence, roster).

It owns the account's online resources with their presence and priority, the roster (loaded from
storage when the actor starts), the block list, and the directed-presence bookkeeping. Every
change to the account is serialized through its mailbox, so nothing here takes a lock.

Delivery to sessions uses `send_nowait`: a session whose mailbox is full has a client that stopped
reading, and it is kicked rather than allowed to slow the account (or its senders) down.

Modules see the account through `imactor.user.account.Account`, never this actor, in contexts
built by `imactor.server.contexts.Contexts`.

Why this file is still over 450 lines: presence (broadcast, directed presence, subscriptions),
the roster and message delivery (RFC 6121 §8.5, offline storage, the hooks) each read and change
the same resources and roster, and are still methods of the actor. Each is to become an object
of its own that the actor owns, given the state it works on (issue 15, point 5).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, assert_never

import trio
from lxml import etree

from imactor import messages as m
from imactor.actors import Actor, ActorAddress, ActorGone, ActorRef
from imactor.server.modules import Scope
from imactor.user.account import Account
from imactor.xmpp import stanza as st
from imactor.xmpp import subscription as subs
from imactor.xmpp.errors import StanzaError
from imactor.xmpp.jid import JID
from imactor.xmpp.namespaces import NS_DELAY, NS_ROSTER, qname
from imactor.xmpp.roster import RosterItem, item_element
from imactor.xmpp.stanza import Element, Stanza

if TYPE_CHECKING:
    from imactor.server.services import Services

log = logging.getLogger("imactor.user")

SUBSCRIPTION_TYPES = frozenset({"subscribe", "subscribed", "unsubscribe", "unsubscribed"})
MAX_PENDING_REQUESTS = 64  #: IQs sent by the account (`UserActor.request`) awaiting an answer
#: Shared by every account that blocks nobody: since Python 3.10 each `frozenset()` is a new
#: 216-byte object, and an online account keeps its blocklist for as long as it is online.
_NO_BLOCKS: frozenset[str] = frozenset()


@dataclass(slots=True)
class Resource:
    """One bound session of the account (one per session: slotted, nothing created unused)."""

    session: ActorRef[m.SessionMessage]
    available: bool = False
    priority: int = 0
    presence: Stanza | None = None  #: last broadcast presence
    interested: bool = False  #: requested the roster: gets roster pushes (RFC 6121 §2.1.6)
    #: Got directed presence (§4.6); None until the first one (an empty set is 216 bytes).
    directed: set[JID] | None = None
    epoch: int = 0  #: the membership epoch when it was bound (see `m.WorkersLost`)
    detached: bool = False  #: its session waits for a XEP-0198 resumption (`m.Detached`)
    state: dict[str, str] = field(default_factory=dict)  #: modules' per-resource state
    sent_wanted: bool = False  #: what its session was last told (`m.SentHooks`)


class UserActor(Actor[m.UserMessage]):
    idle_timeout = 60.0

    def __init__(self, username: str, services: Services) -> None:
        address = ActorAddress("user", username, services.worker_index)
        super().__init__(address, services.config.limits.mailbox_size)
        self.username = username
        self.services = services
        self.jid = JID.make(username, services.domain)
        #: What modules see of this account (never the actor itself).
        self.account = Account(self)
        self.exists = False
        self.resources: dict[str, Resource] = {}
        self.roster: dict[str, RosterItem] = {}
        self.roster_version = 0
        self._blocklist = _NO_BLOCKS
        self._handed_off = False
        #: Contacts' resources that told us they are available → the worker of their session:
        #: if that worker dies, nobody else is left to say they went away (`_contacts_lost`).
        self._contact_workers: dict[JID, tuple[int, int]] = {}  # → (worker, epoch when seen)
        self._module_state: dict[str, Any] = {}  #: `account_state()`
        #: IQs the account sent (`request`), by id → what to run with the answer; bounded.
        self._requests: dict[str, tuple[str, Callable[[Element], Awaitable[None]]]] = {}

    # ---- life cycle --------------------------------------------------------------------------

    async def on_start(self) -> None:
        snapshot = await self.services.storage.account_snapshot(self.username)
        self.exists = snapshot is not None
        if snapshot is not None:
            self.roster_version = snapshot.roster_version
            self.roster = {item.jid: item for item in snapshot.roster}
            self._blocklist = frozenset(snapshot.blocked) if snapshot.blocked else _NO_BLOCKS

    def before_stop(self) -> None:
        self.services.registry.unregister("user", self.username, self.ref)

    def is_idle(self) -> bool:
        return not self.resources

    # ---- AccountApi (for ACCOUNT-scope module handlers) -------------------------------------

    def roster_items(self) -> Mapping[str, RosterItem]:
        return self.roster

    def blocklist(self) -> frozenset[str]:
        return self._blocklist

    def set_blocklist(self, jids: frozenset[str]) -> None:
        self._blocklist = jids
        for resource in self.resources.values():
            self._send_to_session(resource, m.BlocklistChanged(jids))

    def available_resources(self) -> Sequence[str]:
        return [name for name, r in self.resources.items() if r.available]

    async def push_to_resources(self, element: Element, *, interested_only: bool = False) -> None:
        for name, resource in list(self.resources.items()):
            if interested_only and not resource.interested:
                continue
            push = st.parse(st.serialize(element))
            push.set("to", str(self.jid.with_resource(name)))
            if push.get("from") is None:
                push.set("from", str(self.jid))  # RFC 6121 §2.1.6: a push comes from the account
            self._deliver_to(resource, Stanza.from_element(push))

    async def route(self, element: Element) -> None:
        await self._route_quietly(Stanza.from_element(element))  # actor → actor: never wait

    def send_to_resource(self, resource: str, element: Element) -> bool:
        target = self.resources.get(resource)
        if target is None:
            return False
        self._deliver_to(target, Stanza.from_element(element))
        return True

    def bound_resources(self) -> Sequence[str]:
        return list(self.resources)

    def resource_state(self, resource: str) -> Mapping[str, str] | None:
        target = self.resources.get(resource)
        return None if target is None else target.state

    def set_resource_state(self, resource: str, key: str, value: str | None) -> bool:
        target = self.resources.get(resource)
        if target is None:
            return False
        if value is None:
            target.state.pop(key, None)
        else:
            target.state[key] = value
        self._send_to_session(target, m.ResourceState(tuple(sorted(target.state.items()))))
        return True

    def account_state(self) -> dict[str, Any]:
        return self._module_state

    def is_detached(self, resource: str) -> bool:
        target = self.resources.get(resource)
        return target is not None and target.detached

    async def request(self, element: Element, on_reply: Callable[[Element], Awaitable[None]]) -> None:
        request_id = element.get("id") or self.services.new_id()
        element.set("id", request_id)
        element.set("from", str(self.jid))
        if len(self._requests) >= MAX_PENDING_REQUESTS:  # unanswered ones: forget the oldest
            del self._requests[next(iter(self._requests))]
        self._requests[request_id] = (element.get("to", ""), on_reply)
        await self._route_quietly(Stanza.from_element(element))

    async def _iq_reply(self, stanza: Stanza) -> None:
        """An answer to one of the account's own requests (`request`); others are dropped."""
        pending = self._requests.get(stanza.id or "")
        if pending is None or str(stanza.from_jid) != pending[0]:
            return  # not ours, or from someone else than the one asked (a forged answer)
        del self._requests[stanza.id or ""]
        await pending[1](stanza.element())

    def _tell_sent_wanted(self) -> None:
        """Tell each session whether to hand us the messages it sends (`m.SentHooks`), when
        that changed for it (a resource bound, went, or switched XEP-0280 carbons)."""
        if not self.services.modules.sent_hooks or self._handed_off:
            return
        wanted = self.services.modules.wants_sent(self)
        for resource in self.resources.values():
            if resource.sent_wanted != wanted:
                resource.sent_wanted = wanted
                self._send_to_session(resource, m.SentHooks(wanted))

    async def _presence_hooks(self, stanza: Stanza, *, own: bool) -> Stanza:
        """Run the modules' presence hooks; for `own` presence, return what they leave in it."""
        hooks = self.services.modules.presence_hooks
        if not hooks:
            return stanza
        element = stanza.element()
        for hook, options in hooks:
            ctx = self.services.contexts.presence(element, self.account, options, own=own)
            await hook(ctx)
        return Stanza.from_element(element) if own else stanza

    # ---- messages ----------------------------------------------------------------------------

    async def handle(self, message: m.UserMessage) -> None:
        if self._handed_off:
            # Queued before the hand-off: the account's new home handles it. Not the mesh's own
            # notices, though: they were meant for this actor (a second HandOff forwarded would
            # make the new home hand off too).
            if not isinstance(message, m.HandOff | m.WorkersLost):
                await self.services.router.to_user(self.username, message, None, wait=False)
            return
        match message:
            case m.Bind():
                await self._bind(message)
            case m.Unbind():
                await self._unbind(message)
            case m.Route():
                try:
                    await self._inbound(message.stanza, message.origin)
                finally:
                    # Archived, stored offline, delivered, bounced or dropped (or failed): the
                    # sender's session may count it in its XEP-0198 `h` now.
                    if message.completion is not None:
                        message.completion.done()
            case m.FromResource(stanza, routed):
                await self._from_resource(stanza, routed=routed)
            case m.Undelivered():
                await self._undelivered(message.stanzas)
            case m.AccountRemoved():
                self.exists = False
                self.roster.clear()
                self._blocklist = _NO_BLOCKS
                for resource in self.resources.values():
                    self._send_to_session(resource, m.Kick("not-authorized", "account removed"))
                self.resources.clear()
                self.stop()
            case m.Rebind():
                self._rebind(message)
            case m.SessionLost():
                await self._drop_resources(lambda resource: resource.session == message.session)
            case m.Detached():
                detached = self.resources.get(message.resource)
                if detached is not None and detached.session == message.session:
                    detached.detached = message.detached
            case m.WorkersLost():
                await self._drop_resources(
                    lambda resource: (
                        resource.session.address.worker in message.workers and resource.epoch < message.epoch
                    )
                )
                self._contacts_lost(message.workers, message.epoch)
            case m.HandOff():
                log.debug("%s: handing off (%d resources)", self.address, len(self.resources))
                # Our home moved: the new home takes over from storage and our sessions
                # re-register there (`Rebind`), so nothing is announced to contacts from here.
                # Each session's worker sends it `Rehome` when it sees the new membership; we
                # send one too, since a worker may see a change that the session's worker never
                # does (a restarted worker catching up on announcements).
                for resource in self.resources.values():
                    self._send_to_session(resource, m.Rehome())
                self.resources.clear()
                self._handed_off = True
                self.stop()
            case _:
                assert_never(message)
        if not isinstance(message, m.Route):  # a stanza from elsewhere changes no resource
            self._tell_sent_wanted()

    async def _drop_resources(self, lost: Callable[[Resource], bool]) -> None:
        """Unbind the resources whose sessions are `lost` (gone without an `Unbind`)."""
        for name, resource in list(self.resources.items()):
            if lost(resource):
                log.debug("%s: %s lost with %s", self.address, name, resource.session.address)
                del self.resources[name]
                await self._resource_gone(name, resource)

    def _epoch(self) -> int:
        mesh = self.services.mesh
        return 0 if mesh is None else mesh.membership.epoch

    def _contacts_lost(self, workers: frozenset[int], epoch: int) -> None:
        """RFC 6121 §4.5.2 on a contact's behalf: its sessions died with their worker, so the
        server announces them unavailable to our resources (nobody else still knows of them)."""
        for full, (worker, seen_at) in list(self._contact_workers.items()):
            if worker in workers and seen_at < epoch:
                del self._contact_workers[full]
                gone = Stanza.from_element(st.make("presence", from_=full, to=self.jid, type_="unavailable"))
                for resource in self.resources.values():
                    if resource.available:
                        self._deliver_to(resource, gone)

    def _rebind(self, request: m.Rebind) -> None:
        """A session bound before a membership change registers here, its new home; it keeps
        its resource (a different session holding the name now would be a conflict: it loses)."""
        existing = self.resources.get(request.resource)
        if existing is not None and existing.session != request.session:
            self._send_to_session(existing, m.Kick("conflict", "replaced by a new session"))
        presence = request.presence
        log.debug("%s: rebound %s to %s", self.address, request.resource, request.session.address)
        self.resources[request.resource] = Resource(
            session=request.session,
            available=presence is not None,
            priority=0 if presence is None else _priority(presence),
            presence=presence,
            interested=request.interested,
            epoch=self._epoch(),
            state=dict(request.state),
        )

    async def _bind(self, request: m.Bind) -> None:
        if not self.exists:
            # Started while the account did not exist (a stanza to a deleted account); it has
            # just authenticated, so it was created since: load it now.
            await self.on_start()
        limits = self.services.config.limits
        resource = request.resource or self.services.new_resource()
        existing = self.resources.get(resource)
        if existing is not None and existing.session != request.session:
            policy = self.services.config.resources.conflict
            if policy == "refuse":
                request.reply.fail(StanzaError("conflict", "resource in use"))
                return
            if policy == "random":
                resource = self.services.new_resource()
            else:  # kick_old: RFC 6120 §7.7.2.2, the old session ends with <conflict/>
                self._send_to_session(existing, m.Kick("conflict", "replaced by a new session"))
                await self._resource_gone(resource, existing)
        elif len(self.resources) >= limits.max_sessions_per_user:
            request.reply.fail(StanzaError("resource-constraint", "too many sessions"))
            return
        self.resources[resource] = Resource(session=request.session, epoch=self._epoch())
        log.debug("%s: bound %s to %s", self.address, resource, request.session.address)
        request.reply.send(m.Bound(self.jid.with_resource(resource), self._blocklist))

    async def _unbind(self, message: m.Unbind) -> None:
        resource = self.resources.get(message.resource)
        if resource is None or resource.session != message.session:
            return  # already replaced (conflict) or never bound
        log.debug("%s: unbound %s from %s", self.address, message.resource, message.session.address)
        del self.resources[message.resource]
        await self._resource_gone(message.resource, resource)

    async def _resource_gone(self, name: str, resource: Resource) -> None:
        """RFC 6121 §4.5.2 / §4.6.3: an available resource that vanishes goes unavailable. One
        that never sent initial presence goes unavailable only where it sent directed presence:
        a client that joined chat rooms without it (aioxmpp's default) leaves them (XEP-0045
        §7.14), or a temporary room would stay, with a ghost occupant, after its last one left."""
        if not resource.available:
            unavailable = st.make("presence", from_=self.jid.with_resource(name), type_="unavailable")
            gone = Stanza.from_element(_addressed(unavailable, self.jid))
            await self._unavailable_to_directed(resource, gone)
            return
        self.resources.pop(name, None) if self.resources.get(name) is resource else None
        resource.available = False
        unavailable = st.make("presence", from_=self.jid.with_resource(name), type_="unavailable")
        gone = await self._presence_hooks(Stanza.from_element(_addressed(unavailable, self.jid)), own=True)
        await self._broadcast_presence(name, resource, gone)
        if not self.available_resources():
            await self.services.storage.last_activity.set(self.username, time.time(), "")

    # ---- stanzas from the account's own resources ----------------------------------------

    async def _from_resource(self, stanza: Stanza, *, routed: bool = False) -> None:
        if stanza.kind == "presence":
            await self._outbound_presence(stanza, routed=routed)
        elif stanza.kind == "iq":
            if stanza.type in ("result", "error"):
                await self._iq_reply(stanza)
            else:
                await self._account_iq(stanza, own=True)
        elif stanza.kind == "message":
            await self._sent_hooks(stanza)

    async def _outbound_presence(self, stanza: Stanza, *, routed: bool = False) -> None:
        """`routed`: a directed presence the router delivered already (to a chat room): recorded
        here, not sent again (see `Router.to_user`)."""
        resource_name = stanza.from_jid.resourcepart or ""
        resource = self.resources.get(resource_name)
        if resource is None:
            return
        if stanza.type in SUBSCRIPTION_TYPES:
            await self._outbound_subscription(stanza)
            return
        if stanza.type not in ("", "unavailable"):
            return  # probes and errors from clients are not ours to send (RFC 6121 §4.3)
        if stanza.to_jid != self.jid:
            # Directed presence (§4.6): recorded so that unavailable follows at logout.
            if stanza.type == "" and not self._subscribed_from(stanza.to_jid):
                if resource.directed is None:
                    resource.directed = set()
                resource.directed.add(stanza.to_jid)
            elif stanza.type == "unavailable" and resource.directed is not None:
                resource.directed.discard(stanza.to_jid)
            if not routed:
                await self._route_presence(stanza, resource)
            return
        if stanza.type == "unavailable":
            if resource.available:
                resource.available = False
                stanza = await self._presence_hooks(stanza, own=True)
                await self._broadcast_presence(resource_name, resource, stanza)
                if not self.available_resources():  # XEP-0012 §4: when and why it went away
                    status = stanza.element().findtext(qname("jabber:client", "status")) or ""
                    await self.services.storage.last_activity.set(self.username, time.time(), status)
            return
        initial = not resource.available
        was_negative = resource.priority < 0
        stanza = await self._presence_hooks(stanza, own=True)
        resource.available = True
        resource.priority = _priority(stanza)
        resource.presence = stanza
        await self._broadcast_presence(resource_name, resource, stanza)
        if initial:
            await self._on_initial_presence(resource_name, resource)
        elif was_negative and resource.priority >= 0:
            await self._flush_offline(resource)  # XEP-0160 §2: now it may receive them

    async def _broadcast_presence(self, name: str, resource: Resource, stanza: Stanza) -> None:
        """§4.2.2 / §4.4.2: to contacts with a from/both subscription, and to own resources."""
        for contact, item in self.roster.items():
            if item.subscription in ("from", "both"):
                target = JID.parse(contact)
                if not self._is_blocked(target):  # XEP-0191 §3.3: blocked contacts see nothing
                    await self._route_presence(stanza.readdressed(target), resource)
        for other in self.resources.values():
            if other.available or other is resource:
                self._deliver_to(other, stanza.readdressed(self.jid))
        if stanza.type == "unavailable":
            await self._unavailable_to_directed(resource, stanza)
        self.services.presence_changed(self.jid, name, stanza.type != "unavailable")

    async def _unavailable_to_directed(self, resource: Resource, unavailable: Stanza) -> None:
        """§4.6.3: the entities that got directed presence from `resource` learn it went away."""
        directed, resource.directed = resource.directed, None
        for target in directed or ():
            await self._route_presence(unavailable.readdressed(target), resource)

    async def _on_initial_presence(self, name: str, resource: Resource) -> None:
        full = self.jid.with_resource(name)
        for contact, item in self.roster.items():
            if item.subscription in ("to", "both"):
                probe = st.make("presence", from_=self.jid, to=contact, type_="probe")
                await self._route_quietly(Stanza.from_element(probe))
        for other in self.resources.values():
            if other is not resource and other.available and other.presence is not None:
                self._deliver_to(resource, other.presence.readdressed(full))
        for contact, item in self.roster.items():
            if item.pending_in:  # §3.1.3: pending requests are delivered again at each login
                request = st.make("presence", from_=contact, to=self.jid, type_="subscribe")
                self._deliver_to(resource, Stanza.from_element(request))
        if resource.priority >= 0:
            await self._flush_offline(resource)

    async def _flush_offline(self, resource: Resource) -> None:
        """XEP-0160: offline messages go to the first resource with non-negative priority."""
        offline = self.services.storage.offline
        stored = await offline.fetch(self.username)
        if not stored:
            return
        for _, data in stored:
            self._deliver_to(resource, _stanza_from_bytes(data))
        await offline.delete(self.username, [stored_id for stored_id, _ in stored])

    async def _outbound_subscription(self, stanza: Stanza) -> None:
        contact = stanza.to_jid.bare
        key = str(contact)
        item = self.roster.get(key)
        outcome = subs.outbound(_state(item), stanza.type)
        if outcome.changed:
            await self._save_item(key, item, outcome.state)
        if outcome.route:
            # §3.1.2: the server stamps the bare JID as the sender of subscription stanzas.
            el = stanza.element()
            el.set("from", str(self.jid))
            el.set("to", key)
            await self._route_quietly(Stanza.from_element(el))
            if stanza.type == "subscribed":
                for resource in self.resources.values():
                    if resource.available and resource.presence is not None:
                        await self._route_presence(resource.presence.readdressed(contact), resource)
            elif stanza.type == "unsubscribed":
                await self._send_unavailable_to(contact)  # §3.2.2

    async def _send_unavailable_to(self, contact: JID) -> None:
        """Unavailable presence from every available resource to a contact who lost our presence."""
        for name, resource in self.resources.items():
            if resource.available:
                full = self.jid.with_resource(name)
                gone = st.make("presence", from_=full, to=contact, type_="unavailable")
                await self._route_quietly(Stanza.from_element(gone))

    # ---- stanzas addressed to the account -----------------------------------------------

    async def _inbound(self, stanza: Stanza, origin: int | None = None) -> None:
        if not self.exists:
            await self._no_such_account(stanza)
            return
        if self._is_blocked(stanza.from_jid) and stanza.from_jid.bare != self.jid:
            # XEP-0191 §3.5: presence is dropped; message and IQ get service-unavailable.
            if stanza.kind != "presence":
                await self._bounce(stanza, StanzaError("service-unavailable"))
            return
        if stanza.kind == "message":
            await self._inbound_message(stanza)
        elif stanza.kind == "presence":
            await self._inbound_presence(stanza, origin)
        else:
            await self._inbound_iq(stanza)

    async def _no_such_account(self, stanza: Stanza) -> None:
        """RFC 6121 §8.5.1: no such user."""
        if stanza.kind == "presence":
            if stanza.type == "subscribe" or stanza.type == "probe":
                reply = st.make("presence", from_=self.jid, to=stanza.from_jid.bare, type_="unsubscribed")
                await self._route_quietly(Stanza.from_element(reply))
            return
        if stanza.kind == "message" and stanza.type in ("headline", "groupchat"):
            return
        await self._bounce(stanza, StanzaError("service-unavailable"))

    async def _inbound_message(self, stanza: Stanza) -> None:
        resource_name = stanza.to_jid.resourcepart
        if resource_name is not None:
            resource = self.resources.get(resource_name)
            if resource is not None:
                hooked = await self._message_hooks(stanza)
                if hooked is not None:
                    self._deliver_to(resource, hooked)
                    await self._delivered_hooks(hooked, (resource_name,))
                return
            # §8.5.3.2.1: a full JID with no such resource. Only a chat message is handled as
            # if sent to the bare JID; normal and groupchat get an error, headline and error
            # are dropped.
            if stanza.type in ("error", "headline"):
                return
            if stanza.type != "chat":
                await self._bounce(stanza, StanzaError("service-unavailable"))
                return
        if stanza.type == "groupchat":
            await self._bounce(stanza, StanzaError("service-unavailable"))
            return
        if stanza.type == "error":
            return  # §8.5.2.1.1 / §8.5.2.2.1: an error to the bare JID is silently ignored
        candidates = [r for r in self.resources.values() if r.available and r.priority >= 0]
        if candidates or stanza.type == "headline":
            hooked = await self._message_hooks(stanza)
            if hooked is None:
                return
            stanza = hooked
        if stanza.type == "headline":
            for resource in candidates:
                self._deliver_to(resource, stanza)
            await self._delivered_hooks(stanza, self._names(candidates))
            return
        if candidates:
            # §8.5.2.1.1: the highest-priority resources get normal and chat messages.
            top = max(r.priority for r in candidates)
            chosen = [resource for resource in candidates if resource.priority == top]
            for resource in chosen:
                self._deliver_to(resource, stanza)
            await self._delivered_hooks(stanza, self._names(chosen))
            return
        await self._store_offline(stanza, run_hooks=True)

    async def _undelivered(self, stanzas: tuple[Stanza, ...]) -> None:
        """XEP-0198 §4: unacknowledged messages of an ended session wait offline (XEP-0160 types)."""
        if not self.exists:
            return
        for stanza in stanzas:
            if stanza.kind == "message" and stanza.type in ("", "normal", "chat"):
                await self._store_offline(stanza)

    async def _store_offline(self, stanza: Stanza, *, run_hooks: bool = False) -> None:
        """Keep a message for later; `run_hooks` for a new one (not one handed back undelivered,
        which went through the message hooks, e.g. the archive, already)."""
        offline = self.services.storage.offline
        if await offline.count(self.username) >= self.services.config.limits.max_offline_messages:
            await self._bounce(stanza, StanzaError("service-unavailable", "offline storage is full"))
            return
        if run_hooks:
            hooked = await self._message_hooks(stanza)
            if hooked is None:
                return
            stanza = hooked
        el = stanza.element()
        delay = st.child(el, NS_DELAY, "delay")
        delay.set("from", self.services.domain)
        delay.set("stamp", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        delay.text = "Offline Storage"
        await offline.store(self.username, st.serialize(el))
        if run_hooks:
            await self._delivered_hooks(stanza, (), offline=True)

    async def _message_hooks(self, stanza: Stanza) -> Stanza | None:
        """Run the modules' message hooks (e.g. the archive) on a message about to be delivered
        or stored; None: a hook refused it and the sender got the error."""
        hooks = self.services.modules.message_hooks
        if not hooks:
            return stanza
        element = stanza.take_element()
        for hook, options in hooks:
            ctx = self.services.contexts.message(element, self.account, options)
            try:
                await hook(ctx)
            except StanzaError as error:
                await self._bounce(stanza, error)
                return None
        return Stanza.from_element(element)

    async def _delivered_hooks(
        self, stanza: Stanza, names: tuple[str, ...], *, offline: bool = False
    ) -> None:
        """Run the modules' after-delivery hooks (carbons, push); they refuse nothing."""
        hooks = self.services.modules.delivered_hooks
        if not hooks:
            return
        for hook, options in hooks:
            ctx = self.services.contexts.delivered(
                stanza, self.account, options, delivered_to=names, offline=offline
            )
            try:
                await hook(ctx)
            except StanzaError as error:
                log.debug("%s: after-delivery hook refused: %s", self.address, error)

    async def _sent_hooks(self, stanza: Stanza) -> None:
        """Run the modules' hooks on a message one of our resources sent (carbons)."""
        hooks = self.services.modules.sent_hooks
        if not hooks or stanza.from_jid.resourcepart not in self.resources:
            return
        element = stanza.element()
        for hook, options in hooks:
            ctx = self.services.contexts.message(element, self.account, options)
            try:
                await hook(ctx)
            except StanzaError as error:
                # Refused (e.g. by a policy): later hooks (carbons) must not act on it. The
                # recipient's actor, which runs the same checks, bounces it to the sender.
                log.debug("%s: sent-message hook refused: %s", self.address, error)
                return

    def _names(self, chosen: Sequence[Resource]) -> tuple[str, ...]:
        return tuple(name for name, resource in self.resources.items() if any(resource is c for c in chosen))

    async def _inbound_presence(self, stanza: Stanza, origin: int | None = None) -> None:
        if stanza.type in SUBSCRIPTION_TYPES:
            await self._inbound_subscription(stanza)
            return
        if stanza.from_jid.resourcepart is not None and stanza.type in ("", "unavailable"):
            if stanza.type == "" and origin is not None:
                self._contact_workers[stanza.from_jid] = (origin, self._epoch())
            else:
                self._contact_workers.pop(stanza.from_jid, None)
            if stanza.from_jid.bare != self.jid:
                await self._presence_hooks(stanza, own=False)
        if stanza.type == "probe":
            # §4.3.2: only a contact with a from/both subscription learns our presence.
            if self._subscribed_from(stanza.from_jid) or stanza.from_jid.bare == self.jid:
                for online in self.resources.values():
                    if online.available and online.presence is not None:
                        await self._route_presence(online.presence.readdressed(stanza.from_jid), online)
            return
        resource_name = stanza.to_jid.resourcepart
        if resource_name is not None:
            resource = self.resources.get(resource_name)
            if resource is not None:
                self._deliver_to(resource, stanza)
            return
        for available in self.resources.values():
            if available.available:
                self._deliver_to(available, stanza)

    async def _inbound_subscription(self, stanza: Stanza) -> None:
        contact = stanza.from_jid.bare
        key = str(contact)
        item = self.roster.get(key)
        outcome = subs.inbound(_state(item), stanza.type)
        if outcome.changed:
            await self._save_item(key, item, outcome.state, hidden_ok=True)
        if outcome.deliver:
            el = stanza.element()
            el.set("from", key)
            el.set("to", str(self.jid))
            clean = Stanza.from_element(el)
            for resource in self.resources.values():
                if resource.available:
                    self._deliver_to(resource, clean)
        if stanza.type == "unsubscribe" and _state(item).subscription in ("from", "both"):
            # §3.3.3: the contact no longer receives our presence: tell it we are gone.
            await self._send_unavailable_to(contact)
        if outcome.auto_reply is not None:
            reply = st.make("presence", from_=self.jid, to=contact, type_=outcome.auto_reply)
            await self._route_quietly(Stanza.from_element(reply))
            if outcome.auto_reply == "subscribed":
                for resource in self.resources.values():
                    if resource.available and resource.presence is not None:
                        await self._route_presence(resource.presence.readdressed(contact), resource)

    async def _inbound_iq(self, stanza: Stanza) -> None:
        resource_name = stanza.to_jid.resourcepart
        if resource_name is not None:
            resource = self.resources.get(resource_name)
            if resource is not None:
                self._deliver_to(resource, stanza)
            elif stanza.type in ("get", "set"):
                await self._bounce(stanza, StanzaError("service-unavailable"))
            return
        if stanza.type in ("get", "set"):
            await self._account_iq(stanza, own=stanza.from_jid.bare == self.jid)
        else:
            await self._iq_reply(stanza)

    async def _account_iq(self, stanza: Stanza, *, own: bool) -> None:
        """IQs to the bare JID are answered by the server on the account's behalf (§8.5.2.1.3)."""
        element = stanza.element()
        if len(element) != 1:
            await self._reply(element, StanzaError("bad-request", "an IQ get/set has exactly one payload"))
            return
        found = self.services.modules.iq_handler(stanza.type, element[0], Scope.ACCOUNT)
        if found is None:
            await self._reply(element, StanzaError("service-unavailable"))
            return
        handler, options = found
        if own and etree.QName(element[0]).namespace == NS_ROSTER:
            self._mark_interested(stanza.from_jid)
        contexts = self.services.contexts
        ctx = contexts.iq(element, stanza.from_jid, stanza.to_jid, options, account=self.account)
        try:
            result = await handler(ctx)
        except StanzaError as error:
            await self._reply(element, error)
            return
        if result is not None:
            await self._send_back(result)

    # ---- roster ------------------------------------------------------------------------------

    async def set_roster_item(self, item: RosterItem | None, jid: str) -> None:
        """Store an item (None: remove it) and push it to interested resources (RFC 6121 §2.1.6)."""
        roster = self.services.storage.roster
        if item is None:
            self.roster.pop(jid, None)
            self.roster_version = await roster.remove(self.username, jid)
            pushed = RosterItem(jid=jid, subscription="remove")
        else:
            self.roster[jid] = item
            self.roster_version = await roster.put(self.username, item)
            pushed = item
        if item is not None and not item.is_visible:
            return
        push = st.make("iq", type_="set", id_=self.services.new_id())
        query = st.child(push, NS_ROSTER, "query")
        query.set("ver", str(self.roster_version))
        query.append(item_element(pushed))
        await self.push_to_resources(push, interested_only=True)

    async def _save_item(
        self, key: str, item: RosterItem | None, state: subs.SubState, hidden_ok: bool = False
    ) -> None:
        base = item or RosterItem(jid=key, name=None)
        new = replace(base, subscription=state.subscription, ask=state.pending_out,
                      pending_in=state.pending_in, approved=state.approved)  # fmt: skip
        if (item is None or not item.is_visible) and state == subs.SubState():
            # An item the user never saw (it only held an inbound request) that is now empty:
            # a refused or withdrawn request leaves no trace in the roster (RFC 6121 §3.1.3).
            if item is not None:
                self.roster.pop(key, None)
                self.roster_version = await self.services.storage.roster.remove(self.username, key)
            return
        if item is None and not hidden_ok and not state.pending_out and not state.approved:
            return
        await self.set_roster_item(new, key)

    def _mark_interested(self, full: JID) -> None:
        resource = self.resources.get(full.resourcepart or "")
        if resource is not None:
            resource.interested = True

    # ---- helpers -----------------------------------------------------------------------------

    def _subscribed_from(self, jid: JID) -> bool:
        item = self.roster.get(str(jid.bare))
        return item is not None and item.subscription in ("from", "both")

    def _is_blocked(self, jid: JID) -> bool:
        if not self._blocklist:
            return False
        return (
            str(jid) in self._blocklist
            or str(jid.bare) in self._blocklist
            or jid.domainpart in self._blocklist
        )

    def _deliver_to(self, resource: Resource, stanza: Stanza) -> None:
        self._send_to_session(resource, m.Deliver(stanza))

    def _send_to_session(self, resource: Resource, message: m.SessionMessage) -> None:
        try:
            resource.session.send_nowait(message)
        except trio.WouldBlock:
            # The client stopped reading; its session ends rather than stall this account.
            log.warning("%s: session mailbox full, disconnecting %s", self.address, resource.session.address)
            with contextlib.suppress(trio.WouldBlock, ActorGone):
                resource.session.send_nowait(m.Kick("policy-violation", "not reading"))
            self.services.sessions.kill(resource.session)
        except ActorGone:
            pass

    async def _route_presence(self, stanza: Stanza, resource: Resource) -> None:
        """Presence on behalf of one of our resources: says where its session lives (`m.Route`)."""
        origin = resource.session.address.worker
        await self.services.router.route(stanza, wait=False, origin=origin)

    async def _route_quietly(self, stanza: Stanza) -> None:
        await self.services.router.route(stanza, wait=False)

    async def _bounce(self, stanza: Stanza, error: StanzaError) -> None:
        if stanza.type in ("error", "result"):
            return
        await self._send_back(st.error_reply(stanza.element(), error))

    async def _reply(self, request: Element, error: StanzaError) -> None:
        if request.get("type") in ("error", "result"):
            return
        await self._send_back(st.error_reply(request, error))

    async def _send_back(self, element: Element) -> None:
        if element.get("from") is None:
            element.set("from", str(self.jid))
        await self.services.router.route(Stanza.from_element(element), wait=False)


def _state(item: RosterItem | None) -> subs.SubState:
    if item is None:
        return subs.SubState()
    return subs.SubState(item.subscription, item.ask, item.pending_in, item.approved)  # type: ignore[arg-type]


def _priority(stanza: Stanza) -> int:
    el = stanza.element()
    text = el.findtext(qname("jabber:client", "priority"))
    try:
        return max(-128, min(127, int(text))) if text else 0
    except ValueError:
        return 0


def _addressed(element: Element, to: JID) -> Element:
    element.set("to", str(to))
    return element


def _stanza_from_bytes(data: bytes) -> Stanza:
    return Stanza.from_element(st.parse(data))
