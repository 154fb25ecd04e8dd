"""A room's broadcast template gets each recipient's `to` spliced into its bytes."""

from __future__ import annotations

from lxml import etree

from imactor.rooms.fanout import addressed
from imactor.xmpp import stanza as st
from imactor.xmpp.jid import JID
from imactor.xmpp.stanza import Stanza

ROOM = JID.parse("room@conference.example.com")


def template(kind: str) -> Stanza:
    element = st.make(
        kind, from_=ROOM.with_resource("nick"), type_="groupchat" if kind == "message" else None
    )
    st.child(element, "jabber:client", "body" if kind == "message" else "status", "a < b & 'c'")
    return Stanza(
        kind, element.get("type", ""), ROOM.with_resource("nick"), ROOM, None, st.serialize(element)
    )


def test_the_copy_parses_with_its_recipient_and_everything_else_unchanged() -> None:
    for kind in ("message", "presence", "iq"):
        original = template(kind)
        # A resource may hold any character, quotes and ampersands too: the attribute is escaped.
        recipient = JID.parse("bob@example.com/laptop \"x\" & 'y' <z>")
        copy = addressed(original, recipient)
        element = etree.fromstring(copy.data)
        assert element.get("to") == str(recipient)
        assert copy.to_jid == recipient
        assert element.get("from") == str(ROOM.with_resource("nick"))
        del element.attrib["to"]
        assert etree.tostring(element) == etree.tostring(etree.fromstring(original.data))
