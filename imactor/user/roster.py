"""The account's roster in memory (RFC 6121 §2): the items as stored, their version, and the
pushes that follow each change (§2.1.6).

Every change is stored first: a write that fails (`StorageError`) leaves the items in memory as
they are stored.

Shared contacts (`Module.shared_roster`: the company directory's colleagues) are kept beside the
stored items and never stored. What the account and its clients see of a contact (`item`) is
the two merged: a shared contact is subscribed both ways, with the groups of both and the name
the user gave, if any. Its subscription is not the account's to change (`save_state` leaves it,
and a client's roster set stores only its name and groups). The version clients see is the
stored one plus the shared contacts' revision (`client_version`): both only grow, so the sum
changes with every change of either (RFC 6121 §2.6.1: the version is opaque to clients).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
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
    __slots__ = ("_new_id", "_push", "_store", "_username", "items", "shared", "shared_revision", "version")

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
        self.items: dict[str, RosterItem] = {}  #: as stored
        self.version = 0  #: the stored version
        self.shared: dict[str, RosterItem] = {}  #: shared contacts, never stored
        self.shared_revision = 0

    @property
    def client_version(self) -> int:
        """The version clients see and cache (module docstring)."""
        return self.version + self.shared_revision

    def item(self, key: str) -> RosterItem | None:
        """The contact `key` as the account sees it: stored and shared parts merged."""
        stored, shared = self.items.get(key), self.shared.get(key)
        if shared is None or stored is None:
            return stored or shared
        groups = stored.groups + tuple(group for group in shared.groups if group not in stored.groups)
        return replace(stored, name=stored.name or shared.name, subscription="both", ask=False,
                       pending_in=False, groups=groups)  # fmt: skip

    def view(self) -> Mapping[str, RosterItem]:
        """Every contact as the account sees it (`item`): the stored items themselves when
        nothing is shared, else a merged view that builds nothing per lookup (modules ask it
        for one contact at a time, on the presence and PEP paths)."""
        return self.items if not self.shared else _MergedView(self)

    def is_shared(self, key: str) -> bool:
        return key in self.shared

    def set_shared(self, items: dict[str, RosterItem], revision: int) -> list[str]:
        """Replace the shared contacts; returns the contacts whose `item` changed."""
        keys = dict.fromkeys((*self.shared, *items))
        before = {key: self.item(key) for key in keys}
        self.shared, self.shared_revision = items, revision
        return [key for key in keys if self.item(key) != before[key]]

    def push_current(self, key: str) -> None:
        """Push the contact `key` as it is now (removed, when it is no longer seen)."""
        item = self.item(key)
        if item is None or not item.is_visible:
            item = RosterItem(jid=key, subscription="remove")
        self._push_item(item)

    def _push_item(self, item: RosterItem) -> None:
        push = st.make("iq", type_="set", id_=self._new_id())
        query = st.child(push, NS_ROSTER, "query")
        query.set("ver", str(self.client_version))
        query.append(item_element(item))
        self._push(push)

    def load(self, items: Sequence[RosterItem], version: int) -> None:
        self.items = {item.jid: item for item in items}
        self.version = version

    def clear(self) -> None:
        self.items.clear()
        self.shared.clear()

    def state(self, key: str) -> subs.SubState:
        """The subscription state of the contact `key` (a bare JID), as RFC 6121 §3 tables read it."""
        item = self.item(key)
        if item is None:
            return subs.SubState()
        return subs.SubState(item.subscription, item.ask, item.pending_in, item.approved)  # type: ignore[arg-type]

    def subscribed_from(self, jid: JID) -> bool:
        """The contact gets our presence (a from/both subscription)."""
        item = self.item(str(jid.bare))
        return item is not None and item.subscription in ("from", "both")

    def contacts(self, *subscriptions: str) -> Iterator[str]:
        """The contacts whose subscription is one of `subscriptions`."""
        for contact, item in self.view().items():
            if item.subscription in subscriptions:
                yield contact

    def pending_in(self) -> Iterator[str]:
        """Contacts whose subscription request waits for an answer (§3.1.3)."""
        for contact, item in self.view().items():
            if item.pending_in:
                yield contact

    async def set_item(self, item: RosterItem | None, jid: str) -> None:
        """Store an item (None: remove it) and push it to interested resources (§2.1.6). Of a
        shared contact, only the name and groups the user gave are stored (module docstring)."""
        if item is not None and jid in self.shared:
            item = self._personal_part(item, jid)
            if item == RosterItem(jid=jid):
                item = None  # nothing of the user's own left to keep
        previous = self.items.get(jid)
        if item is None:
            self.version = await self._store.remove(self._username, jid)
            self.items.pop(jid, None)
            pushed = RosterItem(jid=jid, subscription="remove")
        else:
            if item.is_visible and not item.listed:
                item = replace(item, listed=True)
            self.version = await self._store.put(self._username, item)
            self.items[jid] = item
            pushed = item
        if jid in self.shared:
            self.push_current(jid)
            return
        if item is not None and (not item.is_visible or _shown_alike(previous, item)):
            return
        self._push_item(pushed)

    def _personal_part(self, item: RosterItem, jid: str) -> RosterItem:
        """What the user set on a shared contact: a name other than the shared one, and groups
        other than the shared ones; the subscription stays as stored."""
        shared = self.shared[jid]
        base = self.items.get(jid) or RosterItem(jid=jid)
        name = None if item.name == shared.name else item.name
        return replace(base, name=name, groups=tuple(g for g in item.groups if g not in shared.groups))

    async def save_state(self, key: str, state: subs.SubState, *, hidden_ok: bool = False) -> None:
        """Store the contact's new subscription `state` (from the §3 tables); a shared contact's
        stays as the module shares it."""
        if key in self.shared:
            return
        item = self.items.get(key)
        base = item or RosterItem(jid=key, name=None)
        if item is not None and item.is_visible:
            # On the user's roster: a contact's request from now on does not take it off
            # (`RosterItem.listed`; rows stored before the flag existed have it unset).
            base = replace(base, listed=True)
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


def _shown_alike(before: RosterItem | None, after: RosterItem) -> bool:
    """A client sees no difference between the two (§2.1.2: a pending inbound request is not
    part of an item's XML): no roster push."""
    return (
        before is not None and before.is_visible
        and replace(before, pending_in=False, listed=True) == replace(after, pending_in=False, listed=True)
    )  # fmt: skip


class _MergedView(Mapping[str, RosterItem]):
    """`Roster.view` with shared contacts: `Roster.item` per lookup."""

    __slots__ = ("_roster",)

    def __init__(self, roster: Roster) -> None:
        self._roster = roster

    def __getitem__(self, key: str) -> RosterItem:
        item = self._roster.item(key)
        if item is None:
            raise KeyError(key)
        return item

    def __iter__(self) -> Iterator[str]:
        roster = self._roster
        yield from roster.items
        yield from (key for key in roster.shared if key not in roster.items)

    def __len__(self) -> int:
        roster = self._roster
        return len(roster.items) + sum(1 for key in roster.shared if key not in roster.items)
