"""The account's presence (RFC 6121 §4) and subscriptions (§3), both ways.

Outbound: a resource's available and unavailable presence goes to the contacts subscribed to it
and to the account's other resources (§4.2.2, §4.4.2), directed presence is remembered so that
unavailable follows it (§4.6.3), and subscription requests and answers change the roster by the
§3 tables (`imactor.xmpp.subscription`). Inbound: probes are answered for subscribed contacts,
presence is passed to the available resources, subscription stanzas change the roster.

Contacts on other workers: their available presence says which worker their session lives on
(`m.Route.origin`); if that worker dies, nobody else is left to say they went away, so this
object says it for them (`contacts_lost`).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from imactor.user.blocklist import Blocklist
from imactor.user.delivery import Delivery
from imactor.user.outbound import Outbound
from imactor.user.resources import Resource, Resources
from imactor.user.roster import Roster
from imactor.xmpp import stanza as st
from imactor.xmpp import subscription as subs
from imactor.xmpp.jid import JID
from imactor.xmpp.namespaces import qname
from imactor.xmpp.stanza import Stanza

if TYPE_CHECKING:
    from imactor.server.modules import AccountApi
    from imactor.server.services import Services

SUBSCRIPTION_TYPES = frozenset({"subscribe", "subscribed", "unsubscribe", "unsubscribed"})


def membership_epoch(services: Services) -> int:
    """The worker membership's epoch now (0 without a mesh): what a resource or contact was
    seen under, so that a later `m.WorkersLost` drops only what it really lost."""
    mesh = services.mesh
    return 0 if mesh is None else mesh.membership.epoch


def priority(stanza: Stanza) -> int:
    """RFC 6121 §4.7.2.3: -128..127, 0 when absent or not a number."""
    text = stanza.element().findtext(qname("jabber:client", "priority"))
    try:
        return max(-128, min(127, int(text))) if text else 0
    except ValueError:
        return 0


class AccountPresence:
    __slots__ = (
        "_account", "_blocklist", "_contact_workers", "_delivery", "_host", "_jid", "_out", "_resources",
        "_roster", "_services", "_username",
    )  # fmt: skip

    def __init__(
        self,
        services: Services,
        account: AccountApi,
        *,
        resources: Resources,
        roster: Roster,
        blocklist: Blocklist,
        delivery: Delivery,
        out: Outbound,
    ) -> None:
        self._services = services
        self._account = account
        self._username = account.username
        self._jid: JID = account.jid
        self._host = services.view(account.jid.domainpart)  # the modules of the account's domain
        self._resources = resources
        self._roster = roster
        self._blocklist = blocklist
        self._delivery = delivery
        self._out = out
        #: Contacts' resources that told us they are available → (their session's worker, the
        #: epoch when seen): see `contacts_lost`.
        self._contact_workers: dict[JID, tuple[int, int]] = {}

    # ---- from the account's own resources ------------------------------------------------------

    async def outbound(self, stanza: Stanza, *, routed: bool = False) -> None:
        """`routed`: a directed presence the router delivered already (to a chat room): recorded
        here, not sent again (see `Router.to_user`)."""
        resource_name = stanza.from_jid.resourcepart or ""
        resource = self._resources.get(resource_name)
        if resource is None:
            return
        if stanza.type in SUBSCRIPTION_TYPES:
            await self._outbound_subscription(stanza)
            return
        if stanza.type not in ("", "unavailable"):
            return  # probes and errors from clients are not ours to send (RFC 6121 §4.3)
        if stanza.to_jid != self._jid:
            # Directed presence (§4.6): recorded so that unavailable follows at logout.
            if stanza.type == "" and not self._roster.subscribed_from(stanza.to_jid):
                if resource.directed is None:
                    resource.directed = set()
                resource.directed.add(stanza.to_jid)
            elif stanza.type == "unavailable" and resource.directed is not None:
                resource.directed.discard(stanza.to_jid)
            if not routed:
                await self._out.route_presence(stanza, resource)
            return
        if stanza.type == "unavailable":
            if resource.available:
                resource.available = False
                stanza = await self.hooks(stanza, own=True)
                await self._broadcast(resource_name, resource, stanza)
                if not self._resources.any_available():  # XEP-0012 §4: when and why it went away
                    status = stanza.element().findtext(qname("jabber:client", "status")) or ""
                    await self._services.storage.last_activity.set(self._username, time.time(), status)
            return
        initial = not resource.available
        was_negative = resource.priority < 0
        stanza = await self.hooks(stanza, own=True)
        resource.available = True
        resource.priority = priority(stanza)
        resource.presence = stanza
        await self._broadcast(resource_name, resource, stanza)
        if initial:
            await self._on_initial_presence(resource_name, resource)
        elif was_negative and resource.priority >= 0:
            await self._delivery.flush_offline(resource)  # XEP-0160 §2: now it may receive them

    async def resource_gone(self, name: str, resource: Resource) -> None:
        """RFC 6121 §4.5.2 / §4.6.3: an available resource that vanishes goes unavailable. One
        that never sent initial presence goes unavailable only where it sent directed presence:
        a client that joined chat rooms without it (aioxmpp's default) leaves them (XEP-0045
        §7.14), or a temporary room would stay, with a ghost occupant, after its last one left."""
        full = self._jid.with_resource(name)
        gone = Stanza.from_element(st.make("presence", from_=full, to=self._jid, type_="unavailable"))
        if not resource.available:
            await self._unavailable_to_directed(resource, gone)
            return
        if self._resources.get(name) is resource:
            del self._resources[name]
        resource.available = False
        gone = await self.hooks(gone, own=True)
        await self._broadcast(name, resource, gone)
        if not self._resources.any_available():
            await self._services.storage.last_activity.set(self._username, time.time(), "")

    async def _broadcast(self, name: str, resource: Resource, stanza: Stanza) -> None:
        """§4.2.2 / §4.4.2: to contacts with a from/both subscription, and to own resources."""
        for contact in self._roster.contacts("from", "both"):
            target = JID.parse(contact)
            if not self._blocklist.blocks(target):  # XEP-0191 §3.3: blocked contacts see nothing
                await self._out.route_presence(stanza.readdressed(target), resource)
        for other in self._resources.values():
            if other.available or other is resource:
                self._resources.deliver(other, stanza.readdressed(self._jid))
        if stanza.type == "unavailable":
            await self._unavailable_to_directed(resource, stanza)
        self._services.presence_changed(self._jid, name, stanza.type != "unavailable")

    async def _unavailable_to_directed(self, resource: Resource, unavailable: Stanza) -> None:
        """§4.6.3: the entities that got directed presence from `resource` learn it went away."""
        directed, resource.directed = resource.directed, None
        for target in directed or ():
            await self._out.route_presence(unavailable.readdressed(target), resource)

    async def _on_initial_presence(self, name: str, resource: Resource) -> None:
        full = self._jid.with_resource(name)
        for contact in self._roster.contacts("to", "both"):
            probe = st.make("presence", from_=self._jid, to=contact, type_="probe")
            await self._out.route(Stanza.from_element(probe))
        for other in self._resources.values():
            if other is not resource and other.available and other.presence is not None:
                self._resources.deliver(resource, other.presence.readdressed(full))
        for contact in self._roster.pending_in():  # §3.1.3: delivered again at each login
            request = st.make("presence", from_=contact, to=self._jid, type_="subscribe")
            self._resources.deliver(resource, Stanza.from_element(request))
        if resource.priority >= 0:
            await self._delivery.flush_offline(resource)

    async def subscriptions_changed(self, *, gained_from: set[str], lost_from: set[str]) -> None:
        """Shared contacts changed (`Roster.set_shared`): as if subscriptions had been approved
        or cancelled. Contacts who may now see our presence get it (§3.1.5), those who may no
        longer get unavailable (§3.2.2). No probes: the contact's own actor does the same for
        its side (every actor of every worker is told), so presence flows at once both ways
        without a new login, and a probe would only make each side's presence arrive twice."""
        for contact in sorted(gained_from):
            target = JID.parse(contact)
            if not self._blocklist.blocks(target):
                await self._current_presence_to(target)
        for contact in sorted(lost_from):
            await self._unavailable_to(JID.parse(contact))

    async def _outbound_subscription(self, stanza: Stanza) -> None:
        contact = stanza.to_jid.bare
        key = str(contact)
        if self._roster.is_shared(key) and stanza.type in ("unsubscribe", "unsubscribed"):
            # A shared contact (the company directory) stays subscribed both ways: cancelling is
            # not the account's to do, and the other side would lose our presence while its
            # roster still says 'both'. Dropped, as the server may (RFC 6121 §3.2.2, §3.3.2).
            return
        outcome = subs.outbound(self._roster.state(key), stanza.type)
        if outcome.changed:
            await self._roster.save_state(key, outcome.state)
        if outcome.route:
            # §3.1.2: the server stamps the bare JID as the sender of subscription stanzas.
            el = stanza.element()
            el.set("from", str(self._jid))
            el.set("to", key)
            await self._out.route(Stanza.from_element(el))
            if stanza.type == "subscribed":
                await self._current_presence_to(contact)
            elif stanza.type == "unsubscribed":
                await self._unavailable_to(contact)  # §3.2.2

    async def _current_presence_to(self, contact: JID) -> None:
        """Each available resource's last presence, to a contact who may now see it."""
        for resource in self._resources.values():
            if resource.available and resource.presence is not None:
                await self._out.route_presence(resource.presence.readdressed(contact), resource)

    async def _unavailable_to(self, contact: JID) -> None:
        """Unavailable presence from every available resource to a contact who lost our presence."""
        for name, resource in self._resources.items():
            if resource.available:
                full = self._jid.with_resource(name)
                gone = st.make("presence", from_=full, to=contact, type_="unavailable")
                await self._out.route(Stanza.from_element(gone))

    # ---- addressed to the account --------------------------------------------------------------

    async def inbound(self, stanza: Stanza, origin: int | None = None) -> None:
        if stanza.type in SUBSCRIPTION_TYPES:
            await self._inbound_subscription(stanza)
            return
        if stanza.from_jid.resourcepart is not None and stanza.type in ("", "unavailable"):
            if stanza.type == "" and origin is not None:
                self._contact_workers[stanza.from_jid] = (origin, membership_epoch(self._services))
            else:
                self._contact_workers.pop(stanza.from_jid, None)
            if stanza.from_jid.bare != self._jid:
                await self.hooks(stanza, own=False)
        if stanza.type == "probe":
            # §4.3.2: only a contact with a from/both subscription learns our presence.
            if self._roster.subscribed_from(stanza.from_jid) or stanza.from_jid.bare == self._jid:
                for online in self._resources.values():
                    if online.available and online.presence is not None:
                        await self._out.route_presence(online.presence.readdressed(stanza.from_jid), online)
            return
        resource_name = stanza.to_jid.resourcepart
        if resource_name is not None:
            resource = self._resources.get(resource_name)
            if resource is not None:
                self._resources.deliver(resource, stanza)
            return
        self._resources.deliver_to_available(stanza)

    async def _inbound_subscription(self, stanza: Stanza) -> None:
        contact = stanza.from_jid.bare
        key = str(contact)
        if self._roster.is_shared(key) and stanza.type in ("unsubscribe", "unsubscribed"):
            return  # as in `_outbound_subscription`: a shared contact's subscription stays
        before = self._roster.state(key)
        outcome = subs.inbound(before, stanza.type)
        if outcome.changed:
            await self._roster.save_state(key, outcome.state, hidden_ok=True)
        if outcome.deliver:
            el = stanza.element()
            el.set("from", key)
            el.set("to", str(self._jid))
            self._resources.deliver_to_available(Stanza.from_element(el))
        if stanza.type == "unsubscribe" and before.subscription in ("from", "both"):
            # §3.3.3: the contact no longer receives our presence: tell it we are gone.
            await self._unavailable_to(contact)
        if outcome.auto_reply is not None:
            reply = st.make("presence", from_=self._jid, to=contact, type_=outcome.auto_reply)
            await self._out.route(Stanza.from_element(reply))
            if outcome.auto_reply == "subscribed":
                await self._current_presence_to(contact)

    def contacts_lost(self, workers: frozenset[int], epoch: int) -> None:
        """RFC 6121 §4.5.2 on a contact's behalf: its sessions died with their worker, so the
        server announces them unavailable to our resources (nobody else still knows of them)."""
        for full, (worker, seen_at) in list(self._contact_workers.items()):
            if worker in workers and seen_at < epoch:
                del self._contact_workers[full]
                gone = st.make("presence", from_=full, to=self._jid, type_="unavailable")
                self._resources.deliver_to_available(Stanza.from_element(gone))

    async def hooks(self, stanza: Stanza, *, own: bool) -> Stanza:
        """Run the modules' presence hooks; for `own` presence, return what they leave in it."""
        hooks = self._host.modules.presence_hooks
        if not hooks:
            return stanza
        element = stanza.element()
        for hook, options in hooks:
            ctx = self._host.contexts.presence(element, self._account, options, own=own)
            await hook(ctx)
        return Stanza.from_element(element) if own else stanza
