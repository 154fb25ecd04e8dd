"""XEP-0352: Client State Indication.

A bound client may say <inactive xmlns='urn:xmpp:csi:0'/> (the app is in the background) and
<active/> again. While it is inactive, its session holds back presence and messages nobody reads
(chat states, receipts, pubsub events) and sends them, in order, before the next important
stanza or on <active/>; what is important is listed in `imactor.xmpp.csi`. Held stanzas are not
sent, so XEP-0198 counts them only once they are; a resumed stream starts active, with what was
held sent after the stanzas resent (§5.2). The `<csi/>` stream feature advertises it.

Option `max_held` (default 100): stanzas held per session before they are all sent anyway.
"""

from __future__ import annotations

from dataclasses import dataclass

from imactor.server.modules import Module, ModuleConfigError, SessionFilter, Xep
from imactor.xmpp import csi
from imactor.xmpp.namespaces import NS_CSI


@dataclass(frozen=True)
class Options:
    max_held: int = 100  #: stanzas held for an inactive client before all are sent anyway

    def __post_init__(self) -> None:
        if self.max_held < 1:
            raise ModuleConfigError("modules.csi.max_held: expected a positive integer")


def _filter(options: Options) -> SessionFilter:
    return csi.ClientState(options.max_held)


module = Module(
    name="csi", summary="Client State Indication", xeps=(Xep("0352", "1.0.0", "complete"),),
    features=(NS_CSI,), options=Options, session_filter=_filter, nonzas=csi.NONZAS,
    stream_features=(csi.FEATURE,),
)  # fmt: skip
