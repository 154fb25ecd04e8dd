"""RFC 6121 presence: subscriptions (Appendix A tables), broadcast, probes, directed presence.

The logic lives in the account's `UserActor` (`imactor.user.actor`) and the pure tables in
`imactor.xmpp.subscription`; this module declares the feature (pre-approval, §3.4) and carries
its metadata. No options.
"""

from __future__ import annotations

from imactor.server.modules import Module
from imactor.xmpp.namespaces import NS_PRE_APPROVAL

module = Module(name="presence", summary="RFC 6121 presence and subscriptions", features=(NS_PRE_APPROVAL,))
