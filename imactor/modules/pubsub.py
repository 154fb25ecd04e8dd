"""XEP-0060 Publish-Subscribe as a service of its own, at ``pubsub.<domain>`` (``subdomain``).

The PEP core is reused: node configuration and its form, publish-options preconditions, payload
checks and event payloads are `imactor.xmpp.pubsub`'s; what a service node adds (publish model,
affiliations, explicit subscriptions, the access models open and whitelist) is in the sans-IO
`imactor.xmpp.pubsub_service`. Nodes, items, affiliations and subscriptions live in storage
(`storage.pubsub`, keyed by the service's JID).

Handlers run with `Scope.SERVICE`, in the task of whichever worker routes the request: there is
no actor per node, so no state is kept in memory, and each change is one transaction that locks
the node's row (`imactor.storage.pubsub_service`): publishes to one node from two workers never
lose or duplicate an item, and the node keeps at most `max_items`. Notifications (§7.1.2) go to
every subscribed JID through the router, from the service's JID.

Who may create nodes (``creators``): "local" (the server's own accounts, the default), "admins"
(`[server] admins`) or "anyone". The creator is the node's owner; owners manage affiliations
(owner, publisher, member, outcast) and subscriptions (pubsub#owner). One subscription per JID
and node, always "subscribed" (no authorize access model). Not implemented: collection nodes,
subscription options, presence and roster access models, auto-create, item expiry.

Circles (`imactor.modules.circles`): when that module runs, the requests about its nodes (names
under ``circles/`` and their comments and like nodes) go to `imactor.modules.circles.feed`, and
nobody may create such a name by hand.

Options (`[modules.pubsub]`): `subdomain`, `creators`, `max_items` (most items a node may keep),
`default_max_items` (a new node's), `max_item_bytes`, `max_nodes` (nodes of the service).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from lxml import etree

from imactor.modules.circles import feed as circles
from imactor.server.modules import IqContext, Module, ModuleConfigError, Scope, ServiceSpec, Xep
from imactor.storage.pubsub_service import NodeRow
from imactor.xmpp import pubsub as ps
from imactor.xmpp import pubsub_service as service
from imactor.xmpp import stanza as st
from imactor.xmpp.errors import StanzaError
from imactor.xmpp.jid import JID
from imactor.xmpp.namespaces import (
    NS_DATA_FORMS,
    NS_DISCO_INFO,
    NS_PUBSUB,
    NS_PUBSUB_ERRORS,
    NS_PUBSUB_OWNER,
    qname,
)
from imactor.xmpp.pubsub_service import ServiceConfig

KEY = "modules.pubsub"
CREATORS = ("local", "admins", "anyone")
MAX_ID = 1024  #: the longest item id accepted (the node names' bound too)


@dataclass(frozen=True)
class Options:
    subdomain: str = "pubsub"  #: the service: pubsub.<domain>
    creators: str = "local"  #: who may create nodes: "local", "admins" or "anyone"
    max_items: int = 1000  #: the most items one node may keep ("max" in a configuration)
    default_max_items: int = 10  #: items a new node keeps
    max_item_bytes: int = 65536  #: largest item payload, serialized
    max_nodes: int = 10000  #: nodes of the whole service

    def __post_init__(self) -> None:
        if not self.subdomain or any(c in self.subdomain for c in ".@/"):
            raise ModuleConfigError(f"{KEY}.subdomain: expected one DNS label, got {self.subdomain!r}")
        if self.creators not in CREATORS:
            raise ModuleConfigError(f"{KEY}.creators: expected one of {list(CREATORS)}, "
                                    f"got {self.creators!r}")  # fmt: skip
        for name in ("max_items", "default_max_items", "max_item_bytes", "max_nodes"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ModuleConfigError(f"{KEY}.{name}: expected a positive integer, got {value!r}")
        if not 1 <= self.default_max_items <= self.max_items:
            raise ModuleConfigError(f"{KEY}.default_max_items: expected 1 to max_items ({self.max_items}), "
                                    f"got {self.default_max_items!r}")  # fmt: skip

    def limits(self) -> ps.Limits:
        return ps.Limits(self.max_items, self.max_item_bytes, self.max_nodes)


async def _items(ctx: IqContext, node: str | None) -> list[tuple[str, str | None, str | None]] | None:
    """disco#items: the nodes the asker may see (§5.2), or a node's item ids (§5.5)."""
    jid = _service(ctx)
    asker = str(ctx.from_jid.bare)
    circle = circles.target(ctx, node)
    if circle is not None:
        return await circles.item_ids(ctx, circle)
    if node is None:
        nodes = await ctx.storage.pubsub.nodes(jid)
        mine = dict(await ctx.storage.pubsub.affiliations_of(jid, asker))
        shown: list[tuple[str, str | None, str | None]] = []
        for name, data in sorted(nodes.items()):
            config = ServiceConfig.from_json(data)
            try:
                service.check_access(config, mine.get(name, "none"))
            except StanzaError:
                continue
            shown.append((jid, name, config.base.title or None))
        if circles.running(ctx):
            shown.extend(await circles.listed(ctx))
        return shown
    row = await ctx.storage.pubsub.node(jid, node)
    if row is None:
        return None
    config = ServiceConfig.from_json(row.config)
    service.check_access(config, row.affiliations.get(asker, "none"))
    ids = await ctx.storage.pubsub.item_ids(jid, node, limit=config.base.max_items)
    return [(jid, None, item_id) for item_id in ids]


async def _node_info(ctx: IqContext, node: str) -> st.Element | None:
    """disco#info of a node (§5.3): a leaf node, with its meta-data (§5.4)."""
    circle = circles.target(ctx, node)
    if circle is not None:
        info = await circles.node_info(ctx, circle)
        if info is None:
            return None
        query = _leaf_info(node)
        form = service.meta_data(query, info[0], [_service(ctx)])
        field = st.child(form, NS_DATA_FORMS, "field")
        field.set("var", "pubsub#type")
        st.child(field, NS_DATA_FORMS, "value", info[1])
        return query
    row = await ctx.storage.pubsub.node(_service(ctx), node)
    if row is None:
        return None
    query = _leaf_info(node)
    owners = sorted(jid for jid, affiliation in row.affiliations.items() if affiliation == "owner")
    service.meta_data(query, ServiceConfig.from_json(row.config), owners)
    return query


def _leaf_info(node: str) -> st.Element:
    query = etree.Element(qname(NS_DISCO_INFO, "query"), nsmap=st.default_ns(NS_DISCO_INFO))
    query.set("node", node)
    st.disco_identity(query, "pubsub", "leaf")
    st.child(query, NS_DISCO_INFO, "feature").set("var", NS_PUBSUB)
    return query


module = Module(
    name="pubsub", summary="Publish-subscribe service",
    xeps=(Xep("0060", "1.26.0", "partial: service at pubsub.<domain>: leaf nodes, open and whitelist access, "
                                "affiliations, subscriptions, persistent items (no collections or "
                                "subscription options)"),),
    options=Options,
    service=ServiceSpec(
        subdomain=lambda options: options.subdomain,
        identities=(("pubsub", "service", "Publish-Subscribe"),),
        features=service.FEATURES,
        items=_items,
        node_info=_node_info,
    ),
)  # fmt: skip


# ---- helpers ---------------------------------------------------------------------------------


def _service(ctx: IqContext) -> str:
    assert ctx.to_jid is not None
    return str(ctx.to_jid.bare)


def _bare(ctx: IqContext) -> str:
    return str(ctx.from_jid.bare)


def _reply(ctx: IqContext, namespace: str) -> tuple[st.Element, st.Element]:
    reply = st.iq_result(ctx.stanza)
    return reply, st.child(reply, namespace, "pubsub")


async def _node(ctx: IqContext, node: str) -> tuple[NodeRow, ServiceConfig, str]:
    """The node, its configuration and the asker's affiliation; item-not-found if there is none."""
    row = await ctx.storage.pubsub.node(_service(ctx), node)
    if row is None:
        raise StanzaError("item-not-found", "no such node")
    return row, ServiceConfig.from_json(row.config), row.affiliations.get(_bare(ctx), "none")


def _owner(affiliation: str) -> None:
    if affiliation != "owner":
        raise StanzaError("forbidden", "only an owner of the node may do that")


def _unsupported(feature: str) -> StanzaError:
    """§6.3.2 and others: feature-not-implemented with <unsupported feature='...'/>."""
    element = etree.Element(qname(NS_PUBSUB_ERRORS, "unsupported"), nsmap=st.default_ns(NS_PUBSUB_ERRORS))
    element.set("feature", feature)
    return StanzaError("feature-not-implemented", f"{feature} is not supported", app_element=element)


def _not_a_circle(ctx: IqContext, node: str) -> None:
    """A circle's nodes are the service's: nobody configures, purges or deletes them."""
    if circles.is_reserved(ctx, node):
        raise StanzaError("forbidden", "a circle's nodes are the service's to manage")


def _may_create(ctx: IqContext) -> bool:
    options: Options = ctx.options
    if options.creators == "anyone":
        return True
    if options.creators == "admins":
        return _bare(ctx) in ctx.config.server.admins
    return ctx.from_jid.localpart is not None and ctx.from_jid.domainpart == ctx.server.domain


# ---- entity use cases (pubsub namespace) ------------------------------------------------------


@module.iq("set", NS_PUBSUB, "pubsub", scope=Scope.SERVICE)
async def pubsub_set(ctx: IqContext) -> st.Element:
    op = ps.single_op(ctx.payload, ("create", "publish", "retract", "subscribe", "unsubscribe", "options"))
    name = etree.QName(op).localname
    if name == "create":
        return await _create(ctx, op)
    if name == "options":
        raise _unsupported("subscription-options")
    node = ps.check_node_name(op.get("node"))
    circle = circles.target(ctx, node)
    if circle is not None:
        return await circles.pubsub_set(ctx, op, circle)
    if name == "publish":
        return await _publish(ctx, op, node)
    if name == "retract":
        return await _retract(ctx, op, node)
    if name == "subscribe":
        return await _subscribe(ctx, op, node)
    return await _unsubscribe(ctx, op, node)


async def _create(ctx: IqContext, create: st.Element) -> st.Element:
    """§8.1: create a node (an instant node without a name, §8.1.2), with its configuration form
    if one rides along (§8.1.3)."""
    options: Options = ctx.options
    if not _may_create(ctx):
        raise StanzaError("forbidden", "you may not create nodes on this service")
    node = create.get("node")
    instant = not node
    node = uuid.uuid4().hex if instant else ps.check_node_name(node)
    if circles.is_reserved(ctx, node):
        raise StanzaError("not-allowed", "circle nodes are the service's own: they exist for every circle")
    config = ServiceConfig.default(options.default_max_items)
    form = ps.parse_options_form(ctx.payload.find(qname(NS_PUBSUB, "configure")))
    if form is not None:
        config = config.configured(form, options.limits())
    done = await ctx.storage.pubsub.create_node(_service(ctx), node, config.to_json(), _bare(ctx),
                                                options.max_nodes)  # fmt: skip
    if done == "exists":
        raise StanzaError("conflict", "the node exists")
    if done == "full":
        raise ps.pubsub_error("not-allowed", "max-nodes-exceeded")
    reply, pubsub = _reply(ctx, NS_PUBSUB)
    st.child(pubsub, NS_PUBSUB, "create").set("node", node)
    return reply


async def _publish(ctx: IqContext, publish: st.Element, node: str) -> st.Element:
    """§7.1: store the item (a generated id if it has none) and notify the subscribers."""
    options: Options = ctx.options
    jid = _service(ctx)
    row, config, affiliation = await _node(ctx, node)
    subscribed = affiliation not in ("owner", "publisher") and await _subscribed(ctx, node)
    if not service.may_publish(config, affiliation, subscribed):
        raise StanzaError("forbidden", "you may not publish to this node")
    items = publish.findall(qname(NS_PUBSUB, "item"))
    if len(items) != 1:
        raise ps.pubsub_error("bad-request", "item-required" if not items else "invalid-payload")
    payload = ps.check_payload(items[0], options.limits())
    item_id = items[0].get("id") or uuid.uuid4().hex
    if len(item_id) > MAX_ID:
        raise StanzaError("not-acceptable", f"an item id is at most {MAX_ID} characters")
    form = ps.parse_options_form(ctx.payload.find(qname(NS_PUBSUB, "publish-options")))
    if form is not None:
        if form.form_type != ps.PUBLISH_OPTIONS:
            raise StanzaError("bad-request", "publish-options needs FORM_TYPE " + ps.PUBLISH_OPTIONS)
        config.check_preconditions(form, options.limits())
    data = st.serialize(payload)
    if config.base.persist_items:
        stored = await ctx.storage.pubsub.publish(jid, node, item_id, data, str(ctx.from_jid),
                                                  config.base.max_items)  # fmt: skip
        if not stored:
            raise StanzaError("item-not-found", "the node was deleted")
    payload_data = data if config.base.deliver_payloads else None
    await _notify(ctx, row, config, node, ps.items_event(node, [(item_id, payload_data)]))
    reply, pubsub = _reply(ctx, NS_PUBSUB)
    published = st.child(pubsub, NS_PUBSUB, "publish")
    published.set("node", node)
    st.child(published, NS_PUBSUB, "item").set("id", item_id)
    return reply


async def _subscribed(ctx: IqContext, node: str) -> bool:
    """Whether the requester (its full or bare JID) is subscribed to the node."""
    mine = (str(ctx.from_jid), _bare(ctx))
    return any(s.jid in mine for s in await ctx.storage.pubsub.subscriptions(_service(ctx), node))


async def _retract(ctx: IqContext, retract: st.Element, node: str) -> st.Element:
    """§7.2: delete items; the subscribers hear of it with notify="true" and `notify_retract`.
    Owners and publishers retract any item; those the publish model lets publish (open,
    subscribers), only their own (§4.1's publish-only)."""
    row, config, affiliation = await _node(ctx, node)
    by = None
    if not service.may_retract(affiliation):
        if not service.may_publish(config, affiliation, await _subscribed(ctx, node)):
            raise StanzaError("forbidden", "only owners and publishers retract items")
        by = _bare(ctx)
    ids = [item.get("id") or "" for item in retract.findall(qname(NS_PUBSUB, "item"))]
    if not ids or not all(ids):
        raise ps.pubsub_error("bad-request", "item-required")
    found = await ctx.storage.pubsub.retract(_service(ctx), node, ids, by=by)
    if found is None:
        raise StanzaError("forbidden", "you may retract only the items you published")
    if not found:
        raise StanzaError("item-not-found", "no such item")
    if retract.get("notify") in ("true", "1") and config.base.notify_retract:
        await _notify(ctx, row, config, node, ps.retract_event(node, found))
    return st.iq_result(ctx.stanza)


async def _subscribe(ctx: IqContext, subscribe: st.Element, node: str) -> st.Element:
    """§6.1: one subscription per JID; the last item follows unless the node says never (§6.1.7)."""
    jid = ps.subscriber_jid(subscribe, ctx.from_jid)
    _, config, affiliation = await _node(ctx, node)
    service.check_access(config, affiliation)
    subid = await ctx.storage.pubsub.subscribe(_service(ctx), node, str(jid), str(jid.bare), uuid.uuid4().hex)
    if subid is None:
        raise StanzaError("item-not-found", "the node was deleted")
    if config.base.send_last_published_item != "never" and config.base.deliver_notifications:
        last = await ctx.storage.pubsub.items(_service(ctx), node, limit=1)
        if last:
            payload = last[0].payload if config.base.deliver_payloads else None
            await _send(ctx, jid, config, ps.items_event(node, [(last[0].item_id, payload)]))
    reply, pubsub = _reply(ctx, NS_PUBSUB)
    _subscription(pubsub, NS_PUBSUB, node, str(jid), subid)
    return reply


async def _unsubscribe(ctx: IqContext, unsubscribe: st.Element, node: str) -> st.Element:
    """§6.2: end the JID's subscription (§6.2.3.2: unexpected-request if it has none)."""
    jid = ps.subscriber_jid(unsubscribe, ctx.from_jid)
    await _node(ctx, node)
    if not await ctx.storage.pubsub.unsubscribe(_service(ctx), node, str(jid)):
        raise ps.pubsub_error("unexpected-request", "not-subscribed")
    return st.iq_result(ctx.stanza)


def _subscription(parent: st.Element, namespace: str, node: str | None, jid: str, subid: str,
                  state: str = "subscribed") -> None:  # fmt: skip
    entry = st.child(parent, namespace, "subscription")
    if node is not None:
        entry.set("node", node)
    entry.set("jid", jid)
    entry.set("subscription", state)
    if subid:
        entry.set("subid", subid)


@module.iq("get", NS_PUBSUB, "pubsub", scope=Scope.SERVICE)
async def pubsub_get(ctx: IqContext) -> st.Element:
    op = ps.single_op(ctx.payload, ("items", "subscriptions", "affiliations", "options", "default"))
    name = etree.QName(op).localname
    jid = _service(ctx)
    if name in ("options", "default"):
        raise _unsupported("subscription-options")
    reply, pubsub = _reply(ctx, NS_PUBSUB)
    wanted = op.get("node")
    if name == "subscriptions":  # §5.6
        listing = st.child(pubsub, NS_PUBSUB, "subscriptions")
        for sub in await ctx.storage.pubsub.subscriptions_of(jid, _bare(ctx)):
            if wanted is None or sub.node == wanted:
                _subscription(listing, NS_PUBSUB, sub.node, sub.jid, sub.subid)
        if circles.running(ctx):
            for node in await circles.subscriptions(ctx):
                if wanted is None or node == wanted:
                    _subscription(listing, NS_PUBSUB, node, _bare(ctx), "")
        return reply
    if name == "affiliations":  # §5.7
        listing = st.child(pubsub, NS_PUBSUB, "affiliations")
        for node, affiliation in await ctx.storage.pubsub.affiliations_of(jid, _bare(ctx)):
            if wanted is None or node == wanted:
                entry = st.child(listing, NS_PUBSUB, "affiliation")
                entry.set("node", node)
                entry.set("affiliation", affiliation)
        if circles.running(ctx):
            for node in await circles.subscriptions(ctx):
                if wanted is None or node == wanted:
                    entry = st.child(listing, NS_PUBSUB, "affiliation")
                    entry.set("node", node)
                    entry.set("affiliation", "publisher")
        return reply
    node = ps.check_node_name(wanted)  # §6.5 items
    circle = circles.target(ctx, node)
    if circle is not None:
        return await circles.items(ctx, op, circle)
    _, config, affiliation = await _node(ctx, node)
    service.check_access(config, affiliation)
    limit = ps.max_items(op, config.base.max_items)
    ids = ps.requested_ids(op)
    stored = await ctx.storage.pubsub.items(jid, node, limit=limit, item_ids=ids)
    if ids and not stored:
        raise StanzaError("item-not-found", "no such item")
    items = st.child(pubsub, NS_PUBSUB, "items")
    items.set("node", node)
    for item in stored:
        ps.item_element(items, NS_PUBSUB, item.item_id, item.payload)
    return reply


# ---- owner use cases (pubsub#owner namespace) -------------------------------------------------


@module.iq("get", NS_PUBSUB_OWNER, "pubsub", scope=Scope.SERVICE)
async def owner_get(ctx: IqContext) -> st.Element:
    options: Options = ctx.options
    op = ps.single_op(ctx.payload, ("configure", "default", "subscriptions", "affiliations"))
    name = etree.QName(op).localname
    reply, pubsub = _reply(ctx, NS_PUBSUB_OWNER)
    if name == "default":  # §8.3
        default = ServiceConfig.default(options.default_max_items)
        default.form(st.child(pubsub, NS_PUBSUB_OWNER, "default"), options.limits())
        return reply
    node = ps.check_node_name(op.get("node"))
    _not_a_circle(ctx, node)
    row, config, affiliation = await _node(ctx, node)
    _owner(affiliation)
    answer = st.child(pubsub, NS_PUBSUB_OWNER, name)
    answer.set("node", node)
    if name == "configure":  # §8.2.1
        config.form(answer, options.limits())
    elif name == "subscriptions":  # §8.8.1
        for sub in await ctx.storage.pubsub.subscriptions(_service(ctx), node):
            _subscription(answer, NS_PUBSUB_OWNER, None, sub.jid, sub.subid)
    else:  # §8.9.1
        for jid, held in sorted(row.affiliations.items()):
            entry = st.child(answer, NS_PUBSUB_OWNER, "affiliation")
            entry.set("jid", jid)
            entry.set("affiliation", held)
    return reply


@module.iq("set", NS_PUBSUB_OWNER, "pubsub", scope=Scope.SERVICE)
async def owner_set(ctx: IqContext) -> st.Element:
    options: Options = ctx.options
    jid = _service(ctx)
    op = ps.single_op(ctx.payload, ("configure", "delete", "purge", "subscriptions", "affiliations"))
    name = etree.QName(op).localname
    node = ps.check_node_name(op.get("node"))
    _not_a_circle(ctx, node)
    row, config, affiliation = await _node(ctx, node)
    _owner(affiliation)
    if name == "configure":  # §8.2.4
        form = ps.parse_options_form(op)
        if form is None:
            raise StanzaError("bad-request", "a node configuration form is required")
        if form.type != "cancel":
            new = config.configured(form, options.limits())
            await ctx.storage.pubsub.set_config(jid, node, new.to_json(), new.base.max_items)
    elif name == "delete":  # §8.4
        subscriptions = await ctx.storage.pubsub.delete_node(jid, node)
        if subscriptions and config.base.notify_delete:
            event = ps.event(node, "delete")[0]
            for sub in subscriptions:
                await _send(ctx, JID.parse(sub.jid), config, event)
    elif name == "purge":  # §8.5
        await ctx.storage.pubsub.purge(jid, node)
        if config.base.notify_retract:
            await _notify(ctx, row, config, node, ps.event(node, "purge")[0])
    elif name == "subscriptions":  # §8.8.2
        await _manage_subscriptions(ctx, op, node)
    else:  # §8.9.2
        await _manage_affiliations(ctx, op, node)
    return st.iq_result(ctx.stanza)


def _entries(op: st.Element, tag: str, attribute: str, allowed: tuple[str, ...]) -> list[tuple[JID, str]]:
    entries = []
    for entry in op.findall(qname(NS_PUBSUB_OWNER, tag)):
        try:
            jid = JID.parse(entry.get("jid", ""))
        except ValueError:
            raise ps.pubsub_error("bad-request", "invalid-jid", f"bad jid {entry.get('jid')!r}") from None
        value = entry.get(attribute, "")
        if value not in allowed:
            raise StanzaError("bad-request", f"{attribute} must be one of {', '.join(allowed)}")
        entries.append((jid, value))
    return entries


async def _manage_subscriptions(ctx: IqContext, op: st.Element, node: str) -> None:
    """§8.8.2: the owner subscribes (subscribed) or unsubscribes (none) JIDs."""
    for jid, state in _entries(op, "subscription", "subscription", ("subscribed", "none")):
        if state == "none":
            await ctx.storage.pubsub.unsubscribe(_service(ctx), node, str(jid))
        else:
            await ctx.storage.pubsub.subscribe(_service(ctx), node, str(jid), str(jid.bare), uuid.uuid4().hex)


async def _manage_affiliations(ctx: IqContext, op: st.Element, node: str) -> None:
    """§8.9.2: affiliations are of bare JIDs; a node keeps at least one owner."""
    entries = _entries(op, "affiliation", "affiliation", service.AFFILIATIONS)
    changes = {str(jid.bare): value for jid, value in entries}
    done = await ctx.storage.pubsub.set_affiliations(_service(ctx), node, changes)
    if done == "no-owner":
        raise StanzaError("not-acceptable", "the node would be left without an owner")
    if done == "no-node":
        raise StanzaError("item-not-found", "no such node")


# ---- notifications ----------------------------------------------------------------------------


async def _notify(
    ctx: IqContext, row: NodeRow, config: ServiceConfig, node: str, payload: st.Element
) -> None:
    """§7.1.2: the event to every subscription whose JID may still access the node."""
    if not config.base.deliver_notifications:
        return
    for sub in await ctx.storage.pubsub.subscriptions(_service(ctx), node):
        to = JID.parse(sub.jid)
        try:
            service.check_access(config, row.affiliations.get(str(to.bare), "none"))
        except StanzaError:
            continue  # taken off the whitelist since it subscribed
        await _send(ctx, to, config, payload)


async def _send(ctx: IqContext, to: JID, config: ServiceConfig, payload: st.Element) -> None:
    message = st.make("message", to=to, from_=_service(ctx), type_=config.base.notification_type,
                      id_=uuid.uuid4().hex)  # fmt: skip
    message.append(st.parse(st.serialize(payload)))
    await ctx.server.route(message)
