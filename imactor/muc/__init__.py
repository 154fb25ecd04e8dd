"""Multi-user chat (XEP-0045): the sans-IO core of one room.

`room.Room` is a pure state machine (stanzas in, stanzas out; no clock, no I/O) that the
room actor wraps, composed of one object per concern (`occupancy`, `conversation`, `iq_relay`,
`admin`) on a shared `core.RoomCore`; `values` holds what the room and its actor exchange, and
`state.RoomState` is what storage keeps of a room. Like `imactor/xmpp/`, this
package imports only `imactor.xmpp`, lxml and the standard library (`tests/unit/test_layering.py`).
"""

from __future__ import annotations

from imactor.muc.room import Room
from imactor.muc.state import Affiliation, RoomConfig, RoomState
from imactor.muc.values import ArchiveItem, Outcome, Outgoing, ServiceInfo

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
