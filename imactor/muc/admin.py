"""Administration of a room: muc#admin (roles, affiliations, lists), muc#owner (configuration,
destruction), and mediated invitations (XEP-0045 §7.8, §8-§10). Disco of the room: `disco`.

Permissions follow XEP-0045 §5 and the use cases: an action of a kind the actor may not do at all
is `forbidden`; an action on someone the actor may not touch (an occupant with a higher
affiliation, an admin or owner who is a moderator by affiliation) is `not-allowed`; leaving a
room without an owner is `conflict`. A muc#admin set with several items is checked whole before
any item is applied, so it succeeds or fails as one.

These functions take the room's `RoomCore` (state, affiliations, output) and its occupants
through `Occupants`, the few things administration does to them; nothing of the conversation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from lxml import etree

from imactor.muc.config_form import apply_submission, config_form
from imactor.muc.core import RoomCore
from imactor.muc.occupants import Occupant
from imactor.muc.stanzas import MUC_USER_X, result
from imactor.muc.state import AFFILIATION_RANK, AFFILIATIONS, ROLES
from imactor.xmpp import dataforms, stanza
from imactor.xmpp.dataforms import FormError
from imactor.xmpp.errors import StanzaError
from imactor.xmpp.jid import JID, InvalidJID
from imactor.xmpp.namespaces import (
    NS_CLIENT,
    NS_DATA_FORMS,
    NS_MUC_ADMIN,
    NS_MUC_OWNER,
    NS_MUC_USER,
    qname,
)
from imactor.xmpp.stanza import Element

_ITEM = qname(NS_MUC_ADMIN, "item")
_MODERATING = ("owner", "admin")
#: Invitations (and declines) that one message may carry.
MAX_INVITES = 20


class Occupants(Protocol):
    """What administration needs of the room's occupants (`occupancy.Occupancy`)."""

    def occupant(self, nick: str) -> Occupant | None: ...

    def occupant_of(self, session: JID) -> Occupant | None: ...

    def all(self) -> list[Occupant]: ...

    def sessions(self) -> list[JID]: ...

    def broadcast_presence(
        self, occ: Occupant, *, reason: str | None = None, actor: str | None = None
    ) -> None: ...

    def remove(self, occ: Occupant, codes: Sequence[str], *, reason: str | None = None,
               actor: str | None = None) -> None: ...  # fmt: skip

    def destroy_room(self, reason: str | None, alternate: JID | None) -> None: ...


# ---- invitations --------------------------------------------------------------------------------


def invitations(
    core: RoomCore, occupants: Occupants, element: Element, sender: JID, occ: Occupant | None
) -> None:
    """§7.8.2 mediated invitations (from occupants) and declines (from the invitees)."""
    x = element.find(MUC_USER_X)
    assert x is not None
    invites = x.findall(qname(NS_MUC_USER, "invite"))
    declines = x.findall(qname(NS_MUC_USER, "decline"))
    if not invites and not declines:
        raise StanzaError("bad-request", "nothing to do with this muc#user payload")
    if len(invites) + len(declines) > MAX_INVITES:  # one stanza must not become a flood
        raise StanzaError("policy-violation", f"at most {MAX_INVITES} invitations at once")
    state = core.st
    if invites:
        if occ is None:
            raise StanzaError("not-acceptable", "only occupants may invite")
        inviter = core.affiliation(sender.bare)
        if state.config.members_only and not (state.config.allow_invites or inviter in _MODERATING):
            raise StanzaError("forbidden", "only admins may invite to this room")
        targets = [
            (_jid(invite.get("to")), invite.findtext(qname(NS_MUC_USER, "reason"))) for invite in invites
        ]
        for invitee, reason in targets:
            if state.config.members_only and core.affiliation(invitee.bare) == "none":
                state.set_affiliation(str(invitee.bare), "member")
                core.changed()
            message = stanza.make("message", from_=str(core.jid), id_=element.get("id") or core.new_id())
            stanza.child(message, NS_CLIENT, "body", f"{sender.bare} invites you to the room {core.jid}")
            out_x = stanza.child(message, NS_MUC_USER, "x")
            invite = etree.SubElement(out_x, qname(NS_MUC_USER, "invite"))
            invite.set("from", str(sender))
            if reason:
                etree.SubElement(invite, qname(NS_MUC_USER, "reason")).text = reason
            if state.config.password:
                etree.SubElement(out_x, qname(NS_MUC_USER, "password")).text = state.config.password
            core.emit(message, [invitee])
    for decline in declines:
        inviter_jid = _jid(decline.get("to"))
        message = stanza.make("message", from_=str(core.jid), id_=element.get("id") or core.new_id())
        out_x = stanza.child(message, NS_MUC_USER, "x")
        out = etree.SubElement(out_x, qname(NS_MUC_USER, "decline"))
        out.set("from", str(sender.bare))
        reason = decline.findtext(qname(NS_MUC_USER, "reason"))
        if reason:
            etree.SubElement(out, qname(NS_MUC_USER, "reason")).text = reason
        core.emit(message, [inviter_jid])


def _jid(text: str | None) -> JID:
    try:
        return JID.parse(text or "")
    except InvalidJID:
        raise StanzaError("jid-malformed", f"{text!r} is not a JID") from None


# ---- muc#admin ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _RoleChange:
    target: Occupant
    role: str
    reason: str | None


@dataclass(frozen=True)
class _AffiliationChange:
    bare: str
    affiliation: str
    reason: str | None
    nick: str | None = None  #: a nick to reserve for it


def admin_iq(core: RoomCore, occupants: Occupants, request: Element, query: Element, sender: JID) -> None:
    items = query.findall(_ITEM)
    if not items:
        raise StanzaError("bad-request", "an <item/> is required")
    if request.get("type") == "get":
        core.emit(_list(core, occupants, request, items, sender), [sender])
        return
    actor = occupants.occupant_of(sender)
    changes = [_check(core, occupants, item, sender, actor) for item in items]
    owners = set(core.st.with_affiliation("owner"))
    for change in changes:
        if isinstance(change, _AffiliationChange):
            (owners.add if change.affiliation == "owner" else owners.discard)(change.bare)
    if not owners:
        raise StanzaError("conflict", "the room would have no owner left")
    actor_nick = actor.nick if actor is not None else None
    for change in changes:
        if isinstance(change, _RoleChange):
            _apply_role(occupants, change, actor_nick)
        else:
            apply_affiliation(core, occupants, change.bare, change.affiliation, change.reason, actor_nick)
            if change.nick is not None:
                core.st.affiliations[change.bare].nick = change.nick
    core.emit(result(request), [sender])


def _check(
    core: RoomCore, occupants: Occupants, item: Element, sender: JID, actor: Occupant | None
) -> _RoleChange | _AffiliationChange:
    """Validate one item of a muc#admin set; raise the error the XEP asks for."""
    reason = item.findtext(qname(NS_MUC_ADMIN, "reason"))
    actor_affiliation = core.affiliation(sender.bare)
    role, affiliation = item.get("role"), item.get("affiliation")
    if (role is None) == (affiliation is None):
        raise StanzaError("bad-request", "an item changes either a role or an affiliation")
    if role is not None:
        if role not in ROLES or item.get("nick") is None:
            raise StanzaError("bad-request", "a role change names a valid role and a nick")
        target = occupants.occupant(item.get("nick", ""))
        if target is None:
            raise StanzaError("item-not-found", "no occupant has this nickname")
        is_moderator = (actor is not None and actor.role == "moderator") or actor_affiliation in _MODERATING
        if not is_moderator:
            raise StanzaError("forbidden", "only moderators change roles")
        target_affiliation = core.affiliation(target.bare)
        above = AFFILIATION_RANK[target_affiliation] > AFFILIATION_RANK[actor_affiliation]
        if role == "moderator" and actor_affiliation not in _MODERATING:
            raise StanzaError("forbidden", "only admins and owners grant moderation")
        if role == "none" and above:  # §8.2: nobody is kicked by a lower affiliation
            raise StanzaError("not-allowed", "this occupant has a higher affiliation")
        if role in ("participant", "visitor"):
            if target_affiliation in _MODERATING:  # §8.4, §9.7: moderators by affiliation
                raise StanzaError("not-allowed", "admins and owners keep their voice and moderation")
            if target.role == "moderator" and actor_affiliation not in _MODERATING:
                raise StanzaError("forbidden", "only admins and owners revoke moderation")
            if role == "visitor" and above:
                raise StanzaError("not-allowed", "this occupant has a higher affiliation")
        return _RoleChange(target, role, reason)
    assert affiliation is not None
    if affiliation not in (*AFFILIATIONS, "none"):
        raise StanzaError("bad-request", f"unknown affiliation {affiliation!r}")
    if item.get("jid") is not None:
        bare = str(_jid(item.get("jid")).bare)
    else:
        holder = occupants.occupant(item.get("nick") or "")
        if holder is None:
            raise StanzaError("bad-request" if item.get("nick") is None else "item-not-found", "whose?")
        bare = str(holder.bare)
    if actor_affiliation not in _MODERATING:
        raise StanzaError("forbidden", "only admins and owners change affiliations")
    if affiliation == "outcast" and bare == str(sender.bare):
        raise StanzaError("conflict", "you cannot ban yourself")  # §9.1
    current = core.st.affiliation_of(bare)
    if actor_affiliation != "owner":
        if current in _MODERATING or bare in core.service.admins:
            raise StanzaError("not-allowed", "admins may not change admins or owners")
        if affiliation in _MODERATING:
            raise StanzaError("forbidden", "only owners grant admin or owner")
    nick = None
    if item.get("jid") is not None and item.get("nick") and affiliation in ("owner", "admin", "member"):
        nick = item.get("nick")  # §9.3: with a JID, the nick becomes the user's reserved nick
        holder_of_nick = core.st.nick_owner(nick or "")
        if holder_of_nick is not None and holder_of_nick != bare:
            raise StanzaError("conflict", "this nickname is reserved by someone else")
    return _AffiliationChange(bare, affiliation, reason, nick)


def _apply_role(occupants: Occupants, change: _RoleChange, actor: str | None) -> None:
    if change.role == "none":
        occupants.remove(change.target, ("307",), reason=change.reason, actor=actor)  # kicked
        return
    change.target.role = change.role
    occupants.broadcast_presence(change.target, reason=change.reason, actor=actor)


def apply_affiliation(
    core: RoomCore, occupants: Occupants, bare: str, affiliation: str, reason: str | None, actor: str | None
) -> None:
    """Store an affiliation and show its effect on the occupants who hold that bare JID."""
    core.st.set_affiliation(bare, affiliation, reason or "")
    core.changed()
    for occ in [o for o in occupants.all() if str(o.bare) == bare]:
        effective = core.affiliation(occ.bare)
        if effective == "outcast":
            occupants.remove(occ, ("301",), reason=reason, actor=actor)  # banned
        elif effective == "none" and core.st.config.members_only:
            occupants.remove(occ, ("321",), reason=reason, actor=actor)
        else:
            occ.role = core.default_role(effective)
            occupants.broadcast_presence(occ, reason=reason, actor=actor)


def _list(
    core: RoomCore, occupants: Occupants, request: Element, items: list[Element], sender: JID
) -> Element:
    """§9.5 and §8.5 lists: by affiliation (admins and owners) or by role (moderators)."""
    if len(items) != 1 or (items[0].get("role") is None) == (items[0].get("affiliation") is None):
        raise StanzaError("bad-request", "ask for one affiliation or one role")
    wanted_role, wanted_affiliation = items[0].get("role"), items[0].get("affiliation")
    actor_affiliation = core.affiliation(sender.bare)
    reply = result(request)
    query = stanza.child(reply, NS_MUC_ADMIN, "query")
    if wanted_affiliation is not None:
        if wanted_affiliation not in AFFILIATIONS:
            raise StanzaError("bad-request", f"no list of affiliation {wanted_affiliation!r}")
        if actor_affiliation not in _MODERATING:
            raise StanzaError("forbidden", "only admins and owners see affiliation lists")
        for bare in core.st.with_affiliation(wanted_affiliation):
            entry = core.st.affiliations[bare]
            item = etree.SubElement(query, _ITEM)
            item.set("affiliation", wanted_affiliation)
            item.set("jid", bare)
            if entry.nick:
                item.set("nick", entry.nick)
            if entry.reason:
                etree.SubElement(item, qname(NS_MUC_ADMIN, "reason")).text = entry.reason
        return reply
    actor = occupants.occupant_of(sender)
    if wanted_role not in ("moderator", "participant", "visitor"):
        raise StanzaError("bad-request", f"no list of role {wanted_role!r}")
    if not ((actor is not None and actor.role == "moderator") or actor_affiliation in _MODERATING):
        raise StanzaError("forbidden", "only moderators see role lists")
    for occ in occupants.all():
        if occ.role == wanted_role:
            item = etree.SubElement(query, _ITEM)
            item.set("nick", occ.nick)
            item.set("role", occ.role)
            item.set("affiliation", core.affiliation(occ.bare))
            item.set("jid", str(occ.current))
    return reply


# ---- muc#owner ----------------------------------------------------------------------------------


def owner_iq(core: RoomCore, occupants: Occupants, request: Element, query: Element, sender: JID) -> None:
    if core.affiliation(sender.bare) != "owner":
        raise StanzaError("forbidden", "only owners configure the room")
    children = [child for child in query if isinstance(child.tag, str)]
    if request.get("type") == "get":
        if children:
            raise StanzaError("bad-request", "a configuration request is an empty query")
        reply = result(request)
        answer = stanza.child(reply, NS_MUC_OWNER, "query")
        state = core.st
        config_form(answer, state.config, state.with_affiliation("owner"),
                                state.with_affiliation("admin"), core.service.max_occupants)  # fmt: skip
        core.emit(reply, [sender])
        return
    destroy = query.find(qname(NS_MUC_OWNER, "destroy"))
    if destroy is not None:
        alternate = _jid(destroy.get("jid")) if destroy.get("jid") else None
        occupants.destroy_room(destroy.findtext(qname(NS_MUC_OWNER, "reason")), alternate)
        core.emit(result(request), [sender])
        return
    form_element = query.find(qname(NS_DATA_FORMS, "x"))
    if form_element is None:
        raise StanzaError("bad-request", "submit a form or destroy the room")
    try:
        form = dataforms.parse(form_element)
    except FormError as exc:
        raise StanzaError("bad-request", str(exc)) from None
    if form.type == "cancel":
        if core.st.locked:  # §10.1.2: the creator gave up configuring the new room
            occupants.destroy_room(None, None)
        core.emit(result(request), [sender])
        return
    if form.type != "submit":
        raise StanzaError("bad-request", "the form must be submitted")
    _configure(core, occupants, form, sender)
    core.emit(result(request), [sender])


def _configure(core: RoomCore, occupants: Occupants, form: dataforms.SubmittedForm, sender: JID) -> None:
    state = core.st
    before = state.config
    submitted = apply_submission(form, before, core.service.max_occupants)
    was_locked = state.locked
    state.config = submitted.config
    state.locked = False
    core.changed()
    actor = occupants.occupant_of(sender)
    actor_nick = actor.nick if actor is not None else None
    for wanted, affiliation in ((submitted.owners, "owner"), (submitted.admins, "admin")):
        if wanted is None:
            continue
        for bare in state.with_affiliation(affiliation):
            if bare not in wanted and not (affiliation == "admin" and bare in (submitted.owners or ())):
                apply_affiliation(core, occupants, bare, "none", None, actor_nick)
        for bare in wanted:
            if state.affiliation_of(bare) != affiliation and not (
                affiliation == "admin" and bare in (submitted.owners or ())
            ):
                apply_affiliation(core, occupants, bare, affiliation, None, actor_nick)
    after = state.config
    if after.members_only and not before.members_only:
        for occ in [o for o in occupants.all() if core.affiliation(o.bare) == "none"]:
            occupants.remove(occ, ("322",))  # §9.x: removed because the room became members-only
    if was_locked:
        return
    # §10.2.1: a code per change of the room's privacy profile, 104 for any other change
    codes = []
    if after.enable_logging != before.enable_logging:
        codes.append("170" if after.enable_logging else "171")
    if after.whois != before.whois:
        codes.append("172" if after.is_non_anonymous else "173")
    if dataclasses.replace(after, enable_logging=before.enable_logging, whois=before.whois) != before:
        codes.insert(0, "104")
    if not codes:
        return
    notice = stanza.make("message", type_="groupchat", from_=str(core.jid), id_=core.new_id())
    x = stanza.child(notice, NS_MUC_USER, "x")
    for code in codes:
        etree.SubElement(x, qname(NS_MUC_USER, "status")).set("code", code)
    core.emit(notice, occupants.sessions())
