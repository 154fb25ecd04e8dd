"""Start the real server with its supervisor command on OS-chosen ports, and stop it."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from imactor.config import Config, load_config
from imactor.node.status import request_status
from imactor.storage import Storage
from tests.support.timeouts import START_TIMEOUT

BASE_CONFIG = """
[server]
domain = "{domain}"
data_dir = "{data_dir}"
workers = {workers}
{server_options}
[listen.c2s]
host = "{c2s_host}"
port = 0
{c2s_options}
[listen.c2s_tls]
host = "127.0.0.1"
port = 0

[listen.http]
host = "127.0.0.1"
port = 0

[listen.https]
host = "127.0.0.1"
port = 0

[registration]
enabled = {registration}

[log]
level = "{log_level}"
"""


@dataclass
class ServerProcess:
    proc: subprocess.Popen[bytes]
    config_path: Path
    data_dir: Path
    domain: str
    ports: dict[str, int]

    @property
    def c2s_port(self) -> int:
        return self.ports["c2s"]

    @property
    def c2s_tls_port(self) -> int:
        return self.ports["c2s_tls"]

    @property
    def http_port(self) -> int:
        return self.ports["http"]

    @property
    def https_port(self) -> int:
        return self.ports["https"]

    @property
    def status_socket(self) -> Path:
        return self.data_dir / "imactor.sock"

    def status(self, timeout: float = 10.0) -> dict[str, Any]:
        """The node's status document (blocking: call it through `trio.to_thread` in async tests)."""
        return request_status(self.status_socket, timeout)

    def stop(self, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


def imactor_cli(
    config: Path, *args: str, stdin: str | None = None, timeout: float = 120.0
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "imactor", *args, "--config", str(config)],
        input=stdin, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


def write_config(directory: Path, *, domain: str = "localhost", registration: bool = False,
                 extra: str = "", log_level: str = "warning", c2s_options: str = "",
                 workers: int = 1, server_options: str = "",
                 c2s_host: str = "127.0.0.1") -> Path:  # fmt: skip
    """`extra` is appended (new tables only); `c2s_options` are lines inside [listen.c2s],
    `server_options` inside [server] (e.g. ``modules = [...]``)."""
    data_dir = directory / "data"
    config = directory / "imactor.toml"
    text = BASE_CONFIG.format(domain=domain, data_dir=data_dir, registration=str(registration).lower(),
                              log_level=log_level, c2s_options=c2s_options, workers=workers,
                              server_options=server_options, c2s_host=c2s_host)  # fmt: skip
    config.write_text(text + extra)
    return config


def add_users(config: Path, users: Sequence[tuple[str, str]]) -> None:
    """Create accounts as `imactor user add --file` does (`Accounts.create_many` on the config's
    database, the server running or not), but in this process: a CLI process costs a second and
    a half of CPU to import the storage layer, once per call, and the suite calls this a hundred
    times. The command itself is tested in tests/unit/test_cli_user.py.

    Runs `trio.run` in a thread of its own, so that sync fixtures and async tests (already inside
    a Trio run) can both call it; the caller blocks meanwhile, as it did on the subprocess."""
    if not users:
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(trio.run, _create_accounts, load_config(config), list(users)).result(START_TIMEOUT)


async def _create_accounts(config: Config, users: list[tuple[str, str]]) -> None:
    async with await Storage.open(config.storage_url, partitions=config.storage.partitions) as storage:
        await storage.accounts.create_many(users, iterations=config.auth.scram_iterations)


@contextmanager
def running_server(directory: Path, *, users: Sequence[tuple[str, str]] = (), domain: str = "localhost",
                   registration: bool = False, extra: str = "", c2s_options: str = "",
                   server_options: str = "", workers: int = 1, log_level: str = "warning",
                   c2s_host: str = "127.0.0.1",
                   prefix: Sequence[str] = ()) -> Iterator[ServerProcess]:  # fmt: skip
    """Run `imactor supervise` (the node supervisor and its `workers` worker processes) until the
    block ends; stderr, the workers' too, goes to `directory/server.log`. `prefix`: a command
    that runs it (``ip netns exec NS``: a node in a network namespace of the test's)."""
    config = write_config(directory, domain=domain, registration=registration, extra=extra,
                          c2s_options=c2s_options, workers=workers, log_level=log_level,
                          server_options=server_options, c2s_host=c2s_host)  # fmt: skip
    add_users(config, users)
    log = (directory / "server.log").open("wb")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [*prefix, sys.executable, "-m", "imactor", "supervise", "--config", str(config)],
        stdout=subprocess.PIPE, stderr=log, env=env,
    )  # fmt: skip
    server = None
    try:
        ports = _wait_for_ports(proc, directory / "server.log")
        server = ServerProcess(proc, config, directory / "data", domain, ports)
        yield server
    finally:
        if server is not None:
            server.stop()
        elif proc.poll() is None:
            proc.kill()
            proc.wait(5)
        log.close()


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
    raise RuntimeError(f"server did not start; log:\n{log_path.read_text(errors='replace')}")
