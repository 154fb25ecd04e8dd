"""Discussion history for a newcomer (XEP-0045 §7.2.15): which messages, and how they look.

The client may limit what it gets with `<history maxchars maxstanzas seconds since/>` in its join
presence; every limit applies, and a value that is not a number (or a date, for `since`) is
ignored as if absent. Replayed messages carry a XEP-0203 delay from the room.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lxml import etree

from imactor.muc.stanzas import add_delay, copy, parse_stamp
from imactor.xmpp.stanza import Element

if TYPE_CHECKING:
    from imactor.muc.room import ArchiveItem


def select(items: list[ArchiveItem], wanted: Element | None, now: float) -> list[ArchiveItem]:
    """The items (oldest first) that a `<history/>` request (or None: no limit) asks for."""
    if wanted is None:
        return items
    chosen = items
    since = parse_stamp(wanted.get("since", "")) if wanted.get("since") is not None else None
    if since is not None:
        chosen = [item for item in chosen if item.stamp >= since]
    seconds = _count(wanted.get("seconds"))
    if seconds is not None:
        chosen = [item for item in chosen if item.stamp >= now - seconds]
    maxstanzas = _count(wanted.get("maxstanzas"))
    if maxstanzas is not None:
        chosen = chosen[max(0, len(chosen) - maxstanzas) :] if maxstanzas else []
    maxchars = _count(wanted.get("maxchars"))
    if maxchars is not None:
        # "characters in the complete XML stanzas", newest first, as they will be sent
        total, start = 0, len(chosen)
        for index in range(len(chosen) - 1, -1, -1):
            total += len(etree.tostring(chosen[index].element, encoding="unicode"))
            if total > maxchars:
                break
            start = index
        chosen = chosen[start:]
    return chosen


def replay(item: ArchiveItem, room: str) -> Element:
    """A private copy of a history message, marked as delayed by the room."""
    element = copy(item.element)
    add_delay(element, room, item.stamp)
    return element


def _count(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        number = int(value.strip())
    except ValueError:
        return None
    return number if number >= 0 else None
