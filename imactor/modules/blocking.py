"""XEP-0191: Blocking Command.

The account's block list (bare JIDs, full JIDs or domains): get, block, unblock (an empty unblock
clears the list), pushes to every resource, and enforcement in both directions: inbound stanzas
from a blocked JID are dropped (presence) or refused with `service-unavailable` (message, IQ) in
the user actor; outbound stanzas to one are refused with `not-acceptable` + `<blocked/>` in the
session. Blocking a contact sends it unavailable presence (§3.3). Option `max_items` (1000).
"""

from __future__ import annotations

from dataclasses import dataclass

from imactor.server.modules import IqContext, Module, Scope, Xep
from imactor.xmpp import stanza as st
from imactor.xmpp.errors import StanzaError
from imactor.xmpp.jid import JID, InvalidJID
from imactor.xmpp.namespaces import NS_BLOCKING, qname


@dataclass(frozen=True)
class Options:
    max_items: int = 1000  #: entries per block list


module = Module(name="blocking", summary="Blocking Command", xeps=(Xep("0191", "1.3", "complete"),),
                features=(NS_BLOCKING,), options=Options)  # fmt: skip


@module.iq("get", NS_BLOCKING, "blocklist", scope=Scope.ACCOUNT)
async def blocklist(ctx: IqContext) -> st.Element:
    account = _own(ctx)
    reply = st.iq_result(ctx.stanza)
    reply.set("to", str(ctx.from_jid))
    listing = st.child(reply, NS_BLOCKING, "blocklist")
    for jid in sorted(account.blocklist()):
        st.child(listing, NS_BLOCKING, "item").set("jid", jid)
    return reply


@module.iq("set", NS_BLOCKING, "block", scope=Scope.ACCOUNT)
async def block(ctx: IqContext) -> st.Element:
    account = _own(ctx)
    jids = _items(ctx)
    if not jids:
        raise StanzaError("bad-request", "block needs at least one item")  # §3.3
    current = account.blocklist()
    new = [j for j in jids if j not in current]
    if len(current) + len(new) > ctx.options.max_items:
        raise StanzaError("not-acceptable", "block list is full")
    await ctx.storage.blocking.add(account.username, new)
    account.set_blocklist(current | frozenset(new))
    for jid in new:
        await _send_unavailable(ctx, jid)
    await _push(ctx, "block", jids)
    return _result(ctx)


@module.iq("set", NS_BLOCKING, "unblock", scope=Scope.ACCOUNT)
async def unblock(ctx: IqContext) -> st.Element:
    account = _own(ctx)
    jids = _items(ctx)
    if jids:
        await ctx.storage.blocking.remove(account.username, jids)
        account.set_blocklist(account.blocklist() - frozenset(jids))
    else:
        await ctx.storage.blocking.remove(account.username, None)
        account.set_blocklist(frozenset())
    await _push(ctx, "unblock", jids)
    return _result(ctx)


def _own(ctx: IqContext):  # type: ignore[no-untyped-def]
    if ctx.account is None or not ctx.is_self:
        raise StanzaError("forbidden", "a block list belongs to its account")
    return ctx.account


def _items(ctx: IqContext) -> list[str]:
    jids: list[str] = []
    for item in ctx.payload.findall(qname(NS_BLOCKING, "item")):
        try:
            jid = str(JID.parse(item.get("jid", "")))
        except InvalidJID as exc:
            raise StanzaError("jid-malformed", f"invalid jid {item.get('jid')!r}") from exc
        if jid not in jids:
            jids.append(jid)
    return jids


async def _push(ctx: IqContext, tag: str, jids: list[str]) -> None:
    assert ctx.account is not None
    push = st.make("iq", type_="set", id_="push-" + tag, from_=ctx.account.jid)
    payload = st.child(push, NS_BLOCKING, tag)
    for jid in jids:
        st.child(payload, NS_BLOCKING, "item").set("jid", jid)
    await ctx.account.push_to_resources(push)


async def _send_unavailable(ctx: IqContext, blocked: str) -> None:
    """§3.3: a blocked contact stops seeing the user's presence, so it gets unavailable now.

    Only a contact allowed to see the presence (a from/both subscription): anyone else would
    learn from it that the user is online.
    """
    assert ctx.account is not None
    target = JID.parse(blocked)
    if target.localpart is None:
        return  # a whole domain: no single contact to notify
    item = ctx.account.roster_items().get(str(target.bare))
    if item is None or item.subscription not in ("from", "both"):
        return
    for resource in ctx.account.available_resources():
        gone = st.make(
            "presence", from_=ctx.account.jid.with_resource(resource), to=target, type_="unavailable"
        )
        await ctx.account.route(gone)


def _result(ctx: IqContext) -> st.Element:
    reply = st.iq_result(ctx.stanza)
    reply.set("to", str(ctx.from_jid))
    return reply
