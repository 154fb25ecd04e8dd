"""One multi-user chat room (XEP-0045) as an actor: the I/O shell around the sans-IO `Room`.

The actor owns the room: every stanza to it passes through its one mailbox, so every occupant
sees the same order of messages. It feeds the stanza to `imactor.muc.room.Room` and carries out
the outcome, in this order:

1. the room's state (configuration, affiliations, subject), when it changed, is saved;
   when that write fails (a full disk, a read-only database), the room is put back as it was
   before the stanza, nothing of it goes out, and its sender gets the error (RFC 6120 §8.3.3.18
   ``resource-constraint`` or §8.3.3.6 ``internal-server-error``, as for an account's writes):
   what occupants and storage know of the room never part ways;
2. the messages the room keeps go to the modules' room hooks (`Module.on_room_messages`: the
   `muc_mam` module appends them to the room's archive); only then is the sender's XEP-0198
   completion signalled, so a message counted in the sender's `h` is in the archive;
3. the stanzas go out (`imactor.rooms.fanout`: one frame per worker).

Before the room sees a message or presence, the modules' room stanza hooks may change or refuse
it (`Module.on_room_stanza`: the word filter masks or refuses words in bodies, subjects, nicks and
status texts); a refused stanza is bounced to its sender and the room never sees it.

The room learns where each occupant's session lives from the `origin` of its presence
(`m.Route`), and forgets the occupants of a worker that dies (`WorkersLost`: they leave with
status 333). A room that moves to another worker while both live (`HandOff`: a worker came
back) hands its occupants to the new home, which re-activates the room from storage and takes
them over (`RoomMoved`): they stay in the room. IQs to the room's JID that a module claims
(`Scope.ROOM`: XEP-0313 queries of its archive, `muc_mam`) run that module's handler here, in
order with the room's other stanzas; the room gets the rest.
"""

from __future__ import annotations

import copy
import json
import logging
import time
import weakref
from typing import TYPE_CHECKING

from lxml import etree

from imactor import messages as m
from imactor.actors import Actor, ActorAddress, ActorGone
from imactor.actors.registry import Retiring
from imactor.ids import random_id
from imactor.muc.room import Room
from imactor.muc.state import RoomState
from imactor.muc.values import ArchiveItem, Outcome
from imactor.rooms import fanout
from imactor.server.modules import Scope, storage_failure
from imactor.storage.errors import StorageError
from imactor.storage.rooms import StoredRoom
from imactor.xmpp import stanza as st
from imactor.xmpp.errors import StanzaError
from imactor.xmpp.jid import JID
from imactor.xmpp.namespaces import NS_CLIENT, qname
from imactor.xmpp.stanza import Stanza

if TYPE_CHECKING:
    from imactor.rooms.service import MucService
    from imactor.server.services import Services

log = logging.getLogger("imactor.room")

MUC_USER = "http://jabber.org/protocol/muc#user"
#: What may change a room's state besides IQ sets and creation (`RoomActor._may_change_state`).
_SUBJECT = qname(NS_CLIENT, "subject")
_MUC_USER_X = qname(MUC_USER, "x")
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
        self.jid = muc.room_jid(name)  # `name` is the room's key: see `MucService.key`
        #: Where each occupant's session lives (real full JID → worker), from its presence.
        self._workers: dict[JID, int] = {}
        #: The answer for the creator of a room that does not exist yet, read by the room's
        #: `ServiceInfo.may_create` (a holder, not the actor: no reference cycle through the room).
        self._may_create = _CreationAnswer()
        self._handed_off = False
        self._retiring: Retiring | None = None  # from the decision to stop until the end
        #: Storage is behind the room in memory: a write that could not be undone failed (a
        #: temporary room left empty whose row could not be deleted); written again at stop.
        self._unsaved = False
        self.room: Room
        self._api = _RoomApi(self)

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
        answer = self._may_create
        info = self.muc.service_info(lambda _creator: answer.allowed)
        self.room = Room(self.jid, state, info, history=history, new_id=_new_id)

    def before_stop(self) -> None:
        self._retiring = self.services.registry.retire("room", self.name, self.ref)

    def after_stop(self) -> None:
        if self._retiring is not None:
            self.services.registry.ended("room", self.name, self._retiring)

    async def on_stop(self) -> None:
        if not self._unsaved or self._handed_off:
            return
        try:
            await self._store_current()
        except StorageError as exc:
            log.error("%s: the room's state could not be stored (%s); storage keeps its earlier state",
                      self.address, exc)  # fmt: skip

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
                    before = copy.deepcopy(self.room)
                    outcome = self.room.destroy(reason or None, alternate, time.time())
                    if (failed := await self._store_or_undo(outcome, before)) is not None:
                        reply.fail(failed)  # the administrator's command says why (worker.admin)
                        return
                    await self._publish(outcome)
                reply.send(existed)

    async def _stanza(self, stanza: Stanza, origin: int | None) -> None:
        element = stanza.element()
        to_room = stanza.to_jid.resourcepart is None
        if stanza.kind == "iq" and to_room and await self._module_iq(stanza, element):
            return
        if stanza.kind != "iq" and stanza.type != "error" and not await self._stanza_hooks(stanza, element):
            return
        if stanza.kind == "presence" and not self.room.exists and stanza.type == "":
            self._may_create.allowed = await self.muc.creation_allowed(stanza.from_jid)
        # A copy to go back to if the change cannot be stored; only for the stanzas that may
        # change the state, so that the room's busiest stanzas (groupchat, presence) copy nothing.
        before = copy.deepcopy(self.room) if self._may_change_state(stanza, element) else None
        outcome = self.room.handle(element, time.time())
        if stanza.kind == "presence":
            self._track(stanza.from_jid, origin)
        if before is None:
            await self._apply(outcome)
            return
        if (failed := await self._store_or_undo(outcome, before)) is not None:
            if stanza.kind == "presence":
                self._track(stanza.from_jid, origin)  # a creator who did not enter after all
            await self.services.router.bounce(stanza, storage_failure(failed, "the change to the room"))
            return
        await self._publish(outcome)

    def _may_change_state(self, stanza: Stanza, element: st.Element) -> bool:
        """Could this stanza change the room's stored state (`Outcome.state_changed`, or an
        owner's destruction)? Creation (XEP-0045 §10.1), IQ sets to the room (muc#owner
        configuration and destruction, muc#admin affiliations), a subject (§8.1) and invitations
        (§7.8: an invitee to a members-only room becomes a member). A presence to a room that
        exists never does; the last occupant leaving a temporary room ends it (`_apply`)."""
        if stanza.kind == "presence":
            return not self.room.exists
        if stanza.kind == "iq":
            return stanza.type == "set" and stanza.to_jid.resourcepart is None
        return element.find(_SUBJECT) is not None or element.find(_MUC_USER_X) is not None

    def _track(self, real_jid: JID, origin: int | None) -> None:
        """Remember (or forget) where an occupant's session lives, after its presence."""
        if self.room.has_session(real_jid):
            if origin is not None:
                self._workers[real_jid] = origin
        else:
            self._workers.pop(real_jid, None)

    async def _apply(self, outcome: Outcome) -> None:
        """Store and send an outcome that cannot be undone: occupants leaving (which may end a
        temporary room). If storing fails the room still changed (an occupant who left has
        left): storage catches up at the next write, or when the actor stops."""
        try:
            await self._store(outcome)
        except StorageError as exc:
            self._unsaved = True
            log.warning("%s: the room's state could not be stored (%s); written again when it stops",
                        self.address, exc)  # fmt: skip
        await self._publish(outcome)

    async def _store_or_undo(self, outcome: Outcome, before: Room) -> StorageError | None:
        """Store `outcome`; if that fails, put the room back as it was (`before`, a copy taken
        before the change) and return the error: nothing of the outcome may go out then."""
        try:
            await self._store(outcome)
        except StorageError as exc:
            self.room = before
            log.warning("%s: a change to the room was refused: its state could not be stored (%s)",
                        self.address, exc)  # fmt: skip
            return exc
        return None

    async def _store(self, outcome: Outcome) -> None:
        """Write what the outcome changed of the room's state (`StorageError` if that failed)."""
        if outcome.destroyed or outcome.state_changed or self._unsaved:
            # Also a temporary room that its last occupant left (XEP-0045 §10.1). The actor goes
            # on: stanzas queued behind the destruction (the creator joining again at once) find
            # no room here and may create a new one, from nothing; it stops once idle.
            await self._store_current()

    async def _store_current(self) -> None:
        """Make storage hold the room as it is in memory: its state, or no row once it ended."""
        if self.room.exists:
            await self._save()
        else:
            await self.services.storage.rooms.delete(self.name)
        self._unsaved = False

    async def _publish(self, outcome: Outcome) -> None:
        """Hand the messages the room keeps to its archive (`muc_mam`), then send the stanzas."""
        if outcome.archive and self.room.state is not None and self.room.state.config.enable_logging:
            host = self.services.view(self.muc.host)  # the modules of the service's domain
            contexts = host.contexts
            for hook, options in host.modules.room_hooks:
                await hook(contexts.room_messages(self._api, outcome.archive, options))
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
        # Sent even for a room without occupants: its new home holds the room's messages until
        # the hand-over arrives (the mesh's `HandOffGate`).
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

    async def _stanza_hooks(self, stanza: Stanza, element: st.Element) -> bool:
        """Run the modules' room stanza hooks (`Module.on_room_stanza`: the word filter) on a
        message or presence before the room sees it; False: a hook refused it, and the sender
        got the error (nothing was broadcast, kept or archived)."""
        services, host = self.services, self.services.view(self.muc.host)
        for hook, options in host.modules.room_stanza_hooks:
            try:
                await hook(host.contexts.room_stanza(element, self._api, options))
            except StanzaError as error:
                await services.router.bounce(stanza, error)
                return False
        return True

    async def _module_iq(self, stanza: Stanza, request: st.Element) -> bool:
        """An IQ get/set to the room's JID that a module claims (`Scope.ROOM`): run its handler
        and route its answer (or bounce its error). False: no module claims it."""
        if stanza.type not in ("get", "set") or not len(request) or not isinstance(request[0].tag, str):
            return False
        services, host = self.services, self.services.view(self.muc.host)
        found = host.modules.iq_handler(stanza.type, request[0], Scope.ROOM)
        if found is None:
            return False
        handler, options = found
        ctx = host.contexts.iq(request, stanza.from_jid, stanza.to_jid, options, room=self._api)
        try:
            reply = await handler(ctx)
        except StanzaError as error:
            await services.router.bounce(stanza, error)
            return True
        if reply is not None:
            await services.router.route(Stanza.from_element(reply), wait=False)
        return True


class _CreationAnswer:
    """May the first occupant create the room (`RoomActor._may_create`)?"""

    __slots__ = ("allowed",)

    def __init__(self) -> None:
        self.allowed = False


class _RoomApi:
    """The `RoomApi` of one room: what its modules may see and do (`imactor.server.modules`)."""

    def __init__(self, actor: RoomActor) -> None:
        # A weak proxy: the actor holds this view, and a strong reference back would make a
        # cycle that keeps an ended room for the cyclic collector (`imactor.worker.process.tune_gc`).
        self._actor: RoomActor = weakref.proxy(actor)
        self.name = actor.name
        self.jid = actor.jid

    @property
    def exists(self) -> bool:
        return self._actor.room.exists

    def may_read_archive(self, requester: JID) -> bool:
        return self._actor.room.may_read_archive(requester)

    async def send(self, element: st.Element) -> None:
        await self._actor.services.router.route(Stanza.from_element(element), wait=False)


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
