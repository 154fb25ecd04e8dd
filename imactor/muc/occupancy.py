"""Who is in a room (XEP-0045 §7.1-§7.6, §7.14): entering, nick changes, presence updates,
leaving, and how each occupant's presence is shown to the others.

`Occupancy` owns the occupants (by nick and by session) and writes every presence the room
sends. It works on the room's `RoomCore` and knows nothing of messages: when someone enters, it
returns an `Entered`, and the room has the conversation welcome them (history, then subject).
The other parts of the room reach the occupants through the few methods they name in their own
protocols (`conversation.Audience`, `admin.Occupants`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lxml import etree

from imactor.muc.core import RoomCore
from imactor.muc.occupants import Occupant, OccupantInfo, nick_of, presence_payload
from imactor.muc.stanzas import MUC_USER_X, copy, mark_occupant, muc_user
from imactor.xmpp import stanza
from imactor.xmpp.errors import StanzaError
from imactor.xmpp.jid import JID
from imactor.xmpp.namespaces import NS_MUC, NS_MUC_USER, qname
from imactor.xmpp.stanza import Element, parse, serialize

_MUC_X = qname(NS_MUC, "x")


@dataclass(frozen=True)
class Entered:
    """A session entered (or, having lost track, entered again): the room welcomes it."""

    session: JID
    created: bool  #: it created the room
    history_request: Element | None  #: its <history/> (XEP-0045 §7.2.15), if it sent one


class Occupancy:
    def __init__(self, core: RoomCore) -> None:
        self._core = core
        self._by_nick: dict[str, Occupant] = {}
        self._by_session: dict[JID, Occupant] = {}

    # ---- what the others read ---------------------------------------------------------------

    @property
    def is_empty(self) -> bool:
        return not self._by_nick

    def count(self) -> int:
        return len(self._by_nick)

    def occupant(self, nick: str) -> Occupant | None:
        return self._by_nick.get(nick)

    def occupant_of(self, session: JID) -> Occupant | None:
        return self._by_session.get(session)

    def all(self) -> list[Occupant]:
        """Every occupant, in the order they entered."""
        return list(self._by_nick.values())

    def sessions(self, exclude: Occupant | None = None) -> list[JID]:
        return [jid for occ in self._by_nick.values() if occ is not exclude for jid in occ.sessions]

    def moderator_sessions(self) -> list[JID]:
        return [jid for occ in self._by_nick.values() if occ.role == "moderator" for jid in occ.sessions]

    def info(self) -> list[OccupantInfo]:
        return [
            OccupantInfo(occ.nick, tuple(occ.sessions), occ.role, self._core.affiliation(occ.bare))
            for occ in self._by_nick.values()
        ]

    # ---- hand-over to the room's next home -------------------------------------------------------

    def export(self) -> list[dict[str, Any]]:
        """The occupants as JSON-ready values, for the room's next home (`take_over`)."""
        return [
            {"nick": occ.nick, "bare": str(occ.bare), "role": occ.role, "shown": occ.shown,
             "sessions": [[str(jid), serialize(presence).decode()] for jid, presence in occ.sessions.items()]}
            for occ in self._by_nick.values()
        ]  # fmt: skip

    def take_over(self, occupants: Iterable[Mapping[str, Any]]) -> None:
        """Take over the occupants a previous home of the room exported. A nick or session
        that entered here meanwhile keeps its place here.

        Raises:
            ValueError: the data is not what `export` writes.
        """
        for entry in occupants:
            nick, sessions = str(entry["nick"]), entry["sessions"]
            if nick in self._by_nick:
                continue
            occupant = Occupant(nick, JID.parse(str(entry["bare"])), str(entry["role"]))
            occupant.shown = bool(entry.get("shown", True))  # older exports: every role was shown
            for jid_text, presence in sessions:
                jid = JID.parse(str(jid_text))
                if jid not in self._by_session:
                    occupant.sessions[jid] = parse(str(presence).encode())
            if occupant.sessions:
                self._by_nick[nick] = occupant
                for jid in occupant.sessions:
                    self._by_session[jid] = occupant

    # ---- presence from occupants ------------------------------------------------------------------

    def on_presence(self, element: Element, sender: JID, to: JID) -> Entered | None:
        """A presence to the room or an occupant JID; an `Entered` when `sender` came in."""
        kind = element.get("type", "")
        occ = self._by_session.get(sender)
        if kind == "error":
            if occ is not None:  # its client bounced what we sent: it is gone (§7.14)
                self.leave(sender, None, codes=("333",), tell_self=False)
            return None
        if kind == "unavailable":
            if occ is not None:
                self.leave(sender, presence_payload(element))
            return None
        if kind:
            return None  # subscriptions and probes have no meaning for a room
        nick, modified = nick_of(to, element.get("to", ""))
        if nick is None:
            raise StanzaError("jid-malformed", "a nickname is required")
        if occ is None or not self._core.exists:
            return self._enter(element, sender, nick, modified)
        if nick != occ.nick:
            self._change_nick(element, sender, occ, nick, modified)
        elif element.find(_MUC_X) is not None:
            return self._enter(element, sender, nick, modified)  # a client that lost track rejoins
        else:
            occ.update(sender, presence_payload(element))
            self.broadcast_presence(occ)
        return None

    def _enter(self, element: Element, sender: JID, nick: str, modified: bool) -> Entered:
        core = self._core
        created = not core.exists
        if created:
            if not core.service.may_create(sender.bare):
                raise StanzaError("not-allowed", "you may not create rooms")
            # §10.1.1: a client that did not say it speaks MUC cannot configure: an instant room
            core.create(sender, locked=element.find(_MUC_X) is not None)
        else:
            self._may_enter(element, sender, nick)
        occ = self._by_nick.get(nick)
        if occ is None:
            occ = Occupant(nick, sender.bare, core.default_role(core.affiliation(sender.bare)))
            self._by_nick[nick] = occ
        occ.update(sender, presence_payload(element))
        self._by_session[sender] = occ
        for other in self._by_nick.values():
            if other is not occ and other.shown:
                core.emit(self.presence(other, None, with_jid=self.sees_jids(occ)), [sender])
        self.broadcast_presence(occ, skip=sender)
        codes = ["110"]
        config = core.st.config
        codes += ["100"] if config.is_non_anonymous else []
        codes += ["170"] if config.enable_logging else []
        codes += ["201"] if created else []
        codes += ["210"] if modified else []
        core.emit(self.presence(occ, None, with_jid=self.sees_jids(occ), codes=codes), [sender])
        muc = element.find(_MUC_X)
        wanted = muc.find(qname(NS_MUC, "history")) if muc is not None else None
        return Entered(sender, created, wanted)

    def _may_enter(self, element: Element, sender: JID, nick: str) -> None:
        """XEP-0045 §7.2: the checks on entering, each with its error."""
        core = self._core
        config, affiliation = core.st.config, core.affiliation(sender.bare)
        if affiliation == "outcast":
            raise StanzaError("forbidden", "you are banned from this room")
        if core.st.locked and affiliation != "owner":
            raise StanzaError("item-not-found", "this room is not configured yet")
        if config.members_only and affiliation == "none":
            raise StanzaError("registration-required", "this room is members-only")
        if config.password and affiliation != "owner":
            muc = element.find(_MUC_X)
            given = muc.findtext(qname(NS_MUC, "password")) if muc is not None else None
            if given != config.password:
                raise StanzaError("not-authorized", "a password is required")
        self._check_nick(sender, nick)
        if nick in self._by_nick:
            return  # another session of the same occupant
        limits = [core.service.max_occupants]
        if config.max_users is not None and affiliation not in ("owner", "admin"):
            limits.append(config.max_users)
        if len(self._by_nick) >= min(limits):
            raise StanzaError("service-unavailable", "the room is full")

    def _check_nick(self, sender: JID, nick: str) -> None:
        holder = self._by_nick.get(nick)
        if holder is not None and holder.bare != sender.bare:
            raise StanzaError("conflict", "this nickname is in use")
        reserved = self._core.st.nick_owner(nick)
        if reserved is not None and reserved != str(sender.bare):
            raise StanzaError("conflict", "this nickname is reserved")

    def _change_nick(self, element: Element, sender: JID, occ: Occupant, nick: str, modified: bool) -> None:
        self._check_nick(sender, nick)
        if nick in self._by_nick:
            raise StanzaError("conflict", "this nickname is in use")
        if len(occ.sessions) > 1:
            raise StanzaError("not-acceptable", "other sessions share this nickname")
        self.broadcast_presence(occ, None, codes=("303",), unavailable=True, nick=nick)
        del self._by_nick[occ.nick]
        occ.nick = nick
        self._by_nick[nick] = occ
        occ.update(sender, presence_payload(element))
        self.broadcast_presence(occ, self_codes=("210",) if modified else ())

    # ---- presence the room shows ----------------------------------------------------------------

    def sees_jids(self, viewer: Occupant) -> bool:
        return self._core.st.config.is_non_anonymous or viewer.role == "moderator"

    def presence(self, occ: Occupant, payload: Element | None, *, with_jid: bool,
                 codes: Sequence[str] = (), unavailable: bool = False, role: str | None = None,
                 affiliation: str | None = None, nick: str | None = None, reason: str | None = None,
                 actor: str | None = None) -> Element:  # fmt: skip
        """`occ`'s presence as the room shows it, with its muc#user item and status codes."""
        element = stanza.make("presence", from_=self._core.occupant_jid(occ.nick))
        if unavailable:
            element.set("type", "unavailable")
        source = payload if payload is not None else (None if unavailable else occ.sessions[occ.current])
        for child in source if source is not None else ():
            element.append(copy(child))
        muc_user(
            element,
            affiliation=affiliation or self._core.affiliation(occ.bare),
            role=role or occ.role,
            jid=str(occ.current) if with_jid and occ.sessions else None,
            nick=nick,
            codes=sorted(codes, key=int),
            reason=reason,
            actor=actor,
        )
        mark_occupant(element, self._core.occupant_id(occ.bare))
        return element

    def broadcast_presence(self, occ: Occupant, payload: Element | None = None, *,
                           codes: Sequence[str] = (), self_codes: Sequence[str] = (),
                           skip: JID | None = None, unavailable: bool = False,
                           role: str | None = None, affiliation: str | None = None,
                           nick: str | None = None, reason: str | None = None,
                           actor: str | None = None) -> None:  # fmt: skip
        """`occ`'s presence to every occupant: others by what they may see, its own sessions
        with 110; `skip` gets nothing."""

        def build(with_jid: bool, status: Sequence[str], gone: bool = unavailable,
                  as_role: str | None = role) -> Element:  # fmt: skip
            return self.presence(occ, payload, with_jid=with_jid, codes=status, unavailable=gone,
                                 role=as_role, affiliation=affiliation, nick=nick, reason=reason,
                                 actor=actor)  # fmt: skip

        seeing: list[JID] = []
        blind: list[JID] = []
        for other in self._by_nick.values():
            if other is not occ:
                (seeing if self.sees_jids(other) else blind).extend(other.sessions)
        others_gone, others_role, others_codes = unavailable, role, codes
        if not unavailable and not self.broadcasts(role or occ.role):
            # muc#roomconfig_presencebroadcast: the others do not see this role; if they saw
            # the occupant before (a participant made a visitor), it is gone for them now.
            others_gone, others_role, others_codes = True, "none", ()
            if not occ.shown:
                seeing, blind = [], []
        elif unavailable and not occ.shown:
            seeing, blind = [], []  # they never saw it come
        if seeing:
            self._core.emit(build(True, others_codes, others_gone, others_role), seeing)
        if blind:
            self._core.emit(build(False, others_codes, others_gone, others_role), blind)
        occ.shown = not others_gone
        own = [jid for jid in occ.sessions if jid != skip]
        if own:
            self._core.emit(build(self.sees_jids(occ), [*codes, *self_codes, "110"]), own)

    def broadcasts(self, role: str) -> bool:
        """Do the other occupants see the presence of an occupant with `role`?"""
        return role in self._core.st.config.presence_broadcast

    def refresh_visibility(self) -> None:
        """After a configuration: show (or hide) the occupants whose role the room now
        broadcasts (or no longer does)."""
        for occ in list(self._by_nick.values()):
            if occ.shown != self.broadcasts(occ.role):
                self.broadcast_presence(occ)

    # ---- leaving --------------------------------------------------------------------------------

    def remove(self, occ: Occupant, codes: Sequence[str], *, reason: str | None = None,
               actor: str | None = None, affiliation: str | None = None) -> None:  # fmt: skip
        """Take `occ` out with all its sessions; everyone, `occ` included, sees why."""
        self.broadcast_presence(occ, None, codes=codes, unavailable=True, role="none",
                                affiliation=affiliation, reason=reason, actor=actor)  # fmt: skip
        self._drop(occ)

    def leave(self, session: JID, payload: Element | None, *, codes: Sequence[str] = (),
              tell_self: bool = True) -> None:  # fmt: skip
        """`session` leaves: its nick goes when it was the last session of it."""
        occ = self._by_session[session]
        if len(occ.sessions) > 1:
            if tell_self:
                occ.update(session, occ.sessions[session])  # its own goodbye shows its own JID
                self._core.emit(self.presence(occ, payload, with_jid=self.sees_jids(occ), unavailable=True,
                                              role="none", codes=[*codes, "110"]), [session])  # fmt: skip
            del self._by_session[session]
            del occ.sessions[session]
            self.broadcast_presence(occ)
            return
        self.broadcast_presence(occ, payload, codes=codes, unavailable=True, role="none",
                                skip=None if tell_self else session)  # fmt: skip
        self._drop(occ)

    def destroy_room(self, reason: str | None, alternate: JID | None) -> None:
        """XEP-0045 §10.9: every occupant gets the <destroy/> presence, and the room ends."""
        for occ in list(self._by_nick.values()):
            element = self.presence(occ, None, with_jid=False, unavailable=True, role="none",
                                    affiliation="none")  # fmt: skip
            x = element.find(MUC_USER_X)
            assert x is not None
            gone = etree.SubElement(x, qname(NS_MUC_USER, "destroy"))
            if alternate is not None:
                gone.set("jid", str(alternate))
            if reason:
                etree.SubElement(gone, qname(NS_MUC_USER, "reason")).text = reason
            self._core.emit(element, list(occ.sessions))
        self._by_nick.clear()
        self._by_session.clear()
        self._core.end()

    def _drop(self, occ: Occupant) -> None:
        for jid in occ.sessions:
            self._by_session.pop(jid, None)
        self._by_nick.pop(occ.nick, None)
        state = self._core.state  # None once the room ended
        if self._by_nick or state is None:
            return
        if state.locked or not state.config.persistent:  # nobody left to configure or to talk
            self._core.end()
