"""XEP-0198 state (`StreamManagement`), sans-IO: nonzas in, reply bytes out; and the stream's part of it."""

from __future__ import annotations

import pytest
from lxml import etree

from imactor.xmpp import events as ev
from imactor.xmpp import sm
from imactor.xmpp.namespaces import NS_SM, NS_STANZA_ERRORS, NS_STREAM_ERRORS, NS_STREAMS, qname
from imactor.xmpp.sm import MOD, SmStreamError, StreamManagement
from imactor.xmpp.stream import State, StreamConfig
from tests.unit.xmpp.test_stream import DOMAIN, JULIET, at_bind, established


def el(name: str, **attrs: str) -> etree._Element:
    element = etree.Element(qname(NS_SM, name), nsmap={None: NS_SM})  # type: ignore[dict-item]
    for key, value in attrs.items():
        element.set(key, value)
    return element


def handle(state: StreamManagement, element: etree._Element, *, bound: bool = True) -> sm.Reply | None:
    return state.handle(element, bound=bound, new_id=lambda: "sm-id-1", max_resume=300)


def parsed(reply: sm.Reply | None) -> etree._Element:
    assert reply is not None
    return etree.fromstring(reply.data)


def condition(failed: etree._Element) -> str:
    assert failed.tag == qname(NS_SM, "failed")
    (child,) = failed
    assert etree.QName(child).namespace == NS_STANZA_ERRORS
    return etree.QName(child).localname


def enabled(resume: bool = False) -> StreamManagement:
    state = StreamManagement(ack_every=3)
    handle(state, el("enable", **({"resume": "true"} if resume else {})))
    return state


# ---- enabling ------------------------------------------------------------------------------------


def test_enable_without_resumption() -> None:
    state = StreamManagement()
    reply = handle(state, el("enable"))
    assert reply is not None
    assert reply.enabled
    answer = parsed(reply)
    assert answer.tag == qname(NS_SM, "enabled")
    assert answer.get("id") is None
    assert answer.get("resume") is None
    assert state.enabled
    assert not state.resumable


def test_enable_with_resumption_gives_id_and_max() -> None:
    state = StreamManagement()
    answer = parsed(handle(state, el("enable", resume="true")))
    assert (answer.get("id"), answer.get("resume"), answer.get("max")) == ("sm-id-1", "true", "300")
    assert state.resumable
    assert state.id == "sm-id-1"
    assert state.max == 300


def test_client_max_lowers_the_resumption_time() -> None:
    state = StreamManagement()
    assert parsed(handle(state, el("enable", resume="1", max="60"))).get("max") == "60"
    assert state.max == 60
    other = StreamManagement()
    assert parsed(handle(other, el("enable", resume="true", max="9999"))).get("max") == "300"


@pytest.mark.parametrize("wanted", ["\u00b2", "\u0661\u0662", "-5", "abc"])
def test_a_max_that_is_not_a_number_gives_the_servers_max(wanted: str) -> None:
    """XEP-0198 §5: 'max' is the client's preferred maximum, an xs:unsignedInt; one that is not
    (here non-ASCII digits, which str.isdigit() accepts) is ignored, not a crashed session."""
    state = StreamManagement()
    assert parsed(handle(state, el("enable", resume="true", max=wanted))).get("max") == "300"


def test_no_resumption_when_the_server_allows_none() -> None:
    state = StreamManagement()
    reply = state.handle(el("enable", resume="true"), bound=True, new_id=lambda: "x", max_resume=0)
    assert parsed(reply).get("resume") is None
    assert not state.resumable


def test_enable_before_bind_fails_with_unexpected_request() -> None:
    state = StreamManagement()
    reply = handle(state, el("enable"), bound=False)
    assert reply is not None
    assert not reply.enabled
    assert condition(parsed(reply)) == "unexpected-request"
    assert not state.enabled


def test_enable_twice_fails() -> None:
    state = enabled()
    assert condition(parsed(handle(state, el("enable")))) == "unexpected-request"
    assert state.enabled


@pytest.mark.parametrize("name", ["r", "a"])
def test_r_and_a_before_enable_fail(name: str) -> None:
    assert condition(parsed(handle(StreamManagement(), el(name, h="0")))) == "unexpected-request"


def test_resume_once_bound_fails() -> None:
    assert condition(parsed(handle(enabled(), el("resume", previd="x", h="0")))) == "unexpected-request"


# ---- acks ----------------------------------------------------------------------------------------


def test_r_is_answered_with_the_inbound_count() -> None:
    state = enabled()
    assert parsed(handle(state, el("r"))).get("h") == "0"
    state.received()
    state.received(2)
    answer = parsed(handle(state, el("r")))
    assert answer.tag == qname(NS_SM, "a")
    assert answer.get("h") == "3"


def test_nothing_is_counted_before_enable() -> None:
    state = StreamManagement()
    state.received(5)
    state.stanza_sent(b"<message/>")
    assert (state.h_in, state.sent, list(state.unacked)) == (0, 0, [])


def test_h_counts_only_the_contiguous_prefix_of_handled_stanzas() -> None:
    state = enabled()
    first, second, third = (state.stanza_received() for _ in range(3))
    assert (first, second, third) == (0, 1, 2)
    assert (state.h_in, state.pending_in) == (0, 3)
    state.stanza_handled(second)  # a later one first: h waits for the first
    state.stanza_handled(third)
    assert parsed(handle(state, el("r"))).get("h") == "0"  # <r/> answered at once, with h so far
    state.stanza_handled(first)
    assert (state.h_in, state.pending_in) == (3, 0)
    assert parsed(handle(state, el("r"))).get("h") == "3"


def test_h_advances_over_a_prefix_and_waits_at_a_pending_stanza() -> None:
    state = enabled()
    seqs = [state.stanza_received() for _ in range(4)]
    state.stanza_handled(seqs[0])
    state.stanza_handled(seqs[2])
    assert state.h_in == 1
    state.received()  # a fifth, handled at once: still behind the pending second
    assert (state.h_in, state.pending_in) == (1, 4)
    state.stanza_handled(seqs[1])
    assert state.h_in == 3
    state.stanza_handled(seqs[3])
    assert (state.h_in, state.pending_in) == (5, 0)


def test_stanza_handled_ignores_repeated_and_unknown_numbers() -> None:
    state = enabled()
    seq = state.stanza_received()
    state.stanza_handled(seq)
    state.stanza_handled(seq)
    state.stanza_handled(seq + 1)  # not received yet
    state.stanza_handled(-5)
    assert (state.h_in, state.pending_in) == (1, 0)
    later = state.stanza_received()
    state.stanza_handled(later)
    assert state.h_in == 2


def test_stanzas_before_enable_are_not_counted_even_when_handled_later() -> None:
    state = StreamManagement()
    before = state.stanza_received()
    assert before == sm.NOT_COUNTED
    handle(state, el("enable"))
    after = state.stanza_received()
    state.stanza_handled(before)
    assert state.h_in == 0
    state.stanza_handled(after)
    assert state.h_in == 1


def test_out_of_order_handling_wraps_at_2_to_the_32() -> None:
    state = enabled()
    state.h_in = MOD - 1
    a, b = state.stanza_received(), state.stanza_received()
    state.stanza_handled(b)
    assert state.h_in == MOD - 1
    state.stanza_handled(a)
    assert state.h_in == 1


def test_each_session_gets_its_own_unacked_queue() -> None:
    # Before SM is enabled every session shares one empty placeholder queue (white box).
    first, second, idle = enabled(), enabled(), StreamManagement()
    assert first.unacked is idle.unacked
    first.stanza_sent(b"<m1/>")
    second.stanza_sent(b"<m2/>")
    idle.stanza_sent(b"<m3/>")
    assert (list(first.unacked), list(second.unacked), list(idle.unacked)) == ([b"<m1/>"], [b"<m2/>"], [])
    assert StreamManagement().take_unacked() == []


def test_a_trims_the_unacked_queue() -> None:
    state = enabled()
    for i in range(4):
        state.stanza_sent(f"<message id='{i}'/>".encode())
    assert handle(state, el("a", h="3")) is None
    assert list(state.unacked) == [b"<message id='3'/>"]
    assert state.acked == 3
    handle(state, el("a", h="3"))  # the same h again changes nothing
    assert len(state.unacked) == 1
    handle(state, el("a", h="4"))
    assert not state.unacked


def test_a_beyond_what_was_sent_is_handled_count_too_high() -> None:
    state = enabled()
    state.stanza_sent(b"<message/>")
    with pytest.raises(SmStreamError) as caught:
        handle(state, el("a", h="2"))
    assert caught.value.condition == "undefined-condition"
    assert caught.value.app is not None
    app = etree.fromstring(caught.value.app)
    assert app.tag == qname(NS_SM, "handled-count-too-high")
    assert (app.get("h"), app.get("send-count")) == ("2", "1")


# "²" and "١" are digits to str.isdigit(); the first made int() raise ValueError (a crashed
# session instead of a stream error), the second passed as 1. XEP-0198's h is an xs:unsignedInt,
# whose lexical form has ASCII digits only (XML Schema Part 2 §3.3.22).
@pytest.mark.parametrize("h", ["", "-1", "x", str(MOD), "99999999999", "\u00b2", "\u0661"])
def test_a_with_a_bad_h_is_invalid_xml(h: str) -> None:
    with pytest.raises(SmStreamError) as caught:
        handle(enabled(), el("a", h=h))
    assert caught.value.condition == "invalid-xml"


def test_counters_wrap_at_2_to_the_32() -> None:
    state = enabled()
    state.h_in = MOD - 1
    state.received(2)
    assert state.h_in == 1
    state.sent = state.acked = MOD - 2
    for i in range(4):
        state.stanza_sent(f"<m{i}/>".encode())
    assert state.sent == 2
    state.acknowledge(1)  # 2^32-2 → 1 is three stanzas
    assert list(state.unacked) == [b"<m3/>"]
    with pytest.raises(SmStreamError):
        state.acknowledge(3)


def test_ack_requests_every_n_stanzas_or_when_idle() -> None:
    state = enabled()  # ack_every=3
    assert not state.wants_ack_request(idle=True)
    state.stanza_sent(b"<m/>")
    assert not state.wants_ack_request()
    assert state.wants_ack_request(idle=True)
    state.stanza_sent(b"<m/>")
    state.stanza_sent(b"<m/>")
    assert state.wants_ack_request()
    state.ack_requested()
    assert not state.wants_ack_request(idle=True)


# ---- resumption ----------------------------------------------------------------------------------


def test_resume_returns_what_the_client_did_not_handle() -> None:
    state = enabled(resume=True)
    state.received(2)
    for i in range(5):
        state.stanza_sent(f"<m{i}/>".encode())
    handle(state, el("a", h="1"))
    assert state.resume(3) == [b"<m3/>", b"<m4/>"]
    assert state.sent == 5  # they keep their numbers
    resumed = etree.fromstring(state.resumed("sm-id-1"))
    assert resumed.tag == qname(NS_SM, "resumed")
    assert (resumed.get("h"), resumed.get("previd")) == ("2", "sm-id-1")


def test_resume_with_h_too_high_fails() -> None:
    state = enabled(resume=True)
    state.stanza_sent(b"<m/>")
    with pytest.raises(SmStreamError):
        state.resume(2)


def test_take_unacked_empties_the_queue() -> None:
    state = enabled()
    state.stanza_sent(b"<m1/>")
    state.stanza_sent(b"<m2/>")
    assert state.take_unacked() == [b"<m1/>", b"<m2/>"]
    assert not state.unacked


def test_failed_carries_h_when_known() -> None:
    failed = etree.fromstring(sm.failed("item-not-found", 7))
    assert condition(failed) == "item-not-found"
    assert failed.get("h") == "7"
    assert etree.fromstring(sm.failed()).get("h") is None


# ---- the stream's part ---------------------------------------------------------------------------

SM_CONFIG = StreamConfig(domain=DOMAIN, nonzas=sm.NONZAS, prebind_nonzas=frozenset({sm.ENABLE, sm.RESUME}),
                         bound_features=(sm.FEATURE,))  # fmt: skip


def test_sm_feature_is_offered_after_authentication() -> None:
    _, features = at_bind(SM_CONFIG)
    assert features.find(qname(NS_SM, "sm")) is not None


def test_resume_and_enable_reach_the_shell_before_bind() -> None:
    client, _ = at_bind(SM_CONFIG)
    (event,) = client.send(f"<resume xmlns='{NS_SM}' previd='x' h='0'/>".encode())
    assert isinstance(event, ev.NonzaReceived)
    assert event.element.tag == sm.RESUME
    (event,) = client.send(f"<enable xmlns='{NS_SM}'/>".encode())
    assert isinstance(event, ev.NonzaReceived)
    assert event.element.tag == sm.ENABLE
    assert client.stream.state is State.WAIT_FOR_BIND


def test_r_before_bind_is_still_refused() -> None:
    client, _ = at_bind(SM_CONFIG)
    (event,) = client.send(f"<r xmlns='{NS_SM}'/>".encode())
    assert isinstance(event, ev.StreamClosed)
    assert event.condition == "not-authorized"


def test_resumed_establishes_the_stream_without_binding() -> None:
    client, _ = at_bind(SM_CONFIG)
    client.stream.resumed(JULIET)
    assert client.stream.state is State.ESTABLISHED
    assert client.stream.jid == JULIET
    (event,) = client.send(b"<message to='romeo@example.net'><body>hi</body></message>")
    assert isinstance(event, ev.StanzaReceived)


def test_stream_counts_stanzas_and_records_sent_ones() -> None:
    client = established(SM_CONFIG)
    client.stream.track_sent = True
    session_iq = b"<iq type='set' id='s1'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>"
    assert client.send(session_iq) == []  # answered by the stream itself: still counted both ways
    client.send(b"<message to='romeo@example.net'/>")
    assert client.stream.stanzas_in == 2
    client.stream.send(b"<message from='romeo@example.net'/>")
    client.stream.send_nonza(sm.REQUEST)
    sent = client.stream.take_sent()
    assert len(sent) == 2
    assert b"s1" in sent[0]
    assert sent[1] == b"<message from='romeo@example.net'/>"
    assert client.stream.take_sent() == []


def test_clean_close_tells_eof_from_closing_tag() -> None:
    eof = established(SM_CONFIG)
    eof.send(b"")
    assert eof.stream.state is State.CLOSED
    assert not eof.stream.clean_close
    closed = established(SM_CONFIG)
    closed.send(b"</stream:stream>")
    assert closed.stream.state is State.CLOSED
    assert closed.stream.clean_close
    ours = established(SM_CONFIG)
    ours.stream.close("conflict")
    assert ours.stream.clean_close


def test_close_with_an_application_condition() -> None:
    client = established(SM_CONFIG)
    client.stream.close(
        "undefined-condition", app=f"<handled-count-too-high xmlns='{NS_SM}' h='2'/>".encode()
    )
    (error,) = client.read()
    assert error.tag == qname(NS_STREAMS, "error")
    assert error.find(qname(NS_STREAM_ERRORS, "undefined-condition")) is not None
    assert error.find(qname(NS_SM, "handled-count-too-high")).get("h") == "2"  # type: ignore[union-attr]
