"""The capabilities of one worker, handed by reference to the actors and wings it runs.

Built once per worker by its root (`imactor.worker.tree`), which also registers what the
capabilities must not know: how user and room actors start (`Router.starts`), the room service
(`Router.serve_rooms`), the mesh. Each capability lives in a module of its own and knows none of
its consumers:

| capability            | module                      | used by                               |
|-----------------------|-----------------------------|---------------------------------------|
| `sessions`            | `imactor.server.sessions`   | c2s wing, room fan-out, shutdown      |
| `login_throttle`, `registration_throttle` | `imactor.server.throttles` | c2s wing, module API, reload |
| `server`              | `imactor.server.server_api` | modules (the module API)              |
| `router`              | `imactor.server.router`     | every actor                           |
| `modules`             | `imactor.server.modules`    | sessions, accounts, rooms             |
| `host_views`          | `imactor.server.host_view`  | the same, per served domain ([[hosts]]) |
| `mesh`                | `imactor.mesh`              | the wings (None: a worker alone)      |

It holds no per-account state (that lives in user actors) and nothing that needs a lock.
"""

from __future__ import annotations

import hashlib
import secrets
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from imactor.actors import Registry
from imactor.histogram import LatencyHistogram
from imactor.hosts import Hosts
from imactor.server.contexts import Contexts
from imactor.server.host_view import HostView
from imactor.server.module_host import ModuleHost
from imactor.server.router import Router
from imactor.server.server_api import ServerFacade
from imactor.server.sessions import SessionTable
from imactor.server.throttles import FailureThrottle, LoginThrottle
from imactor.xmpp import sm
from imactor.xmpp.jid import JID

if TYPE_CHECKING:
    from imactor.config import Config
    from imactor.mesh.mesh import Mesh
    from imactor.storage import Storage
    from supervisors import DynamicSupervisor, TaskSupervisor


@dataclass
class Services:
    config: Config
    storage: Storage
    modules: ModuleHost
    ssl_context: ssl.SSLContext
    endpoint_binding: bytes
    tls_key_bytes: bytes
    worker_index: int = 0
    #: Each virtual host's context (chosen by SNI) → its certificate's binding; the default
    #: context's is `endpoint_binding`.
    endpoint_bindings: Mapping[ssl.SSLContext, bytes] = field(default_factory=dict)
    registry: Registry = field(default_factory=Registry)
    user_supervisor: DynamicSupervisor | None = None
    room_supervisor: DynamicSupervisor | None = None
    session_supervisor: DynamicSupervisor | None = None
    worker_supervisor: TaskSupervisor | None = None
    #: When this worker started (the status socket's per-worker uptime).
    started_at: float = field(default_factory=time.time)
    #: When the node started: the server's uptime (XEP-0012) is the node's, also as seen from a
    #: worker that replaced a dead one. None: a worker alone, started_at.
    node_started_at: float | None = None
    #: A wing's own statistics for the status socket, by record name (the component wing's).
    status_records: dict[str, Callable[[], object]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        config = self.config
        limits = config.limits
        self.domain = config.server.domain
        #: Every domain whose accounts live here ([server] domain and [[hosts]]) and their keys.
        self.hosts = Hosts.of(config)
        #: The multi-user chat service's domain ([muc] enabled), else None.
        self.room_domain = f"{config.muc.subdomain}.{self.domain}" if config.muc.enabled else None
        self.router = Router(self.domain, self.registry, self.hosts)
        #: The client sessions of this worker: the c2s wing's (`imactor.c2s.session.SessionActor`);
        #: the table sits below the wing and knows them only as `LocalSession`.
        self.sessions: SessionTable[Any] = SessionTable(self.worker_index)
        self.login_throttle = LoginThrottle(
            FailureThrottle(limits.login_failures, limits.login_failure_window),
            FailureThrottle(limits.login_failures * 4, limits.login_failure_window),
        )
        self.registration_throttle = FailureThrottle(
            limits.registrations_per_address, limits.registration_window
        )
        self.server = ServerFacade(
            domain=self.domain, router=self.router, modules=self.modules,
            registrations=self.registration_throttle, room_domain=self.room_domain,
            proxy_domain=f"{config.proxy65.subdomain}.{self.domain}" if config.proxy65.enabled else None,
            started_at=self.started_at if self.node_started_at is None else self.node_started_at,
        )  # fmt: skip
        #: Builds every context handed to modules (`imactor.server.modules.Contexts`).
        self.contexts = Contexts(self)
        #: Each served domain's modules (`HostView`): the primary's are the three above.
        self.host_views = {domain: HostView(self, domain) for domain in config.domains}
        self.bound_features = _bound_features(self.server, self.modules)
        #: The other served domains' own (their modules differ: `[[hosts]] modules_disabled`).
        self.host_bound_features = tuple(
            (domain, _bound_features(view.facade, view.modules))
            for domain, view in self.host_views.items() if domain != self.domain
        )  # fmt: skip
        # Derived from the TLS key: stable across restarts and identical in every worker.
        self.fake_salt_secret = hashlib.sha256(b"imactor-fake-salt\0" + self.tls_key_bytes).digest()
        #: The link to the node's other workers; None for a standalone worker (no peers).
        self.mesh: Mesh | None = None
        # Counted by the sessions, for the status socket: O(1) to sample every second.
        self.stanzas_in_total = self.stanzas_out_total = 0
        #: Seconds a session's routing of a message takes (to the recipient's mailbox or link).
        self.route_latency = LatencyHistogram()

    def view(self, domain: str) -> HostView:
        """The modules of the served `domain` (the primary domain's for any other name)."""
        return self.host_views.get(domain) or self.host_views[self.domain]

    @property
    def facades(self) -> list[ServerFacade]:
        """Every served domain's server API, for what the worker wires into all of them."""
        return [view.facade for view in self.host_views.values()]

    def new_id(self) -> str:
        return secrets.token_hex(8)

    def new_resource(self) -> str:
        return "imactor-" + secrets.token_hex(6)

    def channel_bindings(self, ssl_object: ssl.SSLSocket | ssl.SSLObject) -> dict[str, bytes]:
        """RFC 5929 bindings this TLS session supports (tls-unique is undefined for TLS 1.3)."""
        binding = self.endpoint_bindings.get(ssl_object.context, self.endpoint_binding)
        bindings = {"tls-server-end-point": binding}
        if ssl_object.version() == "TLSv1.2":
            unique = ssl_object.get_channel_binding("tls-unique")
            if unique:
                bindings["tls-unique"] = unique
        return bindings

    def presence_changed(self, jid: JID, resource: str, available: bool) -> None:
        """Hook for statistics; per-resource availability is owned by the user actor."""


def _bound_features(server: ServerFacade, modules: ModuleHost) -> tuple[bytes, ...]:
    """The stream features a domain offers its clients once bound: caps, XEP-0198, the modules'."""
    return (*server.stream_features(), sm.FEATURE, *modules.stream_features)
