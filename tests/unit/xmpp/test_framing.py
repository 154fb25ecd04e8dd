"""RFC 7395 framing (`imactor.xmpp.framing`) and `ServerStream` in framed mode, bytes only."""

from __future__ import annotations

import pytest
from lxml import etree

from imactor.xmpp import events as ev
from imactor.xmpp.errors import RemoteProtocolError
from imactor.xmpp.framing import CLOSE_FRAME, close_frame, open_frame, parse_frame
from imactor.xmpp.namespaces import NS_FRAMING, NS_STREAMS
from imactor.xmpp.parser import ElementReceived, StreamClosed, StreamOpened
from imactor.xmpp.stream import NEED_DATA, ServerStream, State, StreamConfig

OPEN = f"<open xmlns='{NS_FRAMING}' to='localhost' version='1.0'/>".encode()


def test_open_close_and_a_stanza() -> None:
    opened = parse_frame(OPEN, max_stanza_size=1000)
    assert isinstance(opened, StreamOpened)
    assert opened.attributes == {"to": "localhost", "version": "1.0"}
    assert isinstance(parse_frame(CLOSE_FRAME, max_stanza_size=1000), StreamClosed)
    stanza = parse_frame(
        b"<message xmlns='jabber:client' to='a@b'><body>x</body></message>", max_stanza_size=1000
    )
    assert isinstance(stanza, ElementReceived)
    assert stanza.element.tag == "{jabber:client}message"


@pytest.mark.parametrize(
    ("frame", "condition"),
    [
        (b"<message xmlns='jabber:client'><body>half", "not-well-formed"),
        (b"<a xmlns='x'/><b xmlns='x'/>", "not-well-formed"),
        (b"", "not-well-formed"),
        (b"<?pi x?><a xmlns='x'/>", "restricted-xml"),
        (b"<a xmlns='x'>" + b"y" * 2000 + b"</a>", "policy-violation"),
        (f"<open xmlns='{NS_FRAMING}'><x/></open>".encode(), "invalid-xml"),
    ],
)
def test_frames_that_break_the_framing(frame: bytes, condition: str) -> None:
    with pytest.raises(RemoteProtocolError) as error:
        parse_frame(frame, max_stanza_size=1000)
    assert error.value.stream_condition == condition


def test_open_and_close_frames() -> None:
    opened = etree.fromstring(open_frame("s1", "localhost"))
    assert opened.tag == f"{{{NS_FRAMING}}}open"
    assert dict(opened.attrib) == {
        "from": "localhost", "id": "s1", "version": "1.0", "{http://www.w3.org/XML/1998/namespace}lang": "en",
    }  # fmt: skip
    redirect = etree.fromstring(close_frame("wss://other.example/ws"))
    assert redirect.get("see-other-uri") == "wss://other.example/ws"


def framed_stream() -> ServerStream:
    config = StreamConfig(domain="localhost", tls_available=False, tls_required=False, framed=True)
    return ServerStream(config, stream_id_factory=lambda: "id1", tls_active=True)


def test_framed_stream_answers_open_with_open_and_features_one_per_frame() -> None:
    stream = framed_stream()
    stream.receive_data(OPEN)
    assert stream.next_event() is NEED_DATA
    frames = stream.frames_to_send()
    assert [etree.fromstring(f).tag for f in frames] == [f"{{{NS_FRAMING}}}open", f"{{{NS_STREAMS}}}features"]
    features = etree.fromstring(frames[1])
    assert features.find("{urn:ietf:params:xml:ns:xmpp-tls}starttls") is None
    assert stream.state is State.WAIT_FOR_SASL


def test_framed_stream_close_and_errors() -> None:
    stream = framed_stream()
    stream.receive_data(OPEN)
    stream.next_event()
    stream.frames_to_send()
    stream.receive_data(b"<a xmlns='x'/><b xmlns='x'/>")
    assert stream.next_event() == ev.StreamClosed("not-well-formed")
    error, close = stream.frames_to_send()
    assert etree.fromstring(error).tag == f"{{{NS_STREAMS}}}error"
    assert close == CLOSE_FRAME
    peer_closes = framed_stream()
    peer_closes.receive_data(OPEN)
    peer_closes.next_event()
    peer_closes.frames_to_send()
    peer_closes.receive_data(CLOSE_FRAME)
    assert peer_closes.next_event() == ev.StreamClosed(None)
    assert peer_closes.frames_to_send() == [CLOSE_FRAME]
    assert peer_closes.clean_close


def test_open_without_to_is_improper_addressing() -> None:
    """RFC 7395 §3.3.1: <open/> carries the attributes RFC 6120 §4.7 mandates for the stream
    header, 'to' among them (§4.7.2)."""
    stream = framed_stream()
    stream.receive_data(f"<open xmlns='{NS_FRAMING}' version='1.0'/>".encode())
    assert stream.next_event() == ev.StreamClosed("improper-addressing")
    opened, error, close = stream.frames_to_send()
    assert etree.fromstring(opened).tag == f"{{{NS_FRAMING}}}open"  # RFC 6120 §4.9.1.2
    condition = etree.fromstring(error)[0]
    assert condition.tag == "{urn:ietf:params:xml:ns:xmpp-streams}improper-addressing"
    assert close == CLOSE_FRAME
