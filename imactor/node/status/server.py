"""The status socket's server: answers `status` with the document and runs the registered commands.

A worker serves its own sources (`StatusSource`: the document of `imactor.node.status.document`,
with stanza rates from samples of the counters taken every `SAMPLE_INTERVAL` seconds); the node
supervisor serves a document it assembles from its workers' sockets (`document=`). The handlers
of administrative commands are registered by the process that owns the socket (`commands`);
this module only carries them.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import stat
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import trio

from imactor.node.status.document import StatusSource, node_entry, sum_workers, worker_entry
from imactor.node.status.wire import (
    COMMAND_TIMEOUT,
    MAX_COMMAND,
    MAX_REQUEST,
    REQUEST,
    REQUEST_TIMEOUT,
    addressable,
    encode,
)

log = logging.getLogger("imactor.status")

#: Answers one administrative command: its JSON arguments → the JSON answer.
CommandHandler = Callable[[Mapping[str, Any]], Awaitable[Mapping[str, Any]]]
#: Connections answered at once; more are closed at once (the socket is local and 0600, so this
#: only bounds a runaway monitoring script).
MAX_CLIENTS = 16
#: Seconds between two samples of the stanza counters.
SAMPLE_INTERVAL = 1.0
#: Samples kept: rates are averages over the last RATE_WINDOW * SAMPLE_INTERVAL seconds.
RATE_WINDOW = 10


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
            with addressable(path) as address:
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
            worker_entry(source.worker_status(), meter.rates(), now)
            for source, meter in zip(self._sources, self._meters, strict=True)
        ]
        return {"node": node_entry(self.domain, self.started_at, now), "workers": workers,
                "totals": sum_workers(workers)}  # fmt: skip

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
            return encode({"error": f"unknown request {shown!r}: send 'status'"})
        try:
            document = self.snapshot() if self._document is None else await self._document()
        except Exception:  # a protocol boundary: a bug here must not take the worker down
            log.exception("status snapshot failed")
            return encode({"error": "internal error (see the server log)"})
        return encode(document)


    async def _command(self, request: bytes) -> bytes:
        try:
            arguments = json.loads(request)
        except ValueError:
            return encode({"error": "a command is one JSON object on one line"})
        name = arguments.get("command") if isinstance(arguments, dict) else None
        handler = self._commands.get(name) if isinstance(name, str) else None
        if handler is None:
            return encode({"error": f"unknown command {name!r}"})
        try:
            with trio.fail_after(COMMAND_TIMEOUT):
                return encode(await handler(arguments))
        except trio.TooSlowError:
            return encode({"error": f"{name}: no answer within {COMMAND_TIMEOUT:g} s"})
        except Exception:  # a protocol boundary, as for the snapshot
            log.exception("command %s failed", name)
            return encode({"error": f"{name}: internal error (see the server log)"})


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
            with addressable(path) as address:
                await probe.connect(address)
        except ConnectionRefusedError:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            return
    raise OSError(errno.EADDRINUSE, "another server answers on this status socket", str(path))


def _identity(path: Path) -> tuple[int, int]:
    info = os.stat(path)
    return info.st_ino, info.st_ctime_ns
