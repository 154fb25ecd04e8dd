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
