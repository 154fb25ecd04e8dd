"""What occupants say in a room (XEP-0045 §7.4-§7.5, §7.13, §8.1): groupchat messages, the
subject, private messages between occupants, voice requests, and the welcome of a newcomer
(discussion history, then the subject, §7.2.15-§7.2.16).

`Conversation` works on the room's `RoomCore` and reaches the occupants through `Audience`, the
few things it needs of them; it owns the room's `History`. A message with a body and a subject
change are the room's messages to archive (`Outcome.archive`, when the room is logged), each
with the room's XEP-0359 stanza id.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from imactor.muc.core import RoomCore
from imactor.muc.history import History
from imactor.muc.occupants import Occupant, nick_of
from imactor.muc.stanzas import MUC_USER_X, copy, mark_occupant, unaddress
from imactor.muc.values import ArchiveItem
from imactor.xmpp import dataforms, stanza
from imactor.xmpp.dataforms import Field, FormError, SubmittedForm
from imactor.xmpp.errors import StanzaError
from imactor.xmpp.jid import JID
from imactor.xmpp.namespaces import NS_CLIENT, NS_MUC_REQUEST, NS_MUC_USER, NS_SID, qname
from imactor.xmpp.stanza import Element

_BODY = qname(NS_CLIENT, "body")
_SUBJECT = qname(NS_CLIENT, "subject")
_STANZA_ID = qname(NS_SID, "stanza-id")
#: muc_allowpm values and roles, by rank: who may send private messages (XEP-0045 §15.5.3).
_PM_RANKS = {"anyone": 0, "participants": 1, "moderators": 2, "none": 3}
_ROLE_RANKS = {"visitor": 0, "participant": 1, "moderator": 2}


class Audience(Protocol):
    """What the conversation needs of the room's occupants (`occupancy.Occupancy`)."""

    def occupant(self, nick: str) -> Occupant | None: ...

    def sessions(self) -> list[JID]: ...

    def moderator_sessions(self) -> list[JID]: ...

    def broadcast_presence(self, occ: Occupant, *, actor: str | None = None) -> None: ...


class Conversation:
    def __init__(self, core: RoomCore, audience: Audience, history: Iterable[ArchiveItem] = ()) -> None:
        self._core = core
        self._audience = audience
        self.history = History(core, history)

    def welcome(self, session: JID, wanted: Element | None) -> None:
        """A newcomer gets the history it asked for, then the subject (XEP-0045 §7.2.15-16)."""
        core = self._core
        for element in self.history.replay(wanted, core.now):
            core.emit(element, [session])
        subject = stanza.make("message", type_="groupchat", from_=self._subject_from())
        stanza.child(subject, NS_CLIENT, "subject", core.st.subject or None)
        core.emit(subject, [session])

    def _subject_from(self) -> str:
        by = self._core.st.subject_by
        return self._core.occupant_jid(by) if by else str(self._core.jid)

    def groupchat(self, element: Element, sender: JID, occ: Occupant | None) -> None:
        core = self._core
        if occ is None:
            raise StanzaError("not-acceptable", "you are not in this room")
        if occ.role == "visitor":
            raise StanzaError("forbidden", "visitors may not speak in a moderated room")
        is_subject = element.find(_SUBJECT) is not None and element.find(_BODY) is None
        if is_subject and occ.role != "moderator" and not core.st.config.change_subject:
            raise StanzaError("forbidden", "only moderators may change the subject")
        out = copy(element)
        unaddress(out)
        out.set("from", core.occupant_jid(occ.nick))
        mark_occupant(out, core.occupant_id(occ.bare))
        for claimed in out.findall(_STANZA_ID):
            if claimed.get("by") == str(core.jid):
                out.remove(claimed)  # only the room may claim its own ids (XEP-0359 §3)
        if is_subject:
            core.st.subject = out.findtext(_SUBJECT) or ""
            core.st.subject_by = occ.nick
            core.st.subject_stamp = core.now
            core.changed()
        archived = is_subject or out.find(_BODY) is not None
        stanza_id = core.new_id()
        if archived and core.st.config.enable_logging:
            tag = stanza.child(out, NS_SID, "stanza-id")
            tag.set("id", stanza_id)
            tag.set("by", str(core.jid))
        core.emit(out, self._audience.sessions())
        if archived:  # a copy: `out` belongs to the actor once emitted
            item = ArchiveItem(stanza_id, core.now, occ.nick, sender, copy(out))
            if core.st.config.enable_logging:
                core.archive(item)
            if not is_subject:
                self.history.append(item)

    def private_message(self, element: Element, occ: Occupant | None, to: JID) -> None:
        core = self._core
        if occ is None:
            raise StanzaError("not-acceptable", "you are not in this room")
        if element.get("type") == "groupchat":
            raise StanzaError("bad-request", "groupchat messages go to the room")
        nick, _ = nick_of(to, element.get("to", ""))
        target = self._audience.occupant(nick or "")
        if target is None:
            raise StanzaError("item-not-found", "no occupant has this nickname")
        if _PM_RANKS[core.st.config.allow_pm] > _ROLE_RANKS.get(occ.role, 0):
            raise StanzaError("forbidden", "private messages are not allowed here")
        out = copy(element)
        unaddress(out)
        out.set("from", core.occupant_jid(occ.nick))
        mark_occupant(out, core.occupant_id(occ.bare))
        if out.find(MUC_USER_X) is None:
            stanza.child(out, NS_MUC_USER, "x")  # XEP-0045 §7.5: marks it as a private message
        core.emit(out, list(target.sessions))

    def voice_request(self, element: Element, sender: JID, occ: Occupant | None) -> None:
        """XEP-0045 §7.13 (a visitor asks) and §8.6 (a moderator approves)."""
        core = self._core
        if occ is None:
            raise StanzaError("not-acceptable", "you are not in this room")
        form = request_form(element)
        assert form is not None
        try:
            allow = form.boolean("muc#request_allow")
        except FormError as exc:
            raise StanzaError("bad-request", str(exc)) from None
        if form.type != "submit":
            raise StanzaError("bad-request", "submit the voice request form")
        if allow is None:
            if occ.role != "visitor":
                return  # it has voice already
            if not core.st.config.allow_voice_requests:
                raise StanzaError("forbidden", "voice requests are disabled")
            request = stanza.make("message", from_=str(core.jid), id_=core.new_id())
            dataforms.build(request, "form", [
                Field("muc#role", "list-single", "Requested role", values=("participant",),
                      options=(("Participant", "participant"),)),
                Field("muc#jid", "jid-single", "User ID", values=(str(sender),)),
                Field("muc#roomnick", "text-single", "Room nickname", values=(occ.nick,)),
                Field("muc#request_allow", "boolean", "Grant voice?", values=("false",)),
            ], namespace=NS_MUC_REQUEST, title="Voice request")  # fmt: skip
            core.emit(request, self._audience.moderator_sessions())
            return
        if occ.role != "moderator":
            raise StanzaError("forbidden", "only moderators decide on voice")
        target = self._audience.occupant(form.text("muc#roomnick") or "")
        if allow and target is not None and target.role == "visitor":
            target.role = "participant"
            self._audience.broadcast_presence(target, actor=occ.nick)


def request_form(element: Element) -> SubmittedForm | None:
    """The muc#request form of a message, if it has one that parses (others are not ours)."""
    for candidate in element.iterchildren(dataforms.FORM):
        try:
            form = dataforms.parse(candidate)
        except FormError:
            continue
        if form.form_type == NS_MUC_REQUEST:
            return form
    return None
