"""SOCKS5 as XEP-0065 uses it (RFC 1928), sans-IO: the server side of the handshake.

A client of a bytestreams proxy sends a greeting (version 5, its authentication methods), the
proxy picks "no authentication" (0x00); then one request: CONNECT (0x01) to a DOMAINNAME (0x03)
that is the hex SHA-1 of SID + requester JID + target JID (XEP-0065 §5.3.2, `stream_hash`), port
0. `Socks5Handshake` takes the bytes as they come (`receive_data`) and answers with what to
write and, once the request is whole, the address asked for; a request the proxy refuses raises
`Socks5Error` with the reply code to send (or None when no reply fits: a greeting that is not
SOCKS5 gets nothing but a close, RFC 1928 §3) and what had to go before it (`before`). The
shell then writes `reply(SUCCEEDED, address)`, or `error.before` and the error's reply and
closes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Final

VERSION: Final = 5
METHOD_NO_AUTH: Final = 0x00
METHOD_NONE_ACCEPTABLE: Final = 0xFF
CMD_CONNECT: Final = 0x01
ATYP_IPV4: Final = 0x01
ATYP_DOMAINNAME: Final = 0x03
ATYP_IPV6: Final = 0x04

# Reply codes, RFC 1928 §6.
SUCCEEDED: Final = 0x00
GENERAL_FAILURE: Final = 0x01
NOT_ALLOWED: Final = 0x02  #: connection not allowed by ruleset
HOST_UNREACHABLE: Final = 0x04  #: no one expects this hash
CONNECTION_REFUSED: Final = 0x05
COMMAND_NOT_SUPPORTED: Final = 0x07
ADDRESS_TYPE_NOT_SUPPORTED: Final = 0x08

#: A SHA-1 in hex: what XEP-0065 puts in DST.ADDR.
HASH_LENGTH: Final = 40


class Socks5Error(Exception):
    """The peer broke the protocol or asked for what the proxy does not do.

    `code`: the RFC 1928 §6 reply to send before closing; None: close without a reply (the peer
    does not speak SOCKS5, or its methods leave nothing to answer with but 0xFF, already sent).
    """

    def __init__(self, message: str, code: int | None) -> None:
        super().__init__(message)
        self.code = code
        #: What the handshake had to say before the error (the method choice, when the
        #: greeting and a refused request came in one read): written first.
        self.before = b""


@dataclass(frozen=True, slots=True)
class Request:
    """A whole CONNECT request: the address (the stream's hash) and port asked for."""

    address: str
    port: int


def stream_hash(sid: str, requester: str, target: str) -> str:
    """DST.ADDR of XEP-0065 §5.3.2: hex SHA-1 of the SID and the two JIDs (as prepared)."""
    return hashlib.sha1(f"{sid}{requester}{target}".encode()).hexdigest()


def reply(code: int, address: str = "", port: int = 0) -> bytes:
    """A reply (RFC 1928 §6) naming `address` as BND.ADDR, as XEP-0065 asks (the client's)."""
    name = address.encode("ascii", "replace")[:255]
    return bytes((VERSION, code, 0, ATYP_DOMAINNAME, len(name))) + name + port.to_bytes(2, "big")


class Socks5Handshake:
    """The server side of one SOCKS5 handshake, from the greeting to the request."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._greeted = False
        #: Set once the request is whole; bytes the client sent after it stay in `leftover`.
        self.request: Request | None = None

    @property
    def leftover(self) -> bytes:
        """What came after the request (XEP-0065: bytes before activation are kept, not dropped)."""
        return bytes(self._buffer)

    def receive_data(self, data: bytes) -> bytes:
        """Feed what the socket gave; returns what to write now (the method choice).

        Raises:
            Socks5Error: the greeting or request is refused; send `code` (if any) and close.
        """
        if self.request is not None:
            self._buffer += data
            return b""
        self._buffer += data
        out = b""
        if not self._greeted:
            out = self._parse_greeting()
        if self._greeted and self.request is None:
            try:
                self._parse_request()
            except Socks5Error as error:
                error.before = out
                raise
        return out

    def _parse_greeting(self) -> bytes:
        buffer = self._buffer
        if not buffer:
            return b""
        if buffer[0] != VERSION:
            raise Socks5Error(f"version {buffer[0]}, not 5", None)
        if len(buffer) < 2 or len(buffer) < 2 + buffer[1]:
            return b""
        methods = bytes(buffer[2 : 2 + buffer[1]])
        del buffer[: 2 + len(methods)]
        if METHOD_NO_AUTH not in methods:
            # RFC 1928 §3: 0xFF, then the client must close; so do we.
            raise Socks5Error("no acceptable authentication method", METHOD_NONE_ACCEPTABLE)
        self._greeted = True
        return bytes((VERSION, METHOD_NO_AUTH))

    def _parse_request(self) -> None:
        buffer = self._buffer
        if len(buffer) < 5:
            return
        version, command, _reserved, atyp = buffer[0], buffer[1], buffer[2], buffer[3]
        if version != VERSION:
            raise Socks5Error(f"request version {version}, not 5", GENERAL_FAILURE)
        if command != CMD_CONNECT:
            raise Socks5Error(f"command {command} is not CONNECT", COMMAND_NOT_SUPPORTED)
        if atyp != ATYP_DOMAINNAME:
            raise Socks5Error(f"address type {atyp} is not DOMAINNAME", ADDRESS_TYPE_NOT_SUPPORTED)
        length = buffer[4]
        end = 5 + length + 2
        if len(buffer) < end:
            return
        raw = bytes(buffer[5 : 5 + length])
        port = int.from_bytes(buffer[5 + length : end], "big")
        del buffer[:end]
        try:
            address = raw.decode("ascii")
        except UnicodeDecodeError:
            raise Socks5Error("the address is not ASCII", HOST_UNREACHABLE) from None
        self.request = Request(address, port)
        if length != HASH_LENGTH or port != 0 or any(c not in "0123456789abcdef" for c in address.lower()):
            raise Socks5Error(f"{address!r}:{port} is not a stream hash with port 0", HOST_UNREACHABLE)


@dataclass(slots=True)
class TokenBucket:
    """Bytes per second with a burst of one second's worth; the clock is the caller's.

    `take(n, now)` spends `n` and returns how long to wait before the bytes may go (0: at once);
    the debt is carried, so a sender that waits as told keeps to `rate` on average.
    """

    rate: float  #: bytes per second
    tokens: float = 0.0
    stamp: float | None = None

    def take(self, count: int, now: float) -> float:
        if self.stamp is None:
            self.tokens, self.stamp = self.rate, now
        self.tokens = min(self.rate, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        self.tokens -= count
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate
