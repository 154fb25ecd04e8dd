"""Messages between session and user actors: frozen commands (imperative) and facts (past tense)."""

from __future__ import annotations

from dataclasses import dataclass

import trio

from imactor.actors import ActorRef, Reply
from imactor.xmpp.jid import JID
from imactor.xmpp.stanza import Stanza

# ---- to a SessionActor -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Deliver:
    """Write this stanza to the client."""

    stanza: Stanza


@dataclass(frozen=True, slots=True)
class Kick:
    """Close the stream with this stream error (resource conflict, shutdown, account deleted)."""

    condition: str
    text: str = ""


@dataclass(frozen=True, slots=True)
class BlocklistChanged:
    """The account's block list changed; the session filters outbound stanzas with it."""

    jids: frozenset[str]


SessionMessage = Deliver | Kick | BlocklistChanged

# ---- to a UserActor --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Bound:
    full_jid: JID
    blocklist: frozenset[str]


@dataclass(frozen=True, slots=True)
class Bind:
    """A session asks for a resource of this account (None: the server chooses)."""

    resource: str | None
    session: ActorRef[SessionMessage]
    reply: Reply[Bound]


@dataclass(frozen=True, slots=True)
class Unbind:
    """A session has ended (fact): its resource goes unavailable."""

    resource: str
    session: ActorRef[SessionMessage]


class Completion:
    """A one-shot signal that a routed stanza is durably handled (XEP-0198 `h`, DESIGN.md "The
    failover promise"): the recipient's `UserActor` calls `done` exactly once, when its durable
    writes for the stanza (archive, offline storage) are over or it decided it needs none; the
    sending session polls it before it reports `h`. `done` never blocks, so the user actor never
    waits on the session (the actor rule); a repeated `done` is ignored.

    Within one worker only (a shared object). The cross-worker version will put a correlation id
    (the session's address and the stanza's sequence number) in `Route` instead, and the user actor
    will answer with a "handled" fact sent without waiting to that session.
    """

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = trio.Event()

    def done(self) -> None:
        self._event.set()

    @property
    def is_done(self) -> bool:
        return self._event.is_set()

    async def wait(self) -> None:
        await self._event.wait()


@dataclass(frozen=True, slots=True)
class Route:
    """A stanza addressed to this account (bare or full JID), from anyone.

    `completion`: signal it once the stanza is durably handled (a client's message under XEP-0198).
    """

    stanza: Stanza
    completion: Completion | None = None


@dataclass(frozen=True, slots=True)
class FromResource:
    """A stanza one of the account's own resources sends that the account handles (presence,
    account-scope IQs such as the roster)."""

    stanza: Stanza


@dataclass(frozen=True, slots=True)
class Undelivered:
    """A stream-managed session ended with these messages unacknowledged (fact, XEP-0198 §4):
    the account treats them as never delivered and keeps them in offline storage."""

    stanzas: tuple[Stanza, ...]


@dataclass(frozen=True, slots=True)
class AccountRemoved:
    """The account was deleted: the actor forgets its state and stops."""


UserMessage = Bind | Unbind | Route | FromResource | Undelivered | AccountRemoved
