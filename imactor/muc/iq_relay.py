"""IQs between occupants (XEP-0045 §7.7 vCards, §17.3 private IQs): the room relays an IQ sent
to an occupant JID to that occupant's current session (a vCard request to its bare JID) under
an id of its own, and relays the answer back with the requester's id. A ping to one's own
occupant JID is answered by the room (XEP-0410 self-ping optimization).

`IqRelay` works on the room's `RoomCore`, finds occupants through `Members`, and remembers the
requests it forwarded (the oldest are forgotten beyond `MAX_PENDING`).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

from lxml import etree

from imactor.muc.core import RoomCore
from imactor.muc.occupants import Occupant, nick_of
from imactor.muc.stanzas import copy, result, unaddress
from imactor.xmpp.errors import StanzaError
from imactor.xmpp.jid import JID
from imactor.xmpp.namespaces import NS_PING, NS_VCARD
from imactor.xmpp.stanza import Element

#: Forwarded IQs waiting for their answer; the oldest are forgotten beyond this many.
MAX_PENDING = 256


class Members(Protocol):
    """What the relay needs of the room's occupants (`occupancy.Occupancy`)."""

    def occupant(self, nick: str) -> Occupant | None: ...

    def occupant_of(self, session: JID) -> Occupant | None: ...


@dataclass(frozen=True)
class _PendingIq:
    """An IQ the room forwarded to an occupant, to pass the answer back (with its own id)."""

    requester: JID
    original_id: str
    responder: JID
    responder_nick: str


class IqRelay:
    def __init__(self, core: RoomCore, members: Members) -> None:
        self._core = core
        self._members = members
        self._pending: OrderedDict[str, _PendingIq] = OrderedDict()

    def relay(self, element: Element, sender: JID, to: JID) -> None:
        """An IQ to an occupant JID (`to` has a nick): forward it, or its answer."""
        if element.get("type", "") in ("result", "error"):
            self._answer(element, sender)
            return
        nick, _ = nick_of(to, element.get("to", ""))
        target = self._members.occupant(nick or "")
        occ = self._members.occupant_of(sender)
        if occ is None or not self._core.exists:
            raise StanzaError("not-acceptable", "you are not in this room")
        if target is None:
            raise StanzaError("item-not-found", "no occupant has this nickname")
        payload = next((child for child in element if isinstance(child.tag, str)), None)
        if payload is not None and etree.QName(payload).namespace == NS_PING and target is occ:
            self._core.emit(result(element), [sender])  # XEP-0410: still joined
            return
        is_vcard = payload is not None and etree.QName(payload).namespace == NS_VCARD
        responder = target.bare if is_vcard else target.current
        request_id = self._core.new_id()
        self._pending[request_id] = _PendingIq(sender, element.get("id", ""), responder, target.nick)
        while len(self._pending) > MAX_PENDING:
            self._pending.popitem(last=False)
        forwarded = copy(element)
        unaddress(forwarded)
        forwarded.set("from", self._core.occupant_jid(occ.nick))
        forwarded.set("id", request_id)
        self._core.emit(forwarded, [responder])

    def _answer(self, element: Element, sender: JID) -> None:
        pending = self._pending.get(element.get("id", ""))
        if pending is None or pending.responder != sender:
            return  # not an answer to a request the room forwarded to this sender
        del self._pending[element.get("id", "")]
        answer = copy(element)
        unaddress(answer)
        answer.set("from", self._core.occupant_jid(pending.responder_nick))
        answer.set("id", pending.original_id)
        self._core.emit(answer, [pending.requester])
