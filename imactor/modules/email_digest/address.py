"""Where a digest goes and how senders are named: the company directory, else the vCard."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from imactor.directory.org import Person
from imactor.storage import Storage
from imactor.xmpp import stanza as st
from imactor.xmpp.namespaces import NS_VCARD, qname

#: The addresses mailed to: an ASCII dot-atom addr-spec (RFC 5322 §3.4.1) with a dotted domain.
#: Stricter than the directory's check: a value with a comma or quotes could name a second
#: recipient or break the To header, so such an address counts as none.
ADDRESS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
                     r"@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+")


async def recipient(storage: Storage, username: str) -> tuple[str, str]:
    """(address, display name) for `username`'s digests: the directory's person, else the vCard;
    ("", "") when neither has an address."""
    person = await _person(storage, username)
    if person is not None and ADDRESS.fullmatch(person.email):
        return person.email, person.name
    stored = await storage.vcards.get(username)
    if stored is None:
        return "", person.name if person else ""
    try:
        vcard = st.parse(stored)
    except ValueError:
        return "", ""
    name = person.name if person else (vcard.findtext(qname(NS_VCARD, "FN")) or "").strip()
    for email in vcard.iter(qname(NS_VCARD, "EMAIL")):
        address = (email.findtext(qname(NS_VCARD, "USERID")) or "").strip()
        if ADDRESS.fullmatch(address):
            return address, name
    return "", name


@dataclass
class _People:
    """The directory's people by username, re-read when its change counter moves."""

    storage: Storage | None = None
    version: int = -1
    people: dict[str, Person] = field(default_factory=dict)


_PEOPLE = _People()


async def _people(storage: Storage) -> dict[str, Person]:
    global _PEOPLE
    if _PEOPLE.storage is not storage:  # another database (a test's second server in one process)
        _PEOPLE = _People(storage)
    version = await storage.org.version()
    if version != _PEOPLE.version:
        version, org = await storage.org.load()
        _PEOPLE.version, _PEOPLE.people = version, {p.username: p for p in org.people}
    return _PEOPLE.people


async def _person(storage: Storage, username: str) -> Person | None:
    return (await _people(storage)).get(username)


async def names(storage: Storage, domain: str) -> dict[str, str]:
    """Display names of the directory's people, by bare JID."""
    return {f"{p.username}@{domain}": p.name for p in (await _people(storage)).values() if p.name}
