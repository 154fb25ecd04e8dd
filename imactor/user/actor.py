"""UserActor: one per bare JID that is online or addressed (RFC 6121 delivery, presence, roster).

Every change to the account is serialized through its mailbox, so nothing here takes a lock. The
actor owns the account's state and the objects that work on it, each given only the part it
needs and calling nothing back in the actor:

- `Resources` (`imactor.user.resources`): the bound sessions by resource name, and the sends to
  them (a session that stops reading is kicked rather than allowed to slow the account down);
- `Roster` (`imactor.user.roster`): the items, their version and the pushes (RFC 6121 §2);
- `Blocklist` (`imactor.user.blocklist`): XEP-0191;
- `AccountPresence` (`imactor.user.presence`): presence and subscriptions both ways (§3, §4);
- `Delivery` (`imactor.user.delivery`): messages to the account, offline storage, the message
  hooks (§8.5, XEP-0160);
- `Outbound` (`imactor.user.outbound`): what the account routes out, errors to senders.

What stays here: the life cycle, binding and unbinding resources (the worker membership, hand-off
to a new home), the dispatch of each message, IQs to the account, and the `AccountApi` that
modules see through `imactor.user.account.Account` in contexts built by
`imactor.server.contexts.Contexts`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, assert_never

from lxml import etree

from imactor import messages as m
from imactor.actors import Actor, ActorAddress, ActorGone, ActorRef
from imactor.actors.registry import Retiring
from imactor.server.modules import Scope
from imactor.storage.errors import StorageError
from imactor.user.account import Account
from imactor.user.blocklist import Blocklist
from imactor.user.delivery import Delivery
from imactor.user.outbound import Outbound
from imactor.user.presence import AccountPresence, membership_epoch, priority
from imactor.user.resources import Resource, Resources
from imactor.user.roster import Roster
from imactor.xmpp import stanza as st
from imactor.xmpp.errors import StanzaError
from imactor.xmpp.namespaces import NS_ROSTER
from imactor.xmpp.roster import RosterItem
from imactor.xmpp.stanza import Element, Stanza

if TYPE_CHECKING:
    from imactor.server.services import Services

log = logging.getLogger("imactor.user")

MAX_PENDING_REQUESTS = 64  #: IQs sent by the account (`UserActor.request`) awaiting an answer

__all__ = ["Resource", "UserActor"]


class UserActor(Actor[m.UserMessage]):
    idle_timeout = 60.0

    def __init__(self, username: str, services: Services) -> None:
        address = ActorAddress("user", username, services.worker_index)
        super().__init__(address, services.config.limits.mailbox_size)
        self.username = username
        self.services = services
        self.jid = services.hosts.jid(username)  # an account key: alice, or alice@other.example
        #: The modules of the account's domain (`HostView`: a [[hosts]] host may differ).
        self.host = services.view(self.jid.domainpart)
        #: What modules see of this account (never the actor itself).
        self.account = Account(self)
        self.exists = False
        self.resources = resources = Resources(address, self.jid, services.sessions)
        self.roster = Roster(
            username, services.storage.roster, new_id=services.new_id,
            # The resources, not the actor: no reference cycle through the roster.
            push=lambda element: resources.push(element, interested_only=True),
        )  # fmt: skip
        self.blocked = Blocklist()
        self.out = Outbound(services.router, self.jid)
        self.delivery = Delivery(services, self.account, self.resources, self.out)
        self.presence = AccountPresence(
            services, self.account, resources=self.resources, roster=self.roster,
            blocklist=self.blocked, delivery=self.delivery, out=self.out,
        )  # fmt: skip
        self._handed_off = False
        self._retiring: Retiring | None = None  # from the decision to stop until the end
        self._module_state: dict[str, Any] = {}  #: `account_state()`
        #: IQs the account sent (`request`), by id → what to run with the answer; bounded.
        self._requests: dict[str, tuple[str, Callable[[Element], Awaitable[None]]]] = {}

    # ---- life cycle --------------------------------------------------------------------------

    async def on_start(self) -> None:
        snapshot = await self.services.storage.account_snapshot(self.username)
        self.exists = snapshot is not None
        if snapshot is not None:
            self.roster.load(snapshot.roster, snapshot.roster_version)
            self.blocked.set(snapshot.blocked)
            await self._load_shared()

    async def _load_shared(self) -> list[str]:
        """Ask the modules for the shared contacts (`Module.shared_roster`). A module that cannot
        read what it shares leaves the previous ones in place (none at start): the roster still
        serves, and the next reload tries again. Returns the contacts whose item changed."""
        hooks = self.host.modules.shared_roster_hooks
        if not hooks and not self.roster.shared:
            return []
        revision, items = 0, dict[str, RosterItem]()
        try:
            for hook, options in hooks:
                shared = await hook(self.host.contexts.shared_roster(self.username, options))
                revision += shared.revision
                for key, item in shared.items.items():
                    if key != str(self.jid):
                        items[key] = _merge_groups(items.get(key), item)
        except StorageError as exc:
            log.warning("%s: shared roster not read, the previous one stays: %s", self.address, exc)
            return []
        return self.roster.set_shared(items, revision)

    async def _refresh_shared(self) -> None:
        """`m.SharedRosterChanged`: re-read the shared contacts, push what changed (RFC 6121
        §2.1.6) and give presence to the contacts who may now see it, or take it back (§3.1.5,
        §3.2.2), as a subscription change would."""
        sees_us = set(self.roster.contacts("from", "both"))
        for key in await self._load_shared():
            self.roster.push_current(key)
        now = set(self.roster.contacts("from", "both"))
        await self.presence.subscriptions_changed(gained_from=now - sees_us, lost_from=sees_us - now)

    def before_stop(self) -> None:
        self._retiring = self.services.registry.retire("user", self.username, self.ref)

    def after_stop(self) -> None:
        if self._retiring is not None:
            self.services.registry.ended("user", self.username, self._retiring)

    def is_idle(self) -> bool:
        return not self.resources

    # ---- AccountApi (for ACCOUNT-scope module handlers) -------------------------------------

    @property
    def roster_version(self) -> int:
        return self.roster.client_version

    def roster_items(self) -> Mapping[str, RosterItem]:
        return self.roster.view()

    def is_shared_contact(self, jid: str) -> bool:
        return self.roster.is_shared(jid)

    async def set_roster_item(self, item: RosterItem | None, jid: str) -> None:
        await self.roster.set_item(item, jid)

    def blocklist(self) -> frozenset[str]:
        return self.blocked.jids

    def set_blocklist(self, jids: frozenset[str]) -> None:
        self.blocked.set(jids)
        self.resources.send_to_all(m.BlocklistChanged(self.blocked.jids))

    def available_resources(self) -> Sequence[str]:
        return self.resources.available_names()

    async def push_to_resources(self, element: Element, *, interested_only: bool = False) -> None:
        self.resources.push(element, interested_only=interested_only)

    async def route(self, element: Element) -> None:
        await self.out.route(Stanza.from_element(element))  # actor → actor: never wait

    def send_to_resource(self, resource: str, element: Element) -> bool:
        target = self.resources.get(resource)
        if target is None:
            return False
        self.resources.deliver(target, Stanza.from_element(element))
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
        self.resources.send(target, m.ResourceState(tuple(sorted(target.state.items()))))
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
        await self.out.route(Stanza.from_element(element))

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
        if not self.host.modules.sent_hooks or self._handed_off:
            return
        wanted = self.host.modules.wants_sent(self)
        for resource in self.resources.values():
            if resource.sent_wanted != wanted:
                resource.sent_wanted = wanted
                self.resources.send(resource, m.SentHooks(wanted))

    # ---- messages ----------------------------------------------------------------------------

    async def handle(self, message: m.UserMessage) -> None:
        if self._handed_off:
            # Queued before the hand-off: the account's new home handles it. Not the mesh's own
            # notices, though: they were meant for this actor (a second HandOff forwarded would
            # make the new home hand off too).
            if not isinstance(message, m.HandOff | m.WorkersLost | m.SharedRosterChanged):
                await self.services.router.to_user(self.username, message, None, wait=False)
            return
        match message:
            case m.Bind():
                await self._bind(message)
            case m.Unbind():
                await self._unbind(message)
            case m.Route():
                try:
                    key = "" if message.completion is None else message.completion.key
                    await self._inbound(message.stanza, message.origin, key)
                except StorageError as exc:
                    # Not stored (a full disk, a read-only database): the sender gets an error,
                    # never silence; the completion below then counts the stanza in the sender's
                    # XEP-0198 `h` as handled, by that error (XEP-0198 §4, RFC 6120 §8.3).
                    await self.out.refuse_unstored(message.stanza, exc)
                finally:
                    # Archived, stored offline, delivered, bounced or dropped (or failed): the
                    # sender's session may count it in its XEP-0198 `h` now.
                    if message.completion is not None:
                        message.completion.done()
            case m.FromResource(stanza, routed):
                try:
                    await self._from_resource(stanza, routed=routed)
                except StorageError as exc:  # a roster, vCard, private or PEP write: as above
                    await self.out.refuse_unstored(stanza, exc)
            case m.Undelivered():
                if self.exists:
                    await self.delivery.undelivered(message.stanzas)
            case m.AccountRemoved():
                self.exists = False
                self.roster.clear()
                self.blocked.set(())
                self.resources.send_to_all(m.Kick("not-authorized", "account removed"))
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
                self.presence.contacts_lost(message.workers, message.epoch)
            case m.SharedRosterChanged():
                if self.exists:
                    await self._refresh_shared()
            case m.HandOff():
                self._hand_off()
            case m.AccountMoved(snapshot):
                try:
                    taken = self.resources.adopt(snapshot, self._session_at)
                except ValueError as exc:
                    log.warning("%s: a hand-over that does not decode: %s", self.address, exc)
                else:
                    log.debug("%s: took over %d resources", self.address, taken)
            case _:
                assert_never(message)
        if not isinstance(message, m.Route):  # a stanza from elsewhere changes no resource
            self._tell_sent_wanted()

    # ---- resources ---------------------------------------------------------------------------

    def _hand_off(self) -> None:
        """Our home moved. The new home takes the account over from storage and its resources
        from us (`m.AccountMoved`, ahead of anything else there: the mesh's `HandOffGate`), so
        nothing is announced to contacts from here. The sessions re-register there too
        (`Rebind`): each session's worker sends it `Rehome` when it sees the new membership; we
        send one too, since a worker may see a change that the session's worker never does (a
        restarted worker catching up on announcements)."""
        log.debug("%s: handing off (%d resources)", self.address, len(self.resources))
        mesh = self.services.mesh
        if mesh is not None:
            home = mesh.home("user", self.username)
            with contextlib.suppress(ActorGone):
                mesh.send_nowait(
                    ActorAddress("user", self.username, home), m.AccountMoved(self.resources.export())
                )
        self.resources.send_to_all(m.Rehome())
        self.resources.clear()
        self._handed_off = True
        self.stop()

    def _session_at(self, key: str, worker: int) -> ActorRef[m.SessionMessage]:
        mesh = self.services.mesh
        assert mesh is not None  # a hand-over comes only through the mesh
        return mesh.session_ref(key, worker)

    async def _drop_resources(self, lost: Callable[[Resource], bool]) -> None:
        """Unbind the resources whose sessions are `lost` (gone without an `Unbind`)."""
        for name, resource in list(self.resources.items()):
            if lost(resource):
                log.debug("%s: %s lost with %s", self.address, name, resource.session.address)
                del self.resources[name]
                await self.presence.resource_gone(name, resource)

    def _rebind(self, request: m.Rebind) -> None:
        """A session bound before a membership change registers here, its new home; it keeps
        its resource (a different session holding the name now would be a conflict: it loses)."""
        existing = self.resources.get(request.resource)
        if existing is not None and existing.session != request.session:
            self.resources.send(existing, m.Kick("conflict", "replaced by a new session"))
            existing = None
        presence = request.presence
        log.debug("%s: rebound %s to %s", self.address, request.resource, request.session.address)
        self.resources[request.resource] = Resource(
            session=request.session,
            available=presence is not None,
            priority=0 if presence is None else priority(presence),
            presence=presence,
            interested=request.interested,
            # Known from the previous home's hand-over (`m.AccountMoved`), not from the session.
            directed=None if existing is None else existing.directed,
            detached=existing is not None and existing.detached,
            epoch=membership_epoch(self.services),
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
                self.resources.send(existing, m.Kick("conflict", "replaced by a new session"))
                await self.presence.resource_gone(resource, existing)
        elif len(self.resources) >= limits.max_sessions_per_user:
            request.reply.fail(StanzaError("resource-constraint", "too many sessions"))
            return
        self.resources[resource] = Resource(
            session=request.session, epoch=membership_epoch(self.services), state=dict(request.state)
        )
        log.debug("%s: bound %s to %s", self.address, resource, request.session.address)
        request.reply.send(m.Bound(self.jid.with_resource(resource), self.blocked.jids))

    async def _unbind(self, message: m.Unbind) -> None:
        resource = self.resources.get(message.resource)
        if resource is None or resource.session != message.session:
            return  # already replaced (conflict) or never bound
        log.debug("%s: unbound %s from %s", self.address, message.resource, message.session.address)
        del self.resources[message.resource]
        await self.presence.resource_gone(message.resource, resource)

    # ---- stanzas from the account's own resources ----------------------------------------

    async def _from_resource(self, stanza: Stanza, *, routed: bool = False) -> None:
        if stanza.kind == "presence":
            await self.presence.outbound(stanza, routed=routed)
        elif stanza.kind == "iq":
            if stanza.type in ("result", "error"):
                await self._iq_reply(stanza)
            else:
                await self._account_iq(stanza, own=True)
        elif stanza.kind == "message":
            await self.delivery.sent(stanza)

    # ---- stanzas addressed to the account -----------------------------------------------

    async def _inbound(self, stanza: Stanza, origin: int | None = None, key: str = "") -> None:
        if not self.exists:
            await self._no_such_account(stanza)
            return
        if stanza.from_jid.bare != self.jid and self.blocked.blocks(stanza.from_jid):
            # XEP-0191 §3.5: presence is dropped; message and IQ get service-unavailable.
            if stanza.kind != "presence":
                await self.out.bounce(stanza, StanzaError("service-unavailable"))
            return
        if stanza.kind == "message":
            await self.delivery.inbound(stanza, key)
        elif stanza.kind == "presence":
            await self.presence.inbound(stanza, origin)
        else:
            await self._inbound_iq(stanza)

    async def _no_such_account(self, stanza: Stanza) -> None:
        """RFC 6121 §8.5.1: no such user."""
        if stanza.kind == "presence":
            if stanza.type == "subscribe" or stanza.type == "probe":
                reply = st.make("presence", from_=self.jid, to=stanza.from_jid.bare, type_="unsubscribed")
                await self.out.route(Stanza.from_element(reply))
            return
        if stanza.kind == "message" and stanza.type in ("headline", "groupchat"):
            return
        await self.out.bounce(stanza, StanzaError("service-unavailable"))

    async def _inbound_iq(self, stanza: Stanza) -> None:
        resource_name = stanza.to_jid.resourcepart
        if resource_name is not None:
            resource = self.resources.get(resource_name)
            if resource is not None:
                self.resources.deliver(resource, stanza)
            elif stanza.type in ("get", "set"):
                await self.out.bounce(stanza, StanzaError("service-unavailable"))
            return
        if stanza.type in ("get", "set"):
            await self._account_iq(stanza, own=stanza.from_jid.bare == self.jid)
        else:
            await self._iq_reply(stanza)

    async def _account_iq(self, stanza: Stanza, *, own: bool) -> None:
        """IQs to the bare JID are answered by the server on the account's behalf (§8.5.2.1.3)."""
        element = stanza.element()
        if len(element) != 1:
            await self.out.reply(element, StanzaError("bad-request", "an IQ get/set has exactly one payload"))
            return
        found = self.host.modules.iq_handler(stanza.type, element[0], Scope.ACCOUNT)
        if found is None:
            await self.out.reply(element, StanzaError("service-unavailable"))
            return
        handler, options = found
        if own and etree.QName(element[0]).namespace == NS_ROSTER:
            # RFC 6121 §2.1.6: a resource that asked for the roster gets pushes from now on.
            asking = self.resources.get(stanza.from_jid.resourcepart or "")
            if asking is not None:
                asking.interested = True
        contexts = self.host.contexts
        ctx = contexts.iq(element, stanza.from_jid, stanza.to_jid, options, account=self.account)
        try:
            result = await handler(ctx)
        except StanzaError as error:
            await self.out.reply(element, error)
            return
        if result is not None:
            await self.out.send_back(result)


def _merge_groups(first: RosterItem | None, second: RosterItem) -> RosterItem:
    """One contact shared by two modules: the first one's item with the groups of both."""
    if first is None:
        return second
    return replace(first, groups=first.groups + tuple(g for g in second.groups if g not in first.groups))

