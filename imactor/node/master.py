"""`imactor supervise`: the node supervisor (the master process of docs/design.md's process tree).

    imactor-supervisor                     ONE_FOR_ONE, budget [supervision] intensity/period
    ├── imactor-worker[0] … [N-1]          PERMANENT worker processes (`imactor.worker.process`)
    ├── ZeroMQ link (PUSH to each worker)  membership announcements (`imactor.node.membership`)
    └── status server ([status] socket)    the workers' status, merged (`imactor.node.node_status`)

At start, before any worker: the certificate, module options and database schema
(`imactor.node.startup`), a private run directory (`imactor.node.rundir`), and the client
listeners, bound once here (port 0: the OS chooses, and every worker shares that port). The
listening sockets go to every worker as inherited descriptors, and stay open here for as long as
the node runs, so a connection that arrives while a worker restarts waits in the backlog for
another. Once all workers are ready, one line on stdout announces the ports::

    {"event": "listening", "c2s": 5222, "c2s_tls": 5223, "http": 5280, "https": 5443}

Signals: SIGTERM or SIGINT stop the workers one at a time in reverse order (SIGTERM each; each
ends its streams with ``system-shutdown`` and exits 0; SIGKILL after `WORKER_SHUTDOWN` seconds),
then the supervisor exits 0. SIGHUP is forwarded to every running worker, which reloads the
config file (`imactor.worker.reload`). A worker restarted later reads the file as it is then.
A fenced cluster node (no workers, waiting for its database) exits 0 at once on SIGTERM or SIGINT.

Exit status: 0 after a signal; 1 if the node cannot start (a bad certificate, database, port or
status socket; a worker that fails its first start); 3 when restarts exceed the budget, so that
systemd or Docker can act.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
import trio

from imactor import tls
from imactor.c2s.listener import open_listeners
from imactor.cluster.endpoints import MASTER, master_endpoint, worker_endpoint
from imactor.cluster.zmq_link import ZmqLink
from imactor.console.access import NodeAccess
from imactor.console.app import Console
from imactor.log import setup_logging
from imactor.node.cluster_node import cluster_member
from imactor.node.lease import ClusterMember, Fenced
from imactor.node.membership import MembershipAnnouncer
from imactor.node.metrics import render
from imactor.node.node_status import NodeStatus
from imactor.node.proctitle import SUPERVISOR_TITLE, set_title
from imactor.node.rundir import create_run_dir, remove_run_dir
from imactor.node.startup import is_start_error, prepare_node, sole_cause
from imactor.node.status.server import StatusServer
from imactor.storage import Storage, StorageError
from imactor.web.console_server import serve_console
from imactor.web.metrics_endpoint import serve_metrics
from supervisors import (
    ChildFailedToStart,
    ChildState,
    ProcessSpec,
    ProcessSupervisor,
    Restart,
    RestartBudget,
    RestartBudgetExceeded,
    Strategy,
)

if TYPE_CHECKING:
    from imactor.config import Config

log = logging.getLogger("imactor.node")

EXIT_OK = 0
EXIT_CANNOT_START = 1
EXIT_BUDGET_EXCEEDED = 3

#: Seconds between health pings of a worker, and how long its pong may take: a worker whose
#: event loop is stuck is killed and replaced within about their sum.
HEALTH_INTERVAL = 1.0
HEALTH_TIMEOUT = 5.0
#: Seconds a worker may take to start (import, open the database, start its tree).
READY_TIMEOUT = 30.0
#: Seconds between SIGTERM and SIGKILL when a worker is stopped (it needs 3 s to end its streams).
WORKER_SHUTDOWN = 10.0


def supervise(config: Config) -> int:
    """Run the node until SIGTERM/SIGINT; returns the exit status (see the module doc)."""
    setup_logging(config.log.level, config.log.format, SUPERVISOR_TITLE)
    set_title(SUPERVISOR_TITLE)
    try:
        return trio.run(run_node, config)
    except BaseException as exc:
        cause = sole_cause(exc)
        if not is_start_error(cause):
            raise
        log.error("cannot start: %s", cause)
        return EXIT_CANNOT_START


async def run_node(config: Config) -> int:
    """The node supervisor's main task; returns the exit status.

    Raises:
        OSError, ModuleConfigError, StorageError: The node cannot start (see `is_start_error`).
    """
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        await prepare_node(config)
        run_dir = create_run_dir()
        try:
            if config.cluster.enabled:
                return await _run_cluster_node(config, run_dir, signals)
            async with _bound_listeners(config) as listeners:
                return (await _run(config, run_dir, listeners, signals)).code
        finally:
            remove_run_dir(run_dir)


async def _run_cluster_node(config: Config, run_dir: Path, signals: AsyncIterator[int]) -> int:
    """A node of a cluster (`imactor.node.lease`): join, serve until stopped or fenced; after
    fencing, wait for the database, join again and serve again on the same ports."""
    member = cluster_member(config, run_dir)
    ports: dict[str, int] | None = None
    try:
        while True:
            async with _bound_listeners(config, ports) as listeners:
                ports = {name: bound[0].socket.getsockname()[1] for name, bound in listeners.items()}
                member.node = dataclasses.replace(member.node, clients=_client_address(config, ports))
                if member.node_id:
                    if not await _rejoin_unless_stopped(member, signals):
                        return EXIT_OK
                else:
                    try:
                        await member.join()
                    except (psycopg.Error, trio.TooSlowError) as exc:
                        raise StorageError(
                            f"cannot join the cluster: its database does not answer ({exc})"
                        ) from None
                outcome = await _run(config, run_dir, listeners, signals, member)
            if not outcome.fenced:
                return outcome.code
            log.error("fenced: the node stopped serving; it joins again once the database answers")
    finally:
        with trio.CancelScope(shield=True):
            if member.node_id:
                await member.retire()
            member.close()


async def _rejoin_unless_stopped(member: ClusterMember, signals: AsyncIterator[int]) -> bool:
    """Wait for the database after fencing; False when SIGTERM or SIGINT came first. A fenced
    node serves nothing, so it stops at once (an administrator or systemd stopping a node cut
    off from its database must not have to wait for the network, or for SIGKILL)."""
    rejoined = False
    async with trio.open_nursery() as nursery:

        async def rejoin() -> None:
            nonlocal rejoined
            await member.rejoin()
            rejoined = True
            nursery.cancel_scope.cancel()

        async def watch_signals() -> None:
            async for signum in signals:
                if signum != signal.SIGHUP:  # nothing to reload while fenced
                    log.info("%s while fenced: stopping", signal.Signals(signum).name)
                    nursery.cancel_scope.cancel()
                    return

        nursery.start_soon(rejoin)
        nursery.start_soon(watch_signals)
    return rejoined


def _client_address(config: Config, ports: dict[str, int]) -> dict[str, object]:
    """How clients reach this node, for the others' see-other-host redirects and host-meta."""
    host = config.cluster.client_host or config.listen.c2s.host[0]
    return {"host": host, **ports}


@dataclass
class _Outcome:
    code: int = EXIT_OK
    fenced: bool = False


class _Ready(trio.TaskStatus[object]):
    """The supervisor's ``task_status``: an event set once every worker is ready."""

    def __init__(self) -> None:
        self.event = trio.Event()

    def started(self, value: object = None) -> None:
        self.event.set()


async def _run(
    config: Config,
    run_dir: Path,
    listeners: dict[str, list[trio.SocketListener]],
    signals: AsyncIterator[int],
    cluster: ClusterMember | None = None,
) -> _Outcome:
    count = config.server.worker_count
    started_at = time.time()  # the server's uptime (XEP-0012) counts from here, not per worker
    fds = {name: [listener.socket.fileno() for listener in bound] for name, bound in listeners.items()}
    inherited = [fd for bound in fds.values() for fd in bound]
    workers = {f"worker[{index}]": index for index in range(count)}
    specs = [
        ProcessSpec(
            child_id,
            _worker_argv(config, index, count, run_dir, fds, started_at, cluster),
            restart=Restart.PERMANENT,
            shutdown=WORKER_SHUTDOWN,
            health_interval=HEALTH_INTERVAL,
            health_timeout=HEALTH_TIMEOUT,
            ready_timeout=READY_TIMEOUT,
            pass_fds=inherited,
        )
        for child_id, index in workers.items()
    ]
    budget = RestartBudget(config.supervision.intensity, config.supervision.period)
    supervisor = ProcessSupervisor("node", specs, Strategy.ONE_FOR_ONE, budget)
    wid = cluster.worker_id if cluster is not None else (lambda index: index)
    link = ZmqLink(
        MASTER, master_endpoint(run_dir), {wid(i): worker_endpoint(run_dir, i) for i in workers.values()}
    )
    membership: MembershipAnnouncer | ClusterMember
    if cluster is not None:
        cluster.watch(_live(supervisor, workers))
        membership = cluster
    else:
        membership = MembershipAnnouncer(link, _live(supervisor, workers))
    node_status = NodeStatus(
        domain=config.server.domain,
        supervisor=supervisor,
        workers=workers,
        run_dir=run_dir,
        membership=membership,
    )
    status = StatusServer(
        config.status_socket,
        [],
        domain=config.server.domain,
        document=node_status.document,
        commands=node_status.commands(),
    )
    await status.bind()  # here: a path another server answers on fails the start, not a child
    metrics = config.listen.metrics
    metrics_listeners = await open_listeners(metrics.host, metrics.port) if metrics.enabled else []
    console = config.listen.console
    console_listeners = await open_listeners(console.host, console.port) if console.enabled else []
    outcome = _Outcome()
    async with trio.open_nursery() as nursery:
        await nursery.start(link.run)
        if metrics_listeners:

            async def render_metrics() -> bytes:
                return render(await node_status.document())

            await nursery.start(serve_metrics, metrics_listeners, render_metrics, metrics.allow)
        if console_listeners:
            await nursery.start(_serve_console, config, node_status, console_listeners)
        nursery.start_soon(_drain, link)
        await nursery.start(status.run)
        nursery.start_soon(_handle_signals, signals, supervisor, nursery.cancel_scope)
        if isinstance(membership, ClusterMember):
            # From the start: the lease granted at join must be renewed while the workers start
            # (which may take longer than a lease); each is told the view once it runs.
            nursery.start_soon(_serve_cluster, membership, link, supervisor, outcome, nursery.cancel_scope)
        ready = _Ready()
        nursery.start_soon(_supervise, supervisor, ready, outcome, nursery.cancel_scope)
        await ready.event.wait()
        if isinstance(membership, ClusterMember):
            nursery.start_soon(_count_sessions, membership, node_status)
        else:
            nursery.start_soon(membership.run)
        extra = {"metrics": metrics_listeners, "console": console_listeners}
        _announce({**listeners, **{name: bound for name, bound in extra.items() if bound}}, count)
    return outcome


async def _serve_console(
    config: Config,
    node_status: NodeStatus,
    listeners: list[trio.SocketListener],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The admin console (`imactor.console`) on its own connection to the database; it sees the
    node through the same status document and commands as the status socket."""
    if not config.server.admins:
        log.warning("[listen.console] is enabled but [server] admins lists nobody: no one can log in")
    context = (
        tls.make_server_context(config.tls_certificate, config.tls_key, config.tls.min_version)
        if config.listen.console.tls
        else None
    )
    async with await Storage.open(config.storage_url, partitions=config.storage.partitions) as storage:
        access = NodeAccess(config, storage, node_status.document, node_status.commands())
        await serve_console(listeners, Console(access).handle, config.listen.console.allow, context,
                            task_status=task_status)  # fmt: skip


async def _serve_cluster(
    member: ClusterMember,
    link: ZmqLink,
    supervisor: ProcessSupervisor,
    outcome: _Outcome,
    node: trio.CancelScope,
) -> None:
    """Renew the lease and announce the cluster's membership; when fenced, stop serving at once:
    every worker is killed (their clients' connections drop, their actors stop) in the same step
    as the node is cancelled, so none is restarted meanwhile."""
    try:
        await member.run(link)
    except Fenced as exc:
        log.critical("fenced: %s", exc)
        outcome.fenced = True
        node.cancel()
        for child in supervisor.statistics().children:
            with contextlib.suppress(ProcessLookupError):
                supervisor.kill_child(child.id, signal.SIGKILL)


async def _supervise(
    supervisor: ProcessSupervisor, ready: _Ready, outcome: _Outcome, node: trio.CancelScope
) -> None:
    """Run the workers; on escalation, record the exit status and stop the node."""
    try:
        await supervisor.run(task_status=ready)
    except RestartBudgetExceeded as exc:
        log.critical("%s; the node stops", exc)
        outcome.code = EXIT_BUDGET_EXCEEDED
    except ChildFailedToStart as exc:
        log.error("cannot start: %s", exc)
        outcome.code = EXIT_CANNOT_START
    finally:
        node.cancel()


async def _handle_signals(
    signals: AsyncIterator[int], supervisor: ProcessSupervisor, node: trio.CancelScope
) -> None:
    async for signum in signals:
        if signum == signal.SIGHUP:
            _forward(supervisor, signal.SIGHUP)
            continue
        log.info("%s: stopping the workers", signal.Signals(signum).name)
        node.cancel()  # the process supervisor stops them in reverse order, then the rest ends
        return


async def _count_sessions(member: ClusterMember, node_status: NodeStatus) -> None:
    """Keep the node's session count (its load, in the node table) fresh, once a heartbeat."""
    while True:
        document = await node_status.document()
        member.sessions = int(document["totals"]["sessions"])
        await trio.sleep(member.heartbeat)


def _forward(supervisor: ProcessSupervisor, signum: int) -> None:
    """Send `signum` to every running worker. Not to a starting one: it may not handle it yet
    (SIGHUP's default action ends a process), and it reads the config file as it is anyway."""
    for child in supervisor.statistics().children:
        if child.state is ChildState.RUNNING:
            # ProcessLookupError: it exited meanwhile; its successor reads the file at start.
            with contextlib.suppress(ProcessLookupError):
                supervisor.kill_child(child.id, signum)


def _live(supervisor: ProcessSupervisor, workers: dict[str, int]) -> Callable[[], list[int]]:
    def live() -> list[int]:
        children = supervisor.statistics().children
        return [workers[child.id] for child in children if child.state is ChildState.RUNNING]

    return live


async def _drain(link: ZmqLink) -> None:
    """Nothing is sent to the supervisor yet; keep its inbound queue from filling up anyway."""
    async for envelope in link.receive_channel:
        log.debug("ignored a %s from w%d", type(envelope.message).__name__, envelope.source)


def _worker_argv(
    config: Config, index: int, count: int, run_dir: Path, fds: dict[str, list[int]], started_at: float,
    cluster: ClusterMember | None = None,
) -> list[str]:  # fmt: skip
    argv = [sys.executable, "-m", "imactor", "worker", "--config", str(Path(config.source).absolute())]
    argv += ["--index", str(index), "--workers", str(count), "--run-dir", str(run_dir)]
    argv += ["--node-started", repr(started_at)]
    if cluster is not None:
        argv += ["--node-id", str(cluster.node_id), "--mesh-endpoint", cluster.bind_endpoints[index]]
    for name, numbers in fds.items():
        argv += ["--listen", f"{name}={','.join(map(str, numbers))}"]
    return argv


@asynccontextmanager
async def _bound_listeners(
    config: Config, ports: Mapping[str, int] | None = None
) -> AsyncIterator[dict[str, list[trio.SocketListener]]]:
    """The client listeners, bound here for every worker; closed when the node ends. `ports`:
    the ports to bind instead of the configured ones (a fenced node binds again those it had)."""
    listeners: dict[str, list[trio.SocketListener]] = {}
    port = (lambda name, configured: configured) if ports is None else (lambda name, configured: ports[name])
    try:
        listeners["c2s"] = await open_listeners(config.listen.c2s.host, port("c2s", config.listen.c2s.port))
        if config.listen.c2s_tls.enabled:
            direct = config.listen.c2s_tls
            listeners["c2s_tls"] = await open_listeners(direct.host, port("c2s_tls", direct.port))
        for name, web in (("http", config.listen.http), ("https", config.listen.https)):
            if web.enabled:  # WebSocket, BOSH and host-meta (imactor/web)
                listeners[name] = await open_listeners(web.host, port(name, web.port))
        if config.s2s.enabled:  # federation (imactor/s2s): other servers connect here
            listeners["s2s"] = await open_listeners(
                config.listen.s2s.host, port("s2s", config.listen.s2s.port)
            )
        if config.proxy65.enabled:  # XEP-0065 (imactor/proxy65): every worker learns the port, one accepts
            listeners["proxy65"] = await open_listeners(
                config.listen.proxy65.host, port("proxy65", config.listen.proxy65.port)
            )
        if config.components:  # external components (XEP-0114, imactor/components)
            component = config.listen.component
            listeners["component"] = await open_listeners(component.host, port("component", component.port))
        yield listeners
    finally:
        with trio.CancelScope(shield=True):
            for bound in listeners.values():
                for listener in bound:
                    await listener.aclose()


def _announce(listeners: dict[str, list[trio.SocketListener]], count: int) -> None:
    """One JSON line on stdout with the bound ports (port 0 in tests means the OS chose them)."""
    ports = {name: bound[0].socket.getsockname()[1] for name, bound in listeners.items()}
    log.info("%d worker(s) ready; listening on %s", count, ports)
    print(json.dumps({"event": "listening", **ports}), flush=True)
