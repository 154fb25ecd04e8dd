"""External components (XEP-0114, Jabber Component Protocol), sans-IO: the server's side.

A trusted service (a gateway, a bot) connects to a dedicated port and speaks for one domain:

1. it opens a stream in `jabber:component:accept` whose `to` names its domain; we answer with
   our header and a fresh stream id (no version, no features: XEP-0114 predates them). A domain
   we do not know gets <host-unknown/>;
2. it proves the shared secret: <handshake>hex(SHA-1(stream id + secret))</handshake>. A wrong
   digest gets <not-authorized/>; anything else before the handshake, <not-authorized/> too;
3. the shell decides whether the domain may connect now (one stream per domain, see
   docs/components.md) and calls `accept` (we send the empty <handshake/>) or `close`;
4. from then on both ways carry stanzas. Each stanza the component sends must come from its
   domain (a JID whose domainpart is the component's): another `from` ends the stream with
   <invalid-from/> (RFC 6120 §4.9.3.9; XEP-0114 §3 leaves the check to the server, and a
   component that forges senders is broken or hostile). A stanza without `from` is taken as
   from the bare domain (components written for old servers omit it), one without a valid `to`
   is answered with a stanza error (`bad-request`, `jid-malformed`), like a client's.

Inside the server stanzas are `jabber:client`; the translation to and from
`jabber:component:accept` is at this edge, as for s2s (`imactor.xmpp.s2s`). The shell does the
I/O, the handshake deadline and the routing (`imactor.components`).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from lxml import etree

from imactor.xmpp import events as ev
from imactor.xmpp import stanza as st
from imactor.xmpp.errors import LocalProtocolError, RemoteProtocolError, StanzaError
from imactor.xmpp.jid import JID, InvalidJID, prep_domainpart
from imactor.xmpp.namespaces import NS_CLIENT, NS_STREAMS, qname
from imactor.xmpp.parser import ElementReceived, ParserEvent, StreamOpened
from imactor.xmpp.parser import StreamClosed as ParserStreamClosed
from imactor.xmpp.pump import ParsingStream
from imactor.xmpp.s2s import UnrepresentableNamespace, renamespace
from imactor.xmpp.stream import NEED_DATA, STREAM_ERROR, stream_error

NS_COMPONENT = "jabber:component:accept"
HANDSHAKE = qname(NS_COMPONENT, "handshake")
COMPONENT_STANZAS = frozenset(qname(NS_COMPONENT, kind) for kind in ("message", "presence", "iq"))

HEADER = (
    "<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept'"
    " xmlns:stream='http://etherx.jabber.org/streams'{attributes}>"
)


def handshake_digest(stream_id: str, secret: str) -> str:
    """XEP-0114 §3: the lowercase hex SHA-1 of the stream id followed by the secret (UTF-8)."""
    return hashlib.sha1((stream_id + secret).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class ComponentConfig:
    """What every component stream of a worker is told."""

    #: The configured components: domain → shared secret.
    secrets: Mapping[str, str]
    max_stanza_size: int = 262144


# ---- events ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HandshakeVerified:
    """The component proved the secret of `domain`. Call `accept` (or `close("conflict")`)."""

    domain: str


@dataclass(frozen=True, slots=True)
class StanzaBounced:
    """A stanza the stream answered itself with an error (no valid `to`); already queued in
    `data_to_send`. For the shell's log."""

    element: etree._Element
    condition: str


ComponentEvent = HandshakeVerified | StanzaBounced | ev.StanzaReceived | ev.StreamClosed


class ComponentState(enum.Enum):
    WAIT_FOR_STREAM = "wait-for-stream"
    WAIT_FOR_HANDSHAKE = "wait-for-handshake"
    WAIT_FOR_SHELL = "wait-for-shell"  #: the digest matched; may the domain connect now?
    OPEN = "open"
    CLOSED = "closed"


def to_client_namespace(element: etree._Element) -> etree._Element:
    """A copy of a component's stanza in `jabber:client`, as the router expects."""
    return renamespace(element, NS_COMPONENT, NS_CLIENT)


def to_component_namespace(element: etree._Element) -> etree._Element:
    """The reverse, for a stanza about to be written to the component."""
    return renamespace(element, NS_CLIENT, NS_COMPONENT)


class ComponentStream(ParsingStream["ComponentEvent"]):
    """The server's side of one component connection (module docstring)."""

    def __init__(self, config: ComponentConfig, *, stream_id_factory: Callable[[], str]) -> None:
        super().__init__(config.max_stanza_size)
        self.config = config
        self.state = ComponentState.WAIT_FOR_STREAM
        self.stream_id: str | None = None
        #: The domain the header named (known once the header is accepted).
        self.domain: str | None = None
        self._stream_id_factory = stream_id_factory
        self._header_sent = False

    @property
    def closed(self) -> bool:
        return self.state is ComponentState.CLOSED

    @property
    def authenticated(self) -> bool:
        return self.state is ComponentState.OPEN

    # ---- bytes in and out ----------------------------------------------------------------------

    def _held(self) -> bool:
        return self.state is ComponentState.WAIT_FOR_SHELL

    def _on_eof(self) -> None:
        self._end(None, clean=False)

    # ---- shell decisions -----------------------------------------------------------------------

    def accept(self) -> None:
        """The domain may connect: confirm the handshake; stanzas flow from now on."""
        if self.closed:
            return
        if self.state is not ComponentState.WAIT_FOR_SHELL:
            raise LocalProtocolError("no handshake is waiting for the shell")
        self._out.append(b"<handshake/>")
        self.state = ComponentState.OPEN

    def send_stanza(self, element: etree._Element) -> None:
        """Queue a `jabber:client` stanza for the component (translated to its namespace)."""
        if self.state is not ComponentState.OPEN:
            raise LocalProtocolError("the component has not completed its handshake")
        self._out.append(etree.tostring(to_component_namespace(element), encoding="utf-8"))

    def close(self, condition: str | None = None, text: str = "") -> None:
        """Send the stream error `condition` (if any) and our closing tag; the stream is over."""
        if self.closed:
            return
        if not self._header_sent:
            self._send_header(None)  # RFC 6120 §4.9.1.2: a header first, even to refuse
        if condition is not None:
            self._out.append(stream_error(condition, text))
        self._end(condition, clean=True)

    # ---- the stream ----------------------------------------------------------------------------

    def _end(self, condition: str | None, *, clean: bool) -> None:
        if self._header_sent and (clean or condition is None):
            self._out.append(b"</stream:stream>")
        self.state = ComponentState.CLOSED
        self._events.append(ev.StreamClosed(condition))

    def _send_header(self, domain: str | None) -> None:
        attributes = ""
        for name, value in (("from", domain), ("id", self.stream_id)):
            if value:
                attributes += f" {name}='{_escape(value)}'"
        self._out.append(HEADER.format(attributes=attributes).encode())
        self._header_sent = True

    def _on_parsed(self, parsed: ParserEvent) -> None:
        if isinstance(parsed, StreamOpened):
            self._on_header(parsed)
        elif isinstance(parsed, ParserStreamClosed):
            self._end(None, clean=True)
        elif isinstance(parsed, ElementReceived):
            if parsed.element.tag == STREAM_ERROR:
                self._end(None, clean=True)
            else:
                self._on_element(parsed.element)

    def _on_header(self, opened: StreamOpened) -> None:
        if self.state is not ComponentState.WAIT_FOR_STREAM:
            raise RemoteProtocolError("not-well-formed", "a second stream header")
        self.stream_id = self._stream_id_factory()
        to = _domain(opened.attributes.get("to"))
        self._send_header(to)
        if opened.tag != qname(NS_STREAMS, "stream"):
            raise RemoteProtocolError("invalid-namespace", "the root must be <stream:stream/>")
        if opened.default_namespace != NS_COMPONENT:
            raise RemoteProtocolError("invalid-namespace", f"the content namespace must be {NS_COMPONENT}")
        if to is None:
            raise RemoteProtocolError("improper-addressing", "the header's 'to' must name the component")
        if to not in self.config.secrets:
            raise RemoteProtocolError("host-unknown", f"no component {to!r} is configured here")
        self.domain = to
        self.state = ComponentState.WAIT_FOR_HANDSHAKE

    def _on_element(self, element: etree._Element) -> None:
        if self.state is ComponentState.WAIT_FOR_HANDSHAKE:
            self._on_handshake(element)
        elif element.tag in COMPONENT_STANZAS or element.tag in _CLIENT_STANZAS:
            self._on_stanza(element)
        elif element.tag == HANDSHAKE:
            raise RemoteProtocolError("not-authorized", "the handshake is already done")
        else:
            raise RemoteProtocolError("unsupported-stanza-type", f"unexpected element {element.tag}")

    def _on_handshake(self, element: etree._Element) -> None:
        if element.tag != HANDSHAKE:
            raise RemoteProtocolError("not-authorized", "the handshake comes first")
        assert self.domain is not None
        assert self.stream_id is not None
        expected = handshake_digest(self.stream_id, self.config.secrets[self.domain])
        given = (element.text or "").strip().lower()
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise RemoteProtocolError("not-authorized", "the handshake does not match the secret")
        self.state = ComponentState.WAIT_FOR_SHELL
        self._events.append(HandshakeVerified(self.domain))

    def _on_stanza(self, element: etree._Element) -> None:
        assert self.domain is not None
        try:
            stanza = to_client_namespace(element)
        except UnrepresentableNamespace:
            raise RemoteProtocolError("invalid-xml", "a namespace name that is not a URI") from None
        sender = stanza.get("from")
        if sender is None:
            stanza.set("from", self.domain)  # COMPAT: components written for lenient servers
        else:
            try:
                sender_domain: str | None = JID.parse(sender).domainpart
            except InvalidJID:
                sender_domain = None
            if sender_domain != self.domain:
                raise RemoteProtocolError(
                    "invalid-from", f"{sender!r} is not a JID of this component's domain {self.domain}"
                )
        recipient = stanza.get("to")
        condition = None
        if recipient is None:
            condition = "bad-request"  # a component has no account to stand for a missing 'to'
        else:
            try:
                JID.parse(recipient)
            except InvalidJID:
                condition = "jid-malformed"
        if condition is None:
            self._events.append(ev.StanzaReceived(stanza))
            return
        if stanza.get("type") not in ("error", "result"):
            reply = st.error_reply(stanza, StanzaError(condition, "a stanza needs a valid 'to'"))
            reply.set("from", self.domain)
            self._out.append(etree.tostring(to_component_namespace(reply), encoding="utf-8"))
        self._events.append(StanzaBounced(element, condition))


_CLIENT_STANZAS = frozenset(qname(NS_CLIENT, kind) for kind in ("message", "presence", "iq"))


def _domain(value: str | None) -> str | None:
    if not value:
        return None
    try:
        return prep_domainpart(value)
    except InvalidJID:
        return None


def _escape(value: str) -> str:
    return value.replace("&", "&amp;").replace("'", "&apos;").replace("<", "&lt;")


__all__ = [
    "NEED_DATA",
    "NS_COMPONENT",
    "ComponentConfig",
    "ComponentState",
    "ComponentStream",
    "HandshakeVerified",
    "StanzaBounced",
    "handshake_digest",
    "to_client_namespace",
    "to_component_namespace",
]
