"""The server as the module API sees it (`imactor.server.modules.ServerApi`): routing, the
server's identity and features, registration throttling, account removal.

A capability built by the worker's root from the router, the module host and the registration
throttle; it does not know the actors that use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from imactor import messages as m
from imactor.server.module_host import ModuleHost
from imactor.server.modules import Module
from imactor.server.router import Router
from imactor.server.throttles import FailureThrottle
from imactor.xmpp import caps
from imactor.xmpp.jid import JID
from imactor.xmpp.stanza import Element, Stanza, serialize

__all__ = ["CAPS_NODE", "ServerFacade", "SessionsAdmin"]

#: The `node` of the server's XEP-0115 caps (§4: a URI that names the software).
CAPS_NODE = "https://imactor.example/caps"


class SessionsAdmin(Protocol):
    """The client sessions of every worker, as an administrator sees them: what the worker's
    root provides (`imactor.worker.admin_wing`), across the mesh when there are peers."""

    async def online(self) -> list[JID]: ...

    async def announce(self, template: Stanza) -> None: ...

    async def end_sessions(self, username: str, resource: str, condition: str, text: str) -> None: ...


class ServerFacade:
    """The `ServerApi` handed to module handlers."""

    def __init__(
        self, *, domain: str, router: Router, modules: ModuleHost, registrations: FailureThrottle,
        room_domain: str | None, started_at: float, proxy_domain: str | None = None,
    ) -> None:  # fmt: skip
        self.domain = domain
        self.started_at = started_at
        self._router, self._modules, self._registrations = router, modules, registrations
        self._room_domain = room_domain
        self._proxy_domain = proxy_domain  #: the XEP-0065 proxy's JID ([proxy65] enabled)
        #: The modules' service JIDs (`Module.service`), listed in disco#items after the MUC's.
        self.module_service_domains = tuple(service.domain for service in modules.services(domain))
        #: The node's HTTPS listener as the worker bound it (`https_url`); set by the worker.
        self.https_port: int | None = None
        #: Every worker's sessions (`online_sessions`, `announce`, `end_sessions`); set by the worker.
        self.sessions_admin: SessionsAdmin | None = None

    async def route(self, element: Element) -> None:
        await self._router.route(Stanza.from_element(element), wait=False)

    def account_of(self, jid: JID) -> str | None:
        return self._router.hosts.key(jid)

    def account_jid(self, username: str) -> JID:
        return self._router.hosts.jid(username)

    async def deliver(self, element: Element, *, key: str = "") -> bool:
        stanza = Stanza.from_element(element)
        completion = m.Completion(stanza, key=key)
        # A background task, not an actor: it may wait for room in a mailbox (back-pressure).
        await self._router.route(stanza, wait=True, completion=completion)
        await completion.wait()
        return not completion.failed

    def features(self) -> Sequence[str]:
        return self._modules.features()

    def identities(self) -> Sequence[tuple[str, str, str]]:
        return [("server", "im", "imactor")]

    def modules(self) -> Sequence[Module]:
        return [loaded.module for loaded in self._modules.loaded.values()]

    def service_items(self) -> Sequence[str]:
        rooms = [] if self._room_domain is None else [self._room_domain]
        proxy = [] if self._proxy_domain is None else [self._proxy_domain]
        return [*rooms, *proxy, *self.module_service_domains, *self._router.connected_components()]

    def https_url(self) -> str | None:
        return None if self.https_port is None else f"https://{self.domain}:{self.https_port}"

    def caps_nodes(self) -> Sequence[str]:
        """`node#ver` of the server's XEP-0115 caps, if the caps module is enabled."""
        if "caps" not in self._modules.loaded:
            return []
        return [f"{CAPS_NODE}#{caps.ver(self.identities(), self.features())}"]

    def stream_features(self) -> tuple[bytes, ...]:
        """Extra stream features offered to clients (XEP-0115 §6.3)."""
        if "caps" not in self._modules.loaded:
            return ()
        return (caps.caps_element(CAPS_NODE, self.identities(), self.features()),)

    def registration_allowed(self, address: str) -> bool:
        """Counts this attempt; False once the address used up its registrations in the window."""
        throttle = self._registrations
        if throttle.is_blocked(address):
            return False
        throttle.record(address)
        return True

    def _sessions(self) -> SessionsAdmin:
        if self.sessions_admin is None:
            raise RuntimeError("the worker has not wired its sessions to the server API")
        return self.sessions_admin

    async def online_sessions(self) -> Sequence[JID]:
        return await self._sessions().online()

    async def announce(self, element: Element) -> None:
        # Serialized once, without `to`: every worker splices each recipient's JID into the
        # bytes (`imactor.rooms.fanout.addressed`); `to_jid` names the server meanwhile.
        if "to" in element.attrib:
            del element.attrib["to"]
        domain = JID.parse(self.domain)
        sender = JID.parse(element.get("from") or self.domain)
        template = Stanza("message", element.get("type", ""), sender, domain, element.get("id"),
                          serialize(element))  # fmt: skip
        await self._sessions().announce(template)

    async def end_sessions(self, username: str, resource: str | None = None, *, condition: str,
                           text: str = "") -> None:  # fmt: skip
        await self._sessions().end_sessions(username, resource or "", condition, text)

    async def account_removed(self, username: str) -> None:
        """XEP-0077 §3.2: the account's sessions end once the reply has been sent.

        `send_nowait` has no checkpoint, so the session that asked queues its IQ result before
        its user actor can run and kick it. No user actor means no bound session.
        """
        await self._router.to_user(username, m.AccountRemoved(), None, wait=False)
