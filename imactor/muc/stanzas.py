"""Builders of the stanzas a room sends: the muc#user payload, error replies, delay stamps.

Every stanza the room emits has `from` set and no `to`: the actor addresses one copy to each
recipient (`Outgoing.recipients`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable
from datetime import UTC, datetime

from lxml import etree

from imactor.xmpp import stanza
from imactor.xmpp.errors import StanzaError
from imactor.xmpp.namespaces import NS_DELAY, NS_MUC, NS_MUC_USER, qname
from imactor.xmpp.stanza import Element

MUC_USER_X = qname(NS_MUC_USER, "x")
NS_OCCUPANT_ID = "urn:xmpp:occupant-id:0"
OCCUPANT_ID = qname(NS_OCCUPANT_ID, "occupant-id")


def occupant_id(key: bytes, room: str, bare: str) -> str:
    """XEP-0421 §4: a stable, opaque id of a real bare JID in one room (HMAC-SHA-256, 128 bits,
    base64url): the same every time the account joins, another in every other room."""
    digest = hmac.new(key, f"{room}\0{bare}".encode(), hashlib.sha256).digest()[:16]
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def mark_occupant(element: Element, occupant: str) -> None:
    """XEP-0421 §4: the room's own occupant id on a presence or message it sends on behalf of an
    occupant; any the client put there is removed first (§6: it could claim another's)."""
    for claimed in element.findall(OCCUPANT_ID):
        element.remove(claimed)
    stanza.child(element, NS_OCCUPANT_ID, "occupant-id").set("id", occupant)


def stamp(now: float) -> str:
    """XEP-0082 DateTime in UTC, with milliseconds."""
    moment = datetime.fromtimestamp(now, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_stamp(text: str) -> float | None:
    """A XEP-0082 DateTime as epoch seconds, or None when it is not one."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def muc_user(parent: Element, *, affiliation: str | None = None, role: str | None = None,
             jid: str | None = None, nick: str | None = None, codes: Iterable[str] = (),
             reason: str | None = None, actor: str | None = None) -> Element:  # fmt: skip
    """Append `<x xmlns='…muc#user'>` with one `<item/>` (when an affiliation or role is given)
    and the status codes, in the order of XEP-0045's examples (item first, then statuses)."""
    x = stanza.child(parent, NS_MUC_USER, "x")
    if affiliation is not None or role is not None:
        item = etree.SubElement(x, qname(NS_MUC_USER, "item"))
        if affiliation is not None:
            item.set("affiliation", affiliation)
        if role is not None:
            item.set("role", role)
        if jid is not None:
            item.set("jid", jid)
        if nick is not None:
            item.set("nick", nick)
        if actor is not None:
            etree.SubElement(item, qname(NS_MUC_USER, "actor")).set("nick", actor)
        if reason:
            etree.SubElement(item, qname(NS_MUC_USER, "reason")).text = reason
    for code in codes:
        etree.SubElement(x, qname(NS_MUC_USER, "status")).set("code", code)
    return x


def status_codes(element: Element) -> list[str]:
    """The muc#user status codes of a stanza, in order (for tests and the actor's logs)."""
    return [status.get("code", "") for status in element.iter(qname(NS_MUC_USER, "status"))]


def error(request: Element, condition: str, text: str = "") -> Element:
    """The error reply to `request`, from the address it was sent to, with no `to`."""
    return error_from(request, StanzaError(condition, text))


def error_from(request: Element, exc: StanzaError) -> Element:
    reply = stanza.error_reply(request, exc)
    if etree.QName(request).localname == "presence":
        # XEP-0045 §7.2 and §7.6 (every example of a refused entry or nick change): the error
        # carries an empty <x xmlns='http://jabber.org/protocol/muc'/> (not the password that
        # came in it). slixmpp tells a refused join by it, and waits out its timeout without.
        reply.insert(0, etree.Element(qname(NS_MUC, "x"), nsmap=stanza.default_ns(NS_MUC)))
    unaddress(reply)
    return reply


def result(request: Element, payload: Element | None = None) -> Element:
    """The IQ result to `request`, from the address it was sent to, with no `to`."""
    reply = stanza.iq_result(request, payload)
    unaddress(reply)
    return reply


def unaddress(element: Element) -> None:
    """Remove `to`: the actor addresses each copy."""
    if "to" in element.attrib:
        del element.attrib["to"]


def add_delay(element: Element, by: str, when: float) -> None:
    """XEP-0203: mark `element` as sent earlier (history replayed to a newcomer)."""
    delay = stanza.child(element, NS_DELAY, "delay")
    delay.set("from", by)
    delay.set("stamp", stamp(when))


def copy(element: Element) -> Element:
    """A deep copy: an element sent to an actor belongs to it, which may change it."""
    return stanza.parse(stanza.serialize(element))
