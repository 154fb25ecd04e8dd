"""Inter-worker frames: typed messages to bytes and back (sans-IO; no trio, no zmq, no clock).

Workers never exchange pickled objects (docs/design.md). Every message that crosses a process boundary
is one of the frozen dataclasses below, and travels as one *frame*: a fixed 14-byte envelope
header followed by the message's payload. The layout, the versioning rule and the error handling
are documented in ``docs/wire-format.md``; this module is its only implementation.

Envelope header (network byte order, `struct` format ``!BBIQ``)::

    version u8 | kind u8 | source worker u32 | membership epoch u64 | payload ...

A *batch* is a list of frames sent as one ZeroMQ multipart message, one frame per message.
ZeroMQ already delimits and atomically delivers the parts, so no count or length table is
needed, and each frame keeps its own epoch: a batch drained from an outbox may straddle a
membership change.

Decoding never trusts its input: anything malformed raises `FrameError` (and only that), with a
reason for the log. Encoding a value that cannot be represented (a negative worker, a key over
65,535 UTF-8 bytes, a lone surrogate) raises `ValueError` in the caller: that is a local bug.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Final, TypeAlias, assert_never

#: The layout version this module reads and writes. Any change to the header or to a payload
#: layout, or a new message kind, bumps it (see docs/wire-format.md, "Versioning").
VERSION: Final = 2

#: Anything the codec reads from: ZeroMQ hands over `bytes` (or `zmq.Frame`, which `memoryview`
#: accepts as well).
Buffer: TypeAlias = bytes | bytearray | memoryview


class Kind(IntEnum):
    """The message kind byte of the envelope. 0 is reserved (never valid)."""

    ACTOR_MESSAGE = 1
    HEARTBEAT = 2
    MEMBERSHIP_CHANGED = 3
    CLUSTER_VIEW = 4


class FrameError(ValueError):
    """A frame or batch that does not decode. Raised by `decode` and `decode_batch` only.

    Attributes:
        reason: what was wrong, for the log (never echoes the frame's bytes).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# ---- messages ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ActorMessage:
    """A message for the actor ``target_kind:target_key`` on the receiving worker.

    The body is already encoded by the layer that built it (for example a serialized stanza);
    `body_kind` tells the receiver how to read it. The wire layer never looks inside.
    """

    target_kind: str  #: at most 255 UTF-8 bytes (an actor kind: "user", "room", ...)
    target_key: str  #: at most 65,535 UTF-8 bytes (a JID is at most 3,071)
    body_kind: str  #: at most 255 UTF-8 bytes
    body: bytes


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """A worker is alive at `epoch` (fact). `sent_at` is the sender's clock, for latency only."""

    worker: int
    epoch: int
    sent_at: float


@dataclass(frozen=True, slots=True)
class MembershipChanged:
    """The set of live workers changed (fact); `epoch` numbers this membership."""

    epoch: int
    live_workers: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class PeerWorker:
    """A live worker of the cluster and how to reach it. `server_key`: its node's CURVE public key
    (Z85), or "" for a worker of the receiver's own node, reached over its local endpoint."""

    worker: int
    endpoint: str
    server_key: str = ""


@dataclass(frozen=True, slots=True)
class ClusterView:
    """The live workers of every node of a cluster (fact); `epoch` numbers this membership.

    The node supervisor sends it to its own workers in place of `MembershipChanged`: with the live
    workers it says where each is (workers of other nodes come and go, and so do their ports)."""

    epoch: int
    workers: tuple[PeerWorker, ...]
    #: Where this node sends new clients (``host:port``, RFC 6120 see-other-host); "": nowhere.
    redirect: str = ""
    #: The web listeners of the other live nodes (``http://host:port``, ``https://host:port``),
    #: for host-meta (XEP-0156).
    web: tuple[str, ...] = ()

    @property
    def live_workers(self) -> tuple[int, ...]:
        return tuple(peer.worker for peer in self.workers)


Message: TypeAlias = ActorMessage | Heartbeat | MembershipChanged | ClusterView


@dataclass(frozen=True, slots=True)
class Envelope:
    """One frame: a message, the worker that sent it and the membership epoch it was sent under."""

    source: int
    epoch: int
    message: Message


# ---- layouts -----------------------------------------------------------------------------------

_HEADER: Final = struct.Struct("!BBIQ")  # version, kind, source worker, epoch
_ACTOR: Final = struct.Struct("!BHB")  # byte lengths of target_kind, target_key, body_kind
_HEARTBEAT: Final = struct.Struct("!IQd")  # worker, epoch, sent_at
_MEMBERSHIP: Final = struct.Struct("!QI")  # epoch, number of live workers (then one u32 each)
_WORKER: Final = struct.Struct("!I")
_VIEW: Final = struct.Struct("!QI")  # epoch, number of workers (then one peer each)
_PEER: Final = struct.Struct("!IHB")  # worker, byte lengths of endpoint and server key

HEADER_SIZE: Final = _HEADER.size

_U8: Final = 0xFF
_U16: Final = 0xFFFF
_U32: Final = 0xFFFF_FFFF
_U64: Final = 0xFFFF_FFFF_FFFF_FFFF


# ---- encoding ----------------------------------------------------------------------------------


def encode(envelope: Envelope) -> bytes:
    """One frame for `envelope`.

    Raises:
        ValueError: a field does not fit its wire type (see the field comments above).
    """
    source = _uint(envelope.source, _U32, "source worker")
    epoch = _uint(envelope.epoch, _U64, "epoch")
    message = envelope.message
    match message:
        case ActorMessage(target_kind, target_key, body_kind, body):
            kind = Kind.ACTOR_MESSAGE
            texts = (
                _utf8(target_kind, _U8, "target_kind"),
                _utf8(target_key, _U16, "target_key"),
                _utf8(body_kind, _U8, "body_kind"),
            )
            lengths = _ACTOR.pack(*(len(text) for text in texts))
            return b"".join((_HEADER.pack(VERSION, kind, source, epoch), lengths, *texts, bytes(body)))
        case Heartbeat(worker, heartbeat_epoch, sent_at):
            payload = _HEARTBEAT.pack(
                _uint(worker, _U32, "heartbeat worker"),
                _uint(heartbeat_epoch, _U64, "heartbeat epoch"),
                _float(sent_at),
            )
            return _HEADER.pack(VERSION, Kind.HEARTBEAT, source, epoch) + payload
        case MembershipChanged(membership_epoch, live_workers):
            workers = [_uint(worker, _U32, "live worker") for worker in live_workers]
            if len(workers) > _U32:  # pragma: no cover - four billion workers
                raise ValueError("too many live workers for one frame")
            payload = _MEMBERSHIP.pack(_uint(membership_epoch, _U64, "membership epoch"), len(workers))
            return b"".join(
                (
                    _HEADER.pack(VERSION, Kind.MEMBERSHIP_CHANGED, source, epoch),
                    payload,
                    struct.pack(f"!{len(workers)}I", *workers),
                )
            )
        case ClusterView(view_epoch, peers, redirect, web):
            if len(peers) > _U32:  # pragma: no cover - four billion workers
                raise ValueError("too many workers for one frame")
            parts = [
                _HEADER.pack(VERSION, Kind.CLUSTER_VIEW, source, epoch),
                _VIEW.pack(_uint(view_epoch, _U64, "view epoch"), len(peers)),
            ]
            for peer in peers:
                endpoint = _utf8(peer.endpoint, _U16, "endpoint")
                key = _utf8(peer.server_key, _U8, "server_key")
                parts += [
                    _PEER.pack(_uint(peer.worker, _U32, "worker"), len(endpoint), len(key)),
                    endpoint,
                    key,
                ]
            target = _utf8(redirect, _U8, "redirect")
            if any(not url or " " in url for url in web):
                raise ValueError("a web URL is non-empty and has no space")
            bases = _utf8(" ".join(web), _U16, "web")
            parts += [bytes((len(target),)), target, len(bases).to_bytes(2, "big"), bases]
            return b"".join(parts)
        case _:
            assert_never(message)


def encode_batch(messages: Sequence[Message], *, source: int, epoch: int) -> list[bytes]:
    """The frames of one batch (one ZeroMQ multipart message), one frame per message, in order.

    Raises:
        ValueError: `messages` is empty (ZeroMQ sends no empty multipart), or a field does not fit.
    """
    if not messages:
        raise ValueError("a batch holds at least one message")
    return [encode(Envelope(source, epoch, message)) for message in messages]


def _uint(value: int, maximum: int, name: str) -> int:
    if not isinstance(value, int) or not 0 <= value <= maximum:
        raise ValueError(f"{name} must be an integer in [0, {maximum}], not {value!r}")
    return value


def _float(value: float) -> float:
    if not isinstance(value, int | float):
        raise ValueError(f"sent_at must be a number, not {value!r}")
    return float(value)


def _utf8(text: str, maximum: int, name: str) -> bytes:
    try:
        data = text.encode("utf-8")
    except (UnicodeEncodeError, AttributeError) as exc:
        raise ValueError(f"{name} must be a str encodable as UTF-8") from exc
    if len(data) > maximum:
        raise ValueError(f"{name} is {len(data)} UTF-8 bytes, at most {maximum}")
    return data


# ---- decoding ----------------------------------------------------------------------------------


def decode(frame: Buffer) -> Envelope:
    """The envelope in one frame.

    Raises:
        FrameError: truncated header or payload, unsupported version, unknown kind, wrong lengths,
            trailing bytes, or text that is not UTF-8.
    """
    view = memoryview(frame)
    if view.itemsize != 1 or view.ndim != 1:
        view = view.cast("B")
    if len(view) < _HEADER.size:
        raise FrameError(f"truncated header: {len(view)} bytes, need {_HEADER.size}")
    version, kind, source, epoch = _HEADER.unpack_from(view)
    if version != VERSION:
        raise FrameError(f"unsupported version {version} (this worker speaks {VERSION})")
    payload = view[_HEADER.size :]
    message: Message
    match kind:
        case Kind.ACTOR_MESSAGE:
            message = _decode_actor_message(payload)
        case Kind.HEARTBEAT:
            message = _decode_heartbeat(payload)
        case Kind.MEMBERSHIP_CHANGED:
            message = _decode_membership(payload)
        case Kind.CLUSTER_VIEW:
            message = _decode_view(payload)
        case _:
            raise FrameError(f"unknown message kind {kind}")
    return Envelope(source, epoch, message)


def decode_batch(frames: Sequence[Buffer]) -> list[Envelope]:
    """The envelopes of one batch, in order. All or nothing: one bad frame rejects the batch.

    Raises:
        FrameError: the batch is empty, a frame does not decode (the reason names its index), or
            the frames claim different source workers (a batch comes from one sender).
    """
    if not frames:
        raise FrameError("empty batch")
    envelopes: list[Envelope] = []
    for index, frame in enumerate(frames):
        try:
            envelope = decode(frame)
        except FrameError as exc:
            raise FrameError(f"frame {index} of {len(frames)}: {exc.reason}") from None
        if envelopes and envelope.source != envelopes[0].source:
            raise FrameError(
                f"frame {index} of {len(frames)}: source w{envelope.source} in a batch from "
                f"w{envelopes[0].source}"
            )
        envelopes.append(envelope)
    return envelopes


def _decode_actor_message(payload: memoryview) -> ActorMessage:
    if len(payload) < _ACTOR.size:
        raise FrameError(f"truncated actor-message header: {len(payload)} bytes, need {_ACTOR.size}")
    lengths = _ACTOR.unpack_from(payload)
    offset = _ACTOR.size
    end = offset + sum(lengths)
    if end > len(payload):
        raise FrameError(f"actor-message text lengths {lengths} run past the payload ({len(payload)} bytes)")
    texts: list[str] = []
    for length, name in zip(lengths, ("target_kind", "target_key", "body_kind"), strict=True):
        texts.append(_text(payload[offset : offset + length], name))
        offset += length
    target_kind, target_key, body_kind = texts
    return ActorMessage(target_kind, target_key, body_kind, bytes(payload[end:]))


def _decode_heartbeat(payload: memoryview) -> Heartbeat:
    if len(payload) != _HEARTBEAT.size:
        raise FrameError(f"heartbeat payload is {len(payload)} bytes, expected {_HEARTBEAT.size}")
    worker, epoch, sent_at = _HEARTBEAT.unpack_from(payload)
    return Heartbeat(worker, epoch, sent_at)


def _decode_membership(payload: memoryview) -> MembershipChanged:
    if len(payload) < _MEMBERSHIP.size:
        raise FrameError(
            f"truncated membership payload: {len(payload)} bytes, need at least {_MEMBERSHIP.size}"
        )
    epoch, count = _MEMBERSHIP.unpack_from(payload)
    expected = _MEMBERSHIP.size + count * _WORKER.size
    if len(payload) != expected:
        raise FrameError(
            f"membership payload is {len(payload)} bytes, expected {expected} for {count} workers"
        )
    workers = struct.unpack_from(f"!{count}I", payload, _MEMBERSHIP.size)
    return MembershipChanged(epoch, workers)


def _decode_view(payload: memoryview) -> ClusterView:
    if len(payload) < _VIEW.size:
        raise FrameError(f"truncated cluster view: {len(payload)} bytes, need at least {_VIEW.size}")
    epoch, count = _VIEW.unpack_from(payload)
    offset, peers = _VIEW.size, []
    for index in range(count):
        if offset + _PEER.size > len(payload):
            raise FrameError(f"cluster view truncated in worker {index} of {count}")
        worker, endpoint_length, key_length = _PEER.unpack_from(payload, offset)
        offset += _PEER.size
        end = offset + endpoint_length + key_length
        if end > len(payload):
            raise FrameError(f"cluster view worker {index}: lengths run past the payload")
        endpoint = _text(payload[offset : offset + endpoint_length], "endpoint")
        key = _text(payload[offset + endpoint_length : end], "server_key")
        peers.append(PeerWorker(worker, endpoint, key))
        offset = end
    if offset >= len(payload):
        raise FrameError("cluster view truncated before its redirect")
    end = offset + 1 + payload[offset]
    redirect = _text(payload[offset + 1 : end], "redirect")
    if end + 2 > len(payload):
        raise FrameError("cluster view truncated before its web listeners")
    start, end = end + 2, end + 2 + int.from_bytes(payload[end : end + 2], "big")
    if end > len(payload):
        raise FrameError("cluster view's web listeners run past the payload")
    web = _text(payload[start:end], "web")
    if end != len(payload):
        raise FrameError(f"cluster view has {len(payload) - end} trailing bytes")
    return ClusterView(epoch, tuple(peers), redirect, tuple(web.split(" ")) if web else ())


def _text(data: memoryview, name: str) -> str:
    try:
        return str(data, "utf-8")
    except UnicodeDecodeError:
        raise FrameError(f"{name} is not UTF-8") from None
