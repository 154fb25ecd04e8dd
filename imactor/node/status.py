"""The status socket: one JSON snapshot of the node, for `imactor status` and health checks.

Protocol (Prosody's ``mod_admin_socket``, ``ejabberdctl``): a client connects to the unix socket
at ``[status] socket`` (mode 0600: only the server's user, and root, may connect), sends one line
``status``, and gets one JSON object and a newline; then the server closes. Any other line gets
``{"error": ...}``; a client that sends no line within `REQUEST_TIMEOUT` is closed.

Administrative commands use the same socket: the line is a JSON object ``{"command": NAME, ...}``
(at most `MAX_COMMAND` bytes) and the answer is the JSON object the command's handler returns.
The server that owns the socket registers the handlers (`commands`); this module only carries
them (the worker destroys a room with ``destroy-room``, say; see `imactor.worker.admin`).

The document::

    node     domain, version, pid, started_at (Unix time), uptime (seconds)
    workers  one object per worker: index, pid, state, started_at, uptime, restarts, rss_bytes,
             sessions {count, by_state}, users, rooms, mailboxes {max, total} (queued messages),
             stanzas {in_total, out_total, in_per_second, out_per_second}, supervisors [...],
             and the worker's named records (router, registry): each a `statistics()` record
    totals   sums over the workers (the largest mailbox for mailboxes.max)

The node supervisor (`imactor.node.node_status`) answers on the configured path with the same
document assembled from its workers' own sockets, plus ``supervisor`` (its pid, title, resident
memory, restarts and the membership it announces); its ``totals.rss_bytes`` counts it too.

This module knows nothing of XMPP. Each worker is a `StatusSource` that reports a `WorkerStatus`;
the server adds what the OS knows (resident memory) and stanza rates, computed from samples of
the workers' counters that it takes every `SAMPLE_INTERVAL` seconds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import errno
import json
import logging
import math
import os
import resource
import socket
import stat
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import trio

import imactor

log = logging.getLogger("imactor.status")

REQUEST = b"status"
#: Seconds a client has to send its request line and read the answer.
REQUEST_TIMEOUT = 5.0
#: Longest request line, in bytes.
MAX_REQUEST = 64
#: Longest command line, in bytes.
MAX_COMMAND = 4096
#: Seconds a command may take (a room's actor answering, say) before the client is told so.
COMMAND_TIMEOUT = 10.0

#: Answers one administrative command: its JSON arguments → the JSON answer.
CommandHandler = Callable[[Mapping[str, Any]], Awaitable[Mapping[str, Any]]]
#: Connections answered at once; more are closed at once (the socket is local and 0600, so this
#: only bounds a runaway monitoring script).
MAX_CLIENTS = 16
#: Seconds between two samples of the stanza counters.
SAMPLE_INTERVAL = 1.0
#: Samples kept: rates are averages over the last RATE_WINDOW * SAMPLE_INTERVAL seconds.
RATE_WINDOW = 10
#: Longest path that fits in sockaddr_un.sun_path (108 bytes on Linux, with its NUL).
_SUN_PATH_MAX = 107


@dataclass(frozen=True, slots=True)
class WorkerStatus:
    """What one worker reports about itself.

    Attributes:
        index: The worker's number, from 0.
        pid: Its process id.
        started_at: When it started (Unix time).
        restarts: How many times its supervisor restarted it.
        state: ``running``, ``stopping``, ...
        sessions_by_state: Open client sessions, counted by state.
        users: Live user actors.
        rooms: Live room actors.
        mailbox_depth_max: Messages queued in the fullest session mailbox.
        mailbox_depth_total: Messages queued in all session mailboxes.
        stanzas_in_total: Stanzas read from clients since the worker started.
        stanzas_out_total: Stanzas written to clients since the worker started.
        supervisors: The `statistics()` records of the worker's supervisors.
        records: Other `statistics()` records, by name (``router``, ``registry``).
    """

    index: int
    pid: int
    started_at: float
    restarts: int
    state: str
    sessions_by_state: Mapping[str, int]
    users: int
    rooms: int
    mailbox_depth_max: int
    mailbox_depth_total: int
    stanzas_in_total: int
    stanzas_out_total: int
    supervisors: Sequence[object] = ()
    records: Mapping[str, object] = field(default_factory=dict)


class StatusSource(Protocol):
    """A worker, as the status server sees it."""

    def stanza_totals(self) -> tuple[int, int]:
        """Stanzas in and out since the worker started; sampled every `SAMPLE_INTERVAL` seconds."""
        ...

    def worker_status(self) -> WorkerStatus:
        """The worker's snapshot; taken once per status request."""
        ...


class StatusUnavailable(Exception):
    """`request_status` got no document: no server, or a broken answer. The message says which."""


class ServerNotRunning(StatusUnavailable):
    """Nothing listens on the socket: the server is not running (or uses another path)."""


class RateMeter:
    """Per-second rates of two counters over a sliding window of samples. The caller's clock."""

    def __init__(self, window: int = RATE_WINDOW) -> None:
        self._samples: deque[tuple[float, int, int]] = deque(maxlen=window + 1)

    def add(self, now: float, stanzas_in: int, stanzas_out: int) -> None:
        if self._samples:
            _, last_in, last_out = self._samples[-1]
            if stanzas_in < last_in or stanzas_out < last_out:
                self._samples.clear()  # the counters restarted (a restarted worker)
        self._samples.append((now, stanzas_in, stanzas_out))

    def rates(self) -> tuple[float, float]:
        """(in, out) per second between the oldest and newest samples; zeros before two samples."""
        if len(self._samples) < 2:
            return 0.0, 0.0
        (t0, in0, out0), (t1, in1, out1) = self._samples[0], self._samples[-1]
        elapsed = t1 - t0
        if elapsed <= 0:
            return 0.0, 0.0
        return (in1 - in0) / elapsed, (out1 - out0) / elapsed


class StatusServer:
    """Answers `status` requests on a unix socket with a snapshot of `sources` (see the module doc).

    ``bind()`` may be called before ``run()`` so that a bad path fails the start of the server
    rather than of this child; ``run()`` binds if that was not done. When ``run()`` ends, for
    whatever reason, the socket is closed and its file removed.

    Error handling: a client that sends a wrong line gets ``{"error": ...}``; one that is silent,
    slow or gone is dropped; a snapshot that raises is logged and answered with an error. None of
    these ends the server.
    """

    def __init__(
        self,
        path: Path,
        sources: Sequence[StatusSource],
        *,
        domain: str,
        started_at: float | None = None,
        request_timeout: float = REQUEST_TIMEOUT,
        document: Callable[[], Awaitable[Mapping[str, Any]]] | None = None,
        commands: Mapping[str, CommandHandler] | None = None,
    ) -> None:
        self.path = path
        self.domain = domain
        self.started_at = time.time() if started_at is None else started_at
        self.request_timeout = request_timeout
        # The node supervisor answers with a document it assembles from its workers' sockets;
        # a worker answers with `snapshot` of its own sources.
        self._document = document
        self._commands = dict(commands or {})
        self._sources = list(sources)
        self._meters = [RateMeter() for _ in self._sources]
        self._listener: trio.SocketListener | None = None
        self._identity: tuple[int, int] | None = None  #: (inode, ctime) of our socket file
        self._clients = 0

    async def bind(self) -> None:
        """Create the socket file, mode 0600, and listen on it.

        Raises:
            OSError: The path is unusable, is not a socket, or another server answers on it.
        """
        if self._listener is not None:
            return
        path = self.path
        os.makedirs(path.parent, exist_ok=True)
        await _remove_stale(path)
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with _addressable(path) as address:
                await sock.bind(address)
            # Before listen(): until then every connect is refused, whatever the file's mode.
            os.chmod(path, 0o600)
            self._identity = _identity(path)
            sock.listen(MAX_CLIENTS)
        except BaseException:
            sock.close()
            raise
        self._listener = trio.SocketListener(sock)

    def close(self) -> None:
        """Stop listening and remove the socket file (unless another server has replaced it)."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.socket.close()
        try:
            if self._identity is not None and _identity(self.path) == self._identity:
                os.unlink(self.path)
        except OSError:
            pass
        self._identity = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            await self.bind()
            assert self._listener is not None
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._sample_forever)
                await nursery.start(trio.serve_listeners, self._answer, [self._listener])
                log.info("status socket at %s", self.path)
                task_status.started()
        finally:
            self.close()

    def snapshot(self) -> dict[str, Any]:
        """The status document (see the module doc), as plain JSON-ready values."""
        now = time.time()
        workers = [
            _worker_entry(source.worker_status(), meter.rates(), now)
            for source, meter in zip(self._sources, self._meters, strict=True)
        ]
        node = {
            "domain": self.domain,
            "version": imactor.__version__,
            "pid": os.getpid(),
            "started_at": self.started_at,
            "uptime": round(max(0.0, now - self.started_at), 3),
        }
        return {"node": node, "workers": workers, "totals": sum_workers(workers)}

    async def _sample_forever(self) -> None:
        while True:
            now = trio.current_time()
            for source, meter in zip(self._sources, self._meters, strict=True):
                meter.add(now, *source.stanza_totals())
            await trio.sleep(SAMPLE_INTERVAL)

    async def _answer(self, stream: trio.SocketStream) -> None:
        async with stream:
            if self._clients >= MAX_CLIENTS:
                return
            self._clients += 1
            try:
                with trio.move_on_after(self.request_timeout):
                    line = await _read_line(stream)
                    if line is not None:
                        await stream.send_all(await self._reply(line))
            except trio.BrokenResourceError:
                pass  # the client went away
            finally:
                self._clients -= 1

    async def _reply(self, line: bytes) -> bytes:
        request = line.strip()
        if request.startswith(b"{"):
            return await self._command(request)
        if request != REQUEST:
            shown = request[:MAX_REQUEST].decode("utf-8", "replace")
            return _encode({"error": f"unknown request {shown!r}: send 'status'"})
        try:
            document = self.snapshot() if self._document is None else await self._document()
        except Exception:  # a protocol boundary: a bug here must not take the worker down
            log.exception("status snapshot failed")
            return _encode({"error": "internal error (see the server log)"})
        return _encode(document)


    async def _command(self, request: bytes) -> bytes:
        try:
            arguments = json.loads(request)
        except ValueError:
            return _encode({"error": "a command is one JSON object on one line"})
        name = arguments.get("command") if isinstance(arguments, dict) else None
        handler = self._commands.get(name) if isinstance(name, str) else None
        if handler is None:
            return _encode({"error": f"unknown command {name!r}"})
        try:
            with trio.fail_after(COMMAND_TIMEOUT):
                return _encode(await handler(arguments))
        except trio.TooSlowError:
            return _encode({"error": f"{name}: no answer within {COMMAND_TIMEOUT:g} s"})
        except Exception:  # a protocol boundary, as for the snapshot
            log.exception("command %s failed", name)
            return _encode({"error": f"{name}: internal error (see the server log)"})


def request_status(path: Path, timeout: float = 10.0) -> dict[str, Any]:
    """Ask the server listening at `path` for its status document (blocking; for the CLI).

    Raises:
        StatusUnavailable: Nothing answers at `path`, or the answer is not a status document.
    """
    return _exchange(path, REQUEST, timeout)


def _exchange(path: Path, line: bytes, timeout: float) -> dict[str, Any]:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            try:
                with _addressable(path) as address:
                    sock.connect(address)
            except OSError as exc:
                reason = exc.strerror or str(exc) or type(exc).__name__
                raise ServerNotRunning(f"cannot reach {path}: {reason} — is the server running?") from None
            sock.sendall(line + b"\n")
            answer = b"".join(iter(lambda: sock.recv(65536), b""))
    except TimeoutError:
        raise StatusUnavailable(f"{path}: no answer within {timeout:g} s") from None
    except OSError as exc:
        raise StatusUnavailable(f"{path}: {exc.strerror or exc}") from None
    return _parse_answer(path, answer)


def request_command(path: Path, command: Mapping[str, Any], timeout: float = 15.0) -> dict[str, Any]:
    """Send one administrative command (see the module doc) and return the answer (blocking).

    Raises:
        StatusUnavailable: Nothing answers at `path`, or the answer is not a JSON object.
    """
    line = json.dumps(command, separators=(",", ":")).encode()
    if len(line) > MAX_COMMAND:
        raise ValueError("command too long")
    return _exchange(path, line, timeout)


async def fetch_command(
    path: Path, command: Mapping[str, Any], timeout: float = COMMAND_TIMEOUT + 2
) -> dict[str, Any]:
    """`request_command` for a Trio program (the node supervisor forwarding to a worker)."""
    return await trio.to_thread.run_sync(request_command, path, command, timeout)


async def fetch_status(path: Path, timeout: float = 2.0) -> dict[str, Any]:
    """`request_status` for a Trio program (the node supervisor asking its workers).

    Raises:
        StatusUnavailable: Nothing answers at `path` within `timeout`, or the answer is not a
            status document.
    """
    with trio.move_on_after(timeout):
        try:
            with _addressable(path) as address:
                stream = await trio.open_unix_socket(address)
        except OSError as exc:
            raise StatusUnavailable(f"cannot reach {path}: {exc.strerror or exc}") from None
        async with stream:
            try:
                await stream.send_all(REQUEST + b"\n")
                chunks = []
                while chunk := await stream.receive_some(65536):
                    chunks.append(chunk)
            except (trio.BrokenResourceError, OSError) as exc:
                raise StatusUnavailable(f"{path}: {exc}") from None
        return _parse_answer(path, b"".join(chunks))
    raise StatusUnavailable(f"{path}: no answer within {timeout:g} s")


def _parse_answer(path: Path, answer: bytes) -> dict[str, Any]:
    try:
        document = json.loads(answer)
    except ValueError:
        raise StatusUnavailable(f"{path}: the answer is not JSON ({len(answer)} bytes)") from None
    if not isinstance(document, dict):
        raise StatusUnavailable(f"{path}: the answer is not a JSON object")
    if "error" in document:
        raise StatusUnavailable(f"{path}: the server answered: {document['error']}")
    return document


def format_status(document: Mapping[str, Any]) -> str:
    """The status document as a short readable tree: the node, its supervisor and workers, then
    the totals. A worker's own document (no ``supervisor`` entry) hangs its workers off the node."""
    node, totals = document["node"], document["totals"]
    lines = [
        f"node {node['domain']}  imactor {node['version']}  pid {node['pid']}  up {_duration(node['uptime'])}"
    ]
    indent = ""
    supervisor = document.get("supervisor")
    if supervisor is not None:
        membership = supervisor.get("membership", {})
        live = ", ".join(map(str, membership.get("live_workers", []))) or "none"
        lines.append(
            f"└── {supervisor['title']}  pid {supervisor['pid']}  rss {_size(supervisor['rss_bytes'])}"
            f"  restarts {supervisor['restarts_total']}"
            f"  membership epoch {membership.get('epoch', 0)}: live {live}"
        )
        indent = "    "
    workers = document["workers"]
    for number, worker in enumerate(workers, 1):
        branch = "└──" if number == len(workers) else "├──"
        pid = "-" if worker["pid"] is None else worker["pid"]
        lines.append(
            f"{indent}{branch} worker {worker['index']}  {worker['state']}  pid {pid}"
            f"  up {_duration(worker['uptime'])}  restarts {worker['restarts']}"
            f"  rss {_size(worker['rss_bytes'])}  sessions {worker['sessions']['count']}"
            f"  users {worker['users']}  rooms {worker['rooms']}"
        )
    stanzas, mailboxes = totals["stanzas"], totals["mailboxes"]
    by_state: dict[str, int] = {}
    for worker in workers:
        for state, count in worker["sessions"]["by_state"].items():
            by_state[state] = by_state.get(state, 0) + count
    states = ", ".join(f"{state} {count}" for state, count in sorted(by_state.items()))
    routed = sum(worker.get("router", {}).get("routed_total", 0) for worker in workers)
    bounced = sum(worker.get("router", {}).get("bounced_total", 0) for worker in workers)
    lines += [
        f"totals: {totals['workers']} worker(s)  sessions {totals['sessions']}"
        + (f" ({states})" if states else "")
        + f"  users {totals['users']}  rooms {totals['rooms']}  rss {_size(totals['rss_bytes'])}",
        f"  stanzas in {stanzas['in_total']} ({stanzas['in_per_second']:.1f}/s)"
        f"  out {stanzas['out_total']} ({stanzas['out_per_second']:.1f}/s)"
        f"  routed {routed}  bounced {bounced}",
        f"  mailboxes: largest {mailboxes['max']}, queued {mailboxes['total']}",
    ]
    return "\n".join(lines)


def rss_bytes(pid: int) -> int:
    """Resident memory of process `pid` (Linux ``/proc``); elsewhere this process's peak, or 0."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        pass
    if pid != os.getpid():
        return 0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB elsewhere


def plain(value: object) -> Any:
    """A `statistics()` record (dataclasses, enums, mappings, sequences) as JSON-ready values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return plain(value.value)
    if isinstance(value, Mapping):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [plain(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None  # strict JSON has no infinity (an unlimited period, say)
    return value


def _worker_entry(status: WorkerStatus, rates: tuple[float, float], now: float) -> dict[str, Any]:
    in_rate, out_rate = rates
    entry: dict[str, Any] = {
        "index": status.index,
        "pid": status.pid,
        "state": status.state,
        "started_at": status.started_at,
        "uptime": round(max(0.0, now - status.started_at), 3),
        "restarts": status.restarts,
        "rss_bytes": rss_bytes(status.pid),
        "sessions": {
            "count": sum(status.sessions_by_state.values()),
            "by_state": dict(status.sessions_by_state),
        },
        "users": status.users,
        "rooms": status.rooms,
        "mailboxes": {"max": status.mailbox_depth_max, "total": status.mailbox_depth_total},
        "stanzas": {
            "in_total": status.stanzas_in_total,
            "out_total": status.stanzas_out_total,
            "in_per_second": round(in_rate, 3),
            "out_per_second": round(out_rate, 3),
        },
        "supervisors": [plain(record) for record in status.supervisors],
    }
    for name, record in status.records.items():
        entry.setdefault(name, plain(record))  # a record never hides a field above
    return entry


def empty_worker_entry(index: int, pid: int | None, state: str) -> dict[str, Any]:
    """The entry of a worker that gave no document (down, starting or unresponsive): what the OS
    knows of its process (resident memory), zeros for the rest, in the shape of a full entry."""
    return {
        "index": index,
        "pid": pid,
        "state": state,
        "started_at": None,
        "uptime": 0.0,
        "restarts": 0,
        "rss_bytes": 0 if pid is None else rss_bytes(pid),
        "sessions": {"count": 0, "by_state": {}},
        "users": 0,
        "rooms": 0,
        "mailboxes": {"max": 0, "total": 0},
        "stanzas": {"in_total": 0, "out_total": 0, "in_per_second": 0.0, "out_per_second": 0.0},
        "supervisors": [],
    }


def sum_workers(workers: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The ``totals`` of a document over its worker entries."""
    stanza_keys = ("in_total", "out_total", "in_per_second", "out_per_second")
    return {
        "workers": len(workers),
        "sessions": sum(w["sessions"]["count"] for w in workers),
        "users": sum(w["users"] for w in workers),
        "rooms": sum(w["rooms"] for w in workers),
        "rss_bytes": sum(w["rss_bytes"] for w in workers),
        "mailboxes": {
            "max": max((w["mailboxes"]["max"] for w in workers), default=0),
            "total": sum(w["mailboxes"]["total"] for w in workers),
        },
        "stanzas": {key: round(sum(w["stanzas"][key] for w in workers), 3) for key in stanza_keys},
    }


def _duration(seconds: float) -> str:
    """``3d 4h``, ``2h 5m``, ``5m 12s``, ``42s``."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s" if minutes else f"{secs}s"


def _size(count: int) -> str:
    """Bytes in binary units: ``812 B``, ``48.1 MiB``."""
    if count < 1024:
        return f"{count} B"
    value = count / 1024
    for unit in ("KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            break
        value /= 1024
    return f"{value:.1f} {unit}"


def _encode(document: Mapping[str, Any]) -> bytes:
    return json.dumps(document, allow_nan=False, separators=(",", ":")).encode() + b"\n"


async def _read_line(stream: trio.SocketStream) -> bytes | None:
    """The request line; a line cut by EOF counts. None if the client sent nothing."""
    data = b""
    while b"\n" not in data and len(data) <= MAX_COMMAND:
        chunk = await stream.receive_some(MAX_COMMAND + 1)
        if not chunk:
            break
        data += chunk
    line = data.split(b"\n", 1)[0]
    if not data.strip():
        return None
    return line


async def _remove_stale(path: Path) -> None:
    """Remove a socket file no server answers on (left by a crash).

    Raises:
        OSError: `path` is not a socket, or a server answers on it.
    """
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise OSError(errno.EEXIST, "exists and is not a socket", str(path))
    # A live server with a full backlog makes connect() wait: give up and count it as live.
    with trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe, trio.move_on_after(REQUEST_TIMEOUT):
        try:
            with _addressable(path) as address:
                await probe.connect(address)
        except ConnectionRefusedError:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            return
    raise OSError(errno.EADDRINUSE, "another server answers on this status socket", str(path))


def _identity(path: Path) -> tuple[int, int]:
    info = os.stat(path)
    return info.st_ino, info.st_ctime_ns


@contextmanager
def _addressable(path: Path) -> Iterator[str]:
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
