"""SessionActor: the I/O shell around one client stream (TCP, STARTTLS or direct TLS).

The only code that awaits a client socket. Two tasks share one write lock: the reader feeds bytes
to the sans-IO `ServerStream` and acts on its events; the mailbox task writes what other actors
deliver; it runs only while there is something to deliver, so an idle session (the common case)
holds only its reader. The session is TEMPORARY: a broken connection is not restarted, the client
reconnects.

XEP-0198 (`imactor.xmpp.sm` holds the counters and the unacked queue): once a client enabled
resumption, a transport that breaks without </stream:stream> leaves the actor *detached*: still
bound in its user actor, holding what is delivered, for `[limits] resume_timeout` seconds. A new
connection that authenticates and sends <resume previd/> finds it in the session table's
`resumable` (`imactor.server.sessions`) and offers it its transport and stream (`take_over`), or,
on another worker, asks it through the mesh to move there (`take_over_remote`).

Collaborators the session owns and calls one way, each given what it needs and nothing of the
session: `ClientWriter` (`imactor.c2s.writer`: the transport, the write lock, the bytes a socket
did not take, XEP-0198's count of what was sent), `Resumption` (`imactor.c2s.resumption`:
detached or not, the deliveries held meanwhile, the hand-over to a resuming connection or worker),
`DurableAcks` (`imactor.c2s.durable`: what `h` may count), `ClientPolicy` (`imactor.c2s.policy`:
the stanza rate and the block list). A XEP-0388 SASL2 login's FAST tokens, inline resumption and
Bind 2 are `imactor.c2s.sasl2`'s, through `resume`, `bind_resource` and `inline_nonza` here.
The transport itself is `imactor.c2s.socket_stream`, `imactor.c2s.tls_stream`, or a web
`FramedStream`.

Why this file is still over 450 lines: what is left is the session's own work, one reader's
events in order: the stream's events (STARTTLS, credentials, bind, XEP-0198 nonzas), the checks
and routing of each stanza from the client (RFC 6120 §8.1.2.1 'from', §10.3 'to', blocking), the
mailbox task and the write without a task, and the session timers' deadlines. Each of these reads
and changes the session's bound JID and stream state; split further, they would call each other
back through the session.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio
from lxml import etree

from imactor import messages as m
from imactor.actors import ActorAddress, ActorGone, AskTimeout, LocalRef, ask
from imactor.actors.mailbox import Mailbox, MailboxStatistics
from imactor.c2s import sasl2 as sasl2_login
from imactor.c2s.durable import COMPLETION_TIMEOUT, DurableAcks
from imactor.c2s.policy import ClientPolicy
from imactor.c2s.resumption import TAKE_OVER_TIMEOUT, Handover, ResumedAnswer, Resumption, resume_moved
from imactor.c2s.socket_stream import SocketStream
from imactor.c2s.tls_stream import TLSSocketStream
from imactor.c2s.transport import FramedStream
from imactor.c2s.writer import TRANSPORT_GONE, WRITE_TIMEOUT, ClientWriter
from imactor.hosts import account_key
from imactor.rooms.actor import removed_presence
from imactor.rooms.fanout import addressed
from imactor.server.host_iqs import answer_host_iq
from imactor.server.host_view import HostView
from imactor.server.modules import Scope, storage_failure
from imactor.storage.errors import StorageError
from imactor.xmpp import events as ev
from imactor.xmpp import sm
from imactor.xmpp import stanza as st
from imactor.xmpp.errors import StanzaError
from imactor.xmpp.jid import JID, InvalidJID
from imactor.xmpp.namespaces import NS_BLOCKING_ERRORS, NS_PING, NS_ROSTER, qname
from imactor.xmpp.stanza import Element, Stanza
from imactor.xmpp.stream import NEED_DATA, ServerStream, State, StreamConfig

if TYPE_CHECKING:
    from imactor.cluster.placement import Membership
    from imactor.server.services import Services

log = logging.getLogger("imactor.session")

READ_SIZE = 65536
#: The first byte of a TLS handshake record (content type 22): what a ClientHello starts with.
TLS_HANDSHAKE_RECORD = b"\x16"
#: Seconds the reader may go on once a write found the transport gone (`_write_lost`).
LOST_WRITE_GRACE = 0.5
IQ_TYPES = frozenset({"get", "set", "result", "error"})
#: XEP-0198: ask for an ack (<r/>) after this many stanzas, or once the stream went quiet with
#: some unacknowledged (between one and two ticks of the session timers, `session_timers.TICK`).
ACK_EVERY = 5
#: Seconds the writer task (`_mailbox_task`) waits for more deliveries before it ends.
WRITER_LINGER = 0.5
#: Stanzas a client may leave unacknowledged (per mailbox slot) before it is cut off.
UNACKED_PER_SLOT = 4
ROSTER_QUERY = qname(NS_ROSTER, "query")
#: Binds tried when the account's home worker dies while it is asked.
BIND_ATTEMPTS = 3
#: Seconds a re-registration with the account's new home may take (`_rebind`).
REBIND_TIMEOUT = COMPLETION_TIMEOUT


PREBIND_NONZAS = frozenset({sm.ENABLE, sm.RESUME})
#: Stream configurations in use, each kept once: all the sessions of a listener have equal ones,
#: and a copy per session (with its own set of nonzas) would cost each about 1 KB.
_STREAM_CONFIGS: dict[StreamConfig, StreamConfig] = {}


def _shared_config(config: StreamConfig) -> StreamConfig:
    found = _STREAM_CONFIGS.get(config)
    if found is None:
        if len(_STREAM_CONFIGS) >= 64:  # bounded, whatever reloads or tests do
            _STREAM_CONFIGS.clear()
        found = _STREAM_CONFIGS[config] = config
    return found


@dataclass(frozen=True, slots=True)
class SessionStatistics:
    address: str
    state: str
    jid: str | None
    stanzas_in: int
    stanzas_out: int
    mailbox: MailboxStatistics


class SessionActor:
    # One per connection: slots instead of a __dict__, which for this many attributes (more than
    # CPython shares between instances) costs about 1.5 KB per session.
    __slots__ = (
        "_ack_mark",
        "_ended",
        "_filters",
        "_handshake_deadline",
        "_handshaken",
        "_handshaking",
        "_interested",
        "_kicked",
        "_last_read",
        "_mailbox",
        "_nursery",
        "_pinged_at",
        "_presence",
        "_resource_state",
        "_scope",
        "_seen_in",
        "_sent_wanted",
        "_serve_scope",
        "_sniffing",
        "_stanzas_in",
        "_stanzas_out",
        "_writing",
        "acks",
        "address",
        "direct_tls",
        "fast_login",
        "jid",
        "joined_rooms",
        "policy",
        "ref",
        "remote",
        "resumption",
        "services",
        "sm",
        "writer",
    )  # fmt: skip

    def __init__(
        self, services: Services, transport: trio.abc.Stream, remote: str, *, direct_tls: bool
    ) -> None:
        self.services = services
        if isinstance(transport, trio.SocketStream):
            # Our own socket stream: a read that waits before it reads, and writes without a task
            # (`send_nowait`, used by `_on_queued`).
            transport = SocketStream.from_trio(transport, send_patience=WRITE_TIMEOUT)
        self.remote = remote
        self.direct_tls = direct_tls
        conn_id = services.new_id()
        self.address = ActorAddress("session", conn_id, services.worker_index)
        self._mailbox: Mailbox[m.SessionMessage] = Mailbox(services.config.limits.mailbox_size)
        self.ref: LocalRef[m.SessionMessage] = LocalRef(self.address, self._mailbox.send_channel)
        config = services.config
        # WebSocket and BOSH (`imactor.web`): RFC 7395 framing, no STARTTLS; HTTPS counts as TLS.
        framed = isinstance(transport, FramedStream)
        stream_config = StreamConfig(
            domain=services.domain,
            hosts=services.hosts.domains - {services.domain},
            tls_available=not framed,
            tls_required=config.listen.c2s.starttls_required and not framed,
            framed=framed,
            max_stanza_size=config.limits.max_stanza_size,
            idle_seconds=int(config.limits.idle_timeout),
            registration_enabled=config.registration.enabled,
            allow_plain=config.auth.allow_plain,
            sasl_retries=config.auth.sasl_retries,
            nonzas=sm.NONZAS | services.modules.nonzas,
            prebind_nonzas=PREBIND_NONZAS,
            bound_features=services.bound_features,
            host_bound_features=services.host_bound_features,
            fake_salt_secret=services.fake_salt_secret,
            sasl2=config.auth.sasl2,
            fast=config.auth.fast_token_lifetime > 0,
            bind2_features=sasl2_login.bind2_features(services.modules),
        )
        stream = ServerStream(
            _shared_config(stream_config),
            stream_id_factory=services.new_id,
            tls_active=direct_tls or (isinstance(transport, FramedStream) and transport.secure),
        )
        if services.mesh is not None and services.mesh.redirect and not framed:
            stream.redirect = services.mesh.redirect  # a busy node of a cluster (docs/cluster.md)
        self.jid: JID | None = None
        #: Rooms joined (room JID → occupant JID), see `_track_room`.
        #: Rooms joined: room JID → (occupant JID, the membership epoch when the join was sent).
        self.joined_rooms: dict[JID, tuple[JID, int]] = {}
        #: The client's stanza rate and the account's block list.
        self.policy = ClientPolicy(
            config.limits.stanzas_per_second, config.limits.stanza_burst, trio.current_time()
        )
        self._stanzas_in = 0
        self._stanzas_out = 0
        # Timers, read by the worker's session timers (`tick`) rather than armed per read.
        now = trio.current_time()
        self._handshake_deadline = now + config.limits.handshake_timeout
        self._last_read = now  #: when the client last sent something
        self._pinged_at: float | None = None  #: when we pinged the quiet client, if we did
        self._handshaking = False  #: a TLS handshake is running (it has its own timeout)
        self._ack_mark = -1  #: `sm.sent` at the last tick (XEP-0198 idle ack requests)
        self._scope: trio.CancelScope | None = None
        # XEP-0198 (see the module docstring).
        self.sm = sm.StreamManagement(ack_every=ACK_EVERY)
        #: The transport and everything written to it.
        self.writer = ClientWriter(
            transport, stream, self.sm,
            unacked_limit=UNACKED_PER_SLOT * self._mailbox.capacity, on_lost=self._write_lost,
        )  # fmt: skip
        #: XEP-0198 §5: detached, held deliveries, and the connection or worker that resumes us.
        self.resumption = Resumption()
        self._seen_in = 0  #: `stream.stanzas_in` already counted into `sm`
        #: The client's messages awaiting durable handling, and the acks that wait for them.
        self.acks = DurableAcks(self.address, self.sm, services.router)
        self._nursery: trio.Nursery | None = None
        #: `_mailbox_task` is running (it runs only while there is something to deliver).
        self._writing = False
        self._handshaken = False
        #: A connection on the STARTTLS port whose first byte is still unread: it may open with a
        #: TLS ClientHello instead (see `_receive`).
        self._sniffing = not direct_tls and type(transport) is SocketStream
        self._serve_scope: trio.CancelScope | None = None
        self._ended = False
        self._kicked = False  #: told to end (conflict, account removed, not reading): no resumption
        self._presence: Stanza | None = None  #: the last available presence broadcast, if any
        self._interested = False  #: asked for the roster (gets pushes)
        #: Modules' views of what is written to the client (XEP-0352 holds some stanzas back).
        self._filters = services.modules.session_filters()
        #: The modules' state of our resource, for the account's next home (`m.ResourceState`).
        self._resource_state: tuple[tuple[str, str], ...] = ()
        #: The account wants the messages we send (`m.SentHooks`; sent carbons).
        self._sent_wanted = False
        #: The XEP-0484 token this connection logged in with, until its SASL2 login completes.
        self.fast_login: sasl2_login.FastLogin | None = None

    # ---- life cycle --------------------------------------------------------------------------

    async def run(
        self, *, task_status: trio.TaskStatus[LocalRef[m.SessionMessage]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started(self.ref)
        self.services.sessions.opened(self)
        try:
            async with trio.open_nursery() as nursery:
                self._scope = nursery.cancel_scope
                self._nursery = nursery
                self.acks.start(nursery.start_soon)
                self._mailbox.on_queued = self._on_queued
                if self._mailbox.pending:
                    self._wake_writer()
                while await self._serve() and await self._detached_wait():
                    pass
                nursery.cancel_scope.cancel()
        # except*: the nursery wraps even a lone transport error in an ExceptionGroup.
        except* TRANSPORT_GONE as group:
            log.debug("%s: transport lost: %r", self.address, group.exceptions)
        finally:
            self._ended = True
            self._drain_mailbox()
            self._mailbox.close()
            self.services.sessions.closed(self)
            self._forget_resumption()
            try:
                if not self.resumption.handed_over:
                    with trio.CancelScope(shield=True):
                        await self._undelivered()
                        await self._unbind()
                        await self.writer.close()
            finally:
                self.writer.detach()

    async def _serve(self) -> bool:
        """Read the current transport until it or the stream ends; True: wait for a resumption."""
        with trio.CancelScope() as self._serve_scope:
            try:
                await self._reader()
            except TRANSPORT_GONE as exc:
                log.debug("%s: transport lost: %r", self.address, exc)
        self._serve_scope = None
        # Stanzas parsed but never acted on (the transport broke mid-batch) were not handled: h
        # does not count them.
        self._seen_in = self.stream.stanzas_in
        if self.resumption.handed_over or self._kicked:
            return False
        if self.resumption.pending:
            return True
        return self.sm.resumable and not self.stream.clean_close

    async def _detached_wait(self) -> bool:
        """Detached: bound, holding deliveries, until a connection resumes us (True) or time is up."""
        resumption = self.resumption
        resumption.detached = True
        log.debug("%s: detached, resumable for %s s", self.address, self.sm.max)
        resumed = resumption.pending
        if resumed and self.stream.state is not State.CLOSED:
            self.stream.close("conflict", "the session was resumed on another connection")
        await self.writer.close()
        if not resumed:
            await self._tell_detached(True)
            await resumption.wait(self.sm.max)
        if resumption.remote is not None:
            await self._move_out()
            return False
        if not resumption.pending:
            return False
        assert self.jid is not None
        self.remote, sent = await resumption.adopt_connection(
            self.writer, self.acks, self.jid, self._release_filters
        )
        self._seen_in = self.stream.stanzas_in
        if sent is not None:
            log.debug("%s: resumed (%d sent again, %d held)", self.address, *sent)
            await self._tell_detached(False)
        return True

    async def _tell_detached(self, detached: bool) -> None:
        """Tell the account whether this session reaches its client (`m.Detached`)."""
        account = self.username
        if self.jid is None or account is None or self._ended:
            return
        notice = m.Detached(self.jid.resourcepart or "", self.ref, detached)
        with trio.move_on_after(5):
            await self.services.router.to_user(account, notice, None, wait=True)

    def _release_filters(self) -> list[bytes]:
        """What the modules' filters held back, in order (a new transport starts unfiltered)."""
        return [data for session_filter in self._filters for data in session_filter.release()]

    def can_resume(self, username: str | None) -> bool:
        return (
            not self._ended
            and not self._kicked
            and not self.resumption.pending
            and self.sm.resumable
            and self.jid is not None
            and self.username == username
        )

    def take_over(self, handover: Handover) -> None:
        """Called by the resuming connection's actor (same worker, synchronously): adopt its
        transport. A session still attached to a half-open connection drops that one first."""
        self.resumption.offer(handover)
        if self._serve_scope is not None:
            self._serve_scope.cancel()

    def take_over_remote(self, request: m.TakeOver) -> None:
        """Called by the mesh when the client resumed this session on another worker: hand the
        session over there (`_move_out`)."""
        self.resumption.offer_remote(request)
        if self._serve_scope is not None:
            self._serve_scope.cancel()

    async def _move_out(self) -> None:
        """The client resumed us on another worker: our state goes there, we end quietly."""
        assert self.jid is not None
        jid = self.jid

        def moved(unacked: tuple[bytes, ...], held: tuple[bytes, ...]) -> m.MovedSession:
            return m.MovedSession(
                jid, self.sm.h_in, self.sm.sent, self.sm.acked, self.sm.max, unacked, held,
                self.policy.blocklist, self._presence, self._interested, self._resource_state,
            )  # fmt: skip

        if not await self.resumption.move_out(self.writer, self.acks, self._release_filters, moved):
            return
        moved_to = self.resumption.moved_to
        assert moved_to is not None
        if self.sm.id is not None:
            self.services.sessions.moved(self.address.key, self.sm.id, moved_to)
        log.debug("%s: moved to %s", self.address, moved_to.address)

    async def _resume_elsewhere(
        self, previd: str, worker: int, h: int, answer: ResumedAnswer | None
    ) -> bytes | None:
        """§5 across workers: the detached session lives on `worker`; it hands its state over."""
        mesh = self.services.mesh
        username = self.authenticated_as or ""
        assert mesh is not None
        target = mesh.remote("resume", previd, worker)
        try:
            moved: m.MovedSession = await ask(
                target,
                lambda reply: m.TakeOver(previd, username, h, self.ref, reply),
                timeout=TAKE_OVER_TIMEOUT,
            )
        except StanzaError as error:
            stale = int(error.text) if error.text.isdigit() else None
            return sm.failed("item-not-found", stale)
        except (AskTimeout, ActorGone):
            return sm.failed("item-not-found")
        self.jid = moved.full_jid
        self.services.sessions.bound(self)
        self.policy.blocklist = moved.blocklist
        self._presence, self._interested = moved.presence, moved.interested
        self._resource_state = moved.state
        self.sm = self.writer.sm = sm.StreamManagement.moved(
            session_id=previd, max_resume=moved.max, h_in=moved.h_in, sent=moved.sent, acked=moved.acked,
            unacked=list(moved.unacked), ack_every=ACK_EVERY,
        )  # fmt: skip
        self.acks.adopt(self.sm)
        self.stream.resumed(moved.full_jid)
        self.stream.track_sent = True
        self.services.sessions.resumable[previd] = self
        mesh.count("resumed_here")
        await resume_moved(self.writer, previd, moved, answer)
        await self._rebind()
        log.debug("%s: resumed %s from w%d", self.address, moved.full_jid, worker)
        return None

    def _forget_resumption(self) -> None:
        if self.sm.id is None:
            return
        if self.services.sessions.resumable.get(self.sm.id) is self:
            del self.services.sessions.resumable[self.sm.id]
        account = self.username
        if self.resumption.moved_to is None and account is not None:
            self.acks.collect()
            self.services.sessions.remember_expired(self.sm.id, account, self.sm.h_in)

    def _drain_mailbox(self) -> None:
        """A managed session keeps what was delivered after its last batch, for `_undelivered`."""
        while self.sm.enabled:
            try:
                item = self._mailbox.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                return
            if isinstance(item, m.Deliver) and not self.resumption.forward(item):
                self.resumption.hold(item.stanza.data)

    async def _undelivered(self) -> None:
        """§4: stanzas the client never acknowledged are treated as undelivered (offline storage)."""
        self.writer.count_sent()
        pending = self.sm.take_unacked() + self.resumption.take_held()
        undelivered: list[Stanza] = []
        for data in pending:
            element = st.parse(data)
            if etree.QName(element).localname == "message":
                with contextlib.suppress(InvalidJID):
                    undelivered.append(Stanza.from_element(element))
        account = self.username
        if undelivered and account is not None:
            with trio.move_on_after(5):
                await self.services.router.to_user(
                    account, m.Undelivered(tuple(undelivered)), None, wait=True
                )

    async def _unbind(self) -> None:
        account = self.username
        if self.jid is not None and account is not None:
            message = m.Unbind(self.jid.resourcepart or "", self.ref)
            # Nearly always the account's mailbox has room: no timer for the common case.
            if await self.services.router.to_user(account, message, None, wait=False):
                return
            with trio.move_on_after(5):
                await self.services.router.to_user(account, message, None, wait=True)

    @property
    def stream(self) -> ServerStream:
        """The sans-IO stream of the current connection (a resumption brings its own)."""
        return self.writer.stream

    @property
    def transport(self) -> trio.abc.Stream:
        return self.writer.transport

    # ---- reading -----------------------------------------------------------------------------

    async def _reader(self) -> None:
        if self.direct_tls and not self._handshaken and not await self._direct_tls_handshake():
            return
        while True:
            if await self._drain_events():
                return
            # No timer per read: the worker's session timers (`tick`) watch `_last_read`.
            data = await self._receive()
            if data is None:  # a TLS ClientHello on the STARTTLS port
                if not await self._direct_tls_handshake():
                    return
                continue
            self._last_read = trio.current_time()
            self._pinged_at = None
            self.stream.receive_data(bytes(data))

    async def _receive(self) -> bytes | bytearray | None:
        """The next bytes from the client; None when it opened the connection on the STARTTLS
        port with a TLS handshake, which is then served as direct TLS.

        Clients try direct TLS first on the port they were given (slixmpp, for a domain without
        SRV records: direct TLS, then STARTTLS), and a TLS handshake record (content type 22,
        0x16) can never begin an XML stream. So the first byte is peeked (MSG_PEEK leaves it
        to OpenSSL) and the connection becomes what it would have been on the direct TLS port
        (XEP-0368). The peek needs no timer or task of its own (the session timers watch the
        handshake deadline), and an XML client pays one extra `recv` on its first read only.
        Any other first byte goes to the parser, which refuses at once what cannot begin an XML
        stream.
        """
        if self._sniffing:
            assert isinstance(self.transport, SocketStream)
            first = await self.transport.peek(1)
            self._sniffing = False
            if first == TLS_HANDSHAKE_RECORD:
                self.writer.upgrade(
                    TLSSocketStream.server_side(
                        self.transport, self.services.ssl_context, send_patience=WRITE_TIMEOUT
                    )
                )
                self.direct_tls = True
                return None
        return await self.transport.receive_some(READ_SIZE)

    async def _direct_tls_handshake(self) -> bool:
        """XEP-0368: the TLS handshake before the first stream header, within the handshake
        timeout; False when it did not end in time (a failed one raises)."""
        self._handshaken = True
        tls = self.transport
        assert isinstance(tls, TLSSocketStream)
        with trio.move_on_after(self.services.config.limits.handshake_timeout) as scope:
            self._handshaking = True  # the session timers leave the handshake its own timeout
            try:
                await tls.do_handshake()
            finally:
                self._handshaking = False
        if scope.cancelled_caught:
            return False
        self.stream.direct_tls_established(self.services.channel_bindings(tls.ssl_object))
        return True

    def tick(self, now: float) -> None:
        """Called by the worker's session timers (`imactor.c2s.timers`) once per tick:
        the deadlines that each read used to arm, and XEP-0198's request for an ack once the
        stream goes quiet. What must be written goes through our own mailbox, so it is written
        in order with the deliveries (without a task when it can: `_on_queued`)."""
        resumption = self.resumption
        if self._ended or self._kicked or self._handshaking or resumption.detached or resumption.handed_over:
            return
        limits = self.services.config.limits
        if self.jid is None:
            if now >= self._handshake_deadline:
                self.kick("connection-timeout", "authenticate and bind in time")
            return
        if self._pinged_at is not None:
            if now >= self._pinged_at + limits.ping_timeout:
                self.kick("connection-timeout", "no answer to ping")
            return
        if now >= self._last_read + limits.idle_timeout:
            self._pinged_at = now
            self._ping_client()
            return
        if self.sm.wants_ack_request(idle=True):
            # Quiet since the last tick with stanzas unacknowledged: ask for an ack now.
            if self._ack_mark == self.sm.sent:
                self._to_self(m.RequestAck())
            self._ack_mark = self.sm.sent

    def _to_self(self, message: m.SessionMessage) -> None:
        with contextlib.suppress(trio.WouldBlock, ActorGone):
            # A full mailbox: the client does not read; the timers' next tick tries again.
            self.ref.send_nowait(message)

    async def _drain_events(self) -> bool:
        """Act on every event the stream has; True when the stream is over (or handed over)."""
        while True:
            event = self.stream.next_event()
            if event is NEED_DATA:
                self._count_in()
                if self.stream.has_output() or self.writer.has_unsent:
                    await self.writer.flush()
                return False
            if isinstance(event, ev.StreamClosed):
                self._count_in()
                await self.writer.flush()
                return True
            await self._on_event(event)  # type: ignore[arg-type]
            if self.resumption.handed_over:
                return True  # the stream is another actor's now: not one more event from it

    def _count_in(self) -> None:
        """XEP-0198 `h`: with every event acted on, the stanzas the stream received but gave no
        event for (it answered them itself) are handled too."""
        self.sm.received(self.stream.stanzas_in - self._seen_in)
        self._seen_in = self.stream.stanzas_in

    async def _on_event(self, event: ev.Event) -> None:
        match event:
            case ev.StartTLSRequested():
                await self._start_tls()
            case ev.CredentialsNeeded(username=localpart):
                username = self.account_key(localpart)  # alice@a and alice@b are two accounts
                throttle = self.services.login_throttle
                if throttle.is_blocked(username, self.remote):
                    self.stream.refuse_auth("temporary-auth-failure", "too many failed attempts; wait")
                else:
                    credentials, disabled = await self.services.storage.accounts.get_login(username)
                    if disabled:
                        # RFC 6120 §6.5.1: the account exists but may not log in (XEP-0133
                        # disable-user); an administrator enables it again.
                        self.stream.refuse_auth("account-disabled", "this account is disabled")
                    else:
                        self.stream.provide_credentials(credentials)
            case ev.AuthFailed(username=localpart):
                account = None if localpart is None else self.account_key(localpart)
                self.services.login_throttle.record_failure(account, self.remote)
            case ev.Authenticated():
                pass
            case ev.TokenNeeded():
                await sasl2_login.check_token(self, event)
            case ev.Sasl2Authenticated():
                await sasl2_login.complete(self, event)
            case ev.BindRequested(resource=resource):
                await self._bind(resource)
            case ev.PreAuthIqReceived(element=element):
                await self._host_iq(element, JID.make(None, self.stream.domain))
            case ev.StanzaReceived(element=element):
                await self._on_counted_stanza(element)
            case ev.NonzaReceived(element=element):
                await self._on_nonza(element)
            case _:
                raise AssertionError(event)

    async def _start_tls(self) -> None:
        await self.writer.flush()
        # STARTTLS is offered on TCP only.
        assert isinstance(self.transport, SocketStream)
        assert not isinstance(self.transport, TLSSocketStream)
        context = self.services.ssl_context
        tls = TLSSocketStream.server_side(self.transport, context, send_patience=WRITE_TIMEOUT)
        self.writer.upgrade(tls)
        with trio.move_on_after(self.services.config.limits.handshake_timeout) as scope:
            self._handshaking = True
            try:
                await tls.do_handshake()
            finally:
                self._handshaking = False
        if scope.cancelled_caught:
            raise trio.BrokenResourceError("TLS handshake timed out")
        self.stream.tls_established(self.services.channel_bindings(tls.ssl_object))

    async def _bind(self, resource: str | None) -> None:
        """RFC 6120 §7: the bind IQ's answer."""
        bound = await self.bind_resource(resource)
        if isinstance(bound, StanzaError):
            self.stream.bind_failed(bound.condition, bound.error_type)
        else:
            self.stream.bind_succeeded(bound)

    async def bind_resource(
        self, resource: str | None, state: tuple[tuple[str, str], ...] = ()
    ) -> JID | StanzaError:
        """Bind `resource` (None: the server chooses) in the account's actor, starting with the
        modules' `state`; the full JID, or why not. RFC 6120 binding and XEP-0386 Bind 2 alike."""
        username = self.authenticated_as or ""
        mesh = self.services.mesh
        for attempt in range(1, BIND_ATTEMPTS + 1):
            home = None if mesh is None else mesh.home("user", username)
            try:
                user = await self.services.router.user(username)
                bound: m.Bound = await ask(
                    user, lambda reply: m.Bind(resource, self.ref, reply, state), timeout=10
                )
            except StanzaError as error:
                return error
            except (AskTimeout, ActorGone) as error:
                # ActorGone: the account's home worker died as we asked (the mesh fails the ask
                # when the membership changes): ask its new home.
                if isinstance(error, ActorGone) and attempt < BIND_ATTEMPTS:
                    continue
                return StanzaError("internal-server-error")
            break
        self.jid = bound.full_jid
        self._resource_state = state
        self.services.sessions.bound(self)
        self.policy.blocklist = bound.blocklist
        if mesh is not None and mesh.home("user", username) != home:
            # The membership changed while we asked: the actor that bound us may have handed off
            # before the mesh saw us bound (no `Rehome` for us then): register with the new home.
            await self._rebind()
        return bound.full_jid

    # ---- XEP-0198 -------------------------------------------------------------------------

    async def _on_counted_stanza(self, element: Element) -> None:
        """Act on a stanza and count it in `h`: once acted on, or for a message routed to an
        account once that account's actor signals its durable writes done (`DurableAcks`)."""
        self._seen_in += 1
        seq = self.acks.received()
        try:
            await self._on_stanza(element)
        finally:
            self.acks.processed(seq)

    def inline_nonza(self, element: etree._Element) -> None:
        """A module's nonza (XEP-0352 <inactive/>), sent on its own or inline in Bind 2."""
        for session_filter in self._filters:
            for data in session_filter.nonza(element):
                self.stream.send(data)  # released stanzas, in their order

    async def _on_nonza(self, element: etree._Element) -> None:
        if element.tag in self.services.modules.nonzas:
            self.inline_nonza(element)
            return
        if element.tag == sm.RESUME and self.stream.state is State.WAIT_FOR_BIND:
            refusal = await self.resume(element)
            if refusal is not None:
                self.stream.send_nonza(refusal)
            return
        if element.tag == sm.R:
            self.acks.collect()  # §4: answer at once with what is handled so far
        try:
            reply = self.sm.handle(
                element,
                bound=self.jid is not None,
                new_id=self.services.sessions.new_resumption_id,
                max_resume=int(self.services.config.limits.resume_timeout),
            )
        except sm.SmStreamError as error:
            self.stream.close(error.condition, error.text, error.app)
            return
        if reply is None:
            return
        if reply.enabled:
            self.stream.track_sent = True
            if self.sm.id is not None:
                self.services.sessions.resumable[self.sm.id] = self
        self.stream.send_nonza(reply.data)
        if element.tag == sm.R:
            self.acks.ack_later(self._send_unasked_ack)

    async def _send_unasked_ack(self) -> None:
        """§4 lets a server send <a/> unasked (`DurableAcks.ack_later`)."""
        if not self.resumption.detached and self.stream.state is State.ESTABLISHED:
            self.stream.send_nonza(sm.ack(self.sm.h_in))
            await self.writer.flush()

    async def resume(self, element: etree._Element, answer: ResumedAnswer | None = None) -> bytes | None:
        """§5: a fresh, authenticated stream asks to carry on a detached (or half-open) session.

        Returns the <failed/> to send, or None once the session was resumed (this actor's
        connection then belongs to it). `answer` writes <resumed/> the way the request came (a
        XEP-0388 <success/> for one inline in SASL2); without it, as a nonza."""
        username = self.authenticated_as
        previd = element.get("previd", "")
        h = sm.parse_h(element)
        if h is None or not previd:
            return sm.failed("bad-request")
        old = self.services.sessions.resumable.get(previd)
        elsewhere = self.services.sessions.resumption_worker(previd)
        if old is None and elsewhere is not None and self.services.mesh is not None:
            return await self._resume_elsewhere(previd, elsewhere, h, answer)
        if old is None or old is self or not old.can_resume(username):
            # Unknown, expired, or another account's id: all look the same to the client.
            stale = self.services.sessions.expired_resumption(previd, username or "")
            return sm.failed("item-not-found", stale)
        await self.writer.flush()
        old.take_over(Handover(self.transport, self.stream, h, self.remote, answer))
        self.resumption.handed_over = True
        return None

    # ---- stanzas from the client ---------------------------------------------------------

    async def _on_stanza(self, element: Element) -> None:
        assert self.jid is not None
        self._stanzas_in += 1
        self.services.stanzas_in_total += 1
        delay = self.policy.delay_for_one(trio.current_time())
        if delay > 0:
            await self.writer.flush()
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
        if to is not None and self.policy.blocks(to):
            # XEP-0191 §3.6: nothing goes to a blocked JID; presence is dropped silently.
            if kind != "presence":
                blocked = (NS_BLOCKING_ERRORS, "blocked")
                # type cancel: XEP-0191 §3.6's example (not RFC 6120's default, modify).
                refusal = StanzaError("not-acceptable", "you blocked this contact", app_condition=blocked,
                                      error_type="cancel")  # fmt: skip
                await self._error(element, refusal)
            return
        await self._dispatch(kind, element, to)

    async def _dispatch(self, kind: str, element: Element, to: JID | None) -> None:
        assert self.jid is not None
        own = self.jid.bare
        domain = self.jid.domainpart  # the session's host
        if kind == "presence":
            element.set("to", str(to or own))
            presence = Stanza.from_element(element)
            self._track_room(presence)
            if to is None and presence.type in ("", "unavailable"):
                # Kept for a re-registration with the account's next home (`m.Rebind`).
                self._presence = presence if presence.type == "" else None
            await self._to_own_user(m.FromResource(presence))
            return
        if kind == "iq":
            iq_type = element.get("type", "")
            if to is None or to == own:
                if iq_type in ("result", "error"):
                    if to is not None:  # an answer to the account's own request (PEP caps query)
                        element.set("to", str(own))
                        await self._to_own_user(m.FromResource(Stanza.from_element(element)))
                    return  # answers to our keepalive pings
                if (
                    to is None
                    and self._host.modules.iq_handler(iq_type, element[0], Scope.ACCOUNT) is None
                ):
                    # RFC 6120 §10.3.3: handled by the server on behalf of the account, so the
                    # answer comes from the account's bare JID (§8.1.2.1).
                    await self._host_iq(element, JID.make(None, domain), on_behalf_of=own)
                    return
                element.set("to", str(own))
                if element[0].tag == ROSTER_QUERY and iq_type == "get":
                    self._interested = True  # RFC 6121 §2.1.6: it gets roster pushes from now on
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
            elif not await self._outgoing_hooks(element, to):
                return
            # The element is ours no more: the recipient's account takes it instead of parsing.
            message = Stanza.from_element(element, hand_over=True)
            # XEP-0198: counted in `h` once the recipient's actor stored it (docs/design.md step 4).
            completion = self.acks.routed(message)
            started = time.perf_counter()
            await self.services.router.route(message, wait=True, completion=completion)
            self.services.route_latency.observe(time.perf_counter() - started)
            if self._sent_wanted:
                await self._to_own_user(m.FromResource(message))  # e.g. XEP-0280 sent carbons
            return
        await self.services.router.route(Stanza.from_element(element), wait=True)

    async def _outgoing_hooks(self, element: Element, to: JID) -> bool:
        """Run the modules' hooks on a message to another server (`Module.on_outgoing`: the
        archive keeps the sender's copy here, since no actor of ours sees it again); False: a
        hook refused it and the client got the error."""
        host = self._host
        hooks = host.modules.outgoing_hooks
        if not hooks or not self.services.router.is_external(to.domainpart):
            return True
        assert self.jid is not None
        for hook, options in hooks:
            try:
                await hook(host.contexts.outgoing(element, self.jid, options))
            except StanzaError as error:
                await self._error(element, error)
                return False
        return True

    def _track_room(self, presence: Stanza) -> None:
        """Remember the rooms (XEP-0045) this client joined: if a room's worker dies, the client
        is told it left (status 333) and joins again at the room's new home."""
        to = presence.to_jid
        if to.localpart is None or to.resourcepart is None:
            return
        if not self.services.router.is_room_domain(to.domainpart):
            return
        if presence.type == "":
            mesh = self.services.mesh
            self.joined_rooms[to.bare] = (to, 0 if mesh is None else mesh.membership.epoch)
        elif presence.type == "unavailable":
            self.joined_rooms.pop(to.bare, None)

    async def _valid_iq(self, element: Element) -> bool:
        iq_type = element.get("type")
        if not element.get("id") or iq_type not in IQ_TYPES:
            await self._error(element, StanzaError("bad-request", "an IQ needs an id and a valid type"))
            return False
        if iq_type in ("get", "set") and len(element) != 1:
            await self._error(element, StanzaError("bad-request", "an IQ get/set has exactly one payload"))
            return False
        return True

    async def _host_iq(self, element: Element, to: JID, *, on_behalf_of: JID | None = None) -> None:
        """Answer an IQ get/set addressed to the server (`to`) with its HOST handler.

        `on_behalf_of`: the request came without 'to', and the server handles it for the account
        (RFC 6120 §10.3.3), so its answer, result or error, comes from the account's bare JID, as
        §8.1.2.1 wants of what the server sends on an account's behalf (or no 'from'). That is what
        a client matches an answer to a request without 'to' by: aioxmpp takes no 'from' or its
        bare JID, and one from the domain left it waiting until its timeout.
        """
        if element.get("type", "") not in ("get", "set"):
            return
        if len(element) != 1:
            await self._error(element, StanzaError("bad-request"), from_=on_behalf_of)
            return
        if element.get("to") is None:
            element.set("to", str(to))
        from_jid = self.jid or JID.make(None, self.stream.domain)
        try:
            host = self._host
            reply = await answer_host_iq(host.modules, host.contexts, element, from_jid, to,
                                         remote=False, remote_address=self.remote)  # fmt: skip
        except StanzaError as error:
            await self._error(element, error, from_=on_behalf_of)
            return
        except StorageError as exc:  # e.g. a XEP-0077 password change on a full disk
            await self._error(element, storage_failure(exc, "the request"), from_=on_behalf_of)
            return
        if reply is not None:
            if on_behalf_of is not None:
                reply.set("from", str(on_behalf_of))
            await self._write_element(reply)

    async def _to_own_user(self, message: m.UserMessage) -> None:
        account = self.username
        assert account is not None
        await self.services.router.to_user(account, message, None, wait=True)

    async def _error(self, element: Element, error: StanzaError, *, from_: JID | None = None) -> None:
        """Bounce `element` with `error` to the client (from its 'to', or from `from_`)."""
        if element.get("type") in ("error", "result"):
            return
        reply = st.error_reply(element, error)
        if from_ is not None:
            reply.set("from", str(from_))
        if self.jid is not None:
            reply.set("to", str(self.jid))
        elif "to" in reply.attrib:
            del reply.attrib["to"]
        await self._write_element(reply)

    def _ping_client(self) -> None:
        """XEP-0199 §4.2: a quiet client is pinged; one that does not answer is cut off (`tick`)."""
        assert self.jid is not None
        iq = st.make("iq", from_=self.jid.domainpart, to=self.jid, type_="get", id_=self.services.new_id())
        st.child(iq, NS_PING, "ping")
        self._to_self(m.Deliver(Stanza.from_element(iq)))

    # ---- writing -----------------------------------------------------------------------------

    def _on_queued(self) -> None:
        """A message arrived in the empty mailbox while no writer waits for it (`Mailbox.on_queued`,
        called by the sender, synchronously): act on it here and now, or start the writer.

        A company's users are quiet: most deliveries arrive alone, and waking a task, then a timer
        to end it, for one write costs more than the write. So while nothing else is being written
        and the transport is a socket, a message that needs no wait (a delivery, a kick, an ack
        request...) is handled here and what it makes the stream say is handed to the socket
        without waiting (`_write_nowait`); only what the socket does not take, or a message that
        needs the session's own task (`m.Rehome`), starts the writer task."""
        if self._writing or self._nursery is None:
            return
        first = self._mailbox.peek_nowait()
        if (
            first is not None
            and not isinstance(first, m.Rehome)
            and not self.resumption.detached
            and self.writer.can_write_nowait()
        ):
            self._mailbox.receive_nowait()
            try:
                self._act(first)
                if not self.writer.flushing:  # a flush in progress sends it, after what it sends now
                    self._write_nowait()
            except Exception:
                # We run in the sender's task (an account, a room): a fault of this session must
                # end this session, not the sender.
                log.exception("%s: failed to write a message; ending the session", self.address)
                if self._scope is not None:
                    self._scope.cancel()
                return
            if not self.writer.has_unsent:
                return
        self._wake_writer()

    def _wake_writer(self) -> None:
        """Start the writer task (`_mailbox_task`) if it is not running."""
        if self._writing or self._nursery is None:
            return
        try:
            self._nursery.start_soon(self._mailbox_task)
        except RuntimeError:  # the session is ending: `_drain_mailbox` looks at what is queued
            return
        self._writing = True

    def _write_nowait(self) -> None:
        self.writer.write_nowait()
        if self.stream.state is State.CLOSED and self._serve_scope is not None:
            self._serve_scope.cancel()

    async def _mailbox_task(self) -> None:
        """Act on what other actors deliver, and write it.

        The task runs only while there is work that the sender could not do for us (`_on_queued`):
        `_wake_writer` starts it, and it ends once the mailbox stayed empty for `WRITER_LINGER`
        seconds, so an idle session holds no task, coroutine or timer for it."""
        try:
            if self.writer.has_unsent and not self.resumption.detached:
                await self.writer.flush()  # what the socket did not take from `_write_nowait`
            await self._deliver_while_busy()
        finally:
            self._writing = False

    async def _deliver_while_busy(self) -> None:
        while True:
            try:
                with trio.move_on_after(WRITER_LINGER) as idle_scope:
                    message = await self._mailbox.receive()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                return
            if idle_scope.cancelled_caught:
                if self._mailbox.pending:
                    continue  # queued as the timer fired, when no receiver was waiting any more
                return  # no await from this check to `_writing = False`: no wake-up is lost
            batch = [message]
            while len(batch) < 256:
                try:
                    batch.append(self._mailbox.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                    break
            for item in batch:
                if isinstance(item, m.Rehome):
                    await self._rebind()
                else:
                    self._act(item)
            if self.resumption.detached:
                continue
            await self.writer.flush()
            if self.stream.state is State.CLOSED and self._serve_scope is not None:
                self._serve_scope.cancel()

    def _act(self, item: m.SessionMessage) -> None:
        """Act on a message that needs no wait (all but `m.Rehome`); the writer flushes after."""
        match item:
            case m.Deliver():
                self._deliver(item)
            case m.Kick(condition=condition, text=text):
                self._kicked = True
                self.stream.close(condition, text)
                if self.resumption.detached and self._scope is not None:
                    self._scope.cancel()  # replaced or removed while detached: over
            case m.RequestAck():
                if not self.resumption.detached and self.sm.wants_ack_request(idle=True):
                    self.stream.send_nonza(sm.REQUEST)
                    self.sm.ack_requested()
            case m.BlocklistChanged(jids=jids):
                self.policy.blocklist = jids
            case m.ResourceState(state=state):
                self._resource_state = state
            case m.SentHooks(wanted=wanted):
                self._sent_wanted = wanted
            case m.RoomsLost(before=before, lost=lost):
                self._rooms_lost(before, lost)
            case m.Rehome():
                raise AssertionError("Rehome needs the writer task")

    def _rooms_lost(self, before: Membership, lost: frozenset[int]) -> None:
        """The rooms this client is in that lived on `lost` restart elsewhere without their
        occupants: tell the client it left each (XEP-0045 status 333) so that it joins again."""
        if self.jid is None:
            return
        for room, (occupant, joined_at) in list(self.joined_rooms.items()):
            if joined_at > before.epoch:
                continue  # joined once the change was known: at the room's new home
            key = self.services.router.room_key(room)
            if key is None or before.home("room", key) not in lost:
                continue
            del self.joined_rooms[room]
            self._deliver(m.Deliver(addressed(removed_presence(occupant), self.jid)))

    def _deliver(self, item: m.Deliver) -> None:
        """Queue a delivered stanza on the stream (or hold it, or pass it on: see the cases)."""
        if self.resumption.forward(item):
            return
        self._stanzas_out += 1
        self.services.stanzas_out_total += 1
        for data in self._filtered(item.stanza):
            if self.sm.enabled and (self.resumption.detached or self.stream.state is State.CLOSED):
                self.resumption.hold(data)  # for a resumption, or offline storage
            else:
                self.stream.send(data)

    def _filtered(self, stanza: Stanza) -> list[bytes]:
        """What to write now for a delivered stanza, once the modules' filters saw it."""
        out: list[bytes] = []
        for session_filter in self._filters:
            got = session_filter.outbound(stanza)
            if not got or got[-1] is not stanza.data:
                return out + got  # held back (maybe releasing older ones)
            out.extend(got[:-1])
        out.append(stanza.data)
        return out

    def _write_lost(self, exc: BaseException) -> None:
        """A write found the transport gone: the reader gets `LOST_WRITE_GRACE` to read what the
        client sent before it went, then ends. A client that sends </stream:stream> (or <close/>)
        and closes at once often makes our next write fail before the reader has seen the closing
        tag; that clean close must still end the session rather than leave it waiting for a
        XEP-0198 resumption that will never come."""
        log.debug("%s: transport lost while writing: %r", self.address, exc)
        if self._serve_scope is not None:
            grace = trio.current_time() + LOST_WRITE_GRACE
            self._serve_scope.deadline = min(self._serve_scope.deadline, grace)

    async def _write_element(self, element: Element) -> None:
        self._stanzas_out += 1
        self.services.stanzas_out_total += 1
        self.stream.send(st.serialize(element))
        await self.writer.flush()

    async def _rebind(self) -> None:
        """Register with the account's new home after a membership change (see `m.Rebind`)."""
        account = self.username
        if self.jid is None or account is None or self._ended:
            return
        rebind = m.Rebind(
            self.jid.resourcepart or "", self.ref, self._presence, self._interested, self._resource_state
        )
        with trio.move_on_after(REBIND_TIMEOUT):
            await self.services.router.to_user(account, rebind, None, wait=True)

    @property
    def username(self) -> str | None:
        """The account key (`imactor.hosts`) this session is bound to, if it is bound."""
        return None if self.jid is None else self.services.hosts.key(self.jid)

    @property
    def authenticated_as(self) -> str | None:
        """The account key this session authenticated as, bound yet or not (SASL succeeded)."""
        if self.jid is not None:
            return self.services.hosts.key(self.jid)
        localpart = self.stream.username
        return None if localpart is None else self.account_key(localpart)

    @property
    def _host(self) -> HostView:
        """The modules of this session's host (the domain its stream named, `HostView`)."""
        return self.services.view(self.jid.domainpart if self.jid is not None else self.stream.domain)

    def account_key(self, localpart: str) -> str:
        """The account key of `localpart` on the host this stream's header named."""
        return account_key(localpart, self.stream.domain, self.services.domain)

    def kick(self, condition: str, text: str = "") -> None:
        try:
            self.ref.send_nowait(m.Kick(condition, text))
        except trio.WouldBlock:
            # A full mailbox: the client stopped reading, so a queued Kick would never be seen.
            # End the session now; its writes are stuck and the stream error goes out if it can.
            self._kicked = True
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
