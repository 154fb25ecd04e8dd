"""The SOCKS5 handshake of the XEP-0065 proxy, bytes in and out (RFC 1928, XEP-0065 §5.3.2)."""

from __future__ import annotations

import hashlib

import pytest

from imactor.xmpp import socks5
from imactor.xmpp.socks5 import Socks5Error, Socks5Handshake, TokenBucket, stream_hash

HASH = stream_hash("sid1", "alice@localhost/pc", "bob@localhost/phone")
GREETING = b"\x05\x01\x00"


def connect(address: str = HASH, port: int = 0, *, command: int = 1, atyp: int = 3,
            version: int = 5) -> bytes:  # fmt: skip
    raw = address.encode()
    return bytes((version, command, 0, atyp, len(raw))) + raw + port.to_bytes(2, "big")


def test_stream_hash_is_the_hex_sha1_of_sid_requester_and_target() -> None:
    expected = hashlib.sha1(b"sid1alice@localhost/pcbob@localhost/phone").hexdigest()
    assert expected == HASH
    assert len(HASH) == socks5.HASH_LENGTH


def test_a_whole_handshake_in_one_piece() -> None:
    handshake = Socks5Handshake()
    assert handshake.receive_data(GREETING + connect() + b"early") == b"\x05\x00"
    assert handshake.request == socks5.Request(HASH, 0)
    assert handshake.leftover == b"early"


def test_a_handshake_byte_by_byte() -> None:
    handshake = Socks5Handshake()
    out = b""
    for byte in GREETING + connect():
        assert handshake.request is None
        out += handshake.receive_data(bytes((byte,)))
    assert out == b"\x05\x00"
    assert handshake.request == socks5.Request(HASH, 0)
    assert handshake.leftover == b""


def test_no_auth_is_chosen_among_several_methods() -> None:
    assert Socks5Handshake().receive_data(b"\x05\x03\x02\x01\x00") == b"\x05\x00"


def test_bytes_after_the_request_are_kept() -> None:
    handshake = Socks5Handshake()
    handshake.receive_data(GREETING + connect())
    assert handshake.receive_data(b"more") == b""
    assert handshake.leftover == b"more"


@pytest.mark.parametrize("greeting", [b"\x04\x01\x00", b"GET / HTTP/1.1\r\n", b"\x16\x03\x01"])
def test_not_socks5_is_closed_without_a_reply(greeting: bytes) -> None:
    with pytest.raises(Socks5Error) as caught:
        Socks5Handshake().receive_data(greeting)
    assert caught.value.code is None


def test_no_acceptable_method() -> None:
    with pytest.raises(Socks5Error) as caught:
        Socks5Handshake().receive_data(b"\x05\x01\x02")  # username/password only
    assert caught.value.code == socks5.METHOD_NONE_ACCEPTABLE


@pytest.mark.parametrize(
    ("request_bytes", "code"),
    [
        (connect(version=4), socks5.GENERAL_FAILURE),
        (connect(command=2), socks5.COMMAND_NOT_SUPPORTED),  # BIND
        (connect(command=3), socks5.COMMAND_NOT_SUPPORTED),  # UDP ASSOCIATE: not offered
        (bytes((5, 1, 0, 1, 127, 0, 0, 1, 0, 0)), socks5.ADDRESS_TYPE_NOT_SUPPORTED),  # IPv4
        (bytes((5, 1, 0, 4)) + bytes(18), socks5.ADDRESS_TYPE_NOT_SUPPORTED),  # IPv6
        (connect("example.com"), socks5.HOST_UNREACHABLE),  # not a hash
        (connect("z" * 40), socks5.HOST_UNREACHABLE),  # 40 characters, not hex
        (connect(port=7777), socks5.HOST_UNREACHABLE),  # XEP-0065: port 0
        (bytes((5, 1, 0, 3, 2, 0xFF, 0xFE, 0, 0)), socks5.HOST_UNREACHABLE),  # not ASCII
    ],
)
def test_refused_requests_carry_their_reply_code(request_bytes: bytes, code: int) -> None:
    handshake = Socks5Handshake()
    with pytest.raises(Socks5Error) as caught:
        handshake.receive_data(GREETING + request_bytes)
    assert caught.value.code == code
    assert caught.value.before == b"\x05\x00"  # the method choice still goes out first


def test_a_refused_request_after_the_greeting_has_nothing_before() -> None:
    handshake = Socks5Handshake()
    assert handshake.receive_data(GREETING) == b"\x05\x00"
    with pytest.raises(Socks5Error) as caught:
        handshake.receive_data(connect(command=2))
    assert (caught.value.code, caught.value.before) == (socks5.COMMAND_NOT_SUPPORTED, b"")


def test_a_request_cut_short_waits_for_more() -> None:
    handshake = Socks5Handshake()
    handshake.receive_data(GREETING + connect()[:20])
    assert handshake.request is None


def test_reply_echoes_the_address() -> None:
    assert socks5.reply(socks5.SUCCEEDED, HASH) == bytes((5, 0, 0, 3, 40)) + HASH.encode() + b"\x00\x00"
    assert socks5.reply(socks5.HOST_UNREACHABLE) == bytes((5, 4, 0, 3, 0, 0, 0))


def test_token_bucket_allows_a_second_of_burst_then_paces() -> None:
    bucket = TokenBucket(1000.0)
    assert bucket.take(1000, now=0.0) == 0.0  # the first second's worth at once
    assert bucket.take(500, now=0.0) == pytest.approx(0.5)  # then the debt says wait
    assert bucket.take(500, now=1.0) == pytest.approx(0.0)  # a second later: the debt paid, 500 left
    assert bucket.take(2000, now=1.0) == pytest.approx(2.0)


def test_token_bucket_never_saves_more_than_one_second() -> None:
    bucket = TokenBucket(100.0)
    bucket.take(0, now=0.0)
    assert bucket.take(100, now=60.0) == 0.0
    assert bucket.take(100, now=60.0) == pytest.approx(1.0)
