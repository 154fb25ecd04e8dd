"""XEP-0352 Client State Indication, sans-IO: what an inactive client gets now, and what waits.

A stream starts active (§4.2); <inactive/> and <active/> switch it, and a resumed stream starts
active again (§5.2: the state is not restored). While the client is inactive, `ClientState`
holds back what it can wait for, in arrival order:

- presence of type available or unavailable (a newer presence from the same JID replaces the
  held one: only the latest state matters);
- messages with nothing a person reads: chat states, receipts and markers, pubsub events.

Everything else is *important* and goes out at once, after everything held before it, so the
client sees stanzas in the order they came: IQs (answers the client waits for), messages with a
body or a subject, end-to-end encrypted messages, carbon copies and archive results of such
messages, call invitations (XEP-0353), errors, and subscription requests. `max_held` bounds
the queue: when it is full, everything held goes out. <active/> releases everything.
"""

from __future__ import annotations

from lxml import etree

from imactor.xmpp.namespaces import NS_CARBONS, NS_CLIENT, NS_CSI, NS_FORWARD, qname
from imactor.xmpp.stanza import Element, Stanza, default_ns

ACTIVE = qname(NS_CSI, "active")
INACTIVE = qname(NS_CSI, "inactive")
NONZAS = frozenset({ACTIVE, INACTIVE})
#: The stream feature (§4.1).
FEATURE = etree.tostring(etree.Element(qname(NS_CSI, "csi"), nsmap=default_ns(NS_CSI)))

_READABLE = frozenset({qname(NS_CLIENT, "body"), qname(NS_CLIENT, "subject")})
#: Namespaces of payloads that make a message urgent although it has no body.
URGENT_NAMESPACES = frozenset({
    "eu.siacs.conversations.axolotl", "urn:xmpp:omemo:2", "urn:xmpp:openpgp:0", "jabber:x:encrypted",
    "urn:xmpp:jingle-message:0",  # XEP-0353 call invitations
})  # fmt: skip
#: Wrappers whose forwarded message decides (carbons; archive results are answers: urgent).
_WRAPPERS = (qname(NS_CARBONS, "sent"), qname(NS_CARBONS, "received"))
_ARCHIVE_RESULT = qname("urn:xmpp:mam:2", "result")
_FORWARDED_MESSAGE = f"{qname(NS_FORWARD, 'forwarded')}/{qname(NS_CLIENT, 'message')}"


def is_urgent(stanza: Stanza) -> bool:
    """Whether an inactive client gets this stanza now (module docstring)."""
    if stanza.kind == "iq" or stanza.type == "error":
        return True
    if stanza.kind == "presence":
        return stanza.type not in ("", "unavailable")  # subscriptions, probes: rare, wanted
    return _urgent_message(stanza.element())


def _urgent_message(element: Element) -> bool:
    for child in element:
        tag = child.tag
        if tag in _READABLE or tag == _ARCHIVE_RESULT:
            return True
        if tag in _WRAPPERS:
            inner = child.find(_FORWARDED_MESSAGE)
            if inner is not None and _urgent_message(inner):
                return True
            continue
        if etree.QName(tag).namespace in URGENT_NAMESPACES:
            return True
    return False


class ClientState:
    """One session's client state and held stanzas (a `SessionFilter`, see `server.modules`)."""

    def __init__(self, max_held: int = 100) -> None:
        self.max_held = max_held
        self.inactive = False
        #: Held stanzas in arrival order: (key, bytes); the key of a presence is its sender, so
        #: a newer one replaces it; other stanzas have no key (None).
        self._held: list[tuple[str | None, bytes]] = []

    @property
    def held(self) -> int:
        return len(self._held)

    def outbound(self, stanza: Stanza) -> list[bytes]:
        if not self.inactive:
            return [stanza.data]
        if is_urgent(stanza):
            return [*self.release_held(), stanza.data]
        key = None
        if stanza.kind == "presence":
            key = str(stanza.from_jid)
            self._held = [(k, data) for k, data in self._held if k != key]
        self._held.append((key, stanza.data))
        if len(self._held) > self.max_held:
            return self.release_held()
        return []

    def nonza(self, element: Element) -> list[bytes]:
        if element.tag == INACTIVE:
            self.inactive = True
            return []
        if element.tag == ACTIVE:
            self.inactive = False
            return self.release_held()
        return []

    def release(self) -> list[bytes]:
        """A new transport (resumption) or the end: active again, nothing held (§5.2)."""
        self.inactive = False
        return self.release_held()

    def release_held(self) -> list[bytes]:
        held, self._held = self._held, []
        return [data for _, data in held]
