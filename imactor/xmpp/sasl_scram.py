"""SCRAM wire format and proof checks, server side (RFC 5802, RFC 7677).

Channel binding follows RFC 5929 / RFC 9266: the TLS layer hands us the binding data, we only
compare it. Identity policy (PRECIS preparation, authzid rules) is not here but in
`imactor.xmpp.sasl`, which drives this module.
"""

from __future__ import annotations

import base64
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass

from imactor.xmpp.scram import ScramCredentials, hash_digest, hmac_digest

#: cb-name of RFC 5056 §7: the syntax of channel binding type names.
CB_NAME = re.compile(r"[A-Za-z0-9.\-]+")
#: printable of RFC 5802 §7: nonces are printable ASCII without ",".
NONCE = re.compile(r"[\x21-\x2b\x2d-\x7e]+")
#: attr-val for optional extensions: a letter, "=", then value-chars (anything but NUL and ",").
_EXTENSION = re.compile(r"[A-Za-z]=[^\x00]+")
_SASLNAME_ESCAPE = re.compile(r"=(2C|3D)")


class SaslError(Exception):
    """Ends an exchange with an RFC 6120 §6.5 failure condition.

    Attributes:
        condition: The SASL failure condition, e.g. ``not-authorized``.
        text: Human-readable detail; for SCRAM the RFC 5802 ``server-error-value`` when one fits.
    """

    def __init__(self, condition: str, text: str = "") -> None:
        super().__init__(condition, text)
        self.condition = condition
        self.text = text


def malformed(text: str = "invalid-encoding") -> SaslError:
    """A `malformed-request` failure (RFC 6120 §6.5.7) with the e= value as text."""
    return SaslError("malformed-request", text)


@dataclass(frozen=True, slots=True)
class ClientFirst:
    """A parsed client-first-message."""

    cbind_flag: str  # "n", "y" or "p"
    cb_name: str | None  # the channel binding type requested with "p="
    authzid: str | None  # saslname-decoded, not prepared
    username: str  # saslname-decoded, not prepared
    nonce: str
    gs2_header: str  # as sent, trailing comma included: it opens the cbind-input
    bare: str  # client-first-message-bare: the first part of the AuthMessage


@dataclass(frozen=True, slots=True)
class ClientFinal:
    """A parsed client-final-message."""

    cbind_input: bytes
    nonce: str
    proof: bytes
    without_proof: str  # the last part of the AuthMessage


def _utf8(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise malformed() from None


def _b64decode(text: str) -> bytes:
    try:
        decoded = base64.b64decode(text, validate=True)
    except ValueError:  # binascii.Error, or non-ASCII text
        raise malformed() from None
    # Only the canonical form: spare bits in the last quantum would make one proof many strings.
    if base64.b64encode(decoded) != text.encode("ascii"):
        raise malformed()
    return decoded


def decode_saslname(value: str, error_text: str = "invalid-username-encoding") -> str:
    """Undo the saslname escaping of RFC 5802 §5.1: ``=2C`` is ``,`` and ``=3D`` is ``=``.

    Raises:
        SaslError: malformed-request for an empty name, NUL, or "=" outside an escape (the RFC
            says the server MUST fail then).
    """
    if not value or "\x00" in value or "=" in _SASLNAME_ESCAPE.sub("", value):
        raise malformed(error_text)
    # One left-to-right pass, so "=3D2C" becomes "=2C" and is not decoded twice.
    return _SASLNAME_ESCAPE.sub(lambda m: "," if m.group(1) == "2C" else "=", value)


def _check_extensions(attributes: list[str]) -> None:
    """Optional extensions MUST be ignored, but "m" is mandatory and unknown to us (RFC 5802 §5.1)."""
    for attribute in attributes:
        if attribute.startswith("m="):
            raise malformed("extensions-not-supported")
        if not _EXTENSION.fullmatch(attribute):
            raise malformed()


def _parse_gs2_header(flag: str, authzid: str) -> tuple[str, str | None, str | None]:
    """Split gs2-cbind-flag and the optional ``a=`` authzid into (flag, cb_name, authzid)."""
    cb_name: str | None = None
    if flag.startswith("p="):
        cb_name = flag[2:]
        if not CB_NAME.fullmatch(cb_name):
            raise malformed()
        flag = "p"
    elif flag not in ("n", "y"):
        raise malformed()
    if not authzid:
        return flag, cb_name, None
    if not authzid.startswith("a="):
        raise malformed()
    return flag, cb_name, decode_saslname(authzid[2:], "invalid-encoding")


def parse_client_first(data: bytes) -> ClientFirst:
    """Parse ``gs2-header client-first-message-bare``.

    Raises:
        SaslError: malformed-request on any syntax error or an ``m=`` extension.
    """
    text = _utf8(data)
    parts = text.split(",", 2)
    if len(parts) != 3:
        raise malformed()
    flag, cb_name, authzid = _parse_gs2_header(parts[0], parts[1])
    bare = parts[2]
    attributes = bare.split(",")
    if attributes[0].startswith("m="):
        raise malformed("extensions-not-supported")
    if len(attributes) < 2 or not attributes[0].startswith("n=") or not attributes[1].startswith("r="):
        raise malformed()
    nonce = attributes[1][2:]
    if not NONCE.fullmatch(nonce):
        raise malformed()
    _check_extensions(attributes[2:])
    return ClientFirst(
        cbind_flag=flag,
        cb_name=cb_name,
        authzid=authzid,
        username=decode_saslname(attributes[0][2:]),
        nonce=nonce,
        gs2_header=f"{parts[0]},{parts[1]},",
        bare=bare,
    )


def parse_client_final(data: bytes) -> ClientFinal:
    """Parse ``c=...,r=...[,extensions],p=...``; the proof is always last.

    Raises:
        SaslError: malformed-request on any syntax or base64 error.
    """
    text = _utf8(data)
    without_proof, separator, proof = text.rpartition(",p=")
    if not separator or not proof or "," in proof:
        raise malformed()
    attributes = without_proof.split(",")
    if len(attributes) < 2 or not attributes[0].startswith("c=") or not attributes[1].startswith("r="):
        raise malformed()
    _check_extensions(attributes[2:])
    return ClientFinal(
        cbind_input=_b64decode(attributes[0][2:]),
        nonce=attributes[1][2:],
        proof=_b64decode(proof),
        without_proof=without_proof,
    )


def select_channel_binding(first: ClientFirst, *, plus: bool, channel_bindings: Mapping[str, bytes]) -> bytes:
    """Apply the channel binding rules of RFC 5802 §6; return the cbind-data the client must send.

    Args:
        first: The client's first message.
        plus: Whether the client chose a ``-PLUS`` mechanism.
        channel_bindings: What the TLS layer can provide; non-empty means we advertise ``-PLUS``.

    Raises:
        SaslError: on a gs2 flag that does not fit the mechanism or our offer.
    """
    if plus:
        if first.cb_name is None:
            raise SaslError("not-authorized", "channel-binding-required")
        if first.cb_name not in channel_bindings:
            raise SaslError("not-authorized", "unsupported-channel-binding-type")
        return channel_bindings[first.cb_name]
    if first.cbind_flag == "p":
        raise malformed("channel-binding-not-supported")
    if first.cbind_flag == "y" and channel_bindings:
        # The client supports binding but believes we do not: someone stripped the -PLUS
        # mechanisms from our offer. RFC 5802 §6 says the server MUST fail.
        raise SaslError("not-authorized", "server-does-support-channel-binding")
    return b""


def fake_credentials(hash_name: str, username: str, secret: bytes, iterations: int) -> ScramCredentials:
    """Stable made-up verifiers for a user we do not have.

    The salt must be the same on every attempt for the same name, or comparing two
    server-first-messages would tell unknown users from real ones. The keys only need to be
    unmatchable: a client would need a preimage of StoredKey.
    """
    seed = b"imactor-fake-scram\x00" + hash_name.encode() + b"\x00" + username.encode("utf-8", "replace")
    salt = hmac_digest("SHA-256", secret, seed + b"\x00salt")[:16]
    return ScramCredentials(
        hash_name=hash_name,
        salt=salt,
        iterations=iterations,
        stored_key=hmac_digest(hash_name, secret, seed + b"\x00stored"),
        server_key=hmac_digest(hash_name, secret, seed + b"\x00server"),
    )


class ScramExchange:
    """The server half of one SCRAM exchange once the client-first-message was accepted."""

    def __init__(self, first: ClientFirst, cb_data: bytes, credentials: ScramCredentials, known: bool):
        """Keep what the final check needs.

        Args:
            first: The client's first message.
            cb_data: The channel binding data expected after the gs2 header (b"" without binding).
            credentials: The account's verifiers, or fake ones.
            known: False when `credentials` are fake: the exchange then always fails.
        """
        self._first = first
        self._cbind_input = first.gs2_header.encode("utf-8") + cb_data
        self._credentials = credentials
        self._known = known
        self._nonce = ""
        self._server_first = ""

    def server_first(self, server_nonce: str) -> bytes:
        """Build the server-first-message: the combined nonce, salt and iteration count."""
        self._nonce = self._first.nonce + server_nonce
        salt = base64.b64encode(self._credentials.salt).decode("ascii")
        self._server_first = f"r={self._nonce},s={salt},i={self._credentials.iterations}"
        return self._server_first.encode("ascii")

    def client_final(self, data: bytes) -> bytes:
        """Check the client-final-message and return the server-final-message (``v=...``).

        Raises:
            SaslError: malformed-request on syntax errors, not-authorized on a wrong nonce,
                channel binding or proof. Unknown users get the wrong-password text.
        """
        final = parse_client_final(data)
        creds = self._credentials
        if len(final.proof) != len(creds.stored_key):
            raise malformed()
        # Not secret, but constant-time costs nothing and keeps all checks alike.
        if not hmac.compare_digest(final.nonce.encode(), self._nonce.encode()):
            raise SaslError("not-authorized", "other-error")
        if not hmac.compare_digest(final.cbind_input, self._cbind_input):
            raise SaslError("not-authorized", "channel-bindings-dont-match")
        auth_message = f"{self._first.bare},{self._server_first},{final.without_proof}".encode()
        signature = hmac_digest(creds.hash_name, creds.stored_key, auth_message)
        client_key = bytes(p ^ s for p, s in zip(final.proof, signature, strict=True))
        proof_ok = hmac.compare_digest(hash_digest(creds.hash_name, client_key), creds.stored_key)
        if not (proof_ok and self._known):
            raise SaslError("not-authorized", "invalid-proof")
        verifier = hmac_digest(creds.hash_name, creds.server_key, auth_message)
        return b"v=" + base64.b64encode(verifier)
