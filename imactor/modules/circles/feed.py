"""The pubsub requests about a circle's nodes (the package docstring), called by the pubsub
module for the node names of `nodes`.

A circle node is a whitelist node (XEP-0060 §4.5) whose publishers are the circle's members and
whose owner is the service: a member publishes, retracts their own items, retrieves and is
subscribed; anyone else gets `forbidden` for a publish or retract (§7.1.3.1, §7.2.3.1) and
`not-allowed` + `<closed-node/>` for a retrieval or subscription (§6.5.5, §6.1.3.4).
"""

from __future__ import annotations

import sys
import time
import uuid

from lxml import etree

from imactor.modules import directory
from imactor.modules.circles import Options, enabled, members, nodes, options_of
from imactor.modules.circles.members import Circle
from imactor.modules.circles.nodes import COMMENTS, FEED, LIKES, Target
from imactor.server.modules import IqContext
from imactor.xmpp import dataforms as forms
from imactor.xmpp import microblog, rsm
from imactor.xmpp import pubsub as ps
from imactor.xmpp import stanza as st
from imactor.xmpp.errors import StanzaError
from imactor.xmpp.namespaces import NS_PUBSUB, NS_PUBSUB_EVENT, qname
from imactor.xmpp.pubsub_service import ServiceConfig

MAX_ID = 1024  #: the longest item id accepted (as the pubsub module)
#: XEP-0472's pubsub#type of a circle's feed and comments (its meta-data form)
FEED_TYPE = microblog.NS_MICROBLOG


def running(ctx: IqContext) -> bool:
    """Whether the circles module runs (the pubsub module answers for it only then)."""
    return enabled(list(ctx.server.modules()))


def target(ctx: IqContext, node: str | None) -> Target | None:
    """The circle node `node` names, when the circles module runs; None: an ordinary node."""
    if not node or not running(ctx):
        return None
    return nodes.target(node, _service(ctx))


def is_reserved(ctx: IqContext, node: str) -> bool:
    return running(ctx) and nodes.is_reserved(node)


def name(ctx: IqContext, node: Target) -> str:
    """The node name of `node` (`nodes.target` in reverse)."""
    if node.kind == FEED:
        return node.feed
    assert node.post is not None
    if node.kind == COMMENTS:
        return nodes.comments_node(node.feed, node.post)
    return nodes.likes_node(_service(ctx), node.feed, node.post)


def config(node: Target, circle: Circle, options: Options) -> ServiceConfig:
    """A circle node's fixed configuration (XEP-0277 §5 and XEP-0472 §5: notify retractions,
    keep many items, never send the last one on subscription)."""
    title = circle.title if node.kind == FEED else f"{node.kind} on a post of {circle.title}"
    return ServiceConfig(
        ps.NodeConfig(access_model="whitelist", max_items=options.max_posts, send_last_published_item="never",
                      notification_type="headline" if node.kind == LIKES else "normal", title=title),
        publish_model="publishers",
    )  # fmt: skip


# ---- the requests -----------------------------------------------------------------------------


async def pubsub_set(ctx: IqContext, op: st.Element, node: Target) -> st.Element:
    """publish, retract, subscribe, unsubscribe (the pubsub module checked the node name)."""
    options = options_of(ctx.config.modules)
    circle = await _circle(ctx, node, options)
    action = etree.QName(op).localname
    if action == "publish":
        return await _publish(ctx, op, node, circle, options)
    if action == "retract":
        return await _retract(ctx, op, node, circle)
    ps.subscriber_jid(op, ctx.from_jid)
    if action == "subscribe":
        _may_read(ctx, circle)
        reply, pubsub = _reply(ctx)
        _subscription(pubsub, name(ctx, node), str(ctx.from_jid.bare))
        return reply
    if _is_member(ctx, circle):
        raise StanzaError("not-allowed", "a circle's members are subscribed while they are members")
    raise ps.pubsub_error("unexpected-request", "not-subscribed")


async def items(ctx: IqContext, op: st.Element, node: Target) -> st.Element:
    """§6.5 items retrieval, newest first, by id, `max_items`, or paged (XEP-0059, §6.5.4)."""
    options = options_of(ctx.config.modules)
    circle = await _circle(ctx, node, options)
    _may_read(ctx, circle)
    node_name = name(ctx, node)
    if node.kind != FEED:
        await _require_post(ctx, node)
    store, service = ctx.storage.pubsub, _service(ctx)
    reply, pubsub = _reply(ctx)
    listing = st.child(pubsub, NS_PUBSUB, "items")
    listing.set("node", node_name)
    ids = ps.requested_ids(op)
    if ids:
        found = await store.items(service, node_name, limit=len(ids), item_ids=ids)
        if not found:
            raise StanzaError("item-not-found", "no such item")
        for item in found:
            ps.item_element(listing, NS_PUBSUB, item.item_id, item.payload)
        return reply
    limit = ps.max_items(op, options.max_posts)
    paging = rsm.read(ctx.payload, limit, options.max_posts)
    request = paging or rsm.Request(limit)
    page = await store.page(service, node_name, limit=request.max, after=request.after, before=request.before)
    if page is None:  # XEP-0059 §2.5: an <after/> or <before/> that names no item
        raise StanzaError("item-not-found", "the paging anchor names no item of this node")
    for item, publisher in zip(page.items, page.publishers, strict=True):
        ps.item_element(listing, NS_PUBSUB, item.item_id, item.payload).set("publisher", publisher)
    if paging is not None:
        rsm.answer(pubsub, [item.item_id for item in page.items], page.first_index, page.count)
    return reply


async def item_ids(ctx: IqContext, node: Target) -> list[tuple[str, str | None, str | None]]:
    """disco#items of a circle node (§5.5): its item ids, newest first, for members."""
    options = options_of(ctx.config.modules)
    circle = await _circle(ctx, node, options)
    _may_read(ctx, circle)
    jid = _service(ctx)
    return [
        (jid, None, i)
        for i in await ctx.storage.pubsub.item_ids(jid, name(ctx, node), limit=options.max_posts)
    ]


async def node_info(ctx: IqContext, node: Target) -> tuple[ServiceConfig, str] | None:
    """A member's view of a circle node's configuration and its pubsub#type (§5.3, §5.4);
    None for whoever else asks, as for a node that does not exist."""
    options = options_of(ctx.config.modules)
    circle = await members.circle(ctx, node.feed, departments=options.departments, rooms=options.rooms)
    if circle is None or not _is_member(ctx, circle):
        return None
    return config(node, circle, options), (microblog.NS_ATTACHMENTS if node.kind == LIKES else FEED_TYPE)


async def listed(ctx: IqContext) -> list[tuple[str, str | None, str | None]]:
    """The feeds of the asker's circles, for the service's disco#items (§5.2)."""
    options = options_of(ctx.config.modules)
    found = await members.circles_of(ctx, str(ctx.from_jid.bare), departments=options.departments,
                                     rooms=options.rooms)  # fmt: skip
    return [(_service(ctx), circle.feed, circle.title) for circle in found]


async def subscriptions(ctx: IqContext) -> list[str]:
    """The feeds the asker is subscribed to by membership (§5.6)."""
    return [node for _, node, _ in await listed(ctx) if node is not None]


# ---- publish and retract ----------------------------------------------------------------------


async def _publish(
    ctx: IqContext, publish: st.Element, node: Target, circle: Circle, options: Options
) -> st.Element:
    """§7.1: a post, a comment (the post must exist) or a like (XEP-0470: one per member)."""
    if not _is_member(ctx, circle):
        raise StanzaError("forbidden", "only the circle's members may publish to it")
    found = publish.findall(qname(NS_PUBSUB, "item"))
    if len(found) != 1:
        raise ps.pubsub_error("bad-request", "item-required" if not found else "invalid-payload")
    item = found[0]
    _check_publish_options(ctx, node, circle, options)
    limits = ps.Limits(options.max_posts, options.max_entry_bytes)
    bare, service, node_name = str(ctx.from_jid.bare), _service(ctx), name(ctx, node)
    if node.kind == LIKES:
        payload = ps.check_payload(item, limits)
        item_id = item.get("id") or bare
        microblog.check_attachment(item_id, bare, payload)
    else:
        payload = microblog.check_entry(item, limits)
        item_id = item.get("id") or uuid.uuid4().hex
        if len(item_id) > MAX_ID:
            raise StanzaError("not-acceptable", f"an item id is at most {MAX_ID} characters")
    if node.kind != FEED:
        await _require_post(ctx, node)
    publisher = await ctx.storage.pubsub.item_publisher(service, node_name, item_id)
    if publisher is not None and publisher != bare:
        raise StanzaError("forbidden", "the item is another member's")
    if node.kind != LIKES:
        replies = None
        if node.kind == FEED:
            replies = microblog.xmpp_uri(service, nodes.comments_node(node.feed, item_id))
        stamp = microblog.Stamp(bare, await _display_name(ctx, bare), _now(),
                                microblog.xmpp_uri(service, node_name, item_id), replies)  # fmt: skip
        microblog.stamp_entry(payload, stamp)
    data = st.serialize(payload)
    node_config = config(node, circle, options)
    store = ctx.storage.pubsub
    if not await store.publish(service, node_name, item_id, data, str(ctx.from_jid), options.max_posts):
        # First use of the node: create it (a worker racing to do the same makes it "exists").
        await store.create_node(service, node_name, node_config.to_json(), service, sys.maxsize)
        if not await store.publish(service, node_name, item_id, data, str(ctx.from_jid), options.max_posts):
            raise StanzaError("internal-server-error", "the node could not be created")
    event = ps.items_event(node_name, [(item_id, data)])
    for element in event.iter(qname(NS_PUBSUB_EVENT, "item")):
        element.set("publisher", bare)
    await _notify(ctx, circle, node_config, event)
    reply, pubsub = _reply(ctx)
    published = st.child(pubsub, NS_PUBSUB, "publish")
    published.set("node", node_name)
    st.child(published, NS_PUBSUB, "item").set("id", item_id)
    return reply


async def _retract(ctx: IqContext, retract: st.Element, node: Target, circle: Circle) -> st.Element:
    """§7.2: a member retracts their own items; a post takes its comments and likes with it."""
    if not _is_member(ctx, circle):
        raise StanzaError("forbidden", "only the circle's members may retract items")
    ids = [item.get("id") or "" for item in retract.findall(qname(NS_PUBSUB, "item"))]
    if not ids or not all(ids):
        raise ps.pubsub_error("bad-request", "item-required")
    service, node_name, store = _service(ctx), name(ctx, node), ctx.storage.pubsub
    found = await store.retract(service, node_name, ids, by=str(ctx.from_jid.bare))
    if found is None:
        raise StanzaError("forbidden", "you may retract only the items you published")
    if not found:
        raise StanzaError("item-not-found", "no such item")
    if node.kind == FEED:
        for post in found:
            await store.delete_node(service, nodes.comments_node(node.feed, post))
            await store.delete_node(service, nodes.likes_node(service, node.feed, post))
    options = options_of(ctx.config.modules)
    await _notify(ctx, circle, config(node, circle, options), ps.retract_event(node_name, found))
    return st.iq_result(ctx.stanza)


def _check_publish_options(ctx: IqContext, node: Target, circle: Circle, options: Options) -> None:
    """§7.1.5 against the circle's configuration; ``pubsub#type`` may name a social feed."""
    form = ps.parse_options_form(ctx.payload.find(qname(NS_PUBSUB, "publish-options")))
    if form is None:
        return
    if form.form_type != ps.PUBLISH_OPTIONS:
        raise StanzaError("bad-request", "publish-options needs FORM_TYPE " + ps.PUBLISH_OPTIONS)
    kind = form.values.get("pubsub#type")
    if kind is not None and (node.kind == LIKES or not all(v in microblog.FEED_TYPES for v in kind)):
        raise ps.pubsub_error("conflict", "precondition-not-met", "pubsub#type differs")
    rest = {k: v for k, v in form.values.items() if k != "pubsub#type"}
    limits = ps.Limits(options.max_posts, options.max_entry_bytes)
    config(node, circle, options).check_preconditions(forms.SubmittedForm(form.type, rest), limits)


# ---- helpers ----------------------------------------------------------------------------------


def _service(ctx: IqContext) -> str:
    assert ctx.to_jid is not None
    return str(ctx.to_jid.bare)


def _reply(ctx: IqContext) -> tuple[st.Element, st.Element]:
    reply = st.iq_result(ctx.stanza)
    return reply, st.child(reply, NS_PUBSUB, "pubsub")


async def _circle(ctx: IqContext, node: Target, options: Options) -> Circle:
    circle = await members.circle(ctx, node.feed, departments=options.departments, rooms=options.rooms)
    if circle is None:
        raise StanzaError("item-not-found", "no such circle")
    return circle


def _is_member(ctx: IqContext, circle: Circle) -> bool:
    return str(ctx.from_jid.bare) in circle.members


def _may_read(ctx: IqContext, circle: Circle) -> None:
    if not _is_member(ctx, circle):
        raise ps.pubsub_error("not-allowed", "closed-node", "the circle is for its members")


def _subscription(parent: st.Element, node: str, jid: str) -> None:
    entry = st.child(parent, NS_PUBSUB, "subscription")
    entry.set("node", node)
    entry.set("jid", jid)
    entry.set("subscription", "subscribed")


async def _require_post(ctx: IqContext, node: Target) -> None:
    """Comments and likes need their post (XEP-0060 §7.1.3.3: item-not-found otherwise)."""
    assert node.post is not None
    if await ctx.storage.pubsub.item_publisher(_service(ctx), node.feed, node.post) is None:
        raise StanzaError("item-not-found", "no such post")


async def _display_name(ctx: IqContext, bare: str) -> str:
    """The directory's name for a colleague; the JID for anyone it does not list."""
    local, _, host = bare.partition("@")
    if host != ctx.server.domain:
        return bare
    person = (await directory.current_directory(ctx.storage, directory.DEFAULT_INTERVAL)).people.get(local)
    return person.name if person is not None and person.name else bare


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


async def _notify(ctx: IqContext, circle: Circle, node_config: ServiceConfig, payload: st.Element) -> None:
    """§7.1.2: the event to every member (the package docstring: normal or headline)."""
    for member in sorted(circle.members):
        message = st.make("message", to=member, from_=_service(ctx),
                          type_=node_config.base.notification_type, id_=uuid.uuid4().hex)  # fmt: skip
        message.append(st.parse(st.serialize(payload)))
        await ctx.server.route(message)
