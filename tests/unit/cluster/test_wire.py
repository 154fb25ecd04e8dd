"""The inter-worker frame codec: round trips, the documented layout, every FrameError path, fuzz.

Pure: no trio, no zmq. The fuzz is seeded, so every run checks the same inputs.
"""

from __future__ import annotations

import math
import random
import struct

import pytest

from imactor.cluster.wire import (
    HEADER_SIZE,
    VERSION,
    ActorMessage,
    ClusterView,
    Envelope,
    FrameError,
    Heartbeat,
    Kind,
    MembershipChanged,
    Message,
    PeerWorker,
    decode,
    decode_batch,
    encode,
    encode_batch,
)

U32 = 2**32 - 1
U64 = 2**64 - 1

MESSAGES: list[Message] = [
    ActorMessage("user", "bob@example.com", "stanza", b"<message to='bob@example.com'/>"),
    ActorMessage("", "", "", b""),
    ActorMessage("room", "caf\u00e9@conference.example.com/\U0001f600", "stanza", bytes(range(256))),
    ActorMessage("k" * 255, "j" * 65535, "b" * 255, b"\x00" * 100_000),
    Heartbeat(worker=3, epoch=7, sent_at=1_700_000_000.25),
    Heartbeat(worker=0, epoch=0, sent_at=0.0),
    Heartbeat(worker=U32, epoch=U64, sent_at=-1.5e300),
    MembershipChanged(epoch=12, live_workers=(0, 1, 2, 5)),
    MembershipChanged(epoch=0, live_workers=()),
    MembershipChanged(epoch=U64, live_workers=(*range(1000), U32)),
    ClusterView(
        epoch=3,
        workers=(PeerWorker(1024, "ipc:///run/w0.sock"), PeerWorker(2049, "tcp://10.0.0.2:7601", "k" * 40)),
    ),
    ClusterView(0, (), redirect="node-b.example.com:5222", web=("http://b:5280", "https://b:5443")),
    ClusterView(epoch=U64, workers=(PeerWorker(U32, "e" * 65535, "\u00e9" * 127),)),
]


def frame(message: Message, *, source: int = 1, epoch: int = 2) -> bytes:
    return encode(Envelope(source, epoch, message))


def header(kind: int, *, version: int = VERSION, source: int = 1, epoch: int = 2) -> bytes:
    return struct.pack("!BBIQ", version, kind, source, epoch)


# ---- round trips ---------------------------------------------------------------------------------


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_kind_round_trips(message: Message) -> None:
    envelope = Envelope(source=4, epoch=99, message=message)
    data = encode(envelope)
    assert decode(data) == envelope
    assert decode(bytearray(data)) == envelope
    assert decode(memoryview(data)) == envelope


def test_envelope_extremes_round_trip() -> None:
    for source, epoch in [(0, 0), (U32, U64), (65_536, 2**40)]:
        envelope = Envelope(source, epoch, Heartbeat(1, 1, 1.0))
        assert decode(encode(envelope)) == envelope


def test_special_floats_survive_a_heartbeat() -> None:
    for value in (math.inf, -math.inf, 5e-324):
        assert decode(frame(Heartbeat(1, 1, value))).message == Heartbeat(1, 1, value)
    nan = decode(frame(Heartbeat(1, 1, math.nan))).message
    assert isinstance(nan, Heartbeat)
    assert math.isnan(nan.sent_at)


def test_a_batch_round_trips_in_order_with_one_frame_per_message() -> None:
    frames = encode_batch(MESSAGES, source=6, epoch=3)
    assert len(frames) == len(MESSAGES)
    assert decode_batch(frames) == [Envelope(6, 3, message) for message in MESSAGES]


def test_a_batch_may_straddle_a_membership_change() -> None:
    """Frames queued before and after an epoch change travel in one batch, each with its epoch."""
    frames = [frame(Heartbeat(1, 4, 0.0), epoch=4), frame(Heartbeat(1, 5, 0.0), epoch=5)]
    assert [envelope.epoch for envelope in decode_batch(frames)] == [4, 5]


# ---- the documented layout (docs/wire-format.md) -----------------------------------------------


def test_the_header_layout_is_pinned() -> None:
    data = encode(Envelope(0x01020304, 0x05060708090A0B0C, Heartbeat(9, 10, 0.5)))
    assert HEADER_SIZE == 14
    assert data[:HEADER_SIZE] == bytes.fromhex("02 02 01020304 05060708090a0b0c")
    assert data[HEADER_SIZE:] == struct.pack("!IQd", 9, 10, 0.5)
    # ACTOR_MESSAGE, HEARTBEAT, MEMBERSHIP_CHANGED, CLUSTER_VIEW
    assert [int(kind) for kind in Kind] == [1, 2, 3, 4]


def test_the_actor_message_layout_is_pinned() -> None:
    data = frame(ActorMessage("user", "b\u00f6b@x", "stanza", b"<m/>"), source=2, epoch=1)
    assert data == (
        bytes.fromhex("02 01 00000002 0000000000000001")
        + bytes.fromhex("04 0006 06")
        + b"user"
        + "b\u00f6b@x".encode()
        + b"stanza"
        + b"<m/>"
    )


def test_the_membership_layout_is_pinned() -> None:
    data = frame(MembershipChanged(7, (0, 2)), source=0, epoch=7)
    assert data[HEADER_SIZE:] == bytes.fromhex("0000000000000007 00000002 00000000 00000002")


def test_the_cluster_view_layout_is_pinned() -> None:
    data = frame(ClusterView(9, (PeerWorker(1025, "tcp://h:1", "K"),)), source=0, epoch=9)
    assert data[:2] == bytes.fromhex("02 04")
    assert data[HEADER_SIZE:] == bytes.fromhex("0000000000000009 00000001 00000401 0009 01") + b"tcp://h:1K\x00\x00\x00"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (bytes.fromhex("00000000000000"), "truncated cluster view"),
        (bytes.fromhex("0000000000000001 00000001 000004"), "truncated in worker 0 of 1"),
        (bytes.fromhex("0000000000000001 00000001 00000401 0009 01") + b"tcp", "run past the payload"),
        (bytes.fromhex("0000000000000001 00000000 00 0000 00"), "1 trailing bytes"),
        (bytes.fromhex("0000000000000001 00000000"), "truncated before its redirect"),
        (bytes.fromhex("0000000000000001 00000000 01") + b"\xff\x00\x00", "redirect is not UTF-8"),
        (bytes.fromhex("0000000000000001 00000000 00 00"), "truncated before its web listeners"),
        (bytes.fromhex("0000000000000001 00000000 00 0005") + b"http", "run past the payload"),
        (bytes.fromhex("0000000000000001 00000001 00000401 0001 00 ff 00 0000"), "endpoint is not UTF-8"),
    ],
)
def test_a_bad_cluster_view_is_a_frame_error(payload: bytes, reason: str) -> None:
    with pytest.raises(FrameError, match=reason):
        decode(bytes.fromhex("02 04 00000000 0000000000000000") + payload)


def test_the_body_runs_to_the_end_of_the_frame() -> None:
    """ZeroMQ delivers whole frames, so the body carries no length of its own."""
    data = frame(ActorMessage("user", "a@b", "stanza", b"hello"))
    shorter = decode(data[:-2]).message
    assert isinstance(shorter, ActorMessage)
    assert shorter.body == b"hel"


# ---- encoding refuses what the layout cannot carry ---------------------------------------------


@pytest.mark.parametrize(
    ("envelope", "expected"),
    [
        (Envelope(-1, 0, Heartbeat(0, 0, 0.0)), "source worker"),
        (Envelope(U32 + 1, 0, Heartbeat(0, 0, 0.0)), "source worker"),
        (Envelope(0, -1, Heartbeat(0, 0, 0.0)), "epoch"),
        (Envelope(0, U64 + 1, Heartbeat(0, 0, 0.0)), "epoch"),
        (Envelope(0, 0, Heartbeat(-1, 0, 0.0)), "heartbeat worker"),
        (Envelope(0, 0, Heartbeat(0, U64 + 1, 0.0)), "heartbeat epoch"),
        (Envelope(0, 0, Heartbeat(0, 0, "now")), "sent_at"),  # type: ignore[arg-type]
        (Envelope(0, 0, MembershipChanged(-1, ())), "membership epoch"),
        (Envelope(0, 0, MembershipChanged(0, (1, U32 + 1))), "live worker"),
        (Envelope(0, 0, ActorMessage("k" * 256, "", "", b"")), "target_kind"),
        (Envelope(0, 0, ActorMessage("\u00e9" * 128, "", "", b"")), "target_kind"),  # 256 bytes
        (Envelope(0, 0, ActorMessage("", "j" * 65536, "", b"")), "target_key"),
        (Envelope(0, 0, ActorMessage("", "", "b" * 256, b"")), "body_kind"),
        (Envelope(0, 0, ActorMessage("", "\ud800", "", b"")), "target_key"),  # lone surrogate
    ],
)
def test_encode_refuses_values_that_do_not_fit(envelope: Envelope, expected: str) -> None:
    with pytest.raises(ValueError, match=expected) as caught:
        encode(envelope)
    assert not isinstance(caught.value, FrameError)


def test_an_empty_batch_is_not_encoded() -> None:
    with pytest.raises(ValueError, match="at least one"):
        encode_batch([], source=0, epoch=0)


# ---- every FrameError path ------------------------------------------------------------------------

ACTOR_LENGTHS = struct.pack("!BHB", 4, 3, 6)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", "truncated header: 0 bytes"),
        (header(Kind.HEARTBEAT)[:-1], "truncated header: 13 bytes"),
        (header(Kind.HEARTBEAT, version=0) + bytes(20), "unsupported version 0"),
        (header(Kind.HEARTBEAT, version=1) + bytes(20), "unsupported version 1"),
        (header(Kind.HEARTBEAT, version=255) + bytes(20), "unsupported version 255"),
        (header(0) + bytes(20), "unknown message kind 0"),
        (header(5) + bytes(20), "unknown message kind 5"),
        (header(255), "unknown message kind 255"),
        (header(Kind.ACTOR_MESSAGE), "truncated actor-message header: 0 bytes"),
        (header(Kind.ACTOR_MESSAGE) + ACTOR_LENGTHS[:3], "truncated actor-message header: 3 bytes"),
        (header(Kind.ACTOR_MESSAGE) + ACTOR_LENGTHS + b"user" + b"a@b" + b"stan", "run past the payload"),
        (header(Kind.ACTOR_MESSAGE) + struct.pack("!BHB", 0, 65535, 0) + b"x" * 100, "run past"),
        (header(Kind.ACTOR_MESSAGE) + ACTOR_LENGTHS + b"us\xffr" + b"a@b" + b"stanza", "target_kind is not"),
        (header(Kind.ACTOR_MESSAGE) + ACTOR_LENGTHS + b"user" + b"a\xc3(" + b"stanza", "target_key is not"),
        (header(Kind.ACTOR_MESSAGE) + ACTOR_LENGTHS + b"user" + b"a@b" + b"stanz\x80", "body_kind is not"),
        # An encoded surrogate (CESU style) is not UTF-8 either.
        (header(Kind.ACTOR_MESSAGE) + struct.pack("!BHB", 0, 3, 0) + b"\xed\xa0\x80", "target_key is not"),
        (header(Kind.HEARTBEAT), "heartbeat payload is 0 bytes, expected 20"),
        (header(Kind.HEARTBEAT) + bytes(19), "heartbeat payload is 19 bytes"),
        (header(Kind.HEARTBEAT) + bytes(21), "heartbeat payload is 21 bytes"),
        (header(Kind.MEMBERSHIP_CHANGED) + bytes(11), "truncated membership payload: 11 bytes"),
        (header(Kind.MEMBERSHIP_CHANGED) + struct.pack("!QI", 1, 2) + bytes(4), "expected 20 for 2 workers"),
        (header(Kind.MEMBERSHIP_CHANGED) + struct.pack("!QI", 1, 1) + bytes(5), "expected 16 for 1 workers"),
        (header(Kind.MEMBERSHIP_CHANGED) + struct.pack("!QI", 1, U32), "for 4294967295 workers"),
    ],
)
def test_decode_raises_frame_error_with_a_reason(data: bytes, expected: str) -> None:
    with pytest.raises(FrameError, match=expected) as caught:
        decode(data)
    assert expected in caught.value.reason
    assert isinstance(caught.value, ValueError)


def test_an_empty_batch_is_a_frame_error() -> None:
    with pytest.raises(FrameError, match="empty batch"):
        decode_batch([])


def test_one_bad_frame_rejects_the_whole_batch_and_is_named() -> None:
    good = frame(Heartbeat(1, 1, 1.0))
    with pytest.raises(FrameError, match=r"^frame 2 of 3: truncated header: 3 bytes, need 14$"):
        decode_batch([good, good, b"bad"])


def test_a_batch_comes_from_one_source() -> None:
    frames = [frame(Heartbeat(1, 1, 1.0), source=1), frame(Heartbeat(2, 1, 1.0), source=2)]
    with pytest.raises(FrameError, match=r"frame 1 of 2: source w2 in a batch from w1"):
        decode_batch(frames)


# ---- fuzz: FrameError and nothing else ------------------------------------------------------------


def _decode_or_frame_error(data: bytes) -> Envelope | None:
    """Decode; a FrameError is fine, anything else fails the test. A success must be canonical."""
    try:
        envelope = decode(data)
    except FrameError:
        return None
    message = envelope.message
    if not (isinstance(message, Heartbeat) and math.isnan(message.sent_at)):
        assert encode(envelope) == data
    return envelope


def test_fuzz_random_bytes() -> None:
    rng = random.Random(0x1A7C)
    for _ in range(20_000):
        _decode_or_frame_error(rng.randbytes(rng.randrange(0, 64)))


def test_fuzz_valid_headers_with_random_payloads() -> None:
    """Past the header, so the payload decoders themselves are fuzzed (not just the version check)."""
    rng = random.Random(0x5EED)
    decoded = 0
    for _ in range(20_000):
        kind = rng.choice([*Kind, 0, 4, rng.randrange(256)])
        payload = rng.randbytes(rng.randrange(0, 48))
        if kind == Kind.MEMBERSHIP_CHANGED and rng.random() < 0.5 and len(payload) >= 12:
            count = (len(payload) - 12) // 4  # a consistent count, so some of these decode
            payload = payload[:8] + struct.pack("!I", count) + payload[12 : 12 + 4 * count]
        if _decode_or_frame_error(header(kind, source=rng.randrange(U32)) + payload) is not None:
            decoded += 1
    assert decoded > 1000  # the generator reaches the decoders' success paths too


def test_fuzz_mutated_valid_frames() -> None:
    rng = random.Random(0xF00D)
    seeds = [frame(message) for message in MESSAGES if len(frame(message)) < 5000]
    for _ in range(20_000):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randrange(1, 4)):
            operation = rng.randrange(4)
            if operation == 0 and data:  # flip a bit
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
            elif operation == 1:  # truncate
                del data[rng.randrange(len(data) + 1) :]
            elif operation == 2:  # insert bytes
                at = rng.randrange(len(data) + 1)
                data[at:at] = rng.randbytes(rng.randrange(1, 8))
            elif data:  # overwrite a byte with an edge value
                data[rng.randrange(len(data))] = rng.choice([0x00, 0x7F, 0x80, 0xC0, 0xED, 0xFF])
        _decode_or_frame_error(bytes(data))


def test_every_prefix_of_every_frame_decodes_or_raises_frame_error() -> None:
    for message in MESSAGES[:3] + MESSAGES[4:9]:
        data = frame(message)
        for length in range(len(data)):
            _decode_or_frame_error(data[:length])
        assert _decode_or_frame_error(data) is not None


def test_fuzz_batches() -> None:
    rng = random.Random(0xBA7C)
    good = [frame(message) for message in MESSAGES[:3]]
    for _ in range(5_000):
        frames = [
            rng.choice(good) if rng.random() < 0.8 else rng.randbytes(rng.randrange(20))
            for _ in range(rng.randrange(0, 6))
        ]
        try:
            envelopes = decode_batch(frames)
        except FrameError:
            continue
        assert [encode(envelope) for envelope in envelopes] == frames
