"""Multi-user chat (XEP-0045): the sans-IO core of one room.

`room.Room` is a pure state machine (stanzas in, stanzas out; no clock, no I/O) that the
room actor wraps; `state.RoomState` is what storage keeps of a room. Like `imactor/xmpp/`, this
package imports only `imactor.xmpp`, lxml and the standard library (`tests/unit/test_layering.py`).
"""

from __future__ import annotations

from imactor.muc.room import ArchiveItem, Outcome, Outgoing, Room, ServiceInfo
from imactor.muc.state import Affiliation, RoomConfig, RoomState

__all__ = [
    "Affiliation",
    "ArchiveItem",
    "Outcome",
    "Outgoing",
    "Room",
    "RoomConfig",
    "RoomState",
    "ServiceInfo",
]
