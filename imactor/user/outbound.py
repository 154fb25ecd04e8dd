"""What an account sends out of its actor: routed stanzas, presence on a resource's behalf,
and errors back to the senders of what it could not take.

Everything goes through the router without waiting (actor to actor: a full mailbox elsewhere must
not stall this account).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from imactor.server.modules import storage_failure
from imactor.storage.errors import StorageError
from imactor.user.resources import Resource
from imactor.xmpp import stanza as st
from imactor.xmpp.errors import StanzaError
from imactor.xmpp.jid import JID
from imactor.xmpp.stanza import Element, Stanza

if TYPE_CHECKING:
    from imactor.server.router import Router


class Outbound:
    __slots__ = ("_jid", "_router")

    def __init__(self, router: Router, jid: JID) -> None:
        self._router = router
        self._jid = jid

    async def route(self, stanza: Stanza) -> None:
        await self._router.route(stanza, wait=False)

    async def route_presence(self, stanza: Stanza, resource: Resource) -> None:
        """Presence on behalf of one of our resources: says where its session lives (`m.Route`)."""
        await self._router.route(stanza, wait=False, origin=resource.session.address.worker)

    async def bounce(self, stanza: Stanza, error: StanzaError) -> None:
        if stanza.type in ("error", "result"):
            return
        await self.send_back(st.error_reply(stanza.element(), error))

    async def refuse_unstored(self, stanza: Stanza, exc: StorageError) -> None:
        """Answer a stanza whose write failed with the error `storage_failure` chooses."""
        what = {"message": "the message", "iq": "the request"}.get(stanza.kind, "the change")
        await self.bounce(stanza, storage_failure(exc, what))

    async def reply(self, request: Element, error: StanzaError) -> None:
        if request.get("type") in ("error", "result"):
            return
        await self.send_back(st.error_reply(request, error))

    async def send_back(self, element: Element) -> None:
        if element.get("from") is None:
            element.set("from", str(self._jid))
        await self._router.route(Stanza.from_element(element), wait=False)
