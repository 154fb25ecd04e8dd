"""The sans-IO client stream (`ServerStream`): bytes in, events and bytes out. No trio, no sockets.

A small client-side driver (`Client`, in the shape of h11's ``ConnectionPair``) feeds client bytes,
drains events, and reads whatever the server wrote with its own lxml pull parser, so every test
checks the server's output the way a real client would see it.
"""

from __future__ import annotations

import base64
import copy
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
from lxml import etree

from imactor.xmpp import events as ev
from imactor.xmpp import stream as stream_module
from imactor.xmpp.errors import LocalProtocolError
from imactor.xmpp.jid import JID
from imactor.xmpp.namespaces import (
    NS_BIND,
    NS_CLIENT,
    NS_PRE_APPROVAL,
    NS_REGISTER,
    NS_REGISTER_FEATURE,
    NS_ROSTER_VER,
    NS_SASL,
    NS_SASL2,
    NS_SASL_CB,
    NS_SESSION,
    NS_SM,
    NS_STANZA_ERRORS,
    NS_STANZA_LIMITS,
    NS_STREAM_ERRORS,
    NS_STREAMS,
    NS_TLS,
    qname,
)  # fmt: skip
from imactor.xmpp.sasl import SaslServer
from imactor.xmpp.scram import (
    ScramCredentials,
    derive_credentials,
    hash_digest,
    hmac_digest,
    salted_password,
)
from imactor.xmpp.stream import (
    ANY_STANZA,
    NEED_DATA,
    TRANSITIONS,
    UNEXPECTED,
    ServerStream,
    State,
    StreamConfig,
)

DOMAIN = "example.com"
PASSWORD = "pencil"
SALT = b"fixed-test-salt!"
SERVER_NONCE = "srvN0nce"
CLIENT_NONCE = "cl1entN0nce"
CB_EXPORTER = b"\x01" * 32  # stands in for what the TLS layer would export
CB_END_POINT = b"\x02" * 32
JULIET = JID.parse("juliet@example.com/balcony")

CREDENTIALS: dict[str, ScramCredentials] = {
    name: derive_credentials(name, PASSWORD, salt=SALT, iterations=4096) for name in ("SHA-1", "SHA-256")
}

# ---- client bytes ------------------------------------------------------------------------------


def header(
    *,
    tag: str = "stream:stream",
    default_ns: str | None = NS_CLIENT,
    stream_ns: str = NS_STREAMS,
    to: str | None = DOMAIN,
    version: str | None = "1.0",
) -> bytes:
    """A client stream header; None leaves an attribute out."""
    prefix = tag.split(":")[0] if ":" in tag else "stream"
    attrs = [f"xmlns:{prefix}='{stream_ns}'"]
    if default_ns is not None:
        attrs.append(f"xmlns='{default_ns}'")
    if to is not None:
        attrs.append(f"to='{to}'")
    if version is not None:
        attrs.append(f"version='{version}'")
    return f"<?xml version='1.0'?><{tag} {' '.join(attrs)}>".encode()


HEADER = header()
STARTTLS = f"<starttls xmlns='{NS_TLS}'/>".encode()
ABORT = f"<abort xmlns='{NS_SASL}'/>".encode()
CLOSE = b"</stream:stream>"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def auth(mechanism: str, payload: bytes | None = None, *, raw: str | None = None) -> bytes:
    """<auth/>; `payload` is base64-encoded ("=" when empty), `raw` is sent as is."""
    text = raw if raw is not None else "" if payload is None else b64(payload) or "="
    return f"<auth xmlns='{NS_SASL}' mechanism='{mechanism}'>{text}</auth>".encode()


def response(payload: bytes | None = None, *, raw: str | None = None) -> bytes:
    text = raw if raw is not None else "" if payload is None else b64(payload) or "="
    return f"<response xmlns='{NS_SASL}'>{text}</response>".encode()


def plain(username: str = "juliet", password: str = PASSWORD) -> bytes:
    return auth("PLAIN", f"\x00{username}\x00{password}".encode())


def bind_iq(iq_id: str = "bind1", resource: str | None = "balcony") -> bytes:
    inner = "" if resource is None else f"<resource>{resource}</resource>"
    return f"<iq type='set' id='{iq_id}'><bind xmlns='{NS_BIND}'>{inner}</bind></iq>".encode()


def register_iq(iq_id: str = "reg1", kind: str = "iq") -> bytes:
    return f"<{kind} type='get' id='{iq_id}'><query xmlns='{NS_REGISTER}'/></{kind}>".encode()


class ScramClient:
    """The client half of SCRAM (RFC 5802 §3), computed with `imactor.xmpp.scram` primitives."""

    def __init__(
        self,
        hash_name: str = "SHA-256",
        *,
        username: str = "juliet",
        password: str = PASSWORD,
        gs2_header: str = "n,,",
        cb_data: bytes = b"",
    ) -> None:
        self.hash_name = hash_name
        self.password = password
        self.gs2_header = gs2_header
        self.cb_data = cb_data
        self.bare = f"n={username},r={CLIENT_NONCE}"
        self.server_signature = b""

    def first(self) -> bytes:
        return (self.gs2_header + self.bare).encode()

    def final(self, server_first: bytes) -> bytes:
        attributes = dict(part.split("=", 1) for part in server_first.decode().split(","))
        nonce, salt, iterations = attributes["r"], base64.b64decode(attributes["s"]), int(attributes["i"])
        assert nonce.startswith(CLIENT_NONCE)
        salted = salted_password(self.hash_name, self.password.encode(), salt, iterations)
        client_key = hmac_digest(self.hash_name, salted, b"Client Key")
        stored_key = hash_digest(self.hash_name, client_key)
        without_proof = f"c={b64(self.gs2_header.encode() + self.cb_data)},r={nonce}"
        auth_message = f"{self.bare},{server_first.decode()},{without_proof}".encode()
        signature = hmac_digest(self.hash_name, stored_key, auth_message)
        proof = bytes(k ^ s for k, s in zip(client_key, signature, strict=True))
        server_key = hmac_digest(self.hash_name, salted, b"Server Key")
        self.server_signature = hmac_digest(self.hash_name, server_key, auth_message)
        return f"{without_proof},p={b64(proof)}".encode()


# ---- the client's view of the server's bytes -------------------------------------------------


class ServerOutput:
    """Parses what the server writes with a separate lxml pull parser, one per server stream header.

    Every server header starts with an XML declaration (a restart is a new document), and `<` is
    always escaped inside stanzas, so splitting the output at ``<?xml `` is safe.
    """

    def __init__(self) -> None:
        self.raw = bytearray()
        self.headers: list[dict[str, str]] = []
        self.elements: list[etree._Element] = []
        self.closed = False
        self._parser: etree.XMLPullParser | None = None
        self._depth = 0

    def feed(self, data: bytes) -> list[etree._Element]:
        self.raw += data
        new: list[etree._Element] = []
        for piece in re.split(rb"(?=<\?xml )", data):
            if not piece:
                continue
            if piece.startswith(b"<?xml "):
                self._parser = etree.XMLPullParser(
                    events=("start", "end"), resolve_entities=False, no_network=True, load_dtd=False
                )
                self._depth = 0
                self.closed = False
            assert self._parser is not None, f"server wrote {piece!r} before any stream header"
            self._parser.feed(piece)  # raises XMLSyntaxError if the server writes broken XML
            for action, node in self._parser.read_events():
                if action == "start":
                    self._depth += 1
                    if self._depth == 1:
                        assert node.tag == qname(NS_STREAMS, "stream")
                        assert node.nsmap.get(None) == NS_CLIENT
                        self.headers.append(dict(node.attrib))
                else:
                    self._depth -= 1
                    if self._depth == 1:
                        new.append(copy.deepcopy(node))
                    elif self._depth == 0:
                        self.closed = True
        self.elements.extend(new)
        return new


class Client:
    """Drives one `ServerStream` from the client side (h11 ``ConnectionPair`` shape)."""

    def __init__(
        self,
        config: StreamConfig | None = None,
        *,
        tls_active: bool = False,
        stream_id_factory: Callable[[], str] | None = None,
    ) -> None:
        self.ids = Ids()
        self.config = config or StreamConfig(domain=DOMAIN)
        self.stream = ServerStream(
            self.config,
            stream_id_factory=stream_id_factory or self.ids,
            tls_active=tls_active,
            nonce_factory=lambda: SERVER_NONCE,
        )
        self.out = ServerOutput()

    def send(self, data: bytes) -> list[ev.Event]:
        """Feed client bytes; return every event up to NEED_DATA."""
        self.stream.receive_data(data)
        return self.events()

    def events(self) -> list[ev.Event]:
        found: list[ev.Event] = []
        while True:
            event = self.stream.next_event()
            if event is NEED_DATA:
                return found
            assert not isinstance(event, type(NEED_DATA))
            found.append(event)

    def read(self) -> list[etree._Element]:
        """Parse what the server wrote since the last read."""
        return self.out.feed(self.stream.data_to_send())

    # ---- walking to a state ------------------------------------------------------------------

    def open(self) -> etree._Element:
        """Send a header; return the server's <stream:features/>."""
        assert self.send(HEADER) == []
        (features,) = self.read()
        assert features.tag == qname(NS_STREAMS, "features")
        return features

    def start_tls(self, channel_bindings: Mapping[str, bytes] | None = None) -> etree._Element:
        assert self.send(STARTTLS) == [ev.StartTLSRequested()]
        assert tags(self.read()) == [qname(NS_TLS, "proceed")]
        self.stream.tls_established(channel_bindings or {})
        return self.open()

    def login(self) -> None:
        assert self.send(plain()) == [ev.CredentialsNeeded("juliet")]
        self.stream.provide_credentials(CREDENTIALS)
        assert self.events() == [ev.Authenticated("juliet")]
        assert tags(self.read()) == [qname(NS_SASL, "success")]

    def bind(self, jid: JID = JULIET) -> None:
        assert self.send(bind_iq(resource=jid.resourcepart)) == [ev.BindRequested("bind1", jid.resourcepart)]
        self.stream.bind_succeeded(jid)
        (result,) = self.read()
        assert result.get("type") == "result"


class Ids:
    """An injected stream id factory that records what it issued."""

    def __init__(self) -> None:
        self.issued: list[str] = []

    def __call__(self) -> str:
        self.issued.append(f"sid-{len(self.issued) + 1}")
        return self.issued[-1]


def opened(config: StreamConfig | None = None, **kwargs: Any) -> Client:
    """WAIT_FOR_STARTTLS (or WAIT_FOR_SASL when TLS is optional or already on)."""
    client = Client(config, **kwargs)
    client.open()
    return client


def at_sasl(config: StreamConfig | None = None, bindings: Mapping[str, bytes] | None = None) -> Client:
    client = opened(config)
    client.start_tls(bindings)
    assert client.stream.state is State.WAIT_FOR_SASL
    return client


def at_bind(config: StreamConfig | None = None) -> tuple[Client, etree._Element]:
    client = at_sasl(config)
    client.login()
    features = client.open()
    assert client.stream.state is State.WAIT_FOR_BIND
    return client, features


def established(config: StreamConfig | None = None) -> Client:
    client, _ = at_bind(config)
    client.bind()
    assert client.stream.state is State.ESTABLISHED
    return client


def tags(elements: list[etree._Element]) -> list[str]:
    return [element.tag for element in elements]


def children(element: etree._Element) -> list[str]:
    return [child.tag for child in element]


def sasl_failure(element: etree._Element) -> tuple[str, str | None]:
    assert element.tag == qname(NS_SASL, "failure")
    conditions = [child for child in element if child.tag != qname(NS_SASL, "text")]
    assert len(conditions) == 1
    return etree.QName(conditions[0]).localname, element.findtext(qname(NS_SASL, "text"))


def assert_stream_error(
    client: Client, events: list[ev.Event], condition: str, text: str | None = None
) -> None:
    """The stream ended with `condition`: event, <stream:error/>, closing tag, CLOSED."""
    assert events[-1] == ev.StreamClosed(condition)
    error = client.read()[-1]
    assert error.tag == qname(NS_STREAMS, "error")
    assert children(error)[0] == qname(NS_STREAM_ERRORS, condition)
    if text is not None:
        assert error.findtext(qname(NS_STREAM_ERRORS, "text")) == text
    assert client.out.closed
    assert client.stream.state is State.CLOSED


# ---- stream header -----------------------------------------------------------------------------


def test_header_answered_with_header_and_starttls_required_features() -> None:
    client = Client()
    assert client.send(HEADER) == []
    (features,) = client.read()
    assert client.out.headers == [
        {
            "id": "sid-1",
            "from": DOMAIN,
            "version": "1.0",
            qname("http://www.w3.org/XML/1998/namespace", "lang"): "en",
        }
    ]
    assert client.stream.stream_id == "sid-1"
    starttls = features.find(qname(NS_TLS, "starttls"))
    assert starttls is not None
    assert children(starttls) == [qname(NS_TLS, "required")]
    # Nothing else is offered before TLS when it is required: no mechanisms, no registration.
    assert children(features) == [qname(NS_TLS, "starttls")]
    assert client.stream.state is State.WAIT_FOR_STARTTLS


@pytest.mark.parametrize(
    ("client_header", "condition"),
    [
        pytest.param(header(tag="stream:features"), "invalid-namespace", id="wrong-root"),
        pytest.param(header(stream_ns="urn:not-streams"), "invalid-namespace", id="wrong-stream-ns"),
        pytest.param(header(default_ns="jabber:server"), "invalid-namespace", id="wrong-content-ns"),
        pytest.param(header(default_ns=None), "invalid-namespace", id="no-content-ns"),
        pytest.param(header(tag="s:stream"), "bad-namespace-prefix", id="bad-prefix"),
        pytest.param(header(version="2.0"), "unsupported-version", id="version-2"),
        pytest.param(header(version=None), "unsupported-version", id="no-version"),
        pytest.param(header(version="x.y"), "unsupported-version", id="garbage-version"),
        # str.isdigit() takes "²" for a digit and int() refuses it: this ended the session with a
        # ValueError instead of a stream error (RFC 6120 §4.7.5: the numbers are integers, and
        # XML's digits are ASCII).
        pytest.param(header(version="\u00b2.0"), "unsupported-version", id="superscript-digit-version"),
        pytest.param(header(version="\u0661.0"), "unsupported-version", id="arabic-indic-digit-version"),
        pytest.param(header(to="elsewhere.org"), "host-unknown", id="unknown-to"),
        # RFC 6120 §4.7.2: the initiating entity MUST include 'to' in its initial stream header.
        pytest.param(header(to=None), "improper-addressing", id="no-to"),
    ],
)
def test_header_errors_are_sent_after_our_own_header(client_header: bytes, condition: str) -> None:
    client = Client()
    events = client.send(client_header)
    assert_stream_error(client, events, condition)
    # §4.9.1.2: the error is preceded by our header, so the client can parse it.
    assert client.out.headers[0]["id"] == "sid-1"
    raw = bytes(client.out.raw)
    assert raw.startswith(b"<?xml version='1.0'?><stream:stream ")
    assert raw.index(b"<stream:stream ") < raw.index(b"<stream:error")
    assert raw.endswith(b"</stream:stream>")
    assert events == [ev.StreamClosed(condition)]


@pytest.mark.parametrize(
    "client_header",
    [header(to="EXAMPLE.com."), header(version="1.1")],
    ids=["to-case-and-dot", "minor-version"],
)
def test_acceptable_headers(client_header: bytes) -> None:
    client = Client()
    assert client.send(client_header) == []
    assert tags(client.read()) == [qname(NS_STREAMS, "features")]
    assert client.stream.state is State.WAIT_FOR_STARTTLS


def test_stream_ids_come_from_the_injected_factory() -> None:
    issued = iter(["first", "second", "third"])
    client = Client(stream_id_factory=lambda: next(issued))
    client.open()
    client.start_tls()
    assert client.stream.stream_id == "second"
    client.login()
    assert client.stream.stream_id is None  # restarted: the next header gets a new id
    client.open()
    assert [h["id"] for h in client.out.headers] == ["first", "second", "third"]
    assert client.stream.stream_id == "third"


def test_parser_errors_become_stream_errors() -> None:
    client = opened()
    assert_stream_error(client, client.send(b"<!-- a comment -->"), "restricted-xml")


def test_oversized_stanza_is_a_policy_violation() -> None:
    client = opened(StreamConfig(domain=DOMAIN, max_stanza_size=64))
    events = client.send(b"<message><body>" + b"x" * 100 + b"</body></message>")
    assert_stream_error(client, events, "policy-violation")


# ---- STARTTLS ----------------------------------------------------------------------------------


def test_auth_before_tls_is_a_policy_violation() -> None:
    client = opened()
    assert_stream_error(client, client.send(plain()), "policy-violation", "STARTTLS is required")


@pytest.mark.parametrize(
    "stanza", [register_iq(), b"<message to='romeo@example.net'/>"], ids=["register", "message"]
)
def test_stanza_before_tls_is_not_authorized_even_a_register_iq(stanza: bytes) -> None:
    # Registration sends a password: never over cleartext when TLS is required.
    client = opened(StreamConfig(domain=DOMAIN, registration_enabled=True))
    events = client.send(stanza)
    assert events == [ev.StreamClosed("not-authorized")]
    assert_stream_error(client, events, "not-authorized")


def test_a_redirecting_node_sends_the_first_header_to_another_host() -> None:
    """RFC 6120 §4.9.3.19: see-other-host names the host (and port) to connect to instead."""
    client = Client()
    client.stream.redirect = "[2001:db8::2]:5222"
    events = client.send(HEADER)
    assert events[-1] == ev.StreamClosed("see-other-host")
    (error,) = client.read()
    assert error.findtext(qname(NS_STREAM_ERRORS, "see-other-host")) == "[2001:db8::2]:5222"
    assert client.out.closed


def test_a_redirect_set_after_the_first_header_does_not_cut_the_stream() -> None:
    """Only a new client is sent elsewhere: restarts after STARTTLS and SASL go on."""
    client = opened()
    client.stream.redirect = "node-b.example.com"
    features = client.start_tls()
    assert features.tag == qname(NS_STREAMS, "features")
    assert client.stream.state is State.WAIT_FOR_SASL


def test_starttls_then_restart_offers_sasl() -> None:
    client = opened()
    assert client.send(STARTTLS) == [ev.StartTLSRequested()]
    assert tags(client.read()) == [qname(NS_TLS, "proceed")]
    # Waiting for the shell: no more events until TLS is up.
    assert client.stream.next_event() is NEED_DATA
    client.stream.tls_established({})
    assert client.stream.tls_active
    assert client.stream.state is State.WAIT_FOR_STREAM
    assert client.stream.stream_id is None
    features = client.open()
    assert client.out.headers[-1]["id"] == "sid-2"
    assert features.find(qname(NS_TLS, "starttls")) is None
    assert client.stream.state is State.WAIT_FOR_SASL


def test_bytes_pipelined_after_starttls_in_the_same_chunk_are_discarded() -> None:
    client = opened()
    # A cleartext injection: a new stream header and an <auth/>, behind <starttls/> in one segment.
    injected = b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
    events = client.send(STARTTLS + injected + plain())
    assert events == [ev.StartTLSRequested()]
    client.stream.tls_established({})
    # The injected header did not open the new stream, and the <auth/> was never parsed.
    assert client.events() == []
    assert tags(client.read()) == [qname(NS_TLS, "proceed")]
    assert client.stream.state is State.WAIT_FOR_STREAM
    assert len(client.out.headers) == 1
    features = client.open()
    assert features.find(qname(NS_SASL, "mechanisms")) is not None
    assert client.stream.state is State.WAIT_FOR_SASL


def test_bytes_queued_separately_after_starttls_are_discarded() -> None:
    client = opened()
    client.stream.receive_data(STARTTLS)
    client.stream.receive_data(HEADER + plain())
    assert client.events() == [ev.StartTLSRequested()]
    client.stream.tls_established({})
    assert client.events() == []
    assert client.stream.state is State.WAIT_FOR_STREAM


def test_bytes_received_before_tls_took_effect_are_discarded() -> None:
    # Whatever the shell hands over between <proceed/> and tls_established() was cleartext.
    client = opened()
    assert client.send(STARTTLS) == [ev.StartTLSRequested()]
    client.stream.receive_data(HEADER + plain())
    client.stream.tls_established({})
    assert client.events() == []
    assert client.stream.state is State.WAIT_FOR_STREAM
    assert tags(client.read()) == [qname(NS_TLS, "proceed")]


def test_optional_tls_offers_starttls_and_sasl_together() -> None:
    client = opened(StreamConfig(domain=DOMAIN, tls_required=False))
    features = client.out.elements[0]
    starttls = features.find(qname(NS_TLS, "starttls"))
    assert starttls is not None
    assert children(starttls) == []  # not <required/>
    mechanisms = [m.text for m in features.iter(qname(NS_SASL, "mechanism"))]
    assert mechanisms == ["SCRAM-SHA-256", "SCRAM-SHA-1"]  # no PLAIN in cleartext
    assert client.stream.state is State.WAIT_FOR_SASL
    # <starttls/> is still allowed from WAIT_FOR_SASL.
    assert client.send(STARTTLS) == [ev.StartTLSRequested()]
    assert tags(client.read()) == [qname(NS_TLS, "proceed")]
    client.stream.tls_established({})
    features = client.open()
    assert "PLAIN" in [m.text for m in features.iter(qname(NS_SASL, "mechanism"))]


def test_starttls_during_a_sasl_exchange_is_a_policy_violation() -> None:
    client = opened(StreamConfig(domain=DOMAIN, tls_required=False))
    client.send(auth("SCRAM-SHA-256"))
    assert tags(client.read()) == [qname(NS_SASL, "challenge")]
    assert_stream_error(client, client.send(STARTTLS), "policy-violation")


@pytest.mark.parametrize(
    ("config", "tls_active"),
    [
        (StreamConfig(domain=DOMAIN, tls_available=False, tls_required=False), False),
        (StreamConfig(domain=DOMAIN), True),
    ],
    ids=["no-tls-configured", "already-tls"],
)
def test_starttls_when_not_offered_is_a_policy_violation(config: StreamConfig, tls_active: bool) -> None:
    client = opened(config, tls_active=tls_active)
    assert client.out.elements[0].find(qname(NS_TLS, "starttls")) is None
    assert_stream_error(client, client.send(STARTTLS), "policy-violation")


def test_direct_tls_offers_sasl_at_once() -> None:
    client = opened(tls_active=True)
    mechanisms = [m.text for m in client.out.elements[0].iter(qname(NS_SASL, "mechanism"))]
    assert mechanisms == ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"]
    assert client.stream.state is State.WAIT_FOR_SASL


def test_direct_tls_with_channel_bindings_offers_plus() -> None:
    client = Client()
    client.stream.direct_tls_established({"tls-exporter": CB_EXPORTER})
    features = client.open()
    assert features.find(qname(NS_TLS, "starttls")) is None
    mechanisms = [m.text for m in features.iter(qname(NS_SASL, "mechanism"))]
    assert mechanisms[:2] == ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS"]
    assert "PLAIN" in mechanisms
    # Too late once the stream has started.
    with pytest.raises(LocalProtocolError):
        client.stream.direct_tls_established({})


# ---- SASL features -----------------------------------------------------------------------------


def test_sasl_features_without_channel_bindings() -> None:
    client = opened()
    features = client.start_tls({})
    mechanisms = features.find(qname(NS_SASL, "mechanisms"))
    assert mechanisms is not None
    assert [m.text for m in mechanisms] == ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"]
    assert features.find(qname(NS_SASL_CB, "sasl-channel-binding")) is None
    assert features.find(qname(NS_REGISTER_FEATURE, "register")) is None
    limits = features.find(qname(NS_STANZA_LIMITS, "limits"))
    assert limits is not None
    assert limits.findtext(qname(NS_STANZA_LIMITS, "max-bytes")) == "262144"
    assert limits.findtext(qname(NS_STANZA_LIMITS, "idle-seconds")) == "300"


def test_sasl_features_with_channel_bindings_and_registration() -> None:
    config = StreamConfig(domain=DOMAIN, registration_enabled=True, max_stanza_size=10000, idle_seconds=42)
    client = opened(config)
    features = client.start_tls({"tls-server-end-point": CB_END_POINT, "tls-exporter": CB_EXPORTER})
    mechanisms = [m.text for m in features.iter(qname(NS_SASL, "mechanism"))]
    assert mechanisms == [
        "SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN",
    ]  # fmt: skip
    # XEP-0440: the binding types, strongest first.
    cb = features.find(qname(NS_SASL_CB, "sasl-channel-binding"))
    assert cb is not None
    assert [(c.tag, c.get("type")) for c in cb] == [
        (qname(NS_SASL_CB, "channel-binding"), "tls-exporter"),
        (qname(NS_SASL_CB, "channel-binding"), "tls-server-end-point"),
    ]
    assert features.find(qname(NS_REGISTER_FEATURE, "register")) is not None
    # XEP-0478.
    limits = features.find(qname(NS_STANZA_LIMITS, "limits"))
    assert limits is not None
    assert limits.findtext(qname(NS_STANZA_LIMITS, "max-bytes")) == "10000"
    assert limits.findtext(qname(NS_STANZA_LIMITS, "idle-seconds")) == "42"


def test_plain_not_offered_when_disallowed() -> None:
    client = opened(StreamConfig(domain=DOMAIN, allow_plain=False))
    features = client.start_tls()
    assert "PLAIN" not in [m.text for m in features.iter(qname(NS_SASL, "mechanism"))]
    client.send(plain())
    assert sasl_failure(client.read()[0]) == ("invalid-mechanism", None)


# ---- SASL exchanges ----------------------------------------------------------------------------


def test_scram_sha_256_through_the_stream() -> None:
    client = at_sasl()
    scram = ScramClient("SHA-256")
    assert client.send(auth("SCRAM-SHA-256", scram.first())) == [ev.CredentialsNeeded("juliet")]
    assert client.read() == []  # nothing is written before the shell answers
    client.stream.provide_credentials(CREDENTIALS)
    assert client.events() == []
    (challenge,) = client.read()
    assert challenge.tag == qname(NS_SASL, "challenge")
    server_first = base64.b64decode(challenge.text or "")
    # Deterministic: the client nonce, then the injected server nonce; the stored salt and count.
    assert server_first == f"r={CLIENT_NONCE}{SERVER_NONCE},s={b64(SALT)},i=4096".encode()
    events = client.send(response(scram.final(server_first)))
    assert events == [ev.Authenticated("juliet")]
    (success,) = client.read()
    assert success.tag == qname(NS_SASL, "success")
    assert base64.b64decode(success.text or "") == b"v=" + base64.b64encode(scram.server_signature)
    assert client.stream.username == "juliet"
    assert client.stream.state is State.WAIT_FOR_STREAM
    assert client.stream.stream_id is None


def test_scram_sha_256_plus_with_tls_exporter() -> None:
    client = at_sasl(bindings={"tls-exporter": CB_EXPORTER})
    scram = ScramClient("SHA-256", gs2_header="p=tls-exporter,,", cb_data=CB_EXPORTER)
    assert client.send(auth("SCRAM-SHA-256-PLUS", scram.first())) == [ev.CredentialsNeeded("juliet")]
    client.stream.provide_credentials(CREDENTIALS)
    (challenge,) = client.read()
    events = client.send(response(scram.final(base64.b64decode(challenge.text or ""))))
    assert events == [ev.Authenticated("juliet")]


def test_scram_plus_with_wrong_binding_data_fails() -> None:
    client = at_sasl(bindings={"tls-exporter": CB_EXPORTER})
    scram = ScramClient("SHA-256", gs2_header="p=tls-exporter,,", cb_data=CB_END_POINT)
    client.send(auth("SCRAM-SHA-256-PLUS", scram.first()))
    client.stream.provide_credentials(CREDENTIALS)
    (challenge,) = client.read()
    events = client.send(response(scram.final(base64.b64decode(challenge.text or ""))))
    assert events == [ev.AuthFailed("juliet", "not-authorized")]
    assert sasl_failure(client.read()[0]) == ("not-authorized", "channel-bindings-dont-match")


def test_scram_with_wrong_password_fails() -> None:
    client = at_sasl()
    scram = ScramClient("SHA-1", password="wrong")
    client.send(auth("SCRAM-SHA-1", scram.first()))
    client.stream.provide_credentials(CREDENTIALS)
    (challenge,) = client.read()
    events = client.send(response(scram.final(base64.b64decode(challenge.text or ""))))
    assert events == [ev.AuthFailed("juliet", "not-authorized")]
    assert sasl_failure(client.read()[0])[0] == "not-authorized"
    assert client.stream.state is State.WAIT_FOR_SASL
    assert client.stream.username is None


def test_plain_success() -> None:
    client = at_sasl()
    assert client.send(plain()) == [ev.CredentialsNeeded("juliet")]
    client.stream.provide_credentials(CREDENTIALS)
    assert client.events() == [ev.Authenticated("juliet")]
    (success,) = client.read()
    assert success.tag == qname(NS_SASL, "success")
    assert success.text is None  # PLAIN has no additional data
    assert client.stream.username == "juliet"


def test_plain_without_initial_response_gets_an_empty_challenge() -> None:
    client = at_sasl()
    assert client.send(auth("PLAIN")) == []
    (challenge,) = client.read()
    assert challenge.tag == qname(NS_SASL, "challenge")
    assert challenge.text == "="
    assert client.send(response(b"\x00juliet\x00" + PASSWORD.encode())) == [ev.CredentialsNeeded("juliet")]
    client.stream.provide_credentials(CREDENTIALS)
    assert client.events() == [ev.Authenticated("juliet")]


@pytest.mark.parametrize(
    "credentials", [None, {}, {"SHA-256": derive_credentials("SHA-256", "other", salt=SALT)}]
)
def test_unknown_user_or_wrong_password_is_not_authorized(
    credentials: Mapping[str, ScramCredentials] | None,
) -> None:
    client = at_sasl()
    assert client.send(plain()) == [ev.CredentialsNeeded("juliet")]
    client.stream.provide_credentials(credentials)
    assert client.events() == [ev.AuthFailed("juliet", "not-authorized")]
    assert sasl_failure(client.read()[0]) == ("not-authorized", None)
    assert client.stream.state is State.WAIT_FOR_SASL
    # A fresh attempt is allowed after a failure (RFC 6120 §6.4.5).
    client.login()


def test_refuse_auth_sends_temporary_auth_failure() -> None:
    client = at_sasl()
    assert client.send(plain()) == [ev.CredentialsNeeded("juliet")]
    client.stream.refuse_auth("temporary-auth-failure", "too many failed attempts; wait")
    assert client.events() == [ev.AuthFailed("juliet", "temporary-auth-failure")]
    assert sasl_failure(client.read()[0]) == ("temporary-auth-failure", "too many failed attempts; wait")
    assert client.stream.username is None
    client.login()


def wrong_plain(client: Client) -> list[ev.Event]:
    """One failed PLAIN exchange (a wrong password); its events."""
    assert client.send(plain(password="wrong")) == [ev.CredentialsNeeded("juliet")]
    client.stream.provide_credentials(CREDENTIALS)
    return client.events()


@pytest.mark.parametrize("retries", [2, 3, 5])
def test_sasl_retries_are_limited(retries: int) -> None:
    """RFC 6120 §6.4.5: `sasl_retries` retries after a first failure; the failure after them is
    reported with <failure/> and then ends the stream with <policy-violation/>."""
    client = at_sasl(StreamConfig(domain=DOMAIN, sasl_retries=retries))
    for _ in range(retries):
        assert wrong_plain(client) == [ev.AuthFailed("juliet", "not-authorized")]
        assert sasl_failure(client.read()[0]) == ("not-authorized", None)
        assert client.stream.state is State.WAIT_FOR_SASL
    # AuthFailed first: the shell's login throttle still counts this failure.
    events = wrong_plain(client)
    assert events == [ev.AuthFailed("juliet", "not-authorized"), ev.StreamClosed("policy-violation")]
    failure, error = client.read()
    assert sasl_failure(failure) == ("not-authorized", None)
    assert children(error)[0] == qname(NS_STREAM_ERRORS, "policy-violation")
    assert client.out.closed
    assert client.stream.state is State.CLOSED


def test_every_kind_of_sasl_failure_counts_towards_the_limit() -> None:
    client = at_sasl(StreamConfig(domain=DOMAIN, sasl_retries=2))
    assert client.send(auth("DIGEST-MD5", b"x")) == [ev.AuthFailed(None, "invalid-mechanism")]
    assert client.send(plain()) == [ev.CredentialsNeeded("juliet")]
    client.stream.refuse_auth("temporary-auth-failure")
    assert client.events() == [ev.AuthFailed("juliet", "temporary-auth-failure")]
    client.send(auth("SCRAM-SHA-256", ScramClient().first()))
    client.stream.provide_credentials(CREDENTIALS)
    events = client.send(ABORT)
    assert events == [ev.AuthFailed("juliet", "aborted"), ev.StreamClosed("policy-violation")]
    assert client.stream.state is State.CLOSED


def test_a_success_within_the_retries_logs_in() -> None:
    client = at_sasl(StreamConfig(domain=DOMAIN, sasl_retries=2))
    wrong_plain(client)
    wrong_plain(client)
    client.read()
    client.login()
    assert client.stream.username == "juliet"


def test_incorrect_base64_in_auth() -> None:
    client = at_sasl()
    assert client.send(auth("PLAIN", raw="not*base64!")) == [ev.AuthFailed(None, "incorrect-encoding")]
    assert sasl_failure(client.read()[0]) == ("incorrect-encoding", None)
    client.login()


def test_incorrect_base64_in_response() -> None:
    client = at_sasl()
    scram = ScramClient()
    client.send(auth("SCRAM-SHA-256", scram.first()))
    client.stream.provide_credentials(CREDENTIALS)
    client.read()
    assert client.send(response(raw="%%%")) == [ev.AuthFailed("juliet", "incorrect-encoding")]
    assert sasl_failure(client.read()[0]) == ("incorrect-encoding", None)
    client.login()


def test_unknown_mechanism_is_invalid_mechanism() -> None:
    client = at_sasl()
    assert client.send(auth("DIGEST-MD5", b"x")) == [ev.AuthFailed(None, "invalid-mechanism")]
    assert sasl_failure(client.read()[0]) == ("invalid-mechanism", None)


@pytest.mark.parametrize(
    "setup",
    [
        pytest.param(b"", id="no-exchange"),
        pytest.param(auth("DIGEST-MD5", b"x"), id="after-failure"),
    ],
)
def test_response_outside_an_exchange_is_a_stream_error(setup: bytes) -> None:
    client = at_sasl()
    if setup:
        client.send(setup)
        client.read()
    events = client.send(response(b"x"))  # must not raise LocalProtocolError
    assert_stream_error(client, events, "policy-violation")


def test_auth_during_an_exchange_is_a_stream_error() -> None:
    client = at_sasl()
    client.send(auth("SCRAM-SHA-256"))
    assert tags(client.read()) == [qname(NS_SASL, "challenge")]
    assert_stream_error(client, client.send(plain()), "policy-violation")


def test_abort_ends_the_exchange() -> None:
    client = at_sasl()
    scram = ScramClient()
    client.send(auth("SCRAM-SHA-256", scram.first()))
    client.stream.provide_credentials(CREDENTIALS)
    client.read()
    assert client.send(ABORT) == [ev.AuthFailed("juliet", "aborted")]
    assert sasl_failure(client.read()[0]) == ("aborted", None)
    assert client.stream.state is State.WAIT_FOR_SASL
    client.login()


def test_abort_outside_an_exchange_is_a_stream_error() -> None:
    client = at_sasl()
    assert_stream_error(client, client.send(ABORT), "policy-violation")


def test_stanzas_pipelined_after_a_credentials_pause_are_not_lost() -> None:
    client = at_sasl(StreamConfig(domain=DOMAIN, registration_enabled=True))
    events = client.send(plain(password="wrong") + register_iq("r1") + plain())
    assert events == [ev.CredentialsNeeded("juliet")]
    # Paused for the shell: the rest stays queued, nothing is written.
    assert client.stream.next_event() is NEED_DATA
    assert client.read() == []
    client.stream.provide_credentials(CREDENTIALS)
    events = client.events()
    assert [type(e) for e in events] == [ev.AuthFailed, ev.PreAuthIqReceived, ev.CredentialsNeeded]
    assert events[0] == ev.AuthFailed("juliet", "not-authorized")
    assert isinstance(events[1], ev.PreAuthIqReceived)
    assert events[1].element.get("id") == "r1"
    client.stream.provide_credentials(CREDENTIALS)
    assert client.events() == [ev.Authenticated("juliet")]
    assert [sasl_failure(e)[0] if e.tag.endswith("failure") else e.tag for e in client.read()] == [
        "not-authorized",
        qname(NS_SASL, "success"),
    ]


def test_bytes_after_success_in_the_same_chunk_belong_to_no_stream() -> None:
    # The client must wait for <success/> before restarting (RFC 6120 §6.4.6).
    client = at_sasl()
    client.send(plain() + bind_iq())
    client.stream.provide_credentials(CREDENTIALS)
    assert client.events() == [ev.Authenticated("juliet")]
    assert tags(client.read()) == [qname(NS_SASL, "success")]
    assert client.stream.state is State.WAIT_FOR_STREAM
    client.open()
    assert client.events() == []


# ---- registration before authentication --------------------------------------------------------


def test_preauth_register_iq_when_registration_is_enabled() -> None:
    client = at_sasl(StreamConfig(domain=DOMAIN, registration_enabled=True))
    (event,) = client.send(register_iq("r1"))
    assert isinstance(event, ev.PreAuthIqReceived)
    assert event.element.tag == qname(NS_CLIENT, "iq")
    assert event.element.get("id") == "r1"
    client.stream.send(b"<iq type='result' id='r1'/>")
    assert tags(client.read()) == [qname(NS_CLIENT, "iq")]
    assert client.stream.state is State.WAIT_FOR_SASL


@pytest.mark.parametrize(
    ("registration", "stanza"),
    [
        pytest.param(False, register_iq(), id="registration-disabled"),
        pytest.param(True, b"<iq type='get' id='v'><query xmlns='jabber:iq:version'/></iq>", id="other-iq"),
        pytest.param(True, register_iq(kind="message"), id="register-in-a-message"),
        pytest.param(True, b"<presence/>", id="presence"),
    ],
)
def test_other_stanzas_before_auth_are_not_authorized(registration: bool, stanza: bytes) -> None:
    client = at_sasl(StreamConfig(domain=DOMAIN, registration_enabled=registration))
    events = client.send(stanza)
    assert_stream_error(client, events, "not-authorized")
    assert events == [ev.StreamClosed("not-authorized")]


# ---- binding -----------------------------------------------------------------------------------


def test_bind_features_after_auth() -> None:
    extra = f"<sm xmlns='{NS_SM}'/>".encode()
    _, features = at_bind(StreamConfig(domain=DOMAIN, bound_features=(extra,), registration_enabled=True))
    assert children(features) == [
        qname(NS_BIND, "bind"),
        qname(NS_SESSION, "session"),
        qname(NS_ROSTER_VER, "ver"),
        qname(NS_PRE_APPROVAL, "sub"),
        qname(NS_STANZA_LIMITS, "limits"),
        qname(NS_SM, "sm"),
    ]
    session = features.find(qname(NS_SESSION, "session"))
    assert session is not None
    assert children(session) == [qname(NS_SESSION, "optional")]
    # No second round of SASL, TLS or registration.
    assert features.find(qname(NS_SASL, "mechanisms")) is None
    assert features.find(qname(NS_REGISTER_FEATURE, "register")) is None


@pytest.mark.parametrize("resource", ["balcony", None])
def test_bind_requested_and_succeeded(resource: str | None) -> None:
    client, _ = at_bind()
    assert client.send(bind_iq("b1", resource)) == [ev.BindRequested("b1", resource)]
    assert client.read() == []
    full = JULIET if resource else JID.parse("juliet@example.com/generated")
    client.stream.bind_succeeded(full)
    (result,) = client.read()
    assert result.tag == qname(NS_CLIENT, "iq")
    assert (result.get("type"), result.get("id")) == ("result", "b1")
    assert result.findtext(f"{qname(NS_BIND, 'bind')}/{qname(NS_BIND, 'jid')}") == str(full)
    assert client.stream.state is State.ESTABLISHED
    assert client.stream.jid == full


def test_empty_resource_lets_the_server_choose() -> None:
    client, _ = at_bind()
    assert client.send(bind_iq("b1", "")) == [ev.BindRequested("b1", None)]


def test_bind_failed_sends_an_iq_error_and_allows_a_retry() -> None:
    client, _ = at_bind()
    client.send(bind_iq("b1"))
    client.stream.bind_failed("conflict")
    (error_iq,) = client.read()
    assert (error_iq.get("type"), error_iq.get("id")) == ("error", "b1")
    error = error_iq.find(qname(NS_CLIENT, "error"))
    assert error is not None
    assert error.get("type") == "cancel"
    assert children(error) == [qname(NS_STANZA_ERRORS, "conflict")]
    assert client.stream.state is State.WAIT_FOR_BIND
    assert client.send(bind_iq("b2")) == [ev.BindRequested("b2", "balcony")]


def test_invalid_resource_is_bad_request() -> None:
    client, _ = at_bind()
    assert client.send(bind_iq("b1", "\u200b")) == []
    (error_iq,) = client.read()
    assert (error_iq.get("type"), error_iq.get("id")) == ("error", "b1")
    error = error_iq.find(qname(NS_CLIENT, "error"))
    assert error is not None
    assert error.get("type") == "modify"
    assert children(error) == [qname(NS_STANZA_ERRORS, "bad-request")]
    assert client.stream.state is State.WAIT_FOR_BIND
    assert client.send(bind_iq("b2")) == [ev.BindRequested("b2", "balcony")]


def test_second_bind_while_one_is_pending_is_a_policy_violation() -> None:
    client, _ = at_bind()
    assert client.send(bind_iq("b1")) == [ev.BindRequested("b1", "balcony")]
    assert_stream_error(client, client.send(bind_iq("b2")), "policy-violation")


@pytest.mark.parametrize(
    "stanza",
    [
        b"<message to='romeo@example.net'><body>hi</body></message>",
        b"<presence/>",
        f"<iq type='get' id='b'><bind xmlns='{NS_BIND}'/></iq>".encode(),
        f"<iq type='set' id='s'><session xmlns='{NS_SESSION}'/></iq>".encode(),
    ],
    ids=["message", "presence", "bind-get", "session-before-bind"],
)
def test_stanza_before_bind_is_not_authorized(stanza: bytes) -> None:
    client, _ = at_bind()
    assert_stream_error(client, client.send(stanza), "not-authorized")


def test_stanzas_pipelined_after_bind_flow_once_bound() -> None:
    client, _ = at_bind()
    client.stream.receive_data(bind_iq("b1") + b"<presence/>")
    # Events are made one at a time: the shell answers the bind before it asks for the next one,
    # so the pipelined presence is read in ESTABLISHED.
    assert client.stream.next_event() == ev.BindRequested("b1", "balcony")
    client.stream.bind_succeeded(JULIET)
    assert [type(e) for e in client.events()] == [ev.StanzaReceived]
    assert tags(client.read()) == [qname(NS_CLIENT, "iq")]


# ---- established -------------------------------------------------------------------------------


def test_legacy_session_iq_is_answered_directly() -> None:
    client = established()
    assert client.send(f"<iq type='set' id='s1'><session xmlns='{NS_SESSION}'/></iq>".encode()) == []
    (result,) = client.read()
    assert result.tag == qname(NS_CLIENT, "iq")
    assert dict(result.attrib) == {"type": "result", "id": "s1", "to": str(JULIET)}
    assert len(result) == 0


def test_stanzas_are_received_once_bound() -> None:
    client = established()
    events = client.send(
        b"<message to='romeo@example.net' id='m1'><body>hi</body></message>"
        b"<presence/>"
        b"<iq type='get' id='i1'><query xmlns='jabber:iq:roster'/></iq>"
    )
    assert all(isinstance(e, ev.StanzaReceived) for e in events)
    elements = [e.element for e in events if isinstance(e, ev.StanzaReceived)]
    assert tags(elements) == [
        qname(NS_CLIENT, "message"),
        qname(NS_CLIENT, "presence"),
        qname(NS_CLIENT, "iq"),
    ]
    assert elements[0].findtext(qname(NS_CLIENT, "body")) == "hi"
    assert elements[2].get("id") == "i1"
    assert client.read() == []


def test_unknown_top_level_element_is_unsupported_stanza_type() -> None:
    client = established()
    events = client.send(f"<enable xmlns='{NS_SM}'/>".encode())
    assert_stream_error(client, events, "unsupported-stanza-type")


def test_configured_nonzas_are_received_once_bound() -> None:
    config = StreamConfig(domain=DOMAIN, nonzas=frozenset({qname(NS_SM, "r"), qname(NS_SM, "enable")}))
    client = established(config)
    (event,) = client.send(f"<r xmlns='{NS_SM}'/>".encode())
    assert isinstance(event, ev.NonzaReceived)
    assert event.element.tag == qname(NS_SM, "r")
    assert client.stream.state is State.ESTABLISHED


def test_configured_nonzas_are_refused_before_bind() -> None:
    config = StreamConfig(domain=DOMAIN, nonzas=frozenset({qname(NS_SM, "enable")}))
    client, _ = at_bind(config)
    assert_stream_error(client, client.send(f"<enable xmlns='{NS_SM}'/>".encode()), "not-authorized")


def test_send_queues_bytes_for_the_client() -> None:
    client = established()
    client.stream.send(b"<message from='romeo@example.net'><body>hello</body></message>")
    (message,) = client.read()
    assert message.findtext(qname(NS_CLIENT, "body")) == "hello"


# ---- closing -----------------------------------------------------------------------------------


def test_peer_closes_the_stream() -> None:
    client = established()
    assert client.send(CLOSE) == [ev.StreamClosed(None)]
    assert client.read() == []
    assert client.out.closed
    assert client.out.raw.endswith(b"</stream:stream>")
    assert client.stream.state is State.CLOSED


def test_close_with_condition_and_text() -> None:
    client = established()
    client.stream.close("system-shutdown", "going down")
    assert client.events() == [ev.StreamClosed("system-shutdown")]
    (error,) = client.read()
    assert children(error) == [qname(NS_STREAM_ERRORS, "system-shutdown"), qname(NS_STREAM_ERRORS, "text")]
    assert error.findtext(qname(NS_STREAM_ERRORS, "text")) == "going down"
    assert client.out.closed
    # Closing twice writes nothing more and reports nothing more.
    client.stream.close("conflict")
    assert client.events() == []
    assert client.stream.data_to_send() == b""


def test_close_without_condition() -> None:
    client = established()
    client.stream.close()
    assert client.events() == [ev.StreamClosed(None)]
    assert client.read() == []
    assert client.out.closed


def test_close_before_any_header_sends_a_header_first() -> None:
    client = Client()
    client.stream.close("system-shutdown")
    assert client.events() == [ev.StreamClosed("system-shutdown")]
    (error,) = client.read()
    assert children(error) == [qname(NS_STREAM_ERRORS, "system-shutdown")]
    assert client.out.headers[0]["id"] == "sid-1"


def test_close_after_a_restart_opens_a_new_header() -> None:
    client = at_sasl()
    client.login()
    client.stream.close("connection-timeout")
    (error,) = client.read()
    assert error.tag == qname(NS_STREAMS, "error")
    assert [h["id"] for h in client.out.headers] == ["sid-1", "sid-2", "sid-3"]


def test_peer_stream_error_closes_the_stream() -> None:
    client = established()
    events = client.send(f"<stream:error><conflict xmlns='{NS_STREAM_ERRORS}'/></stream:error>".encode())
    assert events == [ev.StreamClosed(None)]
    assert client.read() == []  # our closing tag only, no error of our own
    assert client.out.closed
    assert client.stream.state is State.CLOSED


def test_peer_stream_error_before_auth_closes_too() -> None:
    client = opened()
    events = client.send(f"<stream:error><conflict xmlns='{NS_STREAM_ERRORS}'/></stream:error>".encode())
    assert events == [ev.StreamClosed(None)]


def test_eof_closes_the_stream() -> None:
    client = established()
    client.stream.receive_data(b"")
    assert client.events() == [ev.StreamClosed(None)]
    assert client.read() == []
    assert client.out.closed
    assert client.stream.state is State.CLOSED


@pytest.mark.parametrize("where", ["before any header", "after STARTTLS", "after SASL success"])
def test_eof_before_our_header_writes_no_stray_end_tag(where: str) -> None:
    """Found by the stream fuzzer: EOF where the server had not (yet, after a restart) sent its
    header wrote a lone </stream:stream>, which is not XML. A closing tag ends the stream
    that our header opened (RFC 6120 §4.4); with no header there is nothing to close."""
    client = Client()
    if where == "after STARTTLS":
        client.open()
        assert client.send(STARTTLS) == [ev.StartTLSRequested()]
        client.read()
        client.stream.tls_established({})
    elif where == "after SASL success":
        client = at_sasl()
        client.login()
    client.stream.receive_data(b"")
    assert client.events() == [ev.StreamClosed(None)]
    assert client.stream.data_to_send() == b""
    assert client.stream.state is State.CLOSED


def test_data_received_before_eof_is_still_read() -> None:
    client = established()
    client.stream.receive_data(b"<message id='last'><body>bye</body></message>")
    client.stream.receive_data(b"")
    events = client.events()
    assert [type(e) for e in events] == [ev.StanzaReceived, ev.StreamClosed]
    assert isinstance(events[0], ev.StanzaReceived)
    assert events[0].element.get("id") == "last"


def test_data_after_close_is_ignored() -> None:
    client = established()
    client.stream.close("reset")
    client.events()
    client.read()
    client.stream.receive_data(b"<message><body>late</body></message>")
    client.stream.receive_data(b"")
    assert client.stream.next_event() is NEED_DATA
    client.stream.send(b"<message/>")
    assert client.stream.data_to_send() == b""
    assert client.stream.state is State.CLOSED


def test_events_after_a_stream_error_in_the_same_chunk_are_dropped() -> None:
    client = established()
    events = client.send(f"<enable xmlns='{NS_SM}'/><message><body>x</body></message>".encode())
    assert events == [ev.StreamClosed("unsupported-stanza-type")]


# ---- shell misuse (our bugs: LocalProtocolError) -----------------------------------------------


def test_tls_established_without_starttls_is_a_local_error() -> None:
    client = opened()
    with pytest.raises(LocalProtocolError):
        client.stream.tls_established({})


def test_tls_established_while_credentials_are_awaited_is_a_local_error() -> None:
    client = at_sasl()
    client.send(plain())
    with pytest.raises(LocalProtocolError):
        client.stream.tls_established({})
    # The stream is untouched: the credentials are still awaited.
    client.stream.provide_credentials(CREDENTIALS)
    assert client.events() == [ev.Authenticated("juliet")]


def test_provide_credentials_without_a_request_is_a_local_error() -> None:
    client = at_sasl()
    with pytest.raises(LocalProtocolError):
        client.stream.provide_credentials(CREDENTIALS)


def test_provide_credentials_while_tls_is_awaited_is_a_local_error() -> None:
    client = opened(StreamConfig(domain=DOMAIN, tls_required=False))
    assert client.send(STARTTLS) == [ev.StartTLSRequested()]
    with pytest.raises(LocalProtocolError):
        client.stream.provide_credentials(CREDENTIALS)
    # Still waiting for TLS.
    assert client.stream.next_event() is NEED_DATA
    client.stream.tls_established({})
    assert client.stream.state is State.WAIT_FOR_STREAM


def test_an_authenticated_stream_drops_the_finished_sasl_exchange() -> None:
    # An idle session lives for hours: the exchange's state is of no use after <success/>.
    client, _ = at_bind()
    assert not any(isinstance(value, SaslServer) for value in vars(client.stream).values())
    with pytest.raises(LocalProtocolError):
        client.stream.provide_credentials({})


def test_refuse_auth_without_an_exchange_is_a_local_error() -> None:
    client = established()
    with pytest.raises(LocalProtocolError):
        client.stream.refuse_auth("temporary-auth-failure")
    assert client.read() == []


@pytest.mark.parametrize(
    "decide",
    [
        pytest.param(lambda s: s.bind_succeeded(JULIET), id="succeeded"),
        pytest.param(lambda s: s.bind_failed("conflict"), id="failed"),
    ],
)
def test_bind_answer_without_a_request_is_a_local_error(decide: Callable[[ServerStream], None]) -> None:
    client, _ = at_bind()
    with pytest.raises(LocalProtocolError, match="no bind request"):
        decide(client.stream)
    assert client.stream.state is State.WAIT_FOR_BIND
    assert client.read() == []


def _closed_while_binding() -> Client:
    client, _ = at_bind()
    client.send(bind_iq())
    client.stream.close("system-shutdown")  # e.g. the mailbox task, while the reader awaits the bind
    return client


def _closed_while_fetching_credentials() -> Client:
    client = at_sasl()
    client.send(plain())
    client.stream.close("system-shutdown")
    return client


def _closed_during_tls() -> Client:
    client = opened()
    client.send(STARTTLS)
    client.stream.close("system-shutdown")
    return client


@pytest.mark.parametrize(
    ("setup", "decide"),
    [
        pytest.param(_closed_while_binding, lambda s: s.bind_succeeded(JULIET), id="bind_succeeded"),
        pytest.param(_closed_while_binding, lambda s: s.bind_failed("conflict"), id="bind_failed"),
        pytest.param(
            _closed_while_fetching_credentials, lambda s: s.provide_credentials(CREDENTIALS), id="credentials"
        ),
        pytest.param(
            _closed_while_fetching_credentials,
            lambda s: s.refuse_auth("temporary-auth-failure"),
            id="refuse_auth",
        ),
        pytest.param(_closed_during_tls, lambda s: s.tls_established({}), id="tls_established"),
    ],
)
def test_a_decision_after_close_writes_nothing(
    setup: Callable[[], Client], decide: Callable[[ServerStream], None]
) -> None:
    client = setup()
    assert client.events()[-1] == ev.StreamClosed("system-shutdown")
    client.read()
    decide(client.stream)
    # Nothing after </stream:stream>, and the stream does not come back to life.
    assert client.stream.data_to_send() == b""
    assert client.events() == []
    assert client.stream.state is State.CLOSED


def test_bind_answered_twice_is_a_local_error() -> None:
    client, _ = at_bind()
    client.send(bind_iq())
    client.stream.bind_succeeded(JULIET)
    with pytest.raises(LocalProtocolError):
        client.stream.bind_succeeded(JULIET)


# ---- the tables --------------------------------------------------------------------------------


def _starttls_required() -> Client:
    client = opened()
    assert client.send(STARTTLS) == [ev.StartTLSRequested()]
    return client


def _starttls_optional() -> Client:
    client = opened(StreamConfig(domain=DOMAIN, tls_required=False))
    assert client.stream.state is State.WAIT_FOR_SASL
    assert client.send(STARTTLS) == [ev.StartTLSRequested()]
    return client


def _auth() -> Client:
    client = at_sasl()
    assert client.send(plain()) == [ev.CredentialsNeeded("juliet")]
    return client


def _response() -> Client:
    client = at_sasl()
    client.send(auth("PLAIN"))
    assert client.send(response(b"\x00juliet\x00" + PASSWORD.encode())) == [ev.CredentialsNeeded("juliet")]
    return client


def _abort() -> Client:
    client = at_sasl()
    client.send(auth("PLAIN"))
    assert client.send(ABORT) == [ev.AuthFailed(None, "aborted")]
    return client


def _stanza_before_tls() -> Client:
    client = opened(StreamConfig(domain=DOMAIN, registration_enabled=True))
    assert client.send(register_iq()) == [ev.StreamClosed("not-authorized")]
    return client


def _preauth_iq() -> Client:
    client = at_sasl(StreamConfig(domain=DOMAIN, registration_enabled=True))
    assert [type(e) for e in client.send(register_iq())] == [ev.PreAuthIqReceived]
    return client


def _bind_iq() -> Client:
    client, _ = at_bind()
    assert client.send(bind_iq()) == [ev.BindRequested("bind1", "balcony")]
    return client


def _stanza() -> Client:
    client = established()
    assert [type(e) for e in client.send(b"<presence/>")] == [ev.StanzaReceived]
    return client


SASL2 = StreamConfig(domain=DOMAIN, sasl2=True)
SASL2_AUTH = f"<authenticate xmlns='{NS_SASL2}' mechanism='PLAIN'/>".encode()


def _sasl2_at(state: State) -> Client:
    """At `state` after a SASL2 login (tests/unit/xmpp/test_sasl2.py covers SASL2 itself)."""
    client = at_sasl(SASL2)
    initial = b64(b"\x00juliet\x00" + PASSWORD.encode())
    client.send(f"<authenticate xmlns='{NS_SASL2}' mechanism='PLAIN'><initial-response>{initial}"
                "</initial-response></authenticate>".encode())  # fmt: skip
    client.stream.provide_credentials(CREDENTIALS)
    client.events()
    client.stream.sasl2_succeeded(JULIET, None, bound=state is State.ESTABLISHED)
    client.read()
    assert client.stream.state is state
    return client


def _sasl2_authenticate() -> Client:
    client = at_sasl(SASL2)
    assert client.send(SASL2_AUTH) == []  # an empty challenge asks for the initial response
    return client


def _sasl2_response() -> Client:
    client = _sasl2_authenticate()
    payload = b64(b"\x00juliet\x00" + PASSWORD.encode())
    events = client.send(f"<response xmlns='{NS_SASL2}'>{payload}</response>".encode())
    assert events == [ev.CredentialsNeeded("juliet")]
    return client


def _sasl2_abort() -> Client:
    client = _sasl2_authenticate()
    assert client.send(f"<abort xmlns='{NS_SASL2}'/>".encode()) == [ev.AuthFailed(None, "aborted")]
    return client


def _second_authenticate(state: State) -> Callable[[], Client]:
    def second() -> Client:
        client = _sasl2_at(state)
        assert client.send(SASL2_AUTH) == [ev.StreamClosed("policy-violation")]
        return client

    return second


#: One scenario per entry of `TRANSITIONS`; the detailed behaviour is tested above.
TRANSITION_CASES: dict[tuple[State, str], Callable[[], Client]] = {
    (State.WAIT_FOR_STARTTLS, stream_module.STARTTLS): _starttls_required,
    (State.WAIT_FOR_SASL, stream_module.STARTTLS): _starttls_optional,
    (State.WAIT_FOR_SASL, stream_module.AUTH): _auth,
    (State.WAIT_FOR_SASL, stream_module.RESPONSE): _response,
    (State.WAIT_FOR_SASL, stream_module.ABORT): _abort,
    (State.WAIT_FOR_SASL, ANY_STANZA): _preauth_iq,
    (State.WAIT_FOR_STARTTLS, ANY_STANZA): _stanza_before_tls,
    (State.WAIT_FOR_BIND, ANY_STANZA): _bind_iq,
    (State.ESTABLISHED, ANY_STANZA): _stanza,
    (State.WAIT_FOR_SASL, stream_module.sasl2.AUTHENTICATE): _sasl2_authenticate,
    (State.WAIT_FOR_SASL, stream_module.sasl2.RESPONSE): _sasl2_response,
    (State.WAIT_FOR_SASL, stream_module.sasl2.ABORT): _sasl2_abort,
    (State.WAIT_FOR_BIND, stream_module.sasl2.AUTHENTICATE): _second_authenticate(State.WAIT_FOR_BIND),
    (State.ESTABLISHED, stream_module.sasl2.AUTHENTICATE): _second_authenticate(State.ESTABLISHED),
}


def test_every_transition_has_a_case() -> None:
    assert set(TRANSITION_CASES) == set(TRANSITIONS)


@pytest.mark.parametrize(
    "key", list(TRANSITION_CASES), ids=[f"{s.value}:{t.rsplit('}', 1)[-1]}" for s, t in TRANSITION_CASES]
)
def test_transition(key: tuple[State, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Each scenario goes through exactly its table entry (the table is what dispatches)."""
    calls: list[tuple[State, str]] = []
    handler = TRANSITIONS[key]

    def recording(stream: ServerStream, element: etree._Element) -> None:
        calls.append((stream.state, element.tag))
        handler(stream, element)

    monkeypatch.setitem(TRANSITIONS, key, recording)
    TRANSITION_CASES[key]()
    state, tag = key
    assert len(calls) >= 1
    assert calls[-1][0] is state
    assert tag == ANY_STANZA or calls[-1][1] == tag


#: One element per state of `UNEXPECTED` that has no transition there, with the expected error.
UNEXPECTED_CASES: dict[State, tuple[Callable[[], Client], bytes]] = {
    State.WAIT_FOR_STARTTLS: (opened, plain()),
    State.WAIT_FOR_SASL: (at_sasl, f"<enable xmlns='{NS_SM}'/>".encode()),
    State.WAIT_FOR_BIND: (lambda: at_bind()[0], plain()),
}


def test_every_unexpected_entry_has_a_case() -> None:
    assert set(UNEXPECTED_CASES) == set(UNEXPECTED)


@pytest.mark.parametrize("state", list(UNEXPECTED_CASES), ids=lambda s: s.value)
def test_unexpected(state: State) -> None:
    setup, element = UNEXPECTED_CASES[state]
    client = setup()
    assert client.stream.state is state
    condition, text = UNEXPECTED[state]
    assert_stream_error(client, client.send(element), condition, text)


# ---- chunking ----------------------------------------------------------------------------------


def _scripted_session(chunked: Callable[[bytes], Iterator[bytes]]) -> tuple[list[tuple[Any, ...]], bytes]:
    """A whole session, SCRAM included; the shell answers every decision as soon as it is asked."""
    client = Client()
    scram = ScramClient()
    summary: list[tuple[Any, ...]] = []

    def shell(event: ev.Event) -> None:
        match event:
            case ev.StartTLSRequested():
                client.stream.tls_established({})
            case ev.CredentialsNeeded():
                client.stream.provide_credentials(CREDENTIALS)
            case ev.BindRequested(resource=resource):
                client.stream.bind_succeeded(JULIET.bare.with_resource(resource or "gen"))
            case _:
                pass

    def say(data: bytes) -> None:
        for piece in chunked(data):
            client.stream.receive_data(piece)
            # Like the real shell: act on each event before asking for the next one.
            while (event := client.stream.next_event()) is not NEED_DATA:
                assert not isinstance(event, type(NEED_DATA))
                summary.append(_describe(event))
                shell(event)
        client.read()

    def last_challenge() -> bytes:
        challenge = client.out.elements[-1]
        assert challenge.tag == qname(NS_SASL, "challenge")
        return base64.b64decode(challenge.text or "")

    say(HEADER)
    say(STARTTLS)
    say(HEADER)
    say(auth("SCRAM-SHA-256", scram.first()))
    say(response(scram.final(last_challenge())))
    say(HEADER)
    say(
        bind_iq("b1")
        + b"\n <presence><show>away</show></presence> "
        + f"<iq type='set' id='s1'><session xmlns='{NS_SESSION}'/></iq>".encode()
        + "<message to='romeo@example.net'><body>caf\u00e9 &amp; \U0001f600</body></message>".encode()
        + CLOSE
    )
    return summary, bytes(client.out.raw)


def _describe(event: ev.Event) -> tuple[Any, ...]:
    element = getattr(event, "element", None)
    if element is not None:
        return (type(event).__name__, etree.tostring(element, encoding="unicode"))
    return (type(event).__name__, repr(event))


def test_events_are_the_same_when_bytes_arrive_one_at_a_time() -> None:
    whole, whole_out = _scripted_session(lambda data: iter([data]))
    bytewise, bytewise_out = _scripted_session(lambda data: (data[i : i + 1] for i in range(len(data))))
    assert [kind for kind, _ in whole] == [
        "StartTLSRequested",
        "CredentialsNeeded",
        "Authenticated",
        "BindRequested",
        "StanzaReceived",
        "StanzaReceived",
        "StreamClosed",
    ]
    assert bytewise == whole
    assert bytewise_out == whole_out
    assert whole_out.count(b"<stream:stream ") == 3
    assert "caf\u00e9 &amp; \U0001f600" in whole[-2][1]
