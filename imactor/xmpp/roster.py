"""RFC 6121 §2 roster items: the value shared by storage, the user actor and the roster module."""

from __future__ import annotations

from dataclasses import dataclass

from lxml import etree

from imactor.xmpp.namespaces import NS_ROSTER, qname
from imactor.xmpp.stanza import Element, default_ns


@dataclass(frozen=True, slots=True)
class RosterItem:
    """One roster item with its subscription state."""

    jid: str
    name: str | None = None
    subscription: str = "none"  # none | to | from | both ("remove" only in pushes)
    ask: bool = False  # we sent subscribe, awaiting answer ("pending out")
    pending_in: bool = False  # contact asked to subscribe to us, not yet answered
    approved: bool = False  # pre-approved (RFC 6121 §3.4)
    groups: tuple[str, ...] = ()
    #: The user has seen the item on their roster (`Roster` sets it when it stores a visible item):
    #: it stays there, whatever state the subscription takes, until the user removes it.
    listed: bool = False

    @property
    def is_visible(self) -> bool:
        """False for an item that only records an unanswered inbound request (§3.1.3): the
        contact asked, and the user never had them on the roster."""
        return self.listed or not (
            self.subscription == "none" and not self.ask and not self.approved and self.pending_in
            and self.name is None and not self.groups
        )  # fmt: skip


def item_element(item: RosterItem) -> Element:
    """The `<item/>` of a roster result or push (§2.1.2)."""
    entry = etree.Element(qname(NS_ROSTER, "item"), nsmap=default_ns(NS_ROSTER))
    entry.set("jid", item.jid)
    if item.name:
        entry.set("name", item.name)
    entry.set("subscription", item.subscription)
    if item.ask:
        entry.set("ask", "subscribe")
    if item.approved:
        entry.set("approved", "true")
    for group in item.groups:
        etree.SubElement(entry, qname(NS_ROSTER, "group")).text = group
    return entry
