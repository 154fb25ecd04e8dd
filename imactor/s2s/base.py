"""What the streams of the wing see of it (a protocol, so that they need not import the wing)."""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from imactor.config import S2SConfig as S2SSettings
    from imactor.server.router import Router
    from imactor.xmpp import s2s
    from imactor.xmpp.errors import StanzaError
    from imactor.xmpp.stanza import Stanza


class Wing(Protocol):
    config: S2SSettings
    protocol: s2s.S2SConfig
    router: Router
    server_context: ssl.SSLContext
    client_context: ssl.SSLContext

    def client_context_for(self, local_domain: str) -> ssl.SSLContext: ...

    async def inbound(self, stanza: Stanza) -> None: ...

    async def verify(self, originating: str, receiving: str, stream_id: str, key: str) -> bool: ...

    def bounce(self, stanza: Stanza, error: StanzaError) -> None: ...

    def forget(self, outgoing: object, failure: tuple[str, str] | None) -> None: ...
