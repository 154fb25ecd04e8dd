"""Messages between session and user actors: frozen commands (imperative) and facts (past tense)."""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass(frozen=True, slots=True)
class Route:
    """A stanza addressed to this account (bare or full JID), from anyone."""

    stanza: Stanza


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
