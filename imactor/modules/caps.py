"""XEP-0115: Entity Capabilities, for the server itself.

With this module enabled, the server's identities and features are hashed (SHA-1, §5.1, by the
protocol core's `imactor.xmpp.caps`) and the `<c/>` element is offered among the stream features
(§6.3, `imactor.server.server_api`), so a client can cache the server's disco result.
disco#info queries on `node#ver` are answered like plain ones (see `modules/disco.py`).
"""

from __future__ import annotations

from imactor.server.modules import Module, Xep
from imactor.xmpp.namespaces import NS_CAPS

module = Module(name="caps", summary="Entity Capabilities", xeps=(Xep("0115", "1.6.0", "complete: server"),),
                features=(NS_CAPS,), depends=("disco",))  # fmt: skip
