"""XEP-0004 data forms: reading submitted forms and building the ones the server offers.

Sans-IO and shared by every feature that configures something with a form (room configuration,
pubsub node configuration and publish-options, search, archive queries). A form is read into a
`SubmittedForm` (its type, its FORM_TYPE and each field's values as strings); typed accessors
check the values against XEP-0004 §3.3 and raise `FormError`, which handlers turn into the
`bad-request` (or `not-acceptable`) their XEP asks for.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from lxml import etree

from imactor.xmpp.namespaces import NS_DATA_FORMS, qname
from imactor.xmpp.stanza import Element, child

FORM = qname(NS_DATA_FORMS, "x")
_FIELD = qname(NS_DATA_FORMS, "field")
_VALUE = qname(NS_DATA_FORMS, "value")

_TRUE = frozenset({"1", "true"})
_FALSE = frozenset({"0", "false"})


class FormError(ValueError):
    """A submitted form that breaks XEP-0004 or the form's own rules; the text names the field."""


@dataclass(frozen=True)
class SubmittedForm:
    """A form as a client sent it: `values[var]` holds every <value/> of the field, in order."""

    type: str  #: "submit", "cancel", "form" or "result"
    values: Mapping[str, tuple[str, ...]]

    @property
    def form_type(self) -> str | None:
        """The hidden FORM_TYPE field (XEP-0068), which names the form's vocabulary."""
        found = self.values.get("FORM_TYPE")
        return found[0] if found else None

    def __contains__(self, var: str) -> bool:
        return var in self.values

    def text(self, var: str, default: str | None = None) -> str | None:
        """A text-single or list-single value (the first, if a client sent several)."""
        found = self.values.get(var)
        return found[0] if found else default

    def texts(self, var: str) -> tuple[str, ...]:
        """Every value of a -multi field (empty when absent)."""
        return self.values.get(var, ())

    def boolean(self, var: str, default: bool | None = None) -> bool | None:
        """XEP-0004 §3.3 boolean: "1"/"true" or "0"/"false"; anything else is an error."""
        value = self.text(var)
        if value is None:
            return default
        if value.strip().lower() in _TRUE:
            return True
        if value.strip().lower() in _FALSE:
            return False
        raise FormError(f"field {var!r}: {value!r} is not a boolean")

    def integer(self, var: str, default: int | None = None, *, minimum: int | None = None,
                maximum: int | None = None) -> int | None:  # fmt: skip
        """An integer value, optionally bounded; "none"/"" count as absent (MUC max users)."""
        value = self.text(var)
        if value is None or value.strip() in ("", "none"):
            return default
        try:
            number = int(value.strip())
        except ValueError:
            raise FormError(f"field {var!r}: {value!r} is not an integer") from None
        if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
            raise FormError(f"field {var!r}: {number} is out of range")
        return number

    def choice(self, var: str, options: Iterable[str], default: str | None = None) -> str | None:
        """A list-single value that must be one of `options`."""
        value = self.text(var)
        if value is None:
            return default
        allowed = tuple(options)
        if value not in allowed:
            raise FormError(f"field {var!r}: {value!r} is not one of {', '.join(allowed)}")
        return value


def find_form(parent: Element, form_type: str | None = None) -> Element | None:
    """The first data form child of `parent` (with that FORM_TYPE, when one is given)."""
    for form in parent.iterchildren(FORM):
        if form_type is None or parse(form).form_type == form_type:
            return form
    return None


def parse(form: Element) -> SubmittedForm:
    """Read a <x xmlns='jabber:x:data'/> element.

    Raises:
        FormError: a field without `var` (except fixed fields), or a form of an unknown type.
    """
    form_type = form.get("type", "")
    if form_type not in ("submit", "cancel", "form", "result"):
        raise FormError(f"form type {form_type!r} is not submit, cancel, form or result")
    values: dict[str, tuple[str, ...]] = {}
    for field_element in form.iterchildren(_FIELD):
        var = field_element.get("var")
        if var is None:
            if field_element.get("type") == "fixed":
                continue
            raise FormError("a field has no var")
        values[var] = tuple((value.text or "") for value in field_element.iterchildren(_VALUE))
    return SubmittedForm(form_type, values)


@dataclass(frozen=True)
class Field:
    """One field of a form the server offers (or of a result it reports)."""

    var: str
    type: str = "text-single"  #: XEP-0004 §3.3 field types
    label: str | None = None
    values: Sequence[str] = ()
    options: Sequence[tuple[str, str]] = ()  #: (label, value) for list-single/list-multi
    required: bool = False
    extra: Mapping[str, str] = field(default_factory=dict)  #: other attributes, rarely needed


def boolean_value(flag: bool) -> str:
    return "1" if flag else "0"


def build(parent: Element, form_type: str, fields: Sequence[Field], *, namespace: str | None = None,
          title: str | None = None, instructions: str | None = None) -> Element:  # fmt: skip
    """Append a form of `form_type` ("form", "result", "submit") to `parent` and return it.

    `namespace`: the value of a hidden FORM_TYPE field, placed first as XEP-0068 asks.
    """
    form = child(parent, NS_DATA_FORMS, "x")
    form.set("type", form_type)
    if title is not None:
        child(form, NS_DATA_FORMS, "title", title)
    if instructions is not None:
        child(form, NS_DATA_FORMS, "instructions", instructions)
    if namespace is not None:
        _field_element(form, Field("FORM_TYPE", "hidden", values=(namespace,)))
    for spec in fields:
        _field_element(form, spec)
    return form


def _field_element(form: Element, spec: Field) -> Element:
    element = etree.SubElement(form, _FIELD)
    element.set("var", spec.var)
    if spec.type:
        element.set("type", spec.type)
    if spec.label is not None:
        element.set("label", spec.label)
    for name, value in spec.extra.items():
        element.set(name, value)
    if spec.required:
        etree.SubElement(element, qname(NS_DATA_FORMS, "required"))
    for value in spec.values:
        etree.SubElement(element, _VALUE).text = value
    for label, value in spec.options:
        option = etree.SubElement(element, qname(NS_DATA_FORMS, "option"))
        option.set("label", label)
        etree.SubElement(option, _VALUE).text = value
    return element
