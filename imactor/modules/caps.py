"""XEP-0115: Entity Capabilities, for the server itself.

The server's identities and features are hashed once at start (SHA-1, §5.1) and the `<c/>`
element is offered among the stream features (§6.3), so a client can cache the server's disco
result. disco#info queries on `node#ver` are answered like plain ones (see `modules/disco.py`).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable

from lxml import etree

from imactor.server.modules import Module, Xep
from imactor.xmpp.namespaces import NS_CAPS, qname
from imactor.xmpp.stanza import default_ns

NODE = "https://imactor.example/caps"

module = Module(name="caps", summary="Entity Capabilities", xeps=(Xep("0115", "1.6.0", "complete: server"),),
                features=(NS_CAPS,), depends=("disco",))  # fmt: skip


def verification_string(identities: Iterable[tuple[str, str, str]], features: Iterable[str]) -> str:
    """§5.1: category/type/lang/name< for each identity (sorted), then feature< for each feature."""
    parts = [f"{category}/{kind}//{name}<" for category, kind, name in sorted(identities)]
    parts.extend(f"{feature}<" for feature in sorted(set(features)))
    return "".join(parts)


def ver(identities: Iterable[tuple[str, str, str]], features: Iterable[str]) -> str:
    digest = hashlib.sha1(verification_string(identities, features).encode("utf-8")).digest()
    return base64.b64encode(digest).decode("ascii")


def caps_feature(identities: Iterable[tuple[str, str, str]], features: Iterable[str]) -> bytes:
    element = etree.Element(qname(NS_CAPS, "c"), nsmap=default_ns(NS_CAPS))
    element.set("hash", "sha-1")
    element.set("node", NODE)
    element.set("ver", ver(identities, features))
    return etree.tostring(element)
