"""XEP-0352 client state, sans-IO: what an inactive client gets at once, what waits, in what order."""

from __future__ import annotations

from lxml import etree

from imactor.xmpp import csi
from imactor.xmpp.stanza import Stanza, parse

J = "xmlns='jabber:client'"


def stanza(xml: str) -> Stanza:
    return Stanza.from_element(parse(xml.encode()))


def presence(sender: str, show: str = "") -> Stanza:
    body = f"<show>{show}</show>" if show else ""
    return stanza(f"<presence {J} from='{sender}' to='a@x/r'>{body}</presence>")


def chat(body: str = "", extra: str = "") -> Stanza:
    inner = f"<body>{body}</body>" if body else ""
    return stanza(f"<message {J} from='b@x/r' to='a@x/r' type='chat'>{inner}{extra}</message>")


def nonza(tag: str) -> etree._Element:
    return etree.fromstring(f"<{tag} xmlns='urn:xmpp:csi:0'/>")


COMPOSING = "<composing xmlns='http://jabber.org/protocol/chatstates'/>"


def test_active_client_gets_everything_at_once() -> None:
    state = csi.ClientState()
    for item in (presence("b@x/r"), chat(extra=COMPOSING), chat("hi")):
        assert state.outbound(item) == [item.data]


def test_inactive_client_gets_held_stanzas_in_order_before_an_important_one() -> None:
    state = csi.ClientState()
    assert state.nonza(nonza("inactive")) == []
    first, typing, message = presence("b@x/r"), chat(extra=COMPOSING), chat("hello")
    assert state.outbound(first) == []
    assert state.outbound(typing) == []
    assert state.outbound(message) == [first.data, typing.data, message.data]
    assert state.held == 0


def test_newer_presence_from_the_same_jid_replaces_the_held_one() -> None:
    state = csi.ClientState()
    state.nonza(nonza("inactive"))
    old, other, new = presence("b@x/r", "away"), presence("c@x/r"), presence("b@x/r", "dnd")
    for item in (old, other, new):
        assert state.outbound(item) == []
    assert state.nonza(nonza("active")) == [other.data, new.data]
    assert not state.inactive


def test_urgent_stanzas() -> None:
    urgent = [
        stanza(f"<iq {J} type='get' id='1' from='x' to='a@x/r'><ping xmlns='urn:xmpp:ping'/></iq>"),
        stanza(f"<presence {J} type='subscribe' from='b@x' to='a@x'/>"),
        stanza(f"<message {J} type='error' from='b@x' to='a@x/r'/>"),
        chat("words"),
        chat(extra="<encrypted xmlns='eu.siacs.conversations.axolotl'><payload>eA==</payload></encrypted>"),
        chat(extra="<propose xmlns='urn:xmpp:jingle-message:0' id='c'/>"),
        stanza(
            f"<message {J} from='a@x' to='a@x/r'><received xmlns='urn:xmpp:carbons:2'>"
            "<forwarded xmlns='urn:xmpp:forward:0'><message xmlns='jabber:client'><body>b</body>"
            "</message></forwarded></received></message>"
        ),
    ]
    for item in urgent:
        assert csi.is_urgent(item), item.data
    lazy = [
        presence("b@x/r"),
        stanza(f"<presence {J} type='unavailable' from='b@x/r' to='a@x'/>"),
        chat(extra=COMPOSING),
        stanza(
            f"<message {J} from='a@x' to='a@x/r'><sent xmlns='urn:xmpp:carbons:2'>"
            "<forwarded xmlns='urn:xmpp:forward:0'><message xmlns='jabber:client'>"
            + COMPOSING
            + "</message></forwarded></sent></message>"
        ),
        stanza(
            f"<message {J} type='headline' from='b@x' to='a@x/r'>"
            "<event xmlns='http://jabber.org/protocol/pubsub#event'/></message>"
        ),
    ]
    for item in lazy:
        assert not csi.is_urgent(item), item.data


def test_a_full_queue_is_sent() -> None:
    state = csi.ClientState(max_held=2)
    state.nonza(nonza("inactive"))
    held = [chat(extra=COMPOSING) for _ in range(3)]
    assert state.outbound(held[0]) == []
    assert state.outbound(held[1]) == []
    assert state.outbound(held[2]) == [item.data for item in held]


def test_release_makes_the_client_active_again() -> None:
    state = csi.ClientState()
    state.nonza(nonza("inactive"))
    item = presence("b@x/r")
    state.outbound(item)
    assert state.release() == [item.data]
    assert not state.inactive
    assert state.outbound(item) == [item.data]
