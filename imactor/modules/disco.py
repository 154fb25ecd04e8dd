"""XEP-0030: Service Discovery.

The server answers disco#info with its identity (server/im) and the features of every enabled
module, and disco#items with its services (the multi-user chat service, when enabled); a `node`
of the server is answered by the module that declares it (`Module.host_nodes`: XEP-0050's
commands). An account's bare JID answers disco#info for the account (identity
account/registered, and the modules' `account_features`) to its owner and to contacts with a
presence subscription. Option `extra_items`: list of JIDs to add to disco#items.
"""

from __future__ import annotations

from dataclasses import dataclass

from imactor.server.modules import IqContext, Module, Scope, Xep
from imactor.xmpp import stanza as st
from imactor.xmpp.errors import StanzaError
from imactor.xmpp.namespaces import NS_DISCO_INFO, NS_DISCO_ITEMS


@dataclass(frozen=True)
class Options:
    extra_items: tuple[str, ...] = ()  #: JIDs listed in the server's disco#items


module = Module(
    name="disco", summary="Service Discovery", xeps=(Xep("0030", "2.5rc3", "complete"),),
    features=(NS_DISCO_INFO, NS_DISCO_ITEMS), options=Options,
)  # fmt: skip


@module.iq("get", NS_DISCO_INFO, "query", remote=True)
async def server_info(ctx: IqContext) -> st.Element:
    node = ctx.payload.get("node")
    if node and node not in ctx.server.caps_nodes():
        return await _module_node_info(ctx, node)
    reply = st.iq_result(ctx.stanza)
    query = st.child(reply, NS_DISCO_INFO, "query")
    if node:
        query.set("node", node)
    for category, kind, name in ctx.server.identities():
        identity = st.child(query, NS_DISCO_INFO, "identity")
        identity.set("category", category)
        identity.set("type", kind)
        identity.set("name", name)
    for feature in sorted(set(ctx.server.features())):
        st.child(query, NS_DISCO_INFO, "feature").set("var", feature)
    return reply


@module.iq("get", NS_DISCO_ITEMS, "query", remote=True)
async def server_items(ctx: IqContext) -> st.Element:
    node = ctx.payload.get("node")
    if node:
        return await _module_node_items(ctx, node)
    reply = st.iq_result(ctx.stanza)
    query = st.child(reply, NS_DISCO_ITEMS, "query")
    for jid in (*ctx.server.service_items(), *ctx.options.extra_items):
        st.child(query, NS_DISCO_ITEMS, "item").set("jid", jid)
    return reply


async def _module_node_info(ctx: IqContext, node: str) -> st.Element:
    """disco#info of a node of the server that a module answers (`Module.host_nodes`)."""
    for enabled in ctx.server.modules():
        info = None if enabled.host_nodes is None else await enabled.host_nodes.info(ctx, node)
        if info is None:
            continue
        reply = st.iq_result(ctx.stanza)
        query = st.child(reply, NS_DISCO_INFO, "query")
        query.set("node", node)
        for category, kind, name in info.identities:
            st.disco_identity(query, category, kind, name)
        for feature in info.features:
            st.child(query, NS_DISCO_INFO, "feature").set("var", feature)
        return reply
    raise StanzaError("item-not-found")


async def _module_node_items(ctx: IqContext, node: str) -> st.Element:
    """disco#items of a node of the server that a module answers (`Module.host_nodes`)."""
    for enabled in ctx.server.modules():
        items = None if enabled.host_nodes is None else await enabled.host_nodes.items(ctx, node)
        if items is None:
            continue
        reply = st.iq_result(ctx.stanza)
        query = st.child(reply, NS_DISCO_ITEMS, "query")
        query.set("node", node)
        st.disco_items(query, items)
        return reply
    raise StanzaError("item-not-found")


@module.iq("get", NS_DISCO_INFO, "query", scope=Scope.ACCOUNT)
async def account_info(ctx: IqContext) -> st.Element:
    assert ctx.account is not None
    item = ctx.account.roster_items().get(str(ctx.from_jid.bare))
    if not ctx.is_self and (item is None or item.subscription not in ("from", "both")):
        raise StanzaError("service-unavailable")
    reply = st.iq_result(ctx.stanza)
    query = st.child(reply, NS_DISCO_INFO, "query")
    st.disco_identity(query, "account", "registered")
    for enabled in ctx.server.modules():  # e.g. XEP-0163 §6.1: pubsub/pep
        for category, kind, name in enabled.account_identities:
            st.disco_identity(query, category, kind, name)
    features = {NS_DISCO_INFO}
    for enabled in ctx.server.modules():
        features.update(enabled.account_features)
    for feature in sorted(features):
        st.child(query, NS_DISCO_INFO, "feature").set("var", feature)
    return reply


@module.iq("get", NS_DISCO_ITEMS, "query", scope=Scope.ACCOUNT)
async def account_items(ctx: IqContext) -> st.Element:
    node = ctx.payload.get("node")
    found: list[tuple[str, str | None, str | None]] = []
    known = False
    for enabled in ctx.server.modules():  # e.g. PEP nodes and their items (XEP-0060 §5.2, §5.5)
        if enabled.account_items is not None:
            listed = await enabled.account_items(ctx, node)
            if listed is not None:
                known = True
                found.extend(listed)
    if node is not None and not known:
        raise StanzaError("item-not-found")
    if not ctx.is_self and not found:
        raise StanzaError("service-unavailable")
    reply = st.iq_result(ctx.stanza)
    query = st.child(reply, NS_DISCO_ITEMS, "query")
    if node is not None:
        query.set("node", node)
    st.disco_items(query, found)
    return reply
