"""The supervision tree of one worker, declared in dependency order (ejabberd_sup style).

    worker (REST_FOR_ONE)
    ├── users      DynamicSupervisor, TEMPORARY UserActors (re-activated from storage on demand)
    ├── sessions   DynamicSupervisor, TEMPORARY SessionActors (a lost TCP stream is not restarted)
    ├── c2s        accept loop, STARTTLS port
    ├── c2s_tls    accept loop, direct TLS port (XEP-0368)
    └── status     unix socket answering `imactor status` with JSON (imactor/node/status.py)

Storage, the registry, the router and the module host are plain objects built before the tree
(they have no task of their own); if one of them fails the worker fails and its supervisor
restarts the worker.
"""

from __future__ import annotations

import json
import logging
import math
import signal
import sys
from typing import TYPE_CHECKING

import trio

from imactor import tls
from imactor.node.status import StatusServer
from imactor.server.listener import open_listeners, serve_c2s
from imactor.server.modules import ModuleHost
from imactor.server.worker_services import Services
from imactor.server.worker_status import WorkerStatusSource
from imactor.storage import Storage
from supervisors import ChildSpec, DynamicSupervisor, RestartBudget, Strategy, TaskSupervisor

if TYPE_CHECKING:
    from imactor.config import Config

log = logging.getLogger("imactor.worker")

SHUTDOWN_GRACE = 3.0


async def run_worker(config: Config, *, worker_index: int = 0) -> None:
    """Run one worker until SIGTERM/SIGINT; then end every stream with `system-shutdown`."""
    cert, key = tls.ensure_certificate(config.tls_certificate, config.tls_key, config.server.domain)
    ssl_context = tls.make_server_context(cert, key, min_version=config.tls.min_version)
    modules = ModuleHost(config.server.modules, config.modules, str(config.source))
    storage = await Storage.open(config.storage_url)
    try:
        services = Services(
            config=config, storage=storage, modules=modules, ssl_context=ssl_context,
            endpoint_binding=tls.server_end_point_binding(cert), tls_key_bytes=key.read_bytes(),
            worker_index=worker_index,
        )  # fmt: skip
        budget = RestartBudget(config.supervision.intensity, config.supervision.period)
        services.user_supervisor = DynamicSupervisor("users", budget)
        services.session_supervisor = DynamicSupervisor("sessions", budget)
        listeners = {"c2s": await open_listeners(config.listen.c2s.host, config.listen.c2s.port)}
        if config.listen.c2s_tls.enabled:
            direct = config.listen.c2s_tls
            listeners["c2s_tls"] = await open_listeners(direct.host, direct.port)
        # A supervisor child gets all the time it needs to stop its own children (OTP: infinity);
        # sessions and users bound their own clean-up.
        children = [
            ChildSpec("users", services.user_supervisor.run, shutdown=math.inf),
            ChildSpec("sessions", services.session_supervisor.run, shutdown=math.inf),
        ]
        for name, bound in listeners.items():
            for listener in bound:
                address = listener.socket.getsockname()[0]
                start = _listener_start(services, listener, direct_tls=name == "c2s_tls")
                children.append(ChildSpec(f"{name}[{address}]", start))
        # Bound here, like the listeners, so that a bad socket path fails the start cleanly.
        status = StatusServer(config.status_socket, [WorkerStatusSource(services)], domain=services.domain)
        await status.bind()
        children.append(ChildSpec("status", status.run))
        tree = TaskSupervisor("worker", children, strategy=Strategy.REST_FOR_ONE, budget=budget)
        services.worker_supervisor = tree
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:
                await nursery.start(tree.run)
                _announce(listeners)
                async for _ in signals:
                    log.info("shutting down")
                    services.kick_all("system-shutdown", "the server is shutting down")
                    with trio.move_on_after(SHUTDOWN_GRACE):
                        await services.wait_sessions_closed()
                    nursery.cancel_scope.cancel()
                    break
    finally:
        with trio.CancelScope(shield=True):
            await storage.aclose()


def _listener_start(services: Services, listener: trio.SocketListener, *, direct_tls: bool):  # type: ignore[no-untyped-def]
    async def start(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await serve_c2s(services, listener, direct_tls=direct_tls, task_status=task_status)

    return start


def _announce(listeners: dict[str, list[trio.SocketListener]]) -> None:
    """One JSON line on stdout with the bound ports (port 0 in tests means the OS chose them)."""
    ports = {name: bound[0].socket.getsockname()[1] for name, bound in listeners.items()}
    print(json.dumps({"event": "listening", **ports}), flush=True)
    log.info("listening on %s", ports)
    sys.stdout.flush()
