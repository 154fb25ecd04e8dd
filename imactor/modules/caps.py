"""XEP-0115: Entity Capabilities, for the server itself.

The server's identities and features are hashed (SHA-1, §5.1; the hash is the protocol core's,
`imactor.xmpp.caps`) and the `<c/>` element is offered among the stream features (§6.3), so a
client can cache the server's disco result. disco#info queries on `node#ver` are answered like
plain ones (see `modules/disco.py`).
"""

from __future__ import annotations

from collections.abc import Iterable

from imactor.server.modules import Module, Xep
from imactor.xmpp import caps
from imactor.xmpp.namespaces import NS_CAPS

NODE = "https://imactor.example/caps"

module = Module(name="caps", summary="Entity Capabilities", xeps=(Xep("0115", "1.6.0", "complete: server"),),
                features=(NS_CAPS,), depends=("disco",))  # fmt: skip


def ver(identities: Iterable[tuple[str, str, str]], features: Iterable[str]) -> str:
    """The server's `ver` (§5.1, computed by the protocol core)."""
    return caps.ver(identities, features)


def caps_feature(identities: Iterable[tuple[str, str, str]], features: Iterable[str]) -> bytes:
    """The `<c/>` stream feature (§6.3) of the server's identities and features."""
    return caps.caps_element(NODE, identities, features)
