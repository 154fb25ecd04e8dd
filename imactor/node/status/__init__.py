"""The status socket: one JSON snapshot of the node, for `imactor status` and health checks.

Protocol (Prosody's ``mod_admin_socket``, ``ejabberdctl``): a client connects to the unix socket
at ``[status] socket`` (mode 0600: only the server's user, and root, may connect), sends one line
``status``, and gets one JSON object and a newline; then the server closes. Any other line gets
``{"error": ...}``; a client that sends no line within `REQUEST_TIMEOUT` is closed.

Administrative commands use the same socket: the line is a JSON object ``{"command": NAME, ...}``
(at most `MAX_COMMAND` bytes) and the answer is the JSON object the command's handler returns.
The server that owns the socket registers the handlers (`commands`); this package only carries
them (the worker destroys a room with ``destroy-room``, say; see `imactor.worker.admin`).

The node supervisor (`imactor.node.node_status`) answers on the configured path with the same
document assembled from its workers' own sockets, plus ``supervisor`` (its pid, title, resident
memory, restarts and the membership it announces); its ``totals.rss_bytes`` counts it too.

This package knows nothing of XMPP. Its parts, each importing only `wire` and `document`:

- `wire`: the protocol's constants and framing, shared by both ends;
- `document`: the document's shape (`WorkerStatus`, what a worker reports, and the JSON entries);
- `server`: `StatusServer`, which answers on the socket (rates from samples of the counters);
- `client`: `request_status` / `request_command` (the CLI) and `fetch_status` / `fetch_command`
  (the node supervisor);
- `render`: `format_status`, the tree `imactor status` draws.

The names below are re-exported for the callers that import them from the package.
"""

from __future__ import annotations

from imactor.node.status.client import (
    ServerNotRunning,
    StatusUnavailable,
    fetch_command,
    fetch_status,
    request_command,
    request_status,
)
from imactor.node.status.document import (
    StatusSource,
    WorkerStatus,
    empty_worker_entry,
    plain,
    rss_bytes,
    sum_workers,
)
from imactor.node.status.render import format_status
from imactor.node.status.server import (
    MAX_CLIENTS,
    RATE_WINDOW,
    SAMPLE_INTERVAL,
    CommandHandler,
    RateMeter,
    StatusServer,
)
from imactor.node.status.wire import COMMAND_TIMEOUT, MAX_COMMAND, MAX_REQUEST, REQUEST, REQUEST_TIMEOUT

__all__ = [
    "COMMAND_TIMEOUT",
    "MAX_CLIENTS",
    "MAX_COMMAND",
    "MAX_REQUEST",
    "RATE_WINDOW",
    "REQUEST",
    "REQUEST_TIMEOUT",
    "SAMPLE_INTERVAL",
    "CommandHandler",
    "RateMeter",
    "ServerNotRunning",
    "StatusServer",
    "StatusSource",
    "StatusUnavailable",
    "WorkerStatus",
    "empty_worker_entry",
    "fetch_command",
    "fetch_status",
    "format_status",
    "plain",
    "request_command",
    "request_status",
    "rss_bytes",
    "sum_workers",
]
