"""The account's roster in memory (RFC 6121 §2): the items as stored, their version, and the
pushes that follow each change (§2.1.6).

Every change is stored first: a write that fails (`StorageError`) leaves the items in memory as
they are stored.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from imactor.xmpp import stanza as st
from imactor.xmpp import subscription as subs
from imactor.xmpp.jid import JID
from imactor.xmpp.namespaces import NS_ROSTER
from imactor.xmpp.roster import RosterItem, item_element
from imactor.xmpp.stanza import Element

if TYPE_CHECKING:
    from imactor.storage import RosterStore


class Roster:
    __slots__ = ("_new_id", "_push", "_store", "_username", "items", "version")

    def __init__(
        self,
        username: str,
        store: RosterStore,
        *,
        new_id: Callable[[], str],
        push: Callable[[Element], None],
    ) -> None:
        self._username = username
        self._store = store
        self._new_id = new_id
        #: Sends a roster push to the resources that asked for the roster.
        self._push = push
        self.items: dict[str, RosterItem] = {}
        self.version = 0

    def load(self, items: Sequence[RosterItem], version: int) -> None:
        self.items = {item.jid: item for item in items}
        self.version = version

    def clear(self) -> None:
        self.items.clear()

    def state(self, key: str) -> subs.SubState:
        """The subscription state of the contact `key` (a bare JID), as RFC 6121 §3 tables read it."""
        item = self.items.get(key)
        if item is None:
            return subs.SubState()
        return subs.SubState(item.subscription, item.ask, item.pending_in, item.approved)  # type: ignore[arg-type]

    def subscribed_from(self, jid: JID) -> bool:
        """The contact gets our presence (a from/both subscription)."""
        item = self.items.get(str(jid.bare))
        return item is not None and item.subscription in ("from", "both")

    def contacts(self, *subscriptions: str) -> Iterator[str]:
        """The contacts whose subscription is one of `subscriptions`."""
        for contact, item in self.items.items():
            if item.subscription in subscriptions:
                yield contact

    def pending_in(self) -> Iterator[str]:
        """Contacts whose subscription request waits for an answer (§3.1.3)."""
        for contact, item in self.items.items():
            if item.pending_in:
                yield contact

    async def set_item(self, item: RosterItem | None, jid: str) -> None:
        """Store an item (None: remove it) and push it to interested resources (§2.1.6)."""
        if item is None:
            self.version = await self._store.remove(self._username, jid)
            self.items.pop(jid, None)
            pushed = RosterItem(jid=jid, subscription="remove")
        else:
            self.version = await self._store.put(self._username, item)
            self.items[jid] = item
            pushed = item
        if item is not None and not item.is_visible:
            return
        push = st.make("iq", type_="set", id_=self._new_id())
        query = st.child(push, NS_ROSTER, "query")
        query.set("ver", str(self.version))
        query.append(item_element(pushed))
        self._push(push)

    async def save_state(self, key: str, state: subs.SubState, *, hidden_ok: bool = False) -> None:
        """Store the contact's new subscription `state` (from the §3 tables)."""
        item = self.items.get(key)
        base = item or RosterItem(jid=key, name=None)
        new = replace(base, subscription=state.subscription, ask=state.pending_out,
                      pending_in=state.pending_in, approved=state.approved)  # fmt: skip
        if (item is None or not item.is_visible) and state == subs.SubState():
            # An item the user never saw (it only held an inbound request) that is now empty:
            # a refused or withdrawn request leaves no trace in the roster (RFC 6121 §3.1.3).
            if item is not None:
                self.version = await self._store.remove(self._username, key)
                self.items.pop(key, None)
            return
        if item is None and not hidden_ok and not state.pending_out and not state.approved:
            return
        await self.set_item(new, key)
