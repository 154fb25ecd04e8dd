"""What one served domain sees of the modules: its `ModuleHost`, its `ServerApi`, its `Contexts`.

The primary domain's view is the worker's own (`Services.modules`, `server`, `contexts`, which a
reload replaces). A [[hosts]] host has its own module host (``[server] modules`` less its
``modules_disabled``, plus its ``modules_enabled``; its ``[hosts.modules.*]`` over
``[modules.*]``) and its own `ServerFacade`: its domain, its chat service and its modules' service
JIDs in disco#items, its modules' features in disco#info. A module a host disables is absent
there: its IQs answer service-unavailable and its hooks do not run for that host's accounts.

Sessions take the view of the host their stream named; user actors the view of their account's
domain; the router the view of the domain an IQ is addressed to.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from imactor.server.contexts import Contexts
from imactor.server.module_host import ModuleHost
from imactor.server.server_api import ServerFacade

if TYPE_CHECKING:
    from imactor.config import Config
    from imactor.server.modules import ServerApi
    from imactor.server.router import Router
    from imactor.server.throttles import FailureThrottle
    from imactor.storage import Storage


class HostSource(Protocol):
    """What a view reads of the worker's `Services` (per call: a reload replaces some)."""

    domain: str
    config: Config
    storage: Storage
    modules: ModuleHost
    server: ServerFacade
    contexts: Contexts
    router: Router
    registration_throttle: FailureThrottle


class HostView:
    """One served domain's modules; see the module docstring."""

    __slots__ = ("_modules", "_server", "_services", "contexts", "domain")

    def __init__(self, services: HostSource, domain: str) -> None:
        self._services = services
        self.domain = domain
        self._modules: ModuleHost | None = None
        self._server: ServerFacade | None = None
        self.contexts = services.contexts if domain == services.domain else Contexts(self)
        self.reload()

    def reload(self) -> None:
        """Build the host's own module host and server API again (start, and a reload that
        changed module options); the primary domain's follow `Services` by themselves."""
        services = self._services
        if self.domain == services.domain:
            return
        config = services.config
        modules = ModuleHost(config.modules_of(self.domain), config.module_options_of(self.domain),
                             str(config.source))  # fmt: skip
        if self._modules is not None:
            modules.started_at = self._modules.started_at  # the modules have not restarted
        primary = services.server
        server = ServerFacade(
            domain=self.domain, router=services.router, modules=modules,
            registrations=services.registration_throttle,
            room_domain=f"{config.muc.subdomain}.{self.domain}" if config.muc.enabled else None,
            started_at=primary.started_at,
        )  # fmt: skip
        server.https_port, server.sessions_admin = primary.https_port, primary.sessions_admin
        self._modules, self._server = modules, server

    @property
    def modules(self) -> ModuleHost:
        return self._modules or self._services.modules

    def current_modules(self) -> ModuleHost:
        """`modules`, as a function for those that read it per stanza."""
        return self.modules

    @property
    def server(self) -> ServerApi:
        return self._server or self._services.server

    @property
    def facade(self) -> ServerFacade:
        """The host's `ServerFacade` (the worker wires its HTTPS port and sessions into it)."""
        return self._server or self._services.server

    # ---- `ContextSource`: what every context of this host carries ------------------------------

    @property
    def storage(self) -> Storage:
        return self._services.storage

    @property
    def config(self) -> Config:
        return self._services.config
