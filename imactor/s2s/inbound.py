"""Streams other servers open to us: accept, STARTTLS, authenticate them, route their stanzas.

Each connection runs `InboundStream` in one task (plus one task per dialback key being checked,
since asking the authoritative server takes a round trip on another stream and the peer may
go on talking meanwhile). A peer that has authenticated no domain within
`[s2s] handshake_timeout` gets <connection-timeout/>. Stanzas enter the router as a local
session's would (`wait=True`: a busy recipient slows this peer's stream, not the others), after
the wait that its domain's rate asks for (`S2SWing.inbound`, `imactor.s2s.limits`).
"""

from __future__ import annotations

import logging
import socket
import ssl
from typing import TYPE_CHECKING

import trio

from imactor.c2s.listener import serve_each
from imactor.ids import random_id
from imactor.xmpp import events as ev
from imactor.xmpp import s2s
from imactor.xmpp.certnames import CertificateIdentities
from imactor.xmpp.stanza import Stanza

if TYPE_CHECKING:
    from imactor.s2s.base import Wing

log = logging.getLogger("imactor.s2s")

READ_SIZE = 65536


async def serve_s2s(
    wing: Wing,
    listener: trio.SocketListener,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept server-to-server connections forever, each in a task of its own."""

    async def handle(tcp: trio.SocketStream, remote: str) -> None:
        await InboundConnection(wing, tcp, remote).run()

    await serve_each(listener, handle, task_status=task_status)


class InboundConnection:
    def __init__(self, wing: Wing, transport: trio.SocketStream, remote: str) -> None:
        self.wing = wing
        self.remote = remote
        self._tcp = transport
        self._transport: trio.abc.Stream = transport
        self._lock = trio.Lock()
        self.stream = s2s.InboundStream(wing.protocol, stream_id_factory=random_id)

    async def run(self) -> None:
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._deadline)
                await self._direct_tls_if_asked()
                await self._serve(nursery)
                nursery.cancel_scope.cancel()
        except* (OSError, trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError) as group:
            log.info("s2s from %s: connection lost: %s", self.remote, group.exceptions[0])
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await self._transport.aclose()

    async def _deadline(self) -> None:
        await trio.sleep(self.wing.config.handshake_timeout)
        if not self.stream.authenticated_any and not self.stream.closed:
            log.info("s2s from %s: no authentication within the handshake timeout", self.remote)
            self.stream.close("connection-timeout", "authenticate sooner")
            await self._flush()
            await self._transport.aclose()

    async def _direct_tls_if_asked(self) -> None:
        """XEP-0368 on the s2s port too: a first byte that opens a TLS handshake record (0x16)
        makes the connection direct TLS; anything else is a STARTTLS stream. Peeked, not read,
        so the stream's parser still sees every byte (and refuses what is not XML)."""
        first = await self._tcp.socket.recv(1, socket.MSG_PEEK)
        if first != b"\x16":
            return
        tls = trio.SSLStream(self._transport, self.wing.server_context, server_side=True)
        self._transport = tls
        await tls.do_handshake()
        self.stream.direct_tls_established(self._peer_certificate(tls))

    def _peer_certificate(self, tls: trio.SSLStream[trio.abc.Stream]) -> CertificateIdentities | None:
        der = tls.getpeercert(binary_form=True) if self.wing.config.require_valid_certificates else None
        return CertificateIdentities.from_der(der) if der else None

    async def _serve(self, nursery: trio.Nursery) -> None:
        stream = self.stream
        while not stream.closed:
            data = await self._transport.receive_some(READ_SIZE)
            stream.receive_data(bytes(data))
            while (event := stream.next_event()) is not s2s.NEED_DATA:
                await self._on_event(event, nursery)
            await self._flush()
            if not data:
                return

    async def _on_event(self, event: object, nursery: trio.Nursery) -> None:
        match event:
            case ev.StartTLSRequested():
                await self._start_tls()
            case s2s.DialbackKeyReceived():
                nursery.start_soon(self._check_key, event)
            case s2s.PeerAuthenticated(domain=domain, method=method):
                if not self.wing.config.permits(domain):
                    log.info("s2s from %s: %s is not allowed by [s2s] allow/deny", self.remote, domain)
                    self.stream.close("policy-violation", "federation with this domain is not allowed")
                else:
                    log.info("s2s from %s: %s authenticated (%s)", self.remote, domain, method)
            case s2s.StanzaRefused(element=element, condition=condition):
                log.warning("s2s from %s: refused a stanza from %r (%s)", self.remote, element.get("from"),
                            condition)  # fmt: skip
            case ev.StanzaReceived(element=element):
                await self.wing.inbound(Stanza.from_element(element, hand_over=True))
            case ev.StreamClosed(condition=condition):
                if condition is not None:
                    log.info("s2s from %s: stream error %s", self.remote, condition)

    async def _start_tls(self) -> None:
        async with self._lock:
            await self._transport.send_all(self.stream.data_to_send())  # the <proceed/>
            tls = trio.SSLStream(self._transport, self.wing.server_context, server_side=True)
            self._transport = tls
            await tls.do_handshake()
        self.stream.tls_established(self._peer_certificate(tls))

    async def _check_key(self, event: s2s.DialbackKeyReceived) -> None:
        """XEP-0220 §2.1.2: ask the authoritative server (a server of the claimed domain) through
        our own outbound stream to it; policy first, so a denied domain costs no connection."""
        valid = False
        if self.wing.config.permits(event.originating):
            valid = await self.wing.verify(event.originating, event.receiving, event.stream_id, event.key)
        if not valid:
            log.info("s2s from %s: the dialback key of %s did not verify", self.remote, event.originating)
        self.stream.dialback_verified(event.originating, event.receiving, valid)
        await self._flush()

    async def _flush(self) -> None:
        async with self._lock:
            data = self.stream.data_to_send()
            if data:
                await self._transport.send_all(data)
