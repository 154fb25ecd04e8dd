"""The node's private run directory: where its processes find each other on this machine.

The node supervisor creates it at start and removes it at exit; each worker gets its path on its
command line (``--run-dir``). It holds unix sockets only:

    <run_dir>/master.sock, w<N>.sock    ZeroMQ endpoints (`imactor.cluster.endpoints`)
    <run_dir>/w<N>.status               worker N's own status socket, read by the supervisor

Mode 0700, so only the server's user reaches the sockets inside. The path is short (``/tmp``
rather than a deep ``$TMPDIR``) because a unix socket path holds at most 107 bytes, and fresh for
every start, so a killed node's leftovers never meet a new one.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

#: Preferred parent: short, and on every Unix.
_PARENT = Path("/tmp")


def create_run_dir() -> Path:
    """A new, empty directory, mode 0700 (`tempfile.mkdtemp` creates it so, atomically)."""
    parent = _PARENT if _PARENT.is_dir() else None
    return Path(tempfile.mkdtemp(prefix="imactor-", dir=parent))


def remove_run_dir(run_dir: Path) -> None:
    """Remove the directory and whatever sockets are left in it (best effort: at exit)."""
    shutil.rmtree(run_dir, ignore_errors=True)


def worker_status_path(run_dir: Path, index: int) -> Path:
    """Where worker `index` serves its own status socket."""
    return run_dir / f"w{index}.status"
