"""IQs addressed to the server's own domain (`Scope.HOST`): one dispatch for every path in.

A client's IQs to the server are answered in its session (`imactor.c2s.session`, with
`answer_host_iq`); the IQs that reach the router instead (from other servers' users and servers
over s2s, from external components, or from a local account's actor) go to `HostIqHandler`,
which answers them in the routing task with the same handlers and routes the reply back like
any stanza. A sender of another domain reaches only the handlers their module opened to it
(`Module.iq(..., remote=True)`: ping, disco, version, time, uptime, the server's vCard); the rest
answers service-unavailable (RFC 6120 §8.4), as a handler that does not exist would.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from imactor.server.modules import Scope
from imactor.storage.errors import StorageError
from imactor.xmpp.errors import StanzaError
from imactor.xmpp.stanza import Element, Stanza

if TYPE_CHECKING:
    from imactor.server.contexts import Contexts
    from imactor.server.module_host import ModuleHost
    from imactor.server.router import Router
    from imactor.xmpp.jid import JID

__all__ = ["HostIqHandler", "answer_host_iq"]

log = logging.getLogger("imactor.router")


async def answer_host_iq(
    modules: ModuleHost, contexts: Contexts, element: Element, from_jid: JID, to: JID, *,
    remote: bool, remote_address: str | None = None,
) -> Element | None:  # fmt: skip
    """The answer of the HOST handler to the IQ get/set `element` (one payload) from `from_jid`.

    Raises `StanzaError` (service-unavailable without a handler `from_jid` may reach) and, from
    the handler, `StorageError`. None: the handler sent its answer itself.
    """
    found = modules.iq_handler(element.get("type", ""), element[0], Scope.HOST, remote=remote)
    if found is None:
        raise StanzaError("service-unavailable")
    handler, options = found
    ctx = contexts.iq(element, from_jid, to, options, remote_address=remote_address)
    return await handler(ctx)


class HostIqHandler:
    """Answers the IQs to the server's domain that the router gets (module docstring)."""

    def __init__(
        self, domain: str, modules: Callable[[], ModuleHost], contexts: Contexts, router: Router
    ) -> None:
        self._domain = domain
        self._modules, self._contexts, self._router = modules, contexts, router

    async def handle(self, stanza: Stanza) -> None:
        """An IQ get/set to the server's bare domain (the router's to check)."""
        request = stanza.element()
        if not request.get("id") or len(request) != 1:
            error = StanzaError("bad-request", "an IQ get/set has an id and exactly one payload")
            await self._router.bounce(stanza, error)
            return
        # A sender of our own domain is one of our accounts (no s2s peer or component may speak
        # for it: both check `from` against what they authenticated).
        remote = stanza.from_jid.domainpart != self._domain
        try:
            reply = await answer_host_iq(self._modules(), self._contexts, request, stanza.from_jid,
                                         stanza.to_jid, remote=remote)  # fmt: skip
        except StanzaError as error:
            await self._router.bounce(stanza, error)
            return
        except StorageError as exc:
            log.warning("host IQ from %s: storage failed: %s", stanza.from_jid, exc)
            await self._router.bounce(stanza, StanzaError("internal-server-error"))
            return
        if reply is None:
            return
        if reply.get("from") is None:
            reply.set("from", self._domain)
        if reply.get("to") is None:
            reply.set("to", str(stanza.from_jid))
        await self._router.route(Stanza.from_element(reply), wait=False)
