"""Actor messages of the server (`imactor.messages`) as bytes for another worker, and back.

The cluster wire format (`imactor.cluster.wire`, docs/wire-format.md) carries an `ActorMessage`:
a target (kind, key), a `body_kind` naming the message and an opaque body. This module fills the
body. A body is a sequence of fields, each a u32 length in network byte order and that many bytes;
texts are UTF-8. What each message holds, field by field:

| body_kind         | fields                                                                  |
|-------------------|-------------------------------------------------------------------------|
| Deliver           | stanza (7 fields, below)                                                |
| Kick              | condition, text                                                         |
| Rehome            | (none)                                                                  |
| BlocklistChanged  | one JID per field                                                       |
| Bind              | has-resource ("1"/"0"), resource, session key, session worker, reply id |
| Unbind            | resource, session key, session worker                                   |
| Route             | completion id ("" for none), message key, origin worker ("" for none), stanza |
| FromResource      | routed ("1"/"0"), stanza                                                |
| Undelivered       | stanza, stanza, ...                                                     |
| AccountRemoved    | (none)                                                                  |
| Rebind            | resource, session key, session worker, interested, has-presence, [stanza] |
|                   | then the resource's module state: key, value, key, value, ...           |
| SentHooks         | wanted ("1"/"0")                                                        |
| ResourceState     | key, value, key, value, ...                                             |
| SessionLost       | session key, session worker                                             |
| Detached          | resource, session key, session worker, detached ("1"/"0")               |
| TakeOver          | previd, username, h, session key, session worker, reply id              |
| Bound             | full JID, then one blocked JID per field  (a reply)                     |
| MovedSession      | full JID, h_in, sent, acked, max, interested, has-presence, [stanza],   |
|                   | count, unacked..., count, held..., count, (key, value)..., blocked JIDs... |
|                   | (a reply)                                                               |
| RoomMoved         | the room's occupants, JSON (`Room.export_occupants` and their workers)  |
| AccountMoved      | the account's bound resources, JSON (`Resources.export`)                |
| HandOffs          | epoch, then kind, key, kind, key, ... (target kind ``handoffs``)         |
| Fanout            | stanza (its bytes have no `to`), then one recipient JID per field       |
| BoshRequest       | the HTTP request body, reply id  (target kind ``bosh``, key the sid)    |
| BoshResponse      | the HTTP response body                     (a reply)                    |
| ComponentAt       | domain, worker, connected ("1"/"0")  (target kind ``component``)        |
| ListSessions      | reply id                                   (target kind ``admin``)      |
| OnlineSessions    | one full JID per field                     (a reply)                    |
| Announce          | stanza (its bytes have no `to`)            (target kind ``admin``)      |
| EndSessions       | username, resource ("" all), condition, text  (target kind ``admin``)   |
| Failed            | stanza error condition, text               (a reply)                    |
| Done              | (none)                                     (a completion)               |

A stanza is seven fields: kind, type, from, to, has-id ("1"/"0"), id, and its serialized bytes;
the receiver rebuilds the `Stanza` from them without parsing the XML again (the JIDs went through
RFC 7622 preparation on the sending worker and `JID.parse` caches them).

References, reply slots and completions cannot cross a process as objects: the encoder turns them
into addresses and correlation ids with the help of an `Endpoints` (the mesh), and the decoder turns
them back into remote stand-ins from it. Decoding never trusts its input: anything malformed
raises `BodyError`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from typing import Any, Final, Protocol

from imactor import messages as m
from imactor.actors import ActorRef, Reply
from imactor.xmpp.errors import StanzaError
from imactor.xmpp.jid import JID, InvalidJID
from imactor.xmpp.stanza import Stanza

_LENGTH: Final = struct.Struct("!I")
#: Target kinds besides the actors: the asking side of a reply and the sender of a completion.
REPLY: Final = "reply"
COMPLETION: Final = "completion"
#: Target kind of a worker's list of the actors it handed over (`m.HandOffs`).
HANDOFFS: Final = "handoffs"


class BodyError(ValueError):
    """A body that does not decode (logged and dropped by the mesh, never fatal)."""


class Endpoints(Protocol):
    """What the codec needs from the mesh of this worker."""

    index: int

    def reply_id(self, reply: Reply[Any], target_worker: int) -> str:
        """Remember `reply` until its answer arrives; the id to send along."""
        ...

    def completion_id(self, completion: m.Completion, target_worker: int) -> str: ...

    def session_ref(self, key: str, worker: int) -> ActorRef[m.SessionMessage]: ...

    def remote_reply(self, worker: int, reply_id: str) -> Reply[Any]: ...

    def remote_completion(self, worker: int, completion_id: str, key: str = "") -> m.Completion: ...


# ---- fields ----------------------------------------------------------------------------------


def pack(fields: Sequence[bytes]) -> bytes:
    return b"".join(_LENGTH.pack(len(field)) + field for field in fields)


def unpack(body: bytes) -> list[bytes]:
    fields: list[bytes] = []
    offset = 0
    while offset < len(body):
        if offset + _LENGTH.size > len(body):
            raise BodyError("truncated field length")
        (length,) = _LENGTH.unpack_from(body, offset)
        offset += _LENGTH.size
        if offset + length > len(body):
            raise BodyError(f"field of {length} bytes runs past the body")
        fields.append(body[offset : offset + length])
        offset += length
    return fields


def _text(field: bytes) -> str:
    try:
        return field.decode()
    except UnicodeDecodeError:
        raise BodyError("a text field is not UTF-8") from None


def _flag(field: bytes) -> bool:
    if field not in (b"0", b"1"):
        raise BodyError("a flag field is not 0 or 1")
    return field == b"1"


def _int(field: bytes) -> int:
    if not field.isdigit() or len(field) > 10:
        raise BodyError("a number field is not a small decimal number")
    return int(field)


def _stanza_fields(stanza: Stanza) -> list[bytes]:
    has_id = stanza.id is not None
    return [
        stanza.kind.encode(),
        stanza.type.encode(),
        str(stanza.from_jid).encode(),
        str(stanza.to_jid).encode(),
        b"1" if has_id else b"0",
        (stanza.id or "").encode(),
        stanza.data,
    ]


_STANZA_FIELDS: Final = 7


def _stanza(fields: Iterator[bytes]) -> Stanza:
    try:
        kind, type_, from_, to, has_id, id_, data = (next(fields) for _ in range(_STANZA_FIELDS))
    except (StopIteration, RuntimeError):
        raise BodyError("a stanza has fewer than seven fields") from None
    if kind not in (b"message", b"presence", b"iq"):
        raise BodyError("unknown stanza kind")
    try:
        from_jid, to_jid = JID.parse(_text(from_)), JID.parse(_text(to))
    except InvalidJID as exc:
        raise BodyError(f"a stanza JID is invalid: {exc}") from None
    return Stanza(_text(kind), _text(type_), from_jid, to_jid, _text(id_) if _flag(has_id) else None, data)


def _pairs(state: Sequence[tuple[str, str]]) -> list[bytes]:
    return [text.encode() for pair in state for text in pair]


def _unpairs(fields: Sequence[bytes]) -> tuple[tuple[str, str], ...]:
    texts = [_text(field) for field in fields]
    return tuple(zip(texts[::2], texts[1::2], strict=True))


def _session(ref: ActorRef[m.SessionMessage]) -> list[bytes]:
    address = ref.address
    return [address.key.encode(), str(address.worker).encode()]


# ---- encoding --------------------------------------------------------------------------------


def encode(message: object, target_worker: int, endpoints: Endpoints) -> tuple[str, bytes]:
    """(body_kind, body) for a message bound for `target_worker`.

    Raises:
        TypeError: the message cannot cross a process (a local bug).
    """
    fields: list[bytes]
    match message:
        case m.Deliver(stanza):
            fields = _stanza_fields(stanza)
        case m.Kick(condition, text):
            fields = [condition.encode(), text.encode()]
        case m.Rehome():
            fields = []
        case m.BlocklistChanged(jids):
            fields = [jid.encode() for jid in sorted(jids)]
        case m.Bind(resource, session, reply):
            fields = [
                b"0" if resource is None else b"1",
                (resource or "").encode(),
                *_session(session),
                endpoints.reply_id(reply, target_worker).encode(),
            ]
        case m.Unbind(resource, session):
            fields = [resource.encode(), *_session(session)]
        case m.Route(stanza, completion, origin):
            cid = "" if completion is None else endpoints.completion_id(completion, target_worker)
            key = "" if completion is None else completion.key
            fields = [cid.encode(), key.encode(), b"" if origin is None else str(origin).encode(),
                      *_stanza_fields(stanza)]  # fmt: skip
        case m.FromResource(stanza, routed):
            fields = [b"1" if routed else b"0", *_stanza_fields(stanza)]
        case m.Undelivered(stanzas):
            fields = [field for stanza in stanzas for field in _stanza_fields(stanza)]
        case m.AccountRemoved():
            fields = []
        case m.Rebind(resource, session, presence, interested, state):
            fields = [resource.encode(), *_session(session), b"1" if interested else b"0"]
            fields += [b"0"] if presence is None else [b"1", *_stanza_fields(presence)]
            fields += _pairs(state)
        case m.SentHooks(wanted):
            fields = [b"1" if wanted else b"0"]
        case m.ResourceState(state):
            fields = _pairs(state)
        case m.SessionLost(session):
            fields = _session(session)
        case m.Detached(resource, session, detached):
            fields = [resource.encode(), *_session(session), b"1" if detached else b"0"]
        case m.TakeOver(previd, username, h, session, reply):
            fields = [previd.encode(), username.encode(), str(h).encode(), *_session(session),
                      endpoints.reply_id(reply, target_worker).encode()]  # fmt: skip
        case m.RoomMoved(snapshot) | m.AccountMoved(snapshot):
            fields = [snapshot]
        case m.HandOffs(epoch, keys):
            fields = [str(epoch).encode(), *(part.encode() for pair in keys for part in pair)]
        case m.Fanout(stanza, recipients):
            fields = [*_stanza_fields(stanza), *(str(jid).encode() for jid in recipients)]
        case m.BoshRequest(body, reply):
            fields = [body, endpoints.reply_id(reply, target_worker).encode()]
        case m.ComponentAt(domain, worker, connected):
            fields = [domain.encode(), str(worker).encode(), b"1" if connected else b"0"]
        case m.ListSessions(reply):
            fields = [endpoints.reply_id(reply, target_worker).encode()]
        case m.Announce(stanza):
            fields = _stanza_fields(stanza)
        case m.EndSessions(username, resource, condition, text):
            fields = [username.encode(), resource.encode(), condition.encode(), text.encode()]
        case _:
            raise TypeError(f"{type(message).__name__} does not cross processes")
    return type(message).__name__, pack(fields)


def encode_reply(value: object) -> tuple[str, bytes]:
    """The answer to a `Bind`: its `Bound`, or the error it failed with."""
    if isinstance(value, m.Bound):
        return "Bound", pack([str(value.full_jid).encode(), *(j.encode() for j in sorted(value.blocklist))])
    if isinstance(value, m.MovedSession):
        fields = [str(value.full_jid).encode()]
        fields += [str(n).encode() for n in (value.h_in, value.sent, value.acked, value.max)]
        fields.append(b"1" if value.interested else b"0")
        fields += [b"0"] if value.presence is None else [b"1", *_stanza_fields(value.presence)]
        fields += [str(len(value.unacked)).encode(), *value.unacked]
        fields += [str(len(value.held)).encode(), *value.held]
        fields += [str(len(value.state)).encode(), *_pairs(value.state)]
        fields += [jid.encode() for jid in sorted(value.blocklist)]
        return "MovedSession", pack(fields)
    if isinstance(value, m.BoshResponse):
        return "BoshResponse", pack([value.body])
    if isinstance(value, m.OnlineSessions):
        return "OnlineSessions", pack([str(jid).encode() for jid in value.jids])
    if isinstance(value, StanzaError):
        return "Failed", pack([value.condition.encode(), (value.text or "").encode()])
    return "Failed", pack([b"internal-server-error", b""])


# ---- decoding --------------------------------------------------------------------------------


def decode(body_kind: str, body: bytes, source: int, endpoints: Endpoints) -> object:
    """The message a peer (`source`) encoded with `encode`.

    Raises:
        BodyError: unknown body kind, wrong field count or malformed field.
    """
    fields = unpack(body)
    it = iter(fields)

    def session_at(key: bytes, worker: bytes) -> ActorRef[m.SessionMessage]:
        return endpoints.session_ref(_text(key), _int(worker))

    def exactly(count: int) -> list[bytes]:
        if len(fields) != count:
            raise BodyError(f"{body_kind} has {len(fields)} fields, expected {count}")
        return fields

    match body_kind:
        case "Deliver":
            exactly(_STANZA_FIELDS)
            return m.Deliver(_stanza(it))
        case "Kick":
            condition, text = exactly(2)
            return m.Kick(_text(condition), _text(text))
        case "Rehome":
            exactly(0)
            return m.Rehome()
        case "BlocklistChanged":
            return m.BlocklistChanged(frozenset(_text(field) for field in fields))
        case "Bind":
            has, resource, key, worker, reply_id = exactly(5)
            reply = endpoints.remote_reply(source, _text(reply_id))
            return m.Bind(_text(resource) if _flag(has) else None, session_at(key, worker), reply)
        case "Unbind":
            resource, key, worker = exactly(3)
            return m.Unbind(_text(resource), session_at(key, worker))
        case "Route":
            exactly(3 + _STANZA_FIELDS)
            cid, message_key = _text(next(it)), _text(next(it))
            origin_field = next(it)
            stanza = _stanza(it)
            completion = endpoints.remote_completion(source, cid, message_key) if cid else None
            return m.Route(stanza, completion, _int(origin_field) if origin_field else None)
        case "FromResource":
            exactly(1 + _STANZA_FIELDS)
            routed = _flag(next(it))
            return m.FromResource(_stanza(it), routed)
        case "Undelivered":
            if len(fields) % _STANZA_FIELDS:
                raise BodyError("Undelivered does not hold whole stanzas")
            return m.Undelivered(tuple(_stanza(it) for _ in range(len(fields) // _STANZA_FIELDS)))
        case "AccountRemoved":
            exactly(0)
            return m.AccountRemoved()
        case "Rebind":
            if len(fields) < 5:
                raise BodyError(f"Rebind has {len(fields)} fields")
            resource, key, worker, interested, has_presence = (next(it) for _ in range(5))
            presence = _stanza(it) if _flag(has_presence) else None
            rest = list(it)
            if len(rest) % 2:
                raise BodyError("Rebind's presence flag does not match its fields")
            state = _unpairs(rest)
            return m.Rebind(_text(resource), session_at(key, worker), presence, _flag(interested), state)
        case "SentHooks":
            (wanted,) = exactly(1)
            return m.SentHooks(_flag(wanted))
        case "ResourceState":
            if len(fields) % 2:
                raise BodyError("ResourceState does not hold whole pairs")
            return m.ResourceState(_unpairs(fields))
        case "SessionLost":
            key, worker = exactly(2)
            return m.SessionLost(session_at(key, worker))
        case "Detached":
            resource, key, worker, detached = exactly(4)
            return m.Detached(_text(resource), session_at(key, worker), _flag(detached))
        case "TakeOver":
            previd, username, h, key, worker, reply_id = exactly(6)
            reply = endpoints.remote_reply(source, _text(reply_id))
            return m.TakeOver(_text(previd), _text(username), _int(h), session_at(key, worker), reply)
        case "RoomMoved":
            (snapshot,) = exactly(1)
            return m.RoomMoved(snapshot)
        case "AccountMoved":
            (snapshot,) = exactly(1)
            return m.AccountMoved(snapshot)
        case "HandOffs":
            if not fields or len(fields) % 2 != 1:
                raise BodyError("HandOffs is an epoch and whole (kind, key) pairs")
            epoch = _int(next(it))
            return m.HandOffs(epoch, tuple(_unpairs(list(it))))
        case "Fanout":
            if len(fields) <= _STANZA_FIELDS:
                raise BodyError("Fanout has no recipient")
            stanza = _stanza(it)
            return m.Fanout(stanza, tuple(_jid(field) for field in it))
        case "BoshRequest":
            body, reply_id = exactly(2)
            return m.BoshRequest(body, endpoints.remote_reply(source, _text(reply_id)))
        case "ComponentAt":
            domain, worker, connected = exactly(3)
            return m.ComponentAt(_text(domain), _int(worker), _flag(connected))
        case "ListSessions":
            (reply_id,) = exactly(1)
            return m.ListSessions(endpoints.remote_reply(source, _text(reply_id)))
        case "Announce":
            exactly(_STANZA_FIELDS)
            return m.Announce(_stanza(it))
        case "EndSessions":
            username, resource, condition, text = exactly(4)
            return m.EndSessions(_text(username), _text(resource), _text(condition), _text(text))
        case _:
            raise BodyError(f"unknown body kind {body_kind!r}")


def _jid(field: bytes) -> JID:
    try:
        return JID.parse(_text(field))
    except InvalidJID as exc:
        raise BodyError(f"a JID is invalid: {exc}") from None


def decode_reply(body_kind: str, body: bytes) -> tuple[bool, object]:
    """(True, Bound) or (False, StanzaError) from `encode_reply`'s output."""
    fields = unpack(body)
    if body_kind == "Bound":
        if not fields:
            raise BodyError("Bound has no JID")
        try:
            full = JID.parse(_text(fields[0]))
        except InvalidJID as exc:
            raise BodyError(f"Bound's JID is invalid: {exc}") from None
        return True, m.Bound(full, frozenset(_text(field) for field in fields[1:]))
    if body_kind == "MovedSession":
        return True, _moved_session(iter(fields))
    if body_kind == "BoshResponse":
        if len(fields) != 1:
            raise BodyError(f"BoshResponse has {len(fields)} fields, expected 1")
        return True, m.BoshResponse(fields[0])
    if body_kind == "OnlineSessions":
        return True, m.OnlineSessions(tuple(_jid(field) for field in fields))
    if body_kind == "Failed":
        if len(fields) != 2:
            raise BodyError(f"Failed has {len(fields)} fields, expected 2")
        condition, text = (_text(field) for field in fields)
        try:
            return False, StanzaError(condition, text)
        except ValueError:  # a condition this worker does not know
            return False, StanzaError("internal-server-error", text)
    raise BodyError(f"unknown reply kind {body_kind!r}")


def _moved_session(fields: Iterator[bytes]) -> m.MovedSession:
    def take() -> bytes:
        field = next(fields, None)
        if field is None:
            raise BodyError("MovedSession is truncated")
        return field

    try:
        full_jid = JID.parse(_text(take()))
    except InvalidJID as exc:
        raise BodyError(f"MovedSession's JID is invalid: {exc}") from None
    h_in, sent, acked, max_ = (_int(take()) for _ in range(4))
    interested = _flag(take())
    presence = _stanza(fields) if _flag(take()) else None
    unacked = tuple(take() for _ in range(_int(take())))
    held = tuple(take() for _ in range(_int(take())))
    state = _unpairs([take() for _ in range(2 * _int(take()))])
    blocklist = frozenset(_text(field) for field in fields)
    return m.MovedSession(
        full_jid, h_in, sent, acked, max_, unacked, held, blocklist, presence, interested, state
    )
