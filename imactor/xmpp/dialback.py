"""Server Dialback keys (XEP-0220), generated and checked as XEP-0185 recommends.

    key = HMAC-SHA256(SHA256(secret) as lowercase hex, "{receiving} {originating} {stream id}")

The secret never leaves the server's own network: every worker (and node) that shares it can
verify a key another one generated, with no table to share (XEP-0185 §2, note 3).
"""

from __future__ import annotations

import hashlib
import hmac


def dialback_key(secret: bytes, receiving: str, originating: str, stream_id: str) -> str:
    """The key the originating server sends in <db:result/> for the stream `stream_id` that
    `receiving` opened to it (XEP-0185 §2: the hostnames and the id joined by one space, the
    secret hashed first so that it is as long as the hash, everything in lowercase hex)."""
    hashed_secret = hashlib.sha256(secret).hexdigest().encode("ascii")
    message = f"{receiving} {originating} {stream_id}".encode()
    return hmac.new(hashed_secret, message, hashlib.sha256).hexdigest()


def key_matches(secret: bytes, receiving: str, originating: str, stream_id: str, key: str) -> bool:
    """Whether `key` is the one we would have generated (compared in constant time)."""
    expected = dialback_key(secret, receiving, originating, stream_id)
    return hmac.compare_digest(expected.encode("ascii"), key.strip().lower().encode("ascii", "replace"))
