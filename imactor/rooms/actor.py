"""One multi-user chat room (XEP-0045) as an actor: the I/O shell around the sans-IO `Room`.

The actor owns the room: every stanza to it passes through its one mailbox, so every occupant
sees the same order of messages. It feeds the stanza to `imactor.muc.room.Room` and carries out
the outcome, in this order:

1. the room's state (configuration, affiliations, subject), when it changed, is saved;
2. broadcast messages are appended to the room's archive; only then is the sender's XEP-0198
   completion signalled, so a message counted in the sender's `h` is in the archive;
3. the stanzas go out (`imactor.rooms.fanout`: one frame per worker).

The room learns where each occupant's session lives from the `origin` of its presence
(`m.Route`), and forgets the occupants of a worker that dies (`WorkersLost`: they leave with
status 333). A room that moves to another worker while both live (`HandOff`: a worker came
back) hands its occupants to the new home, which re-activates the room from storage and takes
them over (`RoomMoved`): they stay in the room. MAM queries on the room's JID (XEP-0313) are
answered here, with the archive in storage.
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING

from lxml import etree

from imactor import messages as m
from imactor.actors import Actor, ActorAddress, ActorGone
from imactor.ids import random_id
from imactor.modules import mam
from imactor.muc.room import ArchiveItem, Outcome, Room
from imactor.muc.state import RoomState
from imactor.rooms import fanout
from imactor.storage import ArchiveFilter, ArchivePage, StorageError
from imactor.storage.rooms import RoomArchiveEntry, StoredRoom
from imactor.xmpp import stanza as st
from imactor.xmpp.errors import StanzaError
from imactor.xmpp.jid import JID
from imactor.xmpp.stanza import Stanza

if TYPE_CHECKING:
    from imactor.rooms.service import MucService
    from imactor.server.services import Services

log = logging.getLogger("imactor.room")

MAM_QUERY = f"{{{mam.NS_MAM}}}query"
MUC_USER = "http://jabber.org/protocol/muc#user"
#: XEP-0045 status code: removed from the room because of a technical problem.
STATUS_TECHNICAL = "333"


class RoomActor(Actor[m.RoomMessage]):
    def __init__(self, name: str, services: Services, muc: MucService) -> None:
        address = ActorAddress("room", name, services.worker_index)
        super().__init__(address, services.config.limits.mailbox_size)
        self.idle_timeout = services.config.muc.idle_timeout
        self.name = name
        self.services = services
        self.muc = muc
        self.jid = JID.make(name, muc.domain)
        #: Where each occupant's session lives (real full JID → worker), from its presence.
        self._workers: dict[JID, int] = {}
        self._may_create = False
        self._handed_off = False
        self.room: Room

    # ---- life cycle ------------------------------------------------------------------------------

    async def on_start(self) -> None:
        storage = self.services.storage
        stored = await storage.rooms.load(self.name)
        state = None if stored is None else RoomState.from_json(stored.state)
        history: list[ArchiveItem] = []
        if state is not None:
            keep = min(state.config.history_length, self.services.config.muc.max_history)
            history = [
                ArchiveItem(entry.stanza_id, entry.timestamp, entry.nick, JID.parse(entry.real_jid),
                            st.parse(entry.stanza))
                for entry in await storage.rooms.recent(self.name, keep)
            ]  # fmt: skip
        info = self.muc.service_info(lambda _creator: self._may_create)
        self.room = Room(self.jid, state, info, history=history, new_id=_new_id)

    def before_stop(self) -> None:
        self.services.registry.unregister("room", self.name, self.ref)

    def is_idle(self) -> bool:
        return self.room.is_empty

    # ---- messages --------------------------------------------------------------------------------

    async def handle(self, message: m.RoomMessage) -> None:
        if self._handed_off:
            if isinstance(message, m.Route):
                await self.services.router.route(message.stanza, wait=False, completion=message.completion,
                                                 origin=message.origin)  # fmt: skip
            return
        match message:
            case m.Route(stanza, completion, origin):
                try:
                    await self._stanza(stanza, origin)
                finally:
                    if completion is not None:
                        completion.done()
            case m.WorkersLost(workers, _epoch):
                for jid in [jid for jid, worker in self._workers.items() if worker in workers]:
                    del self._workers[jid]
                    await self._apply(self.room.remove_occupant(jid, time.time(), status=STATUS_TECHNICAL))
            case m.HandOff():
                await self._hand_off()
            case m.RoomMoved(snapshot):
                self._moved_in(snapshot)
            case m.DestroyRoom(reason, alternate, reply):
                existed = self.room.exists
                if existed:
                    await self._apply(self.room.destroy(reason or None, alternate, time.time()))
                reply.send(existed)

    async def _stanza(self, stanza: Stanza, origin: int | None) -> None:
        element = stanza.element()
        if (
            stanza.kind == "iq"
            and stanza.to_jid.resourcepart is None
            and len(element)
            and (element[0].tag == MAM_QUERY)
        ):
            await self._archive_query(stanza, element)
            return
        if stanza.kind == "presence" and not self.room.exists and stanza.type == "":
            self._may_create = await self.muc.creation_allowed(stanza.from_jid)
        outcome = self.room.handle(element, time.time())
        if stanza.kind == "presence":
            self._track(stanza.from_jid, origin)
        await self._apply(outcome)

    def _track(self, real_jid: JID, origin: int | None) -> None:
        """Remember (or forget) where an occupant's session lives, after its presence."""
        if real_jid in self.room.by_session:
            if origin is not None:
                self._workers[real_jid] = origin
        else:
            self._workers.pop(real_jid, None)

    async def _apply(self, outcome: Outcome) -> None:
        storage = self.services.storage
        if outcome.destroyed:
            # Also a temporary room that its last occupant left (XEP-0045 §10.1). The actor goes
            # on: stanzas queued behind the destruction (the creator joining again at once) find
            # no room here and may create a new one, from nothing; it stops once idle.
            await storage.rooms.delete(self.name)
        elif outcome.state_changed:  # a room's creation too
            await self._save()
        if outcome.archive and self.room.state is not None and self.room.state.config.enable_logging:
            entries = [
                RoomArchiveEntry(self.name, str(self.jid), item.stanza_id, item.stamp, item.nick,
                                 str(item.real_jid), st.serialize(item.element))
                for item in outcome.archive
            ]  # fmt: skip
            try:
                await storage.rooms.append(entries)
            except StorageError:
                log.exception("%s: archive write failed", self.address)
        for outgoing in outcome.out:
            await self._send(outgoing.element, outgoing.recipients)

    async def _save(self) -> None:
        state = self.room.state
        if state is None:
            return
        await self.services.storage.rooms.save(StoredRoom(
            self.name, state.to_json(), state.config.public, state.config.persistent, state.creator,
        ))  # fmt: skip

    async def _send(self, element: st.Element, recipients: tuple[JID, ...]) -> None:
        if not recipients:
            return
        if element.get("to") is not None:
            del element.attrib["to"]
        template = Stanza(
            etree.QName(element).localname, element.get("type", ""), JID.parse(element.get("from", "")),
            self.jid, element.get("id"), st.serialize(element),
        )  # fmt: skip
        await fanout.broadcast(self.services, template, [(jid, self._workers.get(jid)) for jid in recipients])

    async def _hand_off(self) -> None:
        """The room's home moved: its state is in storage, and its occupants go to the new home
        (`RoomMoved`), ahead of the stanzas queued here, which follow them. If the new home
        cannot be reached, the occupants are told to join again (333)."""
        self._handed_off = True
        self.stop()
        if self.room.is_empty:
            return
        snapshot = {
            "occupants": self.room.export_occupants(),
            "workers": [[str(jid), worker] for jid, worker in self._workers.items()],
        }
        mesh = self.services.mesh
        try:
            if mesh is None:
                raise ActorGone("no mesh")
            home = mesh.home("room", self.name)
            moved = m.RoomMoved(json.dumps(snapshot).encode())
            mesh.send_nowait(ActorAddress("room", self.name, home), moved)
            log.debug("%s: handed off to w%d", self.address, home)
        except ActorGone:
            for occupant in self.room.occupants():
                for jid in occupant.real_jids:
                    gone = removed_presence(self.jid.with_resource(occupant.nick))
                    await fanout.broadcast(self.services, gone, [(jid, self._workers.get(jid))])

    def _moved_in(self, snapshot: bytes) -> None:
        """Occupants handed over by the room's previous home (see `_hand_off`)."""
        try:
            moved = json.loads(snapshot)
            self.room.import_occupants(moved["occupants"])
            for jid, worker in moved["workers"]:
                self._workers.setdefault(JID.parse(jid), int(worker))
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("%s: a hand-over that does not decode: %s", self.address, exc)

    async def _archive_query(self, stanza: Stanza, request: st.Element) -> None:
        router = self.services.router
        if stanza.type != "set" and stanza.type != "get":
            return
        if not self.room.exists or not self.room.may_read_archive(stanza.from_jid):
            await router.bounce(stanza, StanzaError("forbidden" if self.room.exists else "item-not-found"))
            return
        if stanza.type == "get":
            form = mam.query_form_reply(request, stanza.from_jid)
            await router.route(Stanza.from_element(form), wait=False)
            return
        rooms = self.services.storage.rooms

        async def fetch(where: ArchiveFilter, after: str | None, before: str | None, backwards: bool,
                        limit: int) -> ArchivePage:  # fmt: skip
            return await rooms.query(self.name, where, after=after, before=before, backwards=backwards,
                                     limit=limit)  # fmt: skip

        async def send(message: st.Element) -> None:
            await router.route(Stanza.from_element(message), wait=False)

        max_page = self.services.config.muc.max_history
        try:
            reply = await mam.answer_query(request, stanza.from_jid, self.jid, fetch, send, max(max_page, 50))
        except StanzaError as error:
            await router.bounce(stanza, error)
            return
        await router.route(Stanza.from_element(reply), wait=False)


def removed_presence(occupant: JID) -> Stanza:
    """What tells a client that the room removed it for a technical reason (XEP-0045 status 333,
    with 110: this is you), so that it joins again; without `to` (see `fanout.addressed`)."""
    presence = st.make("presence", from_=occupant, type_="unavailable")
    x = st.child(presence, MUC_USER, "x")
    item = st.child(x, MUC_USER, "item")
    item.set("affiliation", "none")
    item.set("role", "none")
    for code in ("110", STATUS_TECHNICAL):
        st.child(x, MUC_USER, "status").set("code", code)
    return Stanza("presence", "unavailable", occupant, occupant.bare, None, st.serialize(presence))


def _new_id() -> str:
    return random_id(12)
