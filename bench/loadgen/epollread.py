"""One thread that reads many held connections with one epoll and sends their scheduled messages.

Read by a trio task per connection, each received stanza costs a task wake-up and trio's socket
and TLS layers: a profile of the muc scenario showed about 75 µs of generator CPU per delivery,
most of it there and only a few µs in lxml, so the generator rather than the server set the
limit. Here one `epoll.poll` returns every ready socket at once, and each is read with one
`recv` and, for TLS, fed straight into the connection's own `ssl.SSLObject` (the one trio's
`SSLStream` set up during the handshake).

The same thread sends the messages of a `Plan`: one schedule for all of this process's senders
(the chat users, the muc occupants that send), in rate order: message j of the plan is due at
`start + j / rate` and goes out from sender `j mod n`, so the total rate is smooth and each
sender sends every `n / rate` seconds, in turn. At 1,000 connections this costs one timer and a
write per message instead of 1,000 sleeping trio tasks (bench/README.md, "The generator", has
the measurement). A write that the socket does not take whole waits for EPOLLOUT, in order.

A connection handed over here must not be read or written by trio any more until `stop()`
(OpenSSL objects are not to be used from two threads at once). The thread answers the server's
XEP-0199 pings itself, so a long run is not cut by the server's idle timeout.
"""

from __future__ import annotations

import contextlib
import os
import select
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import trio
from lxml import etree

from bench.loadgen.client import CLIENT_NS, LoadClient

IQ_TAG = f"{{{CLIENT_NS}}}iq"
PING_TAG = "{urn:xmpp:ping}ping"
READ_SIZE = 65536
IDLE_POLL = 1.0  # seconds an idle loop sleeps in epoll (stop() wakes it at once)


@dataclass
class _Connection:
    client: LoadClient
    fd: int
    tls: ssl.SSLObject | None
    incoming: ssl.MemoryBIO | None
    outgoing: ssl.MemoryBIO | None
    on_element: Callable[[etree._Element], None]
    pending: bytearray = field(default_factory=bytearray)  # written, not yet taken by the socket


@dataclass
class Sender:
    """One sender of a plan: `<message to=... type=... id='<prefix><seq>'>` whose body is
    "<body_head><seq> <send time, monotonic ns>"; `sent` counts what went out."""

    client: LoadClient
    to: str
    kind: str  # the message type: "chat", "groupchat"
    body_head: str  # "<step> <sender index> "
    sent: int = 0
    fd: int = field(init=False)

    def __post_init__(self) -> None:
        self.fd = _raw_parts(self.client.stream)[0]


@dataclass
class Plan:
    """`count` messages at `rate` per second in total from `senders` in turn, from `start`
    (time.monotonic()); `done` is set when the last one went out (or the plan was dropped)."""

    start: float
    rate: float
    count: int
    senders: list[Sender]
    done: threading.Event = field(default_factory=threading.Event)
    next: int = 0  # the index of the next message to send


def _raw_parts(stream: trio.abc.Stream) -> tuple[int, ssl.SSLObject | None, ssl.MemoryBIO | None,
                                                  ssl.MemoryBIO | None]:  # fmt: skip
    """The socket's fd and, under TLS, trio's SSLObject and its two memory BIOs."""
    if isinstance(stream, trio.SSLStream):
        transport = stream.transport_stream
        assert isinstance(transport, trio.SocketStream)
        # trio's private attributes, on purpose (see the module's docstring)
        return transport.socket.fileno(), stream._ssl_object, stream._incoming, stream._outgoing
    assert isinstance(stream, trio.SocketStream)
    return stream.socket.fileno(), None, None, None


class EpollLoop:
    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._connections: dict[int, _Connection] = {}
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        self._epoll.register(self._wake_r, select.EPOLLIN)
        self._stopping = False
        self._plan: Plan | None = None
        self._thread = threading.Thread(target=self._run, name="epoll-loop", daemon=True)
        self._thread.start()

    def add(self, client: LoadClient, on_element: Callable[[etree._Element], None]) -> None:
        """Take over `client` (call from the trio thread, with no trio task reading it)."""
        fd, tls, incoming, outgoing = _raw_parts(client.stream)
        connection = _Connection(client, fd, tls, incoming, outgoing, on_element)
        for element in client.elements:  # complete elements trio had already read
            on_element(element)
        client.elements = []
        with self._lock:
            self._connections[fd] = connection
            if tls is not None:  # bytes trio had received but not yet decrypted
                self._decrypt(connection)
            self._epoll.register(fd, select.EPOLLIN)

    def schedule(self, plan: Plan) -> None:
        """Send `plan` (replacing an unfinished one, whose `done` is set); returns at once."""
        with self._lock:
            if self._plan is not None:
                self._plan.done.set()
            self._plan = plan
        os.write(self._wake_w, b"p")

    def stop(self) -> None:
        """Stop the thread; the connections can then be closed by trio as usual."""
        self._stopping = True
        os.write(self._wake_w, b"x")
        self._thread.join(10)
        if self._plan is not None:
            self._plan.done.set()
        self._epoll.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def _run(self) -> None:
        while not self._stopping:
            events = self._epoll.poll(self._timeout())
            with self._lock:
                for fd, mask in events:
                    if fd == self._wake_r:
                        os.read(self._wake_r, 4096)
                        continue
                    connection = self._connections.get(fd)
                    if connection is None:
                        continue
                    if mask & select.EPOLLOUT:
                        self._flush(connection)
                    if mask & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
                        self._receive(connection)
                self._send_due()

    def _timeout(self) -> float:
        plan = self._plan
        if plan is None:
            return IDLE_POLL
        # epoll waits whole milliseconds, rounded up: at most 1 ms late, then all due go out
        return max(plan.start + plan.next / plan.rate - time.monotonic(), 0.0)

    def _send_due(self) -> None:
        plan = self._plan
        if plan is None:
            return
        now = time.monotonic()
        senders = plan.senders
        while plan.next < plan.count and plan.start + plan.next / plan.rate <= now:
            sender = senders[plan.next % len(senders)]
            seq = plan.next // len(senders) + 1
            plan.next += 1
            connection = self._connections.get(sender.fd)
            if connection is None:  # closed by the server: the message is not sent
                continue
            stamp = time.monotonic_ns()
            text = (f"<message to='{sender.to}' type='{sender.kind}' id='m{seq}'>"
                    f"<body>{sender.body_head}{seq} {stamp}</body></message>")  # fmt: skip
            if self._write(connection, text.encode()):
                sender.sent = seq
        if plan.next >= plan.count:
            self._plan = None
            plan.done.set()

    def _receive(self, connection: _Connection) -> None:
        try:
            data = os.read(connection.fd, READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop(connection)
            return
        if connection.incoming is None:
            self._feed(connection, data)
        else:
            connection.incoming.write(data)
            self._decrypt(connection)

    def _decrypt(self, connection: _Connection) -> None:
        assert connection.tls is not None
        while connection.fd in self._connections:
            try:
                plain = connection.tls.read(READ_SIZE)
            except ssl.SSLWantReadError:
                return
            except (ssl.SSLZeroReturnError, ssl.SSLError):
                self._drop(connection)
                return
            if not plain:
                self._drop(connection)
                return
            self._feed(connection, plain)

    def _feed(self, connection: _Connection, data: bytes) -> None:
        client = connection.client
        client.feed(data)
        elements, client.elements = client.elements, []
        for element in elements:
            if element.tag == IQ_TAG and element.get("type") == "get" and element.find(PING_TAG) is not None:
                reply = f"<iq type='result' id='{element.get('id')}' to='{element.get('from')}'/>"
                self._write(connection, reply.encode())
            else:
                connection.on_element(element)
        if client.closed:
            self._drop(connection)

    def _write(self, connection: _Connection, data: bytes) -> bool:
        """Encrypt (under TLS) and write `data`, after anything still pending; what the socket
        does not take now waits for EPOLLOUT. False if the connection is gone."""
        if connection.tls is not None and connection.outgoing is not None:
            try:
                connection.tls.write(data)
            except ssl.SSLError:
                self._drop(connection)
                return False
            data = connection.outgoing.read()
        if connection.pending:
            connection.pending += data
            return True
        try:
            written = os.write(connection.fd, data)
        except BlockingIOError:
            written = 0
        except OSError:
            self._drop(connection)
            return False
        if written < len(data):
            connection.pending += data[written:]
            self._epoll.modify(connection.fd, select.EPOLLIN | select.EPOLLOUT)
        return True

    def _flush(self, connection: _Connection) -> None:
        try:
            written = os.write(connection.fd, connection.pending)
        except BlockingIOError:
            return
        except OSError:
            self._drop(connection)
            return
        del connection.pending[:written]
        if not connection.pending:
            self._epoll.modify(connection.fd, select.EPOLLIN)

    def _drop(self, connection: _Connection) -> None:
        connection.client.closed = True
        if self._connections.pop(connection.fd, None) is not None:
            with contextlib.suppress(OSError, ValueError):
                self._epoll.unregister(connection.fd)


async def run_plan(loop: EpollLoop, plan: Plan) -> None:
    """Hand `plan` to `loop` and wait (without blocking trio) until it has been sent."""
    loop.schedule(plan)
    # generous: the plan's own length plus a minute for a loop that falls behind
    patience = plan.start - time.monotonic() + plan.count / plan.rate + 60.0
    finished = await trio.to_thread.run_sync(plan.done.wait, patience)
    if not finished:
        raise RuntimeError(f"the epoll loop sent {plan.next} of {plan.count} messages in time")
