"""Discussion history for a newcomer (XEP-0045 §7.2.15): which messages, and how they look.

`History` keeps the room's last messages (subject changes are not replayed: the subject comes
last on entering anyway) up to the room's muc#maxhistoryfetch. It takes a narrow core
(`HistoryCore`: the room's JID and that length), not the room.

The client may limit what it gets with `<history maxchars maxstanzas seconds since/>` in its join
presence; every limit applies, and a value that is not a number (or a date, for `since`) is
ignored as if absent. Replayed messages carry a XEP-0203 delay from the room.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from typing import Protocol

from lxml import etree

from imactor.muc.stanzas import add_delay, copy, parse_stamp
from imactor.muc.values import ArchiveItem
from imactor.xmpp.jid import JID
from imactor.xmpp.namespaces import NS_CLIENT, qname
from imactor.xmpp.stanza import Element

_BODY = qname(NS_CLIENT, "body")
_SUBJECT = qname(NS_CLIENT, "subject")


class HistoryCore(Protocol):
    """What the history needs of its room."""

    @property
    def jid(self) -> JID: ...

    def history_length(self) -> int: ...


class History:
    """The room's last messages, oldest first, for newcomers; iterable, sized."""

    def __init__(self, core: HistoryCore, items: Iterable[ArchiveItem] = ()) -> None:
        self._core = core
        self._items: deque[ArchiveItem] = deque(item for item in items if not is_subject(item.element))
        self.trim()

    def __iter__(self) -> Iterator[ArchiveItem]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def append(self, item: ArchiveItem) -> None:
        self._items.append(item)
        self.trim()

    def clear(self) -> None:
        self._items.clear()

    def trim(self) -> None:
        """Keep no more than the room's length (which its owner may have just lowered)."""
        keep = self._core.history_length()
        while len(self._items) > keep:
            self._items.popleft()

    def replay(self, wanted: Element | None, now: float) -> list[Element]:
        """What a newcomer gets, by its `<history/>` request (None: no limit), as delayed copies."""
        return [replay(item, str(self._core.jid)) for item in select(list(self._items), wanted, now)]


def is_subject(element: Element) -> bool:
    """A subject change (a <subject/> and no <body/>, XEP-0045 §8.1), not a message."""
    return element.find(_SUBJECT) is not None and element.find(_BODY) is None


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
