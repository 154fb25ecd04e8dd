"""Server-to-server streams, sans-IO (RFC 6120 for servers, XEP-0178, XEP-0220), as `ServerStream`.

Two machines, one per direction, because an s2s stream carries stanzas one way only (RFC 6120
§2.4: a server opens its own stream to send, and receives on the stream the peer opened):

- `InboundStream`: a remote server connected to us. We offer STARTTLS (required by default), then
  SASL EXTERNAL when the shell found the peer's certificate valid for the domain its header names
  (XEP-0178), and Server Dialback (XEP-0220) when allowed. Each domain the peer authenticates may
  then send stanzas; a stanza from any other domain is refused, and a second one ends the stream
  with <invalid-from/> (RFC 6120 §4.9.3.9, §8.1.2.2). The peer may also ask us, as the
  authoritative server, to check a key (<db:verify/>): we answer from our own secret.
- `OutboundStream`: we connect to a remote domain. STARTTLS when offered (required unless the
  config says otherwise), then SASL EXTERNAL when offered and our certificate may do, else
  dialback: we send a key (XEP-0185) and wait for the peer's verdict. Once established it carries
  our stanzas, and it also carries our <db:verify/> questions about keys that servers of that
  domain sent us on inbound streams.

Both read bytes with the client stream's `XMLStreamParser` and report `Event`s; the I/O, the
TLS handshakes and the certificate chain checks are the shell's (`imactor.s2s`). Internally
every stanza is in `jabber:client` (the router, the actors and the storage all speak it); the
translation to and from `jabber:server` happens here, at the edge (`to_client_namespace`).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field

from lxml import etree

from imactor.xmpp import events as ev
from imactor.xmpp.certnames import CertificateIdentities
from imactor.xmpp.dialback import dialback_key, key_matches
from imactor.xmpp.errors import LocalProtocolError, RemoteProtocolError, StanzaError
from imactor.xmpp.jid import JID, InvalidJID, prep_domainpart
from imactor.xmpp.namespaces import (
    NS_CLIENT,
    NS_DIALBACK,
    NS_DIALBACK_FEATURE,
    NS_SASL,
    NS_SERVER,
    NS_STANZA_ERRORS,
    NS_STREAMS,
    NS_TLS,
    qname,
)  # fmt: skip
from imactor.xmpp.parser import ElementReceived, ParserEvent, StreamOpened
from imactor.xmpp.parser import StreamClosed as ParserStreamClosed
from imactor.xmpp.pump import ParsingStream
from imactor.xmpp.stream import NEED_DATA, STREAM_ERROR, decode_sasl_payload, stream_error

DB_RESULT = qname(NS_DIALBACK, "result")
DB_VERIFY = qname(NS_DIALBACK, "verify")
STARTTLS = qname(NS_TLS, "starttls")
PROCEED = qname(NS_TLS, "proceed")
TLS_FAILURE = qname(NS_TLS, "failure")
AUTH = qname(NS_SASL, "auth")
SUCCESS = qname(NS_SASL, "success")
FAILURE = qname(NS_SASL, "failure")
FEATURES = qname(NS_STREAMS, "features")
SERVER_STANZAS = frozenset(qname(NS_SERVER, kind) for kind in ("message", "presence", "iq"))
EXTERNAL = "EXTERNAL"

HEADER = (
    "<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams'"
    " xmlns:db='jabber:server:dialback'{attributes} version='1.0'>"
)


@dataclass(frozen=True, slots=True)
class S2SConfig:
    """What the shell decides for every s2s stream of a worker."""

    #: The domain we speak for on our outbound streams (the `from` of headers and keys).
    local_domain: str
    #: The secret our dialback keys are derived from (XEP-0185), the same in every worker.
    secret: bytes
    #: Domains we accept stanzas for on inbound streams (the server's domain and its services).
    served_domains: frozenset[str] = frozenset()
    tls_available: bool = True
    tls_required: bool = True
    #: XEP-0220 where certificates do not authenticate the peer; off: certificates only.
    dialback_allowed: bool = True
    max_stanza_size: int = 262144
    #: Stanzas from an unauthenticated domain that are refused before the stream is closed.
    max_offences: int = 1

    def serves(self, domain: str) -> bool:
        return domain == self.local_domain or domain in self.served_domains


# ---- events ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TLSProceed:
    """Outbound: the peer said <proceed/>. Start TLS as the client, then call `tls_established`."""


@dataclass(frozen=True, slots=True)
class DialbackKeyReceived:
    """Inbound: `originating` claims to be itself with `key` (XEP-0220 §2.1.1). Ask a server of
    `originating` (our outbound stream there, <db:verify/>) and call `dialback_verified`."""

    originating: str
    receiving: str
    key: str
    stream_id: str


@dataclass(frozen=True, slots=True)
class PeerAuthenticated:
    """Inbound: stanzas from `domain` are now accepted on this stream."""

    domain: str
    method: str  #: "sasl-external" or "dialback"


@dataclass(frozen=True, slots=True)
class StanzaRefused:
    """Inbound: a stanza the stream dropped (logged by the shell): its `from` or `to` is not
    one the stream may carry (`condition`: the stream error a repeat will get)."""

    element: etree._Element
    condition: str


@dataclass(frozen=True, slots=True)
class OutboundReady:
    """Outbound: authenticated; `send_stanza` may be called."""

    method: str  #: "sasl-external" or "dialback"


@dataclass(frozen=True, slots=True)
class OutboundFailed:
    """Outbound: the stream cannot carry stanzas (it is closed); bounce what waits for it."""

    condition: str
    text: str


@dataclass(frozen=True, slots=True)
class VerifyAnswered:
    """Outbound: the peer's answer to our <db:verify id=stream_id/> about `originating`."""

    originating: str
    stream_id: str
    valid: bool


S2SEvent = (
    ev.StartTLSRequested | TLSProceed | DialbackKeyReceived | PeerAuthenticated | StanzaRefused
    | OutboundReady | OutboundFailed | VerifyAnswered | ev.StanzaReceived | ev.StreamClosed
)  # fmt: skip


# ---- namespaces at the edge ------------------------------------------------------------------


def to_client_namespace(element: etree._Element) -> etree._Element:
    """A copy of a stanza received in `jabber:server` with that namespace replaced by
    `jabber:client` (its children too), as the router and the actors expect."""
    return renamespace(element, NS_SERVER, NS_CLIENT)


def to_server_namespace(element: etree._Element) -> etree._Element:
    """The reverse, for a stanza about to leave on an s2s stream (RFC 6120 §4.8.3)."""
    return renamespace(element, NS_CLIENT, NS_SERVER)


class UnrepresentableNamespace(ValueError):
    """A stanza names a namespace that lxml parses but will not create (not a URI reference,
    e.g. ``urn:a]]>b``): it cannot be translated for another stream. Found by fuzzing."""


def unrelayable() -> StanzaError:
    """The bounce of a stanza that `UnrepresentableNamespace` stops on its way out."""
    return StanzaError("bad-request", "the stanza names a namespace that is not a URI: it cannot be relayed")


def renamespace(element: etree._Element, old: str, new: str) -> etree._Element:
    """A copy of `element` with the namespace `old` replaced by `new`, its children too.

    Raises:
        UnrepresentableNamespace: a namespace of the stanza that lxml will not create.
    """
    try:
        return _renamespace(element, old, new)
    except ValueError as exc:
        raise UnrepresentableNamespace(str(exc)) from None


def _renamespace(element: etree._Element, old: str, new: str) -> etree._Element:
    # lxml cannot change the namespace a node's prefix is bound to; a copy with new tags and
    # nsmaps is the only clean way (renaming tags in place leaves "ns0:" prefixes behind).
    def swap(uri: str | None) -> str | None:
        return new if uri == old else uri

    def tag_of(node: etree._Element) -> str:
        qualified = etree.QName(node)
        return (
            qname(swap(qualified.namespace) or "", qualified.localname) if qualified.namespace else node.tag
        )

    def copy(node: etree._Element, parent: etree._Element | None) -> etree._Element:
        inherited = parent.nsmap if parent is not None else {}
        nsmap = {
            prefix: swap(uri) for prefix, uri in node.nsmap.items() if inherited.get(prefix) != swap(uri)
        }
        if parent is None:
            made = etree.Element(tag_of(node), nsmap=nsmap)  # type: ignore[arg-type]
        else:
            made = etree.SubElement(parent, tag_of(node), nsmap=nsmap or None)  # type: ignore[arg-type]
        for name, value in node.attrib.items():
            made.set(name, value)
        made.text, made.tail = node.text, node.tail if parent is not None else None
        for child in node:
            copy(child, made)
        return made

    return copy(element, None)


# ---- the common machinery ----------------------------------------------------------------------


class _S2SStream(ParsingStream[S2SEvent]):
    """Output, events and closing, shared by both directions (parsing: `ParsingStream`)."""

    def __init__(self, config: S2SConfig) -> None:
        super().__init__(config.max_stanza_size)
        self.config = config
        self.tls_active = False
        self.stream_id: str | None = None
        self._closed = False
        self._awaiting_shell = False
        self._header_sent = False

    @property
    def closed(self) -> bool:
        return self._closed

    def _held(self) -> bool:
        return self._awaiting_shell

    def _on_eof(self) -> None:
        self._end(None, clean=False)

    def close(self, condition: str | None = None, text: str = "") -> None:
        """Send the stream error `condition` (if any) and our closing tag; the stream is over."""
        if self.closed:
            return
        if not self._header_sent:
            self._send_header(None)  # RFC 6120 §4.9.1.2: a header first, even to refuse
        if condition is not None:
            self._out.append(stream_error(condition, text))
        self._end(condition, clean=True)

    # ---- for the subclasses ----------------------------------------------------------------

    def _end(self, condition: str | None, *, clean: bool) -> None:
        if self._header_sent and (clean or condition is None):
            self._out.append(b"</stream:stream>")
        self._closed = True
        self._events.append(ev.StreamClosed(condition))

    def _send_header(self, to: str | None, *, stream_id: str | None = None, from_: str | None = None) -> None:
        attributes = ""
        for name, value in (("from", from_ or self.config.local_domain), ("to", to), ("id", stream_id)):
            if value:
                attributes += f" {name}={_quote(value)}"
        self._out.append(HEADER.format(attributes=attributes).encode())
        self._header_sent = True

    def _restart(self) -> None:
        """RFC 6120 §5.4.3.3 and §6.4.6: a fresh parser and a new header from the initiator."""
        self._parser.reset()
        self._parsed.clear()
        self._header_sent = False

    def _on_parsed(self, parsed: ParserEvent) -> None:
        if isinstance(parsed, StreamOpened):
            _check_header(parsed)
            self._on_header(parsed)
        elif isinstance(parsed, ParserStreamClosed):
            self._end(None, clean=True)
        elif isinstance(parsed, ElementReceived):
            if parsed.element.tag == STREAM_ERROR:
                self._end(None, clean=True)
            else:
                self._on_element(parsed.element)

    def _on_header(self, opened: StreamOpened) -> None:
        raise NotImplementedError

    def _on_element(self, element: etree._Element) -> None:
        raise NotImplementedError


def _check_header(opened: StreamOpened) -> None:
    if opened.tag != qname(NS_STREAMS, "stream"):
        raise RemoteProtocolError("invalid-namespace", "the root must be <stream:stream/>")
    if opened.default_namespace != NS_SERVER:
        raise RemoteProtocolError("invalid-namespace", "the content namespace must be jabber:server")
    if opened.stream_prefix not in (None, "stream"):
        raise RemoteProtocolError("bad-namespace-prefix")
    major = opened.attributes.get("version", "0.9").split(".", 1)[0]
    # Version 1.0 only: pre-1.0 servers have no stream features, so neither STARTTLS nor SASL.
    if not (major.isascii() and major.isdigit()) or int(major) != 1:
        raise RemoteProtocolError("unsupported-version", "imactor speaks version 1.0 only")


def _domain(value: str | None) -> str | None:
    """A domainpart in its canonical form, or None when absent or not a domain."""
    if not value:
        return None
    try:
        return prep_domainpart(value)
    except InvalidJID:
        return None


def _quote(value: str) -> str:
    return "'" + value.replace("&", "&amp;").replace("'", "&apos;").replace("<", "&lt;") + "'"


def _element(namespace: str, tag: str, **attributes: str) -> etree._Element:
    # The dialback elements keep their usual "db:" prefix (XEP-0220's examples; some servers match it).
    nsmap: dict[str | None, str] = {"db": namespace} if namespace == NS_DIALBACK else {None: namespace}
    element = etree.Element(qname(namespace, tag), nsmap=nsmap)  # type: ignore[arg-type]
    for name, value in attributes.items():
        element.set(name.rstrip("_"), value)
    return element


# ---- inbound -------------------------------------------------------------------------------------


class InboundState(enum.Enum):
    WAIT_FOR_STREAM = "wait-for-stream"
    WAIT_FOR_STARTTLS = "wait-for-starttls"
    OPEN = "open"  #: TLS settled: authentication, verification requests and stanzas
    CLOSED = "closed"


class InboundStream(_S2SStream):
    """A stream a remote server opened to us (module docstring)."""

    def __init__(self, config: S2SConfig, *, stream_id_factory: Callable[[], str]) -> None:
        super().__init__(config)
        self.state = InboundState.WAIT_FOR_STREAM
        self._stream_id_factory = stream_id_factory
        #: The domain the peer's header names (`from`), if any.
        self.peer_domain: str | None = None
        #: Domains authenticated on this stream (SASL EXTERNAL, or each dialback key verified).
        self.authenticated: set[str] = set()
        self.certificate: CertificateIdentities | None = None
        self._sasl_done = False
        self._offences = 0
        self._pending_keys: set[tuple[str, str]] = set()

    @property
    def authenticated_any(self) -> bool:
        return bool(self.authenticated)

    def _end(self, condition: str | None, *, clean: bool) -> None:
        self.state = InboundState.CLOSED
        super()._end(condition, clean=clean)

    # ---- shell decisions -------------------------------------------------------------------

    def tls_established(self, certificate: CertificateIdentities | None) -> None:
        """TLS is up; `certificate`: the identities of a peer certificate whose chain the shell
        validated, or None (none sent, or not trusted: then only dialback may authenticate)."""
        if self.closed:
            return
        if not self._awaiting_shell:
            raise LocalProtocolError("no STARTTLS is waiting for the shell")
        self._awaiting_shell = False
        self._pending.clear()  # whatever came before TLS took effect was cleartext (§5.4.3.3)
        self.tls_active = True
        self.certificate = certificate
        self._restart()
        self.state = InboundState.WAIT_FOR_STREAM

    def direct_tls_established(self, certificate: CertificateIdentities | None) -> None:
        """XEP-0368: TLS from the first byte, before any header."""
        if self._header_sent or self.state is not InboundState.WAIT_FOR_STREAM:
            raise LocalProtocolError("direct TLS is established before the stream starts")
        self.tls_active = True
        self.certificate = certificate

    def dialback_verified(self, originating: str, receiving: str, valid: bool) -> None:
        """The authoritative server's verdict on the key of `DialbackKeyReceived` (XEP-0220 §2.1.4)."""
        if self.closed or (originating, receiving) not in self._pending_keys:
            return
        self._pending_keys.discard((originating, receiving))
        result = _element(
            NS_DIALBACK, "result", from_=receiving, to=originating, type="valid" if valid else "invalid"
        )
        self._out.append(etree.tostring(result))
        if valid:
            self.authenticated.add(originating)
            self._events.append(PeerAuthenticated(originating, "dialback"))

    # ---- the stream ----------------------------------------------------------------------------

    def _on_header(self, opened: StreamOpened) -> None:
        if self.state is not InboundState.WAIT_FOR_STREAM:
            raise RemoteProtocolError("not-well-formed", "a second stream header")
        self.stream_id = self._stream_id_factory()
        to = _domain(opened.attributes.get("to"))
        peer = opened.attributes.get("from")
        self.peer_domain = _domain(peer)
        self._send_header(self.peer_domain, stream_id=self.stream_id, from_=to or self.config.local_domain)
        if to is None:
            # RFC 6120 §4.7.2: the initiating entity MUST include 'to'; §4.9.3.7.
            raise RemoteProtocolError("improper-addressing", "the stream header needs a 'to' attribute")
        if not self.config.serves(to):
            raise RemoteProtocolError("host-unknown", f"this server does not serve {to!r}")
        if peer is not None and self.peer_domain is None:
            raise RemoteProtocolError("invalid-from", "the header's 'from' is not a domain")
        self._out.append(self._features())
        if self.config.tls_available and self.config.tls_required and not self.tls_active:
            self.state = InboundState.WAIT_FOR_STARTTLS
        else:
            self.state = InboundState.OPEN

    def _features(self) -> bytes:
        features = etree.Element(FEATURES, nsmap={"stream": NS_STREAMS})
        if self._sasl_done:
            return etree.tostring(features)  # RFC 6120 §6.4.6: nothing left to negotiate but what follows
        if self.config.tls_available and not self.tls_active:
            starttls = etree.SubElement(features, STARTTLS, nsmap={None: NS_TLS})  # type: ignore[dict-item]
            if self.config.tls_required:
                etree.SubElement(starttls, qname(NS_TLS, "required"))
                return etree.tostring(features)
        if self._external_allowed():
            mechanisms = etree.SubElement(features, qname(NS_SASL, "mechanisms"),
                                          nsmap={None: NS_SASL})  # type: ignore[dict-item]  # fmt: skip
            etree.SubElement(mechanisms, qname(NS_SASL, "mechanism")).text = EXTERNAL
        if self.config.dialback_allowed:
            dialback = etree.SubElement(features, qname(NS_DIALBACK_FEATURE, "dialback"),
                                        nsmap={None: NS_DIALBACK_FEATURE})  # type: ignore[dict-item]  # fmt: skip
            etree.SubElement(dialback, qname(NS_DIALBACK_FEATURE, "errors"))  # XEP-0220 §2.4.1
        return etree.tostring(features)

    def _external_allowed(self) -> bool:
        """XEP-0178 §3: offer EXTERNAL only when the certificate is valid for the header's domain."""
        return (
            self.tls_active
            and self.certificate is not None
            and self.peer_domain is not None
            and self.certificate.speaks_for(self.peer_domain)
        )

    def _on_element(self, element: etree._Element) -> None:
        tag = element.tag
        if self.state is InboundState.WAIT_FOR_STARTTLS and tag != STARTTLS:
            raise RemoteProtocolError("policy-violation", "STARTTLS is required")
        if tag == STARTTLS:
            self._on_starttls()
        elif tag == AUTH:
            self._on_auth(element)
        elif tag == DB_RESULT:
            self._on_db_result(element)
        elif tag == DB_VERIFY:
            self._on_db_verify(element)
        elif tag in SERVER_STANZAS:
            self._on_stanza(element)
        else:
            raise RemoteProtocolError("unsupported-stanza-type", f"unexpected element {tag}")

    def _on_starttls(self) -> None:
        if not self.config.tls_available or self.tls_active:
            raise RemoteProtocolError("policy-violation", "STARTTLS is not available here")
        self._out.append(etree.tostring(_element(NS_TLS, "proceed")))
        self._awaiting_shell = True
        self._pending.clear()  # bytes after <starttls/> would be cleartext injection
        self._parsed.clear()
        self._events.append(ev.StartTLSRequested())

    def _on_auth(self, element: etree._Element) -> None:
        if self._sasl_done:
            raise RemoteProtocolError("policy-violation", "already authenticated")
        condition = self._external_refusal(element)
        if condition is not None:
            failure = _element(NS_SASL, "failure")
            etree.SubElement(failure, qname(NS_SASL, condition))
            self._out.append(etree.tostring(failure))
            return
        assert self.peer_domain is not None
        self._sasl_done = True
        self._out.append(etree.tostring(_element(NS_SASL, "success")))
        self.authenticated.add(self.peer_domain)
        self._events.append(PeerAuthenticated(self.peer_domain, "sasl-external"))
        self._restart()
        self.state = InboundState.WAIT_FOR_STREAM

    def _external_refusal(self, element: etree._Element) -> str | None:
        """The SASL failure condition for this <auth/> (RFC 6120 §6.5), None when it succeeds."""
        if element.get("mechanism") != EXTERNAL:
            return "invalid-mechanism"
        if not self._external_allowed():
            return "not-authorized"
        payload = decode_sasl_payload(element.text)
        if payload is None or (isinstance(payload, bytes) and not payload):
            return None  # no authorization identity: the header's domain (XEP-0178 §3)
        if not isinstance(payload, bytes):
            return "incorrect-encoding"
        try:
            authzid = _domain(payload.decode("utf-8"))
        except UnicodeDecodeError:
            return "incorrect-encoding"
        return None if authzid == self.peer_domain else "invalid-authzid"

    def _on_db_result(self, element: etree._Element) -> None:
        if element.get("type"):
            raise RemoteProtocolError(
                "unsupported-stanza-type", "a <db:result/> verdict on an inbound stream"
            )
        if not self.config.dialback_allowed:
            raise RemoteProtocolError("not-authorized", "this server requires certificates (no dialback)")
        originating, receiving = _domain(element.get("from")), _domain(element.get("to"))
        if originating is None or receiving is None:
            raise RemoteProtocolError("improper-addressing", "<db:result/> needs a 'from' and a 'to' domain")
        if not self.config.serves(receiving):
            self._db_error(originating, receiving, "item-not-found")  # XEP-0220 §2.4
            return
        assert self.stream_id is not None
        self._pending_keys.add((originating, receiving))
        self._events.append(
            DialbackKeyReceived(originating, receiving, (element.text or "").strip(), self.stream_id)
        )

    def _db_error(self, originating: str, receiving: str, condition: str) -> None:
        result = _element(NS_DIALBACK, "result", from_=receiving, to=originating, type="error")
        error = etree.SubElement(result, "error", type="cancel")
        etree.SubElement(error, qname(NS_STANZA_ERRORS, condition), nsmap={None: NS_STANZA_ERRORS})  # type: ignore[dict-item]
        self._out.append(etree.tostring(result))

    def _on_db_verify(self, element: etree._Element) -> None:
        """We are the authoritative server: is this the key we generated? (XEP-0220 §2.1.3)"""
        receiving, originating = _domain(element.get("from")), _domain(element.get("to"))
        stream_id = element.get("id") or ""
        if receiving is None or originating is None or not stream_id:
            raise RemoteProtocolError("improper-addressing", "<db:verify/> needs 'from', 'to' and 'id'")
        valid = self.config.serves(originating) and key_matches(
            self.config.secret, receiving, originating, stream_id, element.text or ""
        )
        answer = _element(NS_DIALBACK, "verify", from_=originating, to=receiving, id=stream_id,
                          type="valid" if valid else "invalid")  # fmt: skip
        self._out.append(etree.tostring(answer))

    def _on_stanza(self, element: etree._Element) -> None:
        sender, recipient = element.get("from"), element.get("to")
        try:
            from_domain = JID.parse(sender or "").domainpart
            to_domain = JID.parse(recipient or "").domainpart
        except InvalidJID:
            # RFC 6120 §8.1.1.1, §8.1.2.1: between servers both are required and must be JIDs.
            raise RemoteProtocolError(
                "improper-addressing", "a stanza needs a valid 'from' and 'to'"
            ) from None
        if from_domain not in self.authenticated:
            self._offence(element, "invalid-from")
        elif not self.config.serves(to_domain):
            self._offence(element, "host-unknown")
        else:
            try:
                stanza = to_client_namespace(element)
            except UnrepresentableNamespace:
                raise RemoteProtocolError("invalid-xml", "a namespace name that is not a URI") from None
            self._events.append(ev.StanzaReceived(stanza))

    def _offence(self, element: etree._Element, condition: str) -> None:
        """RFC 6120 §8.1.2.2 wants <invalid-from/> at once; one stray stanza (a race with a
        dialback verdict, a server that multiplexes domains) is refused and logged first, and the
        next one ends the stream. Nothing is bounced: the claimed sender is not who sent it."""
        self._offences += 1
        if self._offences > self.config.max_offences:
            raise RemoteProtocolError(condition, "stanzas from a domain this stream did not authenticate")
        self._events.append(StanzaRefused(element, condition))


# ---- outbound ------------------------------------------------------------------------------------


class OutboundState(enum.Enum):
    WAIT_FOR_STREAM = "wait-for-stream"  #: our header sent, the peer's awaited
    WAIT_FOR_FEATURES = "wait-for-features"
    WAIT_FOR_PROCEED = "wait-for-proceed"
    WAIT_FOR_TLS = "wait-for-tls"  #: the shell's handshake
    WAIT_FOR_SASL = "wait-for-sasl"
    WAIT_FOR_DIALBACK = "wait-for-dialback"
    ESTABLISHED = "established"
    CLOSED = "closed"


@dataclass(slots=True)
class _Offer:
    """What the peer's last <stream:features/> offered."""

    starttls: bool = False
    external: bool = False
    dialback: bool = False
    mechanisms: tuple[str, ...] = field(default=())


class OutboundStream(_S2SStream):
    """Our stream to `remote_domain` (module docstring). Call `start()` once connected."""

    def __init__(self, config: S2SConfig, remote_domain: str, *, try_external: bool = False,
                 require_valid_certificate: bool = False,
                 local_domain: str | None = None) -> None:  # fmt: skip
        super().__init__(config)
        self.remote_domain = remote_domain
        #: The domain we authenticate as on this stream: the server's, or one of its services
        #: (conference.<domain>), each on a stream of its own (no piggybacking, XEP-0220 §2.5).
        self.local_domain = local_domain or config.local_domain
        self.state = OutboundState.WAIT_FOR_STREAM
        #: Offer SASL EXTERNAL when the peer offers it (our certificate may be trusted there).
        self.try_external = try_external
        #: The peer must present a certificate valid for `remote_domain` (XEP-0178, RFC 6125).
        self.require_valid_certificate = require_valid_certificate
        self.certificate: CertificateIdentities | None = None
        self._authenticated = False
        self._offer = _Offer()

    @property
    def can_verify(self) -> bool:
        """Whether <db:verify/> may be sent now: past TLS, the stream is open for dialback."""
        return not self.closed and self.state in (
            OutboundState.WAIT_FOR_SASL, OutboundState.WAIT_FOR_DIALBACK, OutboundState.ESTABLISHED
        )  # fmt: skip

    def start(self, *, direct_tls: bool = False, certificate: CertificateIdentities | None = None) -> None:
        """Send the first header (after a direct TLS handshake: XEP-0368)."""
        if direct_tls:
            self.tls_active = True
            self.certificate = certificate
            if not self._certificate_acceptable():
                self._fail("remote-server-not-found", "the peer's certificate is not valid for its domain")
                return
        self._send_header(self.remote_domain, from_=self.local_domain)

    # ---- shell decisions -------------------------------------------------------------------

    def tls_established(self, certificate: CertificateIdentities | None) -> None:
        """The STARTTLS handshake is done; `certificate` as in `InboundStream.tls_established`."""
        if self.closed:
            return
        if self.state is not OutboundState.WAIT_FOR_TLS:
            raise LocalProtocolError("no STARTTLS is waiting for the shell")
        self._awaiting_shell = False
        self._pending.clear()
        self.tls_active = True
        self.certificate = certificate
        if not self._certificate_acceptable():
            self._fail("remote-server-not-found", "the peer's certificate is not valid for its domain")
            return
        self._restart()
        self.state = OutboundState.WAIT_FOR_STREAM
        self._send_header(self.remote_domain, from_=self.local_domain)

    def send_stanza(self, element: etree._Element) -> None:
        """Queue a `jabber:client` stanza (translated to `jabber:server`) once established.

        Raises:
            UnrepresentableNamespace: the stanza cannot be translated (bounce it).
        """
        if self.state is not OutboundState.ESTABLISHED:
            raise LocalProtocolError("the stream is not established")
        self._out.append(etree.tostring(to_server_namespace(element), encoding="utf-8"))

    def send_verify(self, originating: str, stream_id: str, key: str) -> None:
        """Ask the authoritative server of `originating` whether `key` is its key for the inbound
        stream `stream_id` it opened to us (XEP-0220 §2.1.2)."""
        if not self.can_verify:
            raise LocalProtocolError("the stream cannot carry <db:verify/> yet")
        verify = _element(NS_DIALBACK, "verify", from_=self.local_domain, to=originating, id=stream_id)
        verify.text = key
        self._out.append(etree.tostring(verify))

    def send_whitespace(self) -> None:
        """A keepalive (RFC 6120 §4.6.1)."""
        if self.state is OutboundState.ESTABLISHED:
            self._out.append(b" ")

    # ---- the stream ----------------------------------------------------------------------------

    def _certificate_acceptable(self) -> bool:
        if not self.require_valid_certificate:
            return True
        return self.certificate is not None and self.certificate.speaks_for(self.remote_domain)

    def _fail(self, condition: str, text: str) -> None:
        if not self.closed:
            self._events.append(OutboundFailed(condition, text))
            self.close()

    def _on_header(self, opened: StreamOpened) -> None:
        if self.state is not OutboundState.WAIT_FOR_STREAM:
            raise RemoteProtocolError("not-well-formed", "a second stream header")
        self.stream_id = opened.attributes.get("id") or None
        self.state = OutboundState.WAIT_FOR_FEATURES

    def _on_element(self, element: etree._Element) -> None:
        tag = element.tag
        if tag == DB_VERIFY:
            self._on_verify_answer(element)
        elif self.state is OutboundState.WAIT_FOR_FEATURES and tag == FEATURES:
            self._on_features(element)
        elif self.state is OutboundState.WAIT_FOR_PROCEED and tag == PROCEED:
            self.state = OutboundState.WAIT_FOR_TLS
            self._awaiting_shell = True
            self._parsed.clear()
            self._events.append(TLSProceed())
        elif self.state is OutboundState.WAIT_FOR_PROCEED and tag == TLS_FAILURE:
            self._fail("remote-server-not-found", "the peer could not start TLS")
        elif self.state is OutboundState.WAIT_FOR_SASL and tag in (SUCCESS, FAILURE):
            self._on_sasl_outcome(tag == SUCCESS)
        elif self.state is OutboundState.WAIT_FOR_DIALBACK and tag == DB_RESULT:
            self._on_dialback_verdict(element)
        else:
            raise RemoteProtocolError(
                "unsupported-stanza-type", f"unexpected element {tag} in {self.state.value}"
            )

    def _on_features(self, features: etree._Element) -> None:
        mechanisms = tuple(
            (m.text or "").strip()
            for m in features.iterfind(f"{qname(NS_SASL, 'mechanisms')}/{qname(NS_SASL, 'mechanism')}")
        )
        self._offer = _Offer(
            starttls=features.find(STARTTLS) is not None,
            external=EXTERNAL in mechanisms,
            dialback=features.find(qname(NS_DIALBACK_FEATURE, "dialback")) is not None,
            mechanisms=mechanisms,
        )
        if self._authenticated:
            self._ready("sasl-external")
        elif self._offer.starttls and not self.tls_active and self.config.tls_available:
            self._out.append(etree.tostring(_element(NS_TLS, "starttls")))
            self.state = OutboundState.WAIT_FOR_PROCEED
        elif self.config.tls_required and not self.tls_active:
            self._fail("remote-server-not-found", "the peer offers no TLS, which this server requires")
        elif self._offer.external and self.try_external:
            auth = _element(NS_SASL, "auth", mechanism=EXTERNAL)
            auth.text = "="  # no authorization identity: the header's 'from' (XEP-0178 §3)
            self._out.append(etree.tostring(auth))
            self.state = OutboundState.WAIT_FOR_SASL
        else:
            self._dialback_or_fail()

    def _dialback_or_fail(self) -> None:
        if not (self._offer.dialback and self.config.dialback_allowed and self.stream_id):
            self._fail("remote-server-not-found", "no authentication method in common with the peer")
            return
        key = dialback_key(self.config.secret, self.remote_domain, self.local_domain, self.stream_id)
        result = _element(NS_DIALBACK, "result", from_=self.local_domain, to=self.remote_domain)
        result.text = key
        self._out.append(etree.tostring(result))
        self.state = OutboundState.WAIT_FOR_DIALBACK

    def _on_sasl_outcome(self, success: bool) -> None:
        if not success:
            self._dialback_or_fail()  # XEP-0178 §3 / XEP-0220 §2.4: fall back to dialback
            return
        self._authenticated = True
        self._restart()
        self.state = OutboundState.WAIT_FOR_STREAM
        self._send_header(self.remote_domain, from_=self.local_domain)

    def _on_dialback_verdict(self, element: etree._Element) -> None:
        if _domain(element.get("from")) != self.remote_domain or element.get("type") != "valid":
            self._fail("remote-server-not-found", f"dialback refused ({element.get('type') or 'no verdict'})")
            return
        self._ready("dialback")

    def _ready(self, method: str) -> None:
        self.state = OutboundState.ESTABLISHED
        self._events.append(OutboundReady(method))

    def _on_verify_answer(self, element: etree._Element) -> None:
        originating = _domain(element.get("from"))
        if originating is None or not element.get("id"):
            raise RemoteProtocolError("improper-addressing", "<db:verify/> needs 'from' and 'id'")
        self._events.append(
            VerifyAnswered(originating, element.get("id") or "", element.get("type") == "valid")
        )

    def _end(self, condition: str | None, *, clean: bool) -> None:
        if self.state is not OutboundState.ESTABLISHED and not any(
            isinstance(event, OutboundFailed) for event in self._events
        ):
            self._events.append(
                OutboundFailed("remote-server-not-found", "the stream ended before it was ready")
            )
        self.state = OutboundState.CLOSED
        super()._end(condition, clean=clean)


__all__ = [
    "NEED_DATA",
    "DialbackKeyReceived",
    "InboundStream",
    "OutboundFailed",
    "OutboundReady",
    "OutboundStream",
    "PeerAuthenticated",
    "S2SConfig",
    "StanzaRefused",
    "TLSProceed",
    "UnrepresentableNamespace",
    "VerifyAnswered",
    "to_client_namespace",
    "to_server_namespace",
    "unrelayable",
]
