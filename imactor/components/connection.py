"""One external component's connection: the handshake, then stanzas both ways.

The connection's task reads and feeds the sans-IO `ComponentStream`; a second task writes what
the router queued for the component (`deliver` never waits: the queue is bounded, and a full
one bounces the stanza with `resource-constraint`, as a full actor mailbox does). A component
that has not proved its secret within `[listen.component] handshake_timeout` gets
<connection-timeout/>. The component's stanzas enter the router as a session's do (`wait=True`:
a busy recipient slows this component only).
"""

from __future__ import annotations

import contextlib
import logging
import math
import socket
from typing import TYPE_CHECKING

import trio

from imactor.ids import random_id
from imactor.xmpp import component as c
from imactor.xmpp import events as ev
from imactor.xmpp.s2s import UnrepresentableNamespace, unrelayable
from imactor.xmpp.stanza import Stanza

if TYPE_CHECKING:
    from imactor.components.base import Wing

log = logging.getLogger("imactor.components")

READ_SIZE = 65536
#: Stanzas waiting to be written to one component.
QUEUE_SIZE = 1024
#: Seconds a write to a component may take before the connection is dropped.
SEND_TIMEOUT = 30.0
#: TCP keepalive on component connections: probes after this many idle seconds, every
#: `KEEPALIVE_INTERVAL`, `KEEPALIVE_PROBES` unanswered ones drop it. A component's connection
#: holds its domain (a reconnect gets <conflict/>), so a peer that vanished without closing must
#: not hold it for the kernel's default two hours.
KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_PROBES = 60, 10, 3


def keep_alive(transport: trio.SocketStream) -> None:
    """Turn TCP keepalive on with the timings above (where the platform has them)."""
    transport.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (("TCP_KEEPIDLE", KEEPALIVE_IDLE), ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL),
                        ("TCP_KEEPCNT", KEEPALIVE_PROBES)):  # fmt: skip
        option = getattr(socket, name, None)
        if option is not None:
            transport.setsockopt(socket.IPPROTO_TCP, option, value)


class ComponentConnection:
    def __init__(self, wing: Wing, transport: trio.SocketStream, remote: str) -> None:
        self.wing = wing
        self.remote = remote
        self._transport = transport
        self.stream = c.ComponentStream(wing.protocol, stream_id_factory=random_id)
        self._outbox, self._queued = trio.open_memory_channel[Stanza](QUEUE_SIZE)
        self._lock = trio.Lock()
        self._nursery: trio.Nursery | None = None

    @property
    def domain(self) -> str | None:
        return self.stream.domain

    @property
    def closed(self) -> bool:
        return self.stream.closed

    # ---- what the wing calls -------------------------------------------------------------------

    def deliver(self, stanza: Stanza) -> None:
        """Queue a stanza for the component, without waiting.

        Raises:
            trio.WouldBlock: the component does not read fast enough.
            trio.ClosedResourceError: the connection is over.
        """
        self._outbox.send_nowait(stanza)

    def kick(self, condition: str, text: str) -> None:
        """End the stream with `condition` (another worker won the race for its domain)."""
        self.stream.close(condition, text)
        if self._nursery is not None:
            self._nursery.start_soon(self._finish)

    # ---- the connection's tasks ----------------------------------------------------------------

    async def run(self) -> None:
        try:
            keep_alive(self._transport)
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._deadline)
                nursery.start_soon(self._write_queued)
                await self._serve()
                nursery.cancel_scope.cancel()
        except* (OSError, trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError) as group:
            log.info(
                "component %s from %s: connection lost: %s", self.domain, self.remote, group.exceptions[0]
            )
        finally:
            self._nursery = None
            self._outbox.close()
            self.wing.release(self)
            stopping = trio.current_effective_deadline() == -math.inf  # cancelled: the worker stops
            with trio.CancelScope(shield=True):
                if stopping and not self.stream.closed:
                    await self._say_goodbye()
                await self._bounce_queued()
                with trio.move_on_after(1):
                    await self._transport.aclose()

    async def _serve(self) -> None:
        stream = self.stream
        while not stream.closed:
            data = await self._transport.receive_some(READ_SIZE)
            stream.receive_data(bytes(data))
            while (event := stream.next_event()) is not c.NEED_DATA:
                await self._on_event(event)
            await self._flush()
            if not data:
                return

    async def _on_event(self, event: object) -> None:
        match event:
            case c.HandshakeVerified(domain=domain):
                if self.wing.claim(domain, self):
                    self.stream.accept()
                    log.info("component %s connected from %s", domain, self.remote)
                else:
                    # RFC 6120 §4.9.3.3: <conflict/> also refuses "a new stream for this entity
                    # because allowing the new stream would conflict with an existing stream".
                    # The connection that holds the domain keeps it (docs/components.md says why).
                    log.warning("component %s from %s refused: already connected", domain, self.remote)
                    self.stream.close("conflict", "this component is already connected")
            case ev.StanzaReceived(element=element):
                self.wing.stanzas_in += 1
                await self.wing.router.route(Stanza.from_element(element, hand_over=True), wait=True)
            case c.StanzaBounced(element=element, condition=condition):
                log.info("component %s: answered a stanza with %s (to=%r)", self.domain, condition,
                         element.get("to"))  # fmt: skip
            case ev.StreamClosed(condition=condition):
                if condition is not None:
                    log.info("component %s from %s: stream error %s", self.domain, self.remote, condition)

    async def _deadline(self) -> None:
        await trio.sleep(self.wing.config.handshake_timeout)
        if not self.stream.authenticated and not self.stream.closed:
            log.info("component from %s: no handshake within the timeout", self.remote)
            self.stream.close("connection-timeout", "complete the handshake sooner")
            await self._finish()

    async def _write_queued(self) -> None:
        async for stanza in self._queued:
            batch = [stanza]
            while True:
                try:
                    batch.append(self._queued.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            if self.stream.closed:
                for each in batch:
                    await self.wing.bounce_unavailable(each)
                continue
            for each in batch:
                try:
                    self.stream.send_stanza(each.element())
                except UnrepresentableNamespace:
                    await self.wing.router.bounce(each, unrelayable())
            await self._flush()

    async def _say_goodbye(self) -> None:
        """Tell the component the server stops (<system-shutdown/>), best effort, at most 1 s."""
        self.stream.close("system-shutdown", "the server is shutting down")
        with trio.move_on_after(1), contextlib.suppress(
            OSError, trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError
        ):  # fmt: skip
            await self._flush()

    async def _bounce_queued(self) -> None:
        while True:
            try:
                stanza = self._queued.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                return
            await self.wing.bounce_unavailable(stanza)

    async def _finish(self) -> None:
        """Write what the stream says last, then end the connection."""
        await self._flush()
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    async def _flush(self) -> None:
        async with self._lock:
            data = self.stream.data_to_send()
            if data:
                with trio.fail_after(SEND_TIMEOUT):
                    await self._transport.send_all(data)
