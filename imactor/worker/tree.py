"""The supervision tree of one worker, declared in dependency order (ejabberd_sup style).

    worker (REST_FOR_ONE)                        `_children`: one ordered list
    ├── users      DynamicSupervisor, TEMPORARY UserActors (re-activated from storage on demand)
    ├── rooms      DynamicSupervisor, TEMPORARY RoomActors (XEP-0045; likewise)
    ├── sessions   DynamicSupervisor, TEMPORARY SessionActors (a lost TCP stream is not restarted)
    ├── session-timers  one task that ticks for every session: timeouts, pings, XEP-0198 ack requests
    ├── mesh       ZeroMQ link to the node's other workers and the node supervisor (multi-worker)
    ├── c2s        accept loop, STARTTLS port
    ├── c2s_tls    accept loop, direct TLS port (XEP-0368)
    ├── http       HTTP accept loop: WebSocket, BOSH, host-meta (imactor/web), 5280
    ├── https      the same over TLS, 5443
    ├── s2s        federation ([s2s] enabled): accept loop (5269) and the outgoing streams
    ├── components external components (XEP-0114, [components]): accept loop (5347), their streams
    ├── module-tasks  the modules' background tasks (the HTTP upload clean-up, reminders)
    ├── status     unix socket answering `imactor status` with JSON (imactor/node/status/)
    └── last-activity  writes the XEP-0012 stamps of logouts in batches (storage/stores.py)

This module is the worker's composition root: the capabilities (`imactor.server.services`)
are plain objects built before the tree (storage's one task is the last-activity writer above),
and here they are wired to the wings that use them (`_assemble`): how user and room actors
start, the room service, and the mesh with the inbound kinds each wing handles. If one of them
fails the worker fails and its supervisor restarts the worker.
"""

from __future__ import annotations

import itertools
import logging
import math
import signal
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from imactor import tls
from imactor.actors import Actor, ActorRef
from imactor.c2s.listener import open_listeners, serve_c2s
from imactor.c2s.mesh_wing import SessionWing
from imactor.c2s.timers import run_session_timers
from imactor.cluster.endpoints import NODE_STRIDE, worker_endpoint
from imactor.cluster.keys import read_key_file
from imactor.components.wing import ComponentWing
from imactor.mesh.mesh import Mesh, MeshAddressing
from imactor.node.rundir import worker_status_path
from imactor.node.status import StatusServer
from imactor.proxy65.relay import Proxy
from imactor.proxy65.service import ProxyService
from imactor.rooms import fanout
from imactor.rooms.actor import RoomActor
from imactor.rooms.service import MucService
from imactor.s2s.wing import S2SWing
from imactor.server.host_iqs import HostIqHandler
from imactor.server.module_host import ModuleHost
from imactor.server.module_services import ModuleServiceHandler
from imactor.server.modules import TaskContext
from imactor.server.router import Starter
from imactor.server.services import Services
from imactor.storage import Storage
from imactor.storage.cluster import ClusterStore
from imactor.user.actor import UserActor
from imactor.web.bosh import BoshSessions
from imactor.web.endpoints import WebEndpoints
from imactor.web.http_server import serve_http
from imactor.worker import admin
from imactor.worker.admin_wing import AdminWing
from imactor.worker.reload import reload_config, reload_modules
from imactor.worker.status import WorkerStatusSource
from supervisors import ChildSpec, DynamicSupervisor, Restart, RestartBudget, Strategy, TaskSupervisor

if TYPE_CHECKING:
    from imactor.config import Config

log = logging.getLogger("imactor.worker")

SHUTDOWN_GRACE = 3.0


@dataclass(frozen=True, slots=True)
class WorkerPlacement:
    """Where this worker stands in its node (given by the node supervisor on the command line)."""

    index: int = 0  #: this worker's number, 0 … workers-1
    workers: int = 1  #: how many workers the node runs
    #: The node's private run directory with the ZeroMQ endpoints (`imactor.cluster.endpoints`);
    #: None: a standalone worker with no peers (unit-level runs).
    run_dir: Path | None = None
    #: Listening sockets inherited from the node supervisor, by listener name ("c2s", "c2s_tls");
    #: None: the worker binds the configured addresses itself.
    listener_fds: Mapping[str, Sequence[int]] | None = None
    #: When the node started (`time.time()`): the server's uptime (XEP-0012) is the node's, not
    #: this worker's, which may be a replacement. None: the worker's own start.
    node_started: float | None = None
    #: In a cluster: the node's number (0: a single node) and where this worker binds its mesh
    #: socket for the other nodes' workers (None: no other nodes).
    node_id: int = 0
    mesh_endpoint: str | None = None

    @property
    def worker_id(self) -> int:
        """This worker's number in the whole cluster (its index, on a single node)."""
        return self.node_id * NODE_STRIDE + self.index


async def run_worker(
    config: Config,
    placement: WorkerPlacement = WorkerPlacement(),
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run one worker until SIGTERM; then end every stream with `system-shutdown`.

    Calls ``task_status.started()`` once its tree runs (the worker entry then reports ready to
    the node supervisor). SIGHUP reloads the config file (`imactor.worker.reload`). SIGINT stops
    a standalone worker too; under a node supervisor it is the supervisor's (Ctrl-C reaches the
    whole process group, and the supervisor stops the workers in order).
    """
    for domain, (cert, key) in config.certificates.items():
        tls.ensure_certificate(cert, key, domain)
    cert, key = config.tls_certificate, config.tls_key
    contexts = tls.make_host_contexts(config.certificates, config.server.domain, config.tls.min_version)
    ssl_context = contexts.default
    modules = ModuleHost(config.server.modules, config.modules, str(config.source))
    storage = await Storage.open(config.storage_url, partitions=config.storage.partitions)
    try:
        services = Services(
            config=config, storage=storage, modules=modules, ssl_context=ssl_context,
            endpoint_binding=contexts.bindings[ssl_context], tls_key_bytes=key.read_bytes(),
            endpoint_bindings=contexts.bindings,
            worker_index=placement.worker_id,
            node_started_at=placement.node_started,
        )  # fmt: skip
        budget = RestartBudget(config.supervision.intensity, config.supervision.period)
        rooms = _assemble(services, placement, budget)
        listeners = await _open_listeners(config, placement)
        if listeners.get("https"):  # the URLs modules hand out (XEP-0363 slots) name the real port
            for facade in services.facades:
                facade.https_port = listeners["https"][0].socket.getsockname()[1]
        proxy = _proxy65(services, listeners)
        status = await _bind_status(services, placement, rooms, proxy)
        children = _children(services, listeners, status, proxy)
        tree = TaskSupervisor("worker", children, strategy=Strategy.REST_FOR_ONE, budget=budget)
        services.worker_supervisor = tree
        stop = (signal.SIGTERM,) if placement.run_dir is not None else (signal.SIGTERM, signal.SIGINT)
        with trio.open_signal_receiver(*stop, signal.SIGHUP) as signals:
            async with trio.open_nursery() as nursery:
                await nursery.start(tree.run)
                task_status.started()
                async for signum in signals:
                    if signum == signal.SIGHUP:
                        reload_config(services)
                        await reload_modules(services)
                        continue
                    log.info("shutting down")
                    services.sessions.kick_all("system-shutdown", "the server is shutting down")
                    with trio.move_on_after(SHUTDOWN_GRACE):
                        await services.sessions.wait_closed()
                    nursery.cancel_scope.cancel()
                    break
    finally:
        with trio.CancelScope(shield=True):
            await storage.aclose()


def _assemble(services: Services, placement: WorkerPlacement, budget: RestartBudget) -> MucService | None:
    """Wire the capabilities to the wings: the actor supervisors, how user and room actors start,
    the room service, and (with peers) the mesh with each wing's inbound kinds. Returns the room
    service ([muc] enabled), which the admin commands use too."""
    services.user_supervisor = DynamicSupervisor("users", budget)
    services.room_supervisor = DynamicSupervisor("rooms", budget)
    services.session_supervisor = DynamicSupervisor("sessions", budget)
    router = services.router
    router.starts("user", _starter(services.user_supervisor, lambda name: UserActor(name, services)))
    rooms = MucService(services) if services.config.muc.enabled else None
    if rooms is not None:
        # One service per served domain (conference.<host>), the primary's first (`serve_rooms`).
        muc = [rooms, *(MucService(services, host) for host in services.config.domains[1:])]
        for chat in muc:
            router.serve_rooms(chat.domain, chat.handle_service_stanza)

        def room(key: str) -> RoomActor:
            return RoomActor(key, services, next((chat for chat in muc if chat.holds(key)), rooms))

        router.starts("room", _starter(services.room_supervisor, room))
    for domain, view in services.host_views.items():  # the primary domain and each [[hosts]] host
        modules = view.current_modules  # read per IQ: a reload replaces it
        router.serve_host(HostIqHandler(domain, modules, view.contexts, router).handle, domain)
        for service in view.modules.services(domain):
            handler = ModuleServiceHandler(service.domain, domain, modules, view.contexts, router)
            router.serve(service.domain, handler.handle)
    if placement.run_dir is not None:
        mesh = Mesh(placement.worker_id, _mesh_addressing(services, placement), registry=services.registry,
                    activate=router.local, bounce=router.bounce)  # fmt: skip
        mesh.host("user", "room")
        services.mesh = router.mesh = mesh
        SessionWing(mesh, services.sessions, services.hosts).install()
        fanout.install(services)
    AdminWing(services).install()
    return rooms


def _mesh_addressing(services: Services, placement: WorkerPlacement) -> MeshAddressing:
    """Where this worker's mesh listens and whom it reaches: the node's workers by their ipc://
    sockets, and in a cluster the other nodes' over CURVE (`imactor.cluster.zmq_link`)."""
    assert placement.run_dir is not None
    local = {
        placement.node_id * NODE_STRIDE + index: worker_endpoint(placement.run_dir, index)
        for index in range(placement.workers)
    }
    cluster = services.config.cluster
    if placement.mesh_endpoint is None or cluster.key_file is None:
        return MeshAddressing(local)
    registry = ClusterStore(services.config.storage_url)  # used by the ZAP thread alone
    return MeshAddressing(
        local, placement.mesh_endpoint, read_key_file(cluster.key_file), is_registered=registry.is_registered
    )


def _proxy65(services: Services, listeners: Mapping[str, Sequence[trio.SocketListener]]) -> Proxy | None:
    """The XEP-0065 proxy's JID on every worker ([proxy65] enabled), and its SOCKS5 side on the
    node's first worker alone: both connections of a stream must meet in one process, and the
    kernel would deal them to any worker accepting on the port (ARCHITECTURE.md, "File transfer").
    Returns that side on the owner, else None."""
    if not services.config.proxy65.enabled:
        return None
    owner = services.worker_index - services.worker_index % NODE_STRIDE
    proxy = Proxy(services.config.proxy65) if services.worker_index == owner else None
    service = ProxyService(services, owner, proxy)
    service.announce(listeners["proxy65"][0].socket.getsockname()[1])
    service.install()
    return proxy


def _children(
    services: Services, listeners: Mapping[str, Sequence[trio.SocketListener]], status: StatusServer,
    proxy: Proxy | None = None,
) -> list[ChildSpec]:
    """The worker's children, in start order (REST_FOR_ONE: a child's restart restarts those
    after it). A supervisor child gets all the time it needs to stop its own children (OTP:
    infinity); sessions and users bound their own clean-up."""
    users, rooms, sessions = services.user_supervisor, services.room_supervisor, services.session_supervisor
    assert users is not None
    assert rooms is not None
    assert sessions is not None
    web = WebEndpoints(services, BoshSessions(services))  # BOSH registers its mesh kind here
    federation = S2SWing(services, listeners["s2s"]) if services.config.s2s.enabled else None
    # External components (XEP-0114): registers its mesh kind here, like BOSH.
    components = ComponentWing(services, listeners["component"]) if "component" in listeners else None
    return [
        ChildSpec("users", users.run, shutdown=math.inf),
        ChildSpec("rooms", rooms.run, shutdown=math.inf),
        ChildSpec("sessions", sessions.run, shutdown=math.inf),
        ChildSpec("session-timers", partial(run_session_timers, services)),
        # After the actor supervisors: frames queued for this worker while it was down (held by
        # the peers' ZeroMQ sockets) arrive at once and must find them running. Before the
        # listeners: no session exists before it, so none holds a reference it lost.
        *([ChildSpec("mesh", services.mesh.run)] if services.mesh is not None else []),
        *(
            ChildSpec(
                f"{name}[{listener.socket.getsockname()[0]}]", _listener_child(services, web, name, listener)
            )
            for name, bound in listeners.items()
            if name not in ("s2s", "proxy65", "component")
            for listener in bound
        ),
        # The bytestreams proxy's SOCKS5 port, on the node's first worker only (`_proxy65`).
        *(
            [ChildSpec(f"proxy65[{listener.socket.getsockname()[0]}]", partial(proxy.serve, listener))
             for listener in listeners.get("proxy65", ())]
            if proxy is not None
            else []
        ),
        # Federation: the s2s listener and the outgoing streams, after the client listeners.
        *([ChildSpec("s2s", federation.run)] if federation is not None else []),
        *([ChildSpec("components", components.run)] if components is not None else []),
        *([ChildSpec("module-tasks", partial(_run_module_tasks, services))]
          if services.modules.background_tasks else []),
        ChildSpec("status", status.run),
        # Moves the archive's journal into the archive (`imactor.storage.archive`). Near the end:
        # a restart of it restarts only last-activity; what sessions append after it stopped
        # waits in the journal for the next read or start.
        ChildSpec("archive-journal", services.storage.archive.run),
        # Last: it is the first to stop, and the logouts of the shutdown are then written at once.
        ChildSpec("last-activity", services.storage.last_activity.run),
    ]


async def _bind_status(
    services: Services, placement: WorkerPlacement, rooms: MucService | None, proxy: Proxy | None
) -> StatusServer:
    """The status socket, bound now like the listeners, so that a bad path fails the start cleanly.
    Under a node supervisor, the configured path is the supervisor's, which merges this one."""
    path = services.config.status_socket
    if placement.run_dir is not None:
        path = worker_status_path(placement.run_dir, placement.index)
    status = StatusServer(path, [WorkerStatusSource(services, proxy)], domain=services.domain,
                          commands=admin.commands(services, rooms))  # fmt: skip
    await status.bind()
    return status


async def _run_module_tasks(
    services: Services, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """The enabled modules' background tasks (`Module.background`), for the worker's life. A task
    may end (one that runs in one worker of the node only): the child stays, a PERMANENT child
    that returned would be restarted."""
    async with trio.open_nursery() as nursery:
        for task, options in services.modules.background_tasks:
            # The index in the node: a task that runs on one worker of each node asks for 0.
            context = TaskContext(
                options, services.config, services.server, services.worker_index % NODE_STRIDE,
                services.storage, services.worker_index // NODE_STRIDE,
            )
            nursery.start_soon(task, context)
        task_status.started()
        await trio.sleep_forever()


def _starter(supervisor: DynamicSupervisor, make: Callable[[str], Actor[Any]]) -> Starter:
    """Start the actor `make(key)` as a TEMPORARY child of `supervisor` (re-activated on demand)."""

    incarnations = itertools.count()

    async def start(key: str) -> ActorRef[Any]:
        actor = make(key)
        # The id names the incarnation: a predecessor that handed off may still be forwarding
        # what was queued for it when its key comes back here (`Registry.retire`).
        ref = await supervisor.start_child(
            ChildSpec(id=f"{actor.address}#{next(incarnations)}", start=actor.run, restart=Restart.TEMPORARY)
        )
        return ref  # type: ignore[return-value]

    return start


def _listener_child(
    services: Services, web: WebEndpoints, name: str, listener: trio.SocketListener
) -> Callable[..., Awaitable[object]]:
    """The start function of one listener's child (called with ``task_status=``)."""
    if name in ("http", "https"):
        return partial(serve_http, web, listener, tls=name == "https")
    return partial(serve_c2s, services, listener, direct_tls=name == "c2s_tls")


async def _open_listeners(config: Config, placement: WorkerPlacement) -> dict[str, list[trio.SocketListener]]:
    """The client listeners by name: inherited from the node supervisor, or bound here.

    The supervisor binds each port once and every worker accepts on the same sockets: the
    kernel hands each connection to one of them, and a dead worker's share goes to the others
    (the backlog lives as long as the supervisor holds the socket, so nothing queued is lost).
    """
    if placement.listener_fds is not None:
        inherit = trio.socket.from_stdlib_socket
        return {
            name: [trio.SocketListener(inherit(socket.socket(fileno=fd))) for fd in numbers]
            for name, numbers in placement.listener_fds.items()
        }
    listeners = {"c2s": await open_listeners(config.listen.c2s.host, config.listen.c2s.port)}
    if config.listen.c2s_tls.enabled:
        direct = config.listen.c2s_tls
        listeners["c2s_tls"] = await open_listeners(direct.host, direct.port)
    for name, web in (("http", config.listen.http), ("https", config.listen.https)):
        if web.enabled:
            listeners[name] = await open_listeners(web.host, web.port)
    if config.s2s.enabled:
        listeners["s2s"] = await open_listeners(config.listen.s2s.host, config.listen.s2s.port)
    if config.proxy65.enabled:
        listeners["proxy65"] = await open_listeners(config.listen.proxy65.host, config.listen.proxy65.port)
    if config.components:
        component = config.listen.component
        listeners["component"] = await open_listeners(component.host, component.port)
    return listeners
