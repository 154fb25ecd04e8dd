"""imactor as a cluster of nodes on one PostgreSQL database, for `--compare-nodes` (issue 16).

`running_cluster_database(directory, users)` starts a throw-away PostgreSQL cluster
(bench/peers/postgres.py), makes a role and a database for imactor, brings it to imactor's
schema and adds the accounts once (`imactor user add --file`), and yields a `ClusterDatabase`.
Its `nodes(count)` then starts `count` nodes on a fresh copy of that database
(`CREATE DATABASE ... TEMPLATE`: a second, not a minute of provisioning per run, and every run
starts from the same rows: no archive left by the run before). Each node is an `imactor
supervise` with its own data dir, its own CURVE key (`imactor cluster keygen`), every listener
and its mesh on its own loopback address (127.0.0.2, .3, ...), all started at once (the schema
check takes turns under PostgreSQL's advisory lock); the block is entered once every node
announces one membership of all their workers. One node
runs the same way (a cluster of one), so that the only difference between one node and two is
the second node.

The `Target` it yields spreads the generator's clients over the nodes' c2s ports
(`endpoints`), measures every node's process tree and PostgreSQL's (`other_pids`,
`database_pid`), and reads the mesh's frame counters from every node's status socket
(`counters`): with one worker per node, every frame a worker sends crosses to another node.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.loadgen.launcher import Target, add_users, running_imactor, write_config
from bench.peers.common import PeerError
from bench.peers.postgres import Database, Postgres, running_postgres
from imactor.node.status.client import request_status

START_TIMEOUT = 60.0
#: The nodes' loopback addresses: node i binds its listeners and its mesh on the i-th.
NODE_HOSTS = tuple(f"127.0.0.{n}" for n in range(2, 10))
DATABASE = "imactor"


def database_url(database: Database, name: str | None = None) -> str:
    return (f"postgresql+psycopg://{database.user}:{database.password}@{database.host}:{database.port}/"
            f"{name or database.name}")  # fmt: skip


def cluster_tables(url: str, node: str, host: str, key_file: Path) -> str:
    """The `[storage]` and `[cluster]` tables of one node (extra TOML for its config); the lease
    and the heartbeat keep their defaults (6 s, 1 s), as a deployment starts out."""
    return (f'\n[storage]\nurl = "{url}"\n'
            f'\n[cluster]\nenabled = true\nnode = "{node}"\nmesh_host = "{host}"\nmesh_port = 0\n'
            f'key_file = "{key_file}"\n')  # fmt: skip


def keygen(path: Path) -> None:
    path.parent.mkdir(exist_ok=True)
    result = subprocess.run([sys.executable, "-m", "imactor", "cluster", "keygen", str(path)],
                            capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    if result.returncode != 0:
        raise PeerError(f"imactor cluster keygen failed: {result.stderr}")


def status(directory: Path) -> dict[str, Any]:
    """A node's status document (its status socket is under its data dir)."""
    return request_status(directory / "data" / "imactor.sock", timeout=10.0)


def mesh_counters(directories: Sequence[Path]) -> dict[str, int]:
    """The mesh frames every worker of every node sent and received so far (summed): each
    node's status socket answers for its own workers."""
    totals = {"mesh_frames_out": 0, "mesh_frames_in": 0}
    for directory in directories:
        for worker in status(directory).get("workers", []):
            mesh = worker.get("mesh") or {}  # the worker's MeshStatistics record
            totals["mesh_frames_out"] += int(mesh.get("frames_out", 0))
            totals["mesh_frames_in"] += int(mesh.get("frames_in", 0))
    return totals


def wait_for_members(directories: Sequence[Path], workers: int) -> None:
    """Until every node announces one membership (one epoch) of `workers` workers."""
    deadline = time.monotonic() + START_TIMEOUT
    views: list[Any] = []
    while time.monotonic() < deadline:
        views = [status(d)["supervisor"].get("membership") or {} for d in directories]
        epochs = {view.get("epoch") for view in views}
        if len(epochs) == 1 and all(len(view.get("members", ())) == workers for view in views):
            return
        time.sleep(0.2)
    raise PeerError(f"the nodes did not agree on a membership of {workers} workers: {views}")


@dataclass
class ClusterDatabase:
    """The PostgreSQL cluster and imactor's provisioned database, the template of every run's."""

    directory: Path
    postgres: Postgres
    database: Database
    tls: bool
    domain: str
    workers: int
    modules: Sequence[str] | None
    config_name: str
    runs: int = 0

    @contextmanager
    def nodes(self, count: int) -> Iterator[Target]:
        """`count` nodes on a fresh copy of the provisioned database (module docstring)."""
        if not 1 <= count <= len(NODE_HOSTS):
            raise ValueError(f"1 to {len(NODE_HOSTS)} nodes, not {count}")
        self.runs += 1
        name = f"run{self.runs}"
        self.postgres.psql("postgres", "-c", f"CREATE DATABASE {name} OWNER {self.database.user} "
                           f"TEMPLATE {self.database.name}")  # fmt: skip
        url = database_url(self.database, name)
        with contextlib.ExitStack() as stack:
            stack.callback(self.postgres.psql, "postgres", "-c", f"DROP DATABASE IF EXISTS {name}")
            directories = [self.directory / f"{name}-node{index}" for index in range(count)]
            with ThreadPoolExecutor(count) as pool:  # keys, then nodes, all at once: seconds each
                list(pool.map(keygen, [directory / "node.key" for directory in directories]))
                starting = [self._node(index, directory, url) for index, directory in enumerate(directories)]
                entered = [pool.submit(node.__enter__) for node in starting]
                targets = _enter_all(stack, starting, entered)
            wait_for_members(directories, count * self.workers)
            first = targets[0]
            yield Target(first.host, first.port, self.domain, first.pid, self.postgres.pid,
                         endpoints=tuple((t.host, t.port) for t in targets),
                         other_pids=tuple(t.pid for t in targets[1:] if t.pid),
                         counters=lambda: mesh_counters(directories))  # fmt: skip

    def _node(self, index: int, directory: Path, url: str) -> AbstractContextManager[Target]:
        """Node `index` (not started yet): its listeners and mesh on its own loopback address."""
        tables = cluster_tables(url, f"node{index}", NODE_HOSTS[index], directory / "node.key")
        return running_imactor(directory, [], tls=self.tls, domain=self.domain, workers=self.workers,
                               modules=self.modules, config_name=self.config_name, host=NODE_HOSTS[index],
                               extra=tables)  # fmt: skip


def _enter_all(stack: contextlib.ExitStack, nodes: Sequence[AbstractContextManager[Target]],
               entered: Sequence[Future[Target]]) -> list[Target]:  # fmt: skip
    """Every started node's exit on `stack`, then the first failure raised (if a node did not
    start, the others are stopped with the stack, not left running)."""
    targets, failure = [], None
    for node, future in zip(nodes, entered, strict=True):
        try:
            targets.append(stack.enter_context(_Started(node, future)))
        except Exception as exc:
            failure = failure or exc
    if failure is not None:
        raise failure
    return targets


class _Started(AbstractContextManager[Target]):
    """A node whose `running_imactor` was entered in another thread: its Target, and its exit."""

    def __init__(self, node: AbstractContextManager[Target], entered: Future[Target]) -> None:
        self._node, self._entered = node, entered

    def __enter__(self) -> Target:
        return self._entered.result()  # a node that did not start raises here (the others stop)

    def __exit__(self, *exc: Any) -> bool | None:
        return self._node.__exit__(*exc)


@contextmanager
def running_cluster_database(directory: Path, users: Sequence[tuple[str, str]], *, tls: bool,
                             domain: str = "localhost", workers: int = 1,
                             modules: Sequence[str] | None = None,
                             config_name: str = "default") -> Iterator[ClusterDatabase]:  # fmt: skip
    """PostgreSQL started and imactor's database provisioned with `users` (module docstring);
    `workers`, `modules` and `config_name` are every node's, as for `running_imactor`."""
    with running_postgres(directory) as postgres:
        database = postgres.create_database(DATABASE)
        provisioning = directory / "provisioning"
        provisioning.mkdir()
        config = write_config(provisioning, tls=tls, domain=domain, config_name="default",
                              extra=f'\n[storage]\nurl = "{database_url(database)}"\n')  # fmt: skip
        add_users(config, users)
        yield ClusterDatabase(directory, postgres, database, tls, domain, workers, modules, config_name)
