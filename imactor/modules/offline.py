"""XEP-0160: Best Practices for Handling Offline Messages.

Chat and normal messages to an account with no available resource are stored (with a XEP-0203
delay stamp) and delivered, oldest first, when a resource sends initial presence with a
non-negative priority or raises a negative priority to a non-negative one.
The limit per account is `[limits] max_offline_messages`; past it the sender gets
`service-unavailable`. The logic lives in the `UserActor`.
"""

from __future__ import annotations

from imactor.server.modules import Module, Xep
from imactor.xmpp.namespaces import NS_DELAY, NS_OFFLINE

module = Module(name="offline", summary="Offline messages", xeps=(Xep("0160", "1.0.1", "complete"),
                Xep("0203", "2.0", "complete")), features=(NS_OFFLINE, NS_DELAY))  # fmt: skip
