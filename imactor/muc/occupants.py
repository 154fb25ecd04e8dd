"""The occupants of a room: who is in it, under which nick, with which sessions and role.

One nick belongs to one bare JID, which may be present with several sessions (XEP-0045 §7.2.x,
multi-session nicks). The room shows one presence per nick, that of the session that spoke
last (`Occupant.current`), whose full JID is the one moderators see.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from lxml import etree

from imactor.xmpp.jid import JID, InvalidJID
from imactor.xmpp.namespaces import NS_MUC, NS_MUC_USER
from imactor.xmpp.stanza import Element, make

#: Payloads of a client's presence that the room does not pass on: the join request (with
#: its password), anything claiming to be the room's own muc#user data, and errors.
_DROPPED_NAMESPACES = frozenset({NS_MUC, NS_MUC_USER})


@dataclass
class Occupant:
    nick: str
    bare: JID
    role: str
    #: full JID → the payloads of its last available presence (a <presence/> with no
    #: addresses), oldest first: the last one is the current session.
    sessions: dict[JID, Element] = field(default_factory=dict)
    #: the other occupants were last sent an available presence of it (not so for a role whose
    #: presence the room does not broadcast: muc#roomconfig_presencebroadcast)
    shown: bool = False

    @property
    def current(self) -> JID:
        return next(reversed(self.sessions))

    def update(self, session: JID, presence: Element) -> None:
        """Record `session`'s presence and make it the current one."""
        self.sessions.pop(session, None)
        self.sessions[session] = presence


@dataclass(frozen=True)
class OccupantInfo:
    """What the actor may see of an occupant."""

    nick: str
    real_jids: tuple[JID, ...]
    role: str
    affiliation: str


def presence_payload(presence: Element) -> Element:
    """A private copy of what a client's presence says about itself (show, status, priority,
    caps, vCard hash ...), without addresses, type, id, and the payloads the room must not echo."""
    kept = make("presence")
    for child in presence.iterchildren(etree.Element):  # elements only (no comments)
        namespace = etree.QName(child).namespace
        if namespace in _DROPPED_NAMESPACES or etree.QName(child).localname == "error":
            continue
        copied = copy.deepcopy(child)
        copied.tail = None
        kept.append(copied)
    return kept


def nick_of(to: JID, raw_to: str) -> tuple[str | None, bool]:
    """The nick of an occupant JID, white space collapsed; and whether that changed what the
    client asked for (status 210). None when there is no nick or it is blank or invalid."""
    if to.resourcepart is None:
        return None, False
    nick = " ".join(to.resourcepart.split())
    if not nick:
        return None, False
    try:
        to.with_resource(nick)
    except InvalidJID:
        return None, False
    return nick, nick != raw_to.partition("/")[2]
