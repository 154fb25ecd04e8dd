"""What the Prosody and ejabberd profiles share: free loopback ports, a self-signed certificate,
waiting for a port, and stopping a process tree that we started."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import time
from pathlib import Path

from bench.loadgen import procstat
from imactor.tls import generate_self_signed

START_TIMEOUT = 60.0


class PeerError(RuntimeError):
    """A peer server could not be started or provisioned (the message carries its log)."""


def require(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        raise PeerError(f"{binary} not found: run `sh scripts/install-peers.sh` (as root) first")
    return path


def free_ports(count: int) -> list[int]:
    """Ports the OS hands out on loopback now (closed again: the server binds them next; the
    window in which another process could take one is a few milliseconds)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def write_certificate(directory: Path, domain: str) -> tuple[Path, Path]:
    """The same kind of certificate imactor generates for itself (EC P-256, self-signed, the
    domain and its subdomains), so the TLS handshakes cost the servers alike."""
    cert_pem, key_pem = generate_self_signed(domain)
    cert, key = directory / "cert.pem", directory / "key.pem"
    cert.write_bytes(cert_pem)
    key.write_bytes(key_pem)
    key.chmod(0o600)
    return cert, key


def wal_database(path: Path, schema: str = "") -> None:
    """Create the SQLite file a peer will use, in WAL mode (the mode is stored in the file, so the
    server opens it so), with `schema` if given. imactor's SQLite runs in WAL with
    synchronous=NORMAL; the peers get WAL too (their synchronous stays their default, FULL: one
    fsync per commit, about 0.2 ms on the development machine)."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA journal_mode = WAL")
        if schema:
            db.executescript(schema)
        db.commit()


def wait_for_port(port: int, proc: subprocess.Popen[bytes] | None, log: Path,
                  timeout: float = START_TIMEOUT) -> None:  # fmt: skip
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise PeerError(f"server exited with {proc.returncode}; log:\n{tail(log)}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.2)
    raise PeerError(f"server did not listen on {port} within {timeout:.0f} s; log:\n{tail(log)}")


def tail(path: Path, chars: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


def stop_tree(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """SIGTERM to `proc` and every descendant we find (by pid: each was started by this run),
    then SIGKILL to those still alive after `timeout`."""
    pids = procstat.process_tree(proc.pid) if proc.poll() is None else []
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids if pid != proc.pid):
        proc.poll()
        time.sleep(0.1)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(max(deadline - time.monotonic(), 0.1))
    for pid in pids:
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


def _alive(pid: int) -> bool:
    """Alive and not a zombie (a zombie child of ours is reaped by `proc.wait`)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
