"""Random identifiers for the message path (XEP-0359 stanza ids), without a system call each.

`secrets.token_urlsafe` asks the kernel for randomness every time: a `getrandom` call per chat
message. `random_id` takes its bytes from the same source (`os.urandom`, the CSPRNG that
`secrets` uses) in blocks, so the ids are as unpredictable and the call is made once per
`_BLOCK` ids. Not for secrets that must never share a buffer with other uses (keys, nonces):
`secrets` serves those.
"""

from __future__ import annotations

import base64
import os
from typing import Final

#: Random bytes fetched at once.
_BLOCK: Final = 4096


class _Pool:
    __slots__ = ("bytes", "position")

    def __init__(self) -> None:
        self.bytes = b""
        self.position = 0


_pool = _Pool()


def random_id(nbytes: int = 12) -> str:
    """`nbytes` random bytes as URL-safe base64 text, like `secrets.token_urlsafe(nbytes)`."""
    pool = _pool
    end = pool.position + nbytes
    if end > len(pool.bytes):
        pool.bytes, pool.position, end = os.urandom(max(_BLOCK, nbytes)), 0, nbytes
    chunk = pool.bytes[pool.position : end]
    pool.position = end
    return base64.urlsafe_b64encode(chunk).rstrip(b"=").decode()
