"""XEP-0199: XMPP Ping.

The server answers pings addressed to it. Keepalive pings *from* the server to idle clients are
the session's job (`[limits] idle_timeout`, `ping_timeout`). No options.
"""

from __future__ import annotations

from imactor.server.modules import IqContext, Module, Xep
from imactor.xmpp import stanza as st
from imactor.xmpp.namespaces import NS_PING

module = Module(
    name="ping", summary="XMPP Ping", xeps=(Xep("0199", "2.0.1", "complete"),), features=(NS_PING,)
)


@module.iq("get", NS_PING, "ping", remote=True)
async def pong(ctx: IqContext) -> st.Element:
    return st.iq_result(ctx.stanza)
