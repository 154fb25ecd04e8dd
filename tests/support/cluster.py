"""Nodes of a cluster on one PostgreSQL database, for the tests that start three of them.

Each node is a real `imactor supervise` (its supervisor and its workers) with its own data dir,
its own CURVE key (`imactor cluster keygen`) and its mesh on its own loopback address (`NODES`:
127.0.0.2, .3, .4); clients connect to each node's c2s port. The leases are short (`LEASE` 3 s,
renewed every 0.5 s) so that a killed node's users move within seconds. A node may run with its
clock set seconds off the others' (`Cluster(skews=...)`, libfaketime): leases are judged by the
database's clock and each node's monotonic clock, never by comparing wall clocks.

Used by tests/integration/test_cluster.py and tests/chaos/test_node_failover.py.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imactor.cluster.endpoints import NODE_STRIDE
from imactor.cluster.placement import home
from imactor.node.status.client import StatusUnavailable
from tests.support.server import ServerProcess, running_server
from tests.support.timeouts import START_TIMEOUT

NODES = {"node-a": "127.0.0.2", "node-b": "127.0.0.3", "node-c": "127.0.0.4"}
LEASE = 3.0
HEARTBEAT = 0.5


def cluster_options(directory: Path, name: str, mesh_host: str, database: str, lease: float = LEASE) -> str:
    """[storage] and [cluster] of a node; more [cluster] keys may follow (the table is last)."""
    return (
        f'\n[storage]\nurl = "{database}"\npartitions = 4\n'
        f'\n[cluster]\nenabled = true\nnode = "{name}"\nmesh_host = "{mesh_host}"\nmesh_port = 0\n'
        f'key_file = "{directory / "node.key"}"\nlease = {lease}\nheartbeat = {HEARTBEAT}\n'
    )


@dataclass
class Node:
    name: str
    directory: Path
    server: ServerProcess

    def membership(self) -> dict[str, Any]:
        document: dict[str, Any] = self.server.status()["supervisor"]["membership"]
        return document

    def pids(self) -> list[int]:
        """The supervisor's pid and its workers'."""
        workers = self.server.status()["workers"]
        return [self.server.proc.pid, *(int(w["pid"]) for w in workers if w.get("pid"))]

    def kill(self) -> list[int]:
        """SIGKILL the whole node at once, its supervisor and every worker; returns their pids."""
        pids = self.pids()
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        self.server.proc.wait(START_TIMEOUT)  # reaped: the pid is not reused under our feet
        return pids


def skewed_clock(offset: int) -> list[str]:
    """A command prefix that runs a program, its children too, with a clock `offset` seconds off
    the machine's: libfaketime preloaded by `env`, which execs (the pid is the program's own, so
    a kill by pid reaches it; the `faketime` wrapper would fork). Installed by
    scripts/ensure-faketime.sh when missing."""
    if not _faketime_libraries():
        script = Path(__file__).resolve().parents[2] / "scripts" / "ensure-faketime.sh"
        subprocess.run(["sh", str(script)], check=True, timeout=600)
    found = _faketime_libraries()
    assert found, "scripts/ensure-faketime.sh did not install libfaketimeMT"
    return ["env", f"LD_PRELOAD={found[0]}", f"FAKETIME={offset:+d}"]


def _faketime_libraries() -> list[Path]:
    """The multi-threaded variant: a worker's ZeroMQ and storage threads read the clock too."""
    return sorted(Path("/usr/lib").glob("*/faketime/libfaketimeMT.so.1"))


def keygen(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [sys.executable, "-m", "imactor", "cluster", "keygen", str(directory / "node.key")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "public key" in result.stdout


def wait_for_members(nodes: list[Node], count: int) -> int:
    """Wait until every node announces one membership of `count` workers; returns its epoch.
    A node that does not answer (starting, or fenced: its status server is down too) is waited
    for."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        views = [_membership_or_none(node) for node in nodes]
        epochs = {v["epoch"] for v in views if v is not None}
        if None not in views and len(epochs) == 1 and all(len(v["members"]) == count for v in views if v):
            return int(epochs.pop())
        assert time.monotonic() < deadline, views
        time.sleep(0.1)


def _membership_or_none(node: Node) -> dict[str, Any] | None:
    try:
        return node.membership()
    except (StatusUnavailable, OSError):
        return None


class Cluster(list[Node]):
    """The running nodes (in NODES order); `restart` brings a killed one back."""

    def __init__(
        self, stack: contextlib.ExitStack, database: str, *, workers: int = 1, extra: str = "",
        log_level: str = "warning", skews: dict[str, int] | None = None,
    ) -> None:  # fmt: skip
        """`skews`: seconds that a node's clock runs off the machine's, by node name."""
        super().__init__()
        self.stack, self.database = stack, database
        self.workers, self.extra, self.log_level = workers, extra, log_level
        self.prefixes = {name: skewed_clock(offset) for name, offset in (skews or {}).items()}
        self.restarts = 0

    def start(self, directory: Path, name: str, users: list[tuple[str, str]]) -> Node:
        """Start a node (callable from several threads at once: the stack's pushes are atomic)."""
        extra = cluster_options(directory, name, NODES[name], self.database) + self.extra
        server = self.stack.enter_context(running_server(
            directory, users=users, extra=extra, workers=self.workers, log_level=self.log_level,
            prefix=self.prefixes.get(name, ()),
        ))  # fmt: skip
        return Node(name, directory, server)

    def restart(self, node: Node) -> Node:
        """The same node (name, key, data dir) started again in place of `node`. The dead
        incarnation's log is kept beside the new one (``server.log.<n>``)."""
        self.restarts += 1
        log = node.directory / "server.log"
        if log.exists():
            log.rename(node.directory / f"server.log.{self.restarts}")
        again = self.start(node.directory, node.name, [])
        self[self.index(node)] = again
        return again

    def ports(self) -> list[int]:
        """The c2s ports of the nodes, in NODES order (a restarted node listens on a new one)."""
        return [node.server.c2s_port for node in self]


def node_of(nodes: list[Node], username: str, live: list[Node]) -> Node:
    """The node whose worker is home to `username`'s user actor, under the membership of `live`."""
    members: tuple[int, ...] = tuple(live[0].membership()["members"])
    owner = home("user", username, members)
    for node in nodes:
        if node.membership()["node_id"] == owner // NODE_STRIDE:
            return node
    raise AssertionError(f"no node holds w{owner}")
