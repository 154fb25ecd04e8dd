"""`Stanza`: the value actors pass around, and the element its maker may hand over."""

from __future__ import annotations

from lxml import etree

from imactor.xmpp import stanza as st
from imactor.xmpp.stanza import Stanza


def message() -> st.Element:
    element = st.make("message", to="bob@localhost", from_="alice@localhost/phone", type_="chat", id_="m1")
    st.child(element, "jabber:client", "body", "hi")
    return element


def test_a_handed_over_element_is_taken_once_then_parsed() -> None:
    element = message()
    stanza = Stanza.from_element(element, hand_over=True)
    taken = stanza.take_element()
    assert taken is element  # no parse for the first taker
    assert stanza.take_element() is not element  # then a private parse of the bytes
    taken.set("id", "changed")  # the taker owns it: the value's bytes do not change
    assert b"id=\"m1\"" in stanza.data
    assert etree.tostring(stanza.take_element()) == stanza.data


def test_without_hand_over_every_take_parses() -> None:
    element = message()
    stanza = Stanza.from_element(element)
    first, second = stanza.take_element(), stanza.take_element()
    assert first is not element
    assert second is not element
    assert first is not second
    assert etree.tostring(first) == etree.tostring(second) == stanza.data


def test_the_handed_over_element_takes_no_part_in_equality() -> None:
    handed = Stanza.from_element(message(), hand_over=True)
    plain = Stanza.from_element(message())
    assert handed == plain
    assert "_element" not in repr(handed)


# Found by the BOSH fuzzer: lxml serializes to ASCII by default and writes a non-ASCII character
# of an element or attribute *name* as a character reference, "<b&#246;dy>", which is not XML.
# Names may hold any letter (XML 1.0 §2.3), so a client's extension could break every recipient's
# stream, and an offline or archived copy each of its later logins.
UNICODE_NAMES = (
    "<message xmlns='jabber:client' from='a@localhost/r' to='b@localhost' id='u1'>"
    "<bödy xmlns='urn:example:names' ä='1'>hé</bödy></message>"
)


def test_stanzas_with_non_ascii_names_serialize_to_xml() -> None:
    element = etree.fromstring(UNICODE_NAMES)
    stanza = Stanza.from_element(element)
    for data in (stanza.data, stanza.readdressed(stanza.to_jid).data, st.serialize(element)):
        again = etree.fromstring(data)
        (child,) = again
        assert child.tag == "{urn:example:names}bödy"
        assert child.get("ä") == "1"
        assert child.text == "hé"
    assert st.parse(stanza.data).find("{urn:example:names}bödy") is not None


def test_an_error_reply_echoes_a_payload_with_non_ascii_names() -> None:
    iq = etree.fromstring(
        "<iq xmlns='jabber:client' type='get' id='q1' from='a@localhost/r'>"
        "<qüery xmlns='urn:example:names'/></iq>"
    )
    reply = st.error_reply(iq, st.StanzaError("service-unavailable"))
    assert etree.fromstring(st.serialize(reply)).find("{urn:example:names}qüery") is not None
