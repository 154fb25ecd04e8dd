"""XEP-0004 data forms: reading submitted values with type checks, and building offered forms."""

from __future__ import annotations

import pytest
from lxml import etree

from imactor.xmpp import dataforms
from imactor.xmpp.dataforms import Field, FormError
from imactor.xmpp.namespaces import NS_DATA_FORMS
from imactor.xmpp.stanza import make

FORM = (
    "<x xmlns='jabber:x:data' type='submit'>"
    "<field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/muc#roomconfig</value></field>"
    "<field type='fixed'><value>a heading</value></field>"
    "<field var='persistent'><value>true</value></field>"
    "<field var='public'><value>0</value></field>"
    "<field var='max'><value>20</value></field>"
    "<field var='admins'><value>a@x</value><value>b@x</value></field>"
    "<field var='empty'/>"
    "</x>"
)


def test_values_are_read_with_their_types() -> None:
    form = dataforms.parse(etree.fromstring(FORM))
    assert form.type == "submit"
    assert form.form_type == "http://jabber.org/protocol/muc#roomconfig"
    assert form.boolean("persistent") is True
    assert form.boolean("public") is False
    assert form.boolean("missing", default=True) is True
    assert form.integer("max", minimum=1, maximum=100) == 20
    assert form.texts("admins") == ("a@x", "b@x")
    assert form.text("empty") is None
    assert "empty" in form
    assert form.choice("max", ["10", "20"]) == "20"


@pytest.mark.parametrize(
    ("check", "message"),
    [
        (lambda f: f.boolean("max"), "'max': '20' is not a boolean"),
        (lambda f: f.integer("persistent"), "is not an integer"),
        (lambda f: f.integer("max", maximum=10), "out of range"),
        (lambda f: f.choice("max", ["1", "2"]), "not one of 1, 2"),
    ],
)
def test_wrong_values_name_the_field(check, message) -> None:  # type: ignore[no-untyped-def]
    form = dataforms.parse(etree.fromstring(FORM))
    with pytest.raises(FormError, match=message):
        check(form)


def test_a_field_without_var_or_an_unknown_form_type_is_refused() -> None:
    with pytest.raises(FormError, match="no var"):
        dataforms.parse(etree.fromstring("<x xmlns='jabber:x:data' type='submit'><field/></x>"))
    with pytest.raises(FormError, match="form type"):
        dataforms.parse(etree.fromstring("<x xmlns='jabber:x:data' type='bogus'/>"))


def test_built_form_reads_back_and_puts_form_type_first() -> None:
    iq = make("iq", type_="result")
    built = dataforms.build(iq, "form", [
        Field("muc#roomconfig_persistentroom", "boolean", "Persistent", values=["1"]),
        Field("muc#roomconfig_whois", "list-single", values=["moderators"],
              options=[("Moderators", "moderators"), ("Anyone", "anyone")], required=True),
    ], namespace="http://jabber.org/protocol/muc#roomconfig", title="Configure")  # fmt: skip
    fields = built.findall(f"{{{NS_DATA_FORMS}}}field")
    assert fields[0].get("var") == "FORM_TYPE"
    assert fields[0].get("type") == "hidden"
    assert built.findtext(f"{{{NS_DATA_FORMS}}}title") == "Configure"
    assert fields[2].find(f"{{{NS_DATA_FORMS}}}required") is not None
    options = fields[2].findall(f"{{{NS_DATA_FORMS}}}option")
    assert [o.findtext(f"{{{NS_DATA_FORMS}}}value") for o in options] == ["moderators", "anyone"]
    found = dataforms.find_form(iq, "http://jabber.org/protocol/muc#roomconfig")
    assert found is built
    read = dataforms.parse(built)
    assert read.boolean("muc#roomconfig_persistentroom") is True
    assert dataforms.find_form(iq, "urn:other") is None
