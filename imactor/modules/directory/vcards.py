"""vCards (XEP-0054) of directory members, filled from the directory.

A member who has not set a field of their own vCard gets the directory's: FN (the display name),
ORG (ORGNAME: the top department; one ORGUNIT per department below it, down to theirs), TITLE,
EMAIL (WORK, INTERNET, USERID) and TEL (WORK, VOICE, NUMBER). What the member set is never
changed, and nothing is stored: the directory stays the one source, and a member's own vCard
wins field by field. An empty field (a person without a phone) adds nothing.
"""

from __future__ import annotations

from imactor.directory.org import Directory, Person
from imactor.xmpp import stanza as st
from imactor.xmpp.namespaces import NS_VCARD, qname


def fill(vcard: st.Element, person: Person, directory: Directory) -> None:
    """Add to `vcard` (a <vCard/> element) the directory's fields it lacks."""
    if _missing(vcard, "FN") and person.name:
        st.child(vcard, NS_VCARD, "FN", person.name)
    departments = [d.name for d in reversed(directory.ancestors(person.department))]
    if _missing(vcard, "ORG") and departments:
        org = st.child(vcard, NS_VCARD, "ORG")
        st.child(org, NS_VCARD, "ORGNAME", departments[0])
        for unit in departments[1:]:
            st.child(org, NS_VCARD, "ORGUNIT", unit)
    if _missing(vcard, "TITLE") and person.title:
        st.child(vcard, NS_VCARD, "TITLE", person.title)
    if _missing(vcard, "EMAIL") and person.email:
        email = st.child(vcard, NS_VCARD, "EMAIL")
        for kind in ("WORK", "INTERNET"):
            st.child(email, NS_VCARD, kind)
        st.child(email, NS_VCARD, "USERID", person.email)
    if _missing(vcard, "TEL") and person.phone:
        tel = st.child(vcard, NS_VCARD, "TEL")
        for kind in ("WORK", "VOICE"):
            st.child(tel, NS_VCARD, kind)
        st.child(tel, NS_VCARD, "NUMBER", person.phone)


def _missing(vcard: st.Element, tag: str) -> bool:
    """No such field, or only empty ones (clients send <FN/> for a name left blank), which are
    removed so that the directory's takes their place."""
    fields = list(vcard.iterchildren(qname(NS_VCARD, tag)))
    if any("".join(str(text) for text in field.itertext()).strip() for field in fields):
        return False
    for field in fields:
        vcard.remove(field)
    return True
