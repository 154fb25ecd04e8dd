"""XEP-0163: Personal Eventing Protocol, on a XEP-0060 publish-subscribe core.

Every account is a pubsub service at its bare JID. Its IQs run in the account's `UserActor`
(ACCOUNT scope), which serializes every change to its nodes; nodes and items live in storage
(`storage.pep`), and the rules (node configuration, access models, publish-options
preconditions, limits) in the sans-IO `imactor.xmpp.pubsub`.

Subscriptions are implicit (XEP-0163 §4): an entity gets notifications of a node when it is
available, may access the node (access model), and advertises `<node>+notify` in its entity
capabilities (XEP-0115). The presence hook records every available resource that presence
brings to the account from its own resources and from entities subscribed to its presence
(§4.1 auto-subscribe; a directed presence from anyone else is not recorded, nor its caps asked)
with its caps `(hash, ver)`; features of an unknown `ver` are asked once with disco#info from the
account's bare JID, verified, and cached for the whole worker (an answer that does not hash to
its `ver` serves only the resource that gave it, XEP-0115 §5.4). The last item of each node is
sent to a resource when it becomes available (`send_last_published_item`), and when its caps
become known. The account's disco#items lists the nodes the asker may access, and a node's
items (`account_items`, called by the disco module).

Every change that an IQ makes to a node is announced (`NodeEvent`) to the enabled modules that
follow that node (`Module.on_node`): avatar (XEP-0398) and bookmarks (XEP-0402 §5.3) mirror
their nodes into other storage that way. This module imports neither; they import it, to
publish and notify on the account's behalf.

Options (`[modules.pep]`): `max_items` (the most items a node keeps; "max" means it),
`max_item_bytes` (largest item payload; larger is `not-acceptable` + `payload-too-big`),
`max_nodes` (nodes per account), `max_avatar_bytes` (largest XEP-0084 image, see `avatar.py`).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lxml import etree

from imactor.server.modules import (
    AccountApi,
    IqContext,
    Module,
    NodeEvent,
    PresenceContext,
    Scope,
    Xep,
)
from imactor.xmpp import caps
from imactor.xmpp import pubsub as ps
from imactor.xmpp import stanza as st
from imactor.xmpp.errors import StanzaError
from imactor.xmpp.jid import JID
from imactor.xmpp.namespaces import (
    NS_CAPS,
    NS_DISCO_INFO,
    NS_PUBSUB,
    NS_PUBSUB_OWNER,
    qname,
)

if TYPE_CHECKING:
    from imactor.storage import Storage


@dataclass(frozen=True)
class Options:
    max_items: int = 256  #: the most items one node keeps ("max" in a node configuration)
    max_item_bytes: int = 65536  #: largest item payload, serialized
    max_nodes: int = 128  #: nodes per account
    max_avatar_bytes: int = 49152  #: largest XEP-0084 avatar image (decoded), with the avatar module

    def limits(self) -> ps.Limits:
        return ps.Limits(self.max_items, self.max_item_bytes, self.max_nodes)


module = Module(
    name="pep", summary="Personal Eventing Protocol (publish-subscribe)",
    xeps=(Xep("0163", "1.2.2", "complete"),
          Xep("0060", "1.26.0", "partial: PEP subset (implicit subscriptions, owner-only publishing)"),
          Xep("0223", "1.1.1", "complete")),  # XEP-0115 client caps: see the docstring (caps module)
    features=(NS_PUBSUB, *ps.FEATURES), account_features=(NS_PUBSUB, *ps.FEATURES),
    account_identities=(("pubsub", "pep", ""),), options=Options, depends=("disco",),
)  # fmt: skip

#: Caps (hash, ver) → verified features, for the whole worker (XEP-0115 §6.3: cache by ver).
_CAPS: dict[tuple[str, str], frozenset[str]] = {}
_CAPS_LIMIT = 4096

CapsKey = tuple[str, str]


@dataclass
class _Presence:
    """What the account's actor knows of available resources (its own and its contacts')."""

    caps: dict[JID, CapsKey | None] = field(default_factory=dict)  #: full JID → caps
    asked: set[CapsKey] = field(default_factory=set)  #: disco#info sent, answer pending
    nodes: dict[JID, str] = field(default_factory=dict)  #: full JID → its caps `node`
    #: Answers that did not hash to their ver: true of that resource, never cached (§5.4).
    unverified: dict[JID, frozenset[str]] = field(default_factory=dict)

    def features(self, full: JID) -> frozenset[str]:
        found = self.unverified.get(full)
        if found is not None:
            return found
        key = self.caps.get(full)
        return frozenset() if key is None else _CAPS.get(key, frozenset())


def _state(account: AccountApi) -> _Presence:
    found = account.account_state().get("pep")
    if found is None:
        found = account.account_state()["pep"] = _Presence()
    assert isinstance(found, _Presence)
    return found


# ---- helpers ---------------------------------------------------------------------------------


def _owner(ctx: IqContext) -> AccountApi:
    assert ctx.account is not None
    return ctx.account


def _auto_subscriber(account: AccountApi, jid: JID) -> bool:
    """XEP-0163 §4.1: the owner, or an entity with a subscription to the owner's presence."""
    relation = _relation(account, jid)
    return relation.is_owner or relation.subscription in ("from", "both")


def _relation(account: AccountApi, jid: JID) -> ps.Relation:
    if jid.bare == account.jid:
        return ps.Relation(is_owner=True)
    item = account.roster_items().get(str(jid.bare))
    if item is None:
        return ps.Relation()
    return ps.Relation(subscription=item.subscription, groups=tuple(item.groups))


async def _config(ctx: IqContext, node: str) -> ps.NodeConfig:
    stored = await ctx.storage.pep.node(_owner(ctx).username, node)
    if stored is None:
        raise StanzaError("item-not-found", "no such node")
    return ps.NodeConfig.from_json(stored)


def _only_owner(ctx: IqContext) -> None:
    if not ctx.is_self:
        raise StanzaError("forbidden", "only the account may change its nodes")


def _result(ctx: IqContext, namespace: str | None = None) -> tuple[st.Element, st.Element | None]:
    reply = st.iq_result(ctx.stanza)
    reply.set("to", str(ctx.from_jid))
    if namespace is None:
        return reply, None
    return reply, st.child(reply, namespace, "pubsub")


# ---- publish, retract, create (pubsub namespace) --------------------------------------------


@module.iq("set", NS_PUBSUB, "pubsub", scope=Scope.ACCOUNT)
async def pubsub_set(ctx: IqContext) -> st.Element:
    known = ("publish", "retract", "create", "subscribe", "unsubscribe", "options")
    op = ps.single_op(ctx.payload, known)
    name = etree.QName(op).localname
    if name in ("subscribe", "unsubscribe", "options"):
        # XEP-0163 §4: subscriptions to PEP nodes are implicit (presence and +notify).
        raise ps.pubsub_error("feature-not-implemented", "unsupported", f"{name}: subscriptions are implicit")
    _only_owner(ctx)
    if name == "publish":
        return await _publish(ctx, op)
    if name == "retract":
        return await _retract(ctx, op)
    return await _create(ctx, op)


async def _publish(ctx: IqContext, publish: st.Element) -> st.Element:
    account = _owner(ctx)
    limits = ctx.options.limits()
    node = ps.check_node_name(publish.get("node"))
    items = publish.findall(qname(NS_PUBSUB, "item"))
    if len(items) != 1:
        raise ps.pubsub_error("bad-request", "item-required" if not items else "invalid-payload")
    payload = ps.check_payload(items[0], limits)
    item_id = items[0].get("id") or uuid.uuid4().hex
    # Before anything is stored: a module that follows the node may refuse the item.
    await _announce(ctx, "publishing", node, None, item_id=item_id, payload=payload)
    options = ps.parse_options_form(ctx.payload.find(qname(NS_PUBSUB, "publish-options")))
    if options is not None and options.form_type != ps.PUBLISH_OPTIONS:
        raise StanzaError("bad-request", "publish-options needs FORM_TYPE " + ps.PUBLISH_OPTIONS)
    nodes = await ctx.storage.pep.nodes(account.username)
    stored = nodes.get(node)
    if stored is None:
        if len(nodes) >= limits.max_nodes:
            raise ps.pubsub_error("not-allowed", "max-nodes-exceeded")
        config = ps.NodeConfig()
        if options is not None:
            # §7.1.5: publish-options of an auto-created node become its configuration.
            try:
                config = config.configured(options, limits, ps.PUBLISH_OPTIONS)
            except StanzaError as error:
                if error.condition == "bad-request":
                    raise
                raise ps.pubsub_error("conflict", "precondition-not-met", error.text) from None
        await ctx.storage.pep.set_node(account.username, node, config.to_json(), config.max_items)
    else:
        config = ps.NodeConfig.from_json(stored)
        if options is not None:
            config.check_preconditions(options, limits)
    data = st.serialize(payload)  # UTF-8: a client's names need not be ASCII
    if config.persist_items:
        await ctx.storage.pep.publish(account.username, node, item_id, data, config.max_items)
    await _announce(ctx, "published", node, config, item_id=item_id, payload=payload)
    await notify(
        account, node, config, ps.items_event(node, [(item_id, data if config.deliver_payloads else None)])
    )
    reply, pubsub = _result(ctx, NS_PUBSUB)
    assert pubsub is not None
    published = st.child(pubsub, NS_PUBSUB, "publish")
    published.set("node", node)
    st.child(published, NS_PUBSUB, "item").set("id", item_id)
    return reply


async def _retract(ctx: IqContext, retract: st.Element) -> st.Element:
    account = _owner(ctx)
    node = ps.check_node_name(retract.get("node"))
    config = await _config(ctx, node)
    ids = [item.get("id") or "" for item in retract.findall(qname(NS_PUBSUB, "item"))]
    if not ids or not all(ids):
        raise ps.pubsub_error("bad-request", "item-required")
    found = await ctx.storage.pep.retract(account.username, node, ids)
    if not found:
        raise StanzaError("item-not-found", "no such item")
    if retract.get("notify") in ("true", "1") and config.notify_retract:
        await notify(account, node, config, ps.retract_event(node, found))
    await _announce(ctx, "retracted", node, config, item_ids=tuple(found))
    return _result(ctx)[0]


async def _create(ctx: IqContext, create: st.Element) -> st.Element:
    account = _owner(ctx)
    limits = ctx.options.limits()
    node = create.get("node")
    if not node:
        raise ps.pubsub_error("not-acceptable", "nodeid-required", "PEP nodes need a name")
    ps.check_node_name(node)
    nodes = await ctx.storage.pep.nodes(account.username)
    if node in nodes:
        raise StanzaError("conflict", "the node exists")
    if len(nodes) >= limits.max_nodes:
        raise ps.pubsub_error("not-allowed", "max-nodes-exceeded")
    config = ps.NodeConfig()
    form = ps.parse_options_form(ctx.payload.find(qname(NS_PUBSUB, "configure")))
    if form is not None:
        config = config.configured(form, limits)  # §8.1.3: create and configure
    await ctx.storage.pep.set_node(account.username, node, config.to_json(), config.max_items)
    return _result(ctx)[0]


# ---- retrieval ------------------------------------------------------------------------------


@module.iq("get", NS_PUBSUB, "pubsub", scope=Scope.ACCOUNT)
async def pubsub_get(ctx: IqContext) -> st.Element:
    op = ps.single_op(ctx.payload, ("items", "subscriptions", "affiliations", "options", "default"))
    name = etree.QName(op).localname
    account = _owner(ctx)
    if name in ("subscriptions", "affiliations"):
        # §5.6 / §5.7: no explicit subscriptions on PEP; the owner owns every node.
        reply, pubsub = _result(ctx, NS_PUBSUB)
        assert pubsub is not None
        listing = st.child(pubsub, NS_PUBSUB, name)
        if name == "affiliations" and ctx.is_self:
            for node in sorted(await ctx.storage.pep.nodes(account.username)):
                entry = st.child(listing, NS_PUBSUB, "affiliation")
                entry.set("node", node)
                entry.set("affiliation", "owner")
        return reply
    if name != "items":
        raise ps.pubsub_error("feature-not-implemented", "unsupported", f"{name} is not supported")
    node = ps.check_node_name(op.get("node"))
    config = await _config(ctx, node)
    if not ps.may_access(config, _relation(account, ctx.from_jid)):
        raise ps.access_error(config)
    limit = ps.max_items(op, config.max_items)
    stored = await ctx.storage.pep.items(account.username, node, limit=limit, item_ids=ps.requested_ids(op))
    reply, pubsub = _result(ctx, NS_PUBSUB)
    assert pubsub is not None
    items = st.child(pubsub, NS_PUBSUB, "items")
    items.set("node", node)
    for item in stored:
        ps.item_element(items, NS_PUBSUB, item.item_id, item.payload)
    return reply


# ---- owner use cases (pubsub#owner namespace) -----------------------------------------------


@module.iq("get", NS_PUBSUB_OWNER, "pubsub", scope=Scope.ACCOUNT)
async def owner_get(ctx: IqContext) -> st.Element:
    _only_owner(ctx)
    op = ps.single_op(ctx.payload, ("configure", "default", "affiliations", "subscriptions"))
    name = etree.QName(op).localname
    limits = ctx.options.limits()
    reply, pubsub = _result(ctx, NS_PUBSUB_OWNER)
    assert pubsub is not None
    if name == "default":  # §8.3
        ps.NodeConfig().form(st.child(pubsub, NS_PUBSUB_OWNER, "default"), limits)
        return reply
    node = ps.check_node_name(op.get("node"))
    config = await _config(ctx, node)
    answer = st.child(pubsub, NS_PUBSUB_OWNER, name)
    answer.set("node", node)
    if name == "configure":  # §8.2.1
        config.form(answer, limits)
    elif name == "affiliations":  # §8.9.1: only the owner
        entry = st.child(answer, NS_PUBSUB_OWNER, "affiliation")
        entry.set("jid", str(_owner(ctx).jid))
        entry.set("affiliation", "owner")
    return reply


@module.iq("set", NS_PUBSUB_OWNER, "pubsub", scope=Scope.ACCOUNT)
async def owner_set(ctx: IqContext) -> st.Element:
    _only_owner(ctx)
    account = _owner(ctx)
    op = ps.single_op(ctx.payload, ("configure", "delete", "purge"))
    name = etree.QName(op).localname
    node = ps.check_node_name(op.get("node"))
    config = await _config(ctx, node)
    if name == "configure":  # §8.2.4
        form = ps.parse_options_form(op)
        if form is None:
            raise StanzaError("bad-request", "a node configuration form is required")
        if form.type == "cancel":
            return _result(ctx)[0]
        new = config.configured(form, ctx.options.limits())
        await ctx.storage.pep.set_node(account.username, node, new.to_json(), new.max_items)
        kind = "configured"
    elif name == "delete":  # §8.4
        kind = "deleted"
        await ctx.storage.pep.delete_node(account.username, node)
        if config.notify_delete:
            await notify(account, node, config, ps.event(node, "delete")[0])
    else:  # purge, §8.5
        kind = "purged"
        await ctx.storage.pep.purge(account.username, node)
        if config.notify_retract:
            await notify(account, node, config, ps.event(node, "purge")[0])
    await _announce(ctx, kind, node, config)
    return _result(ctx)[0]


async def publish_item(
    account: AccountApi, storage: Storage, node: str, item_id: str, payload: st.Element
) -> None:
    """Publish on the account's behalf (conversions from other storage, XEP-0398 §4): the node
    is created with the defaults if needed; its subscribers are notified. No `NodeEvent` is
    announced: the module that publishes is the one that follows the node, and the change
    comes from the storage it mirrors."""
    stored = await storage.pep.node(account.username, node)
    config = ps.NodeConfig() if stored is None else ps.NodeConfig.from_json(stored)
    if stored is None:
        await storage.pep.set_node(account.username, node, config.to_json(), config.max_items)
    data = st.serialize(payload)  # UTF-8: a client's names need not be ASCII
    if config.persist_items:
        await storage.pep.publish(account.username, node, item_id, data, config.max_items)
    await notify(
        account, node, config, ps.items_event(node, [(item_id, data if config.deliver_payloads else None)])
    )


async def _announce(
    ctx: IqContext, kind: str, node: str, config: ps.NodeConfig | None, *, item_id: str | None = None,
    payload: st.Element | None = None, item_ids: tuple[str, ...] = (),
) -> None:  # fmt: skip
    """Tell the enabled modules that follow `node` (`Module.on_node`: avatar, bookmarks) that it
    changed; a hook of a "publishing" event may refuse the item (`StanzaError`)."""
    event = NodeEvent(kind, node, _owner(ctx), ctx.storage, config, ctx.options, item_id, payload, item_ids)
    for enabled in ctx.server.modules():
        for followed, hook in enabled.node_hooks:
            if followed == node:
                await hook(event)


async def account_items(ctx: IqContext, node: str | None) -> list[tuple[str, str | None, str | None]] | None:
    """disco#items of the account: its nodes that the requester may access (XEP-0060 §5.2), or
    the item ids of one node (§5.5)."""
    account = _owner(ctx)
    relation = _relation(account, ctx.from_jid)
    owner = str(account.jid)
    if node is None:
        nodes = await ctx.storage.pep.nodes(account.username)
        return [
            (owner, name, None)
            for name, config in sorted(nodes.items())
            if ps.may_access(ps.NodeConfig.from_json(config), relation)
        ]
    stored = await ctx.storage.pep.node(account.username, node)
    if stored is None:
        return None
    config = ps.NodeConfig.from_json(stored)
    if not ps.may_access(config, relation):
        raise ps.access_error(config)
    ids = await ctx.storage.pep.item_ids(account.username, node, limit=config.max_items)
    return [(owner, None, item_id) for item_id in ids]


module.account_items = account_items


# ---- notifications --------------------------------------------------------------------------


async def notify(account: AccountApi, node: str, config: ps.NodeConfig, payload: st.Element) -> None:
    """§7.1.2: an event to every available resource that wants it (+notify) and may see it."""
    if not config.deliver_notifications:
        return
    interested = node + "+notify"
    state = _state(account)
    for full in list(state.caps):
        if not _auto_subscriber(account, full):
            continue  # XEP-0163 §7.1: its subscription to the owner's presence ended since
        if interested in state.features(full) and ps.may_access(config, _relation(account, full)):
            await _send_event(account, full, config, payload)


async def _send_event(account: AccountApi, to: JID, config: ps.NodeConfig, payload: st.Element) -> None:
    message = st.make("message", to=to, from_=account.jid, type_=config.notification_type,
                      id_=uuid.uuid4().hex)  # fmt: skip
    message.append(st.parse(st.serialize(payload)))
    await account.route(message)


async def _send_last_items(account: AccountApi, storage: Storage, full: JID, nodes: frozenset[str]) -> None:
    """§6.1.7 / XEP-0163 §4.3.2: the last item of each node `full` wants, on its presence."""
    if not nodes:
        return
    relation = _relation(account, full)
    stored = await storage.pep.nodes(account.username)
    for node in sorted(nodes & stored.keys()):
        config = ps.NodeConfig.from_json(stored[node])
        if config.send_last_published_item != "on_sub_and_presence" or not config.deliver_notifications:
            continue
        if not ps.may_access(config, relation):
            continue
        last = await storage.pep.items(account.username, node, limit=1)
        if last:
            payload = last[0].payload if config.deliver_payloads else None
            await _send_event(account, full, config, ps.items_event(node, [(last[0].item_id, payload)]))


@module.on_presence
async def on_presence(ctx: PresenceContext) -> None:
    element = ctx.stanza
    try:
        full = JID.parse(element.get("from", ""))
    except ValueError:
        return
    if full.resourcepart is None:
        return
    state = _state(ctx.account)
    kind = element.get("type", "")
    if kind == "unavailable":
        state.caps.pop(full, None)
        state.unverified.pop(full, None)
        state.nodes.pop(full, None)
        return
    if kind != "":
        return
    if not _auto_subscriber(ctx.account, full):
        # XEP-0163 §4/§4.1: only the owner's resources and entities subscribed to the owner's
        # presence get notifications. Others' caps (a directed presence from a stranger) are of
        # no use here, and asking their disco#info would be a query their client did not expect:
        # it is one more than the one their correspondent makes (XEP-0115 §6.2, aioxmpp's check).
        state.caps.pop(full, None)
        state.unverified.pop(full, None)
        state.nodes.pop(full, None)
        return
    caps = element.find(qname(NS_CAPS, "c"))
    key: CapsKey | None = None
    if caps is not None and caps.get("hash") and caps.get("ver") and caps.get("node"):
        key = (caps.get("hash", "").lower(), caps.get("ver", ""))
        state.nodes[full] = caps.get("node", "")
    known = full in state.caps and state.caps[full] == key
    state.caps[full] = key
    if not known:
        state.unverified.pop(full, None)
    if known or key is None:
        return  # a presence update of a resource already seen: no new last items
    if key in _CAPS:
        await _send_last_items(ctx.account, ctx.storage, full, ps.notify_nodes(_CAPS[key]))
        return
    if key in state.asked:
        return  # its answer will serve this resource too
    state.asked.add(key)
    await _ask_caps(ctx.account, ctx.storage, full, key, spread=True)


async def _ask_caps(account: AccountApi, storage: Storage, full: JID, key: CapsKey, *, spread: bool) -> None:
    """disco#info of `node#ver` to `full` (XEP-0115 §6.2); `spread`: an answer that does not
    verify makes the others waiting on the same ver be asked one by one."""
    query = st.make("iq", to=full, type_="get")
    st.child(query, NS_DISCO_INFO, "query").set("node", f"{_state(account).nodes.get(full, '')}#{key[1]}")
    await account.request(query, _on_caps(account, storage, key, full, spread))


def _on_caps(
    account: AccountApi, storage: Storage, key: CapsKey, asked: JID, spread: bool
) -> Callable[[st.Element], Awaitable[None]]:
    async def on_reply(reply: st.Element) -> None:
        state = _state(account)
        if spread:
            state.asked.discard(key)
        query = reply.find(qname(NS_DISCO_INFO, "query"))
        features = None if query is None else caps.verify(query, key[0], key[1])
        if features is None:
            # XEP-0115 §5.4: a ver that does not match is never cached; the answer is still what
            # that one resource supports (some clients hash stale feature lists).
            if query is not None and reply.get("type") == "result" and state.caps.get(asked) == key:
                state.unverified[asked] = caps.disco_features(query)
                await _send_last_items(account, storage, asked, ps.notify_nodes(state.unverified[asked]))
            if spread:
                waiting = [
                    f
                    for f, seen in state.caps.items()
                    if seen == key and f != asked and f not in state.unverified
                ]
                for full in waiting:
                    await _ask_caps(account, storage, full, key, spread=False)
            return
        if len(_CAPS) >= _CAPS_LIMIT:
            del _CAPS[next(iter(_CAPS))]
        _CAPS[key] = features
        nodes = ps.notify_nodes(features)
        for full, seen in list(state.caps.items()):
            if seen == key and full not in state.unverified:
                await _send_last_items(account, storage, full, nodes)

    return on_reply
