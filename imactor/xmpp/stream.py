"""The server side of an RFC 6120 client stream, sans-IO (h11 shape).

Bytes go in with `receive_data`; `next_event()` returns the next `Event` or `NEED_DATA`; bytes
to write come out of `data_to_send()`. Decisions that need I/O are the shell's: it answers
`StartTLSRequested` with `tls_established()`, `CredentialsNeeded` with `provide_credentials()`,
`BindRequested` with `bind_succeeded()` / `bind_failed()`. No clock, no randomness: stream ids come
from an injected factory.

Every transition is in `TRANSITIONS` below: (state, top-level element) → handler. An element that
has no entry for the current state is a protocol violation with the stream error named in
`UNEXPECTED`.
"""

from __future__ import annotations

import base64
import binascii
import enum
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from lxml import etree

from imactor.xmpp import events as ev
from imactor.xmpp import fast, sasl2
from imactor.xmpp.errors import LocalProtocolError, RemoteProtocolError
from imactor.xmpp.framing import CLOSE_FRAME, open_frame, parse_frame
from imactor.xmpp.jid import JID, InvalidJID, prep_localpart, prep_resource
from imactor.xmpp.namespaces import (
    NS_BIND,
    NS_CLIENT,
    NS_PRE_APPROVAL,
    NS_REGISTER,
    NS_REGISTER_FEATURE,
    NS_ROSTER_VER,
    NS_SASL,
    NS_SASL_CB,
    NS_SESSION,
    NS_STANZA_ERRORS,
    NS_STANZA_LIMITS,
    NS_STREAM_ERRORS,
    NS_STREAMS,
    NS_TLS,
    qname,
)  # fmt: skip
from imactor.xmpp.parser import ElementReceived, ParserEvent, StreamOpened, XMLStreamParser
from imactor.xmpp.parser import StreamClosed as ParserStreamClosed
from imactor.xmpp.sasl import (
    SaslChallenge,
    SaslFailure,
    SaslNeedCredentials,
    SaslServer,
    SaslState,
    SaslStep,
    SaslSuccess,
)
from imactor.xmpp.scram import ScramCredentials
from imactor.xmpp.stanza import default_ns


class State(enum.Enum):
    #: Waiting for the client's stream header.
    WAIT_FOR_STREAM = "wait-for-stream"
    #: Features sent; TLS is required and not yet negotiated.
    WAIT_FOR_STARTTLS = "wait-for-starttls"
    #: Waiting for <auth/> (or for the next SASL step while `sasl_in_progress`).
    WAIT_FOR_SASL = "wait-for-sasl"
    #: Authenticated, restarted; waiting for resource binding.
    WAIT_FOR_BIND = "wait-for-bind"
    #: Bound: stanzas flow.
    ESTABLISHED = "established"
    #: Closed by either side; nothing more is read or written.
    CLOSED = "closed"


class _NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = _NeedData()

AUTH = qname(NS_SASL, "auth")
RESPONSE = qname(NS_SASL, "response")
ABORT = qname(NS_SASL, "abort")
STARTTLS = qname(NS_TLS, "starttls")
IQ = qname(NS_CLIENT, "iq")
STANZAS = frozenset({qname(NS_CLIENT, "message"), qname(NS_CLIENT, "presence"), IQ})
STREAM_ERROR = qname(NS_STREAMS, "error")
ANY_STANZA = "*stanza"

STREAM_HEADER = (
    "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
    "xmlns:stream='http://etherx.jabber.org/streams' id='{id}' from='{domain}' version='1.0' xml:lang='en'>"
)


@dataclass(frozen=True, slots=True)
class StreamConfig:
    """What the shell decides once per listener; the stream reads it and never changes it."""

    domain: str
    #: The other domains served ([[hosts]]): a stream's `to` may name any of them, and the stream
    #: then speaks for that domain (`ServerStream.domain`).
    hosts: frozenset[str] = frozenset()
    tls_available: bool = True
    tls_required: bool = True
    max_stanza_size: int = 262144
    idle_seconds: int = 300
    registration_enabled: bool = False
    allow_plain: bool = True
    #: Nonzas an extension accepts once bound (e.g. XEP-0198 elements), by Clark tag.
    nonzas: frozenset[str] = frozenset()
    #: Nonzas an extension accepts once authenticated but not yet bound (XEP-0198 <resume/>).
    prebind_nonzas: frozenset[str] = frozenset()
    #: Extra stream features offered once bound, as serialized elements.
    bound_features: tuple[bytes, ...] = ()
    #: The same for each of `hosts` (domain, features): a host's own modules offer their own.
    host_bound_features: tuple[tuple[str, tuple[bytes, ...]], ...] = ()
    #: Failed SASL exchanges a client may retry on one stream before it is closed (RFC 6120
    #: §6.4.5: "at least 2 and no more than 5").
    sasl_retries: int = 3
    #: Keys the fake SCRAM salts of unknown users: stable across restarts and workers, so that a
    #: missing account looks like any other (see `SaslServer`).
    fake_salt_secret: bytes = b""
    #: RFC 7395 framing (WebSocket, BOSH): each `receive_data` call is one whole message, and
    #: <open/> / <close/> stand for the stream header and its end (`imactor.xmpp.framing`).
    framed: bool = False
    #: XEP-0388 SASL2 offered beside RFC 6120 SASL, with XEP-0386 Bind 2 and XEP-0198 inline.
    sasl2: bool = False
    #: XEP-0484 FAST tokens offered inline in SASL2.
    fast: bool = False
    #: Bind 2's inline features the server's modules provide (`imactor.xmpp.sasl2.BIND2_FEATURES`).
    bind2_features: tuple[str, ...] = ()


class ServerStream:
    """One client stream, from header to close, for the shell in `imactor.c2s.session`."""

    def __init__(
        self,
        config: StreamConfig,
        *,
        stream_id_factory: Callable[[], str],
        tls_active: bool = False,
        nonce_factory: Callable[[], str] | None = None,
    ) -> None:
        self.config = config
        self.state = State.WAIT_FOR_STREAM
        self.tls_active = tls_active
        self.username: str | None = None
        self.jid: JID | None = None
        #: The domain the client's first stream header named (`config.domain` or one of
        #: `config.hosts`): the host whose accounts it logs into.
        self.domain = config.domain
        self.stream_id: str | None = None
        #: Where to send a new client instead (``host`` or ``host:port``, RFC 6120 §4.9.3.19),
        #: set by the shell before the first bytes: a busy node of a cluster (docs/cluster.md).
        self.redirect: str | None = None
        self._header_seen = False  #: a stream header came (restarts after TLS and SASL are not first)
        self._stream_id_factory = stream_id_factory
        self._nonce_factory = nonce_factory
        self._channel_bindings: Mapping[str, bytes] = {}
        self._parser = XMLStreamParser(max_stanza_size=config.max_stanza_size)
        self._out: list[bytes] = []
        # Lists, not deques: all three are empty between reads, for hours in an idle session, and
        # an empty deque costs ~600 bytes (its first block) where an empty list costs 56. They hold
        # a handful of items at a time, so list.pop(0) costs no more than deque.popleft().
        self._events: list[ev.Event] = []
        self._pending: list[bytes] = []
        # Parsed but not yet acted on (a shell decision, credentials or TLS, may be pending), in
        # *reverse* order: one read can complete many elements, and pop() from the end is O(1).
        self._parsed: list[ParserEvent] = []
        self._sasl: SaslServer | None = None
        self._sasl_in_progress = False
        self._sasl_username: str | None = None
        self._sasl_failures = 0
        #: The exchange in progress is XEP-0388 SASL2 (its elements are answered in its namespace).
        self._sasl2_exchange = False
        #: What the current SASL2 exchange asked for, once read.
        self._sasl2_request: sasl2.Authenticate | None = None
        #: What this stream's SASL2 feature offered inline (None: SASL2 is not offered).
        self._sasl2_offer: sasl2.Offer | None = None
        self._awaiting_shell = False
        self._pending_bind_id: str | None = None
        #: Stanzas received once bound (including those the stream answers itself).
        self.stanzas_in = 0
        #: Record the bytes of stanzas sent once bound, for `take_sent` (XEP-0198 counting).
        self.track_sent = False
        self._sent: list[bytes] = []
        #: The stream ended on purpose: the peer's </stream:stream> or stream error, or our
        #: `close`. False while open, and when the transport merely ended (EOF, no closing tag).
        self.clean_close = False

    # ---- input -------------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Queue bytes from the peer. `b""` means the peer closed its side, after what it sent before."""
        if self.state is State.CLOSED:
            return
        self._pending.append(data)

    def next_event(self) -> ev.Event | _NeedData:
        """The next event, or `NEED_DATA` when more bytes (or a shell decision) are needed."""
        while not self._events:
            if self.state is State.CLOSED or self._awaiting_shell:
                return NEED_DATA
            try:
                if self._parsed:
                    self._on_parsed(self._parsed.pop())
                elif self._pending:
                    data = self._pending.pop(0)
                    if not data:
                        self._close_quietly()  # EOF
                    elif self.config.framed:
                        self._parsed.append(parse_frame(data, max_stanza_size=self.config.max_stanza_size))
                    else:
                        # _parsed is empty here, so the parser's fresh list can take its place.
                        parsed = self._parser.feed(data)
                        parsed.reverse()
                        self._parsed = parsed
                else:
                    return NEED_DATA
            except RemoteProtocolError as exc:
                self.close(exc.stream_condition, exc.text, content=exc.content)
        return self._events.pop(0)

    def has_output(self) -> bool:
        """Whether `data_to_send` (or `frames_to_send`) has something."""
        return bool(self._out)

    def data_to_send(self) -> bytes:
        data = b"".join(self._out)
        self._out.clear()
        return data

    def frames_to_send(self) -> list[bytes]:
        """What `data_to_send` returns, one top-level element (or header, or end) per item: the
        messages of a framed transport (RFC 7395 §3.3.3)."""
        frames, self._out = self._out, []
        return frames

    def release_idle(self) -> None:
        """The shell saw no input for a while: free what only parsing needs (the lxml parser)."""
        if not self.config.framed:
            self._parser.release_idle()

    # ---- shell decisions --------------------------------------------------------------------

    def tls_established(self, channel_bindings: Mapping[str, bytes]) -> None:
        if self.state is State.CLOSED:
            return  # closed meanwhile (e.g. by another task of the shell): nothing more happens
        self._expect_waiting(State.WAIT_FOR_STARTTLS)
        # Whatever arrived before TLS took effect was cleartext (RFC 6120 §5.4.3.3).
        self._pending.clear()
        self.tls_active = True
        self._channel_bindings = dict(channel_bindings)
        self._restart()

    def direct_tls_established(self, channel_bindings: Mapping[str, bytes]) -> None:
        """Direct TLS (XEP-0368): the handshake ended before the first header; -PLUS can bind to it."""
        if self.state is not State.WAIT_FOR_STREAM or self.stream_id is not None or self.username is not None:
            raise LocalProtocolError("direct TLS is established before the stream starts")
        self.tls_active = True
        self._channel_bindings = dict(channel_bindings)

    def provide_credentials(self, credentials: Mapping[str, ScramCredentials] | None) -> None:
        if self.state is State.CLOSED:
            return
        if self._sasl is None or self._sasl.state is not SaslState.AWAITING_CREDENTIALS:
            raise LocalProtocolError("no SASL exchange is waiting for credentials")
        self._awaiting_shell = False
        self._on_sasl_step(self._sasl.provide_credentials(credentials))

    def refuse_auth(self, condition: str, text: str = "") -> None:
        """Fail the current SASL exchange without checking credentials (throttling)."""
        if self.state is State.CLOSED:
            return
        if self._sasl is None or not self._sasl_in_progress:
            raise LocalProtocolError("no SASL exchange in progress")
        self._awaiting_shell = False
        self._on_sasl_step(SaslFailure(condition, text))

    def token_checked(self, step: SaslSuccess | SaslFailure) -> None:
        """The shell's verdict on a FAST token (`ev.TokenNeeded`): success carries the HT
        responder message as additional data."""
        if self.state is State.CLOSED:
            return
        if not self._sasl_in_progress or not self._awaiting_shell:
            raise LocalProtocolError("no FAST token is being checked")
        self._awaiting_shell = False
        self._on_sasl_step(step)

    def sasl2_succeeded(
        self, identity: JID, additional_data: bytes | None, extra: tuple[bytes, ...] = (), *,
        bound: bool = False,
    ) -> None:  # fmt: skip
        """Answer a SASL2 authentication (`ev.Sasl2Authenticated`) once the shell acted on its
        inline requests: <success/> with `extra` (Bind 2's <bound/>, XEP-0198's <resumed/> or
        <failed/>, a FAST <token/>), then the features of the authenticated stream, which is not
        restarted (XEP-0388 §2.6.1). `bound`: Bind 2 or a resumption gave it the full JID
        `identity` (a resumption has already made the stream established: `resumed`)."""
        if self.state is State.CLOSED:
            return
        if self.username is None or self._sasl2_request is None:
            raise LocalProtocolError("no SASL2 authentication awaits its answer")
        self._awaiting_shell = False
        self._sasl2_request = None
        self._out.append(sasl2.success(str(identity), additional_data, extra))
        if bound and self.state is not State.ESTABLISHED:
            self.jid = identity
            self.state = State.ESTABLISHED
        self._out.append(self._bound_features(bind_offered=not bound))

    def bind_succeeded(self, full_jid: JID) -> None:
        if self.state is State.CLOSED:
            return  # closed while the shell was binding: no result after </stream:stream>
        iq_id = self._take_bind()
        self.jid = full_jid
        self.state = State.ESTABLISHED
        bind = _el(NS_BIND, "bind")
        _sub(bind, NS_BIND, "jid").text = str(full_jid)
        self._write_iq_result(iq_id, bind)

    def resumed(self, full_jid: JID) -> None:
        """XEP-0198 resumption instead of binding: the stream carries `full_jid`'s session on."""
        if self.state is State.CLOSED:
            return
        if self.state is not State.WAIT_FOR_BIND or self._pending_bind_id is not None:
            raise LocalProtocolError("a session is resumed only in place of binding")
        self.jid = full_jid
        self.state = State.ESTABLISHED

    def bind_failed(self, condition: str, error_type: str = "cancel") -> None:
        if self.state is State.CLOSED:
            return
        iq_id = self._take_bind()
        iq = _iq("error", iq_id)
        error = etree.SubElement(iq, qname(NS_CLIENT, "error"), type=error_type)
        etree.SubElement(error, qname(NS_STANZA_ERRORS, condition), nsmap=default_ns(NS_STANZA_ERRORS))
        self._out.append(etree.tostring(iq))

    # ---- output ------------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        """Queue serialized stanza bytes (only once bound, or a pre-auth IQ reply)."""
        if self.state is State.CLOSED:
            return
        if self.track_sent and self.state is State.ESTABLISHED:
            self._sent.append(data)
        self._out.append(data)

    def send_nonza(self, data: bytes) -> None:
        """Queue a serialized top-level element that is not a stanza (e.g. XEP-0198 <r/>)."""
        if self.state is not State.CLOSED:
            self._out.append(data)

    def take_sent(self) -> list[bytes]:
        """The stanzas sent since the last call, oldest first (with `track_sent` on)."""
        sent, self._sent = self._sent, []
        return sent

    def close(
        self, condition: str | None = None, text: str = "", app: bytes | None = None, *, content: str = ""
    ) -> None:
        """Send the stream error `condition` (if any, with an application-specific condition
        `app`, and `content` as the condition's character data) and the closing tag; the stream
        is over."""
        if self.state is State.CLOSED:
            return
        self.clean_close = True
        if self.stream_id is None:
            # §4.9.1.2: an error before the header is answered by a header first.
            self._open_stream()
        if condition is not None:
            self._out.append(stream_error(condition, text, app, content=content))
        self._out.append(self._end_of_stream())
        self.state = State.CLOSED
        self._events.append(ev.StreamClosed(condition))

    # ---- internals ---------------------------------------------------------------------------

    def _on_parsed(self, parsed: object) -> None:
        if isinstance(parsed, StreamOpened):
            self._on_stream_opened(parsed)
        elif isinstance(parsed, ParserStreamClosed):
            self.clean_close = True
            self._close_quietly()
        elif isinstance(parsed, ElementReceived):
            self._on_element(parsed.element)

    def _on_stream_opened(self, opened: StreamOpened) -> None:
        if self.state is not State.WAIT_FOR_STREAM:
            raise RemoteProtocolError("not-well-formed", "a second stream header")
        first, self._header_seen = not self._header_seen, True
        named = (opened.attributes.get("to") or "").lower().rstrip(".")
        if first and named in self.config.hosts:
            self.domain = named  # our header's `from` names the host the client asked for
        self._open_stream()
        if opened.tag != qname(NS_STREAMS, "stream"):
            raise RemoteProtocolError("invalid-namespace", "the root must be <stream:stream/>")
        if opened.default_namespace != NS_CLIENT:
            raise RemoteProtocolError("invalid-namespace", "the content namespace must be jabber:client")
        if opened.stream_prefix not in (None, "stream"):
            raise RemoteProtocolError("bad-namespace-prefix")
        version = opened.attributes.get("version", "0.9")
        major = version.split(".", 1)[0]
        # §4.7.5: major.minor are integers, in ASCII digits (str.isdigit() also takes "²", which
        # int() refuses with a ValueError, and "١", which int() reads as 1).
        if not (major.isascii() and major.isdigit()) or int(major) != 1:
            raise RemoteProtocolError("unsupported-version", "imactor speaks version 1.0")
        to = opened.attributes.get("to")
        if to is None:
            # RFC 6120 §4.7.2: in an initial stream header "the initiating entity MUST include the
            # 'to' attribute" (a domain it expects the receiving entity to service). No condition
            # names a missing 'to' exactly: host-unknown is about the value of a 'to' given, and
            # improper-addressing (§4.9.3.7) about a missing or empty 'to' or 'from', which is this
            # case; Prosody and ejabberd answer it the same way. RFC 7395 §3.3.1 requires the same
            # attributes on a WebSocket <open/>; a BOSH session's 'to' comes from its creation request
            # (XEP-0124 §7.1 requires it there), so its restarts carry it too.
            raise RemoteProtocolError("improper-addressing", "the stream header needs a 'to' attribute")
        if named != self.config.domain and named not in self.config.hosts:
            raise RemoteProtocolError("host-unknown", f"this server does not serve {to!r}")
        if named != self.domain:
            # A restart (after TLS or SASL) names the domain the stream began with: the
            # certificate and the account were that host's.
            raise RemoteProtocolError("host-unknown", f"this stream is for {self.domain!r}, not {to!r}")
        if first and self.redirect:
            # §4.9.3.19: this node serves the domain but sends new clients to another node of
            # the same service; only at the first header, before any credentials are exchanged.
            raise RemoteProtocolError("see-other-host", content=self.redirect)
        self._out.append(self._features())
        if self.state is State.WAIT_FOR_STREAM:
            if self.username is not None:
                self.state = State.WAIT_FOR_BIND
            elif self.config.tls_required and not self.tls_active:
                self.state = State.WAIT_FOR_STARTTLS
            else:
                self.state = State.WAIT_FOR_SASL

    def _open_stream(self) -> None:
        self.stream_id = self._stream_id_factory()
        if self.config.framed:
            self._out.append(open_frame(self.stream_id, self.domain))
            return
        self._out.append(STREAM_HEADER.format(id=self.stream_id, domain=self.domain).encode())

    def _end_of_stream(self) -> bytes:
        return CLOSE_FRAME if self.config.framed else b"</stream:stream>"

    def _on_element(self, element: etree._Element) -> None:
        tag = element.tag
        key = ANY_STANZA if tag in STANZAS else tag
        handler = TRANSITIONS.get((self.state, key))
        if handler is not None:
            handler(self, element)
        elif tag == STREAM_ERROR:
            self.clean_close = True
            self._close_quietly()
        elif tag in self._nonzas_now():
            self._events.append(ev.NonzaReceived(element))
        else:
            condition, text = UNEXPECTED.get(self.state, ("not-authorized", ""))
            if self.state is State.ESTABLISHED:
                condition, text = "unsupported-stanza-type", f"unexpected element {tag}"
            raise RemoteProtocolError(condition, text)

    def _nonzas_now(self) -> frozenset[str]:
        if self.state is State.ESTABLISHED:
            return self.config.nonzas
        if self.state is State.WAIT_FOR_BIND:
            return self.config.prebind_nonzas
        return frozenset()

    def _features(self) -> bytes:
        if self.username is not None:
            return self._bound_features(bind_offered=True)
        if self.config.tls_available and not self.tls_active and self.config.tls_required:
            return _features_bytes(self.config, bound=False, tls_active=False, mechanisms=(), cb_types=())
        self._sasl = self._new_sasl()
        inline: tuple[bytes, ...] | None = None
        if self.config.sasl2:
            # XEP-0388 beside RFC 6120 SASL, where it is offered (after TLS when TLS is required),
            # with the same mechanisms. FAST only under TLS: a token is replayable in clear
            # (XEP-0484 §7).
            secure_fast = self.config.fast and self.tls_active
            fast_mechanisms = tuple(fast.offered(self._channel_bindings)) if secure_fast else ()
            self._sasl2_offer = sasl2.Offer(True, True, fast_mechanisms, self.config.bind2_features)
            inline = sasl2.inline_features(self._sasl2_offer)
        return _features_bytes(
            self.config,
            bound=False,
            tls_active=self.tls_active,
            mechanisms=tuple(self._sasl.mechanisms()),
            cb_types=tuple(self._sasl.channel_binding_types()),
            sasl2_inline=inline,
        )

    def _bound_features(self, *, bind_offered: bool) -> bytes:
        """The features after authentication: the stream's host's own (`host_bound_features`)."""
        hosts = self.config.host_bound_features
        extra = dict(hosts).get(self.domain) if hosts else None
        return _features_bytes(
            self.config, bound=True, tls_active=self.tls_active, mechanisms=(), cb_types=(),
            bind_offered=bind_offered, extra=extra,
        )  # fmt: skip

    def _restart(self) -> None:
        """Stream restart (RFC 6120 §5.4.3.3, §6.4.6): fresh parser, wait for a new header.

        The state after the next header follows from what is settled: TLS, then authentication.
        """
        self._parser.reset()
        # Events the old parser produced after the restart point belong to no stream: a client
        # must wait for <success/> or <proceed/> before it sends the new header (RFC 6120 §6.4.6).
        self._parsed.clear()
        self.stream_id = None
        self.state = State.WAIT_FOR_STREAM

    def _close_quietly(self) -> None:
        if self.state is not State.CLOSED:
            # Our closing tag ends the stream our header opened (RFC 6120 §4.4). Before that header
            # (EOF first thing, or right after a restart) there is no stream to close: a lone
            # </stream:stream> would not even be XML.
            if self.stream_id is not None:
                self._out.append(self._end_of_stream())
            self.state = State.CLOSED
            self._events.append(ev.StreamClosed(None))

    def _expect_waiting(self, state: State) -> None:
        # Waiting inside a SASL exchange means waiting for credentials, not for TLS.
        if not self._awaiting_shell or self._sasl_in_progress:
            raise LocalProtocolError(f"not waiting for the shell in {state}")
        self._awaiting_shell = False

    # ---- element handlers (the table's values) ---------------------------------------------

    def _on_starttls(self, element: etree._Element) -> None:
        if not self.config.tls_available or self.tls_active:
            raise RemoteProtocolError("policy-violation", "STARTTLS is not available here")
        if self._sasl_in_progress:
            raise RemoteProtocolError("policy-violation", "STARTTLS in the middle of a SASL exchange")
        self._out.append(etree.tostring(_el(NS_TLS, "proceed")))
        self._awaiting_shell = True
        # Bytes already queued after <starttls/> would be cleartext injection (CVE-2011-0411 class).
        self._pending.clear()
        self._parsed.clear()
        self._events.append(ev.StartTLSRequested())

    def _on_auth(self, element: etree._Element) -> None:
        if self._sasl is None or self._sasl_in_progress:
            raise RemoteProtocolError("policy-violation", "a SASL exchange is already in progress")
        mechanism = element.get("mechanism", "")
        self._sasl_in_progress = True
        self._sasl2_exchange = False
        data = _b64(element.text)
        if isinstance(data, SaslFailure):
            self._on_sasl_step(data)
        else:
            self._on_sasl_step(self._sasl.start(mechanism, data))

    def _on_response(self, element: etree._Element) -> None:
        sasl = self._sasl
        is_sasl2 = element.tag == sasl2.RESPONSE
        if sasl is None or sasl.state is not SaslState.AWAITING_RESPONSE or is_sasl2 != self._sasl2_exchange:
            raise RemoteProtocolError("policy-violation", "<response/> outside a SASL exchange")
        if is_sasl2:
            try:
                data: bytes | SaslFailure | None = sasl2.decode(element.text)
            except sasl2.Sasl2Error as exc:
                data = SaslFailure(exc.condition, exc.text)
        else:
            data = _b64(element.text)
        self._on_sasl_step(data if isinstance(data, SaslFailure) else sasl.respond(data or b""))

    def _on_abort(self, element: etree._Element) -> None:
        if self._sasl is None or not self._sasl_in_progress:
            raise RemoteProtocolError("policy-violation", "<abort/> outside a SASL exchange")
        if (element.tag == sasl2.ABORT) != self._sasl2_exchange:
            raise RemoteProtocolError("policy-violation", "<abort/> of another SASL profile")
        self._on_sasl_step(self._sasl.abort())

    def _on_authenticate(self, element: etree._Element) -> None:
        """XEP-0388 §2.3: <authenticate/>, with its inline requests read before the mechanism runs."""
        if self._sasl is None or self._sasl2_offer is None:
            raise RemoteProtocolError("policy-violation", "SASL2 is not offered on this stream")
        if self._sasl_in_progress:
            raise RemoteProtocolError("policy-violation", "a SASL exchange is already in progress")
        self._sasl_in_progress = True
        self._sasl2_exchange = True
        try:
            request = sasl2.parse_authenticate(element, self._sasl2_offer)
        except sasl2.Sasl2Error as exc:
            self._on_sasl_step(SaslFailure(exc.condition, exc.text))
            return
        self._sasl2_request = request
        if request.mechanism in self._sasl2_offer.fast_mechanisms:
            self._start_fast(request)
        else:
            self._on_sasl_step(self._sasl.start(request.mechanism, request.initial_response))

    def _start_fast(self, request: sasl2.Authenticate) -> None:
        """An HT mechanism (XEP-0484): one message; the shell checks the token (`ev.TokenNeeded`)."""
        try:
            message = fast.parse_initiator(request.initial_response)
        except fast.FastError as exc:
            self._on_sasl_step(SaslFailure(exc.condition, exc.text))
            return
        try:
            username = prep_localpart(message.authcid)
        except InvalidJID:
            self._on_sasl_step(SaslFailure("not-authorized", "invalid-username-encoding"))
            return
        cb_type = fast.MECHANISMS[request.mechanism]
        cb_data = b"" if cb_type is None else self._channel_bindings.get(cb_type, b"")
        self._awaiting_shell = True
        self._sasl_username = username
        self._events.append(ev.TokenNeeded(username, request, message.proof, cb_data))

    def _on_second_auth(self, element: etree._Element) -> None:
        # XEP-0388 and RFC 6120 §6.4.6: one authentication per stream.
        raise RemoteProtocolError("policy-violation", "the stream is already authenticated")

    def _on_sasl_step(self, step: SaslStep) -> None:
        if isinstance(step, SaslNeedCredentials):
            self._awaiting_shell = True
            self._sasl_username = step.username
            self._events.append(ev.CredentialsNeeded(step.username))
        elif isinstance(step, SaslChallenge):
            challenge = sasl2.challenge if self._sasl2_exchange else functools.partial(_sasl_el, "challenge")
            self._out.append(challenge(step.data))
        elif isinstance(step, SaslSuccess):
            self._sasl_in_progress = False
            # Never needed again on this stream (no second authentication, RFC 6120 §6.4.6),
            # and an idle session would carry the exchange's state for hours.
            self._sasl = None
            self._channel_bindings = {}
            self._sasl2_offer = None
            self.username = step.username
            request = self._sasl2_request
            if self._sasl2_exchange and request is not None:
                # No restart (XEP-0388 §2.6.1): the shell acts on the inline requests, then
                # answers with `sasl2_succeeded`; until then nothing more is read.
                self.state = State.WAIT_FOR_BIND
                self._awaiting_shell = True
                self._events.append(ev.Sasl2Authenticated(step.username, request, step.data))
                return
            self._out.append(_sasl_el("success", step.data))
            self._events.append(ev.Authenticated(step.username))
            self._restart()
        else:
            self._sasl_in_progress = False
            self._sasl2_request = None
            self._write_sasl_failure(step)
            self._events.append(ev.AuthFailed(self._sasl_username, step.condition))
            self._sasl_username = None
            self._sasl_failures += 1
            if self._sasl_failures > self.config.sasl_retries:
                # RFC 6120 §6.4.5: the server SHOULD allow "a configurable but reasonable number of
                # retries (at least 2 and no more than 5)", and when the client "exceeds the number
                # of retries, the receiving entity MUST return a stream error, which SHOULD be
                # <policy-violation/>". The <failure/> above still goes first: every failed
                # exchange is reported with its cause (§6.4.5, §6.5), so the client can tell its
                # user "wrong password" rather than only "policy violation". The stream error
                # follows at once rather than at the next <auth/>: that attempt could only exceed
                # the limit, and waiting for it would hold the connection until the handshake
                # timeout. Every failure counts, whatever its condition (a throttled attempt, an
                # abort, an unknown mechanism), so no loop keeps a stream open.
                self.close("policy-violation", "too many failed authentication attempts")
                return
            # A fresh exchange may be tried; the shell throttles repeated failures.
            self._sasl = self._new_sasl()

    def _new_sasl(self) -> SaslServer:
        return SaslServer(
            tls_active=self.tls_active,
            channel_bindings=self._channel_bindings,
            allow_plain=self.config.allow_plain,
            nonce_factory=self._nonce_factory,
            fake_salt_secret=self.config.fake_salt_secret,
            domain=self.domain,
        )

    def _write_sasl_failure(self, failure: SaslFailure) -> None:
        if self._sasl2_exchange:
            self._out.append(sasl2.failure(failure.condition, failure.text))
            return
        element = _el(NS_SASL, "failure")
        _sub(element, NS_SASL, failure.condition)
        if failure.text:
            _sub(element, NS_SASL, "text").text = failure.text
        self._out.append(etree.tostring(element))

    def _on_preauth_iq(self, element: etree._Element) -> None:
        if (
            self.config.registration_enabled
            and element.tag == IQ
            and element.find(qname(NS_REGISTER, "query")) is not None
        ):
            self._events.append(ev.PreAuthIqReceived(element))
            return
        raise RemoteProtocolError("not-authorized", "authenticate first")

    def _on_stanza_before_tls(self, element: etree._Element) -> None:
        # Not even a register IQ: its password would travel in clear while TLS is required.
        raise RemoteProtocolError("not-authorized", "negotiate TLS and authenticate first")

    def _on_bind_iq(self, element: etree._Element) -> None:
        bind = element.find(qname(NS_BIND, "bind"))
        if element.tag != IQ or element.get("type") != "set" or bind is None:
            raise RemoteProtocolError("not-authorized", "bind a resource first")
        if self._pending_bind_id is not None:
            raise RemoteProtocolError("policy-violation", "one bind at a time")
        iq_id = element.get("id") or ""
        self._pending_bind_id = iq_id
        resource_el = bind.find(qname(NS_BIND, "resource"))
        resource: str | None = None
        if resource_el is not None and resource_el.text:
            try:
                resource = prep_resource(resource_el.text)
            except InvalidJID:
                self.bind_failed("bad-request", "modify")
                return
        self._events.append(ev.BindRequested(iq_id, resource))

    def _on_stanza(self, element: etree._Element) -> None:
        self.stanzas_in += 1
        if (
            element.tag == IQ
            and element.get("type") == "set"
            and element.find(qname(NS_SESSION, "session")) is not None
        ):
            # RFC 3921 session establishment: a no-op kept for old clients (RFC 6121 Appendix E).
            self._write_iq_result(element.get("id") or "", None, to=str(self.jid))
            if self.track_sent:
                self._sent.append(self._out[-1])
            return
        self._events.append(ev.StanzaReceived(element))

    def _take_bind(self) -> str:
        if self._pending_bind_id is None or self.username is None:
            raise LocalProtocolError("no bind request is pending")
        iq_id, self._pending_bind_id = self._pending_bind_id, None
        return iq_id

    def _write_iq_result(self, iq_id: str, payload: etree._Element | None, to: str | None = None) -> None:
        iq = _iq("result", iq_id)
        if to is not None:
            iq.set("to", to)
        if payload is not None:
            iq.append(payload)
        self._out.append(etree.tostring(iq))


_Handler = Callable[[ServerStream, etree._Element], None]

#: (state, element) → handler: the whole transition table of a client stream.
TRANSITIONS: dict[tuple[State, str], _Handler] = {
    (State.WAIT_FOR_STARTTLS, STARTTLS): ServerStream._on_starttls,
    (State.WAIT_FOR_SASL, STARTTLS): ServerStream._on_starttls,
    (State.WAIT_FOR_SASL, AUTH): ServerStream._on_auth,
    (State.WAIT_FOR_SASL, RESPONSE): ServerStream._on_response,
    (State.WAIT_FOR_SASL, ABORT): ServerStream._on_abort,
    (State.WAIT_FOR_SASL, sasl2.AUTHENTICATE): ServerStream._on_authenticate,
    (State.WAIT_FOR_SASL, sasl2.RESPONSE): ServerStream._on_response,
    (State.WAIT_FOR_SASL, sasl2.ABORT): ServerStream._on_abort,
    (State.WAIT_FOR_BIND, sasl2.AUTHENTICATE): ServerStream._on_second_auth,
    (State.ESTABLISHED, sasl2.AUTHENTICATE): ServerStream._on_second_auth,
    (State.WAIT_FOR_SASL, ANY_STANZA): ServerStream._on_preauth_iq,
    (State.WAIT_FOR_STARTTLS, ANY_STANZA): ServerStream._on_stanza_before_tls,
    (State.WAIT_FOR_BIND, ANY_STANZA): ServerStream._on_bind_iq,
    (State.ESTABLISHED, ANY_STANZA): ServerStream._on_stanza,
}

#: The stream error for an element that has no transition, by state.
UNEXPECTED: dict[State, tuple[str, str]] = {
    State.WAIT_FOR_STARTTLS: ("policy-violation", "STARTTLS is required"),
    State.WAIT_FOR_SASL: ("not-authorized", "authenticate first"),
    State.WAIT_FOR_BIND: ("not-authorized", "bind a resource first"),
}


def stream_error(condition: str, text: str = "", app: bytes | None = None, *, content: str = "") -> bytes:
    """A serialized <stream:error/> (RFC 6120 §4.9): the condition (with `content` as its
    character data: see-other-host's host), an optional text and an optional
    application-specific condition; client and server streams alike."""
    error = etree.Element(qname(NS_STREAMS, "error"), nsmap={"stream": NS_STREAMS})
    named = etree.SubElement(error, qname(NS_STREAM_ERRORS, condition), nsmap=default_ns(NS_STREAM_ERRORS))
    if content:
        named.text = content
    if text:
        ns = default_ns(NS_STREAM_ERRORS)
        etree.SubElement(error, qname(NS_STREAM_ERRORS, "text"), nsmap=ns).text = text
    if app is not None:
        error.append(etree.fromstring(app))
    return etree.tostring(error)


def decode_sasl_payload(text: str | None) -> bytes | SaslFailure | None:
    """SASL payload: None when absent, b"" for "=", else base64-decoded (RFC 6120 §6.4.2)."""
    return _b64(text)


@functools.lru_cache(maxsize=64)
def _features_bytes(
    config: StreamConfig,
    *,
    bound: bool,
    tls_active: bool,
    mechanisms: tuple[str, ...],
    cb_types: tuple[str, ...],
    sasl2_inline: tuple[bytes, ...] | None = None,
    bind_offered: bool = True,
    extra: tuple[bytes, ...] | None = None,
) -> bytes:
    """The <stream:features/> offered in one situation, serialized once per listener and situation.

    Every login is offered features three times (before TLS, before SASL, before bind), always
    the same few variants: building them with lxml each time was a measurable part of a login.
    """
    features = etree.Element(qname(NS_STREAMS, "features"), nsmap={"stream": NS_STREAMS})
    if bound:
        if bind_offered:  # not once Bind 2 or a resumption bound the stream
            _sub(features, NS_BIND, "bind")
            _sub(_sub(features, NS_SESSION, "session"), NS_SESSION, "optional")
        _sub(features, NS_ROSTER_VER, "ver")
        _sub(features, NS_PRE_APPROVAL, "sub")
        _limits(features, config)
        for feature in config.bound_features if extra is None else extra:
            features.append(etree.fromstring(feature))
        return etree.tostring(features)
    if config.tls_available and not tls_active:
        starttls = _sub(features, NS_TLS, "starttls")
        if config.tls_required:
            _sub(starttls, NS_TLS, "required")
            return etree.tostring(features)
    sasl_mechanisms = _sub(features, NS_SASL, "mechanisms")
    for name in mechanisms:
        _sub(sasl_mechanisms, NS_SASL, "mechanism").text = name
    if sasl2_inline is not None:
        features.append(sasl2.feature(mechanisms, sasl2_inline))
    if cb_types:
        cb = _sub(features, NS_SASL_CB, "sasl-channel-binding")
        for cb_type in cb_types:
            _sub(cb, NS_SASL_CB, "channel-binding").set("type", cb_type)
    if config.registration_enabled:
        _sub(features, NS_REGISTER_FEATURE, "register")
    _limits(features, config)
    return etree.tostring(features)


def _limits(features: etree._Element, config: StreamConfig) -> None:
    limits = _sub(features, NS_STANZA_LIMITS, "limits")
    _sub(limits, NS_STANZA_LIMITS, "max-bytes").text = str(config.max_stanza_size)
    _sub(limits, NS_STANZA_LIMITS, "idle-seconds").text = str(config.idle_seconds)


def _el(namespace: str, tag: str) -> etree._Element:
    return etree.Element(qname(namespace, tag), nsmap=default_ns(namespace))


def _sub(parent: etree._Element, namespace: str, tag: str) -> etree._Element:
    same = etree.QName(parent).namespace == namespace
    return etree.SubElement(parent, qname(namespace, tag), nsmap=None if same else default_ns(namespace))


def _iq(type_: str, iq_id: str) -> etree._Element:
    iq = etree.Element(IQ, nsmap=default_ns(NS_CLIENT))
    iq.set("type", type_)
    iq.set("id", iq_id)
    return iq


def _sasl_el(tag: str, data: bytes | None) -> bytes:
    element = _el(NS_SASL, tag)
    if data:
        element.text = base64.b64encode(data).decode("ascii")
    elif data is not None and tag == "challenge":
        element.text = "="
    return etree.tostring(element)


def _b64(text: str | None) -> bytes | SaslFailure | None:
    """SASL payload: None when absent, b"" for "=", else base64-decoded (RFC 6120 §6.4.2)."""
    if text is None or not text.strip():
        return None
    if text.strip() == "=":
        return b""
    try:
        return base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        return SaslFailure("incorrect-encoding")
