"""A throw-away PostgreSQL 15 cluster for one benchmark run (the peers' -pg variants).

`running_postgres(directory)` makes a new cluster with Debian's postgresql-15 binaries
(`initdb`, `pg_ctl` in /usr/lib/postgresql/15/bin) under `directory/postgres`, starts it on a
free loopback port with its unix socket in the same directory, yields a `Postgres` whose
`create_database` makes a role and a database for a peer (and loads a schema file if given),
and stops the cluster at the end (`pg_ctl stop -m fast`; the directory goes with the run's temp
dir). Nothing is installed or left running: no system cluster, no service.

initdb and the server refuse to run as root, so as root they run as the `postgres` system user
(created by the postgresql-common package) through `runuser`; the cluster's directory is then
chowned to that user, and the run's temp dir opened for traversal (mode 0711: no listing).

The cluster keeps PostgreSQL's own defaults (shared_buffers, fsync, synchronous_commit = on:
every commit waits for its WAL flush), as a production server starts out. Clients authenticate
with SCRAM-SHA-256 passwords (initdb --auth scram-sha-256), also on loopback.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.peers.common import PeerError, free_ports, tail

BIN_DIR = Path("/usr/lib/postgresql/15/bin")
SUPERUSER = "bench"
SYSTEM_USER = "postgres"  # runs the cluster when the bench runs as root
COMMAND_TIMEOUT = 120.0


@dataclass(frozen=True)
class Database:
    """Where a peer finds its database (TCP on loopback, password authentication)."""

    host: str
    port: int
    name: str
    user: str
    password: str


@dataclass
class Postgres:
    """A running throw-away cluster: its port, socket dir and the superuser's password."""

    data_dir: Path
    socket_dir: Path
    port: int
    password: str
    runner: Sequence[str]  # the prefix that runs a binary as the cluster's owner

    @property
    def pid(self) -> int | None:
        """The postmaster's pid (its children, the backends, belong to its process tree)."""
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def psql(self, database: str, *args: str, user: str = SUPERUSER, password: str | None = None) -> str:
        """Run psql against `database` over TCP (stop at the first error); its output."""
        env = dict(os.environ, PGPASSWORD=self.password if password is None else password)
        command = [str(BIN_DIR / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
                   "-p", str(self.port), "-U", user, "-d", database, *args]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, env=env,
                                timeout=COMMAND_TIMEOUT, check=False)  # fmt: skip
        if result.returncode != 0:
            raise PeerError(f"psql {' '.join(args)[:200]}: {result.stderr[-2000:]}")
        return result.stdout

    def create_database(self, name: str, schema: Path | None = None) -> Database:
        """A role `name` (login, a random password) owning a new database `name`; `schema`
        (an SQL file) is loaded as that role, so its tables belong to it."""
        password = secrets.token_hex(16)
        self.psql("postgres", "-c", f"CREATE ROLE {name} LOGIN PASSWORD '{password}'")
        self.psql("postgres", "-c", f"CREATE DATABASE {name} OWNER {name} ENCODING 'UTF8' TEMPLATE template0")
        if schema is not None:
            self.psql(name, "-f", str(schema), user=name, password=password)
        return Database("127.0.0.1", self.port, name, name, password)


def _runner() -> list[str]:
    """The command prefix that runs PostgreSQL's binaries as a user they accept."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        raise PeerError(f"running as root needs the {SYSTEM_USER!r} user (postgresql-common)") from None
    runuser = shutil.which("runuser")
    if runuser is None:
        raise PeerError("running as root needs runuser (util-linux) to start PostgreSQL as postgres")
    return [runuser, "-u", SYSTEM_USER, "--"]


def _check_reachable(directory: Path) -> None:
    """The `postgres` user must be able to walk down to `directory` (which is opened for it
    here): every directory above it must let others through (a temp dir under /tmp does)."""
    for parent in directory.resolve().parents:
        if not parent.stat().st_mode & 0o001:
            raise PeerError(f"{SYSTEM_USER} cannot reach {directory}: {parent} is closed to others "
                            "(use a directory under /tmp)")  # fmt: skip


def _run(runner: Sequence[str], *command: str) -> None:
    result = subprocess.run([*runner, *command], capture_output=True, text=True,
                            timeout=COMMAND_TIMEOUT, check=False)  # fmt: skip
    if result.returncode != 0:
        raise PeerError(f"{Path(command[0]).name} failed ({result.returncode}): "
                        f"{result.stdout[-1500:]}\n{result.stderr[-1500:]}")  # fmt: skip


@contextmanager
def running_postgres(directory: Path) -> Iterator[Postgres]:
    """Make, start and (at the end) stop a cluster under `directory/postgres`."""
    for binary in ("initdb", "pg_ctl", "psql"):
        if not (BIN_DIR / binary).exists():
            raise PeerError(f"{BIN_DIR / binary} not found: run `sh scripts/install-peers.sh` as root")
    runner = _runner()
    home = directory / "postgres"
    data_dir, socket_dir = home / "data", home / "socket"
    home.mkdir()
    socket_dir.mkdir()
    password = secrets.token_hex(16)
    password_file = home / "superuser-password"
    password_file.write_text(password + "\n")
    if runner:  # the cluster's owner must reach and own its directories
        owner = pwd.getpwnam(SYSTEM_USER)
        _check_reachable(directory)
        directory.chmod(0o711)
        for path in (home, socket_dir, password_file):
            os.chown(path, owner.pw_uid, owner.pw_gid)
    (port,) = free_ports(1)
    _run(runner, str(BIN_DIR / "initdb"), "-D", str(data_dir), "-U", SUPERUSER, "--auth", "scram-sha-256",
         "--pwfile", str(password_file), "--encoding", "UTF8", "--locale", "C.UTF-8")  # fmt: skip
    password_file.unlink()
    log = home / "postgres.log"
    options = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={socket_dir}"
    server = Postgres(data_dir, socket_dir, port, password, runner)
    try:
        _run(runner, str(BIN_DIR / "pg_ctl"), "-D", str(data_dir), "-l", str(log), "-o", options,
             "-w", "-t", "60", "start")  # fmt: skip
    except PeerError as exc:
        raise PeerError(f"{exc}\npostgres log:\n{tail(log)}") from exc
    try:
        yield server
    finally:
        with contextlib.suppress(PeerError, subprocess.TimeoutExpired):
            _run(runner, str(BIN_DIR / "pg_ctl"), "-D", str(data_dir), "-m", "fast", "-w", "-t", "60", "stop")
        _kill_leftover(server)


def _kill_leftover(server: Postgres) -> None:
    """If `pg_ctl stop` did not end the postmaster, end it by the pid it wrote (ours)."""
    pid = server.pid
    if pid is None:  # a clean stop removes postmaster.pid
        return
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/comm").read_text().strip() == "postgres":  # not a reused pid
            os.kill(pid, signal.SIGKILL)
