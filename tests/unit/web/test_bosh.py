"""`BoshTransport` without HTTP or a session: rid order, repeats, holds, waits and inactivity,
on Trio's autojump clock (the waits are virtual). And `BoshSessions` of two workers joined as the
mesh joins them: requests for the other worker's session forwarded there, and the errors when it
is unknown, gone or silent."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import trio
import trio.testing
from lxml import etree
from trio.testing import MockClock

from imactor import messages as m
from imactor.actors import ActorAddress, ActorGone
from imactor.cluster.placement import Membership
from imactor.config import Config
from imactor.web.bosh import FORWARD_MARGIN, BoshSessions, BoshTransport
from imactor.web.messages import Request
from imactor.xmpp.bosh import BoshError, ParsedBody, client_number, parse_body, request_rid, terminate_body
from imactor.xmpp.errors import StanzaError
from imactor.xmpp.namespaces import NS_HTTPBIND


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


@pytest.mark.parametrize("value", ["\u00b2", "\u0661", "", "-1", "0x10"])
def test_rid_wait_hold_and_pause_take_ascii_digits_only(value: str) -> None:
    """Found by review while writing the fuzz targets: "²" passed str.isdigit() and made int()
    raise ValueError, which escaped as a failed HTTP connection instead of a terminate body
    (XEP-0124 §14: rid, wait, hold and pause are positive integers, written in ASCII digits)."""
    with pytest.raises(BoshError, match="bad-request"):
        request_rid({"rid": value})
    for low in (0, 1):
        with pytest.raises(BoshError, match="bad-request"):
            client_number(value, 60, low=low)


async def test_a_pause_that_is_not_a_number_is_bad_request(autojump_clock: trio.testing.MockClock) -> None:
    bosh = transport()
    with pytest.raises(BoshError, match="bad-request"):
        await bosh.request(10, ParsedBody({"pause": "\u00b2"}, []))


def test_body_children_with_non_ascii_names_come_out_as_xml() -> None:
    """Found by the BOSH fuzzer: a child whose element or attribute name is not ASCII came out as
    "<b&#246;dy>" (lxml's ASCII serialization), which the session's own parser then refused
    (not-well-formed): the client's stream ended over a well-formed stanza (XML 1.0 §2.3)."""
    parsed = parse_body(
        "<body xmlns='http://jabber.org/protocol/httpbind' rid='5'><message xmlns='jabber:client'>"
        "<bödy xmlns='urn:example:names' ä='1'/></message></body>".encode(),
        1000,
    )
    (child,) = parsed.children
    assert etree.fromstring(child).find("{urn:example:names}bödy").get("ä") == "1"


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


# ---- two workers: forwarding -------------------------------------------------------------------


class LinkedMesh:
    """What `BoshSessions` uses of a worker's mesh, with a peer reached the way the real mesh
    reaches it: a `BoshRequest` frame goes to the handler the peer registered for its kind, which
    serves it in a task of its own (`Mesh.handle`, `Mesh.spawn`).
    `peer_state`: "live", "gone" (sends raise `ActorGone`) or "silent" (the frame is lost)."""

    def __init__(self, index: int, nursery: trio.Nursery) -> None:
        self.index, self.nursery = index, nursery
        self.membership = Membership(1, (0, 1))
        self.handlers: dict[str, Any] = {}
        self.bosh_forwarded = 0
        self.peer: LinkedMesh | None = None
        self.peer_state = "live"

    def remote(self, kind: str, key: str, worker: int) -> Any:
        return _PeerRef(self, ActorAddress(kind, key, worker))

    def handle(self, kind: str, handler: Any) -> None:
        self.handlers[kind] = handler

    def spawn(self, function: Any, *args: object) -> None:
        self.nursery.start_soon(function, *args)

    def count(self, counter: str) -> None:
        assert counter == "bosh_forwarded"
        self.bosh_forwarded += 1


class _PeerRef:
    def __init__(self, mesh: LinkedMesh, address: ActorAddress) -> None:
        self.mesh, self.address = mesh, address

    async def send(self, message: m.BoshRequest) -> None:
        peer = self.mesh.peer
        assert peer is not None
        assert peer.index == self.address.worker
        assert self.address.kind == "bosh"
        if self.mesh.peer_state == "gone":
            raise ActorGone(str(self.address))
        if self.mesh.peer_state == "live":
            peer.handlers["bosh"](self.address.key, message)


def workers(nursery: trio.Nursery) -> tuple[BoshSessions, BoshSessions]:
    """Worker 0 (the owner of the sessions made by `owned`) and worker 1, linked."""
    meshes = LinkedMesh(0, nursery), LinkedMesh(1, nursery)
    meshes[0].peer, meshes[1].peer = meshes[1], meshes[0]
    pair = [
        BoshSessions(SimpleNamespace(config=Config(), domain="localhost", worker_index=i, mesh=mesh))  # type: ignore[arg-type]
        for i, mesh in enumerate(meshes)
    ]
    return pair[0], pair[1]


def mesh(sessions: BoshSessions) -> LinkedMesh:
    linked: Any = sessions.services.mesh  # a LinkedMesh standing for the `Mesh`
    assert isinstance(linked, LinkedMesh)
    return linked


def owned(owner: BoshSessions, sid: str = "0.abc", *, wait: int = 5) -> BoshTransport:
    bosh = BoshTransport(owner, sid, 10, wait=wait, hold=1, secure=True)
    owner.sessions[sid] = bosh
    return bosh


def post(sid: str, rid: int, payload: str = "", attributes: str = "") -> Request:
    body = f"<body xmlns='{NS_HTTPBIND}' sid='{sid}' rid='{rid}'{attributes}>{payload}</body>"
    return Request("POST", "/http-bind", {}, body.encode())


def condition(answer: bytes) -> tuple[str | None, str | None]:
    body = etree.fromstring(answer)
    return body.get("type"), body.get("condition")


async def test_a_request_for_another_workers_session_runs_on_its_owner(autojump_clock: MockClock) -> None:
    async with trio.open_nursery() as nursery:
        owner, other = workers(nursery)
        bosh = owned(owner)
        answers: list[bytes] = []

        async def through(sessions: BoshSessions, request: Request) -> None:
            answers.append((await sessions.handle(request, "127.0.0.1", secure=True)).body)

        # Held on the owner for the other worker, answered when the session sends.
        nursery.start_soon(through, other, post("0.abc", 10, "<message xmlns='jabber:client'/>"))
        assert await bosh.receive_some() == b'<message xmlns="jabber:client"/>'
        await trio.testing.wait_all_tasks_blocked()
        assert not answers
        await bosh.send_frames([stanza("iq")])
        await trio.testing.wait_all_tasks_blocked()
        assert [children(a) for a in answers] == [["iq"]]
        # The same rid again, on either worker: the same answer (XEP-0124 §14.3).
        await through(owner, post("0.abc", 10, "<message xmlns='jabber:client'/>"))
        await through(other, post("0.abc", 10, "<message xmlns='jabber:client'/>"))
        assert answers[1] == answers[2] == answers[0]
        assert (mesh(owner).bosh_forwarded, mesh(other).bosh_forwarded) == (0, 2)
        # A terminate forwarded from the other worker ends the session on the owner.
        await through(other, post("0.abc", 11, attributes=" type='terminate'"))
        assert condition(answers[3]) == ("terminate", None)
        assert bosh.terminated == ""
        assert "0.abc" not in owner.sessions
        nursery.cancel_scope.cancel()


async def test_unknown_and_forged_sids_are_item_not_found(autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        owner, other = workers(nursery)
        # "².z": a superscript two is a digit to str.isdigit(), not to int(), which raised.
        for sid in (
            "0.unknown",
            "1.mine-but-unknown",
            "7.no-such-worker",
            "nodot",
            "x.y",
            "1234567.z",
            "\u00b2.z",
        ):
            answer = (await other.handle(post(sid, 10), "127.0.0.1", secure=True)).body
            assert condition(answer) == ("terminate", "item-not-found"), sid
        # Only the first went to the owner (which has no such session).
        assert mesh(other).bosh_forwarded == 1
        # A forwarded request is never a session creation.
        reply = _Reply()
        creation = b"<body xmlns='http://jabber.org/protocol/httpbind' rid='1' to='localhost'/>"
        await owner.serve_forwarded("0.x", m.BoshRequest(creation, reply))  # type: ignore[arg-type]
        assert isinstance(reply.value, m.BoshResponse)
        assert condition(reply.value.body) == ("terminate", "bad-request")
        nursery.cancel_scope.cancel()


class _Reply:
    """A reply slot that keeps what it gets."""

    value: Any = None

    def send(self, value: Any) -> None:
        self.value = value

    def fail(self, error: BaseException) -> None:
        self.value = error


@pytest.mark.parametrize("state", ["gone", "silent"])
async def test_an_owner_gone_or_silent_is_remote_connection_failed(
    state: str, autojump_clock: trio.testing.MockClock
) -> None:
    async with trio.open_nursery() as nursery:
        owner, other = workers(nursery)
        owned(owner)
        mesh(other).peer_state = state
        start = trio.current_time()
        answer = (await other.handle(post("0.abc", 10), "127.0.0.1", secure=True)).body
        assert condition(answer) == ("terminate", "remote-connection-failed")
        elapsed = trio.current_time() - start
        # Bounded: a silent owner is given up on after the longest a local request may take.
        expected = 2 * Config().http.bosh_max_wait + FORWARD_MARGIN if state == "silent" else 0
        assert elapsed == pytest.approx(expected)
        nursery.cancel_scope.cancel()


async def test_a_forwarded_request_cut_short_still_gets_a_reply(
    autojump_clock: MockClock,
) -> None:
    """The owner's mesh stopping cancels the requests it serves: their askers hear so at once
    (and answer remote-connection-failed) rather than waiting for their timeout."""
    async with trio.open_nursery() as nursery:
        owner, _ = workers(nursery)
        owned(owner)
        reply = _Reply()
        with trio.CancelScope() as scope:

            async def stop_when_held() -> None:
                await trio.testing.wait_all_tasks_blocked()
                scope.cancel()

            nursery.start_soon(stop_when_held)
            await owner.serve_forwarded("0.abc", m.BoshRequest(post("0.abc", 10).body, reply))  # type: ignore[arg-type]
        assert isinstance(reply.value, StanzaError)
        assert reply.value.condition == "service-unavailable"
        nursery.cancel_scope.cancel()
