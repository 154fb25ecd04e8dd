"""A real full disk for the server's data directory: a small tmpfs, filled and emptied on demand.

Root only (CAP_SYS_ADMIN, as here and in CI); elsewhere the test that asks is skipped. The mount
is undone when the block ends, even when the test fails; if a process still holds a file in it
(a server that did not stop), the unmount is lazy: the mount leaves the tree at once and the
kernel frees it when the last file closes.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

#: A filler's writes: the disk is full when one fails with ENOSPC.
_CHUNK = b"\0" * 65536


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str) -> Iterator[Path]:
    """Mount a tmpfs of `size` (e.g. "4m") at `path`, mode 0700, for the block's duration."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "imactor-test", str(path)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (root needed): {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True, check=False).returncode != 0:
            subprocess.run(["umount", "--lazy", str(path)], capture_output=True, check=False)


def fill(directory: Path) -> Path:
    """Write a filler file in `directory` until the filesystem is full; returns its path."""
    filler = directory / "filler"
    with filler.open("wb", buffering=0) as f:
        try:
            while True:
                f.write(_CHUNK)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
    # What is left short of a whole chunk, a page at a time: not one page stays free.
    with filler.open("ab", buffering=0) as f, contextlib.suppress(OSError):
        while True:
            f.write(_CHUNK[:4096])
    assert free_space(directory) == 0
    return filler


def free_space(directory: Path) -> int:
    """Bytes still free in `directory`'s filesystem."""
    stats = os.statvfs(directory)
    return stats.f_bfree * stats.f_frsize
