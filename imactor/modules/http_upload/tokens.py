"""The signed PUT URLs of XEP-0363 slots, and the key that signs them.

A slot's PUT URL carries ``?e=<expiry, Unix seconds>&t=<token>``, the token being
HMAC-SHA256(key, the slot's id, file name, size, content type and that expiry), base64url. Only
who holds the key (the server: every worker of every node that shares the upload directory)
can make one, and it stays valid only until its expiry: the GET URL, which the uploader shares
with everyone it sends the file to, names the same path without the token, so knowing where a
file will be is not enough to put something else there (XEP-0363 §8: long random paths; the
token is what makes the PUT the uploader's alone).

The key is ``[modules.http_upload] secret`` when set (several nodes that do not share the
directory but must accept each other's URLs), else 32 random bytes generated once into the
upload directory (``secret``, mode 0600) and read by every worker: created race-free (a private
temporary file linked into place, which fails if another worker was first), so all converge on
the first one written.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import secrets
from pathlib import Path

SECRET_FILE = "secret"


def slot_message(slot_id: str, filename: str, size: int, content_type: str, expires: int) -> bytes:
    """What a token signs: every fact of the slot a PUT must match, and the expiry. Fields are
    separated by NUL, which none of them may contain (file names with control characters are
    refused), so no two slots sign the same bytes."""
    fields = ("PUT", slot_id, filename, str(size), content_type, str(expires))
    return "\0".join(fields).encode()


def sign(key: bytes, slot_id: str, filename: str, size: int, content_type: str, expires: int) -> str:
    digest = hmac.new(key, slot_message(slot_id, filename, size, content_type, expires), hashlib.sha256)
    return base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode("ascii")


def valid(
    key: bytes, token: str, slot_id: str, filename: str, size: int, content_type: str, expires: int
) -> bool:
    """The token was made with `key` for exactly this slot and expiry (constant-time compare).
    Whether the expiry has passed is the caller's check: it has the clock."""
    expected = sign(key, slot_id, filename, size, content_type, expires)
    return hmac.compare_digest(expected.encode(), token.encode("ascii", "replace"))


def load_or_create_key(directory: Path) -> bytes:
    """The key kept in `directory` (created 0700 if missing), generated on first use."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / SECRET_FILE
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        pass
    temporary = directory / f".{SECRET_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
            f.flush()
            os.fsync(f.fileno())
        with contextlib.suppress(FileExistsError):  # another worker linked its own first: use that
            os.link(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return bytes.fromhex(path.read_text().strip())
