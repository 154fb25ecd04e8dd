"""XEP-0484 FAST tokens and the HT-* SASL mechanisms they use (draft-schmaus-kitten-sasl-ht), sans-IO.

A client that logged in with a password asks for a token (<request-token/>); later logins
present it with a one-message HT mechanism, so a reconnecting client skips SCRAM's PBKDF2 and
its second round trip:

    initiator-msg  = authcid NUL HMAC-SHA-256(token, "Initiator" || cb-data)
    responder-msg  = HMAC-SHA-256(token, "Responder" || cb-data)       (in <additional-data/>)

cb-data is the TLS channel binding the mechanism names (-ENDP tls-server-end-point, -UNIQ
tls-unique, -EXPR tls-exporter) or nothing (-NONE).

Tokens are stored hashed. The token string is longer than SHA-256's block (64 bytes), and RFC
2104 §2 keys an HMAC with such a key by its hash: HMAC(token, m) == HMAC(SHA-256(token), m). So
the server keeps only SHA-256(token) (`token_key`) and still checks and answers the HT
exchange; the database never holds a token a client sends. (The hash is what the HMAC is keyed
with, so whoever reads the table can log in until the tokens expire or are revoked: as with any
HMAC scheme; it is still useless for the account's password or any other service.)

Each (account, client) pair has two slots, as XEP-0484 §6.1 suggests: ``new`` holds the token
last issued, ``current`` the one last used. A login tries ``new`` first; a successful use of
``new`` moves it to ``current`` (dropping the older token), so a rotated token keeps working
until its successor is used, and no more than two are ever valid per client. `check` decides an
attempt against the stored slots; the shell reads and updates them (`imactor.storage.fast`).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

#: Mechanism → the channel binding type it binds to (None: no binding), preference order.
MECHANISMS: dict[str, str | None] = {
    "HT-SHA-256-EXPR": "tls-exporter",
    "HT-SHA-256-ENDP": "tls-server-end-point",
    "HT-SHA-256-UNIQ": "tls-unique",
    "HT-SHA-256-NONE": None,
}
#: Slots of a client's tokens (see the module docstring).
NEW = "new"
CURRENT = "current"
#: Bytes of randomness in a token: 512 bits, 128 hex characters, so the token is longer than
#: SHA-256's block and its hash keys the HMAC exactly as the token does.
TOKEN_BYTES = 64
_BLOCK = 64
#: Longest authcid the draft requires a responder to accept, in octets.
MAX_AUTHCID = 255


class FastError(Exception):
    """Ends a FAST attempt with an RFC 6120 §6.5 condition (XEP-0388 <failure/>)."""

    def __init__(self, condition: str, text: str = "") -> None:
        super().__init__(condition, text)
        self.condition = condition
        self.text = text


def offered(channel_bindings: Mapping[str, bytes]) -> list[str]:
    """The HT mechanisms this connection can do: -NONE always, the others with their binding."""
    return [name for name, cb in MECHANISMS.items() if cb is None or cb in channel_bindings]


def token_key(token: str) -> bytes:
    """What is stored for `token`: its SHA-256, which keys the HT HMACs as the token itself does.

    Raises:
        ValueError: A token no longer than the hash's block: its hash would not be its HMAC key.
    """
    raw = token.encode("utf-8")
    if len(raw) <= _BLOCK:
        raise ValueError("a FAST token must be longer than 64 bytes")
    return hashlib.sha256(raw).digest()


def new_token(random_bytes: bytes) -> tuple[str, bytes]:
    """A token from `random_bytes` (at least `TOKEN_BYTES` of them) and its stored key."""
    if len(random_bytes) < TOKEN_BYTES:
        raise ValueError(f"a FAST token needs {TOKEN_BYTES} random bytes")
    token = random_bytes.hex()  # 128 characters, plain ASCII: no client mangles it
    return token, token_key(token)


def initiator_proof(key: bytes, cb_data: bytes) -> bytes:
    return hmac.new(key, b"Initiator" + cb_data, hashlib.sha256).digest()


def responder_message(key: bytes, cb_data: bytes) -> bytes:
    return hmac.new(key, b"Responder" + cb_data, hashlib.sha256).digest()


@dataclass(frozen=True, slots=True)
class InitiatorMessage:
    authcid: str
    proof: bytes


def parse_initiator(data: bytes | None) -> InitiatorMessage:
    """Split ``authcid NUL initiator-hashed-token``.

    Raises:
        FastError: malformed-request for no data, no NUL, an empty or over-long authcid, or
            invalid UTF-8.
    """
    if not data:
        raise FastError("malformed-request", "HT needs an initial response")
    authcid_raw, sep, proof = data.partition(b"\x00")
    if not sep or not authcid_raw or not proof or len(authcid_raw) > MAX_AUTHCID:
        raise FastError("malformed-request", "expected authcid NUL hashed-token")
    try:
        authcid = authcid_raw.decode("utf-8")
    except UnicodeDecodeError:
        raise FastError("malformed-request", "the authcid is not UTF-8") from None
    return InitiatorMessage(authcid, proof)


@dataclass(frozen=True, slots=True)
class StoredToken:
    """One slot of a client's tokens, as stored."""

    slot: str  #: `NEW` or `CURRENT`
    key: bytes  #: `token_key` of the token
    mechanism: str
    expires_at: float  #: UTC seconds
    last_count: int  #: the highest `count` accepted with it; -1: none yet


@dataclass(frozen=True, slots=True)
class Accepted:
    """The token in `slot` proved the client; `responder` goes in <additional-data/>."""

    slot: str
    token: StoredToken
    responder: bytes


def check(
    tokens: Sequence[StoredToken],
    *,
    mechanism: str,
    proof: bytes,
    cb_data: bytes,
    count: int | None,
    now: float,
) -> Accepted:
    """Decide a FAST attempt against a client's stored slots (`NEW` first, then `CURRENT`).

    Every slot's HMAC is computed and compared in constant time, whatever matched, so the time
    taken tells nothing about which slot (if any) holds the token.

    Raises:
        FastError: not-authorized for no matching token (unknown client, another account's
            token, a token bound to another mechanism, a count not above the last one accepted:
            a replay); credentials-expired for a matching token past its expiry (XEP-0484 §5.2:
            the client then falls back to its password).
    """
    ordered = sorted(tokens, key=lambda token: token.slot != NEW)
    found: StoredToken | None = None
    for token in ordered:
        if hmac.compare_digest(initiator_proof(token.key, cb_data), proof) and found is None:
            found = token
    if found is None:
        raise FastError("not-authorized", "invalid token")
    if found.mechanism != mechanism:
        # XEP-0484 §4.4: a token is bound to the mechanism it was requested for.
        raise FastError("not-authorized", "the token was issued for another mechanism")
    if found.expires_at <= now:
        raise FastError("credentials-expired", "the token has expired")
    if count is not None and count <= found.last_count:
        raise FastError("not-authorized", "replayed: count is not above the last one used")
    return Accepted(found.slot, found, responder_message(found.key, cb_data))


def due_for_rotation(token: StoredToken, *, lifetime: float, now: float) -> bool:
    """Whether a login with `token` should bring a fresh one (XEP-0484 §4.5): past half its life."""
    return token.expires_at - now < lifetime / 2


def parse_count(raw: str | None) -> int | None:
    """The <fast count=''/> attribute: a non-negative integer, None when absent.

    Raises:
        FastError: malformed-request for anything else.
    """
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise FastError("malformed-request", "count must be a non-negative integer")
    return int(raw)
