"""Every worker's client sessions as an administrator sees them (XEP-0133 through the module
API: `ServerApi.online_sessions`, `announce`, `end_sessions`).

Sessions live on the worker that accepted their socket, so each question goes to every live
worker of the membership (of every node, in a cluster) as a frame of the mesh's ``admin`` kind,
and each worker answers for its own sessions from its session table:

- `ListSessions`, asked with a reply: the full JIDs bound here (`OnlineSessions`). The asks run
  at once, each under `ASK_TIMEOUT`; a worker that dies or does not answer meanwhile is left out
  of the list and logged (the list is a snapshot anyway: sessions come and go while it is made).
- `Announce`: one frame per worker with the serialized message (no `to`); that worker splices
  each session's JID into the bytes and hands the copies to its sessions without waiting, as a
  room's fan-out does. A session whose mailbox is full is ended (it stopped reading).
- `EndSessions`: the account's sessions here (or the one of a resource) end with a stream error,
  also those that authenticated and have not bound a resource yet.

A worker alone (no mesh) answers all three from its own table.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any

import trio

from imactor import messages as m
from imactor.actors import ActorAddress, ActorGone, AskTimeout, ask
from imactor.mesh.codec import BodyError
from imactor.rooms.fanout import deliver_here
from imactor.xmpp.jid import JID
from imactor.xmpp.stanza import Stanza

if TYPE_CHECKING:
    from imactor.server.services import Services

log = logging.getLogger("imactor.admin")

#: The mesh kind of these frames (key: "").
KIND = "admin"
#: Seconds each worker has to list its sessions.
ASK_TIMEOUT = 5.0


class AdminWing:
    """The `SessionsAdmin` of this worker (`imactor.server.server_api`)."""

    def __init__(self, services: Services) -> None:
        self._services = services

    def install(self) -> None:
        """Answer the other workers' frames (with a mesh), and serve the server API."""
        for facade in self._services.facades:
            facade.sessions_admin = self
        if self._services.mesh is not None:
            self._services.mesh.handle(KIND, self._on_frame)

    # ---- the server API's side -------------------------------------------------------------

    async def online(self) -> list[JID]:
        found = list(self._bound_here())
        mesh = self._services.mesh
        if mesh is None:
            return found

        async def ask_worker(worker: int) -> None:
            target = mesh.remote(KIND, "", worker)
            try:
                answer: m.OnlineSessions = await ask(target, m.ListSessions, timeout=ASK_TIMEOUT)
            except (ActorGone, AskTimeout) as exc:
                log.warning("w%d: worker %d did not list its sessions: %s", mesh.index, worker, exc)
                return
            found.extend(answer.jids)

        async with trio.open_nursery() as nursery:
            for worker in self._peers():
                nursery.start_soon(ask_worker, worker)
        return found

    async def announce(self, template: Stanza) -> None:
        self._announce_here(template)
        mesh = self._services.mesh
        for worker in self._peers():
            assert mesh is not None
            with contextlib.suppress(ActorGone):  # gone meanwhile: so are its sessions
                mesh.send_nowait(ActorAddress(KIND, "", worker), m.Announce(template))

    async def end_sessions(self, username: str, resource: str, condition: str, text: str) -> None:
        message = m.EndSessions(username, resource, condition, text)
        end_sessions_here(self._services, message)
        mesh = self._services.mesh
        for worker in self._peers():
            assert mesh is not None
            with contextlib.suppress(ActorGone):
                mesh.send_nowait(ActorAddress(KIND, "", worker), message)

    # ---- this worker's sessions --------------------------------------------------------------

    def _on_frame(self, _key: str, message: Any) -> None:
        match message:
            case m.ListSessions(reply):
                reply.send(m.OnlineSessions(tuple(self._bound_here())))
            case m.Announce(template):
                self._announce_here(template)
            case m.EndSessions():
                end_sessions_here(self._services, message)
            case _:
                raise BodyError(f"a {type(message).__name__} for the administration")

    def _peers(self) -> list[int]:
        mesh = self._services.mesh
        if mesh is None:
            return []
        return [worker for worker in mesh.membership.live if worker != mesh.index]

    def _bound_here(self) -> list[JID]:
        return [session.jid for session in self._services.sessions if session.jid is not None]

    def _announce_here(self, template: Stanza) -> None:
        # Every recipient is a session of this worker: nothing is left for another route.
        deliver_here(self._services, template, self._bound_here())


def end_sessions_here(services: Services, message: m.EndSessions) -> int:
    """End the sessions `message` names among this worker's; how many there were."""
    wanted = (message.username, message.resource)
    ended = 0
    for session in list(services.sessions):
        jid = session.jid
        if message.resource:
            if jid is None or (services.hosts.key(jid), jid.resourcepart) != wanted:
                continue
        elif session.authenticated_as != message.username:
            continue
        # Without a resource, sessions that authenticated but have not bound yet end too: a
        # login that read the account before it was disabled must not slip in after this.
        session.kick(message.condition, message.text)
        ended += 1
    return ended
