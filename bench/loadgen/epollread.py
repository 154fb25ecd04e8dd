"""One thread that reads many held connections with one epoll, for the muc occupants.

In the muc scenario every delivery is one stanza on one occupant's socket. Read by a trio task
per connection, each costs a task wake-up and trio's socket and TLS layers: a profile showed
about 75 µs of generator CPU per delivery, most of it there and only a few µs in lxml, so the
generator rather than the server set the limit. Here one `epoll.poll` returns every ready socket
at once, and each is read with one `recv` and, for TLS, fed straight into the connection's own
`ssl.SSLObject` (the one trio's `SSLStream` set up during the handshake).

A connection handed over here must not be read by trio any more, and, since OpenSSL objects are
not to be used from two threads at once, not written by trio either until `stop()`: the
scenario hands over only occupants that never send. The thread answers the server's XEP-0199
pings itself, so a long run is not cut by the server's idle timeout.
"""

from __future__ import annotations

import contextlib
import os
import select
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass

import trio
from lxml import etree

from bench.loadgen.client import CLIENT_NS, LoadClient

IQ_TAG = f"{{{CLIENT_NS}}}iq"
PING_TAG = "{urn:xmpp:ping}ping"
READ_SIZE = 65536


@dataclass
class _Connection:
    client: LoadClient
    fd: int
    tls: ssl.SSLObject | None
    incoming: ssl.MemoryBIO | None
    outgoing: ssl.MemoryBIO | None
    on_element: Callable[[etree._Element], None]


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


class EpollReader:
    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._connections: dict[int, _Connection] = {}
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        self._epoll.register(self._wake_r, select.EPOLLIN)
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="epoll-reader", daemon=True)
        self._thread.start()

    def add(self, client: LoadClient, on_element: Callable[[etree._Element], None]) -> None:
        """Take over reading `client` (call from the trio thread, with no trio task reading it)."""
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

    def stop(self) -> None:
        """Stop the thread; the connections can then be closed by trio as usual."""
        self._stopping = True
        os.write(self._wake_w, b"x")
        self._thread.join(10)
        self._epoll.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def _run(self) -> None:
        while not self._stopping:
            events = self._epoll.poll(1.0)
            with self._lock:
                for fd, _ in events:
                    connection = self._connections.get(fd)
                    if connection is not None:
                        self._receive(connection)

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
        while True:
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
                self._send(connection, reply)
            else:
                connection.on_element(element)
        if client.closed:
            self._drop(connection)

    def _send(self, connection: _Connection, text: str) -> None:
        """A small write from this thread (ping replies): best effort on the non-blocking socket."""
        data = text.encode()
        if connection.tls is not None and connection.outgoing is not None:
            connection.tls.write(data)
            data = connection.outgoing.read()
        with contextlib.suppress(OSError):
            os.write(connection.fd, data)

    def _drop(self, connection: _Connection) -> None:
        connection.client.closed = True
        if self._connections.pop(connection.fd, None) is not None:
            with contextlib.suppress(OSError, ValueError):
                self._epoll.unregister(connection.fd)
