"""What a component connection sees of its wing (a protocol, so that it need not import it)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from imactor.config import ComponentListenerConfig
    from imactor.server.router import Router
    from imactor.xmpp.component import ComponentConfig
    from imactor.xmpp.stanza import Stanza


class Wing(Protocol):
    config: ComponentListenerConfig
    protocol: ComponentConfig
    router: Router
    stanzas_in: int

    def claim(self, domain: str, connection: object) -> bool:
        """May `connection`, which proved the secret of `domain`, carry its stanzas now?"""
        ...

    def release(self, connection: object) -> None: ...

    async def bounce_unavailable(self, stanza: Stanza) -> None: ...
