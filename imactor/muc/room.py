"""One multi-user chat room (XEP-0045) as a sans-IO state machine: stanzas in, stanzas out.

`Room.handle(stanza, now)` takes any stanza addressed to the room (room@service) or to one of
its occupants (room@service/nick), with `from` set to the sender's real full JID, and returns an
`Outcome`: the stanzas to send (each with `from` set and no `to`, and the real JIDs to send one
copy to), the messages to archive, and whether the persistent state changed or the room is gone.
No clock (the caller passes `now`), no I/O, no randomness (ids come from `new_id`).

Choices where XEP-0045 leaves room:
- One nick, one bare JID, any number of its sessions (§7.2.x). The nick's presence is that of
  the session that sent presence last; a session leaving while others stay is seen by the others
  as a presence update, not an exit. A nick change is refused (`not-acceptable`) while the nick
  has several sessions: the other sessions did not ask for it.
- Nicks are resourceparts with white space collapsed and trimmed (in the spirit of the RFC 8266
  Nickname profile); a nick that this changes gets status 210.
- IQs to an occupant JID are forwarded to the occupant's current session (vCard requests to its
  bare JID) with a new id, and the answer is forwarded back; a ping to one's own occupant JID
  is answered by the room (XEP-0410 self-ping optimization).
- A temporary room is destroyed when its last occupant leaves; so is a room still locked.
- Subject changes are archived (`Outcome.archive`) but not replayed as history: the subject
  comes last on entering anyway.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lxml import etree

from imactor.muc import admin
from imactor.muc.history import replay, select
from imactor.muc.occupants import Occupant, OccupantInfo, presence_payload
from imactor.muc.stanzas import MUC_USER_X, copy, error_from, muc_user, result, unaddress
from imactor.muc.state import RoomState
from imactor.xmpp import dataforms, stanza
from imactor.xmpp.dataforms import Field, FormError, SubmittedForm
from imactor.xmpp.errors import StanzaError
from imactor.xmpp.jid import JID, InvalidJID
from imactor.xmpp.namespaces import (
    NS_CLIENT,
    NS_DISCO_INFO,
    NS_DISCO_ITEMS,
    NS_MUC,
    NS_MUC_ADMIN,
    NS_MUC_OWNER,
    NS_MUC_REQUEST,
    NS_MUC_USER,
    NS_PING,
    NS_SID,
    NS_VCARD,
    qname,
)
from imactor.xmpp.stanza import Element, parse, serialize

_BODY = qname(NS_CLIENT, "body")
_SUBJECT = qname(NS_CLIENT, "subject")
_STANZA_ID = qname(NS_SID, "stanza-id")
_MUC_X = qname(NS_MUC, "x")
#: Forwarded IQs waiting for their answer; the oldest are forgotten beyond this many.
_MAX_PENDING_IQS = 256


@dataclass(frozen=True)
class ServiceInfo:
    """What a room knows of the service that hosts it."""

    jid: JID  #: the service, e.g. conference.localhost
    admins: frozenset[str]  #: bare JIDs of server admins: owner rights in every room
    max_occupants: int  #: a hard limit above any room's max_users
    may_create: Callable[[JID], bool]  #: may this real bare JID create a new room


@dataclass(frozen=True)
class Outgoing:
    element: Element  #: a stanza with `from` set and no `to`; it belongs to the actor
    #: The actor sends one copy to each (to=recipient): occupants' real full JIDs, except for
    #: invitations and declines (the JID the client named, often bare) and vCard requests
    #: forwarded to an occupant's bare JID.
    recipients: tuple[JID, ...]


@dataclass(frozen=True)
class ArchiveItem:
    """A groupchat message (or subject change) as the room broadcast it (with its <stanza-id/>)."""

    stanza_id: str
    stamp: float
    nick: str
    real_jid: JID
    element: Element


@dataclass(frozen=True)
class _PendingIq:
    """An IQ the room forwarded to an occupant, to pass the answer back (with its own id)."""

    requester: JID
    original_id: str
    responder: JID
    responder_nick: str


@dataclass
class Outcome:
    out: list[Outgoing] = field(default_factory=list)
    archive: list[ArchiveItem] = field(default_factory=list)  #: only when config.enable_logging
    state_changed: bool = False  #: the RoomState changed: the actor persists it
    #: The room is gone: the actor deletes it from storage. A later presence may create a new
    #: room of that name, which starts from nothing (no configuration, affiliations or history).
    destroyed: bool = False


class Room:
    """One room. See the module docstring; helper modules (`admin`) use the methods without
    a leading underscore below `occupants()` as the room's internal API."""

    def __init__(self, jid: JID, state: RoomState | None, service: ServiceInfo, *,
                 history: Iterable[ArchiveItem] = (), new_id: Callable[[], str]) -> None:  # fmt: skip
        self.jid = jid.bare
        self.service = service
        self.new_id = new_id
        self._state = state
        self._destroyed = False
        self.by_nick: dict[str, Occupant] = {}
        self.by_session: dict[JID, Occupant] = {}
        self.history: deque[ArchiveItem] = deque(item for item in history if not _is_subject(item.element))
        self.trim_history()
        self._pending_iqs: OrderedDict[str, _PendingIq] = OrderedDict()
        self.outcome = Outcome()
        self.now = 0.0

    # ---- the actor's API ----------------------------------------------------------------------

    @property
    def exists(self) -> bool:
        return self._state is not None and not self._destroyed

    @property
    def state(self) -> RoomState | None:
        return self._state if self.exists else None

    @property
    def is_empty(self) -> bool:
        return not self.by_nick

    def occupants(self) -> list[OccupantInfo]:
        return [
            OccupantInfo(occ.nick, tuple(occ.sessions), occ.role, self.affiliation(occ.bare))
            for occ in self.by_nick.values()
        ]

    def export_occupants(self) -> list[dict[str, Any]]:
        """The occupants as JSON-ready values, for the room's next home (`import_occupants`)."""
        return [
            {"nick": occ.nick, "bare": str(occ.bare), "role": occ.role,
             "sessions": [[str(jid), serialize(presence).decode()] for jid, presence in occ.sessions.items()]}
            for occ in self.by_nick.values()
        ]  # fmt: skip

    def import_occupants(self, occupants: Iterable[Mapping[str, Any]]) -> None:
        """Take over the occupants a previous home of the room exported. A nick or session
        that entered here meanwhile keeps its place here.

        Raises:
            ValueError: the data is not what `export_occupants` writes.
        """
        for entry in occupants:
            nick, sessions = str(entry["nick"]), entry["sessions"]
            if nick in self.by_nick:
                continue
            occupant = Occupant(nick, JID.parse(str(entry["bare"])), str(entry["role"]))
            for jid_text, presence in sessions:
                jid = JID.parse(str(jid_text))
                if jid not in self.by_session:
                    occupant.sessions[jid] = parse(str(presence).encode())
            if occupant.sessions:
                self.by_nick[nick] = occupant
                for jid in occupant.sessions:
                    self.by_session[jid] = occupant

    def may_read_archive(self, requester: JID) -> bool:
        """XEP-0313 on a room: anyone who could enter it (members-only: members and above)."""
        if not self.exists:
            return False
        affiliation = self.affiliation(requester.bare)
        if affiliation == "outcast":
            return False
        return not self.st.config.members_only or affiliation != "none"

    def handle(self, element: Element, now: float) -> Outcome:
        """Handle one stanza to the room or an occupant; errors become error stanzas."""
        outcome = self._begin(now)
        try:
            sender = JID.parse(element.get("from", ""))
            to = JID.parse(element.get("to", ""))
        except InvalidJID:
            return outcome  # the server validated both: nothing to answer to
        kind = etree.QName(element).localname
        try:
            if to.bare != self.jid:
                raise StanzaError("item-not-found", "not this room")
            if kind == "presence":
                self._on_presence(element, sender, to)
            elif kind == "message":
                self._on_message(element, sender, to)
            elif kind == "iq":
                self._on_iq(element, sender, to)
        except StanzaError as exc:
            if element.get("type") not in ("error", "result"):
                self.emit(error_from(element, exc), [sender])
        return outcome

    def remove_occupant(self, real_jid: JID, now: float, *, status: str = "333") -> Outcome:
        """The session `real_jid` is gone: it leaves, the others see `status` (§7.14, 333)."""
        outcome = self._begin(now)
        if real_jid in self.by_session:
            self.leave(real_jid, None, codes=(status,), tell_self=False)
        return outcome

    def destroy(self, reason: str | None, alternate: JID | None, now: float) -> Outcome:
        """Destroy the room (XEP-0045 §10.9): every occupant gets the <destroy/> presence."""
        outcome = self._begin(now)
        if self.exists:
            self.destroy_now(reason, alternate)
        return outcome

    # ---- internal API for admin.py ------------------------------------------------------------

    @property
    def st(self) -> RoomState:
        assert self._state is not None
        return self._state

    def emit(self, element: Element, recipients: Iterable[JID]) -> None:
        found = tuple(recipients)
        if found:
            self.outcome.out.append(Outgoing(element, found))

    def changed(self) -> None:
        self.outcome.state_changed = True

    def affiliation(self, bare: JID) -> str:
        if str(bare) in self.service.admins:
            return "owner"
        return self._state.affiliation_of(str(bare)) if self._state is not None else "none"

    def default_role(self, affiliation: str) -> str:
        if affiliation in ("owner", "admin"):
            return "moderator"
        if affiliation == "member" or not self.st.config.moderated:
            return "participant"
        return "visitor"

    def occupant_jid(self, nick: str) -> str:
        return f"{self.jid}/{nick}"

    def sessions(self, exclude: Occupant | None = None) -> list[JID]:
        return [jid for occ in self.by_nick.values() if occ is not exclude for jid in occ.sessions]

    def sees_jids(self, viewer: Occupant) -> bool:
        return self.st.config.is_non_anonymous or viewer.role == "moderator"

    def presence(self, occ: Occupant, payload: Element | None, *, with_jid: bool,
                 codes: Sequence[str] = (), unavailable: bool = False, role: str | None = None,
                 affiliation: str | None = None, nick: str | None = None, reason: str | None = None,
                 actor: str | None = None) -> Element:  # fmt: skip
        """`occ`'s presence as the room shows it, with its muc#user item and status codes."""
        element = stanza.make("presence", from_=self.occupant_jid(occ.nick))
        if unavailable:
            element.set("type", "unavailable")
        source = payload if payload is not None else (None if unavailable else occ.sessions[occ.current])
        for child in source if source is not None else ():
            element.append(copy(child))
        muc_user(
            element,
            affiliation=affiliation or self.affiliation(occ.bare),
            role=role or occ.role,
            jid=str(occ.current) if with_jid and occ.sessions else None,
            nick=nick,
            codes=sorted(codes, key=int),
            reason=reason,
            actor=actor,
        )
        return element

    def broadcast_presence(self, occ: Occupant, payload: Element | None = None, *,
                           codes: Sequence[str] = (), self_codes: Sequence[str] = (),
                           skip: JID | None = None, unavailable: bool = False,
                           role: str | None = None, affiliation: str | None = None,
                           nick: str | None = None, reason: str | None = None,
                           actor: str | None = None) -> None:  # fmt: skip
        """`occ`'s presence to every occupant: others by what they may see, its own sessions
        with 110; `skip` gets nothing."""

        def build(with_jid: bool, status: Sequence[str]) -> Element:
            return self.presence(occ, payload, with_jid=with_jid, codes=status, unavailable=unavailable,
                                 role=role, affiliation=affiliation, nick=nick, reason=reason,
                                 actor=actor)  # fmt: skip

        seeing: list[JID] = []
        blind: list[JID] = []
        for other in self.by_nick.values():
            if other is not occ:
                (seeing if self.sees_jids(other) else blind).extend(other.sessions)
        if seeing:
            self.emit(build(True, codes), seeing)
        if blind:
            self.emit(build(False, codes), blind)
        own = [jid for jid in occ.sessions if jid != skip]
        if own:
            self.emit(build(self.sees_jids(occ), [*codes, *self_codes, "110"]), own)

    def remove(self, occ: Occupant, codes: Sequence[str], *, reason: str | None = None,
               actor: str | None = None, affiliation: str | None = None) -> None:  # fmt: skip
        """Take `occ` out with all its sessions; everyone, `occ` included, sees why."""
        self.broadcast_presence(occ, None, codes=codes, unavailable=True, role="none",
                                affiliation=affiliation, reason=reason, actor=actor)  # fmt: skip
        self._drop(occ)

    def leave(self, session: JID, payload: Element | None, *, codes: Sequence[str] = (),
              tell_self: bool = True) -> None:  # fmt: skip
        """`session` leaves: its nick goes when it was the last session of it."""
        occ = self.by_session[session]
        if len(occ.sessions) > 1:
            if tell_self:
                occ.update(session, occ.sessions[session])  # its own goodbye shows its own JID
                self.emit(self.presence(occ, payload, with_jid=self.sees_jids(occ), unavailable=True,
                                        role="none", codes=[*codes, "110"]), [session])  # fmt: skip
            del self.by_session[session]
            del occ.sessions[session]
            self.broadcast_presence(occ)
            return
        self.broadcast_presence(occ, payload, codes=codes, unavailable=True, role="none",
                                skip=None if tell_self else session)  # fmt: skip
        self._drop(occ)

    def destroy_now(self, reason: str | None, alternate: JID | None) -> None:
        for occ in list(self.by_nick.values()):
            element = self.presence(occ, None, with_jid=False, unavailable=True, role="none",
                                    affiliation="none")  # fmt: skip
            x = element.find(MUC_USER_X)
            assert x is not None
            gone = etree.SubElement(x, qname(NS_MUC_USER, "destroy"))
            if alternate is not None:
                gone.set("jid", str(alternate))
            if reason:
                etree.SubElement(gone, qname(NS_MUC_USER, "reason")).text = reason
            self.emit(element, list(occ.sessions))
        self.by_nick.clear()
        self.by_session.clear()
        self._destroyed = True
        self.outcome.destroyed = True

    def trim_history(self) -> None:
        keep = self._state.config.history_length if self._state is not None else 20
        while len(self.history) > keep:
            self.history.popleft()

    # ---- presence -----------------------------------------------------------------------------

    def _begin(self, now: float) -> Outcome:
        self.now = now
        self.outcome = Outcome()
        return self.outcome

    def _drop(self, occ: Occupant) -> None:
        for jid in occ.sessions:
            self.by_session.pop(jid, None)
        self.by_nick.pop(occ.nick, None)
        state = self._state
        if self.by_nick or state is None or self._destroyed:
            return
        if state.locked or not state.config.persistent:  # nobody left to configure or to talk
            self._destroyed = True
            self.outcome.destroyed = True

    def _on_presence(self, element: Element, sender: JID, to: JID) -> None:
        kind = element.get("type", "")
        occ = self.by_session.get(sender)
        if kind == "error":
            if occ is not None:  # its client bounced what we sent: it is gone (§7.14)
                self.leave(sender, None, codes=("333",), tell_self=False)
            return
        if kind == "unavailable":
            if occ is not None:
                self.leave(sender, presence_payload(element))
            return
        if kind:
            return  # subscriptions and probes have no meaning for a room
        nick, modified = _nick(to, element.get("to", ""))
        if nick is None:
            raise StanzaError("jid-malformed", "a nickname is required")
        if occ is None or not self.exists:
            self._enter(element, sender, nick, modified)
        elif nick != occ.nick:
            self._change_nick(element, sender, occ, nick, modified)
        elif element.find(_MUC_X) is not None:
            self._enter(element, sender, nick, modified)  # a client that lost track rejoins
        else:
            occ.update(sender, presence_payload(element))
            self.broadcast_presence(occ)

    def _enter(self, element: Element, sender: JID, nick: str, modified: bool) -> None:
        created = not self.exists
        if created:
            if not self.service.may_create(sender.bare):
                raise StanzaError("not-allowed", "you may not create rooms")
            # §10.1.1: a client that did not say it speaks MUC cannot configure: an instant room
            locked = element.find(_MUC_X) is not None
            self._state = RoomState(created=self.now, locked=locked, creator=str(sender.bare))
            self._state.set_affiliation(str(sender.bare), "owner")
            self._destroyed = False
            self.history.clear()  # a room created again after its destruction starts afresh
            self.changed()
        else:
            self._may_enter(element, sender, nick)
        occ = self.by_nick.get(nick)
        if occ is None:
            occ = Occupant(nick, sender.bare, self.default_role(self.affiliation(sender.bare)))
            self.by_nick[nick] = occ
        occ.update(sender, presence_payload(element))
        self.by_session[sender] = occ
        for other in self.by_nick.values():
            if other is not occ:
                self.emit(self.presence(other, None, with_jid=self.sees_jids(occ)), [sender])
        self.broadcast_presence(occ, skip=sender)
        codes = ["110"]
        config = self.st.config
        codes += ["100"] if config.is_non_anonymous else []
        codes += ["170"] if config.enable_logging else []
        codes += ["201"] if created else []
        codes += ["210"] if modified else []
        self.emit(self.presence(occ, None, with_jid=self.sees_jids(occ), codes=codes), [sender])
        muc = element.find(_MUC_X)
        wanted = muc.find(qname(NS_MUC, "history")) if muc is not None else None
        for item in select(list(self.history), wanted, self.now):
            self.emit(replay(item, str(self.jid)), [sender])
        subject = stanza.make("message", type_="groupchat", from_=self._subject_from())
        stanza.child(subject, NS_CLIENT, "subject", self.st.subject or None)
        self.emit(subject, [sender])

    def _may_enter(self, element: Element, sender: JID, nick: str) -> None:
        """XEP-0045 §7.2: the checks on entering, each with its error."""
        config, affiliation = self.st.config, self.affiliation(sender.bare)
        if affiliation == "outcast":
            raise StanzaError("forbidden", "you are banned from this room")
        if self.st.locked and affiliation != "owner":
            raise StanzaError("item-not-found", "this room is not configured yet")
        if config.members_only and affiliation == "none":
            raise StanzaError("registration-required", "this room is members-only")
        if config.password and affiliation != "owner":
            muc = element.find(_MUC_X)
            given = muc.findtext(qname(NS_MUC, "password")) if muc is not None else None
            if given != config.password:
                raise StanzaError("not-authorized", "a password is required")
        self._check_nick(sender, nick)
        if nick in self.by_nick:
            return  # another session of the same occupant
        limits = [self.service.max_occupants]
        if config.max_users is not None and affiliation not in ("owner", "admin"):
            limits.append(config.max_users)
        if len(self.by_nick) >= min(limits):
            raise StanzaError("service-unavailable", "the room is full")

    def _check_nick(self, sender: JID, nick: str) -> None:
        holder = self.by_nick.get(nick)
        if holder is not None and holder.bare != sender.bare:
            raise StanzaError("conflict", "this nickname is in use")
        reserved = self.st.nick_owner(nick)
        if reserved is not None and reserved != str(sender.bare):
            raise StanzaError("conflict", "this nickname is reserved")

    def _change_nick(self, element: Element, sender: JID, occ: Occupant, nick: str, modified: bool) -> None:
        self._check_nick(sender, nick)
        if nick in self.by_nick:
            raise StanzaError("conflict", "this nickname is in use")
        if len(occ.sessions) > 1:
            raise StanzaError("not-acceptable", "other sessions share this nickname")
        self.broadcast_presence(occ, None, codes=("303",), unavailable=True, nick=nick)
        del self.by_nick[occ.nick]
        occ.nick = nick
        self.by_nick[nick] = occ
        occ.update(sender, presence_payload(element))
        self.broadcast_presence(occ, self_codes=("210",) if modified else ())

    def _subject_from(self) -> str:
        by = self.st.subject_by
        return self.occupant_jid(by) if by else str(self.jid)

    # ---- messages -----------------------------------------------------------------------------

    def _on_message(self, element: Element, sender: JID, to: JID) -> None:
        kind = element.get("type", "normal")
        occ = self.by_session.get(sender)
        if kind == "error":
            if occ is not None:  # its client bounced a message from the room (§7.14)
                self.leave(sender, None, codes=("333",), tell_self=False)
            return
        if not self.exists:
            raise StanzaError("item-not-found", "no such room")
        if to.resourcepart is not None:
            self._private_message(element, sender, occ, to)
        elif kind == "groupchat":
            self._groupchat(element, sender, occ)
        elif element.find(MUC_USER_X) is not None:
            admin.invitations(self, element, sender, occ)
        elif _request_form(element) is not None:
            self._voice_request(element, sender, occ)
        else:
            raise StanzaError("bad-request", "send groupchat messages to the room")

    def _groupchat(self, element: Element, sender: JID, occ: Occupant | None) -> None:
        if occ is None:
            raise StanzaError("not-acceptable", "you are not in this room")
        if occ.role == "visitor":
            raise StanzaError("forbidden", "visitors may not speak in a moderated room")
        is_subject = element.find(_SUBJECT) is not None and element.find(_BODY) is None
        if is_subject and occ.role != "moderator" and not self.st.config.change_subject:
            raise StanzaError("forbidden", "only moderators may change the subject")
        out = copy(element)
        unaddress(out)
        out.set("from", self.occupant_jid(occ.nick))
        for claimed in out.findall(_STANZA_ID):
            if claimed.get("by") == str(self.jid):
                out.remove(claimed)  # only the room may claim its own ids (XEP-0359 §3)
        if is_subject:
            self.st.subject = out.findtext(_SUBJECT) or ""
            self.st.subject_by = occ.nick
            self.st.subject_stamp = self.now
            self.changed()
        archived = is_subject or out.find(_BODY) is not None
        stanza_id = self.new_id()
        if archived and self.st.config.enable_logging:
            tag = stanza.child(out, NS_SID, "stanza-id")
            tag.set("id", stanza_id)
            tag.set("by", str(self.jid))
        self.emit(out, self.sessions())
        if archived:  # a copy: `out` belongs to the actor once emitted
            item = ArchiveItem(stanza_id, self.now, occ.nick, sender, copy(out))
            if self.st.config.enable_logging:
                self.outcome.archive.append(item)
            if not is_subject:
                self.history.append(item)
                self.trim_history()

    def _private_message(self, element: Element, sender: JID, occ: Occupant | None, to: JID) -> None:
        if occ is None:
            raise StanzaError("not-acceptable", "you are not in this room")
        if element.get("type") == "groupchat":
            raise StanzaError("bad-request", "groupchat messages go to the room")
        nick, _ = _nick(to, element.get("to", ""))
        target = self.by_nick.get(nick or "")
        if target is None:
            raise StanzaError("item-not-found", "no occupant has this nickname")
        allow = self.st.config.allow_pm
        ranks = {"anyone": 0, "participants": 1, "moderators": 2, "none": 3}
        roles = {"visitor": 0, "participant": 1, "moderator": 2}
        if ranks[allow] > roles.get(occ.role, 0):
            raise StanzaError("forbidden", "private messages are not allowed here")
        out = copy(element)
        unaddress(out)
        out.set("from", self.occupant_jid(occ.nick))
        if out.find(MUC_USER_X) is None:
            stanza.child(out, NS_MUC_USER, "x")  # XEP-0045 §7.5: marks it as a private message
        self.emit(out, list(target.sessions))

    def _voice_request(self, element: Element, sender: JID, occ: Occupant | None) -> None:
        """XEP-0045 §7.13 (a visitor asks) and §8.6 (a moderator approves)."""
        if occ is None:
            raise StanzaError("not-acceptable", "you are not in this room")
        form = _request_form(element)
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
            if not self.st.config.allow_voice_requests:
                raise StanzaError("forbidden", "voice requests are disabled")
            request = stanza.make("message", from_=str(self.jid), id_=self.new_id())
            dataforms.build(request, "form", [
                Field("muc#role", "list-single", "Requested role", values=("participant",),
                      options=(("Participant", "participant"),)),
                Field("muc#jid", "jid-single", "User ID", values=(str(sender),)),
                Field("muc#roomnick", "text-single", "Room nickname", values=(occ.nick,)),
                Field("muc#request_allow", "boolean", "Grant voice?", values=("false",)),
            ], namespace=NS_MUC_REQUEST, title="Voice request")  # fmt: skip
            moderators = [o for o in self.by_nick.values() if o.role == "moderator"]
            self.emit(request, [jid for o in moderators for jid in o.sessions])
            return
        if occ.role != "moderator":
            raise StanzaError("forbidden", "only moderators decide on voice")
        target = self.by_nick.get(form.text("muc#roomnick") or "")
        if allow and target is not None and target.role == "visitor":
            target.role = "participant"
            self.broadcast_presence(target, actor=occ.nick)

    # ---- IQs ----------------------------------------------------------------------------------

    def _on_iq(self, element: Element, sender: JID, to: JID) -> None:
        kind = element.get("type", "")
        if to.resourcepart is not None:
            self._occupant_iq(element, sender, to)
            return
        if kind not in ("get", "set"):
            return  # results and errors to the room answer nothing it asked
        if not self.exists:
            raise StanzaError("item-not-found", "no such room")
        payload = next((child for child in element if isinstance(child.tag, str)), None)
        if payload is None:
            raise StanzaError("bad-request", "an IQ needs a payload")
        key = (etree.QName(payload).namespace, etree.QName(payload).localname, kind)
        if key == (NS_DISCO_INFO, "query", "get"):
            self.emit(admin.disco_info(self, element, payload, sender), [sender])
        elif key == (NS_DISCO_ITEMS, "query", "get"):
            self.emit(admin.disco_items(self, element, sender), [sender])
        elif key[:2] == (NS_MUC_ADMIN, "query"):
            admin.admin_iq(self, element, payload, sender)
        elif key[:2] == (NS_MUC_OWNER, "query"):
            admin.owner_iq(self, element, payload, sender)
        elif key == (NS_PING, "ping", "get"):
            self.emit(result(element), [sender])
        else:
            raise StanzaError("service-unavailable", "not supported by rooms")

    def _occupant_iq(self, element: Element, sender: JID, to: JID) -> None:
        kind = element.get("type", "")
        nick, _ = _nick(to, element.get("to", ""))
        target = self.by_nick.get(nick or "")
        if kind in ("result", "error"):
            pending = self._pending_iqs.get(element.get("id", ""))
            if pending is None or pending.responder != sender:
                return  # not an answer to a request the room forwarded to this sender
            del self._pending_iqs[element.get("id", "")]
            answer = copy(element)
            unaddress(answer)
            answer.set("from", self.occupant_jid(pending.responder_nick))
            answer.set("id", pending.original_id)
            self.emit(answer, [pending.requester])
            return
        occ = self.by_session.get(sender)
        if occ is None or not self.exists:
            raise StanzaError("not-acceptable", "you are not in this room")
        if target is None:
            raise StanzaError("item-not-found", "no occupant has this nickname")
        payload = next((child for child in element if isinstance(child.tag, str)), None)
        if payload is not None and etree.QName(payload).namespace == NS_PING and target is occ:
            self.emit(result(element), [sender])  # XEP-0410: still joined
            return
        is_vcard = payload is not None and etree.QName(payload).namespace == NS_VCARD
        responder = target.bare if is_vcard else target.current
        request_id = self.new_id()
        self._pending_iqs[request_id] = _PendingIq(sender, element.get("id", ""), responder, target.nick)
        while len(self._pending_iqs) > _MAX_PENDING_IQS:
            self._pending_iqs.popitem(last=False)
        forwarded = copy(element)
        unaddress(forwarded)
        forwarded.set("from", self.occupant_jid(occ.nick))
        forwarded.set("id", request_id)
        self.emit(forwarded, [responder])


def _nick(to: JID, raw_to: str) -> tuple[str | None, bool]:
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


def _request_form(element: Element) -> SubmittedForm | None:
    """The muc#request form of a message, if it has one that parses (others are not ours)."""
    for candidate in element.iterchildren(dataforms.FORM):
        try:
            form = dataforms.parse(candidate)
        except FormError:
            continue
        if form.form_type == NS_MUC_REQUEST:
            return form
    return None


def _is_subject(element: Element) -> bool:
    return element.find(_SUBJECT) is not None and element.find(_BODY) is None
