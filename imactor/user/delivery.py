"""Messages to the account (RFC 6121 §8.5): which resources get them, offline storage
(XEP-0160), and the modules' message hooks around both.

The hooks run here, in the recipient's actor: `on_message` before a message is delivered or
stored (the archive; a hook may refuse it, and the sender gets the error), `on_delivered` once it
was handed to sessions or stored offline (carbons, push), `on_sent` in the sender's actor for a
message one of its resources sent (sent carbons).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from imactor.storage.errors import StorageError
from imactor.user.outbound import Outbound
from imactor.user.resources import Resource, Resources
from imactor.xmpp import stanza as st
from imactor.xmpp.errors import StanzaError
from imactor.xmpp.jid import JID
from imactor.xmpp.namespaces import NS_DELAY
from imactor.xmpp.stanza import Stanza

if TYPE_CHECKING:
    from imactor.server.modules import AccountApi
    from imactor.server.services import Services

log = logging.getLogger("imactor.user")


class Delivery:
    __slots__ = ("_account", "_host", "_jid", "_out", "_resources", "_services", "_username")

    def __init__(self, services: Services, account: AccountApi, resources: Resources, out: Outbound) -> None:
        self._services = services
        self._account = account
        self._username = account.username
        self._jid: JID = account.jid
        self._host = services.view(account.jid.domainpart)  # the modules of the account's domain
        self._resources = resources
        self._out = out

    async def inbound(self, stanza: Stanza, key: str = "") -> None:
        """§8.5.2 (bare JID) and §8.5.3 (full JID) for a message to an existing account. `key`:
        the same for every route of one message (`Completion.key`; "" when it has none)."""
        resources = self._resources
        resource_name = stanza.to_jid.resourcepart
        if resource_name is not None:
            resource = resources.get(resource_name)
            if resource is not None:
                hooked = await self._message_hooks(stanza, key)
                if hooked is not None:
                    resources.deliver(resource, hooked)
                    await self._delivered_hooks(hooked, (resource_name,))
                return
            # §8.5.3.2.1: a full JID with no such resource. Only a chat message is handled as
            # if sent to the bare JID; normal and groupchat get an error, headline and error
            # are dropped.
            if stanza.type in ("error", "headline"):
                return
            if stanza.type != "chat":
                await self._out.bounce(stanza, StanzaError("service-unavailable"))
                return
        if stanza.type == "groupchat":
            await self._out.bounce(stanza, StanzaError("service-unavailable"))
            return
        if stanza.type == "error":
            return  # §8.5.2.1.1 / §8.5.2.2.1: an error to the bare JID is silently ignored
        candidates = [r for r in resources.values() if r.available and r.priority >= 0]
        if candidates or stanza.type == "headline":
            hooked = await self._message_hooks(stanza, key)
            if hooked is None:
                return
            stanza = hooked
        if stanza.type == "headline":
            if not candidates and str(stanza.from_jid) == self._services.domain:
                # A notice of the server itself (a reminder) waits offline for the user. RFC 6121
                # §8.5.2.2.1 drops headlines to an account with no available resource; here the
                # server is the sender and chooses to keep its own (docs/reminders.md).
                await self._store_offline(stanza)
                await self._delivered_hooks(stanza, (), offline=True)
                return
            for resource in candidates:
                resources.deliver(resource, stanza)
            await self._delivered_hooks(stanza, resources.names(candidates))
            return
        if candidates:
            # §8.5.2.1.1: the highest-priority resources get normal and chat messages.
            top = max(r.priority for r in candidates)
            chosen = [resource for resource in candidates if resource.priority == top]
            for resource in chosen:
                resources.deliver(resource, stanza)
            await self._delivered_hooks(stanza, resources.names(chosen))
            return
        await self._store_offline(stanza, run_hooks=True, key=key)

    async def undelivered(self, stanzas: Sequence[Stanza]) -> None:
        """XEP-0198 §4: unacknowledged messages of an ended session wait offline (XEP-0160 types)."""
        for stanza in stanzas:
            if stanza.kind == "message" and stanza.type in ("", "normal", "chat"):
                try:
                    await self._store_offline(stanza)
                except StorageError as exc:  # neither delivered nor kept: the sender learns it
                    await self._out.refuse_unstored(stanza, exc)

    async def flush_offline(self, resource: Resource) -> None:
        """XEP-0160: offline messages go to the first resource with non-negative priority."""
        offline = self._services.storage.offline
        stored = await offline.fetch(self._username)
        if not stored:
            return
        for _, data in stored:
            self._resources.deliver(resource, Stanza.from_element(st.parse(data)))
        with contextlib.suppress(StorageError):
            # Delivered but not deleted (a full disk; the database logs it): they come again at
            # the next login, a duplicate rather than a loss, and the login goes on.
            await offline.delete(self._username, [stored_id for stored_id, _ in stored])

    async def _store_offline(self, stanza: Stanza, *, run_hooks: bool = False, key: str = "") -> None:
        """Keep a message for later; `run_hooks` for a new one (not one handed back undelivered,
        which went through the message hooks, e.g. the archive, already)."""
        services = self._services
        offline = services.storage.offline
        if await offline.count(self._username) >= services.config.limits.max_offline_messages:
            await self._out.bounce(stanza, StanzaError("service-unavailable", "offline storage is full"))
            return
        if run_hooks:
            hooked = await self._message_hooks(stanza, key)
            if hooked is None:
                return
            stanza = hooked
        el = stanza.element()
        delay = st.child(el, NS_DELAY, "delay")
        delay.set("from", services.hosts.jid(self._username).domainpart)  # the account's host
        delay.set("stamp", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        delay.text = "Offline Storage"
        await offline.store(self._username, st.serialize(el))
        if run_hooks:
            await self._delivered_hooks(stanza, (), offline=True)

    async def _message_hooks(self, stanza: Stanza, key: str = "") -> Stanza | None:
        """Run the modules' message hooks (e.g. the archive) on a message about to be delivered
        or stored; None: a hook refused it and the sender got the error."""
        hooks = self._host.modules.message_hooks
        if not hooks:
            return stanza
        element = stanza.take_element()
        for hook, options in hooks:
            ctx = self._host.contexts.message(element, self._account, options, key)
            try:
                await hook(ctx)
            except StanzaError as error:
                await self._out.bounce(stanza, error)
                return None
        return Stanza.from_element(element)

    async def _delivered_hooks(
        self, stanza: Stanza, names: tuple[str, ...], *, offline: bool = False
    ) -> None:
        """Run the modules' after-delivery hooks (carbons, push); they refuse nothing."""
        hooks = self._host.modules.delivered_hooks
        if not hooks:
            return
        for hook, options in hooks:
            ctx = self._host.contexts.delivered(
                stanza, self._account, options, delivered_to=names, offline=offline
            )
            try:
                await hook(ctx)
            except StanzaError as error:
                log.debug("%s: after-delivery hook refused: %s", self._jid, error)

    async def sent(self, stanza: Stanza) -> None:
        """Run the modules' hooks on a message one of our resources sent (carbons)."""
        hooks = self._host.modules.sent_hooks
        if not hooks or stanza.from_jid.resourcepart not in self._resources:
            return
        element = stanza.element()
        for hook, options in hooks:
            ctx = self._host.contexts.message(element, self._account, options)
            try:
                await hook(ctx)
            except StanzaError as error:
                # Refused (e.g. by a policy): later hooks (carbons) must not act on it. The
                # recipient's actor, which runs the same checks, bounces it to the sender.
                log.debug("%s: sent-message hook refused: %s", self._jid, error)
                return
