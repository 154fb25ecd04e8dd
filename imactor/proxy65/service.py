"""The proxy's JID (``proxy.<domain>``, XEP-0065 §4 and §5.3.5): discovery, its address, activation.

The router hands every stanza to the proxy's JID to `ProxyService.handle`, in the task that
routes it (the sender's session), on whichever worker that session lives:

- disco#info: identity proxy/bytestreams and the bytestreams feature; disco#items: none;
- a bytestreams query (get): one <streamhost jid host port/>, the announced address;
- an activation (set, <query sid><activate>target full JID</activate></query>): the stream's
  hash is SHA-1(sid + the sender's full JID + the target JID), so only the requester can name
  it. The SOCKS5 side runs in one worker of the node (the owner: its first); an activation that
  arrives elsewhere is sent there over the mesh as it is (a `Deliver` frame of kind
  ``proxy65``), and the owner answers the requester through its own router.

Only the server's own users may use the proxy (a remote JID gets forbidden, §5.3.1's "unwilling
to act as a StreamHost"); other stanzas are dropped, as any service may (RFC 6120 §8.2.3).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from imactor import messages as m
from imactor.actors.ref import ActorAddress
from imactor.mesh.codec import BodyError
from imactor.xmpp import stanza as st
from imactor.xmpp.errors import StanzaError
from imactor.xmpp.jid import JID, InvalidJID
from imactor.xmpp.namespaces import NS_DISCO_INFO, NS_DISCO_ITEMS
from imactor.xmpp.socks5 import stream_hash
from imactor.xmpp.stanza import Element, Stanza

if TYPE_CHECKING:
    from imactor.proxy65.relay import Proxy
    from imactor.server.services import Services

__all__ = ["MESH_KIND", "NS_BYTESTREAMS", "ProxyService"]

log = logging.getLogger("imactor.proxy65")

NS_BYTESTREAMS = "http://jabber.org/protocol/bytestreams"
#: The mesh target kind of activations forwarded to the owner worker.
MESH_KIND = "proxy65"


class ProxyService:
    """Answers the stanzas to the proxy's JID on one worker; `proxy` is set on the owner only."""

    def __init__(self, services: Services, owner: int, proxy: Proxy | None) -> None:
        config = services.config.proxy65
        self.domain = f"{config.subdomain}.{services.domain}"
        self._services = services
        self._owner = owner  #: the worker that runs the SOCKS5 side
        self._proxy = proxy
        #: The announced address; the port is set once the listener is known (`announce`).
        self.host = config.announce_host or services.config.listen.proxy65.host[0]
        self.port = config.announce_port
        if self.host in ("0.0.0.0", "::") and proxy is not None:
            log.warning("[proxy65] announces %s, which no client can reach: set announce_host", self.host)

    def announce(self, bound_port: int) -> None:
        """The listener's port, for a configured ``announce_port`` of 0."""
        if not self.port:
            self.port = bound_port

    def install(self) -> None:
        """Take the proxy's JID in the router and, with peers, the forwarded activations."""
        self._services.router.serve(self.domain, self.handle)
        mesh = self._services.mesh
        if mesh is not None and self._proxy is not None:
            mesh.handle(MESH_KIND, self._on_forwarded)

    async def handle(self, stanza: Stanza) -> None:
        if stanza.kind != "iq" or stanza.type not in ("get", "set"):
            return
        router = self._services.router
        try:
            request = stanza.element()
            reply = self._answer_get(stanza, request) if stanza.type == "get" else None
            if reply is None:
                await self._activate(stanza, request)
                return
        except StanzaError as error:
            await router.bounce(stanza, error)
            return
        await router.route(Stanza.from_element(reply), wait=False)

    def _check(self, stanza: Stanza, request: Element) -> Element:
        to = stanza.to_jid
        if to.localpart is not None or to.resourcepart is not None or len(request) != 1:
            raise StanzaError("service-unavailable")
        if stanza.from_jid.domainpart != self._services.domain:
            raise StanzaError("forbidden", "this proxy serves its server's own users")
        return request[0]

    def _answer_get(self, stanza: Stanza, request: Element) -> Element | None:
        """The answer to an IQ get, or None for a set (an activation)."""
        if stanza.type != "get":
            return None
        payload = self._check(stanza, request)
        reply = st.iq_result(request)
        reply.set("from", self.domain)
        if payload.tag == f"{{{NS_DISCO_INFO}}}query" and not payload.get("node"):
            query = st.child(reply, NS_DISCO_INFO, "query")
            st.disco_identity(query, "proxy", "bytestreams", self._services.config.proxy65.name)
            for feature in (NS_DISCO_INFO, NS_DISCO_ITEMS, NS_BYTESTREAMS):
                st.child(query, NS_DISCO_INFO, "feature").set("var", feature)
        elif payload.tag == f"{{{NS_DISCO_ITEMS}}}query" and not payload.get("node"):
            st.child(reply, NS_DISCO_ITEMS, "query")
        elif payload.tag == f"{{{NS_BYTESTREAMS}}}query":
            query = st.child(reply, NS_BYTESTREAMS, "query")
            host = st.child(query, NS_BYTESTREAMS, "streamhost")
            host.set("jid", self.domain)
            host.set("host", self.host)
            host.set("port", str(self.port))
        else:
            raise StanzaError("service-unavailable")
        return reply

    async def _activate(self, stanza: Stanza, request: Element) -> None:
        """An IQ set: checked here, activated by the owner (here or over the mesh)."""
        payload = self._check(stanza, request)
        if payload.tag != f"{{{NS_BYTESTREAMS}}}query":
            raise StanzaError("service-unavailable")
        activate = payload.find(f"{{{NS_BYTESTREAMS}}}activate")
        sid = payload.get("sid", "")
        if activate is None or not sid or not (activate.text or "").strip():
            raise StanzaError("bad-request", "an activation names the sid and the target's JID")
        try:
            JID.parse(activate.text.strip())  # type: ignore[union-attr]
        except InvalidJID:
            raise StanzaError("jid-malformed", "the target's JID is not valid") from None
        if self._proxy is not None:
            await self.activate_here(stanza)
            return
        mesh = self._services.mesh
        if mesh is None or self._owner not in mesh.membership.live:
            raise StanzaError("internal-server-error", "the proxy is restarting; try again")
        mesh.count("proxy65_forwarded")
        mesh.send_nowait(ActorAddress(MESH_KIND, "", self._owner), m.Deliver(stanza))

    async def activate_here(self, stanza: Stanza) -> None:
        """Activate on this worker, the owner, and answer the requester."""
        assert self._proxy is not None
        request = stanza.element()
        payload = request[0]
        activate = payload.find(f"{{{NS_BYTESTREAMS}}}activate")
        assert activate is not None
        assert activate.text
        target = JID.parse(activate.text.strip())
        key = stream_hash(payload.get("sid", ""), str(stanza.from_jid), str(target))
        condition = self._proxy.activate(key)
        router = self._services.router
        if condition is not None:
            await router.bounce(stanza, StanzaError(condition))
            return
        reply = st.iq_result(request)
        reply.set("from", self.domain)
        await router.route(Stanza.from_element(reply), wait=False)

    def _on_forwarded(self, _key: str, message: object) -> None:
        """A frame of kind ``proxy65``: an activation another worker received (checked there)."""
        if not isinstance(message, m.Deliver):
            raise BodyError(f"a {type(message).__name__} for the bytestreams proxy")
        mesh = self._services.mesh
        assert mesh is not None
        mesh.spawn(self._serve_forwarded, message.stanza)

    async def _serve_forwarded(self, stanza: Stanza) -> None:
        try:
            await self.activate_here(stanza)
        except Exception:  # a mesh task must not fail: the requester's IQ times out instead
            log.exception("a forwarded activation failed")
