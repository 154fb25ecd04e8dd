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


class Ext4Image:
    """An ext4 file system in an image file, mounted through a loop device with
    ``errors=remount-ro``: `make_read_only` raises a file-system error, and the kernel makes it
    read-only at once, open files and all, as it does on a failing disk."""

    def __init__(self, mount_point: Path, device: str) -> None:
        self.mount_point = mount_point
        self.device = device  #: e.g. "loop3"

    def make_read_only(self) -> None:
        # ext4's own fault injection (/sys/fs/ext4/<dev>/trigger_fs_error): the error handling
        # of a real I/O error, here the switch to read-only ("emergency_ro").
        Path(f"/sys/fs/ext4/{self.device}/trigger_fs_error").write_text("1\n")
        command = ["findmnt", "-n", "-o", "OPTIONS", str(self.mount_point)]
        options = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        assert "ro" in options.split(",") or "emergency_ro" in options, options


@contextlib.contextmanager
def ext4_image(path: Path, size: str) -> Iterator[Ext4Image]:
    """Make an ext4 image of `size` beside `path` and mount it at `path` for the block."""
    image = path.with_name(f"{path.name}.img")
    path.mkdir(parents=True, exist_ok=True)
    command = ["mkfs.ext4", "-q", "-F", str(image), size]
    made = subprocess.run(command, capture_output=True, text=True, check=False)
    if made.returncode != 0:
        pytest.skip(f"cannot make an ext4 image: {made.stderr.strip()}")
    command = ["mount", "-o", "loop,errors=remount-ro", str(image), str(path)]
    mounted = subprocess.run(command, capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        image.unlink()
        pytest.skip(f"cannot mount an ext4 image on a loop device (root needed): {mounted.stderr.strip()}")
    try:
        source = subprocess.run(
            ["findmnt", "-n", "-o", "SOURCE", str(path)], capture_output=True, text=True, check=True
        ).stdout.strip()
        path.chmod(0o700)
        yield Ext4Image(path, Path(source).name)
    finally:
        # The loop device is released with the mount (mount -o loop sets autoclear).
        if subprocess.run(["umount", str(path)], capture_output=True, check=False).returncode != 0:
            subprocess.run(["umount", "--lazy", str(path)], capture_output=True, check=False)
        image.unlink(missing_ok=True)
