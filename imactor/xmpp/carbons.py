"""XEP-0280 Message Carbons and the XEP-0334 hints, sans-IO: which messages are copied, and how.

Eligibility follows the rules XEP-0280 §6 suggests: a message of type chat, or of type normal
with a body or an instant-messaging payload (receipts, chat markers, chat states, end-to-end
encrypted content); never groupchat, headline or error, nor a private message of a MUC
occupant. A message with <private xmlns='urn:xmpp:carbons:2'/> (§7) or the XEP-0334
<no-copy/> hint is not copied at all.
"""

from __future__ import annotations

from typing import Literal

from lxml import etree

from imactor.xmpp import stanza as st
from imactor.xmpp.jid import JID
from imactor.xmpp.namespaces import NS_CARBONS, NS_CLIENT, NS_FORWARD, NS_HINTS, qname

BODY = qname(NS_CLIENT, "body")
PRIVATE = qname(NS_CARBONS, "private")
NO_COPY = qname(NS_HINTS, "no-copy")
SENT = qname(NS_CARBONS, "sent")
RECEIVED = qname(NS_CARBONS, "received")
MUC_USER = qname("http://jabber.org/protocol/muc#user", "x")

#: Namespaces of payloads that make a type-normal message an instant message (§6).
IM_PAYLOADS = frozenset({
    "urn:xmpp:receipts",  # XEP-0184
    "urn:xmpp:chat-markers:0",  # XEP-0333
    "http://jabber.org/protocol/chatstates",  # XEP-0085
    "eu.siacs.conversations.axolotl",  # OMEMO (legacy)
    "urn:xmpp:omemo:2",  # OMEMO 2
    "urn:xmpp:openpgp:0",  # XEP-0373
    "jabber:x:encrypted",  # XEP-0027
})  # fmt: skip

Direction = Literal["sent", "received"]


def is_carbon(element: st.Element) -> bool:
    """The message wraps a carbon copy (<sent/> or <received/>)."""
    return any(child.tag in (SENT, RECEIVED) for child in element)


def eligible(element: st.Element) -> bool:
    """Whether a message is copied to the account's other carbons-enabled resources."""
    if etree.QName(element).localname != "message":
        return False
    kind = element.get("type", "normal")
    children = [child for child in element if isinstance(child.tag, str)]
    tags = {child.tag for child in children}
    if PRIVATE in tags or NO_COPY in tags or MUC_USER in tags:
        return False
    if SENT in tags or RECEIVED in tags:
        return False  # a copy is never copied again
    if kind == "chat":
        return True
    if kind != "normal":
        return False
    return BODY in tags or any(etree.QName(child).namespace in IM_PAYLOADS for child in children)


def wrap(direction: Direction, original: st.Element, account: JID, to: JID) -> st.Element:
    """§6 / §7: the copy for one resource, from the account's bare JID, keeping the type."""
    copy = st.make("message", from_=account, to=to, type_=original.get("type"))
    container = st.child(copy, NS_CARBONS, direction)
    forwarded = st.child(container, NS_FORWARD, "forwarded")
    forwarded.append(st.parse(st.serialize(original)))
    return copy
