"""The fuzz targets: every parser that reads bytes from the network, one function of bytes each.

A target returns normally when its input was handled, including inputs the parser refused with
its own documented error (the error that becomes a stream, stanza, SASL, BOSH or HTTP error, or a
dropped mesh frame). Anything else that escapes is a crash: another exception, or an
`InvariantBroken` where a result contradicts itself (a JID that does not round-trip, a stream
that writes XML that does not parse, a parser whose events depend on how the bytes were cut).

Imported by `tests.fuzz.__main__` under atheris' instrumentation (coverage of `imactor`), and by
the unit tests that replay the corpora and the regressions without atheris.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import h11
from lxml import etree

from imactor import messages as m
from imactor.cluster import wire
from imactor.mesh import codec as mesh_codec
from imactor.muc.config_form import apply_submission
from imactor.muc.state import RoomConfig
from imactor.web.messages import read_head
from imactor.xmpp import dataforms, sm
from imactor.xmpp import events as ev
from imactor.xmpp.bosh import BoshError, client_number, parse_body, request_rid
from imactor.xmpp.component import ComponentConfig, ComponentStream, HandshakeVerified
from imactor.xmpp.errors import RemoteProtocolError, StanzaError
from imactor.xmpp.jid import JID, InvalidJID
from imactor.xmpp.parser import (
    ElementReceived,
    ParserEvent,
    StreamOpened,
    XMLStreamParser,
    _State,
)
from imactor.xmpp.pubsub import Limits, NodeConfig
from imactor.xmpp.s2s import DialbackKeyReceived, InboundStream, S2SConfig
from imactor.xmpp.sasl import (
    SaslChallenge,
    SaslFailure,
    SaslNeedCredentials,
    SaslServer,
    SaslState,
    SaslStep,
    SaslSuccess,
)
from imactor.xmpp.sasl_scram import SaslError, parse_client_final, parse_client_first
from imactor.xmpp.scram import ScramCredentials, credentials_from_salted_password, salted_password
from imactor.xmpp.socks5 import Request, Socks5Error, Socks5Handshake
from imactor.xmpp.stanza import serialize
from imactor.xmpp.stream import NEED_DATA, ServerStream, State, StreamConfig

DOMAIN = "localhost"
USER = "alice"
PASSWORD = "fuzz-password"
#: Fixed, so that a seed that logs in with SCRAM keeps logging in (the proof depends on it).
SERVER_NONCE = "fuzzservernonce"
SALT = b"fuzz-salt-16byte"
ITERATIONS = 4096
MAX_STANZA = 8192


class InvariantBroken(AssertionError):
    """A parser accepted its input but produced a result that contradicts itself."""


@dataclass(frozen=True)
class Target:
    name: str
    run: Callable[[bytes], None]
    #: The largest input worth mutating (libFuzzer's -max_len).
    max_len: int
    doc: str


def _credentials() -> dict[str, ScramCredentials]:
    creds = {}
    for hash_name in ("SHA-1", "SHA-256"):
        salted = salted_password(hash_name, PASSWORD.encode(), SALT, ITERATIONS)
        creds[hash_name] = credentials_from_salted_password(hash_name, salted, SALT, ITERATIONS)
    return creds


CREDENTIALS = _credentials()  # PBKDF2 once per process, not per input


def _chunks(data: bytes) -> tuple[int, bytes]:
    """The first byte of an input chooses how the rest is cut into reads (1..256 bytes each)."""
    if not data:
        return 256, b""
    return data[0] + 1, data[1:]


def _cut(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


# ---- the XML stream parser ------------------------------------------------------------------


def _outcome(events: list[ParserEvent]) -> list[object]:
    out: list[object] = []
    for event in events:
        if isinstance(event, StreamOpened):
            out.append(
                ("open", event.tag, dict(event.attributes), event.default_namespace, event.stream_prefix)
            )
        elif isinstance(event, ElementReceived):
            out.append(("element", serialize(event.element)))
        else:
            out.append(("close",))
    return out


def _parse_all(data: bytes, size: int) -> tuple[list[object], str | None, bool]:
    """Every event of `data` fed in reads of `size` bytes, the stream error it ended with, and
    whether the parser was left inside a header or element, waiting for more."""
    parser = XMLStreamParser(max_stanza_size=MAX_STANZA, max_header_size=1024)
    events: list[object] = []
    try:
        for piece in _cut(data, size):
            events += _outcome(parser.feed(piece))
    except RemoteProtocolError as exc:
        return events, exc.stream_condition, False
    finally:
        waiting = parser._state not in (_State.BETWEEN, _State.STREAM_CLOSED)
        parser.close()
    return events, None, waiting


def xml_parser(data: bytes) -> None:
    """`XMLStreamParser` (RFC 6120 §11 restricted XML). Errors: `RemoteProtocolError`.

    Invariant: how the bytes are cut into reads changes nothing. Fed in one read and in reads of
    the size the first byte picks, the stream yields the same events, or fails both times
    (events of the failing read are lost, so only the failure is compared then).
    One difference is allowed: a fault may be seen only once more bytes come (libxml2's push
    parser judges a tag once it has its ">", a reference once it has its ";"), so where one way
    failed the other may still be waiting inside a tag or element (bounded by the size limits).
    """
    size, body = _chunks(data)
    whole_events, whole_error, whole_waiting = _parse_all(body, max(len(body), 1))
    cut_events, cut_error, cut_waiting = _parse_all(body, size)
    # Both may fail with different conditions: an input with two faults (a DOCTYPE in a header
    # too large) meets them in another order when cut otherwise; either stream error is right.
    # And one may fail where the other still waits inside a tag or element for more bytes.
    if (whole_error is None) != (cut_error is None) and not (whole_waiting or cut_waiting):
        raise InvariantBroken(f"one read: {whole_error}, reads of {size}: {cut_error}")
    if whole_error is None and cut_error is None and whole_events != cut_events:
        raise InvariantBroken(f"events differ between one read and reads of {size} bytes")
    if whole_error is not None and whole_events:
        raise InvariantBroken("events of a failing read were returned")
    for event in cut_events:
        if event[0] == "element":
            _reparses(event[1])  # type: ignore[arg-type]


def _reparses(element: bytes) -> None:
    """An element the parser accepted, serialized, is accepted again and serializes the same (what
    a session relays is read by the recipient's server or session with this same parser)."""
    # A generous limit: fed with the header in one read, the element may be charged for more
    # than its own bytes (never less; see XMLStreamParser._feed_lxml).
    parser = XMLStreamParser(max_stanza_size=len(element) + 4096)
    try:
        events = parser.feed(_NEUTRAL_HEADER + element + b"</stream:stream>")
    except RemoteProtocolError as exc:
        raise InvariantBroken(f"{element[:200]!r} parsed once, not twice: {exc}") from None
    finally:
        parser.close()
    again = [serialize(e.element) for e in events if isinstance(e, ElementReceived)]
    if again != [element]:
        raise InvariantBroken(f"{element[:200]!r} parses again as {again!r}")


#: A stream header that declares no default namespace: a serialized element carries its own.
_NEUTRAL_HEADER = b"<stream:stream xmlns:stream='http://etherx.jabber.org/streams'>"


# ---- the stream state machine -----------------------------------------------------------------


def _stream_config(framed: bool) -> StreamConfig:
    return StreamConfig(
        domain=DOMAIN,
        tls_available=not framed,
        tls_required=False,
        framed=framed,
        max_stanza_size=MAX_STANZA,
        registration_enabled=True,
        nonzas=sm.NONZAS,
        prebind_nonzas=frozenset({sm.ENABLE, sm.RESUME}),
        fake_salt_secret=b"fuzz",
    )


class _Shell:
    """What `SessionActor` does with the stream's events, without I/O: TLS is "established" at
    once, the one account gets its credentials, binds succeed, XEP-0198 runs as in the session."""

    def __init__(self, framed: bool, tls_active: bool = True) -> None:
        self.stream = ServerStream(
            _stream_config(framed), stream_id_factory=lambda: "fuzz-stream",
            tls_active=tls_active, nonce_factory=lambda: SERVER_NONCE,
        )  # fmt: skip
        self.sm = sm.StreamManagement()
        self.output: list[bytes] = []
        self.framed = framed

    def pump(self) -> None:
        for _ in range(10_000):  # a bound on events per read: more would be a loop
            event = self.stream.next_event()
            if event is NEED_DATA:
                break
            self._handle(event)
        else:
            raise InvariantBroken("the stream made 10,000 events from one read")
        if self.framed:
            self.output += self.stream.frames_to_send()
        else:
            self.output.append(self.stream.data_to_send())

    def _handle(self, event: object) -> None:
        stream = self.stream
        match event:
            case ev.StartTLSRequested():
                stream.tls_established({"tls-server-end-point": b"\x01" * 32})
            case ev.CredentialsNeeded(username=username):
                stream.provide_credentials(CREDENTIALS if username == USER else None)
            case ev.BindRequested(resource=resource):
                if resource == "conflict":
                    stream.bind_failed("conflict")
                else:
                    stream.bind_succeeded(JID.make(USER, DOMAIN, resource or "generated"))
            case ev.NonzaReceived(element=element):
                self._nonza(element)
            case ev.StanzaReceived(element=element):
                self.sm.stanza_handled(self.sm.stanza_received())
                if element.get("type") not in ("result", "error") and element.tag.endswith("}iq"):
                    reply = b"<iq type='result' id='x'/>"
                    stream.send(reply)
                    if self.sm.enabled:
                        self.sm.stanza_sent(reply)
            case ev.PreAuthIqReceived() | ev.Authenticated() | ev.AuthFailed() | ev.StreamClosed():
                pass
            case _:
                raise InvariantBroken(f"unknown event {event!r}")

    def _nonza(self, element: etree._Element) -> None:
        stream = self.stream
        if element.tag == sm.RESUME:
            stream.send_nonza(sm.failed("item-not-found"))
            return
        try:
            reply = self.sm.handle(element, bound=stream.state is State.ESTABLISHED,
                                   new_id=lambda: "fuzz-sm-id", max_resume=300)  # fmt: skip
        except sm.SmStreamError as exc:
            stream.close(exc.condition, exc.text, exc.app)
            return
        if reply is not None:
            stream.send_nonza(reply.data)


def _check_output(output: bytes) -> None:
    """What the server wrote is well-formed XML: one document per stream header (each restart
    starts one, with its XML declaration), each its header, elements, and maybe its end."""
    if output and not output.startswith(b"<?xml "):
        raise InvariantBroken(f"the server wrote {output[:200]!r} before its stream header")
    for document in re.split(rb"(?=<\?xml )", output):
        if not document:
            continue
        parser = etree.XMLPullParser(events=("start",), resolve_entities=False, no_network=True)
        try:
            parser.feed(document)
            if not document.rstrip().endswith(b"</stream:stream>"):
                parser.feed(b"</stream:stream>")
            parser.close()
        except etree.XMLSyntaxError as exc:
            raise InvariantBroken(f"the server wrote malformed XML: {exc}: {document[-300:]!r}") from None


def stream(data: bytes) -> None:
    """`ServerStream` fed a client's bytes, driven as the session drives it (TLS, SCRAM or PLAIN
    for the one account, binding, XEP-0198). Errors: none escape (they become stream errors).

    The first byte picks the read size, its low bit (below 64) RFC 7395 framing, the next one a
    stream that starts without TLS (STARTTLS then succeeds at once); NUL bytes separate the
    client's writes, each cut into reads of that size (framed: each one message). Invariants:
    no exception escapes `next_event`; what the stream writes parses as XML; EOF ends in CLOSED.
    """
    size, body = _chunks(data)
    framed = bool(size & 1) and size < 64
    shell = _Shell(framed, tls_active=not size & 2)
    # NUL (never part of XML) separates the client's writes: a real client waits for <proceed/>
    # or <success/> before its next header (RFC 6120 §5.4.3.3, §6.4.6).
    writes = [piece for piece in body.split(b"\0") if piece]
    reads = writes if framed else [read for write in writes for read in _cut(write, size)]
    for piece in reads:
        shell.stream.receive_data(piece)
        shell.pump()
        if shell.stream.state is State.CLOSED:
            break
    else:
        shell.stream.receive_data(b"")  # EOF
        shell.pump()
    if shell.stream.state is not State.CLOSED:
        raise InvariantBroken(f"EOF left the stream in {shell.stream.state}")
    if not framed:
        _check_output(b"".join(shell.output))
    else:
        for frame in shell.output:
            if not frame.startswith(b"<?xml"):
                etree.fromstring(frame)


# ---- SASL and SCRAM ------------------------------------------------------------------------------

MECHANISMS = ("SCRAM-SHA-1", "SCRAM-SHA-256", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-256-PLUS", "PLAIN", "X-NONE")


def sasl(data: bytes) -> None:
    """`SaslServer` (RFC 6120 §6, RFC 4616, RFC 5802) and the SCRAM message parsers.

    The first byte picks the mechanism; the rest is split at NUL-NUL-NUL into the initial
    response and the responses after it. Errors: `SaslError` from the parsers; the server turns
    every bad input into a `SaslFailure` and raises nothing. Invariants: a `SaslSuccess` only for
    the one account, and only with a proof from its password.
    """
    if not data:
        return
    mechanism = MECHANISMS[data[0] % len(MECHANISMS)]
    messages = data[1:].split(b"\0\0\0")
    for message in messages:  # the parsers alone, as SCRAM's first and final messages
        for parse in (parse_client_first, parse_client_final):
            with contextlib.suppress(SaslError):
                parse(message)
    server = SaslServer(tls_active=True, channel_bindings={"tls-server-end-point": b"\x01" * 32},
                        nonce_factory=lambda: SERVER_NONCE, fake_salt_secret=b"fuzz",
                        fake_iterations=ITERATIONS, domain=DOMAIN)  # fmt: skip
    step: SaslStep = server.start(mechanism, messages[0] if messages[0] != b"=" else b"")
    for message in [*messages[1:], None]:
        while isinstance(step, SaslNeedCredentials):
            step = server.provide_credentials(CREDENTIALS if step.username == USER else None)
        if isinstance(step, SaslSuccess):
            if step.username != USER:
                raise InvariantBroken(f"SASL succeeded for {step.username!r}")
            return
        if isinstance(step, SaslFailure) or message is None:
            return
        if not isinstance(step, SaslChallenge) or server.state is not SaslState.AWAITING_RESPONSE:
            raise InvariantBroken(f"unexpected step {step!r} in {server.state}")
        step = server.respond(message)


def scram_client_final(client_first: bytes, server_first: bytes, hash_name: str) -> bytes:
    """The client-final-message a real client sends for `USER` (to build seeds that log in)."""
    bare = client_first.split(b",", 2)[2]
    nonce = dict(part.split(b"=", 1) for part in server_first.split(b","))[b"r"]
    without_proof = b"c=" + base64.b64encode(client_first[: len(client_first) - len(bare)]) + b",r=" + nonce
    auth_message = bare + b"," + server_first + b"," + without_proof
    digest = hashlib.sha1 if hash_name == "SHA-1" else hashlib.sha256
    salted = salted_password(hash_name, PASSWORD.encode(), SALT, ITERATIONS)
    client_key = hmac.new(salted, b"Client Key", digest).digest()
    signature = hmac.new(digest(client_key).digest(), auth_message, digest).digest()
    proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
    return without_proof + b",p=" + base64.b64encode(proof)


# ---- JIDs --------------------------------------------------------------------------------------


def jid(data: bytes) -> None:
    """`JID.parse` (RFC 7622 with PRECIS). Errors: `InvalidJID`.

    Invariants: a parsed JID round-trips (its string parses to an equal JID with the same
    string), its bare JID and its parts do too, and no part exceeds 1023 octets (§3.1).
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return  # JIDs reach the parser as XML attribute values: always Unicode
    try:
        parsed = JID.parse(text)
    except InvalidJID:
        return
    again = _reparse(str(parsed), text)
    if again != parsed or str(again) != str(parsed) or hash(again) != hash(parsed):
        raise InvariantBroken(f"{text!r} → {parsed} → {again}")
    bare = parsed.bare
    if _reparse(str(bare), text) != bare or not bare.is_bare:
        raise InvariantBroken(f"the bare JID of {text!r} does not round-trip")
    rebuilt = _make(parsed.localpart, parsed.domainpart, parsed.resourcepart, text)
    if rebuilt != parsed:
        raise InvariantBroken(f"JID.make of the parts of {text!r} gives {rebuilt}")
    for part in (parsed.localpart, parsed.domainpart, parsed.resourcepart):
        if part is not None and not 0 < len(part.encode()) <= 1023:
            raise InvariantBroken(f"a part of {text!r} has {len(part.encode())} octets")


def _reparse(text: str, original: str) -> JID:
    try:
        return JID.parse(text)
    except InvalidJID as exc:
        raise InvariantBroken(f"{original!r} parsed, but its string {text!r} does not: {exc}") from None


def _make(local: str | None, domain: str, resource: str | None, original: str) -> JID:
    try:
        return JID.make(local, domain, resource)
    except InvalidJID as exc:
        raise InvariantBroken(f"the parts of {original!r} do not make a JID: {exc}") from None


# ---- data forms -----------------------------------------------------------------------------------

_HEADER = (
    b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost'>"
)


def data_forms(data: bytes) -> None:
    """Data forms (XEP-0004) in a client's stanza, read as the server reads them: the form parser,
    the room configuration (XEP-0045 §10.2) and the PEP node configuration (XEP-0060 §8.2).

    The input is a stanza (after a stream header, through the restricted parser). Errors:
    `RemoteProtocolError` (not a stanza), `FormError`, `StanzaError` (what the handlers answer).
    """
    parser = XMLStreamParser(max_stanza_size=MAX_STANZA)
    try:
        events = parser.feed(_HEADER + data)
    except RemoteProtocolError:
        return
    finally:
        parser.close()
    for event in events:
        if not isinstance(event, ElementReceived):
            continue
        for form in event.element.iter(dataforms.FORM):
            try:
                submitted = dataforms.parse(form)
            except dataforms.FormError:
                continue
            for consume in _FORM_CONSUMERS:
                with contextlib.suppress(dataforms.FormError, StanzaError):
                    consume(submitted)


_FORM_CONSUMERS: tuple[Callable[[dataforms.SubmittedForm], object], ...] = (
    lambda form: apply_submission(form, RoomConfig(), 100),
    lambda form: NodeConfig().configured(form, Limits()),
    lambda form: (form.boolean("b"), form.integer("i", minimum=0, maximum=10), form.choice("c", ("a", "b"))),
)


# ---- BOSH and HTTP ---------------------------------------------------------------------------------


def bosh_body(data: bytes) -> None:
    """A BOSH request body (XEP-0124, XEP-0206): `parse_body` and the attributes the server reads
    from it (rid, wait, hold). Errors: `BoshError` (a terminate body with its condition).

    Invariant: each child comes out as one serialized element that parses alone.
    """
    try:
        body = parse_body(data, MAX_STANZA)
    except BoshError:
        return
    for child in body.children:
        _reparses(child)
    with contextlib.suppress(BoshError):
        request_rid(body.attributes)
    for name, low in (("wait", 1), ("hold", 0)):
        with contextlib.suppress(BoshError):
            client_number(body.attributes.get(name), 60, low=low)


def http_request(data: bytes) -> None:
    """HTTP/1.1 requests as the web listener reads them (h11 and `messages.read_head`), with the
    body of a BOSH POST through `bosh_body`. Errors: `h11.RemoteProtocolError` (400, 431, ...).
    """
    connection = h11.Connection(h11.SERVER, max_incomplete_event_size=4096)
    size, body = _chunks(data)
    pieces = [*_cut(body, size), b""]
    request: Any = None
    content = bytearray()
    try:
        for piece in pieces:
            connection.receive_data(piece)
            while True:
                event = connection.next_event()
                if event is h11.NEED_DATA or event is h11.PAUSED:
                    break
                if isinstance(event, h11.Request):
                    request = read_head(event)
                elif isinstance(event, h11.Data):
                    content += event.data
                elif isinstance(event, h11.EndOfMessage):
                    if request is not None and request.path == "/http-bind" and request.method == "POST":
                        bosh_body(bytes(content))
                    return
                elif isinstance(event, h11.ConnectionClosed):
                    return
    except h11.RemoteProtocolError:
        return


# ---- the mesh ----------------------------------------------------------------------------------


class _Endpoints:
    """The decoder's view of the mesh: stand-ins for references that cross workers."""

    index = 0

    def reply_id(self, reply: object, target_worker: int) -> str:
        return "r1"

    def completion_id(self, completion: object, target_worker: int) -> str:
        return "c1"

    def session_ref(self, key: str, worker: int) -> Any:
        return ("session", key, worker)

    def remote_reply(self, worker: int, reply_id: str) -> Any:
        return ("reply", worker, reply_id)

    def remote_completion(self, worker: int, completion_id: str, key: str = "") -> Any:
        return ("completion", worker, completion_id, key)


_ENDPOINTS = _Endpoints()
REPLY_KINDS = ("Bound", "MovedSession", "BoshResponse", "Failed")
#: The body kinds `mesh_codec.decode` reads (its docstring's table).
BODY_KINDS = (
    "Deliver", "Kick", "Rehome", "BlocklistChanged", "Bind", "Unbind", "Route", "FromResource",
    "Undelivered", "AccountRemoved", "Rebind", "SentHooks", "ResourceState", "SessionLost", "Detached",
    "TakeOver", "RoomMoved", "Fanout", "BoshRequest",
)  # fmt: skip


def mesh(data: bytes) -> None:
    """Frames between workers: `wire.decode_batch` (the envelope) and `mesh_codec.decode` /
    `decode_reply` (the actor messages' bodies). Errors: `FrameError`, `BodyError`.

    The input is a batch split at the bytes "\\xff\\xfe\\xfd" into frames. Invariant: a frame
    that decodes encodes back to the same bytes (the wire format has one encoding per value).
    """
    frames = data.split(b"\xff\xfe\xfd")
    try:
        envelopes = wire.decode_batch(frames)
    except wire.FrameError:
        envelopes = []
    for frame, envelope in zip(frames, envelopes, strict=False):
        if wire.encode(envelope) != frame:
            raise InvariantBroken(f"frame {frame!r} decodes to {envelope!r}, which encodes otherwise")
        message = envelope.message
        if isinstance(message, wire.ActorMessage):
            _body(message.body_kind, message.body, envelope.source)
    # The codec alone: the first frame's first byte names the body kind.
    if frames[0]:
        kinds = [*BODY_KINDS, *REPLY_KINDS]
        _body(kinds[frames[0][0] % len(kinds)], frames[0][1:], 1)


def _body(kind: str, body: bytes, source: int) -> None:
    try:
        if kind in REPLY_KINDS:
            ok, value = mesh_codec.decode_reply(kind, body)
            if ok and isinstance(value, m.Bound | m.MovedSession | m.BoshResponse):
                return
            if not ok and not isinstance(value, StanzaError):
                raise InvariantBroken(f"a failed reply decoded to {value!r}")
        else:
            mesh_codec.decode(kind, body, source, _ENDPOINTS)
    except mesh_codec.BodyError:
        pass


# ---- the SOCKS5 handshake of the XEP-0065 proxy ------------------------------------------------


def _handshake(pieces: Iterator[bytes]) -> tuple[bytes, object, bytes]:
    """What the proxy writes, the request or the error's reply code, and the bytes left over."""
    handshake = Socks5Handshake()
    written = b""
    try:
        for piece in pieces:
            written += handshake.receive_data(piece)
    except Socks5Error as error:
        return written + error.before, ("refused", error.code), b""
    return written, handshake.request, handshake.leftover


def socks5(data: bytes) -> None:
    size, rest = _chunks(data)
    whole = _handshake(iter([rest]))
    cut = _handshake(_cut(rest, size))
    # An unfinished request may be refused in one read and not yet in reads that stop early:
    # compare only when both finished.
    if whole[1] is not None and cut[1] is not None and whole != cut:
        raise InvariantBroken(f"one read gives {whole!r}, reads of {size} give {cut!r}")
    written, outcome, _ = whole
    # The handshake itself only ever chooses "no authentication"; a request needs that first.
    if written not in (b"", b"\x05\x00") or (isinstance(outcome, Request) and written != b"\x05\x00"):
        raise InvariantBroken(f"wrote {written!r} for {outcome!r}")


# ---- server-to-server and component streams -----------------------------------------------------

COMPONENT_SECRETS = {"gateway.test": "s3cret"}
S2S_CONFIG = S2SConfig("localhost", b"k" * 32, served_domains=frozenset({"conference.localhost"}))


def _drive(
    stream: InboundStream | ComponentStream, reads: list[bytes], decide: Callable[[object], None]
) -> bytes:
    """Feed `reads` then EOF, acting on each event with `decide`; the bytes the stream wrote.
    Invariants: no exception escapes `next_event`, EOF ends the stream, the output is XML."""
    output: list[bytes] = []

    def pump() -> None:
        while (event := stream.next_event()) is not NEED_DATA:
            decide(event)
        output.append(stream.data_to_send())

    for piece in [*reads, b""]:
        stream.receive_data(piece)
        pump()
        if stream.closed:
            break
    if not stream.closed:
        raise InvariantBroken("EOF left the stream open")
    return b"".join(output)


def component(data: bytes) -> None:
    """`ComponentStream` (XEP-0114) fed a component's bytes, accepted when its digest is right.
    The stream id is fixed ("fuzz"), so a mutated handshake may hit the real digest."""
    size, body = _chunks(data)
    stream = ComponentStream(ComponentConfig(COMPONENT_SECRETS), stream_id_factory=lambda: "fuzz")

    def decide(event: object) -> None:
        if isinstance(event, HandshakeVerified):
            stream.accept()

    _check_output(_drive(stream, list(_cut(body, size)), decide))


def s2s_inbound(data: bytes) -> None:
    """`InboundStream` (RFC 6120 for servers, XEP-0220) fed a remote server's bytes. The shell
    grants STARTTLS at once (with no certificate: only dialback may authenticate), and answers
    each dialback key: valid when the key's text is "good"."""
    size, body = _chunks(data)
    stream = InboundStream(S2S_CONFIG, stream_id_factory=lambda: "fuzz")
    reads = [read for write in body.split(b"\0") if write for read in _cut(write, size)]

    def decide(event: object) -> None:
        if isinstance(event, ev.StartTLSRequested):
            stream.tls_established(None)
        elif isinstance(event, DialbackKeyReceived):
            stream.dialback_verified(event.originating, event.receiving, event.key == "good")

    _check_output(_drive(stream, reads, decide))


TARGETS: dict[str, Target] = {
    target.name: target
    for target in (
        Target("xml_parser", xml_parser, 4096, "XMLStreamParser: restricted XML, chunking invariance"),
        Target("stream", stream, 8192, "ServerStream + XEP-0198 driven like a session"),
        Target("sasl", sasl, 1024, "SaslServer, PLAIN, SCRAM client-first/final"),
        Target("jid", jid, 3200, "JID.parse round trips (RFC 7622)"),
        Target("data_forms", data_forms, 4096, "XEP-0004 forms, MUC and PEP configuration"),
        Target("bosh", bosh_body, 4096, "BOSH <body/> (XEP-0124/0206)"),
        Target("http", http_request, 4096, "HTTP/1.1 request heads and BOSH POSTs"),
        Target("mesh", mesh, 4096, "inter-worker frames and actor message bodies"),
        Target("socks5", socks5, 600, "the XEP-0065 proxy's SOCKS5 greeting and request (RFC 1928)"),
        Target("component", component, 4096, "XEP-0114 component streams: header, handshake, stanzas"),
        Target("s2s_inbound", s2s_inbound, 8192, "inbound server-to-server streams: STARTTLS, dialback"),
    )
}
