"""One multi-user chat room (XEP-0045) as a sans-IO state machine: stanzas in, stanzas out.

`Room.handle(stanza, now)` takes any stanza addressed to the room (room@service) or to one of
its occupants (room@service/nick), with `from` set to the sender's real full JID, and returns an
`Outcome`: the stanzas to send (each with `from` set and no `to`, and the real JIDs to send one
copy to), the messages to archive, and whether the persistent state changed or the room is gone.
No clock (the caller passes `now`), no I/O, no randomness (ids come from `new_id`).

`Room` is what the actor sees. It dispatches each stanza to the part of the room that owns its
concern, each an object on the shared `core.RoomCore`:

- `occupancy.Occupancy`: who is in the room, entering, nicks, presence, leaving;
- `conversation.Conversation`: groupchat and private messages, the subject, voice requests, the
  history a newcomer gets;
- `iq_relay.IqRelay`: IQs between occupants;
- `admin`: muc#admin, muc#owner and invitations, `registration`: jabber:iq:register (§7.10),
  and `disco`: service discovery on the room (functions of the core and of the occupants,
  through the protocol each names).

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

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from lxml import etree

from imactor.muc.admin import admin_iq, invitations, owner_iq
from imactor.muc.conversation import Conversation, request_form
from imactor.muc.core import RoomCore
from imactor.muc.disco import disco_info, disco_items
from imactor.muc.history import History
from imactor.muc.iq_relay import IqRelay
from imactor.muc.occupancy import Occupancy
from imactor.muc.occupants import OccupantInfo
from imactor.muc.registration import is_register, register_iq
from imactor.muc.stanzas import MUC_USER_X, error_from, result
from imactor.muc.state import RoomState
from imactor.muc.values import ArchiveItem, Outcome, ServiceInfo
from imactor.xmpp.errors import StanzaError
from imactor.xmpp.jid import JID, InvalidJID
from imactor.xmpp.namespaces import NS_DISCO_INFO, NS_DISCO_ITEMS, NS_MUC_ADMIN, NS_MUC_OWNER, NS_PING
from imactor.xmpp.stanza import Element


class Room:
    """One room. See the module docstring."""

    def __init__(self, jid: JID, state: RoomState | None, service: ServiceInfo, *,
                 history: Iterable[ArchiveItem] = (), new_id: Callable[[], str]) -> None:  # fmt: skip
        self._core = RoomCore(jid, state, service, new_id)
        self._occupancy = Occupancy(self._core)
        self._conversation = Conversation(self._core, self._occupancy, history)
        self._relay = IqRelay(self._core, self._occupancy)

    @property
    def jid(self) -> JID:
        return self._core.jid

    @property
    def exists(self) -> bool:
        return self._core.exists

    @property
    def state(self) -> RoomState | None:
        return self._core.state

    @property
    def is_empty(self) -> bool:
        return self._occupancy.is_empty

    @property
    def history(self) -> History:
        """The messages a newcomer may get (oldest first)."""
        return self._conversation.history

    def occupants(self) -> list[OccupantInfo]:
        return self._occupancy.info()

    def has_session(self, real_jid: JID) -> bool:
        """Is this session (a real full JID) in the room?"""
        return self._occupancy.occupant_of(real_jid) is not None

    def export_occupants(self) -> list[dict[str, Any]]:
        """The occupants as JSON-ready values, for the room's next home (`import_occupants`)."""
        return self._occupancy.export()

    def import_occupants(self, occupants: Iterable[Mapping[str, Any]]) -> None:
        """Take over the occupants a previous home of the room exported (`Occupancy.take_over`).

        Raises:
            ValueError: the data is not what `export_occupants` writes.
        """
        self._occupancy.take_over(occupants)

    def may_read_archive(self, requester: JID) -> bool:
        """XEP-0313 on a room: anyone who could enter it (members-only: members and above)."""
        if not self.exists:
            return False
        affiliation = self._core.affiliation(requester.bare)
        if affiliation == "outcast":
            return False
        return not self._core.st.config.members_only or affiliation != "none"

    def handle(self, element: Element, now: float) -> Outcome:
        """Handle one stanza to the room or an occupant; errors become error stanzas."""
        outcome = self._core.begin(now)
        try:
            sender = JID.parse(element.get("from", ""))
            to = JID.parse(element.get("to", ""))
        except InvalidJID:
            return outcome  # the server validated both: nothing to answer to
        kind = etree.QName(element).localname
        try:
            if to.bare != self._core.jid:
                raise StanzaError("item-not-found", "not this room")
            if kind == "presence":
                self._on_presence(element, sender, to)
            elif kind == "message":
                self._on_message(element, sender, to)
            elif kind == "iq":
                self._on_iq(element, sender, to)
        except StanzaError as exc:
            if element.get("type") not in ("error", "result"):
                self._core.emit(error_from(element, exc), [sender])
        return outcome

    def remove_occupant(self, real_jid: JID, now: float, *, status: str = "333") -> Outcome:
        """The session `real_jid` is gone: it leaves, the others see `status` (§7.14, 333)."""
        outcome = self._core.begin(now)
        if self._occupancy.occupant_of(real_jid) is not None:
            self._occupancy.leave(real_jid, None, codes=(status,), tell_self=False)
        return outcome

    def destroy(self, reason: str | None, alternate: JID | None, now: float) -> Outcome:
        """Destroy the room (XEP-0045 §10.9): every occupant gets the <destroy/> presence."""
        outcome = self._core.begin(now)
        if self.exists:
            self._occupancy.destroy_room(reason, alternate)
        return outcome

    # ---- dispatch -------------------------------------------------------------------------------

    def _on_presence(self, element: Element, sender: JID, to: JID) -> None:
        entered = self._occupancy.on_presence(element, sender, to)
        if entered is None:
            return
        if entered.created:
            self._conversation.history.clear()  # a room created again after its destruction starts afresh
        self._conversation.welcome(entered.session, entered.history_request)

    def _on_message(self, element: Element, sender: JID, to: JID) -> None:
        kind = element.get("type", "normal")
        occ = self._occupancy.occupant_of(sender)
        if kind == "error":
            if occ is not None:  # its client bounced a message from the room (§7.14)
                self._occupancy.leave(sender, None, codes=("333",), tell_self=False)
            return
        if not self.exists:
            raise StanzaError("item-not-found", "no such room")
        if to.resourcepart is not None:
            self._conversation.private_message(element, occ, to)
        elif kind == "groupchat":
            self._conversation.groupchat(element, sender, occ)
        elif element.find(MUC_USER_X) is not None:
            invitations(self._core, self._occupancy, element, sender, occ)
        elif request_form(element) is not None:
            self._conversation.voice_request(element, sender, occ)
        else:
            raise StanzaError("bad-request", "send groupchat messages to the room")

    def _on_iq(self, element: Element, sender: JID, to: JID) -> None:
        kind = element.get("type", "")
        if to.resourcepart is not None:
            self._relay.relay(element, sender, to)
            return
        if kind not in ("get", "set"):
            return  # results and errors to the room answer nothing it asked
        if not self.exists:
            raise StanzaError("item-not-found", "no such room")
        payload = next((child for child in element if isinstance(child.tag, str)), None)
        if payload is None:
            raise StanzaError("bad-request", "an IQ needs a payload")
        key = (etree.QName(payload).namespace, etree.QName(payload).localname, kind)
        core, occupancy = self._core, self._occupancy
        if key == (NS_DISCO_INFO, "query", "get"):
            core.emit(disco_info(core, occupancy, element, payload, sender), [sender])
        elif key == (NS_DISCO_ITEMS, "query", "get"):
            core.emit(disco_items(core, occupancy, element, sender), [sender])
        elif key[:2] == (NS_MUC_ADMIN, "query"):
            admin_iq(core, occupancy, element, payload, sender)
        elif key[:2] == (NS_MUC_OWNER, "query"):
            try:
                owner_iq(core, occupancy, element, payload, sender)
            finally:
                # A configuration may have lowered muc#maxhistoryfetch; trimming is idempotent.
                self._conversation.history.trim()
                self._occupancy.refresh_visibility()  # muc#roomconfig_presencebroadcast may have changed
        elif is_register(payload):
            register_iq(core, occupancy, element, payload, sender)
        elif key == (NS_PING, "ping", "get"):
            core.emit(result(element), [sender])
        else:
            raise StanzaError("service-unavailable", "not supported by rooms")
