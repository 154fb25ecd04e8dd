"""Registering with a room (XEP-0045 §7.10): `jabber:iq:register` on the room's bare JID.

A get returns the muc#register form, or `<registered/>` with the reserved nick when the user
already registered. A submitted form reserves `muc#register_roomnick` for the sender's bare JID
(stored with the affiliation, so in the room's `RoomState`: it survives restarts and the room's
moves between workers) and makes an unaffiliated user a member; `<remove/>` cancels it.

Policy, where the XEP leaves it to the service:
- Anyone but an outcast may register with an open room. In a members-only room only users who
  already hold an affiliation may (to reserve a nick), unless the owner opened registration
  (`RoomConfig.allow_registration`, x-muc#roomconfig_registration): then registering is how one
  becomes a member. Everyone else gets `not-allowed`.
- Registration is immediate (no approval by an admin), and only the nick is kept: the other
  muc#register fields (names, URL, e-mail, FAQ) are accepted and dropped.
- One registration per bare JID: a second one with another nick is `conflict` (unregister
  first); the same nick again is a no-op. A nick reserved by someone else, or used in the room
  right now by someone else, is `conflict`.
- Unregistering frees the nick; a member loses the membership (registration is what made it,
  or what it amounts to), while admins and owners keep their affiliation.
- The reserved nick is enforced on entering and on nick changes (`occupancy`), but a registered
  user may still enter under another nick.
"""

from __future__ import annotations

from typing import Protocol

from lxml import etree

from imactor.muc.admin import Occupants as AdminOccupants
from imactor.muc.admin import apply_affiliation
from imactor.muc.core import RoomCore
from imactor.muc.occupants import Occupant, nick_of
from imactor.muc.stanzas import result
from imactor.xmpp import dataforms, stanza
from imactor.xmpp.dataforms import Field, FormError
from imactor.xmpp.errors import StanzaError
from imactor.xmpp.jid import JID, InvalidJID
from imactor.xmpp.namespaces import NS_REGISTER, qname
from imactor.xmpp.stanza import Element

NS_MUC_REGISTER = "http://jabber.org/protocol/muc#register"
ROOMNICK = "muc#register_roomnick"
_REMOVE = qname(NS_REGISTER, "remove")


class Occupants(AdminOccupants, Protocol):
    """What registration needs of the room's occupants (`occupancy.Occupancy`)."""

    def occupant(self, nick: str) -> Occupant | None: ...


def register_iq(core: RoomCore, occupants: Occupants, request: Element, query: Element, sender: JID) -> None:
    """A `jabber:iq:register` get or set on the room (which exists)."""
    bare = str(sender.bare)
    entry = core.st.affiliations.get(bare)
    registered = entry.nick if entry is not None else ""
    if request.get("type") == "get":
        _may_register(core, sender)
        core.emit(_form_reply(request, registered), [sender])
        return
    if query.find(_REMOVE) is not None:
        _unregister(core, occupants, bare, registered)
    else:
        _may_register(core, sender)
        nick = _submitted_nick(query)
        if registered and registered != nick:
            raise StanzaError("conflict", f"you are registered as {registered!r}: unregister first")
        if not registered:
            _reserve(core, occupants, sender, nick)
    core.emit(result(request), [sender])


def _may_register(core: RoomCore, sender: JID) -> None:
    affiliation = core.affiliation(sender.bare)
    if affiliation == "outcast":
        raise StanzaError("not-allowed", "you are banned from this room")
    config = core.st.config
    if affiliation == "none" and config.members_only and not config.allow_registration:
        raise StanzaError("not-allowed", "the members of this room are chosen by its admins")


def _form_reply(request: Element, registered: str) -> Element:
    reply = result(request)
    query = stanza.child(reply, NS_REGISTER, "query")
    if registered:  # XEP-0045 §7.10, XEP-0077 §3.1: already registered, with this nick
        stanza.child(query, NS_REGISTER, "registered")
        stanza.child(query, NS_REGISTER, "username").text = registered
        return reply
    stanza.child(
        query, NS_REGISTER, "instructions"
    ).text = "Reserve a nickname in this room: nobody else may use it here."
    fields = [
        Field("muc#register_first", "text-single", "Given name"),
        Field("muc#register_last", "text-single", "Family name"),
        Field(ROOMNICK, "text-single", "Desired nickname", required=True),
        Field("muc#register_url", "text-single", "Your URL"),
        Field("muc#register_email", "text-single", "Email address"),
        Field("muc#register_faqentry", "text-multi", "FAQ entry"),
    ]
    dataforms.build(query, "form", fields, namespace=NS_MUC_REGISTER, title="Room registration")
    return reply


def _submitted_nick(query: Element) -> str:
    """The nick of a submitted muc#register form; `bad-request` when there is no valid form."""
    element = dataforms.find_form(query)
    if element is None:
        raise StanzaError("bad-request", "submit the muc#register form")
    try:
        form = dataforms.parse(element)
    except FormError as exc:
        raise StanzaError("bad-request", str(exc)) from None
    if form.type != "submit" or form.form_type not in (None, NS_MUC_REGISTER):
        raise StanzaError("bad-request", "submit the muc#register form")
    wanted = form.text(ROOMNICK) or ""
    try:  # a nick is a resourcepart of an occupant JID, white space collapsed as on entering
        nick, _ = nick_of(JID.parse(f"room@example.invalid/{wanted.strip()}"), "")
    except InvalidJID:
        nick = None
    if nick is None:
        raise StanzaError("not-acceptable", f"{ROOMNICK}: {wanted!r} is not a valid nickname")
    return nick


def _reserve(core: RoomCore, occupants: Occupants, sender: JID, nick: str) -> None:
    bare = str(sender.bare)
    holder = core.st.nick_owner(nick)
    if holder is not None and holder != bare:
        raise StanzaError("conflict", "this nickname is reserved by someone else")
    in_room = occupants.occupant(nick)
    if in_room is not None and str(in_room.bare) != bare:
        raise StanzaError("conflict", "someone else in the room uses this nickname")
    if core.st.affiliation_of(bare) == "none":
        # §7.10: the service may make the registrant a member at once (and tells the room)
        apply_affiliation(core, occupants, bare, "member", None, None)
    core.st.affiliations[bare].nick = nick
    core.changed()


def _unregister(core: RoomCore, occupants: Occupants, bare: str, registered: str) -> None:
    if not registered:
        raise StanzaError("item-not-found", "you are not registered with this room")
    core.st.affiliations[bare].nick = ""
    core.changed()
    if core.st.affiliation_of(bare) == "member":
        apply_affiliation(core, occupants, bare, "none", None, None)


def is_register(payload: Element) -> bool:
    return etree.QName(payload).namespace == NS_REGISTER and etree.QName(payload).localname == "query"
