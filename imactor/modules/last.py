"""XEP-0012: Last Activity.

- to the server: seconds since the server started (§5).
- to an account's bare JID, from a contact with a presence subscription (or the account itself):
  0 if a resource is online, else seconds since the last resource went offline, with the status
  text of its last unavailable presence (§4). Others get `forbidden`. No options.
"""

from __future__ import annotations

import time

from imactor.server.modules import IqContext, Module, Scope, Xep
from imactor.xmpp import stanza as st
from imactor.xmpp.errors import StanzaError
from imactor.xmpp.namespaces import NS_LAST

module = Module(
    name="last", summary="Last Activity", xeps=(Xep("0012", "2.0", "complete"),), features=(NS_LAST,)
)


@module.iq("get", NS_LAST, "query", remote=True)
async def server_uptime(ctx: IqContext) -> st.Element:
    return _answer(ctx, int(time.time() - ctx.server.started_at), "")


@module.iq("get", NS_LAST, "query", scope=Scope.ACCOUNT)
async def account_last(ctx: IqContext) -> st.Element:
    account = ctx.account
    assert account is not None
    item = account.roster_items().get(str(ctx.from_jid.bare))
    if not ctx.is_self and (item is None or item.subscription not in ("from", "both")):
        raise StanzaError("forbidden")  # §4: only those allowed to see presence
    if account.available_resources():
        return _answer(ctx, 0, "")
    last = await ctx.storage.last_activity.get(account.username)
    if last is None:
        raise StanzaError("service-unavailable")
    stamp, status = last
    return _answer(ctx, max(0, int(time.time() - stamp)), status)


def _answer(ctx: IqContext, seconds: int, status: str) -> st.Element:
    reply = st.iq_result(ctx.stanza)
    query = st.child(reply, NS_LAST, "query", status or None)
    query.set("seconds", str(seconds))
    return reply
