"""SessionActor: the I/O shell around one client stream (TCP, STARTTLS or direct TLS).

The only code that awaits a client socket. Two tasks share one write lock: the reader feeds bytes
to the sans-IO `ServerStream` and acts on its events; the mailbox task writes what other actors
deliver. The session is TEMPORARY: a broken connection is not restarted, the client reconnects.
"""

from __future__ import annotations

import contextlib
import logging
import math
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio
from lxml import etree

from imactor.actors import ActorAddress, ActorGone, AskTimeout, LocalRef, ask
from imactor.actors.mailbox import Mailbox, MailboxStatistics
from imactor.server import messages as m
from imactor.server.modules import IqContext, Scope
from imactor.xmpp import events as ev
from imactor.xmpp import stanza as st
from imactor.xmpp.errors import StanzaError
from imactor.xmpp.jid import JID, InvalidJID
from imactor.xmpp.namespaces import NS_BLOCKING_ERRORS, NS_PING
from imactor.xmpp.stanza import Element, Stanza
from imactor.xmpp.stream import NEED_DATA, ServerStream, StreamConfig

if TYPE_CHECKING:
    from imactor.server.worker_services import Services

log = logging.getLogger("imactor.session")

READ_SIZE = 65536
WRITE_TIMEOUT = 30.0
#: What a dead or misbehaving peer makes socket calls raise.
TRANSPORT_GONE = (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError)
IQ_TYPES = frozenset({"get", "set", "result", "error"})


@dataclass(frozen=True, slots=True)
class SessionStatistics:
    address: str
    state: str
    jid: str | None
    stanzas_in: int
    stanzas_out: int
    mailbox: MailboxStatistics


class TokenBucket:
    """Per-connection stanza rate: `rate` per second, bursts up to `burst` (traffic shaping)."""

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate, self.burst = rate, float(burst)
        self.tokens, self.stamp = float(burst), now

    def delay_for_one(self, now: float) -> float:
        """Take a token; return how long the caller must wait before the stanza is processed."""
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        self.tokens -= 1.0
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


class SessionActor:
    def __init__(
        self, services: Services, transport: trio.abc.Stream, remote: str, *, direct_tls: bool
    ) -> None:
        self.services = services
        self.transport = transport
        self.remote = remote
        self.direct_tls = direct_tls
        conn_id = services.new_id()
        self.address = ActorAddress("session", conn_id, services.worker_index)
        self._mailbox: Mailbox[m.SessionMessage] = Mailbox(services.config.limits.mailbox_size)
        self.ref: LocalRef[m.SessionMessage] = LocalRef(self.address, self._mailbox.send_channel)
        config = services.config
        self.stream = ServerStream(
            StreamConfig(
                domain=services.domain,
                tls_available=True,
                tls_required=config.listen.c2s.starttls_required,
                max_stanza_size=config.limits.max_stanza_size,
                idle_seconds=int(config.limits.idle_timeout),
                registration_enabled=config.registration.enabled,
                allow_plain=config.auth.allow_plain,
                bound_features=services.bound_features,
                fake_salt_secret=services.fake_salt_secret,
            ),
            stream_id_factory=services.new_id,
            tls_active=direct_tls,
        )
        self.jid: JID | None = None
        self._user: object | None = None
        self._blocklist: frozenset[str] = frozenset()
        self._write_lock = trio.Lock()
        self._bucket = TokenBucket(
            config.limits.stanzas_per_second, config.limits.stanza_burst, trio.current_time()
        )
        self._stanzas_in = 0
        self._stanzas_out = 0
        self._closing = False
        self._scope: trio.CancelScope | None = None

    # ---- life cycle --------------------------------------------------------------------------

    async def run(
        self, *, task_status: trio.TaskStatus[LocalRef[m.SessionMessage]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started(self.ref)
        self.services.sessions_open(self)
        try:
            async with trio.open_nursery() as nursery:
                self._scope = nursery.cancel_scope
                nursery.start_soon(self._mailbox_task, nursery.cancel_scope)
                await self._reader()
                nursery.cancel_scope.cancel()
        # except*: the nursery wraps even a lone transport error in an ExceptionGroup.
        except* TRANSPORT_GONE as group:
            log.debug("%s: transport lost: %r", self.address, group.exceptions)
        finally:
            self._mailbox.close()
            self.services.sessions_closed(self)
            with trio.CancelScope(shield=True):
                await self._unbind()
                await self._close_transport()

    async def _unbind(self) -> None:
        if self.jid is not None and self.jid.localpart is not None:
            message = m.Unbind(self.jid.resourcepart or "", self.ref)
            with trio.move_on_after(5):
                await self.services.router.to_user(self.jid.localpart, message, None, wait=True)

    async def _close_transport(self) -> None:
        with trio.move_on_after(2):
            with contextlib.suppress(*TRANSPORT_GONE):
                await self._flush()
        with trio.move_on_after(1):
            with contextlib.suppress(*TRANSPORT_GONE):
                await self.transport.aclose()

    # ---- reading -----------------------------------------------------------------------------

    async def _reader(self) -> None:
        limits = self.services.config.limits
        handshake_deadline = trio.current_time() + limits.handshake_timeout
        if self.direct_tls:
            with trio.move_on_after(limits.handshake_timeout) as scope:
                await self.transport.do_handshake()  # type: ignore[attr-defined]
            if scope.cancelled_caught:
                return
            assert isinstance(self.transport, trio.SSLStream)
            self.stream.direct_tls_established(self.services.channel_bindings(self.transport))
        pinged = False
        while True:
            if await self._drain_events():
                return
            deadline = (
                handshake_deadline
                if self.jid is None
                else trio.current_time() + (limits.ping_timeout if pinged else limits.idle_timeout)
            )
            with trio.move_on_at(deadline) as scope:
                data = await self.transport.receive_some(READ_SIZE)
            if scope.cancelled_caught:
                if self.jid is None:
                    self.stream.close("connection-timeout", "authenticate and bind in time")
                elif pinged:
                    self.stream.close("connection-timeout", "no answer to ping")
                else:
                    pinged = True
                    await self._ping_client()
                continue
            pinged = False
            self.stream.receive_data(bytes(data))

    async def _drain_events(self) -> bool:
        """Act on every event the stream has; True when the stream is over."""
        while True:
            event = self.stream.next_event()
            if event is NEED_DATA:
                await self._flush()
                return False
            if isinstance(event, ev.StreamClosed):
                await self._flush()
                return True
            await self._on_event(event)  # type: ignore[arg-type]

    async def _on_event(self, event: ev.Event) -> None:
        match event:
            case ev.StartTLSRequested():
                await self._start_tls()
            case ev.CredentialsNeeded(username=username):
                throttle = self.services.login_throttle
                if throttle.is_blocked(username, self.remote):
                    self.stream.refuse_auth("temporary-auth-failure", "too many failed attempts; wait")
                else:
                    self.stream.provide_credentials(
                        await self.services.storage.accounts.get_credentials(username)
                    )
            case ev.AuthFailed(username=username):
                self.services.login_throttle.record_failure(username, self.remote)
            case ev.Authenticated():
                pass
            case ev.BindRequested(resource=resource):
                await self._bind(resource)
            case ev.PreAuthIqReceived(element=element):
                await self._host_iq(element, JID.make(None, self.services.domain))
            case ev.StanzaReceived(element=element):
                await self._on_stanza(element)
            case ev.NonzaReceived():
                pass
            case _:
                raise AssertionError(event)

    async def _start_tls(self) -> None:
        await self._flush()
        tls = trio.SSLStream(self.transport, self.services.ssl_context, server_side=True)
        with trio.move_on_after(self.services.config.limits.handshake_timeout) as scope:
            await tls.do_handshake()
        if scope.cancelled_caught:
            raise trio.BrokenResourceError("TLS handshake timed out")
        self.transport = tls
        self.stream.tls_established(self.services.channel_bindings(tls))

    async def _bind(self, resource: str | None) -> None:
        username = self.stream.username or ""
        try:
            user = await self.services.router.user(username)
            bound: m.Bound = await ask(user, lambda reply: m.Bind(resource, self.ref, reply), timeout=10)
        except StanzaError as error:
            self.stream.bind_failed(error.condition, error.error_type)
            return
        except (AskTimeout, ActorGone):
            self.stream.bind_failed("internal-server-error")
            return
        self.jid = bound.full_jid
        self._blocklist = bound.blocklist
        self.stream.bind_succeeded(bound.full_jid)

    # ---- stanzas from the client ---------------------------------------------------------

    async def _on_stanza(self, element: Element) -> None:
        assert self.jid is not None
        self._stanzas_in += 1
        delay = self._bucket.delay_for_one(trio.current_time())
        if delay > 0:
            await self._flush()
            await trio.sleep(delay)  # shaping: a flooding client only slows itself down
        kind = etree.QName(element).localname
        from_attr = element.get("from")
        if from_attr is not None and from_attr not in (str(self.jid), str(self.jid.bare)):
            try:
                claimed = JID.parse(from_attr)
            except InvalidJID:
                claimed = None
            if claimed != self.jid and claimed != self.jid.bare:
                # RFC 6120 §8.1.2.1: a spoofed 'from' ends the stream.
                self.stream.close("invalid-from", "the from address is not yours")
                return
        element.set("from", str(self.jid))
        to_attr = element.get("to")
        to: JID | None = None
        if to_attr is not None:
            try:
                to = JID.parse(to_attr)
            except InvalidJID:
                element.attrib.pop("to")
                await self._error(element, StanzaError("jid-malformed", "invalid 'to' address"))
                return
            element.set("to", str(to))
        if kind == "iq" and not await self._valid_iq(element):
            return
        if to is not None and self._blocked(to):
            # XEP-0191 §3.6: nothing goes to a blocked JID; presence is dropped silently.
            if kind != "presence":
                blocked = (NS_BLOCKING_ERRORS, "blocked")
                await self._error(element, StanzaError("not-acceptable", "you blocked this contact",
                                                       app_condition=blocked))  # fmt: skip
            return
        await self._dispatch(kind, element, to)

    async def _dispatch(self, kind: str, element: Element, to: JID | None) -> None:
        assert self.jid is not None
        own = self.jid.bare
        domain = self.services.domain
        if kind == "presence":
            element.set("to", str(to or own))
            await self._to_own_user(m.FromResource(Stanza.from_element(element)))
            return
        if kind == "iq":
            iq_type = element.get("type", "")
            if to is None or to == own:
                if iq_type in ("result", "error"):
                    return  # answers to our keepalive pings
                if (
                    to is None
                    and self.services.modules.iq_handler(iq_type, element[0], Scope.ACCOUNT) is None
                ):
                    await self._host_iq(element, JID.make(None, domain))
                    return
                element.set("to", str(own))
                await self._to_own_user(m.FromResource(Stanza.from_element(element)))
                return
            if to.localpart is None and to.resourcepart is None and to.domainpart == domain:
                if iq_type in ("get", "set"):
                    await self._host_iq(element, to)
                return
        if kind == "message":
            if to is None:
                element.set("to", str(own))  # RFC 6120 §10.3.1: to the sender's bare JID
            elif to.localpart is None and to.domainpart == domain:
                return  # messages to the server itself are not processed
        await self.services.router.route(Stanza.from_element(element), wait=True)

    async def _valid_iq(self, element: Element) -> bool:
        iq_type = element.get("type")
        if not element.get("id") or iq_type not in IQ_TYPES:
            await self._error(element, StanzaError("bad-request", "an IQ needs an id and a valid type"))
            return False
        if iq_type in ("get", "set") and len(element) != 1:
            await self._error(element, StanzaError("bad-request", "an IQ get/set has exactly one payload"))
            return False
        return True

    async def _host_iq(self, element: Element, to: JID) -> None:
        iq_type = element.get("type", "")
        if iq_type not in ("get", "set"):
            return
        if len(element) != 1:
            await self._error(element, StanzaError("bad-request"))
            return
        if element.get("to") is None:
            element.set("to", str(to))
        found = self.services.modules.iq_handler(iq_type, element[0], Scope.HOST)
        if found is None:
            await self._error(element, StanzaError("service-unavailable"))
            return
        handler, options = found
        from_jid = self.jid or JID.make(None, self.services.domain)
        ctx = IqContext(
            stanza=element, from_jid=from_jid, to_jid=to, options=options, storage=self.services.storage,
            config=self.services.config, server=self.services.server, remote_address=self.remote,
        )  # fmt: skip
        try:
            reply = await handler(ctx)
        except StanzaError as error:
            await self._error(element, error)
            return
        if reply is not None:
            await self._write_element(reply)

    async def _to_own_user(self, message: m.UserMessage) -> None:
        assert self.jid is not None
        assert self.jid.localpart is not None
        await self.services.router.to_user(self.jid.localpart, message, None, wait=True)

    async def _error(self, element: Element, error: StanzaError) -> None:
        if element.get("type") in ("error", "result"):
            return
        reply = st.error_reply(element, error)
        if self.jid is not None:
            reply.set("to", str(self.jid))
        elif "to" in reply.attrib:
            del reply.attrib["to"]
        await self._write_element(reply)

    def _blocked(self, to: JID) -> bool:
        blocked = self._blocklist
        return bool(blocked) and (str(to) in blocked or str(to.bare) in blocked or to.domainpart in blocked)

    async def _ping_client(self) -> None:
        assert self.jid is not None
        iq = st.make("iq", from_=self.services.domain, to=self.jid, type_="get", id_=self.services.new_id())
        st.child(iq, NS_PING, "ping")
        await self._write_element(iq)

    # ---- writing -----------------------------------------------------------------------------

    async def _mailbox_task(self, cancel_scope: trio.CancelScope) -> None:
        while True:
            try:
                message = await self._mailbox.receive()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                return
            batch = [message]
            while len(batch) < 256:
                try:
                    batch.append(self._mailbox.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                    break
            for item in batch:
                match item:
                    case m.Deliver(stanza=stanza):
                        self._stanzas_out += 1
                        self.stream.send(stanza.data)
                    case m.Kick(condition=condition, text=text):
                        self.stream.close(condition, text)
                    case m.BlocklistChanged(jids=jids):
                        self._blocklist = jids
            await self._flush()
            if self.stream.state.value == "closed":
                cancel_scope.cancel()
                return

    async def _write_element(self, element: Element) -> None:
        self._stanzas_out += 1
        self.stream.send(st.serialize(element))
        await self._flush()

    async def _flush(self) -> None:
        async with self._write_lock:
            data = self.stream.data_to_send()
            if not data:
                return
            with trio.move_on_after(WRITE_TIMEOUT) as scope:
                await self.transport.send_all(data)
            if scope.cancelled_caught:
                # A client that stops reading is cut off rather than hold the worker's memory.
                raise trio.BrokenResourceError("write timed out: client not reading")

    def kick(self, condition: str, text: str = "") -> None:
        try:
            self.ref.send_nowait(m.Kick(condition, text))
        except trio.WouldBlock:
            # A full mailbox: the client stopped reading, so a queued Kick would never be seen.
            # End the session now; its writes are stuck and the stream error goes out if it can.
            self.stream.close(condition, text)
            if self._scope is not None:
                self._scope.cancel()
        except ActorGone:
            pass

    def statistics(self) -> SessionStatistics:
        return SessionStatistics(
            address=str(self.address),
            state=self.stream.state.value,
            jid=None if self.jid is None else str(self.jid),
            stanzas_in=self._stanzas_in,
            stanzas_out=self._stanzas_out,
            mailbox=self._mailbox.statistics(),
        )


_ = math
