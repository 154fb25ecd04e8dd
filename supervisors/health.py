"""The health protocol between a `ProcessSupervisor` and the programs it runs.

A process that is alive is not necessarily working: a worker whose event
loop is stuck (a blocking call, a CPU-bound loop, a deadlock) keeps its pid
but serves nobody. So the supervisor asks, and the child's event loop
answers. The protocol is generic and tiny; any program can speak it.

**Transport.** For each child process the supervisor creates a Unix
``socketpair`` (``SOCK_STREAM``), passes one end to the child (as
``pass_fds``) and names its file descriptor in the environment variable
``SUPERVISOR_HEALTH_FD`` (`HEALTH_FD_ENV`). Messages are ASCII lines ending
in ``\\n``; a side ignores lines it does not know, so the protocol can grow.

**Conversation.**

1. The child writes ``ready\\n`` once it has started (it listens on its
   ports, it has connected to its database...). The supervisor does not
   start the next child, nor report itself started, before that.
2. Then, every ``health_interval`` seconds, the supervisor writes
   ``ping\\n`` and expects ``pong\\n`` within ``health_timeout`` seconds.
3. A child that is not ready within ``ready_timeout``, or misses a pong, is
   killed with SIGKILL (the supervisor logs it as "unresponsive") and counts
   as an abnormal exit, so it is restarted per its restart type.
4. End of file on the child's side means the supervisor is gone (it died
   without stopping its children). `serve_health` then raises
   `SupervisorLost`, so an orphan does not keep serving. The supervisor
   keeps its end open until it has reaped the child.

The child answers from its event loop on purpose: a hung loop stops
answering, and that is exactly what the protocol detects.

**Child side.** A Trio program runs `serve_health` in its main nursery
and says when it is ready::

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            health = await nursery.start(serve_health)
            await nursery.start(serve_clients)
            health.ready()

``nursery.start(functools.partial(serve_health, ready=True))`` is for a
program that is ready as soon as its loop runs. Without the environment
variable (the program was started by hand) `serve_health` does nothing.

This module knows nothing of XMPP and must never import ``imactor``.
"""

from __future__ import annotations

import os
import socket

import trio

from supervisors.errors import SupervisorError

__all__ = [
    "HEALTH_FD_ENV",
    "HealthChannel",
    "HealthProbe",
    "SupervisorLost",
    "serve_health",
]

HEALTH_FD_ENV = "SUPERVISOR_HEALTH_FD"
"""The environment variable that holds the child's end of the health channel."""

READY = b"ready"
PING = b"ping"
PONG = b"pong"

# Protocol lines are a few bytes; a peer sending more without a newline is
# not speaking the protocol, and its junk is dropped rather than buffered.
_MAX_LINE = 256


class SupervisorLost(SupervisorError):
    """The supervisor closed its end of the health channel (it is gone)."""


class _Lines:
    """Newline-framed messages over a stream socket; only one task may use it."""

    __slots__ = ("_buffer", "_stream")

    def __init__(self, sock: socket.socket) -> None:
        self._stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
        self._buffer = bytearray()

    async def receive(self) -> bytes | None:
        """Returns the next line without its newline, or None at end of file.

        A broken connection counts as end of file: either way the peer is gone.
        """
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                line = bytes(self._buffer[:end])
                del self._buffer[: end + 1]
                return line.strip()
            if len(self._buffer) > _MAX_LINE:
                self._buffer.clear()
            try:
                data = await self._stream.receive_some(_MAX_LINE)
            except trio.BrokenResourceError:
                return None
            if not data:
                return None
            self._buffer += data

    async def send(self, line: bytes) -> bool:
        """Writes one line; returns False if the peer is gone."""
        try:
            await self._stream.send_all(line + b"\n")
        except trio.BrokenResourceError:
            return False
        return True

    def close(self) -> None:
        self._stream.socket.close()


class HealthProbe:
    """The supervisor's end of one child's health channel.

    Timeouts are the caller's business (``trio.move_on_after``); these
    methods wait as long as it takes.

    Args:
        sock: The supervisor's end of the socketpair. The probe owns it.
    """

    __slots__ = ("_lines",)

    def __init__(self, sock: socket.socket) -> None:
        self._lines = _Lines(sock)

    async def wait_ready(self) -> bool:
        """Waits for ``ready``; returns False if the child closed its end first."""
        while (line := await self._lines.receive()) is not None:
            if line == READY:
                return True
        return False

    async def ping(self) -> bool:
        """Sends ``ping`` and waits for ``pong``; returns False if the child is gone."""
        if not await self._lines.send(PING):
            return False
        while (line := await self._lines.receive()) is not None:
            if line == PONG:
                return True
        return False

    async def watch(self, interval: float, timeout: float) -> None:
        """Pings every ``interval`` seconds; returns once a pong is ``timeout`` seconds late.

        A closed channel never answers, so it too ends in a timeout (unless
        the caller, which watches the process, sees it exit first).
        """
        while True:
            await trio.sleep(interval)
            with trio.move_on_after(timeout):
                if not await self.ping():
                    await trio.sleep_forever()
                continue
            return

    def close(self) -> None:
        """Closes the supervisor's end."""
        self._lines.close()


class HealthChannel:
    """The child program's end of the health channel, handed out by `serve_health`.

    A channel whose program was not started by a supervisor (no
    `HEALTH_FD_ENV`) is inert: `ready` only records the fact.
    """

    __slots__ = ("_ready", "_supervised")

    def __init__(self, *, supervised: bool) -> None:
        self._supervised = supervised
        self._ready = trio.Event()

    @property
    def is_supervised(self) -> bool:
        """Whether a supervisor listens on the other end."""
        return self._supervised

    @property
    def is_ready(self) -> bool:
        """Whether `ready` was called."""
        return self._ready.is_set()

    def ready(self) -> None:
        """Tells the supervisor that this program has started. Idempotent.

        Like ``task_status.started()``: call it once the program can do its
        job. The supervisor starts its next child only after this.
        """
        self._ready.set()

    async def wait_ready(self) -> None:
        """Waits until `ready` was called."""
        await self._ready.wait()


def _open_child_end() -> _Lines | None:
    value = os.environ.get(HEALTH_FD_ENV)
    if value is None:
        return None
    try:
        fd = int(value)
    except ValueError:
        raise ValueError(f"{HEALTH_FD_ENV} must be a file descriptor number, got {value!r}") from None
    sock = socket.socket(fileno=fd)
    # The channel is this program's alone; keep it from the programs it runs.
    sock.set_inheritable(False)
    return _Lines(sock)


async def serve_health(
    *, ready: bool = False, task_status: trio.TaskStatus[HealthChannel] = trio.TASK_STATUS_IGNORED
) -> None:
    """Answers the supervisor's health checks from this program's event loop.

    Start it in the program's main nursery, first, and call
    `HealthChannel.ready` once the rest has started::

        async with trio.open_nursery() as nursery:
            health = await nursery.start(serve_health)
            await nursery.start(serve_clients)
            health.ready()

    It is a task rather than an ``async with`` block so that it lives in the
    program's own nursery (Trio's ``nursery.start`` idiom) and a
    `SupervisorLost` cancels the program like any failing task would.

    Args:
        ready: Report ready at once, for a program that is ready as soon as
            its loop runs.
        task_status: Trio's ``nursery.start`` protocol; receives the
            `HealthChannel`.

    Raises:
        SupervisorLost: The supervisor closed its end of the channel (it
            died without stopping this program). Raised so that the program
            exits instead of living on as an orphan.
        ValueError: If `HEALTH_FD_ENV` is set but is not a number.
        OSError: If that file descriptor is not open.

    Error handling:
        Without `HEALTH_FD_ENV` (the program was started by hand, not by a
        supervisor) it does nothing until cancelled. A supervisor lost
        before ``ready()`` is noticed only after it (the channel is read
        only once the program is up).
    """
    lines = _open_child_end()
    channel = HealthChannel(supervised=lines is not None)
    if ready:
        channel.ready()
    if lines is None:
        task_status.started(channel)
        await trio.sleep_forever()
    try:
        task_status.started(channel)
        await channel.wait_ready()
        if await lines.send(READY):
            while (line := await lines.receive()) is not None:
                if line == PING and not await lines.send(PONG):
                    break
    finally:
        lines.close()
    raise SupervisorLost("the supervisor closed the health channel")
