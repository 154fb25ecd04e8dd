"""XEP-0115 entity capabilities in the protocol core: the server's own hash and checking a client's."""

from __future__ import annotations

import base64
import hashlib

from lxml import etree

from imactor.xmpp import caps

# XEP-0115 §5.2, the simple example: its ver is QgayPKawpkPSDYmwT/WM94uAlu0=
SIMPLE = """<query xmlns='http://jabber.org/protocol/disco#info'
  node='http://code.google.com/p/exodus#QgayPKawpkPSDYmwT/WM94uAlu0='>
  <identity category='client' name='Exodus 0.9.1' type='pc'/>
  <feature var='http://jabber.org/protocol/caps'/>
  <feature var='http://jabber.org/protocol/disco#info'/>
  <feature var='http://jabber.org/protocol/disco#items'/>
  <feature var='http://jabber.org/protocol/muc'/>
</query>"""

# XEP-0115 §5.3, the complex example (with an extended form): ver q07IKJEyjvHSyhy//CH0CxmKi8w=
COMPLEX = """<query xmlns='http://jabber.org/protocol/disco#info'
  node='http://psi-im.org#q07IKJEyjvHSyhy//CH0CxmKi8w='>
  <identity xml:lang='en' category='client' name='Psi 0.11' type='pc'/>
  <identity xml:lang='el' category='client' name='Ψ 0.11' type='pc'/>
  <feature var='http://jabber.org/protocol/caps'/>
  <feature var='http://jabber.org/protocol/disco#info'/>
  <feature var='http://jabber.org/protocol/disco#items'/>
  <feature var='http://jabber.org/protocol/muc'/>
  <x xmlns='jabber:x:data' type='result'>
    <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:dataforms:softwareinfo</value></field>
    <field var='ip_version'><value>ipv4</value><value>ipv6</value></field>
    <field var='os'><value>Mac</value></field>
    <field var='os_version'><value>10.5.1</value></field>
    <field var='software'><value>Psi</value></field>
    <field var='software_version'><value>0.11</value></field>
  </x>
</query>"""


def test_caps_verify_examples_of_the_xep() -> None:
    simple = caps.verify(etree.fromstring(SIMPLE), "sha-1", "QgayPKawpkPSDYmwT/WM94uAlu0=")
    assert simple is not None
    assert "http://jabber.org/protocol/muc" in simple
    complex_ = etree.fromstring(COMPLEX.encode())
    assert caps.verify(complex_, "sha-1", "q07IKJEyjvHSyhy//CH0CxmKi8w=") is not None


def test_caps_verify_refuses_mismatch_unknown_hash_and_duplicates() -> None:
    query = etree.fromstring(SIMPLE)
    assert caps.verify(query, "sha-1", "AAAA") is None
    assert caps.verify(query, "md4", "QgayPKawpkPSDYmwT/WM94uAlu0=") is None
    etree.SubElement(query, "{http://jabber.org/protocol/disco#info}feature").set(
        "var", "http://jabber.org/protocol/muc"
    )
    s = "client/pc//Exodus 0.9.1<" + "".join(f"{f}<" for f in sorted(
        ["http://jabber.org/protocol/caps", "http://jabber.org/protocol/disco#info",
         "http://jabber.org/protocol/disco#items", "http://jabber.org/protocol/muc",
         "http://jabber.org/protocol/muc"]))  # fmt: skip
    ver = base64.b64encode(hashlib.sha1(s.encode()).digest()).decode()
    assert caps.verify(query, "sha-1", ver) is None


def test_ver_of_the_simple_example_and_the_caps_element() -> None:
    """§5.2: the server's own hash is the same algorithm (identities without xml:lang)."""
    identities = [("client", "pc", "Exodus 0.9.1")]
    features = ["http://jabber.org/protocol/disco#info", "http://jabber.org/protocol/caps",
                "http://jabber.org/protocol/disco#items", "http://jabber.org/protocol/muc"]  # fmt: skip
    assert caps.ver(identities, features) == "QgayPKawpkPSDYmwT/WM94uAlu0="
    element = etree.fromstring(caps.caps_element("https://example/caps", identities, features))
    assert element.tag == "{http://jabber.org/protocol/caps}c"
    assert dict(element.attrib) == {
        "hash": "sha-1", "node": "https://example/caps", "ver": "QgayPKawpkPSDYmwT/WM94uAlu0=",
    }  # fmt: skip


def test_disco_features_are_taken_as_they_are() -> None:
    assert "http://jabber.org/protocol/muc" in caps.disco_features(etree.fromstring(SIMPLE))
