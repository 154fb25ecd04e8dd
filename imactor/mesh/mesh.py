"""The actor mesh of one worker: references to actors on other workers, placement and hand-off.

Every user actor has a home worker, `Membership.home("user", username)` (rendezvous hashing over
the live workers, `imactor.cluster.placement`); every worker computes the same home from the same
membership, which the node supervisor announces with an epoch. A message for an actor at home
elsewhere is encoded (`imactor.mesh.codec`) into one `ActorMessage` frame for that worker's
ZeroMQ link (`imactor.cluster.zmq_link`); references, reply slots and XEP-0198 completions travel
as addresses and correlation ids and come back as stand-ins (`RemoteRef`, `RemoteReply`,
`RemoteCompletion`: `imactor.mesh.refs`) that send frames in turn.

Inbound, frames are dispatched without waiting on any one actor: a user actor that is not running
is activated in a task of its own while later frames for it queue behind (per-sender order holds).
A frame that arrives under an older epoch for an actor that is no longer at home here is
forwarded to its home under this worker's newer view; under an equal or newer epoch it is handled
here, so two workers with different views can never bounce a frame back and forth.

Membership changes: `imactor.mesh.handoff`, and the wings' listeners (`on_membership`).

The mesh is transport only: it knows frames, epochs, forwarding, remote references and which
actors it hosts, not what the wings do with their frames. Each wing registers the inbound kinds
it handles (`handle`): client sessions (``session``, ``resume``: `imactor.c2s.mesh_wing`), BOSH
(``bosh``: `imactor.web.bosh`), a room's fan-out (``fanout``: `imactor.rooms.fanout`); and
which local references frames may name (`resolve`: sessions). User and room actors are
*hosted* kinds (`host`): activated on demand, forwarded to their home under a newer view, and
handed off when their home moves (`imactor.mesh.handoff`).

Error handling: a frame that does not decode is logged and dropped; the mesh carries on.
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from imactor import messages as m
from imactor.actors import ActorAddress, ActorGone, ActorRef, Registry, Reply
from imactor.cluster.endpoints import MASTER
from imactor.cluster.placement import Membership
from imactor.cluster.wire import ActorMessage, ClusterView, Envelope, MembershipChanged
from imactor.cluster.zmq_link import CurveKeys, UnknownPeer, ZmqLink
from imactor.mesh import codec, handoff
from imactor.mesh.pending import Pending
from imactor.mesh.refs import GatedRef, GoneRef, RemoteCompletion, RemoteRef, RemoteReply
from imactor.xmpp.errors import StanzaError

if TYPE_CHECKING:
    from imactor.xmpp.stanza import Stanza

log = logging.getLogger("imactor.mesh")

#: Seconds a remote `send` waits for room in a peer's outbox before it counts the peer as gone.
SEND_TIMEOUT = 5.0
SWEEP_INTERVAL = 10.0
#: Frames queued per peer. A dead peer's frames wait there (and in ZeroMQ's queue) for its
#: successor, which binds the same endpoint and handles or forwards them.
OUTBOX_CAPACITY = 16384

#: What a wing does with a frame of its kind: (key, decoded message), at once, without waiting
#: (a wing starts a task with `Mesh.spawn` for anything longer). A message of a type the wing
#: does not take raises `codec.BodyError`: the frame is counted as undecodable and dropped.
InboundHandler = Callable[[str, Any], None]
#: A wing's local reference by key, for frames that name one (None: it has ended).
Resolver = Callable[[str], ActorRef[Any] | None]
#: Told (old, new, lost workers) once the mesh applied a new membership.
MembershipListener = Callable[[Membership, Membership, frozenset[int]], None]
#: Starts a hosted actor of (kind, key) on this worker (the router's `local`).
Activate = Callable[[str, str], Awaitable[ActorRef[Any]]]
#: Sends the sender of a refused stanza its error (the router's `bounce`).
Bounce = Callable[["Stanza", StanzaError], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class MeshAddressing:
    """Where a worker's mesh listens and whom it reaches first.

    `local`: this node's workers (this one included) by worker id → their ipc:// endpoints. In a
    cluster, `remote_endpoint` is where this worker listens for the other nodes' workers, with
    the node's CURVE `keys`; the other nodes' workers come and go with the node supervisor's
    `ClusterView`s."""

    local: Mapping[int, str]
    remote_endpoint: str | None = None
    keys: CurveKeys | None = None
    #: Whether a public key is a registered node's (asks the database, from ZeroMQ's
    #: authenticator thread, for a key no view has named yet: a node that just joined).
    is_registered: Callable[[str], bool] | None = None


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
    proxy65_forwarded: int = 0  #: XEP-0065 activations this worker sent to the proxy's worker
    proxy65_served: int = 0  #: XEP-0065 activations another worker sent to this one's proxy


class Mesh:
    """This worker's view of the node and its link to the other workers. Run it with `run`."""

    def __init__(
        self, index: int, addressing: MeshAddressing, *, registry: Registry, activate: Activate,
        bounce: Bounce,
    ) -> None:  # fmt: skip
        self.index = index
        self._addressing = addressing
        self._registry, self._activate_actor, self._bounce = registry, activate, bounce
        # Until the node supervisor's first announcement: every worker of the node is assumed live.
        self.membership = Membership(0, tuple(sorted(addressing.local)))
        #: The CURVE public keys of the nodes seen in a `ClusterView`: the remote socket takes
        #: connections from these only.
        self._known_keys: set[str] = set()
        #: Where the node sends new clients (``host:port``, see-other-host); "": it takes them.
        self.redirect = ""
        #: The other live nodes' web listeners (host-meta, XEP-0156).
        self.web_nodes: tuple[str, ...] = ()
        self.link = self._new_link()
        self._pending = Pending()
        self._hosted: tuple[str, ...] = ()
        self._handlers: dict[str, InboundHandler] = {}
        self._resolvers: dict[str, Resolver] = {}
        self._listeners: list[MembershipListener] = []
        #: Messages for hosted actors being activated here, in arrival order.
        self._activating: dict[tuple[str, str], list[Any]] = {}
        #: What waits here for an actor's previous home to hand it over.
        self._gate = handoff.HandOffGate(
            index, closed=len(addressing.local) > 1 or addressing.remote_endpoint is not None
        )
        self._nursery: trio.Nursery | None = None
        self._frames_in = self._frames_out = self._forwarded = 0
        self._dropped = self._decode_errors = self._handoffs = 0
        #: Frames handed to each wing's kind, and the wings' own counters (`count`).
        self.counters: Counter[str] = Counter()

    def _new_link(self) -> ZmqLink:
        addressing, index = self._addressing, self.index
        peers = {w: endpoint for w, endpoint in addressing.local.items() if w != index}
        return ZmqLink(
            index, addressing.local[index], peers, epoch=self.membership.epoch,
            outbox_capacity=OUTBOX_CAPACITY, receive_capacity=OUTBOX_CAPACITY,
            on_receive=self._on_envelope, remote_endpoint=addressing.remote_endpoint, curve=addressing.keys,
            authorized=self._authorized if addressing.remote_endpoint is not None else None,
        )  # fmt: skip

    def _authorized(self, public_key: str) -> bool:
        """May a node with this key connect? Called in ZeroMQ's authenticator thread, once per
        connection. A key in a view is known; another one may be a node that registered since
        the last view (its workers connect at once), so the database decides. Refusing it would
        cost more than a late frame: ZeroMQ drops what was queued on a refused connection."""
        if public_key in self._known_keys:
            return True
        lookup = self._addressing.is_registered
        if lookup is None:
            return False
        try:
            registered = lookup(public_key)
        except Exception as exc:  # the database is unreachable: refuse now, the peer retries
            log.warning("w%d: cannot check a node key with the database: %s", self.index, exc)
            return False
        if registered:
            self._known_keys.add(public_key)
        return registered

    # ---- what the wings register ---------------------------------------------------------------

    def host(self, *kinds: str) -> None:
        """Actors of these kinds live at their home worker, activated on demand (user, room)."""
        self._hosted = (*self._hosted, *kinds)

    def handle(self, kind: str, handler: InboundHandler) -> None:
        """Frames for `kind` go to `handler` (one wing per kind)."""
        if kind in self._handlers or kind in self._hosted or kind in (codec.REPLY, codec.COMPLETION):
            raise ValueError(f"the mesh kind {kind!r} already has a handler")
        self._handlers[kind] = handler

    def resolve(self, kind: str, resolver: Resolver) -> None:
        """How a frame's reference to a local actor of `kind` (a session) becomes its ref."""
        self._resolvers[kind] = resolver

    def on_membership(self, listener: MembershipListener) -> None:
        self._listeners.append(listener)

    def spawn(self, function: Callable[..., Awaitable[object]], *args: object) -> None:
        """Run `function` in a task of the mesh's own (a wing's handler must not wait)."""
        assert self._nursery is not None, "the mesh is not running"
        self._nursery.start_soon(function, *args)

    def count(self, counter: str) -> None:
        """A wing's event worth a number in the mesh's statistics (e.g. a resumption)."""
        self.counters[counter] += 1

    # ---- placement -----------------------------------------------------------------------------

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

        A cancellation point always; a schedule point only when it waits (`Mailbox.send`).

        Raises:
            ActorGone: its worker is not live, or its outbox stayed full for `SEND_TIMEOUT`.
        """
        frame = self._frame(address, message)
        # Room in the outbox (nearly always): queued without a timer or a yield, as a local
        # mailbox's `send` is; a message that crosses alone costs a scheduler round less.
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            self.link.send_nowait(address.worker, frame)
        except UnknownPeer:
            raise ActorGone(str(address)) from None
        except trio.WouldBlock:
            pass
        else:
            self._frames_out += 1
            return
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

    def to_hosted(self, kind: str, key: str, message: Any) -> None:
        """Send to a hosted actor wherever it lives, without waiting (for the wings' handlers)."""
        home = self.home(kind, key)
        if home == self.index:
            self._to_local(kind, key, message)
        else:
            with contextlib.suppress(ActorGone):
                self.send_nowait(ActorAddress(kind, key, home), message)

    # ---- the codec's endpoints -----------------------------------------------------------------

    def reply_id(self, reply: Reply[Any], target_worker: int) -> str:
        return self._pending.reply_id(reply, target_worker)

    def completion_id(self, completion: m.Completion, target_worker: int) -> str:
        return self._pending.completion_id(completion, target_worker)

    def session_ref(self, key: str, worker: int) -> ActorRef[m.SessionMessage]:
        address = ActorAddress("session", key, worker)
        if worker != self.index:
            return RemoteRef(address, self)
        resolver = self._resolvers.get("session")
        found = None if resolver is None else resolver(key)
        return found if found is not None else GoneRef(address)

    def remote_reply(self, worker: int, reply_id: str) -> Reply[Any]:
        return RemoteReply(self, worker, reply_id)

    def remote_completion(self, worker: int, completion_id: str, key: str = "") -> m.Completion:
        return RemoteCompletion(self, worker, completion_id, key)

    # ---- running -------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[Mesh] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the link and dispatch what arrives; restartable (a fresh link each run)."""
        if self._nursery is not None:
            self.link = self._new_link()  # a ZmqLink runs once
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(self.link.run)
            nursery.start_soon(self._sweep)
            nursery.start_soon(self._stop_holding, self.membership.epoch)
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
        elif isinstance(message, ClusterView):
            if envelope.source == MASTER and message.workers:
                self.apply_view(message)
        elif isinstance(message, ActorMessage):
            try:
                self._dispatch(envelope.source, envelope.epoch, message)
            except codec.BodyError as exc:
                self._decode_errors += 1
                log.warning("w%d: dropped a %s frame from w%d: %s", self.index,
                            message.body_kind, envelope.source, exc)  # fmt: skip

    async def _sweep(self) -> None:
        while True:
            await trio.sleep(SWEEP_INTERVAL)
            self._pending.sweep()

    def _dispatch(self, source: int, epoch: int, frame: ActorMessage) -> None:
        kind, key = frame.target_kind, frame.target_key
        if kind == codec.REPLY:
            reply = self._pending.take_reply(key)
            if reply is not None:
                ok, value = codec.decode_reply(frame.body_kind, frame.body)
                if ok:
                    reply.send(value)
                else:
                    assert isinstance(value, BaseException)
                    reply.fail(value)
            return
        if kind == codec.COMPLETION:
            completion = self._pending.take_completion(key)
            if completion is not None:
                completion.done()
            return
        message = codec.decode(frame.body_kind, frame.body, source, self)
        if kind == codec.HANDOFFS:
            if not isinstance(message, m.HandOffs):
                raise codec.BodyError(f"{frame.body_kind} is not a list of hand-overs")
            self._release(self._gate.handoffs(source, message))
            return
        if kind in self._hosted:
            home = self.home(kind, key)
            if home != self.index and epoch < self.membership.epoch:
                self._forwarded += 1
                try:
                    self.send_nowait(ActorAddress(kind, key, home), message)
                except ActorGone:
                    self._to_local(kind, key, message)
                return
            self._to_local(kind, key, message)
            return
        handler = self._handlers.get(kind)
        if handler is None:
            raise codec.BodyError(f"no actor kind {kind!r} on a worker")
        self.counters[kind] += 1
        handler(key, message)

    def holds(self, kind: str, key: str) -> bool:
        """Messages for this hosted actor wait here for its previous home's hand-over."""
        return self._gate.holds(kind, key)

    def local_ref(self, kind: str, key: str) -> ActorRef[Any]:
        """A reference to the hosted actor of `key` here that goes through the hand-over gate:
        for the router, while `holds` says so."""
        return GatedRef(ActorAddress(kind, key, self.index), self)

    def deliver_here(self, kind: str, key: str, message: object) -> None:
        """To the hosted actor of `key` on this worker (its home), through the gate (`GatedRef`)."""
        self._to_local(kind, key, message)

    def _to_local(self, kind: str, key: str, message: Any) -> None:
        """To the hosted actor of `key` on this worker, once its previous home handed it over."""
        if isinstance(message, m.AccountMoved | m.RoomMoved):
            held = self._gate.moved(kind, key)
            self._deliver_local(kind, key, message)
            self._release(held)
            return
        if self._gate.holds(kind, key):
            self._gate.park(kind, key, message)
            return
        self._deliver_local(kind, key, message)

    def _release(self, held: list[tuple[tuple[str, str], Any]]) -> None:
        for (kind, key), message in held:
            self._deliver_local(kind, key, message)

    async def _stop_holding(self, epoch: int) -> None:
        await trio.sleep(handoff.HANDOFF_PATIENCE)
        workers, states = self._gate.waiting_for()
        released = self._gate.expire(epoch)
        if released or workers or states:
            log.warning("w%d: epoch %d: no hand-over list from %s, %d states missing after %s s; "
                        "%d held messages go on", self.index, epoch, workers, states,
                        handoff.HANDOFF_PATIENCE, len(released))  # fmt: skip
        self._release(released)

    def _deliver_local(self, kind: str, key: str, message: Any) -> None:
        """To the hosted actor of `key` on this worker, activating it if need be."""
        queued = self._activating.get((kind, key))
        if queued is not None:
            queued.append(message)
            return
        ref = self._registry.lookup(kind, key)
        if ref is not None:
            try:
                ref.send_nowait(message)
                return
            except trio.WouldBlock:
                self._refuse(message, StanzaError("resource-constraint", "recipient is overloaded"))
                return
            except ActorGone:
                self._registry.unregister(kind, key, ref)
        self._activating[(kind, key)] = [message]
        self.spawn(self._activate, kind, key)

    async def _activate(self, kind: str, key: str) -> None:
        """Start the actor, then hand it what queued meanwhile, in order."""
        queued = self._activating[(kind, key)]
        try:
            ref = await self._activate_actor(kind, key)
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
                    self._deliver_local(kind, key, rest)
                return

    def _refuse(self, message: Any, error: StanzaError) -> None:
        """A message no actor took: its sender learns so where it can."""
        self._dropped += 1
        if isinstance(message, m.Route):
            self.spawn(self._bounce, message.stanza, error)
            if message.completion is not None:
                message.completion.done()
        elif isinstance(message, m.Bind):
            message.reply.fail(error)
        else:
            log.warning("w%d: %s dropped: %s", self.index, type(message).__name__, error.condition)

    # ---- membership ----------------------------------------------------------------------------

    def apply_view(self, view: ClusterView) -> None:
        """A cluster's membership: reach its workers where it says, then apply it."""
        # Resent every heartbeat: these change without a new epoch.
        self.redirect, self.web_nodes = view.redirect, view.web
        if view.epoch <= self.membership.epoch:
            return
        live = set(view.live_workers)
        for peer in view.workers:
            if peer.worker == self.index:
                continue
            key = peer.server_key or None
            if key is not None:
                self._known_keys.add(key)
            if self.link.peers.get(peer.worker) == peer.endpoint and self.link.peer_key(peer.worker) == key:
                continue
            with contextlib.suppress(UnknownPeer):
                self.link.remove_peer(peer.worker)  # a node that came back elsewhere
            try:
                self.link.add_peer(peer.worker, peer.endpoint, key)
            except (ValueError, RuntimeError) as exc:
                log.warning("w%d: cannot reach w%d at %s: %s", self.index, peer.worker, peer.endpoint, exc)
        self.apply_membership(Membership(view.epoch, view.live_workers))
        for worker in list(self.link.peers):
            # Another node's worker that left: its socket goes (a node's own workers keep theirs,
            # and the frames queued there for a successor).
            if worker not in live and worker not in self._addressing.local:
                self.link.remove_peer(worker)

    def apply_membership(self, new: Membership) -> None:
        old = self.membership
        if new.epoch <= old.epoch:
            return
        log.info("w%d: membership epoch %d: live workers %s", self.index, new.epoch, list(new.live))
        self.membership = new
        self.link.set_epoch(new.epoch)
        lost = frozenset(old.live) - frozenset(new.live)
        if lost:
            completions = self._pending.peers_lost(lost)
            if self._nursery is not None:
                self.spawn(handoff.workers_lost, self._registry, self._hosted, self.home, self.index,
                           lost, new.epoch, completions)  # fmt: skip
        told = handoff.hand_off(self._registry, self._hosted, new, self.index)
        self._handoffs += sum(len(keys) for keys in told.values())
        held = self._gate.reset(old, new)
        for worker in new.live:
            if worker != self.index:
                # Every live worker hears what moved from here, if nothing: it holds until then.
                keys = tuple(told.get(worker, ()))
                with contextlib.suppress(ActorGone):
                    self.send_nowait(ActorAddress(codec.HANDOFFS, "", worker), m.HandOffs(new.epoch, keys))
        if self._nursery is not None:
            self.spawn(self._stop_holding, new.epoch)
        self._release(held)
        for listener in self._listeners:
            listener(old, new, lost)

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
            resumed_here=self.counters["resumed_here"],
            pending_replies=self._pending.replies,
            pending_completions=self._pending.completions,
            bosh_forwarded=self.counters["bosh_forwarded"],
            bosh_served=self.counters["bosh"],
            proxy65_forwarded=self.counters["proxy65_forwarded"],
            proxy65_served=self.counters["proxy65"],
        )
