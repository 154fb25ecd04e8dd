"""XEP-0115 Entity Capabilities, sans-IO: the verification string, its hash, and checking one.

Two uses: the server hashes its own identities and features once (`ver`, offered as the `<c/>`
stream feature, §6.3, built by `caps_element`), and the PEP module checks the disco#info answer
of a client whose caps it does not know yet (`verify`, §5.4) before it trusts the `+notify`
features in it (XEP-0163 §4.2).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable

from lxml import etree

from imactor.xmpp import dataforms as forms
from imactor.xmpp.namespaces import NS_CAPS, NS_DATA_FORMS, NS_DISCO_INFO, qname
from imactor.xmpp.stanza import Element, default_ns

_HASHES = {"sha-1": hashlib.sha1, "sha-256": hashlib.sha256, "sha-512": hashlib.sha512}


def verification_string(identities: Iterable[tuple[str, str, str]], features: Iterable[str]) -> str:
    """§5.1 for an entity without extended forms: category/type/lang/name< for each identity
    (category, type, name; no xml:lang), sorted, then feature< for each feature, sorted."""
    parts = [f"{category}/{kind}//{name}<" for category, kind, name in sorted(identities)]
    parts.extend(f"{feature}<" for feature in sorted(set(features)))
    return "".join(parts)


def ver(identities: Iterable[tuple[str, str, str]], features: Iterable[str]) -> str:
    """§5.1 step 8: the base64 of the SHA-1 of the verification string."""
    digest = hashlib.sha1(verification_string(identities, features).encode("utf-8")).digest()
    return base64.b64encode(digest).decode("ascii")


def caps_element(node: str, identities: Iterable[tuple[str, str, str]], features: Iterable[str]) -> bytes:
    """`<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node=… ver=…/>` (§4), serialized."""
    element = etree.Element(qname(NS_CAPS, "c"), nsmap=default_ns(NS_CAPS))
    element.set("hash", "sha-1")
    element.set("node", node)
    element.set("ver", ver(identities, features))
    return etree.tostring(element)


def verify(query: Element, hash_name: str, ver: str) -> frozenset[str] | None:
    """The features of a disco#info result if it hashes to `ver` (§5.4), else None.

    The verification string is §5.1's: identities (category/type/lang/name, sorted), features
    (sorted), then each extended form (§5.1 step 6: sorted by FORM_TYPE, its fields by var).
    A result with duplicate identities or features, or a form without FORM_TYPE, is refused
    (§5.4 3.c-e), as is an unknown hash function.
    """
    digest = _HASHES.get(hash_name.lower())
    if digest is None:
        return None
    identities = []
    for identity in query.iterchildren(qname(NS_DISCO_INFO, "identity")):
        lang = identity.get("{http://www.w3.org/XML/1998/namespace}lang", "")
        identities.append(
            f"{identity.get('category', '')}/{identity.get('type', '')}/{lang}/{identity.get('name', '')}"
        )
    features = [f.get("var", "") for f in query.iterchildren(qname(NS_DISCO_INFO, "feature"))]
    if len(set(identities)) != len(identities) or len(set(features)) != len(features):
        return None
    parts = [f"{i}<" for i in sorted(identities)] + [f"{f}<" for f in sorted(features)]
    extended: list[tuple[str, str]] = []
    for form in query.iterchildren(qname(NS_DATA_FORMS, "x")):
        try:
            parsed = forms.parse(form)
        except forms.FormError:
            return None
        form_type = parsed.form_type
        if form_type is None:
            continue  # §5.4 3.f: a form without FORM_TYPE is ignored
        text = f"{form_type}<"
        for var in sorted(v for v in parsed.values if v != "FORM_TYPE"):
            text += f"{var}<" + "".join(f"{value}<" for value in sorted(parsed.values[var]))
        extended.append((form_type, text))
    if len({form_type for form_type, _ in extended}) != len(extended):
        return None
    parts.extend(text for _, text in sorted(extended))
    computed = base64.b64encode(digest("".join(parts).encode("utf-8")).digest()).decode("ascii")
    return frozenset(features) if computed == ver else None


def disco_features(query: Element) -> frozenset[str]:
    """The features of a disco#info result, as they are (an answer that did not verify)."""
    return frozenset(f.get("var", "") for f in query.iterchildren(qname(NS_DISCO_INFO, "feature")))
