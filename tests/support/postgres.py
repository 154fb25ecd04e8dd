"""A throw-away PostgreSQL server for tests: its own cluster in a temp dir, on a free port.

Debian's `postgresql` package puts `initdb` and `pg_ctl` under ``/usr/lib/postgresql/<version>/bin``
without starting anything. `PostgresServer.start` creates a cluster there (as the ``postgres``
user when the tests run as root: PostgreSQL refuses to run as root), listening on 127.0.0.1 only,
on a port the OS chose, with its unix socket in the temp dir, and with fsync off (a test's data
need not survive a power cut). `stop` stops it by `pg_ctl stop` (immediate: nothing to keep) and
removes the directory. Each pytest(-xdist) process that needs one starts its own (about a
second), so no process waits on another's server or tears it down under it.

Tests get a fresh schema (`PostgresServer.schema_url`: milliseconds) or a fresh database
(`PostgresServer.database_url`: for a server process of its own or a migration from nothing).
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psycopg

#: Where Debian's postgresql packages install the server programs; the newest version wins.
BIN_GLOB = "/usr/lib/postgresql/*/bin"
#: The superuser of the test cluster (trust authentication, on loopback only).
SUPERUSER = "postgres"
#: Settings for speed, not durability: nothing of a test cluster must outlive a crash.
FAST_SETTINGS = ("fsync=off", "synchronous_commit=off", "full_page_writes=off", "max_connections=200")
_names = itertools.count()
#: The temp dirs of the clusters, and the file in each that names the pytest process that owns it.
DIRECTORY_PREFIX = "imactor-pg-"
OWNER_FILE = "owner.pid"


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server programs on this machine."""


def find_bin_dir() -> Path:
    """The newest installed ``bin`` directory with ``initdb`` and ``pg_ctl``.

    Raises:
        PostgresUnavailable: None is installed.
    """
    found = [
        Path(d)
        for d in glob.glob(BIN_GLOB)
        if (Path(d) / "initdb").exists() and (Path(d) / "pg_ctl").exists()
    ]
    if not found:
        raise PostgresUnavailable(
            f"no PostgreSQL server programs ({BIN_GLOB}/initdb, pg_ctl): install Debian's postgresql package"
        )
    return max(found, key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else 0)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class PostgresServer:
    """One running throw-away cluster."""

    directory: Path
    port: int
    pid: int
    bin_dir: Path
    #: Addresses the server listens on (loopback unless a test gives it more).
    listen: tuple[str, ...] = ("127.0.0.1",)

    @classmethod
    def start(
        cls, *, listen: tuple[str, ...] = ("127.0.0.1",), trust: tuple[str, ...] = ()
    ) -> PostgresServer:
        """initdb a cluster in a new temp dir and start it (see the module docstring).

        `listen`: its addresses; `trust`: more networks (CIDR) whose clients it lets in without a
        password, like loopback's (a test's network namespace, `tests/support/netns.py`).

        Raises:
            PostgresUnavailable: No server programs.
            RuntimeError: initdb or the start failed (the message holds the server's log).
        """
        bin_dir = find_bin_dir()
        _reap_orphans(bin_dir)
        directory = Path(tempfile.mkdtemp(prefix=DIRECTORY_PREFIX))
        (directory / OWNER_FILE).write_text(str(os.getpid()))
        try:
            if os.geteuid() == 0:
                owner = pwd.getpwnam(SUPERUSER)
                os.chown(directory, owner.pw_uid, owner.pw_gid)
            _run(bin_dir / "initdb", "-D", str(directory / "data"), "-U", SUPERUSER, "--auth=trust",
                 "--no-sync", "--no-instructions", "-E", "UTF8", "--locale=C")  # fmt: skip
            if trust:
                with open(directory / "data" / "pg_hba.conf", "a") as hba:
                    hba.writelines(f"host all all {network} trust\n" for network in trust)
            # The port is free when the OS gives it; another process may take it before the
            # server binds it (rare): then try another.
            for _attempt in range(5):
                port = _free_port()
                started = _run(*_start_command(bin_dir, directory, port, listen), check=False)
                if started.returncode == 0:
                    pid = int((directory / "data" / "postmaster.pid").read_text().split()[0])
                    return cls(directory, port, pid, bin_dir, listen)
            log = (directory / "server.log").read_text(errors="replace")
            raise RuntimeError(f"PostgreSQL did not start: {started.stderr}\n{log}")
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise

    def stop(self) -> None:
        """Stop the server (immediate shutdown: nothing to keep) and remove its directory."""
        try:
            stopped = _run(self.bin_dir / "pg_ctl", "-D", str(self.directory / "data"), "-m", "immediate",
                           "-w", "stop", check=False)  # fmt: skip
            pid_file = self.directory / "data" / "postmaster.pid"
            if stopped.returncode != 0 and pid_file.exists() and self._postmaster_pid() == self.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)  # pg_ctl could not: end it by its own pid
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)

    def halt(self) -> None:
        """Stop the server the way an administrator would (fast: every client connection ends)."""
        _run(self.bin_dir / "pg_ctl", "-D", str(self.directory / "data"), "-m", "fast", "-w", "stop")

    def resume(self) -> None:
        """Start the stopped server again on the same port and directory."""
        _run(*self._start_command(self.port))
        self.pid = self._postmaster_pid()

    def _start_command(self, port: int) -> tuple[str, ...]:
        return _start_command(self.bin_dir, self.directory, port, self.listen)

    def _postmaster_pid(self) -> int:
        return int((self.directory / "data" / "postmaster.pid").read_text().split()[0])

    def url(self, database: str = "postgres", **query: str) -> str:
        """A SQLAlchemy URL of `database` on this server, for imactor's ``[storage] url``."""
        suffix = "&".join(f"{key}={value}" for key, value in query.items())
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{database}" + (
            f"?{suffix}" if suffix else ""
        )

    def execute(self, sql: str, database: str = "postgres") -> list[tuple[object, ...]]:
        """Run one statement as the superuser, in autocommit (CREATE DATABASE needs it)."""
        conninfo = f"host=127.0.0.1 port={self.port} user={SUPERUSER} dbname={database}"
        with psycopg.connect(conninfo, autocommit=True) as connection, connection.cursor() as cursor:
            cursor.execute(sql.encode())
            return list(cursor.fetchall()) if cursor.description else []

    def database_url(self, prefix: str = "imactor") -> str:
        """A new, empty database and its URL."""
        name = f"{prefix}_{os.getpid()}_{next(_names)}"
        self.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def schema_url(self, database: str = "postgres") -> tuple[str, str]:
        """A new, empty schema of `database` and a URL whose connections use it (search_path)."""
        name = f"t_{os.getpid()}_{next(_names)}"
        self.execute(f'CREATE SCHEMA "{name}"', database)
        return name, self.url(database, options=f"-csearch_path%3D{name}")

    def drop_schema(self, name: str, database: str = "postgres") -> None:
        self.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE', database)


def _reap_orphans(bin_dir: Path) -> None:
    """Stop and remove the clusters of test processes that died without stopping them (a pytest
    killed by a timeout: pg_ctl's server outlives it). Each cluster names its owner's pid."""
    for directory in Path(tempfile.gettempdir()).glob(f"{DIRECTORY_PREFIX}*"):
        try:
            owner = int((directory / OWNER_FILE).read_text())
            os.kill(owner, 0)
            continue  # its owner runs: not ours to touch
        except ProcessLookupError:
            pass
        except (OSError, ValueError):
            continue  # not (yet) a cluster with an owner
        if (directory / "data" / "postmaster.pid").exists():
            _run(bin_dir / "pg_ctl", "-D", str(directory / "data"), "-m", "immediate", "-w", "stop",
                 check=False)  # fmt: skip
        shutil.rmtree(directory, ignore_errors=True)


def _start_command(
    bin_dir: Path, directory: Path, port: int, listen: tuple[str, ...] = ("127.0.0.1",)
) -> tuple[str, ...]:
    """pg_ctl start: loopback only, on `port`, the unix socket in `directory`, fast settings."""
    options = " ".join([f"-c listen_addresses={','.join(listen)}", f"-p {port}", f"-k {directory}"]
                       + [f"-c {setting}" for setting in FAST_SETTINGS])  # fmt: skip
    data, log = directory / "data", directory / "server.log"
    return (str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "30", "-o", options,
            "start")  # fmt: skip


def _run(program: Path | str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a server program as the ``postgres`` user when we are root (it refuses to run as root)."""
    command = [str(program), *args]
    if os.geteuid() == 0:
        command = ["runuser", "-u", SUPERUSER, "--", *command]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False, cwd="/")
    if check and result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} failed ({result.returncode}): {result.stderr}{result.stdout}"
        )
    return result


def server_or_fail() -> PostgresServer:
    """Start a server for the `postgres` fixture; without PostgreSQL, skip, or fail under CI.

    CI has the programs (Debian's postgresql package on the machine image), so a missing one
    there is a broken machine, and a silent skip would hide that half the storage suite ran.
    """
    import pytest

    try:
        return PostgresServer.start()
    except PostgresUnavailable as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{exc} (CI=true: the PostgreSQL tests must run)", pytrace=False)
        pytest.skip(str(exc))
