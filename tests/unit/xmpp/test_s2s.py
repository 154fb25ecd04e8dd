"""The sans-IO s2s streams: our outbound stream talking to our inbound stream, and raw bytes.

`Pair` pumps bytes between an `OutboundStream` of a.example and an `InboundStream` of b.example
and stands in for the shells: it "does" TLS by calling `tls_established` on both sides and
answers dialback keys as the authoritative server would (with a.example's secret).
"""

from __future__ import annotations

import itertools

import pytest
from lxml import etree

from imactor.xmpp import events as ev
from imactor.xmpp import s2s
from imactor.xmpp.certnames import CertificateIdentities
from imactor.xmpp.dialback import dialback_key
from imactor.xmpp.namespaces import NS_CLIENT, NS_SERVER, NS_STREAM_ERRORS, NS_STREAMS
from imactor.xmpp.stream import NEED_DATA

A, B = "a.example", "b.example"
SECRET_A, SECRET_B = b"secret of a", b"secret of b"
HEADER = (
    "<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams'"
    " xmlns:db='jabber:server:dialback' from='{frm}' to='{to}' version='1.0'>"
)
DB = "xmlns:db='jabber:server:dialback'"
_ids = itertools.count()


def config(domain: str, secret: bytes, **options: object) -> s2s.S2SConfig:
    return s2s.S2SConfig(local_domain=domain, secret=secret, **options)  # type: ignore[arg-type]


def inbound(**options: object) -> s2s.InboundStream:
    return s2s.InboundStream(config(B, SECRET_B, **options), stream_id_factory=lambda: f"id{next(_ids)}")


def drain(stream: s2s._S2SStream) -> list[object]:
    events = []
    while (event := stream.next_event()) is not NEED_DATA:
        events.append(event)
    return events


def elements(data: bytes) -> list[etree._Element]:
    """The top-level elements in what a stream wrote (its header opened, closed if it ended)."""
    text = data.decode()
    if "<stream:stream" not in text:
        text = HEADER.format(frm="x", to="y") + text
    text = text.replace("<?xml version='1.0'?>", "")
    parser = etree.XMLPullParser(events=("end",))
    parser.feed(text)
    return [
        el
        for _, el in parser.read_events()
        if el.getparent() is not None and el.getparent().getparent() is None
    ]


class Pair:
    def __init__(self, *, inbound_options: dict[str, object] | None = None,
                 outbound_options: dict[str, object] | None = None) -> None:  # fmt: skip
        self.outbound = s2s.OutboundStream(config(A, SECRET_A, **(outbound_options or {})), B)
        self.inbound = inbound(**(inbound_options or {}))
        self.out_events: list[object] = []
        self.in_events: list[object] = []
        self.certificate_a: CertificateIdentities | None = None
        self.certificate_b: CertificateIdentities | None = None

    def pump(self) -> None:
        for _ in range(20):
            moved = False
            if data := self.outbound.data_to_send():
                self.inbound.receive_data(data)
                moved = True
            if data := self.inbound.data_to_send():
                self.outbound.receive_data(data)
                moved = True
            for event in drain(self.inbound):
                self.in_events.append(event)
                self._on_inbound(event)
                moved = True
            for event in drain(self.outbound):
                self.out_events.append(event)
                if isinstance(event, s2s.TLSProceed):
                    self.inbound.tls_established(self.certificate_a)
                    self.outbound.tls_established(self.certificate_b)
                moved = True
            if not moved:
                return

    def _on_inbound(self, event: object) -> None:
        if isinstance(event, s2s.DialbackKeyReceived):
            # The authoritative server of a.example (the shell asks it over <db:verify/>).
            expected = dialback_key(SECRET_A, event.receiving, event.originating, event.stream_id)
            self.inbound.dialback_verified(event.originating, event.receiving, event.key == expected)


def test_starttls_then_dialback_establishes_both_directions_of_trust() -> None:
    pair = Pair()
    pair.outbound.start()
    pair.pump()
    assert pair.outbound.state is s2s.OutboundState.ESTABLISHED
    assert pair.outbound.tls_active
    assert pair.inbound.tls_active
    assert any(isinstance(e, ev.StartTLSRequested) for e in pair.in_events)
    assert s2s.PeerAuthenticated(A, "dialback") in pair.in_events
    assert s2s.OutboundReady("dialback") in pair.out_events
    assert pair.inbound.authenticated == {A}


def test_stanzas_cross_in_jabber_server_and_arrive_in_jabber_client() -> None:
    pair = Pair()
    pair.outbound.start()
    pair.pump()
    message = etree.fromstring(f"<message xmlns='{NS_CLIENT}' from='alice@{A}/r' to='bob@{B}' type='chat'>"
                               "<body>hi</body><x xmlns='urn:other'><y/></x></message>")  # fmt: skip
    pair.outbound.send_stanza(message)
    wire = pair.outbound.data_to_send()
    assert b"jabber:server" in wire
    assert b"jabber:client" not in wire
    pair.inbound.receive_data(wire)
    (received,) = drain(pair.inbound)
    assert isinstance(received, ev.StanzaReceived)
    element = received.element
    assert element.tag == f"{{{NS_CLIENT}}}message"
    assert element.find(f"{{{NS_CLIENT}}}body").text == "hi"
    assert element.find("{urn:other}x/{urn:other}y") is not None
    assert NS_SERVER not in etree.tostring(element).decode()


def test_sasl_external_when_the_certificate_speaks_for_the_peer() -> None:
    pair = Pair(outbound_options={}, inbound_options={})
    pair.outbound.try_external = True
    pair.certificate_a = CertificateIdentities(dns_ids=(A,))
    pair.outbound.start()
    pair.pump()
    assert s2s.OutboundReady("sasl-external") in pair.out_events
    assert s2s.PeerAuthenticated(A, "sasl-external") in pair.in_events
    assert not any(isinstance(e, s2s.DialbackKeyReceived) for e in pair.in_events)


def test_sasl_external_is_not_offered_for_a_certificate_of_another_name() -> None:
    pair = Pair()
    pair.outbound.try_external = True
    pair.certificate_a = CertificateIdentities(dns_ids=("other.example",))
    pair.outbound.start()
    pair.pump()
    # Not offered, so the outbound stream falls back to dialback (XEP-0178 §3, XEP-0220).
    assert s2s.OutboundReady("dialback") in pair.out_events


def test_outbound_refuses_a_peer_certificate_for_another_name_when_required() -> None:
    pair = Pair()
    pair.outbound.require_valid_certificate = True
    pair.certificate_b = CertificateIdentities(dns_ids=("other.example",))
    pair.outbound.start()
    pair.pump()
    failures = [e for e in pair.out_events if isinstance(e, s2s.OutboundFailed)]
    assert failures
    assert "certificate" in failures[0].text
    assert pair.outbound.closed


def test_a_key_that_does_not_verify_gets_invalid_and_no_trust() -> None:
    stream = inbound(tls_required=False)
    stream.receive_data(HEADER.format(frm=A, to=B).encode())
    assert drain(stream) == []
    stream.data_to_send()
    stream.receive_data(
        f"<db:result xmlns:db='jabber:server:dialback' from='{A}' to='{B}'>bad</db:result>".encode()
    )
    (event,) = drain(stream)
    assert isinstance(event, s2s.DialbackKeyReceived)
    assert event.key == "bad"
    stream.dialback_verified(A, B, False)
    (result,) = elements(stream.data_to_send())
    assert result.get("type") == "invalid"
    assert result.get("to") == A
    assert stream.authenticated == set()


def test_db_verify_is_answered_from_our_secret() -> None:
    stream = inbound(tls_required=False)
    stream.receive_data(HEADER.format(frm=A, to=B).encode())
    drain(stream)
    stream.data_to_send()
    good = dialback_key(SECRET_B, A, B, "sid1")
    stream.receive_data(
        f"<db:verify {DB} from='{A}' to='{B}' id='sid1'>{good}</db:verify>"
        f"<db:verify {DB} from='{A}' to='{B}' id='sid2'>{good}</db:verify>".encode()
    )
    assert drain(stream) == []
    first, second = elements(stream.data_to_send())
    assert (first.get("type"), first.get("id"), first.get("to")) == ("valid", "sid1", A)
    assert (second.get("type"), second.get("id")) == ("invalid", "sid2")


def _authenticated_inbound() -> s2s.InboundStream:
    stream = inbound(tls_required=False)
    stream.receive_data(HEADER.format(frm=A, to=B).encode())
    drain(stream)
    stream.receive_data(
        f"<db:result xmlns:db='jabber:server:dialback' from='{A}' to='{B}'>k</db:result>".encode()
    )
    drain(stream)
    stream.dialback_verified(A, B, True)
    drain(stream)
    stream.data_to_send()
    return stream


def test_a_stanza_from_an_unauthenticated_domain_is_refused_then_the_stream_ends() -> None:
    stream = _authenticated_inbound()
    forged = f"<message from='mallory@evil.example' to='bob@{B}'><body>x</body></message>"
    stream.receive_data(forged.encode())
    (refused,) = drain(stream)
    assert isinstance(refused, s2s.StanzaRefused)
    assert refused.condition == "invalid-from"
    assert not stream.closed
    stream.receive_data(f"<message from='alice@{A}' to='bob@{B}'><body>ok</body></message>".encode())
    (good,) = drain(stream)
    assert isinstance(good, ev.StanzaReceived)
    stream.receive_data(forged.encode())
    (closed,) = drain(stream)
    assert closed == ev.StreamClosed("invalid-from")
    assert stream.state is s2s.InboundState.CLOSED
    (error,) = (el for el in elements(stream.data_to_send()) if el.tag == f"{{{NS_STREAMS}}}error")
    assert error[0].tag == f"{{{NS_STREAM_ERRORS}}}invalid-from"


def test_a_stanza_before_any_authentication_is_refused() -> None:
    stream = inbound(tls_required=False)
    stream.receive_data(HEADER.format(frm=A, to=B).encode())
    drain(stream)
    stream.receive_data(f"<message from='alice@{A}' to='bob@{B}'/>".encode())
    (refused,) = drain(stream)
    assert isinstance(refused, s2s.StanzaRefused)


@pytest.mark.parametrize(
    ("stanza", "condition"),
    [
        (f"<message to='bob@{B}'/>", "improper-addressing"),
        (f"<message from='alice@{A}'/>", "improper-addressing"),
        (f"<message from='alice@{A}' to='@@'/>", "improper-addressing"),
    ],
)
def test_stanzas_without_valid_addresses_end_the_stream(stanza: str, condition: str) -> None:
    stream = _authenticated_inbound()
    stream.receive_data(stanza.encode())
    assert drain(stream) == [ev.StreamClosed(condition)]


def test_starttls_is_required_before_dialback() -> None:
    stream = inbound()
    stream.receive_data(HEADER.format(frm=A, to=B).encode())
    drain(stream)
    features = [el for el in elements(stream.data_to_send()) if el.tag == f"{{{NS_STREAMS}}}features"]
    assert [child.tag.split("}")[1] for child in features[0]] == ["starttls"]
    stream.receive_data(
        f"<db:result xmlns:db='jabber:server:dialback' from='{A}' to='{B}'>k</db:result>".encode()
    )
    assert drain(stream) == [ev.StreamClosed("policy-violation")]


@pytest.mark.parametrize(
    ("header", "condition"),
    [
        (HEADER.format(frm=A, to="unknown.example"), "host-unknown"),
        (HEADER.replace(" to='{to}'", "").format(frm=A), "improper-addressing"),
        (HEADER.format(frm=A, to=B).replace("jabber:server'", "jabber:client'", 1), "invalid-namespace"),
        (HEADER.format(frm=A, to=B).replace("version='1.0'", ""), "unsupported-version"),
    ],
)
def test_bad_headers(header: str, condition: str) -> None:
    stream = inbound()
    stream.receive_data(header.encode())
    assert drain(stream) == [ev.StreamClosed(condition)]
    assert stream.data_to_send().startswith(b"<?xml version='1.0'?><stream:stream")


def test_dialback_refused_when_only_certificates_are_allowed() -> None:
    stream = inbound(tls_required=False, dialback_allowed=False)
    stream.receive_data(HEADER.format(frm=A, to=B).encode())
    drain(stream)
    assert b"urn:xmpp:features:dialback" not in stream.data_to_send()
    stream.receive_data(
        f"<db:result xmlns:db='jabber:server:dialback' from='{A}' to='{B}'>k</db:result>".encode()
    )
    assert drain(stream) == [ev.StreamClosed("not-authorized")]


def test_outbound_dialback_invalid_verdict_fails_the_stream() -> None:
    pair = Pair()
    pair.inbound.dialback_verified = lambda originating, receiving, valid: None  # type: ignore[method-assign]
    pair.outbound.start()
    pair.pump()
    stream_id = pair.outbound.stream_id
    pair.outbound.receive_data(f"<db:result xmlns:db='jabber:server:dialback' from='{B}' to='{A}' "
                               "type='invalid'/>".encode())  # fmt: skip
    events = drain(pair.outbound)
    assert stream_id is not None
    assert isinstance(events[0], s2s.OutboundFailed)
    assert "invalid" in events[0].text
    assert pair.outbound.closed


def test_outbound_without_tls_when_required_fails() -> None:
    stream = s2s.OutboundStream(config(A, SECRET_A), B)
    stream.start()
    stream.receive_data((HEADER.format(frm=B, to=A).replace("version", "id='x' version") +
                         "<stream:features/>").encode())  # fmt: skip
    events = drain(stream)
    assert isinstance(events[0], s2s.OutboundFailed)
    assert "TLS" in events[0].text


def test_outbound_carries_verify_questions_and_reports_answers() -> None:
    pair = Pair()
    pair.outbound.start()
    pair.pump()
    assert pair.outbound.can_verify
    pair.outbound.send_verify(B, "their-stream", dialback_key(SECRET_B, A, B, "their-stream"))
    pair.outbound.send_verify(B, "other-stream", "wrong")
    pair.pump()
    answers = [e for e in pair.out_events if isinstance(e, s2s.VerifyAnswered)]
    assert answers == [
        s2s.VerifyAnswered(B, "their-stream", True),
        s2s.VerifyAnswered(B, "other-stream", False),
    ]


def test_namespace_round_trip_keeps_other_namespaces_and_attributes() -> None:
    original = etree.fromstring(
        f"<iq xmlns='{NS_CLIENT}' type='get' id='1' from='a@{A}' to='{B}' xml:lang='en'>"
        "<query xmlns='jabber:iq:version'/></iq>"
    )
    server = s2s.to_server_namespace(original)
    assert server.tag == f"{{{NS_SERVER}}}iq"
    assert server[0].tag == "{jabber:iq:version}query"
    back = s2s.to_client_namespace(server)
    assert etree.tostring(back) == etree.tostring(original)


def test_a_stream_per_local_domain_speaks_for_a_service_domain() -> None:
    """XEP-0220 §2.5 without piggybacking: the room service's stanzas leave on a stream of its own."""
    pair = Pair(inbound_options={"served_domains": frozenset({f"conference.{B}"})})
    pair.outbound = s2s.OutboundStream(config(A, SECRET_A), B, local_domain=f"conference.{A}")
    pair.outbound.start()
    pair.pump()
    assert s2s.PeerAuthenticated(f"conference.{A}", "dialback") in pair.in_events
    assert pair.inbound.authenticated == {f"conference.{A}"}


def test_db_verify_for_a_served_subdomain() -> None:
    stream = inbound(tls_required=False, served_domains=frozenset({f"conference.{B}"}))
    stream.receive_data(HEADER.format(frm=A, to=B).encode())
    drain(stream)
    stream.data_to_send()
    key = dialback_key(SECRET_B, A, f"conference.{B}", "sid")
    stream.receive_data(f"<db:verify {DB} from='{A}' to='conference.{B}' id='sid'>{key}</db:verify>".encode())
    drain(stream)
    (answer,) = elements(stream.data_to_send())
    assert answer.get("type") == "valid"


def test_a_namespace_name_that_is_not_a_uri_ends_the_inbound_stream() -> None:
    """Found by fuzzing: such a name (``urn:a]]>b``) once escaped `next_event` as a ValueError on
    its way to jabber:client; the parser refuses it now, as every later parse of the bytes would."""
    stream = _authenticated_inbound()
    stream.receive_data(f"<message from='alice@{A}' to='bob@{B}'><x xmlns='urn:a]]>b'/></message>".encode())
    assert drain(stream) == [ev.StreamClosed("not-well-formed")]
    (error,) = (el for el in elements(stream.data_to_send()) if el.tag == f"{{{NS_STREAMS}}}error")
    assert error[0].tag == f"{{{NS_STREAM_ERRORS}}}not-well-formed"


def test_translate_refuses_a_namespace_lxml_will_not_create() -> None:
    parser = etree.XMLPullParser(events=("end",))
    parser.feed("<message xmlns='jabber:client' to='a@b'><x xmlns='urn:a]]>b'/></message>")
    *_, (_, message) = parser.read_events()
    with pytest.raises(s2s.UnrepresentableNamespace):
        s2s.to_server_namespace(message)
    assert s2s.unrelayable().condition == "bad-request"
