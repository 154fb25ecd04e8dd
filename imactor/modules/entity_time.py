"""XEP-0202: Entity Time.

Answers `urn:xmpp:time` queries with the server's UTC time and time zone offset. No options.
"""

from __future__ import annotations

import time

from imactor.server.modules import IqContext, Module, Xep
from imactor.xmpp import stanza as st
from imactor.xmpp.namespaces import NS_TIME

module = Module(name="entity_time", summary="Entity Time", xeps=(Xep("0202", "2.0", "complete"),),
                features=(NS_TIME,))  # fmt: skip


@module.iq("get", NS_TIME, "time", remote=True)
async def entity_time(ctx: IqContext) -> st.Element:
    now = time.time()
    offset = time.localtime(now).tm_gmtoff
    sign = "+" if offset >= 0 else "-"
    hours, minutes = divmod(abs(offset) // 60, 60)
    reply = st.iq_result(ctx.stanza)
    payload = st.child(reply, NS_TIME, "time")
    st.child(payload, NS_TIME, "tzo", f"{sign}{hours:02d}:{minutes:02d}")
    st.child(payload, NS_TIME, "utc", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)))
    return reply
