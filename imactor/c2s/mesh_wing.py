"""The client sessions' side of the mesh: the frames for sessions, remote resumptions, and what
a membership change means for the sessions of this worker.

Registered with the mesh by the worker's root (`install`); the mesh itself knows nothing of
sessions. Inbound kinds:
- ``session`` (key: the session's address key): deliveries and requests for a session here. A
  session that was resumed on another worker gets the deliveries that follow it; one that ended
  tells its account, which then drops the resource.
- ``resume`` (key: the XEP-0198 resumption id): another worker's client resumes a session of
  this one (`TakeOver`); an id that moved on is passed on to the worker that has it.

On a membership change, each session is sent what concerns it: `Rehome` when its account moved
(it re-registers with the new home: `Rebind`), `RoomsLost` when workers died (its client is told
it left the rooms that lived there, XEP-0045 status 333, and joins them again at their new homes).
The wing reads only the session's account name; whatever else changes, the session changes.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import trio

from imactor import messages as m
from imactor.actors import ActorAddress, ActorGone
from imactor.cluster.placement import Membership
from imactor.mesh.codec import BodyError
from imactor.mesh.refs import GoneRef
from imactor.xmpp.errors import StanzaError

if TYPE_CHECKING:
    from imactor.c2s.session import SessionActor
    from imactor.hosts import Hosts
    from imactor.mesh.mesh import Mesh
    from imactor.server.sessions import SessionTable


class SessionWing:
    """What the mesh hands to the sessions of this worker."""

    def __init__(self, mesh: Mesh, sessions: SessionTable[SessionActor], hosts: Hosts) -> None:
        self._mesh, self._sessions, self._hosts = mesh, sessions, hosts

    def install(self) -> None:
        mesh = self._mesh
        mesh.handle("session", self.to_session)
        mesh.handle("resume", self.resume)
        mesh.resolve("session", self._sessions.ref_by_key)
        mesh.on_membership(self.membership_changed)

    def to_session(self, key: str, message: Any) -> None:
        moved = self._sessions.moved_session(key)
        if moved is not None:
            # Only deliveries follow a resumed session; a Kick for the old one (the account
            # replacing the old session by the one that resumed it) must not end the new one.
            if isinstance(message, m.Deliver):
                with contextlib.suppress(ActorGone, trio.WouldBlock):
                    moved.send_nowait(message)
            return
        session = self._sessions.by_key(key)
        if session is not None:
            with contextlib.suppress(ActorGone):
                try:
                    session.ref.send_nowait(message)
                except trio.WouldBlock:
                    session.kick("policy-violation", "not reading")
            return
        account = self._hosts.key(message.stanza.to_jid) if isinstance(message, m.Deliver) else None
        if account is not None:
            # Its account still thinks it is bound here: tell it (the resource goes unavailable).
            gone = GoneRef[m.SessionMessage](ActorAddress("session", key, self._mesh.index))
            self._mesh.to_hosted("user", account, m.SessionLost(gone))

    def resume(self, resumption_id: str, request: Any) -> None:
        """XEP-0198 resumption of a session of this worker from another worker."""
        if not isinstance(request, m.TakeOver):
            raise BodyError(f"a {type(request).__name__} for a resumption")
        sessions, mesh = self._sessions, self._mesh
        session = sessions.resumable.get(request.previd)
        if session is None:
            moved_to = sessions.resumption_worker(request.previd)
            if moved_to is not None and moved_to != mesh.index:
                with contextlib.suppress(ActorGone):
                    mesh.send_nowait(ActorAddress("resume", request.previd, moved_to), request)
                    return
        if session is None or not session.can_resume(request.username):
            # Unknown, expired, or another account's id: all look the same to the client.
            stale = sessions.expired_resumption(request.previd, request.username)
            request.reply.fail(StanzaError("item-not-found", "" if stale is None else str(stale)))
            return
        session.take_over_remote(request)

    def membership_changed(self, old: Membership, new: Membership, lost: frozenset[int]) -> None:
        for session in list(self._sessions):
            bound = session.username
            if bound is not None and old.home("user", bound) != new.home("user", bound):
                with contextlib.suppress(ActorGone, trio.WouldBlock):
                    session.ref.send_nowait(m.Rehome())
            if lost:
                with contextlib.suppress(ActorGone, trio.WouldBlock):
                    session.ref.send_nowait(m.RoomsLost(old, lost))
