"""The actor mesh of one worker: references to actors on other workers, placement and hand-off.

Every user actor has a home worker, `Membership.home("user", username)` (rendezvous hashing over
the live workers, `imactor.cluster.placement`); every worker computes the same home from the same
membership, which the node supervisor announces with an epoch. A message for an actor at home
elsewhere is encoded (`imactor.mesh.codec`) into one `ActorMessage` frame for that worker's
ZeroMQ link (`imactor.cluster.zmq_link`); references, reply slots and XEP-0198 completions travel
as addresses and correlation ids and come back as stand-ins (`RemoteRef`, `_RemoteReply`,
`_RemoteCompletion`) that send frames in turn.

Inbound, frames are dispatched without waiting on any one actor: a user actor that is not running
is activated in a task of its own while later frames for it queue behind (per-sender order holds).
A frame that arrives under an older epoch for an actor that is no longer at home here is
forwarded to its home under this worker's newer view; under an equal or newer epoch it is handled
here, so two workers with different views can never bounce a frame back and forth.

Membership changes (docs/design.md, "Actors"):
- user actors whose home moved stop (`HandOff`): their state is in storage and the new home
  re-activates them on demand;
- sessions whose account moved re-register with the new home (`Rehome` → `Rebind`);
- when workers die, every local user actor drops the resources whose sessions lived there
  (`WorkersLost`: they go unavailable to contacts), asks pending towards them fail, and routed
  messages whose durable handling was pending there are marked lost, so that their senders'
  sessions route them again (at least once: docs/design.md, "The failover promise").

BOSH (`imactor.web.bosh`): a request that reached this worker for a session of another one is
asked of that worker (`BoshRequest`, target kind ``bosh``, key the sid); the handler the web layer
sets in `bosh` answers it in a task of its own, since a held request waits for data.

Error handling: a frame that does not decode is logged and dropped; the mesh carries on.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import trio

from imactor.actors import ActorAddress, ActorGone, ActorRef, Reply
from imactor.cluster.endpoints import MASTER, worker_endpoint
from imactor.cluster.placement import Membership
from imactor.cluster.wire import ActorMessage, Envelope, MembershipChanged
from imactor.cluster.zmq_link import UnknownPeer, ZmqLink
from imactor.mesh import codec
from imactor.rooms import fanout
from imactor.rooms.actor import removed_presence
from imactor.server import messages as m
from imactor.xmpp.errors import StanzaError

if TYPE_CHECKING:
    from pathlib import Path

    from imactor.c2s.session import SessionActor
    from imactor.server.worker_services import Services

log = logging.getLogger("imactor.mesh")

M = TypeVar("M")

#: Seconds a remote `send` waits for room in a peer's outbox before it counts the peer as gone.
SEND_TIMEOUT = 5.0
#: Seconds an unanswered reply slot or completion is remembered (asks time out well before).
PENDING_TTL = 60.0
SWEEP_INTERVAL = 10.0
#: Seconds between a membership change that lost workers and the news reaching the accounts.
LOST_GRACE = 1.0
#: Frames queued per peer. A dead peer's frames wait there (and in ZeroMQ's queue) for its
#: successor, which binds the same endpoint and handles or forwards them.
OUTBOX_CAPACITY = 16384


@dataclass(frozen=True, slots=True)
class MeshStatistics:
    epoch: int
    live_workers: tuple[int, ...]
    frames_in: int
    frames_out: int
    forwarded: int  #: frames that reached this worker under an older view and went on to the home
    dropped: int  #: frames that could not be queued (peer outbox full) or whose target was gone
    decode_errors: int
    handoffs: int  #: user actors stopped here because their home moved
    resumed_here: int  #: XEP-0198 sessions of another worker resumed on this one
    pending_replies: int
    pending_completions: int
    bosh_forwarded: int = 0  #: BOSH requests this worker received for another worker's session
    bosh_served: int = 0  #: BOSH requests another worker forwarded to a session of this one


class RemoteRef(Generic[M]):
    """A reference to an actor on another worker of the node: sends become frames."""

    __slots__ = ("_address", "_mesh")

    def __init__(self, address: ActorAddress, mesh: Mesh) -> None:
        self._address = address
        self._mesh = mesh

    @property
    def address(self) -> ActorAddress:
        return self._address

    async def send(self, message: M) -> None:
        await self._mesh.send(self._address, message)

    def send_nowait(self, message: M) -> None:
        self._mesh.send_nowait(self._address, message)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RemoteRef | _GoneRef) and other.address == self._address

    def __hash__(self) -> int:
        return hash(self._address)

    def __repr__(self) -> str:
        return f"<RemoteRef {self._address}>"


class _GoneRef(Generic[M]):
    """A local session that has ended, named in a frame: every send says so."""

    __slots__ = ("_address",)

    def __init__(self, address: ActorAddress) -> None:
        self._address = address

    @property
    def address(self) -> ActorAddress:
        return self._address

    async def send(self, message: M) -> None:
        raise ActorGone(str(self._address))

    def send_nowait(self, message: M) -> None:
        raise ActorGone(str(self._address))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _GoneRef | RemoteRef) and other.address == self._address

    def __hash__(self) -> int:
        return hash(self._address)


class _RemoteReply(Reply[Any]):
    """The reply slot of an `ask` made on another worker: the answer goes back as a frame."""

    __slots__ = ("_id", "_mesh", "_worker")

    def __init__(self, mesh: Mesh, worker: int, reply_id: str) -> None:
        self._mesh, self._worker, self._id = mesh, worker, reply_id
        self._done = False

    def _put(self, item: tuple[bool, Any]) -> None:
        if self._done:
            return
        self._done = True
        _ok, value = item
        body_kind, body = codec.encode_reply(value)
        self._mesh.send_frame(self._worker, ActorMessage(codec.REPLY, self._id, body_kind, body))


class _RemoteCompletion(m.Completion):
    """The completion of a message routed from another worker: `done` sends a frame back."""

    __slots__ = ("_id", "_mesh", "_worker")

    def __init__(self, mesh: Mesh, worker: int, completion_id: str) -> None:
        super().__init__()
        self._mesh, self._worker, self._id = mesh, worker, completion_id

    def done(self) -> None:
        if not self.is_done:
            super().done()
            self._mesh.send_frame(self._worker, ActorMessage(codec.COMPLETION, self._id, "Done", b""))


class Mesh:
    """This worker's view of the node and its link to the other workers. Run it with `run`."""

    def __init__(self, services: Services, index: int, workers: int, run_dir: Path) -> None:
        self.index = index
        self._services = services
        self._run_dir, self._workers = run_dir, workers
        # Until the node supervisor's first announcement: every worker is assumed live.
        self.membership = Membership(0, tuple(range(workers)))
        self.link = self._new_link()
        self._ids = itertools.count(1)
        self._replies: dict[str, tuple[Reply[Any], int, float]] = {}
        self._completions: dict[str, tuple[m.Completion, int, float]] = {}
        #: Messages for user and room actors being activated here, in arrival order.
        self._activating: dict[tuple[str, str], list[Any]] = {}
        self._nursery: trio.Nursery | None = None
        self._frames_in = self._frames_out = self._forwarded = 0
        self._dropped = self._decode_errors = self._handoffs = 0
        self.resumed_here = 0  #: counted by the sessions that resume from another worker
        #: Serves a BOSH request forwarded for a session of this worker (`imactor.web.bosh`
        #: sets it); it runs in a task of its own, as a held request waits for data.
        self.bosh: Callable[[str, m.BoshRequest], Awaitable[None]] | None = None
        self.bosh_forwarded = 0  #: counted by `imactor.web.bosh` when it forwards a request
        self._bosh_served = 0

    def _new_link(self) -> ZmqLink:
        run_dir, index = self._run_dir, self.index
        peers = {w: worker_endpoint(run_dir, w) for w in range(self._workers) if w != index}
        return ZmqLink(
            index, worker_endpoint(run_dir, index), peers, epoch=self.membership.epoch,
            outbox_capacity=OUTBOX_CAPACITY, receive_capacity=OUTBOX_CAPACITY,
            on_receive=self._on_envelope,
        )  # fmt: skip

    # ---- placement -----------------------------------------------------------------------------

    @property
    def workers(self) -> int:
        """How many workers the node runs (numbered 0 … workers-1, live or not)."""
        return self._workers

    def home(self, kind: str, key: str) -> int:
        return self.membership.home(kind, key)

    def remote(self, kind: str, key: str, worker: int) -> RemoteRef[Any]:
        return RemoteRef(ActorAddress(kind, key, worker), self)

    # ---- sending -------------------------------------------------------------------------------

    def _frame(self, address: ActorAddress, message: object) -> ActorMessage:
        if address.worker not in self.membership.live:
            raise ActorGone(str(address))
        body_kind, body = codec.encode(message, address.worker, self)
        return ActorMessage(address.kind, address.key, body_kind, body)

    def send_nowait(self, address: ActorAddress, message: object) -> None:
        """Queue a message for an actor on another worker; never waits.

        Raises:
            ActorGone: its worker is not live in the current membership.
        """
        self.send_frame(address.worker, self._frame(address, message))

    async def send(self, address: ActorAddress, message: object) -> None:
        """Queue a message, waiting (bounded) for room in the peer's outbox.

        Raises:
            ActorGone: its worker is not live, or its outbox stayed full for `SEND_TIMEOUT`.
        """
        frame = self._frame(address, message)
        with trio.move_on_after(SEND_TIMEOUT):
            try:
                await self.link.send(address.worker, frame)
            except UnknownPeer:
                raise ActorGone(str(address)) from None
            self._frames_out += 1
            return
        raise ActorGone(f"{address}: its worker does not take frames")

    def send_frame(self, worker: int, frame: ActorMessage) -> None:
        """Queue one frame; a full outbox (a peer that is slow or dead) drops it, counted."""
        try:
            self.link.send_nowait(worker, frame)
            self._frames_out += 1
        except (trio.WouldBlock, UnknownPeer):
            self._dropped += 1
            log.warning("w%d: frame for %s:%s on w%d dropped", self.index, frame.target_kind,
                        frame.target_key, worker)  # fmt: skip

    # ---- the codec's endpoints -----------------------------------------------------------------

    def reply_id(self, reply: Reply[Any], target_worker: int) -> str:
        reply_id = str(next(self._ids))
        self._replies[reply_id] = (reply, target_worker, trio.current_time())
        return reply_id

    def completion_id(self, completion: m.Completion, target_worker: int) -> str:
        completion_id = str(next(self._ids))
        self._completions[completion_id] = (completion, target_worker, trio.current_time())
        return completion_id

    def session_ref(self, key: str, worker: int) -> ActorRef[m.SessionMessage]:
        address = ActorAddress("session", key, worker)
        if worker != self.index:
            return RemoteRef(address, self)
        session = self._services.session_by_key(key)
        return session.ref if session is not None else _GoneRef(address)

    def remote_reply(self, worker: int, reply_id: str) -> Reply[Any]:
        return _RemoteReply(self, worker, reply_id)

    def remote_completion(self, worker: int, completion_id: str) -> m.Completion:
        return _RemoteCompletion(self, worker, completion_id)

    # ---- running -------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[Mesh] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the link and dispatch what arrives; restartable (a fresh link each run)."""
        if self._nursery is not None:
            self.link = self._new_link()  # a ZmqLink runs once
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(self.link.run)
            nursery.start_soon(self._sweep)
            task_status.started(self)

    def _on_envelope(self, envelope: Envelope) -> None:
        """What arrives from the link, handled at once in the link's inbound task: every step
        of a dispatch is a `send_nowait` or a task started, so nothing here waits."""
        self._frames_in += 1
        message = envelope.message
        if isinstance(message, MembershipChanged):
            # No live worker at all is the node going down (or up): nothing to place.
            if envelope.source == MASTER and message.live_workers:
                self.apply_membership(Membership(message.epoch, message.live_workers))
        elif isinstance(message, ActorMessage):
            try:
                self._dispatch(envelope.source, envelope.epoch, message)
            except codec.BodyError as exc:
                self._decode_errors += 1
                log.warning("w%d: dropped a %s frame from w%d: %s", self.index,
                            message.body_kind, envelope.source, exc)  # fmt: skip

    async def _sweep(self) -> None:
        """Forget reply slots and completions nobody answered (their askers gave up long ago)."""
        while True:
            await trio.sleep(SWEEP_INTERVAL)
            horizon = trio.current_time() - PENDING_TTL
            for table in (self._replies, self._completions):
                for key in [k for k, (_, _, at) in table.items() if at < horizon]:
                    del table[key]

    def _dispatch(self, source: int, epoch: int, frame: ActorMessage) -> None:
        kind, key = frame.target_kind, frame.target_key
        if kind == codec.REPLY:
            pending = self._replies.pop(key, None)
            if pending is not None:
                ok, value = codec.decode_reply(frame.body_kind, frame.body)
                if ok:
                    pending[0].send(value)
                else:
                    assert isinstance(value, BaseException)
                    pending[0].fail(value)
            return
        if kind == codec.COMPLETION:
            done = self._completions.pop(key, None)
            if done is not None:
                done[0].done()
            return
        message = codec.decode(frame.body_kind, frame.body, source, self)
        if kind == "session":
            self._to_session(key, message)
        elif kind == "resume":
            if not isinstance(message, m.TakeOver):
                raise codec.BodyError(f"a {type(message).__name__} for a resumption")
            self._take_over(message)
        elif kind in ("user", "room"):
            home = self.home(kind, key)
            if home != self.index and epoch < self.membership.epoch:
                self._forwarded += 1
                try:
                    self.send_nowait(ActorAddress(kind, key, home), message)
                except ActorGone:
                    self._to_local(kind, key, message)
                return
            self._to_local(kind, key, message)
        elif kind == "bosh":
            if not isinstance(message, m.BoshRequest):
                raise codec.BodyError(f"a {type(message).__name__} for a BOSH session")
            self._bosh_served += 1
            if self.bosh is None:
                message.reply.fail(StanzaError("item-not-found", "no BOSH here"))
                return
            assert self._nursery is not None
            self._nursery.start_soon(self.bosh, key, message)
        elif kind == "fanout":
            if not isinstance(message, m.Fanout):
                raise codec.BodyError(f"a {type(message).__name__} for a room broadcast")
            assert self._nursery is not None
            # At once, in frame order: a room's broadcasts reach each session in the room's order.
            for stanza in fanout.deliver_here(self._services, message.stanza, message.recipients):
                self._nursery.start_soon(fanout.by_account, self._services, stanza)
        else:
            raise codec.BodyError(f"no actor kind {kind!r} on a worker")

    def _take_over(self, request: m.TakeOver) -> None:
        """XEP-0198 resumption of a session of this worker from another worker."""
        services = self._services
        session = services.resumable.get(request.previd)
        if session is None:
            moved_to = services.resumption_worker(request.previd)
            if moved_to is not None and moved_to != self.index:
                with contextlib.suppress(ActorGone):
                    self.send_nowait(ActorAddress("resume", request.previd, moved_to), request)
                    return
        if session is None or not session.can_resume(request.username):
            # Unknown, expired, or another account's id: all look the same to the client.
            stale = services.expired_resumption(request.previd, request.username)
            request.reply.fail(StanzaError("item-not-found", "" if stale is None else str(stale)))
            return
        session.take_over_remote(request)

    def _to_session(self, key: str, message: Any) -> None:
        moved = self._services.moved_session(key)
        if moved is not None:
            # Only deliveries follow a resumed session; a Kick for the old one (the account
            # replacing the old session by the one that resumed it) must not end the new one.
            if isinstance(message, m.Deliver):
                with contextlib.suppress(ActorGone, trio.WouldBlock):
                    moved.send_nowait(message)
            return
        session = self._services.session_by_key(key)
        if session is not None:
            with contextlib.suppress(ActorGone):
                try:
                    session.ref.send_nowait(message)
                except trio.WouldBlock:
                    session.kick("policy-violation", "not reading")
            return
        if isinstance(message, m.Deliver) and message.stanza.to_jid.localpart is not None:
            # Its account still thinks it is bound here: tell it (the resource goes unavailable).
            gone = _GoneRef[m.SessionMessage](ActorAddress("session", key, self.index))
            self.to_user(message.stanza.to_jid.localpart, m.SessionLost(gone))

    def to_user(self, username: str, message: Any) -> None:
        """Send to the account's actor wherever it lives, without waiting (for the mesh itself)."""
        home = self.home("user", username)
        if home == self.index:
            self._to_local_user(username, message)
        else:
            with contextlib.suppress(ActorGone):
                self.send_nowait(ActorAddress("user", username, home), message)

    def _to_local_user(self, username: str, message: Any) -> None:
        self._to_local("user", username, message)

    def _to_local(self, kind: str, key: str, message: Any) -> None:
        """To the user or room actor of `key` on this worker, activating it if need be."""
        queued = self._activating.get((kind, key))
        if queued is not None:
            queued.append(message)
            return
        ref = self._services.registry.lookup(kind, key)
        if ref is not None:
            try:
                ref.send_nowait(message)
                return
            except trio.WouldBlock:
                self._refuse(message, StanzaError("resource-constraint", "recipient is overloaded"))
                return
            except ActorGone:
                self._services.registry.unregister(kind, key, ref)
        assert self._nursery is not None
        self._activating[(kind, key)] = [message]
        self._nursery.start_soon(self._activate, kind, key)

    async def _activate(self, kind: str, key: str) -> None:
        """Start the actor, then hand it what queued meanwhile, in order."""
        queued = self._activating[(kind, key)]
        try:
            ref = await self._services.router.local(kind, key)
        except Exception:
            log.exception("w%d: cannot activate %s %s", self.index, kind, key)
            del self._activating[(kind, key)]
            for message in queued:
                self._refuse(message, StanzaError("internal-server-error"))
            return
        del self._activating[(kind, key)]
        for index, message in enumerate(queued):
            try:
                ref.send_nowait(message)
            except trio.WouldBlock:
                self._refuse(message, StanzaError("resource-constraint", "recipient is overloaded"))
            except ActorGone:
                for rest in queued[index:]:
                    self._to_local(kind, key, rest)
                return

    def _refuse(self, message: Any, error: StanzaError) -> None:
        """A message no actor took: its sender learns so where it can."""
        self._dropped += 1
        if isinstance(message, m.Route):
            assert self._nursery is not None
            self._nursery.start_soon(self._services.router.bounce, message.stanza, error)
            if message.completion is not None:
                message.completion.done()
        elif isinstance(message, m.Bind):
            message.reply.fail(error)
        else:
            log.warning("w%d: %s dropped: %s", self.index, type(message).__name__, error.condition)

    # ---- membership ----------------------------------------------------------------------------

    def apply_membership(self, new: Membership) -> None:
        old = self.membership
        if new.epoch <= old.epoch:
            return
        log.info("w%d: membership epoch %d: live workers %s", self.index, new.epoch, list(new.live))
        self.membership = new
        self.link.set_epoch(new.epoch)
        lost = frozenset(old.live) - frozenset(new.live)
        if lost:
            for key in [k for k, (_, target, _) in self._replies.items() if target in lost]:
                reply, _, _ = self._replies.pop(key)
                reply.fail(ActorGone(f"worker {sorted(lost)} died"))
            unknown = [k for k, (_, target, _) in self._completions.items() if target in lost]
            completions = [self._completions.pop(key)[0] for key in unknown]
            if self._nursery is not None:
                self._nursery.start_soon(self._workers_lost, lost, new.epoch, completions)
        for kind in ("user", "room"):
            for key, ref in self._services.registry.refs(kind):
                if new.home(kind, key) != self.index:
                    self._handoffs += 1
                    with contextlib.suppress(ActorGone, trio.WouldBlock):
                        ref.send_nowait(m.HandOff())
        for session in list(self._services.sessions):
            bound = session.username
            if bound is not None and old.home("user", bound) != new.home("user", bound):
                with contextlib.suppress(ActorGone, trio.WouldBlock):
                    session.ref.send_nowait(m.Rehome())
            if lost and session.joined_rooms:
                self._rooms_lost(session, old, lost)

    def _rooms_lost(self, session: SessionActor, old: Membership, lost: frozenset[int]) -> None:
        """The session's rooms that lived on `lost` restart elsewhere without their occupants:
        its client is told it left each (XEP-0045 status 333) so that it joins again."""
        for room, occupant in list(session.joined_rooms.items()):
            if room.localpart is None or old.home("room", room.localpart) not in lost or session.jid is None:
                continue
            del session.joined_rooms[room]
            gone = fanout.addressed(removed_presence(occupant), session.jid)
            with contextlib.suppress(ActorGone, trio.WouldBlock):
                session.ref.send_nowait(m.Deliver(gone))

    async def _workers_lost(
        self, lost: frozenset[int], epoch: int, completions: list[m.Completion]
    ) -> None:
        """Once the surviving sessions had `LOST_GRACE` to re-register with their accounts' new
        homes: route again the messages whose store on `lost` was unconfirmed (so they arrive
        live, not offline for an account that looked offline for a moment), and tell the
        accounts at home here that the sessions on `lost` are gone (a contact whose account just
        moved hears the news only once its session is bound there again)."""
        await trio.sleep(LOST_GRACE)
        for completion in completions:
            completion.lost()
        for kind in ("user", "room"):
            for key, ref in self._services.registry.refs(kind):
                if self.home(kind, key) == self.index:
                    with contextlib.suppress(ActorGone, trio.WouldBlock):
                        ref.send_nowait(m.WorkersLost(lost, epoch))

    def statistics(self) -> MeshStatistics:
        return MeshStatistics(
            epoch=self.membership.epoch,
            live_workers=self.membership.live,
            frames_in=self._frames_in,
            frames_out=self._frames_out,
            forwarded=self._forwarded,
            dropped=self._dropped,
            decode_errors=self._decode_errors,
            handoffs=self._handoffs,
            resumed_here=self.resumed_here,
            pending_replies=len(self._replies),
            pending_completions=len(self._completions),
            bosh_forwarded=self.bosh_forwarded,
            bosh_served=self._bosh_served,
        )
