"""Stanzas: builders on lxml elements and the immutable `Stanza` that travels between actors.

Between actors a stanza travels as a `Stanza`: the routing facts (kind, type, from, to, id) plus its
serialized bytes. The receiving session writes the bytes to its socket without parsing them again,
and the same value can cross a process boundary unchanged (docs/design.md: stanzas travel as bytes).
An actor that must look inside parses its own private copy with `Stanza.element()`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from lxml import etree

from imactor.xmpp.errors import StanzaError
from imactor.xmpp.jid import JID
from imactor.xmpp.namespaces import NS_CLIENT, NS_DISCO_INFO, NS_DISCO_ITEMS, NS_STANZA_ERRORS, qname

Element = etree._Element

STANZA_KINDS = ("message", "presence", "iq")
MESSAGE = qname(NS_CLIENT, "message")
PRESENCE = qname(NS_CLIENT, "presence")
IQ = qname(NS_CLIENT, "iq")

# Our own serializations are parsed back with a parser that cannot fetch or expand anything.
_SAFE_PARSER = etree.XMLParser(
    resolve_entities=False, no_network=True, load_dtd=False, remove_comments=True, remove_pis=True
)


def default_ns(namespace: str) -> Any:
    """An nsmap declaring `namespace` as the default (typed Any: lxml-stubs reject the None key)."""
    return {None: namespace}


@dataclass(frozen=True, slots=True)
class Stanza:
    """A routed stanza: the facts routing needs, and the bytes a session writes as they are."""

    kind: str  #: "message" | "presence" | "iq"
    type: str  #: the type attribute, "" when absent (normal message, available presence)
    from_jid: JID
    to_jid: JID
    id: str | None
    data: bytes
    #: The element `data` was serialized from, handed over by its maker for the one actor that
    #: would otherwise parse the bytes again (`take_element`); never shared, never sent.
    _element: Element | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_element(cls, element: Element, *, hand_over: bool = False) -> Stanza:
        """Freeze an element whose `from` and `to` are set and valid.

        With `hand_over`, the caller gives up `element` (it must not touch it again): the first
        `take_element` returns it instead of parsing `data`.
        """
        return cls(
            kind=etree.QName(element).localname,
            type=element.get("type", ""),
            from_jid=JID.parse(element.get("from", "")),
            to_jid=JID.parse(element.get("to", "")),
            id=element.get("id"),
            data=serialize(element),
            _element=element if hand_over else None,
        )

    def element(self) -> Element:
        """A fresh, private element parsed from the bytes."""
        return etree.fromstring(self.data, _SAFE_PARSER)

    def take_element(self) -> Element:
        """A private element equal to the bytes: the handed-over one the first time (no parse;
        the chat message's path: session → recipient's account), a fresh parse after that."""
        element = self._element
        if element is None:
            return self.element()
        object.__setattr__(self, "_element", None)  # frozen: only this cache slot ever changes
        return element

    def readdressed(self, to_jid: JID) -> Stanza:
        el = self.element()
        el.set("to", str(to_jid))
        return Stanza(self.kind, self.type, self.from_jid, to_jid, self.id, serialize(el))


def make(kind: str, *, to: JID | str | None = None, from_: JID | str | None = None,
         type_: str | None = None, id_: str | None = None) -> Element:  # fmt: skip
    """A new empty stanza element in the jabber:client namespace."""
    element = etree.Element(qname(NS_CLIENT, kind), nsmap=default_ns(NS_CLIENT))
    if id_ is not None:
        element.set("id", id_)
    if type_ is not None:
        element.set("type", type_)
    if from_ is not None:
        element.set("from", str(from_))
    if to is not None:
        element.set("to", str(to))
    return element


def child(parent: Element, namespace: str, tag: str, text: str | None = None) -> Element:
    """Append `<tag xmlns=namespace>` to `parent` and return it."""
    nsmap = None if etree.QName(parent).namespace == namespace else default_ns(namespace)
    element = etree.SubElement(parent, qname(namespace, tag), nsmap=nsmap)
    if text is not None:
        element.text = text
    return element


def disco_identity(query: Element, category: str, kind: str, name: str | None = None) -> Element:
    """An XEP-0030 <identity/> in the disco#info `query`; `name` only when there is one."""
    identity = child(query, NS_DISCO_INFO, "identity")
    identity.set("category", category)
    identity.set("type", kind)
    if name:
        identity.set("name", name)
    return identity


def disco_items(query: Element, items: Iterable[tuple[str, str | None, str | None]]) -> None:
    """XEP-0030 <item/>s, each (jid, node, name), in the disco#items `query`."""
    for jid, node, name in items:
        item = child(query, NS_DISCO_ITEMS, "item")
        item.set("jid", jid)
        if node is not None:
            item.set("node", node)
        if name is not None:
            item.set("name", name)


def iq_result(request: Element, payload: Element | None = None) -> Element:
    """The result for an IQ get/set: addressed back to the requester, same id."""
    reply = make("iq", to=request.get("from"), from_=request.get("to"), type_="result", id_=request.get("id"))
    if payload is not None:
        reply.append(payload)
    return reply


def error_reply(stanza: Element, error: StanzaError, *, by: str | None = None) -> Element:
    """RFC 6120 §8.3.1: same kind and id, to/from swapped, type='error', one <error/> child.

    The original payload of an IQ is echoed, which §8.3.1 allows and clients use to match errors.
    """
    kind = etree.QName(stanza).localname
    reply = make(kind, to=stanza.get("from"), from_=stanza.get("to"), type_="error", id_=stanza.get("id"))
    if kind == "iq":
        for payload in stanza:
            reply.append(_copy(payload))
    err = etree.SubElement(reply, qname(NS_CLIENT, "error"))
    err.set("type", error.error_type)
    if by is not None:
        err.set("by", by)
    etree.SubElement(err, qname(NS_STANZA_ERRORS, error.condition), nsmap=default_ns(NS_STANZA_ERRORS))
    if error.text:
        text = etree.SubElement(err, qname(NS_STANZA_ERRORS, "text"), nsmap=default_ns(NS_STANZA_ERRORS))
        text.set("{http://www.w3.org/XML/1998/namespace}lang", "en")
        text.text = error.text
    if error.app_condition is not None:
        namespace, tag = error.app_condition
        etree.SubElement(err, qname(namespace, tag), nsmap=default_ns(namespace))
    if error.app_element is not None:
        err.append(_copy(error.app_element))
    return reply


def is_error_or_result(element: Element) -> bool:
    return element.get("type") in ("error", "result")


def serialize(element: Element) -> bytes:
    """The element as UTF-8 bytes, how everything a client sent must be written out again.

    Never lxml's default (ASCII): it writes a non-ASCII character of an element or attribute
    *name* as a character reference, "<b&#246;dy>", which is not XML (XML 1.0 §2.3 allows any
    letter in names; references are for content), so one client's extension would break every
    parser that reads it after us, our own included.
    """
    return etree.tostring(element, encoding="utf-8")


def parse(data: bytes) -> Element:
    """Parse bytes the server produced itself (stored stanzas, frames from peers)."""
    return etree.fromstring(data, _SAFE_PARSER)


def _copy(element: Element) -> Element:
    return etree.fromstring(serialize(element), _SAFE_PARSER)
