"""Server actor messages to frame bodies and back (imactor.mesh.codec)."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from imactor import messages as m
from imactor.actors import ActorAddress, Reply
from imactor.mesh import codec
from imactor.xmpp import stanza as st
from imactor.xmpp.errors import StanzaError
from imactor.xmpp.jid import JID
from imactor.xmpp.stanza import Stanza


class SessionStub:
    """Stands for a session reference: only its address crosses a process."""

    def __init__(self, key: str, worker: int) -> None:
        self.address = ActorAddress("session", key, worker)

    async def send(self, message: object) -> None:
        raise NotImplementedError

    def send_nowait(self, message: object) -> None:
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SessionStub) and other.address == self.address

    def __hash__(self) -> int:
        return hash(self.address)


class Endpoints:
    """Records what the encoder registered and what the decoder asked for."""

    index = 1

    def __init__(self) -> None:
        self.replies: dict[str, tuple[Reply[Any], int]] = {}
        self.completions: dict[str, tuple[m.Completion, int]] = {}
        self.remote: list[tuple[str, int, str]] = []

    def reply_id(self, reply: Reply[Any], target_worker: int) -> str:
        key = f"r{len(self.replies)}"
        self.replies[key] = (reply, target_worker)
        return key

    def completion_id(self, completion: m.Completion, target_worker: int) -> str:
        key = f"c{len(self.completions)}"
        self.completions[key] = (completion, target_worker)
        return key

    def session_ref(self, key: str, worker: int) -> Any:
        return SessionStub(key, worker)

    def remote_reply(self, worker: int, reply_id: str) -> Reply[Any]:
        self.remote.append(("reply", worker, reply_id))
        send, _ = trio.open_memory_channel[tuple[bool, Any]](1)
        return Reply(send)

    def remote_completion(self, worker: int, completion_id: str, key: str = "") -> m.Completion:
        self.remote.append(("completion", worker, completion_id))
        return m.Completion(key=key)


def message_stanza(body: str = "hi ☃ <&>", id_: str | None = "m1") -> Stanza:
    el = st.make("message", to="bob@example.com/phone", from_="alice@example.com/pc", type_="chat", id_=id_)
    st.child(el, "jabber:client", "body", body)
    return Stanza.from_element(el)


def round_trip(message: object, endpoints: Endpoints | None = None) -> object:
    endpoints = endpoints or Endpoints()
    body_kind, body = codec.encode(message, 2, endpoints)
    assert body_kind == type(message).__name__
    return codec.decode(body_kind, body, 2, endpoints)


SESSION = SessionStub("abc123", 0)
#: A room's broadcast: its bytes have no `to`; `to_jid` is the room.
ROOM_TEMPLATE = Stanza(
    "message", "groupchat", JID.parse("r@muc.example.com/nick"), JID.parse("r@muc.example.com"), None,
    b"<message xmlns='jabber:client' type='groupchat'><body>hi</body></message>",
)  # fmt: skip
PRESENCE = Stanza.from_element(st.make("presence", from_="a@example.com/x", to="a@example.com"))
#: An administrator's announcement to every session of a worker: no `to` in its bytes either.
ANNOUNCEMENT = Stanza(
    "message", "headline", JID.parse("example.com"), JID.parse("example.com"), None,
    "<message xmlns='jabber:client' type='headline'><body>Down at 18:00 ☃</body></message>".encode(),
)  # fmt: skip


@pytest.mark.parametrize(
    "message",
    [
        m.Deliver(message_stanza()),
        m.Deliver(message_stanza(id_=None)),
        m.Deliver(message_stanza(id_="")),
        m.Kick("conflict", "replaced by a new session"),
        m.Rehome(),
        m.BlocklistChanged(frozenset({"eve@example.com", "spam.example"})),
        m.BlocklistChanged(frozenset()),
        m.Unbind("phone", SESSION),  # type: ignore[arg-type]
        m.FromResource(message_stanza()),
        m.FromResource(PRESENCE, routed=True),
        m.Undelivered((message_stanza("one"), message_stanza("two"))),
        m.Undelivered(()),
        m.AccountRemoved(),
        m.Rebind("phone", SESSION, PRESENCE, True),  # type: ignore[arg-type]
        m.Rebind("phone", SESSION, None, False),  # type: ignore[arg-type]
        m.SessionLost(SESSION),  # type: ignore[arg-type]
        m.Detached("phone", SESSION, True),  # type: ignore[arg-type]
        m.Rebind("phone", SESSION, PRESENCE, True, (("carbons.enabled", "1"),)),  # type: ignore[arg-type]
        m.Rebind("phone", SESSION, None, False, (("a", ""), ("b", "é"))),  # type: ignore[arg-type]
        m.ResourceState((("carbons.enabled", "1"),)),
        m.ResourceState(()),
        m.Detached("phone", SESSION, False),  # type: ignore[arg-type]
        m.Route(message_stanza(), None),
        m.Route(PRESENCE, None, 1),
        m.RoomMoved(b'{"occupants": [], "workers": []}'),
        m.AccountMoved(b"[]"),
        m.HandOffs(7, (("user", "alice"), ("room", "lobby"))),
        m.HandOffs(8, ()),
        m.SentHooks(True),
        m.SentHooks(False),
        m.Fanout(ROOM_TEMPLATE, (JID.parse("a@example.com/x"), JID.parse("b@example.com/y"))),
        m.ComponentAt("gateway.example", 3, True),
        m.ComponentAt("gateway.example", 1025, False),
        m.Announce(ANNOUNCEMENT),
        m.EndSessions("alice", "phone", "policy-violation", "session ended by an administrator"),
        m.EndSessions("bob", "", "not-authorized", ""),
    ],
    ids=lambda message: type(message).__name__,
)
def test_plain_messages_come_back_equal(message: object) -> None:
    assert round_trip(message) == message


def test_a_completion_travels_as_an_id_and_comes_back_as_a_stand_in() -> None:
    endpoints = Endpoints()
    completion = m.Completion(key="session-7/3")
    decoded = round_trip(m.Route(message_stanza(), completion), endpoints)
    assert endpoints.completions == {"c0": (completion, 2)}
    assert endpoints.remote == [("completion", 2, "c0")]
    assert isinstance(decoded, m.Route)
    assert decoded.completion is not None
    assert decoded.completion.key == "session-7/3"  # every route of one message: one archive row
    assert decoded.stanza == message_stanza()


def test_a_bind_registers_its_reply_and_keeps_the_optional_resource() -> None:
    endpoints = Endpoints()
    send, _ = trio.open_memory_channel[tuple[bool, Any]](1)
    for resource in ("phone", None, ""):
        decoded = round_trip(m.Bind(resource, SESSION, Reply(send)), endpoints)  # type: ignore[arg-type]
        assert isinstance(decoded, m.Bind)
        assert (decoded.resource, decoded.session) == (resource, SESSION)
    assert [target for _, target in endpoints.replies.values()] == [2, 2, 2]
    assert [kind for kind, _, _ in endpoints.remote] == ["reply"] * 3


def test_replies_carry_bound_or_the_stanza_error() -> None:
    bound = m.Bound(JID.parse("alice@example.com/pc"), frozenset({"eve@example.com"}))
    assert codec.decode_reply(*codec.encode_reply(bound)) == (True, bound)
    ok, error = codec.decode_reply(*codec.encode_reply(StanzaError("conflict", "resource in use")))
    assert not ok
    assert isinstance(error, StanzaError)
    assert (error.condition, error.text) == ("conflict", "resource in use")
    ok, error = codec.decode_reply(*codec.encode_reply(RuntimeError("boom")))
    assert (ok, getattr(error, "condition", None)) == (False, "internal-server-error")


def test_local_only_messages_do_not_encode() -> None:
    for message in (m.HandOff(), m.WorkersLost(frozenset({1}), 3)):
        with pytest.raises(TypeError, match="does not cross processes"):
            codec.encode(message, 0, Endpoints())


@pytest.mark.parametrize(
    ("body_kind", "body", "reason"),
    [
        ("Nope", b"", "unknown body kind"),
        ("Kick", codec.pack([b"conflict"]), "Kick has 1 fields"),
        ("Kick", b"\x00\x00\x00\x09abc", "runs past the body"),
        ("Kick", b"\x00\x00", "truncated field length"),
        ("Kick", codec.pack([b"\xff", b""]), "not UTF-8"),
        ("Deliver", codec.pack([b"message", b"", b"a@x", b"b@x", b"2", b"", b"<message/>"]), "not 0 or 1"),
        ("Deliver", codec.pack([b"blob", b"", b"a@x", b"b@x", b"0", b"", b"<blob/>"]), "unknown stanza kind"),
        ("Deliver", codec.pack([b"message", b"", b"@x", b"b@x", b"0", b"", b"<message/>"]), "JID is invalid"),
        ("Unbind", codec.pack([b"r", b"key", b"-1"]), "not a small decimal"),
        ("Undelivered", codec.pack([b"message"] * 3), "whole stanzas"),
        ("Rebind", codec.pack([b"r", b"k", b"0", b"1", b"1"]), "fewer than seven fields"),
        ("Rebind", codec.pack([b"r", b"k", b"0", b"1", b"0", *[b"x"] * 7]), "presence flag"),
        ("Detached", codec.pack([b"r", b"k", b"0", b"yes"]), "not 0 or 1"),
        ("ResourceState", codec.pack([b"key"]), "whole pairs"),
        ("Detached", codec.pack([b"r", b"k", b"0"]), "Detached has 3 fields"),
        ("Fanout", codec.pack(codec._stanza_fields(ROOM_TEMPLATE)), "no recipient"),
        ("Fanout", codec.pack([*codec._stanza_fields(ROOM_TEMPLATE), b"@bad"]), "JID is invalid"),
        ("RoomMoved", codec.pack([b"{}", b"{}"]), "RoomMoved has 2 fields"),
        ("AccountMoved", codec.pack([]), "AccountMoved has 0 fields"),
        ("HandOffs", codec.pack([]), "an epoch and whole"),
        ("HandOffs", codec.pack([b"3", b"user"]), "an epoch and whole"),
        ("HandOffs", codec.pack([b"x", b"user", b"a"]), "not a small decimal"),
        ("BoshRequest", codec.pack([b"<body/>"]), "BoshRequest has 1 fields"),
        ("BoshRequest", codec.pack([b"<body/>", b"\xff"]), "not UTF-8"),
        ("ComponentAt", codec.pack([b"gateway.example", b"1"]), "ComponentAt has 2 fields"),
        ("ComponentAt", codec.pack([b"gateway.example", b"w", b"1"]), "not a small decimal"),
        ("ListSessions", codec.pack([]), "ListSessions has 0 fields"),
        ("Announce", codec.pack([b"message"]), "Announce has 1 fields"),
        ("EndSessions", codec.pack([b"alice", b"", b"conflict"]), "EndSessions has 3 fields"),
    ],
)
def test_malformed_bodies_raise_body_error(body_kind: str, body: bytes, reason: str) -> None:
    with pytest.raises(codec.BodyError, match=reason):
        codec.decode(body_kind, body, 0, Endpoints())


def test_malformed_replies_raise_body_error() -> None:
    with pytest.raises(codec.BodyError, match="unknown reply kind"):
        codec.decode_reply("Maybe", b"")
    with pytest.raises(codec.BodyError, match="no JID"):
        codec.decode_reply("Bound", b"")
    with pytest.raises(codec.BodyError, match="JID is invalid"):
        codec.decode_reply("Bound", codec.pack([b"@@"]))
    with pytest.raises(codec.BodyError, match="BoshResponse has 2 fields"):
        codec.decode_reply("BoshResponse", codec.pack([b"<body/>", b"<body/>"]))
    ok, error = codec.decode_reply("Failed", codec.pack([b"made-up-condition", b"x"]))
    assert (ok, getattr(error, "condition", None)) == (False, "internal-server-error")


@pytest.mark.parametrize("state", [(), (("carbons.enabled", "1"), ("x", ""))])
def test_a_moved_session_comes_back_equal_with_its_resource_state(state: tuple[tuple[str, str], ...]) -> None:
    moved = m.MovedSession(
        JID.parse("a@example.com/phone"), 3, 7, 5, 300, (b"<message/>",), (b"<presence/>", b"<iq/>"),
        frozenset({"eve@example.com"}), PRESENCE, True, state,
    )  # fmt: skip
    assert codec.decode_reply(*codec.encode_reply(moved)) == (True, moved)


def test_a_bosh_request_carries_its_body_and_reply_id_and_the_response_comes_back() -> None:
    endpoints = Endpoints()
    send, _ = trio.open_memory_channel[tuple[bool, Any]](1)
    body = b"<body xmlns='http://jabber.org/protocol/httpbind' rid='7' sid='1.x'>\xe2\x98\x83</body>"
    decoded = round_trip(m.BoshRequest(body, Reply(send)), endpoints)
    assert isinstance(decoded, m.BoshRequest)
    assert decoded.body == body
    assert [target for _, target in endpoints.replies.values()] == [2]
    assert endpoints.remote == [("reply", 2, "r0")]
    response = m.BoshResponse(b"<body xmlns='http://jabber.org/protocol/httpbind'/>")
    assert codec.decode_reply(*codec.encode_reply(response)) == (True, response)
    assert codec.decode_reply(*codec.encode_reply(m.BoshResponse(b""))) == (True, m.BoshResponse(b""))


def test_a_session_list_is_asked_with_a_reply_id_and_comes_back_as_full_jids() -> None:
    endpoints = Endpoints()
    send, _ = trio.open_memory_channel[tuple[bool, Any]](1)
    decoded = round_trip(m.ListSessions(Reply(send)), endpoints)
    assert isinstance(decoded, m.ListSessions)
    assert [target for _, target in endpoints.replies.values()] == [2]
    assert endpoints.remote == [("reply", 2, "r0")]
    answer = m.OnlineSessions((JID.parse("a@example.com/phone"), JID.parse("b@example.com/pc")))
    assert codec.decode_reply(*codec.encode_reply(answer)) == (True, answer)
    assert codec.decode_reply(*codec.encode_reply(m.OnlineSessions(()))) == (True, m.OnlineSessions(()))
    with pytest.raises(codec.BodyError, match="JID is invalid"):
        codec.decode_reply("OnlineSessions", codec.pack([b"a@example.com/x", b"@bad"]))
