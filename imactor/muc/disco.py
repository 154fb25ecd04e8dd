"""Service discovery on a room (XEP-0045 §6.4-§6.5, §7.12): its identity, the features that
describe it and the muc#roominfo form; its occupants' nicks, to its occupants only; and the nick
a user reserved. Functions of the room's `RoomCore` and of `Occupants`, what they read of the
occupants.
"""

from __future__ import annotations

from typing import Protocol

from imactor.muc.config_form import room_info_form
from imactor.muc.core import RoomCore
from imactor.muc.occupants import Occupant
from imactor.muc.stanzas import NS_OCCUPANT_ID, result
from imactor.xmpp import stanza
from imactor.xmpp.errors import StanzaError
from imactor.xmpp.jid import JID
from imactor.xmpp.namespaces import (
    NS_DISCO_INFO,
    NS_DISCO_ITEMS,
    NS_MUC,
    NS_MUC_REQUEST,
    NS_REGISTER,
    NS_SID,
)
from imactor.xmpp.stanza import Element

NS_SELF_PING_OPTIMIZATION = "http://jabber.org/protocol/muc#self-ping-optimization"


class Occupants(Protocol):
    """What disco reads of the room's occupants (`occupancy.Occupancy`)."""

    def occupant_of(self, session: JID) -> Occupant | None: ...

    def all(self) -> list[Occupant]: ...

    def count(self) -> int: ...


def disco_info(
    core: RoomCore, occupants: Occupants, request: Element, query: Element, sender: JID
) -> Element:
    """XEP-0045 §6.4: identity, features that describe the room, and the muc#roominfo form."""
    reply = result(request)
    answer = stanza.child(reply, NS_DISCO_INFO, "query")
    node = query.get("node")
    if node is not None:
        answer.set("node", node)
    if node == "x-roomuser-item":  # §7.12: the nick this user reserved, if any
        reserved = core.st.affiliations.get(str(sender.bare))
        if reserved is not None and reserved.nick:
            _identity(answer, reserved.nick)
        return reply
    if node is not None:
        raise StanzaError("item-not-found", "no such node")
    config = core.st.config
    _identity(answer, config.name or (core.jid.localpart or ""))
    features = [
        NS_MUC, NS_DISCO_INFO, NS_DISCO_ITEMS, NS_MUC_REQUEST, NS_SID, NS_OCCUPANT_ID, NS_REGISTER,
        *core.service.room_features,
        NS_SELF_PING_OPTIMIZATION,
        "muc_public" if config.public else "muc_hidden",
        "muc_persistent" if config.persistent else "muc_temporary",
        "muc_membersonly" if config.members_only else "muc_open",
        "muc_moderated" if config.moderated else "muc_unmoderated",
        "muc_nonanonymous" if config.is_non_anonymous else "muc_semianonymous",
        "muc_passwordprotected" if config.password else "muc_unsecured",
    ]  # fmt: skip
    for var in features:
        stanza.child(answer, NS_DISCO_INFO, "feature").set("var", var)
    room_info_form(answer, config, core.st.subject, occupants.count())
    return reply


def _identity(query: Element, name: str) -> None:
    stanza.disco_identity(query, "conference", "text", name)


def disco_items(core: RoomCore, occupants: Occupants, request: Element, sender: JID) -> Element:
    """§6.5: the occupants of a public room, to its occupants only (nobody else learns nicks)."""
    reply = result(request)
    answer = stanza.child(reply, NS_DISCO_ITEMS, "query")
    if core.st.config.public and occupants.occupant_of(sender) is not None:
        for nick in [occ.nick for occ in occupants.all() if occ.shown]:  # not the ones kept hidden
            item = stanza.child(answer, NS_DISCO_ITEMS, "item")
            item.set("jid", core.occupant_jid(nick))
            item.set("name", nick)
    return reply
