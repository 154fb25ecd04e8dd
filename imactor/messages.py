"""Messages between session and user actors: frozen commands (imperative) and facts (past tense)."""

from __future__ import annotations

from dataclasses import dataclass

import trio

from imactor.actors import ActorRef, Reply
from imactor.cluster.placement import Membership
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


@dataclass(frozen=True, slots=True)
class Rehome:
    """The membership changed and the account's actor lives elsewhere now (or its worker died):
    re-register this session with the account's new home (`Rebind`)."""


@dataclass(frozen=True, slots=True)
class RoomsLost:
    """Workers died (`lost`): the rooms of this session that lived there (their home under the
    `before` membership) restart elsewhere without their occupants. The session tells its
    client it left each (XEP-0045 status 333), so that it joins again."""

    before: Membership
    lost: frozenset[int]


@dataclass(frozen=True, slots=True)
class ResourceState:
    """The modules' state of this session's resource changed (e.g. XEP-0280 carbons enabled):
    the session keeps it to hand to the account's next home (`Rebind`, `MovedSession`)."""

    state: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class SentHooks:
    """Whether the account wants the messages this session sends (`FromResource`), for its
    modules' sent hooks (XEP-0280 sent copies): told when that changes, and at each bind."""

    wanted: bool


@dataclass(frozen=True, slots=True)
class RequestAck:
    """XEP-0198: stanzas went out unacknowledged and the stream has been quiet since; ask for an
    ack (<r/>). Sent by the session to itself from its timers (`SessionActor.tick`); never
    crosses processes."""


SessionMessage = (
    Deliver | Kick | BlocklistChanged | Rehome | RoomsLost | ResourceState | SentHooks | RequestAck
)

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
    #: The modules' state the resource starts with (XEP-0386 Bind 2 enables carbons inline).
    state: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Unbind:
    """A session has ended (fact): its resource goes unavailable."""

    resource: str
    session: ActorRef[SessionMessage]


class Completion:
    """A one-shot signal that a routed stanza is durably handled (XEP-0198 `h`, docs/design.md "The
    failover promise"): the recipient's `UserActor` calls `done` exactly once, when its durable
    writes for the stanza (archive, offline storage) are over or it decided it needs none; the
    sending session polls it before it reports `h`. `done` never blocks, so the user actor never
    waits on the session (the actor rule); a repeated `done` is ignored.

    Across workers the mesh (`imactor.mesh.mesh`) sends a correlation id in place of this
    object and the recipient's worker answers with a "done" frame; if the recipient's worker dies
    first, the mesh calls `lost` and the session routes the message again (at least once).
    """

    __slots__ = ("_event", "attempt", "failed", "key", "stanza")

    def __init__(self, stanza: Stanza | None = None, attempt: int = 1, key: str = "") -> None:
        self._event = trio.Event()
        #: The routed stanza, kept by the sending session to route it again if it is `lost`.
        self.stanza = stanza
        self.attempt = attempt
        #: The same for every route of one message (its session and number): what stores it
        #: more than once stores it under one id (the archive's XEP-0359 stanza-id).
        self.key = key
        #: True when the worker that was to handle the stanza died first: nothing is known of it.
        self.failed = False

    def done(self) -> None:
        self._event.set()

    def lost(self) -> None:
        """The stanza's fate is unknown (its recipient's worker died): route it again."""
        if not self._event.is_set():
            self.failed = True
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
    `origin`: for presence sent on behalf of a resource, the worker its session lives on, so that
    the recipient can announce that resource unavailable if the worker dies (`WorkersLost`).
    """

    stanza: Stanza
    completion: Completion | None = None
    origin: int | None = None


@dataclass(frozen=True, slots=True)
class FromResource:
    """A stanza one of the account's own resources sends that the account handles (presence,
    account-scope IQs such as the roster).

    `routed`: a directed presence the router has already delivered (to a chat room, in order
    with the session's other stanzas to it): the account only records it (RFC 6121 §4.6).
    """

    stanza: Stanza
    routed: bool = False


@dataclass(frozen=True, slots=True)
class Undelivered:
    """A stream-managed session ended with these messages unacknowledged (fact, XEP-0198 §4):
    the account treats them as never delivered and keeps them in offline storage."""

    stanzas: tuple[Stanza, ...]


@dataclass(frozen=True, slots=True)
class AccountRemoved:
    """The account was deleted: the actor forgets its state and stops."""


@dataclass(frozen=True, slots=True)
class Rebind:
    """A session bound elsewhere re-registers with the account's new home after a membership
    change: the resource is (again) bound, with its last broadcast presence, without any of the
    side effects of a first bind or an initial presence (contacts already know it)."""

    resource: str
    session: ActorRef[SessionMessage]
    presence: Stanza | None
    interested: bool
    state: tuple[tuple[str, str], ...] = ()  #: the modules' state of the resource (`ResourceState`)


@dataclass(frozen=True, slots=True)
class SessionLost:
    """A message for this session found it gone (its worker restarted, or it ended): the resource
    it held goes unavailable."""

    session: ActorRef[SessionMessage]


@dataclass(frozen=True, slots=True)
class WorkersLost:
    """These workers died (fact), as membership `epoch` announced: every resource whose session
    lived there and that was bound before that epoch goes unavailable (later ones are sessions of
    the workers' successors, which reuse the numbers)."""

    workers: frozenset[int]
    epoch: int


@dataclass(frozen=True, slots=True)
class Detached:
    """A stream-managed session lost its transport and waits for a resumption (`detached`), or
    was resumed (fact): deliveries to it reach no client meanwhile (XEP-0357 push cares)."""

    resource: str
    session: ActorRef[SessionMessage]
    detached: bool


@dataclass(frozen=True, slots=True)
class HandOff:
    """The membership changed and this account's home is another worker: stop here (the state is
    in storage; the new home re-activates it and the sessions re-register there)."""


@dataclass(frozen=True, slots=True)
class AccountMoved:
    """The account's previous home hands its bound resources over (`Resources.export`), as JSON:
    the new home knows its sessions before it handles anything (`HandOffGate`), rather than once
    each session re-registered (`Rebind`)."""

    snapshot: bytes


@dataclass(frozen=True, slots=True)
class HandOffs:
    """Between workers: the hosted actors a worker handed over on the membership change of
    `epoch` (kind, key), each of which sends its state to its new home (`HandOffGate`)."""

    epoch: int
    keys: tuple[tuple[str, str], ...]


# ---- between the workers of a node: XEP-0198 resumption on another worker --------------------


@dataclass(frozen=True, slots=True)
class MovedSession:
    """What a detached session hands to the worker where its client resumed (the reply to
    `TakeOver`): enough to carry the stream on there."""

    full_jid: JID
    h_in: int  #: stanzas handled from the client
    sent: int  #: stanzas sent to the client (counter, mod 2**32)
    acked: int  #: the client's last `h`, after the one it resumed with
    max: int  #: resumption timeout (seconds) granted
    unacked: tuple[bytes, ...]  #: sent, not acknowledged: sent again on resumption
    held: tuple[bytes, ...]  #: delivered while detached: not sent yet
    blocklist: frozenset[str]
    presence: Stanza | None
    interested: bool
    state: tuple[tuple[str, str], ...] = ()  #: the modules' state of the resource (`ResourceState`)


@dataclass(frozen=True, slots=True)
class TakeOver:
    """A client resumed `previd` on another worker: hand the detached session over (the reply is
    a `MovedSession`, or an `item-not-found` StanzaError whose text is the stale `h` if known)."""

    previd: str
    username: str
    h: int
    session: ActorRef[SessionMessage]  #: the resuming session, where deliveries go from now on
    reply: Reply[MovedSession]


@dataclass(frozen=True, slots=True)
class SharedRosterChanged:
    """To every user actor of a worker after a reload (`Module.shared_roster`): ask the modules
    for the shared contacts again, push what changed and tell the contacts gained or lost.
    Local to its worker, never encoded: an account handed off reads them afresh at its new home."""


UserMessage = (
    Bind | Unbind | Route | FromResource | Undelivered | AccountRemoved
    | Rebind | SessionLost | WorkersLost | HandOff | Detached | AccountMoved | SharedRosterChanged
)  # fmt: skip


# ---- multi-user chat: to a RoomActor, and a room's broadcast to a worker --------------------


@dataclass(frozen=True, slots=True)
class DestroyRoom:
    """An administrator destroys the room (XEP-0045 §10.9, from the CLI): replies True if it
    existed."""

    reason: str
    alternate: JID | None
    reply: Reply[bool]


@dataclass(frozen=True, slots=True)
class Fanout:
    """One stanza of a room for several occupants whose sessions live on one worker: the bytes
    cross once, and that worker addresses a copy to each recipient (`to` is inserted there).
    `stanza.to_jid` is the room's bare JID (the stanza's bytes carry no `to`)."""

    stanza: Stanza
    recipients: tuple[JID, ...]


@dataclass(frozen=True, slots=True)
class RoomMoved:
    """The room's previous home hands its occupants over (`Room.export_occupants`, and where
    each one's session lives), as JSON: they stay in the room across the move."""

    snapshot: bytes


RoomMessage = Route | WorkersLost | HandOff | DestroyRoom | RoomMoved


# ---- between the workers of a node: BOSH requests for a session of another worker ------------


@dataclass(frozen=True, slots=True)
class BoshResponse:
    """The HTTP response body for a forwarded BOSH request (the reply to `BoshRequest`)."""

    body: bytes


@dataclass(frozen=True, slots=True)
class BoshRequest:
    """An HTTP request body for a BOSH session that lives on the target worker (its sid names
    that worker, `imactor.web.bosh`): run it through the session's rid window and reply with
    the response body (target kind ``bosh``, key the sid)."""

    body: bytes
    reply: Reply[BoshResponse]


# ---- between the workers of a node: external components (XEP-0114) ---------------------------


@dataclass(frozen=True, slots=True)
class ComponentAt:
    """The component of `domain` is connected to worker `worker` (`connected`), or no longer is
    (target kind ``component``, key the domain). Each worker tells every other one when its
    components come and go, and again after each membership change (`imactor.components`)."""

    domain: str
    worker: int
    connected: bool


#: Target kind ``component``: a stanza for the component's stream on the target worker, or news.
ComponentMessage = Route | ComponentAt


# ---- between the workers of a node: the administrator's view of every worker's sessions -------


@dataclass(frozen=True, slots=True)
class OnlineSessions:
    """The full JIDs bound to the client sessions of one worker (the reply to `ListSessions`)."""

    jids: tuple[JID, ...]


@dataclass(frozen=True, slots=True)
class ListSessions:
    """Which sessions are bound on the target worker? (target kind ``admin``: XEP-0133 lists)"""

    reply: Reply[OnlineSessions]


@dataclass(frozen=True, slots=True)
class Announce:
    """Deliver a copy of `stanza` (serialized without a `to`) to every bound session of the
    target worker (target kind ``admin``: XEP-0133 announcements and the message of the day)."""

    stanza: Stanza


@dataclass(frozen=True, slots=True)
class EndSessions:
    """End the sessions of `username` on the target worker, all of them or only `resource`
    (target kind ``admin``: XEP-0133 end-user-session, disable-user), with a stream error."""

    username: str
    resource: str  #: "" for every resource
    condition: str
    text: str
