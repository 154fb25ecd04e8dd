"""One outgoing stream to one remote domain: connect, authenticate, carry stanzas, go idle.

`Outgoing.send` queues a stanza and returns at once (actors never wait on a remote server); the
stream's own tasks connect (`resolve`, TCP, STARTTLS or direct TLS), run the sans-IO
`OutboundStream`, and write the queue once it is ready. When it cannot be ready within
`[s2s] connect_timeout`, every queued stanza is bounced with `remote-server-timeout`; when the
domain has no server or the peer refuses us, with `remote-server-not-found` (RFC 6120 §8.3.3.14,
§8.3.3.15). The same stream carries our <db:verify/> questions about keys that servers of that
domain sent on inbound streams (`verify`). After `[s2s] idle_timeout` without a stanza it closes.
A stream that never got ready tells the wing, which backs off before the next attempt.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import trio

from imactor.s2s.resolve import NoService, Target, resolve
from imactor.xmpp import events as ev
from imactor.xmpp import s2s
from imactor.xmpp.certnames import CertificateIdentities
from imactor.xmpp.errors import StanzaError
from imactor.xmpp.stanza import Stanza

if TYPE_CHECKING:
    from imactor.s2s.base import Wing

log = logging.getLogger("imactor.s2s")

READ_SIZE = 65536


class _Failed(Exception):
    def __init__(self, condition: str, text: str) -> None:
        super().__init__(text)
        self.condition = condition
        self.text = text


class Outgoing:
    """Our stream to `domain` in this worker (one per remote domain per worker: ARCHITECTURE.md)."""

    def __init__(self, wing: Wing, domain: str, local_domain: str) -> None:
        self.wing = wing
        self.domain = domain
        #: Which of our domains this stream speaks for (the server's, or a service's).
        self.local_domain = local_domain
        self.ready = False
        #: Whether it was ever ready: its end is then no failure of the remote server.
        self.was_ready = False
        self.closed = False
        self._queue: list[Stanza] = []
        self._verifies: list[tuple[str, str, str]] = []  # (originating, stream id, key) to send
        self._answers: dict[tuple[str, str], list[trio.MemorySendChannel[bool]]] = {}
        self._wake = trio.Event()
        self._lock = trio.Lock()
        self._stream: s2s.OutboundStream | None = None
        self._transport: trio.abc.Stream | None = None
        self._last_used = trio.current_time()
        #: Why the connection ended, recorded by whichever of its tasks saw it first.
        self._failure: _Failed | None = None

    # ---- what the wing calls -------------------------------------------------------------------

    def send(self, stanza: Stanza) -> None:
        """Queue `stanza`; it leaves once the stream is ready (bounced if it never is)."""
        if len(self._queue) >= self.wing.config.max_queue:
            self.wing.bounce(
                stanza, StanzaError("resource-constraint", "too many stanzas wait for this server")
            )
            return
        self._queue.append(stanza)
        self._last_used = trio.current_time()
        self._wake.set()

    async def verify(self, originating: str, stream_id: str, key: str) -> bool:
        """Ask `domain`'s server whether `key` is its key for our inbound stream `stream_id`
        (XEP-0220 §2.1.2); False when it says no or cannot be asked in time."""
        sender, receiver = trio.open_memory_channel[bool](1)
        self._answers.setdefault((originating, stream_id), []).append(sender)
        self._verifies.append((originating, stream_id, key))
        self._wake.set()
        with trio.move_on_after(self.wing.config.connect_timeout * 2):
            async with receiver:
                return await receiver.receive()
        return False

    async def run(self) -> None:
        """Connect and serve until failure or idleness; then bounce what is left."""
        condition, text = "remote-server-not-found", "the stream ended"
        try:
            await self._run()
        except _Failed as failed:
            condition, text = failed.condition, failed.text
            log.info("s2s to %s: %s (%s)", self.domain, failed.text, failed.condition)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError) as exc:
            text = f"connection failed: {exc}"
            log.info("s2s to %s: %s", self.domain, text)
        finally:
            self.closed = True
            self.ready = False
            self.wing.forget(self, None if self.was_ready else (condition, text))
            self._fail_pending(condition, text)
            if self._transport is not None:
                with trio.CancelScope(shield=True), trio.move_on_after(1):
                    await self._transport.aclose()

    # ---- the connection ------------------------------------------------------------------------

    async def _run(self) -> None:
        config = self.wing.config
        with trio.move_on_after(config.connect_timeout) as connecting:
            target = await self._connect()
        if connecting.cancelled_caught:
            raise _Failed("remote-server-timeout", f"no connection within {config.connect_timeout:g} s")
        stream = s2s.OutboundStream(
            self.wing.protocol, self.domain, try_external=config.require_valid_certificates,
            require_valid_certificate=config.require_valid_certificates, local_domain=self.local_domain,
        )  # fmt: skip
        self._stream = stream
        certificate = self._peer_certificate() if target.direct_tls else None
        stream.start(direct_tls=target.direct_tls, certificate=certificate)
        async with trio.open_nursery() as nursery:
            scope = nursery.cancel_scope
            nursery.start_soon(self._guarded, self._handshake_deadline, scope, False)
            nursery.start_soon(self._guarded, self._writer, scope, False)
            nursery.start_soon(self._guarded, self._idle_watch, scope, True)
            self._wake.set()
            await self._guarded(self._reader, scope, True)
        if self._failure is not None:
            raise self._failure

    async def _guarded(
        self, task: Callable[[], Awaitable[None]], scope: trio.CancelScope, ends_all: bool
    ) -> None:
        """Run one of the connection's tasks. The first failure is recorded and ends them all
        (raised inside the nursery it would come out wrapped in an exception group); so does
        the end of a task that `ends_all` (the reader: the peer left; the idle watch)."""
        try:
            await task()
        except _Failed as failed:
            self._failure = self._failure or failed
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError) as exc:
            self._failure = self._failure or _Failed("remote-server-not-found", f"connection failed: {exc}")
        else:
            if not ends_all:
                return
        scope.cancel()

    async def _connect(self) -> Target:
        try:
            targets = await resolve(self.domain, self.wing.config.routes)
        except NoService:
            raise _Failed("remote-server-not-found", "the domain offers no XMPP server service") from None
        errors: list[str] = []
        for target in targets:
            try:
                tcp = await trio.open_tcp_stream(target.host, target.port)
            except OSError as exc:
                errors.append(f"{target.host}:{target.port}: {exc.strerror or exc}")
                continue
            self._transport = tcp
            if target.direct_tls:
                context = self.wing.client_context_for(self.local_domain)
                tls = trio.SSLStream(tcp, context, server_hostname=self.domain)
                self._transport = tls
                try:
                    await tls.do_handshake()
                except (trio.BrokenResourceError, ssl.SSLError) as exc:
                    errors.append(f"{target.host}:{target.port}: TLS: {exc}")
                    await tls.aclose()
                    self._transport = None
                    continue
            return target
        raise _Failed("remote-server-not-found", "; ".join(errors) or "no address found")

    async def _handshake_deadline(self) -> None:
        await trio.sleep(self.wing.config.connect_timeout)
        if not self.ready:  # connected, but the peer did not let us in (dialback never answered)
            raise _Failed("remote-server-timeout", "the remote server did not authenticate us in time")

    async def _idle_watch(self) -> None:
        idle = self.wing.config.idle_timeout
        while True:
            await trio.sleep_until(self._last_used + idle)
            if trio.current_time() >= self._last_used + idle and not self._verifies:
                log.info("s2s to %s: idle for %g s, closing", self.domain, idle)
                assert self._stream is not None
                self._stream.close()
                await self._flush()
                return

    async def _reader(self) -> None:
        stream = self._stream
        assert stream is not None
        while not stream.closed:
            assert self._transport is not None
            data = await self._transport.receive_some(READ_SIZE)
            stream.receive_data(bytes(data))
            while (event := stream.next_event()) is not s2s.NEED_DATA:
                await self._on_event(stream, event)
            self._wake.set()
            if not data:
                break
        await self._flush()

    async def _on_event(self, stream: s2s.OutboundStream, event: object) -> None:
        match event:
            case s2s.TLSProceed():
                await self._start_tls(stream)
            case s2s.OutboundReady(method=method):
                log.info("s2s to %s: ready (%s)", self.domain, method)
                self.ready = self.was_ready = True
            case s2s.OutboundFailed(condition=condition, text=text):
                await self._flush()
                raise _Failed(condition, text)
            case s2s.VerifyAnswered(originating=originating, stream_id=stream_id, valid=valid):
                for sender in self._answers.pop((originating, stream_id), []):
                    sender.send_nowait(valid)
            case ev.StreamClosed():
                pass

    async def _start_tls(self, stream: s2s.OutboundStream) -> None:
        async with self._lock:
            assert self._transport is not None
            context = self.wing.client_context_for(self.local_domain)
            tls = trio.SSLStream(self._transport, context, server_hostname=self.domain)
            self._transport = tls
            await tls.do_handshake()
        stream.tls_established(self._peer_certificate())

    def _peer_certificate(self) -> CertificateIdentities | None:
        """The peer's identities when OpenSSL validated its chain (require_valid_certificates)."""
        transport = self._transport
        if not isinstance(transport, trio.SSLStream) or not self.wing.config.require_valid_certificates:
            return None
        der = transport.getpeercert(binary_form=True)
        return CertificateIdentities.from_der(der) if der else None

    async def _writer(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            stream = self._stream
            assert stream is not None
            if stream.can_verify:
                for originating, stream_id, key in self._verifies:
                    stream.send_verify(originating, stream_id, key)
                self._verifies.clear()
            if self.ready:
                queued, self._queue = self._queue, []
                for stanza in queued:
                    try:
                        stream.send_stanza(stanza.take_element())
                    except s2s.UnrepresentableNamespace:
                        self.wing.bounce(stanza, s2s.unrelayable())
            await self._flush()

    async def _flush(self) -> None:
        stream = self._stream
        if stream is None:
            return
        async with self._lock:
            data = stream.data_to_send()
            if data and self._transport is not None:
                await self._transport.send_all(data)

    def _fail_pending(self, condition: str, text: str) -> None:
        for stanza in self._queue:
            self.wing.bounce(stanza, StanzaError(condition, text))
        self._queue.clear()
        for senders in self._answers.values():
            for sender in senders:
                sender.send_nowait(False)
        self._answers.clear()
        self._verifies.clear()
