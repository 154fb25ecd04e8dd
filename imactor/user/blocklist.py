"""The account's XEP-0191 block list, as its actor checks it on every stanza in and out."""

from __future__ import annotations

from collections.abc import Iterable

from imactor.xmpp.jid import JID

#: Shared by every account that blocks nobody: since Python 3.10 each `frozenset()` is a new
#: 216-byte object, and an online account keeps its blocklist for as long as it is online.
NO_BLOCKS: frozenset[str] = frozenset()


class Blocklist:
    __slots__ = ("jids",)

    def __init__(self) -> None:
        self.jids = NO_BLOCKS

    def set(self, jids: Iterable[str]) -> None:
        given = frozenset(jids)
        self.jids = given if given else NO_BLOCKS

    def blocks(self, jid: JID) -> bool:
        """XEP-0191 §3.1: an item matches the full JID, the bare JID or the domain."""
        jids = self.jids
        if not jids:
            return False
        return str(jid) in jids or str(jid.bare) in jids or jid.domainpart in jids
