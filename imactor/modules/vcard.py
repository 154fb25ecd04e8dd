"""XEP-0054: vcard-temp.

An account publishes its vCard with a set to its own bare JID (or no `to`); anyone may read it
with a get to the bare JID (an account without a vCard answers an empty <vCard/>, §3.1). With
the ``directory`` module, a member's vCard shows the directory's name, department, title, e-mail
and phone where the member set none (`imactor.modules.directory.vcards`). The server's own
vCard (a get with no/`to` domain) is empty. Option `max_bytes` (default 131072,
photos included).
"""

from __future__ import annotations

from dataclasses import dataclass

from lxml import etree

from imactor.modules import avatar, directory
from imactor.server.modules import IqContext, Module, Scope, Xep
from imactor.xmpp import stanza as st
from imactor.xmpp.errors import StanzaError
from imactor.xmpp.namespaces import NS_VCARD
from imactor.xmpp.stanza import default_ns


@dataclass(frozen=True)
class Options:
    max_bytes: int = 131072  #: largest stored vCard


module = Module(name="vcard", summary="vcard-temp", xeps=(Xep("0054", "1.2", "complete"),),
                features=(NS_VCARD,), options=Options)  # fmt: skip


@module.iq("get", NS_VCARD, "vCard", scope=Scope.ACCOUNT)
async def vcard_get(ctx: IqContext) -> st.Element:
    assert ctx.account is not None
    stored = await ctx.storage.vcards.get(ctx.account.username)
    reply = st.iq_result(ctx.stanza)
    vcard = st.parse(stored) if stored is not None else etree.Element(
        etree.QName(NS_VCARD, "vCard").text, nsmap=default_ns(NS_VCARD))  # fmt: skip
    if directory.enabled(list(ctx.server.modules())):
        await directory.fill_vcard(ctx.storage, ctx.account.username, vcard)
    reply.append(vcard)
    return reply


@module.iq("set", NS_VCARD, "vCard", scope=Scope.ACCOUNT)
async def vcard_set(ctx: IqContext) -> st.Element:
    if ctx.account is None or not ctx.is_self:
        raise StanzaError("forbidden", "only the account may change its vCard")
    data = st.serialize(ctx.payload)  # UTF-8: a client's names need not be ASCII
    if len(data) > ctx.options.max_bytes:
        raise StanzaError("not-acceptable", "vCard too large")
    await ctx.storage.vcards.set(ctx.account.username, data)
    if avatar.enabled(list(ctx.server.modules())):
        await avatar.vcard_stored(ctx.account, ctx.storage, ctx.payload)  # XEP-0398 §4
    reply = st.iq_result(ctx.stanza)
    reply.set("to", str(ctx.from_jid))
    return reply


@module.iq("get", NS_VCARD, "vCard", remote=True)
async def server_vcard(ctx: IqContext) -> st.Element:
    reply = st.iq_result(ctx.stanza)
    st.child(reply, NS_VCARD, "vCard")
    return reply
