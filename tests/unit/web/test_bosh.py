"""`BoshTransport` without HTTP or a session: rid order, repeats, holds, waits and inactivity,
on Trio's autojump clock (the waits are virtual)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import trio
import trio.testing
from lxml import etree

from imactor.config import Config
from imactor.web.bosh import BoshTransport
from imactor.xmpp.bosh import BoshError, ParsedBody, parse_body, terminate_body


class FakeSessions:
    """What a transport needs of `BoshSessions`: the config, and `forget`."""

    def __init__(self) -> None:
        self.services = SimpleNamespace(config=Config(), domain="localhost")
        self.forgotten: list[BoshTransport] = []

    def forget(self, transport: BoshTransport) -> None:
        self.forgotten.append(transport)


def transport(rid: int = 10, *, wait: int = 5, hold: int = 1) -> BoshTransport:
    manager: Any = FakeSessions()
    return BoshTransport(manager, "sid", rid, wait=wait, hold=hold, secure=True)


def children(response: bytes) -> list[str]:
    return [etree.QName(e).localname for e in etree.fromstring(response)]


def stanza(name: str) -> bytes:
    return f"<{name} xmlns='jabber:client'/>".encode()


async def test_requests_are_processed_in_rid_order(autojump_clock: trio.testing.MockClock) -> None:
    bosh = transport()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bosh.request, 11, ParsedBody({}, [stanza("presence")]))
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(bosh.request, 10, ParsedBody({}, [stanza("message")]))
        first, second = await bosh.receive_some(), await bosh.receive_some()
        await bosh.send_frames([stanza("iq"), stanza("iq")])  # answers the held requests
    assert (first, second) == (stanza("message"), stanza("presence"))
    assert bosh.next_rid == 12


async def test_a_held_request_carries_the_next_data_or_nothing_after_wait(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bosh = transport(wait=5)
    answers: list[bytes] = []

    async def ask(rid: int) -> None:
        answers.append(await bosh.request(rid, ParsedBody({}, [])))

    start = trio.current_time()
    await ask(10)  # nothing to send: answered empty after 'wait'
    assert trio.current_time() - start == pytest.approx(5)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ask, 11)
        await trio.testing.wait_all_tasks_blocked()
        await bosh.send_frames([b"<open xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>", stanza("message")])
    assert [children(a) for a in answers] == [[], ["message"]]  # <open/> is not sent over BOSH


async def test_repeat_window_and_replay(autojump_clock: trio.testing.MockClock) -> None:
    bosh = transport(wait=3)  # answered after 'wait', empty requests stay slower than 'polling'
    first = await bosh.request(10, ParsedBody({}, []))
    assert await bosh.request(10, ParsedBody({}, [])) == first  # a repeat gets the same answer
    with pytest.raises(BoshError, match="item-not-found"):
        await bosh.request(13, ParsedBody({}, []))  # beyond the window of 2
    for rid in (11, 12, 13):
        await bosh.request(rid, ParsedBody({"pause": "1"} if rid == 11 else {}, []))
    with pytest.raises(BoshError, match="item-not-found"):
        await bosh.request(10, ParsedBody({}, []))  # forgotten: a replay, not a repeat


async def test_inactivity_ends_the_session_and_held_requests_end_with_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bosh = transport()
    start = trio.current_time()
    assert await bosh.receive_some() == b""
    assert trio.current_time() - start == pytest.approx(Config().http.bosh_inactivity)
    assert bosh.terminated == ""
    with pytest.raises(trio.BrokenResourceError):
        await bosh.send_frames([stanza("message")])


async def test_terminate_and_stream_errors(autojump_clock: trio.testing.MockClock) -> None:
    bosh = transport()
    answer = await bosh.request(10, ParsedBody({"type": "terminate"}, [stanza("presence")]))
    assert etree.fromstring(answer).get("type") == "terminate"
    assert [await bosh.receive_some() for _ in range(3)] == [
        stanza("presence"), b"<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>", b"",
    ]  # fmt: skip
    failing = transport()
    async with trio.open_nursery() as nursery:
        answers: list[bytes] = []

        async def ask() -> None:
            answers.append(await failing.request(10, ParsedBody({}, [])))

        nursery.start_soon(ask)
        await trio.testing.wait_all_tasks_blocked()
        error = b"<stream:error xmlns:stream='http://etherx.jabber.org/streams'/>"
        await failing.send_frames([error, b"<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>"])
    body = etree.fromstring(answers[0])
    assert (body.get("type"), body.get("condition")) == ("terminate", "remote-stream-error")
    assert [etree.QName(e).localname for e in body] == ["error"]


def test_parse_body() -> None:
    parsed = parse_body(
        b"<body xmlns='http://jabber.org/protocol/httpbind' rid='5' xmlns:xmpp='urn:xmpp:xbosh'"
        b" xmpp:restart='true'><message xmlns='jabber:client'/></body>",
        1000,
    )
    assert parsed.attributes == {"rid": "5", "{urn:xmpp:xbosh}restart": "true"}
    assert parsed.children == [b'<message xmlns="jabber:client"/>']
    for bad in (b"<body xmlns='http://jabber.org/protocol/httpbind'>", b"<body/>", b"<!-- -->"):
        with pytest.raises(BoshError, match="bad-request"):
            parse_body(bad, 1000)
    assert etree.fromstring(terminate_body("item-not-found")).get("condition") == "item-not-found"
