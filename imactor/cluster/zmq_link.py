"""The ZeroMQ link between worker processes: the only module in imactor that imports zmq.

Topology. Every worker binds one PULL socket on its own endpoint (``ipc://<dir>/w<N>.sock`` on one
machine, ``tcp://host:port`` between machines) and connects one PUSH socket to each peer's
endpoint. PUSH→PULL rather than DEALER→ROUTER because:

- each socket goes one way, so its single owner task only ever waits for one condition (POLLIN on
  the PULL, POLLOUT on a PUSH) and never shares the edge-triggered FD between a reader and a
  writer (the duplex problem of python-trio/trzmq and trio issue #116);
- addressing is by socket: one PUSH per peer means a slow or dead peer fills only its own
  high-water mark and its own outbox, and per-sender order is ZeroMQ's per-pipe order;
- PULL fair-queues the inbound pipes of all peers (many-to-one), with no identity frames to strip;
  the sender is named in every frame's envelope (`imactor.cluster.wire`);
- a PUSH connected before its peer binds (or while the peer restarts) queues up to its HWM and
  reconnects by itself, so start-up order does not matter.

Tasks. A socket is created and bound or connected synchronously (in `run`, or in `add_peer`), so
a bad endpoint raises to the caller, and is then handed, before any checkpoint, to exactly one
owner task, the only one that touches it from then on and the one that closes it:
``zmq-in w<N>`` owns the PULL socket, ``zmq-out w<N>→w<M>`` owns the PUSH socket to peer M. ZeroMQ's
``FD`` is an edge-triggered notification, not a readiness flag; every owner keeps the rule "call
``getsockopt(EVENTS)`` right before waiting on the FD, and only wait when EVENTS says the socket
is not ready", so a notification consumed by a send, a recv or an EVENTS read is never waited for.

Back-pressure. `send_nowait` encodes the message in the caller's task (a bad value raises there)
and queues the frame in the peer's bounded outbox, raising `trio.WouldBlock` when it is full;
`send` waits for room. The owner drains everything queued (up to `max_batch` frames and
`max_batch_bytes`) into one multipart send. When the peer is slow, its PUSH reaches its HWM, the
owner waits for POLLOUT, the outbox fills, and senders see `WouldBlock`. Inbound, the receive
channel is bounded too: a slow consumer stops the PULL owner, whose HWM then pushes back on peers.

Quiet traffic. A frame that finds its peer's owner idle (nothing in hand, waiting on an empty
outbox) and follows the last such frame by at least `_DIRECT_GAP` is sent by the caller itself,
at once, instead of waking the owner for a batch of one: a trio task wake-up per frame saved, and
order kept (the owner holds nothing that could go after it). Frames closer together are a burst
and queue for the owner, which sends them as one batch. Inbound, with an `on_receive` handler,
the PULL owner hands each envelope to it synchronously instead of queuing it for a reader task:
another wake-up saved per batch. Both matter when messages arrive one at a time, as a company's
chat does; under load, frames still queue and go out in batches.

Delivery is at most once: frames queued for a peer that is removed, or that dies with frames in
its socket buffers, are lost (and counted in `dropped` when they were still in an outbox).
Durability is the storage layer's job (docs/design.md, "The failover promise").

Between machines. A link may bind a second PULL socket, `remote_endpoint` (``tcp://host:port``),
for the workers of other nodes. It is a ZeroMQ CURVE server with the node's key pair (`CurveKeys`):
links are encrypted, and every connecting peer proves it holds the secret key of a public key that
`authorized` accepts (the cluster's registered nodes); any other is refused by ZeroMQ's ZAP
handshake, logged, and never delivers a frame. A peer added with a `server_key` is reached over
CURVE as a client with the same key pair. Frames that arrive on the remote socket may only be actor
messages: membership comes from this node's own supervisor over the local socket, never from
another node. The local socket (ipc:// under the node's private run directory) is unencrypted.

Error handling:
    A batch that does not decode is logged (logger ``imactor.cluster``), counted in
    `LinkStatistics.decode_errors` and dropped; the link carries on. An inbound frame larger than
    `max_frame_size` makes ZeroMQ drop that connection (the peer reconnects). A bad endpoint
    raises from `add_peer` (or from `run`, for the peers given at construction), never inside an
    owner task.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, TypeAlias, cast

import trio
import zmq
import zmq.auth.thread

from imactor.cluster.wire import ActorMessage, Envelope, FrameError, Message, decode_batch, encode

logger = logging.getLogger("imactor.cluster")

_MAX_EPOCH: Final = 0xFFFF_FFFF_FFFF_FFFF
#: Inbound batches read in a row before the PULL owner yields to the other tasks.
_BATCHES_PER_CHECKPOINT: Final = 16
#: Seconds between two direct sends to one peer: a frame that follows the last one closer than
#: this is part of a burst, and goes through the owner, which sends the burst as one batch.
_DIRECT_GAP: Final = 0.0005
_MAX_WORKER: Final = 0xFFFF_FFFF

# pyzmq's Socket and Context are generic in the payload type; the link only sends and receives
# bytes, so one alias names the socket type everywhere.
_Socket: TypeAlias = zmq.Socket[bytes]


class UnknownPeer(LookupError):
    """The worker is not a peer of this link: never added, removed, or the link has stopped."""


#: The ZAP domain of the remote socket (any constant; ZAP handlers are chosen by it).
_ZAP_DOMAIN: Final = "imactor"


@dataclass(frozen=True, slots=True)
class CurveKeys:
    """A node's CURVE key pair, Z85-encoded (40 characters each)."""

    public: str
    secret: str

    @classmethod
    def generate(cls) -> CurveKeys:
        public, secret = zmq.curve_keypair()
        return cls(public.decode("ascii"), secret.decode("ascii"))

    @classmethod
    def from_secret(cls, secret: str) -> CurveKeys:
        """The pair of a Z85 secret key.

        Raises:
            ValueError: `secret` is not a Z85-encoded 32-byte key.
        """
        if len(secret) != 40:
            raise ValueError(f"a CURVE secret key is 40 Z85 characters, not {len(secret)}")
        try:
            public = zmq.curve_public(secret.encode("ascii"))
        except (zmq.ZMQError, UnicodeEncodeError, ValueError) as exc:
            raise ValueError(f"not a Z85-encoded CURVE secret key: {exc}") from None
        return cls(public.decode("ascii"), secret)


class _KeyCheck:
    """ZAP's credentials provider: asks `authorized` about each connecting peer's public key
    (called in the authenticator's thread, once per connection, not per frame)."""

    def __init__(self, owner: int, authorized: Callable[[str], bool]) -> None:
        self._owner = owner
        self._authorized = authorized
        self.refused = 0

    def callback(self, domain: str, key: bytes) -> bool:
        public = key.decode("ascii", "replace")
        if self._authorized(public):
            return True
        self.refused += 1
        logger.warning("w%d refused a mesh connection from an unregistered key %s", self._owner, public)
        return False


@dataclass(frozen=True, slots=True)
class LinkStatistics:
    """A snapshot of a `ZmqLink` (Trio's `statistics()` rule)."""

    worker: int
    endpoint: str | None  #: the bound endpoint, None before `run` has bound it
    epoch: int
    frames_in: int  #: frames received, decodable or not
    batches_in: int  #: multipart messages received
    decode_errors: int  #: batches dropped because they did not decode
    frames_out: int  #: frames handed to ZeroMQ
    batches_out: int  #: multipart sends
    dropped: int  #: frames discarded unsent (peer removed, or link stopped, with frames queued)
    receive_backlog: int  #: envelopes waiting in `receive_channel`
    outbox_depth: Mapping[int, int]  #: peer → frames waiting in its outbox
    remote_endpoint: str | None = None  #: the bound socket for other nodes' workers, if any
    refused_keys: int = 0  #: connections from keys the cluster does not know


class _Peer:
    """One outbound peer: its endpoint, its outbox and the cancel scope of its owner task."""

    __slots__ = (
        "cancel_scope", "endpoint", "has_owner", "idle", "last_direct", "outbox_receive", "outbox_send",
        "server_key", "socket", "worker",
    )  # fmt: skip

    def __init__(self, worker: int, endpoint: str, capacity: int, server_key: str | None = None) -> None:
        self.worker = worker
        self.endpoint = endpoint
        self.server_key = server_key
        self.outbox_send, self.outbox_receive = trio.open_memory_channel[bytes](capacity)
        # Created unbound so `remove_peer` can cancel the owner before it has even started.
        self.cancel_scope = trio.CancelScope()
        self.has_owner = False
        #: The owner's socket, for a caller's direct send while the owner is `idle`.
        self.socket: _Socket | None = None
        #: The owner waits on an empty outbox with no frame in hand: a caller may send directly.
        self.idle = False
        #: When a caller last sent directly (`time.monotonic`): frames closer together than
        #: `_DIRECT_GAP` are a burst, which the owner batches.
        self.last_direct = -math.inf

    @property
    def depth(self) -> int:
        return self.outbox_send.statistics().current_buffer_used


class ZmqLink:
    """Connects worker `worker` to its peers over ZeroMQ. Single use: `run` it once.

    Args:
        worker: this worker's index (the `source` of every frame it sends).
        bind_endpoint: where this worker's PULL socket binds, e.g. ``ipc:///run/imactor/w0.sock``
            or ``tcp://10.0.0.5:7100``; ``tcp://127.0.0.1:0`` binds an OS-chosen port, read it
            back from `bound_endpoint`.
        peers: worker index → endpoint, connected when `run` starts. More with `add_peer`.
        epoch: the membership epoch stamped on outgoing frames until `set_epoch` changes it.
        outbox_capacity: frames queued per peer before `send_nowait` raises `trio.WouldBlock`.
        receive_capacity: envelopes buffered in `receive_channel` before reading stops.
        max_batch: most frames in one multipart send.
        max_batch_bytes: a batch stops growing once it holds this many bytes.
        hwm: ZeroMQ high-water mark, in multipart messages (batches), per socket (SNDHWM on
            each PUSH, RCVHWM on the PULL).
        max_frame_size: inbound frames above this many bytes cut the sender's connection.
        on_receive: called with each inbound envelope, in order, in the PULL owner's task,
            instead of queuing it in `receive_channel` (it must not block; an exception it raises
            stops the link).
        remote_endpoint: a second PULL socket for other nodes' workers (``tcp://host:port``),
            CURVE-encrypted and authenticated (module doc); needs `curve` and `authorized`.
        curve: this node's key pair, for the remote socket and for peers added with a key.
        authorized: whether a connecting peer's public key (Z85) belongs to the cluster.
    """

    def __init__(
        self,
        worker: int,
        bind_endpoint: str,
        peers: Mapping[int, str] | None = None,
        *,
        epoch: int = 0,
        outbox_capacity: int = 1024,
        receive_capacity: int = 1024,
        max_batch: int = 1024,
        max_batch_bytes: int = 1 << 20,
        hwm: int = 32,
        max_frame_size: int = 16 << 20,
        on_receive: Callable[[Envelope], None] | None = None,
        remote_endpoint: str | None = None,
        curve: CurveKeys | None = None,
        authorized: Callable[[str], bool] | None = None,
    ) -> None:
        if remote_endpoint is not None and (curve is None or authorized is None):
            raise ValueError("a remote endpoint needs the node's CURVE keys and an authorization check")
        for name, value in (
            ("outbox_capacity", outbox_capacity),
            ("receive_capacity", receive_capacity),
            ("max_batch", max_batch),
            ("max_batch_bytes", max_batch_bytes),
            ("hwm", hwm),
            ("max_frame_size", max_frame_size),
        ):
            if value < 1:
                raise ValueError(f"{name} must be at least 1, not {value}")
        if not 0 <= worker <= _MAX_WORKER:
            raise ValueError(f"a worker index is an unsigned 32-bit integer, not {worker}")
        self._worker = worker
        self._bind_endpoint = bind_endpoint
        self._epoch = self._checked_epoch(epoch)
        self._outbox_capacity = outbox_capacity
        self._max_batch = max_batch
        self._max_batch_bytes = max_batch_bytes
        self._hwm = hwm
        self._max_frame_size = max_frame_size
        self._on_receive = on_receive
        self._remote_endpoint = remote_endpoint
        self._curve = curve
        self._key_check = None if authorized is None else _KeyCheck(worker, authorized)
        self._bound_remote: str | None = None
        self._receive_send, self._receive_channel = trio.open_memory_channel[Envelope](receive_capacity)
        self._peers: dict[int, _Peer] = {}
        self._context: zmq.Context[_Socket] | None = None
        self._nursery: trio.Nursery | None = None
        self._bound_endpoint: str | None = None
        self._has_run = False
        self._stopped = False
        self._frames_in = 0
        self._batches_in = 0
        self._decode_errors = 0
        self._refused_kinds = 0
        self._frames_out = 0
        self._batches_out = 0
        self._dropped = 0
        for peer, endpoint in (peers or {}).items():
            self.add_peer(peer, endpoint)

    # ---- properties ----------------------------------------------------------------------------

    @property
    def worker(self) -> int:
        return self._worker

    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def bound_endpoint(self) -> str:
        """The endpoint the PULL socket is bound to, with the real port when 0 was asked for.

        Raises:
            RuntimeError: `run` has not bound it yet.
        """
        if self._bound_endpoint is None:
            raise RuntimeError("the link is not bound yet: start it with `await nursery.start(link.run)`")
        return self._bound_endpoint

    @property
    def bound_remote_endpoint(self) -> str | None:
        """Where the remote socket is bound (the real port when 0 was asked); None: no socket."""
        return self._bound_remote

    @property
    def refused_keys(self) -> int:
        """Connections refused because their public key is not the cluster's."""
        return 0 if self._key_check is None else self._key_check.refused

    @property
    def receive_channel(self) -> trio.MemoryReceiveChannel[Envelope]:
        """Every envelope received from any peer, in per-sender order; closed when `run` ends.

        `Envelope.source` is the sending worker, `Envelope.epoch` the membership epoch it sent
        under, `Envelope.message` the message. Read it from one task; do not close it while the
        link runs (the link would stop with `trio.BrokenResourceError`).
        """
        return self._receive_channel

    @property
    def peers(self) -> Mapping[int, str]:
        """worker → endpoint of the current peers (a copy)."""
        return {worker: peer.endpoint for worker, peer in self._peers.items()}

    def peer_key(self, worker: int) -> str | None:
        """The CURVE public key `worker` is reached with; None: a plain (same-node) peer."""
        return self._peer(worker).server_key

    # ---- configuration -------------------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """Stamp `epoch` on the frames queued from now on (frames already queued keep theirs).

        Raises:
            ValueError: `epoch` is lower than the current one, or does not fit in 64 bits.
        """
        epoch = self._checked_epoch(epoch)
        if epoch < self._epoch:
            raise ValueError(f"membership epochs only grow: {epoch} < {self._epoch}")
        self._epoch = epoch

    @staticmethod
    def _checked_epoch(epoch: int) -> int:
        if not 0 <= epoch <= _MAX_EPOCH:
            raise ValueError(f"an epoch is an unsigned 64-bit integer, not {epoch}")
        return epoch

    def add_peer(self, worker: int, endpoint: str, server_key: str | None = None) -> None:
        """Connect to `worker` at `endpoint`. Before `run`, the connection is made when it starts.

        `server_key`: the peer's node's CURVE public key; the connection is then encrypted and
        authenticated with this link's own `curve` pair (a worker of another node).

        Raises:
            ValueError: `worker` is this worker or already a peer, ZeroMQ refuses `endpoint`, or
                a `server_key` is given to a link without keys.
            RuntimeError: the link has stopped.
        """
        if server_key is not None and self._curve is None:
            raise ValueError(f"w{worker}: a CURVE peer needs this link's own key pair")
        if self._stopped:
            raise RuntimeError("the link has stopped")
        if worker == self._worker:
            raise ValueError(f"w{worker} is this worker; local messages do not cross the link")
        if worker in self._peers:
            raise ValueError(f"w{worker} is already a peer (remove it first to change its endpoint)")
        peer = _Peer(worker, endpoint, self._outbox_capacity, server_key)
        if self._nursery is not None:
            self._start_peer(peer)
        self._peers[worker] = peer

    def remove_peer(self, worker: int) -> None:
        """Disconnect from `worker`: its owner task stops, its socket closes, its queued frames drop.

        A task blocked in `send` to it gets `UnknownPeer`.

        Raises:
            UnknownPeer: `worker` is not a peer.
        """
        peer = self._peers.pop(worker, None)
        if peer is None:
            raise UnknownPeer(f"w{worker} is not a peer of w{self._worker}")
        if not peer.has_owner:  # an owner counts its own leftovers when it stops
            self._dropped += peer.depth
        peer.cancel_scope.cancel()
        peer.outbox_send.close()

    # ---- sending -------------------------------------------------------------------------------

    def send_nowait(self, peer: int, message: Message) -> None:
        """Queue `message` for `peer`, stamped with this worker and the current epoch.

        Raises:
            trio.WouldBlock: the peer's outbox is full (the caller chooses its policy).
            UnknownPeer: `peer` is not a peer.
            ValueError: `message` does not fit the wire format.
        """
        target = self._peer(peer)
        frame = encode(Envelope(self._worker, self._epoch, message))
        if self._send_direct(target, frame):
            return
        try:
            target.outbox_send.send_nowait(frame)
        except trio.BrokenResourceError:  # the owner has stopped: the link is shutting down
            raise UnknownPeer(f"w{peer} is no longer reachable: the link is stopping") from None

    async def send(self, peer: int, message: Message) -> None:
        """Queue `message` for `peer`, waiting for room in its outbox (back-pressure).

        The epoch is stamped when `send` is called, not when room appears.

        Raises:
            UnknownPeer: `peer` is not a peer, or was removed while this call waited.
            ValueError: `message` does not fit the wire format.
        """
        target = self._peer(peer)
        frame = encode(Envelope(self._worker, self._epoch, message))
        if self._send_direct(target, frame):
            await trio.lowlevel.checkpoint()
            return
        try:
            await target.outbox_send.send(frame)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise UnknownPeer(f"w{peer} was removed (or the link stopped) while a send waited") from None

    def _peer(self, worker: int) -> _Peer:
        peer = self._peers.get(worker)
        if peer is None:
            raise UnknownPeer(f"w{worker} is not a peer of w{self._worker}")
        return peer

    def _send_direct(self, peer: _Peer, frame: bytes) -> bool:
        """Send `frame` from the caller's task if the peer's owner is idle (module docstring);
        False: it is not, or ZeroMQ would block, and the frame goes through the outbox. From then
        on the owner has (or is about to have) frames in hand, so no later one may go around it."""
        socket = peer.socket
        if peer.idle and socket is not None:
            now = time.monotonic()
            if now - peer.last_direct >= _DIRECT_GAP:
                try:
                    socket.send_multipart([frame], zmq.NOBLOCK)
                except zmq.Again:
                    pass
                else:
                    peer.last_direct = now
                    self._frames_out += 1
                    self._batches_out += 1
                    return True
        peer.idle = False
        return False

    # ---- statistics ----------------------------------------------------------------------------

    def statistics(self) -> LinkStatistics:
        return LinkStatistics(
            worker=self._worker,
            endpoint=self._bound_endpoint,
            epoch=self._epoch,
            frames_in=self._frames_in,
            batches_in=self._batches_in,
            decode_errors=self._decode_errors + self._refused_kinds,
            frames_out=self._frames_out,
            batches_out=self._batches_out,
            dropped=self._dropped,
            receive_backlog=self._receive_send.statistics().current_buffer_used,
            outbox_depth={worker: peer.depth for worker, peer in self._peers.items()},
            remote_endpoint=self._bound_remote,
            refused_keys=self.refused_keys,
        )

    # ---- running -------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        """Bind, connect to the peers, and move frames until cancelled.

        Calls ``task_status.started(bound_endpoint)`` once the PULL socket is bound and the
        initial peers are connected. On exit, cancelled or failed, every socket is closed with
        LINGER 0 (frames already handed to ZeroMQ are discarded; frames still in an outbox are
        counted in `dropped`), `receive_channel` ends, and the peers are forgotten.

        Raises:
            OSError: the bind endpoint is refused (in use, bad path, unknown interface).
            ValueError: an initial peer's endpoint is refused.
            RuntimeError: the link has already run.
        """
        if self._has_run:
            raise RuntimeError("a ZmqLink runs once; make a new one")
        self._has_run = True
        context: zmq.Context[_Socket] = zmq.Context()
        self._context = context
        authenticator: zmq.auth.thread.ThreadAuthenticator | None = None
        try:
            # Sockets are created, bound and connected here, before any owner task exists, so a
            # bad endpoint raises from run() itself; each is then handed to its owner for good.
            inbound = self._bind(context)
            remote: _Socket | None = None
            outbound: list[tuple[_Peer, _Socket]] = []
            try:
                if self._remote_endpoint is not None:
                    authenticator = self._start_authenticator(context)
                    remote = self._bind(context, self._remote_endpoint)
                for peer in self._peers.values():
                    socket = self._connect(context, peer)  # may raise: close those made so far
                    outbound.append((peer, socket))
            except BaseException:
                for _, socket in outbound:
                    socket.close(linger=0)
                inbound.close(linger=0)
                if remote is not None:
                    remote.close(linger=0)
                raise
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._run_inbound, inbound, False, name=f"zmq-in w{self._worker}")
                if remote is not None:
                    nursery.start_soon(self._run_inbound, remote, True, name=f"zmq-in w{self._worker} remote")
                for peer, socket in outbound:
                    self._hand_over(nursery, peer, socket)
                self._nursery = nursery
                task_status.started(self.bound_endpoint)
        finally:
            self._nursery = None
            self._context = None
            self._stopped = True
            for peer in self._peers.values():
                if not peer.has_owner:  # an owner counts its own leftovers
                    self._dropped += peer.depth
                peer.outbox_send.close()
            self._peers.clear()
            self._receive_send.close()
            if authenticator is not None:
                authenticator.stop()
            # Every owner closed its socket in its own `finally`; destroy() only ends the context
            # (it would close a socket left behind, with LINGER 0, rather than hang in term()).
            context.destroy(linger=0)

    def _bind(self, context: zmq.Context[_Socket], endpoint: str | None = None) -> _Socket:
        """A PULL socket bound to the local endpoint, or (`endpoint`) the CURVE server socket for
        other nodes' workers, whose handshakes ZAP answers (`_start_authenticator`)."""
        remote = endpoint is not None
        endpoint = endpoint or self._bind_endpoint
        socket = context.socket(zmq.PULL)
        try:
            socket.setsockopt(zmq.LINGER, 0)
            socket.setsockopt(zmq.RCVHWM, self._hwm)
            socket.setsockopt(zmq.MAXMSGSIZE, self._max_frame_size)
            if remote:
                assert self._curve is not None
                socket.setsockopt(zmq.CURVE_SERVER, 1)
                socket.setsockopt(zmq.CURVE_SECRETKEY, self._curve.secret.encode("ascii"))
                socket.setsockopt_string(zmq.ZAP_DOMAIN, _ZAP_DOMAIN)
            socket.bind(endpoint)
            bound = socket.getsockopt_string(zmq.LAST_ENDPOINT)
        except zmq.ZMQError as exc:
            socket.close(linger=0)
            raise OSError(exc.errno, f"w{self._worker} cannot bind {endpoint!r}: {exc}") from exc
        except BaseException:
            socket.close(linger=0)
            raise
        if remote:
            self._bound_remote = bound
        else:
            self._bound_endpoint = bound
        return socket

    def _start_authenticator(self, context: zmq.Context[_Socket]) -> zmq.auth.thread.ThreadAuthenticator:
        """ZeroMQ's ZAP handler, in a thread of its own: it answers the CURVE handshakes of the
        remote socket with `_KeyCheck`."""
        assert self._key_check is not None
        authenticator = zmq.auth.thread.ThreadAuthenticator(context, log=logger.getChild("zap"))
        authenticator.start()
        authenticator.configure_curve_callback(_ZAP_DOMAIN, credentials_provider=self._key_check)
        return authenticator

    def _connect(self, context: zmq.Context[_Socket], peer: _Peer) -> _Socket:
        socket = context.socket(zmq.PUSH)
        try:
            socket.setsockopt(zmq.LINGER, 0)
            socket.setsockopt(zmq.SNDHWM, self._hwm)
            if peer.server_key is not None:
                assert self._curve is not None
                socket.setsockopt(zmq.CURVE_SERVERKEY, peer.server_key.encode("ascii"))
                socket.setsockopt(zmq.CURVE_PUBLICKEY, self._curve.public.encode("ascii"))
                socket.setsockopt(zmq.CURVE_SECRETKEY, self._curve.secret.encode("ascii"))
            socket.connect(peer.endpoint)
        except zmq.ZMQError as exc:
            socket.close(linger=0)
            raise ValueError(f"cannot connect to w{peer.worker} at {peer.endpoint!r}: {exc}") from exc
        except BaseException:
            socket.close(linger=0)
            raise
        return socket

    def _start_peer(self, peer: _Peer) -> None:
        """Connect a peer added while running (a bad endpoint raises to `add_peer`'s caller)."""
        assert self._context is not None
        assert self._nursery is not None
        self._hand_over(self._nursery, peer, self._connect(self._context, peer))

    def _hand_over(self, nursery: trio.Nursery, peer: _Peer, socket: _Socket) -> None:
        # No checkpoint between here and the owner's `try`: the owner always closes the socket,
        # even when it is cancelled before it first runs (a Trio task always starts).
        peer.has_owner = True
        nursery.start_soon(self._run_outbound, peer, socket, name=f"zmq-out w{self._worker}→w{peer.worker}")

    async def _run_inbound(self, socket: _Socket, remote: bool) -> None:
        """Owner of a PULL socket: receive batches until cancelled. `remote`: the socket of other
        nodes' workers, which may send actor messages only."""
        fd: int | None = None
        try:
            fd = socket.FD
            unbroken = 0  # batches since the last wait
            while True:
                if _events(socket) & zmq.POLLIN:
                    try:
                        frames = socket.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        # EVENTS and recv disagreed; yield, then read EVENTS again before waiting.
                        await trio.lowlevel.checkpoint()
                        continue
                    await self._deliver(frames, remote)
                    unbroken += 1
                    if unbroken % _BATCHES_PER_CHECKPOINT == 0:
                        # A steady inbound stream never starves the other tasks.
                        await trio.lowlevel.checkpoint()
                else:
                    # EVENTS was read just now and said "nothing": any later change makes the FD
                    # readable, so this wait cannot miss an edge.
                    unbroken = 0
                    await trio.lowlevel.wait_readable(fd)
        finally:
            _close(socket, fd)

    async def _deliver(self, frames: list[bytes], remote: bool = False) -> None:
        self._batches_in += 1
        self._frames_in += len(frames)
        try:
            envelopes = decode_batch(frames)
        except FrameError as exc:
            self._decode_errors += 1
            # Throttled: a peer that sends garbage in a loop must not flood the log.
            if self._decode_errors <= 10 or self._decode_errors % 1000 == 0:
                logger.warning(
                    "w%d dropped an undecodable batch of %d frames (%d so far): %s",
                    self._worker,
                    len(frames),
                    self._decode_errors,
                    exc.reason,
                )
        else:
            if remote and not all(isinstance(e.message, ActorMessage) for e in envelopes):
                # Membership and heartbeats come from this node's own supervisor, never from
                # another node: a remote peer that sends them is faulty or hostile.
                self._refused_kinds += 1
                logger.warning("w%d dropped a frame from another node that was not an actor message",
                               self._worker)  # fmt: skip
                envelopes = [e for e in envelopes if isinstance(e.message, ActorMessage)]
            handler = self._on_receive
            for envelope in envelopes:
                if handler is not None:
                    handler(envelope)
                    continue
                try:
                    self._receive_send.send_nowait(envelope)
                except trio.WouldBlock:
                    await self._receive_send.send(envelope)

    async def _run_outbound(self, peer: _Peer, socket: _Socket) -> None:
        """Owner of one PUSH socket: drain the outbox into multipart sends until removed."""
        batch: list[bytes] = []
        fd: int | None = None
        try:
            with peer.cancel_scope:
                fd = socket.FD
                peer.socket = socket
                while True:
                    try:
                        batch = [peer.outbox_receive.receive_nowait()]
                    except trio.WouldBlock:
                        # Nothing in hand: callers may send directly until a frame is queued.
                        peer.idle = True
                        try:
                            batch = [await peer.outbox_receive.receive()]
                        except trio.EndOfChannel:
                            return
                        finally:
                            peer.idle = False
                    except trio.EndOfChannel:
                        return
                    size = len(batch[0])
                    while len(batch) < self._max_batch and size < self._max_batch_bytes:
                        try:
                            frame = peer.outbox_receive.receive_nowait()
                        except (trio.WouldBlock, trio.EndOfChannel):
                            break
                        batch.append(frame)
                        size += len(frame)
                    await _send_multipart(socket, fd, batch)
                    self._frames_out += len(batch)
                    self._batches_out += 1
                    batch = []
        finally:
            peer.idle = False
            peer.socket = None
            self._dropped += len(batch) + peer.depth
            peer.outbox_receive.close()
            _close(socket, fd)


async def _send_multipart(socket: _Socket, fd: int, frames: list[bytes]) -> None:
    """Send `frames` as one multipart message, waiting for POLLOUT without missing an edge.

    A multipart message is atomic in ZeroMQ: the high-water mark counts whole messages, so once
    the first part is accepted the others are too, and `zmq.Again` can only come from the first.
    """
    while True:
        if _events(socket) & zmq.POLLOUT:
            try:
                socket.send_multipart(frames, zmq.NOBLOCK)
            except zmq.Again:
                await trio.lowlevel.checkpoint()
                continue
            return
        await trio.lowlevel.wait_readable(fd)


def _events(socket: _Socket) -> int:
    """ZMQ_EVENTS, which also processes the socket's pending commands (and resets its FD)."""
    # pyzmq types getsockopt() as int | bytes | str; EVENTS is always an int.
    return cast(int, socket.getsockopt(zmq.EVENTS))


def _close(socket: _Socket, fd: int | None) -> None:
    """Close an owned socket: first tell Trio the FD is going (no one waits on it: we own it)."""
    if fd is not None:
        trio.lowlevel.notify_closing(fd)
    socket.close(linger=0)
