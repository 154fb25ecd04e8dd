"""XEP-0049: Private XML Storage.

An account stores one XML fragment per (element, namespace) and reads it back; only the account
itself may. Reserved namespaces (jabber:client, jabber:server, jabber:iq:private) and requests
for other accounts are refused per §3. Option `max_bytes` (default 65536) bounds each fragment.
"""

from __future__ import annotations

from dataclasses import dataclass

from lxml import etree

from imactor.modules import bookmarks
from imactor.server.modules import IqContext, Module, Scope, Xep
from imactor.xmpp import stanza as st
from imactor.xmpp.errors import StanzaError
from imactor.xmpp.namespaces import NS_PRIVATE
from imactor.xmpp.stanza import default_ns


@dataclass(frozen=True)
class Options:
    max_bytes: int = 65536  #: largest stored fragment


module = Module(name="private", summary="Private XML Storage", xeps=(Xep("0049", "1.2", "complete"),),
                features=(NS_PRIVATE,), options=Options)  # fmt: skip

RESERVED = frozenset({"jabber:client", "jabber:server", "jabber:component:accept", NS_PRIVATE})


@module.iq("get", NS_PRIVATE, "query", scope=Scope.ACCOUNT)
async def private_get(ctx: IqContext) -> st.Element:
    username, fragment = _checked(ctx)
    key = _key(fragment)
    stored = await ctx.storage.private.get(username, key)
    reply = st.iq_result(ctx.stanza)
    reply.set("to", str(ctx.from_jid))
    query = st.child(reply, NS_PRIVATE, "query")
    query.append(st.parse(stored) if stored is not None else _empty_copy(fragment))
    return reply


@module.iq("set", NS_PRIVATE, "query", scope=Scope.ACCOUNT)
async def private_set(ctx: IqContext) -> st.Element:
    username, fragment = _checked(ctx)
    data = st.serialize(fragment)  # UTF-8: a client's names need not be ASCII
    if len(data) > ctx.options.max_bytes:
        raise StanzaError("not-acceptable", "private data too large")
    await ctx.storage.private.set(username, _key(fragment), data)
    if _key(fragment) == bookmarks.PRIVATE_KEY and bookmarks.enabled(list(ctx.server.modules())):
        assert ctx.account is not None
        await bookmarks.legacy_stored(ctx.account, ctx.storage, fragment)  # XEP-0402 §5.3
    reply = st.iq_result(ctx.stanza)
    reply.set("to", str(ctx.from_jid))
    return reply


def _checked(ctx: IqContext) -> tuple[str, st.Element]:
    if ctx.account is None or not ctx.is_self:
        raise StanzaError("forbidden", "private storage belongs to its account")
    children = list(ctx.payload)
    if len(children) != 1:
        raise StanzaError("not-acceptable", "exactly one child element")
    fragment = children[0]
    if etree.QName(fragment).namespace in (None, *RESERVED):
        raise StanzaError("not-acceptable", "a namespaced, non-reserved element is required")
    return ctx.account.username, fragment


def _key(fragment: st.Element) -> str:
    return fragment.tag  # Clark notation: "{namespace}name"


def _empty_copy(fragment: st.Element) -> st.Element:
    qn = etree.QName(fragment)
    return etree.Element(fragment.tag, nsmap=default_ns(qn.namespace))
