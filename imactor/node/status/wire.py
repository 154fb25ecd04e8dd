"""The status socket's protocol, shared by its server and its clients (see the package doc).

One request line (`REQUEST`, or a JSON command of at most `MAX_COMMAND` bytes), one JSON object
and a newline back (`encode`); and `addressable`, the unix socket path made short enough.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REQUEST = b"status"
#: Seconds a client has to send its request line and read the answer.
REQUEST_TIMEOUT = 5.0
#: Longest request line, in bytes.
MAX_REQUEST = 64
#: Longest command line, in bytes.
MAX_COMMAND = 4096
#: Seconds a command may take (a room's actor answering, say) before the client is told so.
COMMAND_TIMEOUT = 10.0

#: Longest path that fits in sockaddr_un.sun_path (108 bytes on Linux, with its NUL).
_SUN_PATH_MAX = 107


def encode(document: Mapping[str, Any]) -> bytes:
    return json.dumps(document, allow_nan=False, separators=(",", ":")).encode() + b"\n"


@contextmanager
def addressable(path: Path) -> Iterator[str]:
    """`path` in a form that fits sockaddr_un: itself, or through its directory's descriptor.

    A data directory can lie deeper than the 107 bytes a unix socket address holds; on Linux the
    socket is then reached as ``/proc/self/fd/<dir fd>/<name>``.
    """
    if len(os.fsencode(path)) <= _SUN_PATH_MAX or not os.path.isdir("/proc/self/fd"):
        yield str(path)
        return
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{directory}/{path.name}"
    finally:
        os.close(directory)
