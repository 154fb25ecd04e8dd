"""A small actor runtime on Trio: bounded mailboxes, references, ask with timeout.

Knows nothing of XMPP. An actor is started with `await nursery.start(actor.run)` and is reached only
through the `ActorRef` it hands to `task_status.started()`.
"""

from __future__ import annotations

from imactor.actors.actor import Actor, ActorStatistics
from imactor.actors.mailbox import MailboxStatistics
from imactor.actors.ref import ActorAddress, ActorGone, ActorRef, AskTimeout, LocalRef, Reply, ask
from imactor.actors.registry import Registry, RegistryStatistics

__all__ = [
    "Actor",
    "ActorAddress",
    "ActorGone",
    "ActorRef",
    "ActorStatistics",
    "AskTimeout",
    "LocalRef",
    "MailboxStatistics",
    "Registry",
    "RegistryStatistics",
    "Reply",
    "ask",
]
