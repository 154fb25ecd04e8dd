"""Private files: the data directory and the SQLite database are created readable by the server only.

The database holds every account's SCRAM verifiers and the whole message archive, so another
local user must never read it, not even for the instant between creating a file and changing its
mode: the mode is set at creation (``mkdir`` / ``open`` with ``O_EXCL``). SQLite gives the
``-wal`` and ``-shm`` files it creates later the mode of the database file itself, so creating
that one 0600 makes all three private.

`loose_modes` finds what an administrator has loosened since (or what an older version created
0755 / 0644); the node supervisor logs a warning for each at start and starts anyway.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

#: Modes given at creation.
PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
#: Bits that make a mode too loose: anything for others, or write for the group. So 0750 and
#: 0640 pass (a group of administrators or a backup agent may read), 0755 / 0644 / 0660 do not.
LOOSE_BITS = stat.S_IRWXO | stat.S_IWGRP
#: What SQLite keeps beside a database file: the write-ahead log and its shared-memory index.
SQLITE_COMPANIONS = ("-wal", "-shm")


def private_directory(path: Path) -> None:
    """Create `path` (and missing parents) with the last component mode 0700; an existing
    directory is left as it is (`loose_modes` reports it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir(mode=PRIVATE_DIR_MODE)
    except FileExistsError:
        if not path.is_dir():
            raise


def private_file(path: Path) -> bool:
    """Create `path` empty with mode 0600 unless it exists; True if this call created it.

    An empty file is a valid empty SQLite database, so SQLite opens it and keeps its mode.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, PRIVATE_FILE_MODE)
    except FileExistsError:
        return False
    os.close(fd)
    return True


def sqlite_files(database: Path) -> list[Path]:
    """The database file and the companion files SQLite keeps beside it."""
    return [database, *(Path(f"{database}{suffix}") for suffix in SQLITE_COMPANIONS)]


@dataclass(frozen=True, slots=True)
class LooseMode:
    """A file or directory with secrets or personal data that others than the server's user may read."""

    path: Path
    mode: int  #: permission bits, e.g. 0o644
    is_dir: bool
    holds: str  #: what it holds, for the warning ("the database: ...")

    def describe(self) -> str:
        wanted = "0700 (0750 at most)" if self.is_dir else "0600 (0640 at most)"
        kind = "directory" if self.is_dir else "file"
        return (
            f"{kind} {self.path} has mode {self.mode:04o}: other local users can read it "
            f"({self.holds}); chmod it to {wanted}"
        )


def loose_modes(paths: Mapping[Path, str]) -> list[LooseMode]:
    """Those of `paths` (each with what it holds) that exist with a mode looser than 0750
    (directories) or 0640 (files)."""
    found = []
    for path, holds in paths.items():
        try:
            info = path.stat()
        except FileNotFoundError:
            continue
        mode = stat.S_IMODE(info.st_mode)
        if mode & LOOSE_BITS:
            found.append(LooseMode(path, mode, stat.S_ISDIR(info.st_mode), holds))
    return found
