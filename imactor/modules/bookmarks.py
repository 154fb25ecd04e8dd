"""XEP-0402 PEP Native Bookmarks, kept in step with XEP-0048 bookmarks in private storage.

XEP-0402 bookmarks are ordinary PEP items (node `urn:xmpp:bookmarks:1`, one item per room, the
item id being the room's JID), so the PEP module stores, retrieves and notifies them. This module
adds the unification XEP-0402 §5.3 describes, announced as `urn:xmpp:bookmarks:1#compat`:

- after every change of the node (PEP announces it: `Module.on_node`), its items are collated
  into the `<storage xmlns='storage:bookmarks'/>` fragment of private XML storage (XEP-0049),
  which is what XEP-0048 clients read; URL bookmarks already stored there are kept;
- when a XEP-0048 client stores a new list through private storage, the node's items are updated
  one by one (published or retracted, with notifications to the account's resources).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

from lxml import etree

from imactor.modules import pep
from imactor.server.modules import AccountApi, EnabledModule, Module, NodeEvent, Xep
from imactor.xmpp import pubsub as ps
from imactor.xmpp import stanza as st
from imactor.xmpp.jid import JID
from imactor.xmpp.namespaces import NS_BOOKMARKS, NS_BOOKMARKS_LEGACY, qname

if TYPE_CHECKING:
    from imactor.storage import Storage

NS_COMPAT = NS_BOOKMARKS + "#compat"
PRIVATE_KEY = qname(NS_BOOKMARKS_LEGACY, "storage")  #: the private storage key of XEP-0048 lists

module = Module(
    name="bookmarks", summary="Bookmarks (PEP native, unified with private storage)",
    xeps=(Xep("0402", "1.2.0", "complete"),
          Xep("0048", "1.2", "partial: private XML storage (XEP-0049) only, unified with XEP-0402")),
    features=(NS_COMPAT,), account_features=(NS_COMPAT,), depends=("pep", "private"),
)  # fmt: skip

#: XEP-0402 §3.1: how clients configure the node; used when a XEP-0048 list creates it.
NODE_CONFIG = ps.NodeConfig(access_model="whitelist", send_last_published_item="never")


def enabled(modules: Iterable[EnabledModule]) -> bool:
    return any(m.name == module.name for m in modules)


# ---- conversions (pure) ----------------------------------------------------------------------


def legacy_storage(items: Mapping[str, bytes], previous: bytes | None) -> bytes:
    """XEP-0402 items (room JID → <conference/>) as a XEP-0048 <storage/> fragment."""
    storage = etree.Element(PRIVATE_KEY, nsmap=st.default_ns(NS_BOOKMARKS_LEGACY))
    for room, payload in items.items():
        conference = etree.fromstring(payload)
        legacy = st.child(storage, NS_BOOKMARKS_LEGACY, "conference")
        legacy.set("jid", room)
        for attribute in ("name", "autojoin"):
            if conference.get(attribute) is not None:
                legacy.set(attribute, conference.get(attribute, ""))
        for tag in ("nick", "password"):
            text = conference.findtext(qname(NS_BOOKMARKS, tag))
            if text is not None:
                st.child(legacy, NS_BOOKMARKS_LEGACY, tag, text)
    if previous is not None:  # XEP-0402 §1: URL bookmarks are out of its scope, so they stay here
        for url in etree.fromstring(previous).iterchildren(qname(NS_BOOKMARKS_LEGACY, "url")):
            storage.append(url)
    return st.serialize(storage)


def native_items(storage: st.Element, limit: int) -> dict[str, bytes]:
    """A XEP-0048 <storage/> fragment as XEP-0402 items; conferences without a valid JID are
    skipped, and at most `limit` are kept."""
    found: dict[str, bytes] = {}
    for legacy in storage.iterchildren(qname(NS_BOOKMARKS_LEGACY, "conference")):
        try:
            room = str(JID.parse(legacy.get("jid", "")).bare)
        except ValueError:
            continue
        conference = etree.Element(qname(NS_BOOKMARKS, "conference"), nsmap=st.default_ns(NS_BOOKMARKS))
        if legacy.get("name") is not None:
            conference.set("name", legacy.get("name", ""))
        if legacy.get("autojoin") in ("true", "1"):
            conference.set("autojoin", "true")
        for tag in ("nick", "password"):
            text = legacy.findtext(qname(NS_BOOKMARKS_LEGACY, tag))
            if text is not None:
                st.child(conference, NS_BOOKMARKS, tag, text)
        found[room] = st.serialize(conference)
        if len(found) >= limit:
            break
    return found


# ---- the two directions ----------------------------------------------------------------------


@module.on_node(NS_BOOKMARKS)
async def node_event(event: NodeEvent) -> None:
    """Every change of the node, once made, is collated for XEP-0048 clients."""
    if event.kind != "publishing":
        await node_changed(event.account, event.storage, event.config)


async def node_changed(account: AccountApi, storage: Storage, config: ps.NodeConfig) -> None:
    """PEP → private storage: the whole node, collated for XEP-0048 clients."""
    stored = await storage.pep.items(account.username, NS_BOOKMARKS, limit=config.max_items)
    previous = await storage.private.get(account.username, PRIVATE_KEY)
    items = {item.item_id: item.payload for item in stored}
    await storage.private.set(account.username, PRIVATE_KEY, legacy_storage(items, previous))


async def legacy_stored(account: AccountApi, storage: Storage, fragment: st.Element) -> None:
    """Private storage → PEP: a XEP-0048 client stored a new list; update the items one by one.

    A node this creates keeps the PEP module's default `max_items` (the private storage handler
    does not see the PEP module's options)."""
    node = await storage.pep.node(account.username, NS_BOOKMARKS)
    if node is None:
        config = replace(NODE_CONFIG, max_items=pep.Options().max_items)
        await storage.pep.set_node(account.username, NS_BOOKMARKS, config.to_json(), config.max_items)
    else:
        config = ps.NodeConfig.from_json(node)
    wanted = native_items(fragment, config.max_items)
    stored = await storage.pep.items(account.username, NS_BOOKMARKS, limit=config.max_items)
    current = {item.item_id: item.payload for item in stored}
    for room, payload in wanted.items():
        if current.get(room) != payload:
            await storage.pep.publish(account.username, NS_BOOKMARKS, room, payload, config.max_items)
            await pep.notify(account, NS_BOOKMARKS, config, ps.items_event(NS_BOOKMARKS, [(room, payload)]))
    gone = [room for room in current if room not in wanted]
    if gone:
        await storage.pep.retract(account.username, NS_BOOKMARKS, gone)
        await pep.notify(account, NS_BOOKMARKS, config, ps.retract_event(NS_BOOKMARKS, gone))
