"""SCRAM key derivation (RFC 5802 §3) shared by the SASL mechanisms and the account store.

Only these derived values are stored, never the password: salt, iteration count, StoredKey and
ServerKey, per hash function.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass

#: SCRAM mechanism hash name → hashlib name.
SCRAM_HASHES: dict[str, str] = {"SHA-1": "sha1", "SHA-256": "sha256"}

DEFAULT_ITERATIONS = 4096  # RFC 7677 §4: at least 4096 for SCRAM-SHA-256.


@dataclass(frozen=True, slots=True)
class ScramCredentials:
    """The salted SCRAM verifier of one account for one hash function."""

    hash_name: str  # "SHA-1" or "SHA-256"
    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes


def salted_password(hash_name: str, password: bytes, salt: bytes, iterations: int) -> bytes:
    """Hi(Normalize(password), salt, i) of RFC 5802: PBKDF2 with HMAC of the hash."""
    return hashlib.pbkdf2_hmac(SCRAM_HASHES[hash_name], password, salt, iterations)


def hmac_digest(hash_name: str, key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, SCRAM_HASHES[hash_name]).digest()


def hash_digest(hash_name: str, data: bytes) -> bytes:
    return hashlib.new(SCRAM_HASHES[hash_name], data).digest()


def credentials_from_salted_password(
    hash_name: str, salted: bytes, salt: bytes, iterations: int
) -> ScramCredentials:
    client_key = hmac_digest(hash_name, salted, b"Client Key")
    return ScramCredentials(
        hash_name=hash_name,
        salt=salt,
        iterations=iterations,
        stored_key=hash_digest(hash_name, client_key),
        server_key=hmac_digest(hash_name, salted, b"Server Key"),
    )


def derive_credentials(
    hash_name: str,
    password: str,
    *,
    salt: bytes | None = None,
    iterations: int = DEFAULT_ITERATIONS,
) -> ScramCredentials:
    """Derive the stored verifier for `password` (already PRECIS OpaqueString-prepared by the caller)."""
    if salt is None:
        salt = os.urandom(16)
    salted = salted_password(hash_name, password.encode("utf-8"), salt, iterations)
    return credentials_from_salted_password(hash_name, salted, salt, iterations)


def verify_password(password: str, creds: ScramCredentials) -> bool:
    """Check a plaintext password (SASL PLAIN, in-band password change) against a stored verifier."""
    again = derive_credentials(creds.hash_name, password, salt=creds.salt, iterations=creds.iterations)
    return hmac.compare_digest(again.stored_key, creds.stored_key)
