"""XEP-0092: Software Version.

Answers `jabber:iq:version` queries to the server. Option `show_os` (default false): also reveal
the operating system, which some administrators prefer to keep private.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass

from imactor import __version__
from imactor.server.modules import IqContext, Module, Xep
from imactor.xmpp import stanza as st
from imactor.xmpp.namespaces import NS_VERSION


@dataclass(frozen=True)
class Options:
    show_os: bool = False  #: include <os/> in the answer


module = Module(
    name="version", summary="Software Version", xeps=(Xep("0092", "1.1", "complete"),),
    features=(NS_VERSION,), options=Options,
)  # fmt: skip


@module.iq("get", NS_VERSION, "query", remote=True)
async def software_version(ctx: IqContext) -> st.Element:
    reply = st.iq_result(ctx.stanza)
    query = st.child(reply, NS_VERSION, "query")
    st.child(query, NS_VERSION, "name", "imactor")
    st.child(query, NS_VERSION, "version", __version__)
    if ctx.options.show_os:
        st.child(query, NS_VERSION, "os", f"{platform.system()} {platform.release()}")
    return reply
