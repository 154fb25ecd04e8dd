"""`imactor worker`: one worker process of a node, started by the node supervisor (never by hand).

    python -m imactor worker --config F --index I --workers N --run-dir D \
        --listen c2s=FD[,FD...] [--listen c2s_tls=FD[,FD...]] [--listen http=FD] [--listen https=FD]

The supervisor passes the listening sockets it bound as inherited descriptors (``--listen``), the
node's run directory (``--run-dir``) and the worker's place in the node. The worker reads the
config file itself (it re-reads it on SIGHUP), runs its tree (`imactor.worker.tree.run_worker`),
reports ready on the health channel (`supervisors.health`) once the tree has started, answers
the supervisor's pings from its event loop, and exits 0 after a clean SIGTERM shutdown.

SIGINT is ignored: Ctrl-C in a terminal reaches the whole process group, and it is the
supervisor's to act on (it stops the workers in order with SIGTERM).
"""

from __future__ import annotations

import gc
import logging
import signal
from collections.abc import Mapping, Sequence
from pathlib import Path

import trio

from imactor.config import Config, load_config
from imactor.log import setup_logging
from imactor.node.proctitle import set_title, worker_title
from imactor.node.rundir import remove_run_dir
from imactor.node.startup import is_start_error, sole_cause
from imactor.worker.tree import WorkerPlacement, run_worker
from supervisors.health import SupervisorLost, serve_health

log = logging.getLogger("imactor.worker")


def parse_listen(values: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """``["c2s=3,4", "c2s_tls=5"]`` → ``{"c2s": (3, 4), "c2s_tls": (5,)}``.

    Raises:
        ValueError: A value is not NAME=FD[,FD...], or a name is given twice.
    """
    found: dict[str, tuple[int, ...]] = {}
    for value in values:
        name, _, fds = value.partition("=")
        try:
            numbers = tuple(int(fd) for fd in fds.split(","))
        except ValueError:
            numbers = ()
        if not name or not numbers or any(fd < 0 for fd in numbers) or name in found:
            raise ValueError(f"--listen {value!r}: expected NAME=FD[,FD...], each name once")
        found[name] = numbers
    return found


def run(
    config_path: Path, index: int, workers: int, run_dir: Path, listen: Mapping[str, Sequence[int]],
    *, node_started: float | None = None, node_id: int = 0, mesh_endpoint: str | None = None,
) -> int:
    """Run the worker until SIGTERM; returns the process exit status.

    Raises:
        ConfigError: The config file does not load (the command line reports it, exit 1).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    set_title(worker_title(index))
    config = load_config(config_path)
    setup_logging(config.log.level, config.log.format, worker_title(index))
    placement = WorkerPlacement(
        index=index, workers=workers, run_dir=run_dir, listener_fds=dict(listen), node_started=node_started,
        node_id=node_id, mesh_endpoint=mesh_endpoint,
    )  # fmt: skip
    try:
        trio.run(_main, config, placement)
    except BaseException as exc:
        cause = sole_cause(exc)
        if isinstance(cause, SupervisorLost):
            log.error("the node supervisor is gone; exiting")
            # Killed (SIGKILL), it could not remove its run directory: its orphans do.
            remove_run_dir(run_dir)
            return 1
        if is_start_error(cause):
            log.error("cannot start: %s", cause)
            return 1
        raise
    return 0


#: Allocations between young-generation collections (CPython's default is 700), and how many
#: young (then middle) collections run before an older one (default 10, 10).
GC_THRESHOLDS = (20_000, 20, 50)


def tune_gc() -> None:
    """Once the worker runs: move everything built so far (modules, config, the actor tree) out
    of the collector's sight (`gc.freeze`), and collect the young generation less often. A
    worker allocates many short-lived objects per stanza (lxml proxies, frozen stanzas, trio
    tasks' frames); with CPython's default thresholds the collections that walk the long-lived
    heap were the tail of delivery latency: in the muc benchmark (100 occupants) p99 fell from
    65–99 ms to 20–40 ms and server CPU by about a tenth (docs/benchmarks.md)."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


async def _main(config: Config, placement: WorkerPlacement) -> None:
    async def serve(*, task_status: trio.TaskStatus[None]) -> None:
        await run_worker(config, placement, task_status=task_status)
        nursery.cancel_scope.cancel()  # a clean stop: the health channel goes too

    async with trio.open_nursery() as nursery:
        health = await nursery.start(serve_health)
        await nursery.start(serve)
        tune_gc()
        health.ready()
