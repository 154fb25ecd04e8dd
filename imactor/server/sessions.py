"""The client sessions of one worker: who is live, by address key and by full JID, and XEP-0198
resumption ids (live, moved to another worker, or recently ended).

A capability of the worker, built by its root: the c2s wing opens, binds and closes sessions
here; a room's fan-out finds a recipient's session by its JID; the mesh's session wing resolves
a frame's session key; shutdown kicks them all and waits. The table does not know what a session
is beyond `LocalSession`: a reference, an address, a JID once bound, and a way to end it.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from collections.abc import Iterator
from typing import Generic, Protocol, TypeVar

import trio

from imactor import messages as m
from imactor.actors import ActorAddress, ActorRef
from imactor.xmpp.jid import JID

__all__ = ["EXPIRED_RESUMPTIONS_KEPT", "LocalSession", "SessionTable"]

#: How many ended XEP-0198 sessions are remembered for the `h` of a late resumption attempt.
EXPIRED_RESUMPTIONS_KEPT = 4096


class LocalSession(Protocol):
    """What the table and its readers need of a session."""

    @property
    def address(self) -> ActorAddress: ...

    @property
    def ref(self) -> ActorRef[m.SessionMessage]: ...

    @property
    def jid(self) -> JID | None: ...

    @property
    def authenticated_as(self) -> str | None:
        """The account it authenticated as, before binding too."""
        ...

    def kick(self, condition: str, text: str = "") -> None: ...


S = TypeVar("S", bound=LocalSession)


class SessionTable(Generic[S]):
    """The live sessions of a worker, and the XEP-0198 resumption ids it issued or took over."""

    def __init__(self, worker_index: int) -> None:
        self.worker_index = worker_index
        self._live: set[S] = set()
        self._by_key: dict[str, S] = {}
        self._by_jid: dict[JID, S] = {}
        self._no_sessions: trio.Event | None = None
        #: XEP-0198 sessions that may be resumed, by their unguessable id.
        self.resumable: dict[str, S] = {}
        #: Ended resumable sessions: id → (username, h), for the `h` of a late <failed/> (§5).
        self._expired: OrderedDict[str, tuple[str, int]] = OrderedDict()
        self._moved_resumptions: OrderedDict[str, int] = OrderedDict()
        self._moved_sessions: OrderedDict[str, ActorRef[m.SessionMessage]] = OrderedDict()

    def __iter__(self) -> Iterator[S]:
        return iter(self._live)

    def __len__(self) -> int:
        return len(self._live)

    # ---- live sessions -------------------------------------------------------------------------

    def opened(self, session: S) -> None:
        self._live.add(session)
        self._by_key[session.address.key] = session

    def bound(self, session: S) -> None:
        """The session's full JID is known (bound or resumed here): room broadcasts find it."""
        assert session.jid is not None
        self._by_jid[session.jid] = session

    def closed(self, session: S) -> None:
        self._live.discard(session)
        if self._by_key.get(session.address.key) is session:
            del self._by_key[session.address.key]
        if session.jid is not None and self._by_jid.get(session.jid) is session:
            del self._by_jid[session.jid]
        if not self._live and self._no_sessions is not None:
            self._no_sessions.set()

    def by_jid(self, jid: JID) -> S | None:
        """The live session of this worker bound to the full JID `jid`."""
        return self._by_jid.get(jid)

    def by_key(self, key: str) -> S | None:
        """The live session of this worker whose address key is `key` (frames name sessions so)."""
        return self._by_key.get(key)

    def ref_by_key(self, key: str) -> ActorRef[m.SessionMessage] | None:
        session = self._by_key.get(key)
        return None if session is None else session.ref

    def kill(self, ref: ActorRef[m.SessionMessage]) -> None:
        """End a session that does not read (a local one; a remote one's worker sees to its own)."""
        session = self._by_key.get(ref.address.key)
        if session is not None and ref.address.worker == self.worker_index:
            session.kick("policy-violation", "not reading")

    def kick_all(self, condition: str, text: str = "") -> None:
        for session in list(self._live):
            session.kick(condition, text)

    async def wait_closed(self) -> None:
        """Return once no session is left (shutdown waits for the streams it ended)."""
        if self._live:
            self._no_sessions = trio.Event()
            await self._no_sessions.wait()

    # ---- XEP-0198 resumption ids ---------------------------------------------------------------

    def new_resumption_id(self) -> str:
        """XEP-0198 ids are bearer secrets (with the account's login): 128 random bits, after the
        number of the worker that holds the session, so that any worker knows whom to ask."""
        return f"{self.worker_index}.{secrets.token_urlsafe(16)}"

    def resumption_worker(self, resumption_id: str) -> int | None:
        """The worker that issued `resumption_id` or to which it moved; None: not another one's."""
        moved = self._moved_resumptions.get(resumption_id)
        if moved is not None:
            return moved
        prefix, dot, _ = resumption_id.partition(".")
        if not dot or not prefix.isdigit() or len(prefix) > 6 or int(prefix) == self.worker_index:
            return None
        return int(prefix)

    def moved(self, key: str, resumption_id: str, to: ActorRef[m.SessionMessage]) -> None:
        """A session of this worker was resumed on another one: later resumptions of the same id
        and stray deliveries for the old session go there."""
        self._moved_resumptions[resumption_id] = to.address.worker
        self._moved_sessions[key] = to
        for table in (self._moved_resumptions, self._moved_sessions):
            while len(table) > EXPIRED_RESUMPTIONS_KEPT:
                table.popitem(last=False)

    def moved_session(self, key: str) -> ActorRef[m.SessionMessage] | None:
        return self._moved_sessions.get(key)

    def remember_expired(self, resumption_id: str, username: str, h: int) -> None:
        self._expired[resumption_id] = (username, h)
        while len(self._expired) > EXPIRED_RESUMPTIONS_KEPT:
            self._expired.popitem(last=False)

    def expired_resumption(self, resumption_id: str, username: str) -> int | None:
        """The last `h` of an ended session of `username` with this id, if still remembered."""
        found = self._expired.get(resumption_id)
        return found[1] if found is not None and found[0] == username else None
