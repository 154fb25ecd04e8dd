"""Who is an administrator of the server (``[server] admins``), for the ad-hoc commands."""

from __future__ import annotations

from collections.abc import Sequence

from imactor.server.modules import IqContext
from imactor.xmpp.jid import JID, InvalidJID

__all__ = ["is_admin"]


def is_admin(ctx: IqContext) -> bool:
    """Whether the requester's bare JID is one of ``[server] admins``."""
    return str(ctx.from_jid.bare) in admin_jids(ctx.config.server.admins)


def admin_jids(configured: Sequence[str]) -> frozenset[str]:
    """The bare JIDs of ``[server] admins``, prepared as JIDs are compared (also the console's)."""
    found = set()
    for value in configured:
        try:
            found.add(str(JID.parse(value).bare))
        except InvalidJID:
            continue  # the config loader checked their shape; a JID it let through is ignored
    return frozenset(found)
