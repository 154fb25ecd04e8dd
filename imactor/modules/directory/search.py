"""XEP-0055 Jabber Search over the directory: the form, the request, the results and their pages.

Pure functions of the request's payload and a `Directory`; the module's handlers call them.

- ``get`` (§2.1): the search fields, both as the old fixed fields (``first``, ``last``, ``nick``,
  ``email``: clients that predate forms) and as a XEP-0004 form (``FORM_TYPE``
  ``jabber:iq:search``; ``name``, ``department``, ``title``, ``email``).
- ``set`` (§2.2, §3): with a submitted form, the results as a form of type ``result`` with
  ``<reported/>`` and one ``<item/>`` per person (``jid``, ``name``, ``department``, ``title``,
  ``phone``, ``email``); with the fixed fields, ``<item jid=''>`` with ``first``, ``last``,
  ``nick``, ``email``. ``first`` and ``last`` search the name, ``nick`` the account name too.
- XEP-0059 result set management: ``<set><max/><after/>|<before/>|<index/></set>`` pages the
  results (ids: the people's bare JIDs); the answer carries ``<first index=''/>``, ``<last/>``
  and ``<count/>``. Without ``<set/>``, at most ``max_results`` people are returned.

Errors: a form field the directory does not know, a form of another FORM_TYPE or a malformed
``<set/>``: ``bad-request`` (RFC 6120 §8.3.3.1), naming the field; no criterion at all:
``not-acceptable`` (§8.3.3.9: the directory is not listed whole by a search).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lxml import etree

from imactor.directory.org import Directory, Person
from imactor.xmpp import dataforms
from imactor.xmpp import stanza as st
from imactor.xmpp.dataforms import Field, FormError
from imactor.xmpp.errors import StanzaError
from imactor.xmpp.namespaces import NS_DATA_FORMS, qname

NS_SEARCH = "jabber:iq:search"
NS_RSM = "http://jabber.org/protocol/rsm"
INSTRUCTIONS = "Find colleagues by name, department, title or e-mail (parts of words, * for anything)."
FORM_FIELDS = (
    Field("name", label="Name"),
    Field("department", label="Department"),
    Field("title", label="Title"),
    Field("email", label="E-mail"),
)
#: The old fixed fields of §2 and what each searches.
LEGACY_FIELDS = {"first": "name", "last": "name", "nick": "name", "email": "email"}
REPORTED = (("jid", "jid-single", "JID"), ("name", "text-single", "Name"),
            ("department", "text-single", "Department"), ("title", "text-single", "Title"),
            ("phone", "text-single", "Phone"), ("email", "text-single", "E-mail"))  # fmt: skip


def search_form(reply: st.Element) -> None:
    """Fill the empty result of a ``get`` (§2.1) into `reply`'s <query/>."""
    query = st.child(reply, NS_SEARCH, "query")
    st.child(query, NS_SEARCH, "instructions", INSTRUCTIONS)
    for legacy in LEGACY_FIELDS:
        st.child(query, NS_SEARCH, legacy)
    dataforms.build(query, "form", FORM_FIELDS, namespace=NS_SEARCH, title="Company directory",
                    instructions=INSTRUCTIONS)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Request:
    criteria: dict[str, str]  #: `imactor.directory.org.SEARCH_FIELDS` -> text
    with_form: bool  #: answer with a result form (else the fixed fields)


def read_request(query: st.Element) -> Request:
    """The criteria of a ``set``: from its form if it has one, else from the fixed fields.

    Raises:
        StanzaError: bad-request (unknown field, wrong FORM_TYPE), not-acceptable (no criterion).
    """
    form = query.find(qname(NS_DATA_FORMS, "x"))
    if form is not None:
        request = Request(_form_criteria(form), with_form=True)
    else:
        request = Request(_legacy_criteria(query), with_form=False)
    if not any(text.strip().strip("*").strip() for text in request.criteria.values()):
        raise StanzaError("not-acceptable", "give at least one search field")
    return request


def _form_criteria(form: st.Element) -> dict[str, str]:
    try:
        submitted = dataforms.parse(form)
    except FormError as exc:
        raise StanzaError("bad-request", str(exc)) from None
    if submitted.type != "submit":
        raise StanzaError("bad-request", f"expected a form of type submit, got {submitted.type!r}")
    if submitted.form_type not in (None, NS_SEARCH):
        raise StanzaError("bad-request", f"FORM_TYPE {submitted.form_type!r} is not {NS_SEARCH}")
    known = {spec.var for spec in FORM_FIELDS}
    criteria = {}
    for var in submitted.values:
        if var == "FORM_TYPE":
            continue
        if var not in known:
            expected = ", ".join(sorted(known))
            raise StanzaError("bad-request", f"unknown search field {var!r}: expected {expected}")
        criteria[var] = submitted.text(var) or ""
    return criteria


def _legacy_criteria(query: st.Element) -> dict[str, str]:
    criteria: dict[str, str] = {}
    for element in query.iterchildren("{*}*"):  # elements only: no comments
        qn = etree.QName(element)
        if qn.namespace == NS_RSM or (qn.namespace == NS_SEARCH and qn.localname == "instructions"):
            continue
        field = LEGACY_FIELDS.get(qn.localname) if qn.namespace == NS_SEARCH else None
        if field is None:
            raise StanzaError("bad-request", f"unknown search field <{qn.localname}/>")
        text = (element.text or "").strip()
        if text:  # first and last both search the name: "Alice" "Liu" -> "Alice*Liu"
            criteria[field] = f"{criteria[field]}*{text}" if field in criteria else text
    return criteria


# ---- paging (XEP-0059) ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Page:
    people: Sequence[Person]
    first_index: int
    count: int  #: of the whole result
    paged: bool  #: the request had <set/>: the answer gets one


def page(found: Sequence[Person], query: st.Element, domain: str, max_results: int) -> Page:
    """The page of `found` that the request's <set/> asks for (module docstring).

    Raises:
        StanzaError: bad-request for a malformed <set/>; item-not-found (XEP-0059 §2.5) for an
            <after/> or <before/> id that is not in the results.
    """
    rsm = query.find(qname(NS_RSM, "set"))
    if rsm is None:
        return Page(found[:max_results], 0, len(found), paged=False)
    limit = min(_number(rsm, "max", max_results), max_results)
    ids = [f"{person.username}@{domain}" for person in found]
    start = _number(rsm, "index", -1)
    after, before = rsm.find(qname(NS_RSM, "after")), rsm.find(qname(NS_RSM, "before"))
    if after is not None:
        start = _position(ids, after.text) + 1
    elif before is not None:
        end = _position(ids, before.text) if (before.text or "").strip() else len(ids)
        start = max(0, end - limit)
        return Page(found[start:end], start, len(found), paged=True)
    start = max(start, 0)
    return Page(found[start : start + limit], start, len(found), paged=True)


def _number(rsm: st.Element, tag: str, default: int) -> int:
    text = rsm.findtext(qname(NS_RSM, tag))
    if text is None:
        return default
    try:
        number = int(text.strip())
    except ValueError:
        number = -1
    if number < 0:
        raise StanzaError("bad-request", f"<{tag}/> must be a non-negative integer")
    return number


def _position(ids: list[str], text: str | None) -> int:
    try:
        return ids.index((text or "").strip())
    except ValueError:
        raise StanzaError("item-not-found", f"{text!r} is not in the results") from None


# ---- results ---------------------------------------------------------------------------------


def results(reply: st.Element, request: Request, found: Page, directory: Directory, domain: str) -> None:
    """Fill the result of a ``set`` into `reply`'s <query/>: a form or the fixed fields, then
    the page's <set/> if one was asked for."""
    query = st.child(reply, NS_SEARCH, "query")
    if request.with_form:
        _result_form(query, found.people, directory, domain)
    else:
        for person in found.people:
            item = st.child(query, NS_SEARCH, "item")
            item.set("jid", f"{person.username}@{domain}")
            first, _, last = person.name.partition(" ")
            st.child(item, NS_SEARCH, "first", first)
            st.child(item, NS_SEARCH, "last", last)
            st.child(item, NS_SEARCH, "nick", person.username)
            st.child(item, NS_SEARCH, "email", person.email)
    if found.paged:
        _rsm_answer(query, found, domain)


def _result_form(query: st.Element, people: Sequence[Person], directory: Directory, domain: str) -> None:
    form = dataforms.build(query, "result", (), namespace=NS_SEARCH)
    reported = st.child(form, NS_DATA_FORMS, "reported")
    for var, kind, label in REPORTED:
        field = st.child(reported, NS_DATA_FORMS, "field")
        field.set("var", var)
        field.set("type", kind)
        field.set("label", label)
    for person in people:
        item = st.child(form, NS_DATA_FORMS, "item")
        values = (f"{person.username}@{domain}", person.name, directory.path(person.department),
                  person.title, person.phone, person.email)  # fmt: skip
        for (var, _, _), value in zip(REPORTED, values, strict=True):
            field = st.child(item, NS_DATA_FORMS, "field")
            field.set("var", var)
            st.child(field, NS_DATA_FORMS, "value", value)


def _rsm_answer(query: st.Element, found: Page, domain: str) -> None:
    answer = st.child(query, NS_RSM, "set")
    if found.people:
        first = st.child(answer, NS_RSM, "first", f"{found.people[0].username}@{domain}")
        first.set("index", str(found.first_index))
        st.child(answer, NS_RSM, "last", f"{found.people[-1].username}@{domain}")
    st.child(answer, NS_RSM, "count", str(found.count))
