"""What the web listeners of one worker share (`WebEndpoints`): the services, the BOSH sessions,
the origin checks and the count of open connections."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from imactor.web import cors

if TYPE_CHECKING:
    from imactor.config import HTTPConfig
    from imactor.server.services import Services
    from imactor.web.bosh import BoshSessions

__all__ = ["WebEndpoints"]


@dataclass
class WebEndpoints:
    """What the web listeners of one worker share: the services and the BOSH sessions."""

    services: Services
    bosh: BoshSessions
    connections: int = 0  #: open HTTP connections of this worker (WebSockets included)
    origins: cors.OriginGuard = field(default_factory=cors.OriginGuard)  #: checks, refusals logged

    @property
    def config(self) -> HTTPConfig:
        return self.services.config.http
