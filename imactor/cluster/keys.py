"""A node's CURVE key file: its secret key, Z85, on one line (``imactor cluster keygen`` writes it).

The public key is derived from the secret one, so the file holds only the secret; it is created
with mode 0600 and refused when others may read it (like ssh refuses an open private key).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from imactor.cluster.zmq_link import CurveKeys


class KeyFileError(Exception):
    """The key file is missing, unreadable, open to others, or not a key."""


def write_key_file(path: Path) -> CurveKeys:
    """Generate a key pair and write its secret to `path` (which must not exist yet).

    Raises:
        KeyFileError: `path` exists, or cannot be written.
    """
    keys = CurveKeys.generate()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyFileError(
            f"{path}: exists already; a node keeps its key (remove it to make a new one)"
        ) from None
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot write: {exc.strerror or exc}") from None
    with os.fdopen(fd, "w") as file:
        file.write(f"# imactor cluster node key (CURVE secret key, Z85). Public key: {keys.public}\n")
        file.write(keys.secret + "\n")
    return keys


def read_key_file(path: Path) -> CurveKeys:
    """The key pair of the secret in `path`.

    Raises:
        KeyFileError: missing, unreadable, readable by others, or not a CURVE secret key.
    """
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(
            f"{path}: cannot read the node key: {getattr(exc, 'strerror', None) or exc}"
        ) from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            f"{path}: the node key is readable by others (mode {stat.S_IMODE(mode):o}); chmod 600 it"
        )
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if len(lines) != 1:
        raise KeyFileError(f"{path}: expected one line with the node's secret key, found {len(lines)}")
    try:
        return CurveKeys.from_secret(lines[0])
    except ValueError as exc:
        raise KeyFileError(f"{path}: {exc}") from None
