"""The service JIDs of modules (`Module.service`, e.g. XEP-0363's ``upload.<domain>``).

The router hands every stanza to such a JID to its `ModuleServiceHandler`, in the task that routes
it (the sender's session): IQ get/set are answered, statelessly, as the MUC service answers its
own JID; other stanzas are dropped (RFC 6120 §8.2.3: a service need not answer messages and
presence). disco#info (XEP-0030 §3.1) gives the service's identities, features and its XEP-0128
forms; disco#items and the disco#info of a node are the module's (`ServiceSpec.items` and
`node_info`: a pubsub service's nodes), or empty and item-not-found; any other IQ goes to the
module's `Scope.SERVICE` handler, or gets service-unavailable (RFC 6120 §8.4). The reply is
routed back like any stanza.

The module host is read per stanza (`modules`), so a SIGHUP reload's new options apply at once;
a service whose JID the reload changed stops answering (the router keeps the JIDs it was given
at start: a new subdomain needs a restart).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from imactor.server.modules import Scope
from imactor.storage.errors import StorageError
from imactor.xmpp import stanza as st
from imactor.xmpp.errors import StanzaError
from imactor.xmpp.namespaces import NS_DISCO_INFO, NS_DISCO_ITEMS
from imactor.xmpp.stanza import Element, Stanza

if TYPE_CHECKING:
    from imactor.server.contexts import Contexts
    from imactor.server.module_host import ModuleHost, ModuleService
    from imactor.server.router import Router

__all__ = ["ModuleServiceHandler"]

_ITEMS, _INFO = f"{{{NS_DISCO_ITEMS}}}query", f"{{{NS_DISCO_INFO}}}query"


class ModuleServiceHandler:
    """Answers the stanzas to one module's service JID."""

    def __init__(
        self, domain: str, server_domain: str, modules: Callable[[], ModuleHost], contexts: Contexts,
        router: Router,
    ) -> None:  # fmt: skip
        self.domain = domain  #: the service's JID: upload.<server_domain>
        self._server_domain = server_domain
        self._modules, self._contexts, self._router = modules, contexts, router

    async def handle(self, stanza: Stanza) -> None:
        if stanza.kind != "iq" or stanza.type not in ("get", "set"):
            return
        request = stanza.element()
        try:
            reply = await self._answer(stanza, request)
        except StanzaError as error:
            await self._router.bounce(stanza, error)
            return
        except StorageError:
            await self._router.bounce(stanza, StanzaError("internal-server-error"))
            return
        reply.set("from", self.domain)
        await self._router.route(Stanza.from_element(reply), wait=False)

    async def _answer(self, stanza: Stanza, request: Element) -> Element:
        to = stanza.to_jid
        modules = self._modules()
        service = next((s for s in modules.services(self._server_domain) if s.domain == self.domain), None)
        if service is None or to.localpart is not None or to.resourcepart is not None or len(request) != 1:
            raise StanzaError("service-unavailable")
        payload = request[0]
        if stanza.type == "get" and payload.tag == f"{{{NS_DISCO_INFO}}}query" and not payload.get("node"):
            return self._info(request, service)
        if stanza.type == "get" and payload.tag in (_ITEMS, _INFO):
            return await self._node(stanza, request, service)
        found = modules.iq_handler(stanza.type, payload, Scope.SERVICE)
        if found is None:
            raise StanzaError("service-unavailable")
        handler, options = found
        ctx = self._contexts.iq(request, stanza.from_jid, to, options)
        answer = await handler(ctx)
        return answer if answer is not None else st.iq_result(request)

    async def _node(self, stanza: Stanza, request: Element, service: ModuleService) -> Element:
        """disco#items of the service or a node, disco#info of a node (module docstring)."""
        payload, spec = request[0], service.spec
        node = payload.get("node")
        ctx = self._contexts.iq(request, stanza.from_jid, stanza.to_jid, service.options)
        reply = st.iq_result(request)
        if payload.tag == _INFO:
            assert node is not None
            info = None if spec.node_info is None else await spec.node_info(ctx, node)
            if info is None:
                raise StanzaError("item-not-found")
            reply.append(info)
            return reply
        query = st.child(reply, NS_DISCO_ITEMS, "query")
        if node is not None:
            query.set("node", node)
        found: list[tuple[str, str | None, str | None]] | None = [] if node is None else None
        if spec.items is not None:
            found = await spec.items(ctx, node)
        if found is None:
            raise StanzaError("item-not-found")
        st.disco_items(query, found)
        return reply

    def _info(self, request: Element, service: ModuleService) -> Element:
        spec, options = service.spec, service.options
        reply = st.iq_result(request)
        query = st.child(reply, NS_DISCO_INFO, "query")
        for category, kind, name in spec.identities:
            identity = st.child(query, NS_DISCO_INFO, "identity")
            identity.set("category", category)
            identity.set("type", kind)
            identity.set("name", name)
        for feature in (NS_DISCO_INFO, NS_DISCO_ITEMS, *spec.features):
            st.child(query, NS_DISCO_INFO, "feature").set("var", feature)
        for form in spec.forms(options):
            query.append(form)
        return reply
