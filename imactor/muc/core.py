"""What every part of a room shares: its address, its service, its persistent state, the time
of the stanza being handled, and the outcome being built for the actor.

`RoomCore` knows no occupant and no message. The parts of a room (`occupancy`, `conversation`,
`iq_relay`, `admin`, `disco`) each get it, and what they need of one another through a narrow protocol;
`room.Room` composes them and is all that the actor sees.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from imactor.muc.stanzas import occupant_id
from imactor.muc.state import RoomState
from imactor.muc.values import ArchiveItem, Outcome, Outgoing, ServiceInfo
from imactor.xmpp.jid import JID
from imactor.xmpp.stanza import Element

#: History kept by a room that has no state (none, or not yet created).
DEFAULT_HISTORY = 20


class RoomCore:
    """The room's state and output (module docstring). No clock: `begin` is given the time."""

    def __init__(
        self, jid: JID, state: RoomState | None, service: ServiceInfo, new_id: Callable[[], str]
    ) -> None:
        self.jid = jid.bare
        self.service = service
        self.new_id = new_id
        self._state = state
        self._destroyed = False
        self.outcome = Outcome()
        self.now = 0.0

    @property
    def exists(self) -> bool:
        return self._state is not None and not self._destroyed

    @property
    def state(self) -> RoomState | None:
        return self._state if self.exists else None

    @property
    def st(self) -> RoomState:
        """The state of a room that exists (callers check `exists` first)."""
        assert self._state is not None
        return self._state

    def begin(self, now: float) -> Outcome:
        """A new stanza (or command) at `now`: what follows goes into a fresh outcome."""
        self.now = now
        self.outcome = Outcome()
        return self.outcome

    def emit(self, element: Element, recipients: Iterable[JID]) -> None:
        found = tuple(recipients)
        if found:
            self.outcome.out.append(Outgoing(element, found))

    def changed(self) -> None:
        self.outcome.state_changed = True

    def archive(self, item: ArchiveItem) -> None:
        self.outcome.archive.append(item)

    def create(self, creator: JID, *, locked: bool) -> None:
        """A new room (XEP-0045 §10.1), owned by its creator; `locked` until configured."""
        self._state = RoomState(created=self.now, locked=locked, creator=str(creator.bare))
        self._state.set_affiliation(str(creator.bare), "owner")
        self._destroyed = False
        self.changed()

    def end(self) -> None:
        """The room is gone (destroyed, or a temporary room left empty)."""
        self._destroyed = True
        self.outcome.destroyed = True

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

    def occupant_id(self, bare: JID) -> str:
        """The XEP-0421 id of the real bare JID `bare` in this room."""
        return occupant_id(self.service.occupant_id_key, str(self.jid), str(bare))

    def occupant_jid(self, nick: str) -> str:
        return f"{self.jid}/{nick}"

    def history_length(self) -> int:
        """Messages kept for newcomers (muc#maxhistoryfetch)."""
        return self._state.config.history_length if self._state is not None else DEFAULT_HISTORY
