"""Start imactor for a benchmark: a temp data dir, port 0, accounts added in bulk by the CLI.

Two configurations: "default" is conf/imactor.toml's defaults (workers, modules: the archive
on) with only what a benchmark must set (domain, data dir, loopback ports the OS picks, no
STARTTLS requirement for `--transport tcp`, log level warning); "bench" (the former one) sets
`[server] workers` and, if given, `[server] modules` explicitly, for scaling runs.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.loadgen.archive_prefill import prefill_archive

START_TIMEOUT = 30.0

CONFIG = """
[server]
domain = "{domain}"
data_dir = "{data_dir}"
{server_settings}
[listen.c2s]
host = "{host}"
port = 0
starttls_required = {starttls_required}

[listen.c2s_tls]
host = "{host}"
port = 0

[listen.http]
host = "{host}"
port = 0

[listen.https]
host = "{host}"
port = 0

[log]
level = "warning"
{extra}"""


@dataclass
class Target:
    """Where the generator connects, and which process tree it measures (None: not measured)."""

    host: str
    port: int
    domain: str
    pid: int | None
    database_pid: int | None = None  # a database server of its own (PostgreSQL), measured too
    #: Several nodes (--compare-nodes): the c2s (host, port) of each, over which the generator
    #: spreads its clients (empty: host and port above), and the other nodes' process trees.
    endpoints: tuple[tuple[str, int], ...] = ()
    other_pids: tuple[int, ...] = ()
    #: The server's own counters (e.g. mesh frames between nodes), read around each step.
    counters: Callable[[], dict[str, int]] | None = None

    @property
    def roots(self) -> list[int]:
        """The roots of every process tree measured as the server's."""
        return [pid for pid in (self.pid, *self.other_pids, self.database_pid) if pid]


def add_users(config: Path, users: Sequence[tuple[str, str]]) -> None:
    listing = config.parent / "users.txt"
    listing.write_text("".join(f"{name}:{password}\n" for name, password in users))
    result = subprocess.run(
        [sys.executable, "-m", "imactor", "user", "add", "--file", str(listing), "--config", str(config)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(f"imactor user add failed: {result.stderr}")


def server_settings(config: str, workers: int, modules: Sequence[str] | None) -> str:
    """The `[server]` lines beyond domain and data dir: none for "default" (the server's own
    defaults), workers and modules for "bench"."""
    if config == "default":
        return ""
    if config != "bench":
        raise ValueError(f"unknown imactor configuration {config!r}: default or bench")
    lines = f"workers = {workers}\n"
    if modules is not None:
        lines += f"modules = {json.dumps(list(modules))}\n"
    return lines


def write_config(directory: Path, *, tls: bool = True, domain: str = "localhost", workers: int = 1,
                 modules: Sequence[str] | None = None, config_name: str = "bench",
                 host: str = "127.0.0.1", extra: str = "") -> Path:  # fmt: skip
    """`directory/imactor.toml` (see `running_imactor`), its data dir `directory/data`."""
    config = directory / "imactor.toml"
    settings = server_settings(config_name, workers, modules)
    config.write_text(CONFIG.format(domain=domain, data_dir=directory / "data", server_settings=settings,
                                    starttls_required=str(tls).lower(), host=host,
                                    extra=extra))  # fmt: skip
    return config


@contextmanager
def running_imactor(directory: Path, users: Sequence[tuple[str, str]], *, tls: bool = True,
                    domain: str = "localhost", workers: int = 1, modules: Sequence[str] | None = None,
                    config_name: str = "bench", host: str = "127.0.0.1",
                    extra: str = "", archive_prefill: int = 0) -> Iterator[Target]:  # fmt: skip
    """Run `imactor supervise` until the block ends; its stderr goes to `directory/server.log`.

    `config_name`: "default" or "bench" (the module's docstring); with "bench", `workers` and
    `modules` (the `[server] modules` list; None: the server's default list). `host`: the
    loopback address every listener binds; `extra`: more TOML tables (e.g. `[storage]` and
    `[cluster]` for a node of a cluster); `archive_prefill`: archived messages written into
    each account's archive before the start (`archive_prefill.py`; the default SQLite file only)."""
    config = write_config(directory, tls=tls, domain=domain, workers=workers, modules=modules,
                          config_name=config_name, host=host, extra=extra)  # fmt: skip
    if users:
        add_users(config, users)
    if archive_prefill:
        if "[storage]" in extra:
            raise ValueError("archive_prefill writes the default SQLite file: no [storage] url")
        prefill_archive(directory / "data" / "imactor.sqlite3", [name for name, _ in users], domain,
                        archive_prefill)  # fmt: skip
    log_path = directory / "server.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "imactor", "supervise", "--config", str(config)],
            stdout=subprocess.PIPE, stderr=log, env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )  # fmt: skip
        try:
            ports = _wait_for_ports(proc, log_path)
            yield Target(host, ports["c2s"], domain, proc.pid)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
            if proc.stdout is not None:
                proc.stdout.close()


def _wait_for_ports(proc: subprocess.Popen[bytes], log_path: Path) -> dict[str, int]:
    assert proc.stdout is not None
    deadline = time.monotonic() + START_TIMEOUT
    buffer = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            buffer += chunk
            for line in buffer.splitlines():
                if line.startswith(b"{"):
                    event = json.loads(line)
                    if event.get("event") == "listening":
                        return {k: v for k, v in event.items() if k != "event"}
        elif proc.poll() is not None:
            break
    raise RuntimeError(f"imactor did not start; log:\n{log_path.read_text(errors='replace')}")
