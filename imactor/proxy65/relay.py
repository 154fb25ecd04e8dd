"""The SOCKS5 side of the XEP-0065 proxy: accept, pair by stream hash, activate, relay.

One task per connection. The SOCKS5 handshake is the sans-IO `Socks5Handshake`; its CONNECT
names the stream's hash (SHA-1 of SID + requester JID + target JID). The first connection with a
hash is the target's and opens a `_Pair`; the second is the requester's and completes it; a
third gets "connection not allowed" (XEP-0065 §9.1: one target per stream). Both then wait,
reading nothing (bytes sent before activation stay in the kernel's buffer, neither dropped nor
relayed, §9.1), until the requester's activation (`Proxy.activate`, from the service's IQ
handler) or the activation timeout, which closes both; what they send meanwhile is kept and
relayed first once active (§9.1: "ignore but not drop"), and one that leaves ends the pair at
once. Once active, the requester's task relays
both ways (the target's task hands its socket over and ends); the end of either side, the idle
timeout or `max_transfer` closes both.

Limits ([proxy65], per node: one worker runs the proxy, see ARCHITECTURE.md): `max_pending`
connections not yet active (one more is closed unread at once), `max_active` streams (an
activation beyond it gets resource-constraint), `bandwidth` bytes per second per direction (a
token bucket per direction: the relay waits before it writes), `idle_timeout` and `max_transfer`
(what fits is sent, then both close). A handshake has `HANDSHAKE_TIMEOUT`.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, field

import trio

from imactor.c2s.listener import accept
from imactor.config import Proxy65Config
from imactor.xmpp import socks5
from imactor.xmpp.socks5 import Socks5Error, Socks5Handshake, TokenBucket

__all__ = ["Proxy", "ProxyStatistics"]

log = logging.getLogger("imactor.proxy65")

CHUNK = 65536
EARLY_LIMIT = 65536  #: bytes kept from a side before activation (more waits in the kernel)
HANDSHAKE_LIMIT = 1024  #: bytes a handshake may take: greeting (≤ 257) and request (≤ 262)
HANDSHAKE_TIMEOUT = 10.0  #: seconds for the greeting and the request (within the activation timeout)

#: A client's connection: a socket, or a memory stream in the unit tests.
Stream = trio.abc.HalfCloseableStream


class _State(enum.Enum):
    WAITING = "waiting"  #: one or both connected, not activated yet
    ACTIVE = "active"  #: relaying
    ENDED = "ended"


@dataclass(eq=False)
class _Pair:
    key: str  #: the stream hash
    target: Stream
    initiator: Stream | None = None
    state: _State = _State.WAITING
    #: Set when the state leaves WAITING (activated or ended).
    changed: trio.Event = field(default_factory=trio.Event)
    activated: bool = False  #: once true, the relay owns both sockets
    #: Set when the target's task no longer reads its socket: the relay may start.
    target_free: trio.Event = field(default_factory=trio.Event)
    #: What each side sent after its CONNECT, before activation: relayed first.
    early: dict[str, bytes] = field(default_factory=dict)
    gone: set[str] = field(default_factory=set)  #: sides whose EOF came before the relay


@dataclass(frozen=True, slots=True)
class ProxyStatistics:
    pending: int  #: connections not yet active
    active: int  #: streams relaying
    streams_total: int  #: streams activated since start
    bytes_total: int  #: bytes relayed, both directions
    refused_total: int  #: connections refused (limits, bad SOCKS5, unknown hash, timeouts)


class Proxy:
    """The bytestreams proxy of one node, run by one worker (`serve` with its listener)."""

    def __init__(self, config: Proxy65Config) -> None:
        self.config = config
        self._pairs: dict[str, _Pair] = {}
        self._pending = self._active = 0
        self._streams_total = self._bytes_total = self._refused_total = 0

    def statistics(self) -> ProxyStatistics:
        return ProxyStatistics(self._pending, self._active, self._streams_total, self._bytes_total,
                               self._refused_total)  # fmt: skip

    def activate(self, key: str) -> str | None:
        """Activate the stream of hash `key` (the requester's IQ): None, or the XEP-0065 §5.3.5
        error condition: item-not-found (no such stream: the hash of a non-party's JID matches
        none), not-allowed (only one side connected, or already active), resource-constraint
        (`max_active` streams relay already)."""
        pair = self._pairs.get(key)
        if pair is None or pair.state is _State.ENDED:
            return "item-not-found"
        if pair.initiator is None or pair.state is _State.ACTIVE:
            return "not-allowed"
        if self._active >= self.config.max_active:
            return "resource-constraint"
        pair.state, pair.activated = _State.ACTIVE, True
        self._pending -= 2  # both connections leave the pending count
        self._active += 1
        self._streams_total += 1
        pair.changed.set()
        return None

    async def serve(
        self, listener: trio.SocketListener, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Accept SOCKS5 connections forever (the listener is the node's and is not closed)."""
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                stream, _remote = await accept(listener)
                if not self.admit():
                    await stream.aclose()  # a flood: closed unread, costs nothing more
                    continue
                nursery.start_soon(self.handle, stream)

    def admit(self) -> bool:
        """Whether a new connection may be handled (`max_pending`); if so it counts from now."""
        if self._pending >= self.config.max_pending:
            self._refused_total += 1
            return False
        self._pending += 1
        return True

    async def handle(self, stream: Stream) -> None:
        """One admitted connection, to its end: handshake, pairing, waiting, and (the
        requester's) relaying."""
        pair: _Pair | None = None
        role = ""
        try:
            with trio.move_on_after(self.config.activation_timeout):
                with trio.move_on_after(HANDSHAKE_TIMEOUT):  # a slow handshake holds a pending slot
                    pair, role = await self._join(stream)
                if pair is not None and pair.state is _State.WAITING:
                    await self._wait(stream, pair, role)
            # The state, not the timeout, decides: an activation that came as the time ran out holds.
            if pair is not None and pair.state is _State.WAITING:  # no activation in time: both go
                self._refused_total += 1
                self._end(pair)
            elif pair is not None and pair.state is _State.ACTIVE and role == "initiator":
                await pair.target_free.wait()
                await self._relay(pair)  # it closes both sockets
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            if pair is not None and pair.state is _State.WAITING:
                self._end(pair)
        finally:
            if pair is not None and role == "target":
                pair.target_free.set()
            if pair is None or not pair.activated:
                self._pending -= 1
                # An active pair's sockets are its relay's (the initiator's task) to close.
                with trio.CancelScope(shield=True):
                    await stream.aclose()

    async def _wait(self, stream: Stream, pair: _Pair, role: str) -> None:
        """Until the pair is activated or ends. Meanwhile what the client sends is kept (up to
        `EARLY_LIMIT`, then it waits in the kernel), and a client that leaves ends the pair
        at once: its slot of `max_pending` is free again and its peer is closed."""

        async def read() -> None:
            while len(pair.early[role]) < EARLY_LIMIT:
                data = await stream.receive_some(EARLY_LIMIT)
                if not data:
                    if pair.state is _State.WAITING:
                        self._end(pair)
                    else:  # it left as the activation came: the relay sends what it had, then ends
                        pair.gone.add(role)
                    return
                pair.early[role] += data
            await trio.sleep_forever()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            await pair.changed.wait()
            nursery.cancel_scope.cancel()

    async def _join(self, stream: Stream) -> tuple[_Pair | None, str]:
        """The handshake, then a place in a pair: (pair, role), or (None, "") when refused (the
        reply is sent)."""
        handshake = Socks5Handshake()
        try:
            while handshake.request is None:
                data = await stream.receive_some(HANDSHAKE_LIMIT)
                if not data:
                    return None, ""
                out = handshake.receive_data(bytes(data))
                if out:
                    await stream.send_all(out)
        except Socks5Error as error:
            self._refused_total += 1
            log.debug("SOCKS5 refused: %s", error)
            answer = error.before
            if error.code == socks5.METHOD_NONE_ACCEPTABLE:
                answer += bytes((socks5.VERSION, socks5.METHOD_NONE_ACCEPTABLE))
            elif error.code is not None:
                address = handshake.request.address if handshake.request is not None else ""
                answer += socks5.reply(error.code, address)
            if answer:
                await stream.send_all(answer)
            return None, ""
        key = handshake.request.address.lower()
        pair = self._pairs.get(key)
        if pair is None:
            pair = self._pairs[key] = _Pair(key, stream)
            role = "target"
        elif pair.initiator is None and pair.state is _State.WAITING:
            pair.initiator = stream
            role = "initiator"
        else:  # XEP-0065 §9.1: one target per stream, no third party
            self._refused_total += 1
            await stream.send_all(socks5.reply(socks5.NOT_ALLOWED, handshake.request.address))
            return None, ""
        pair.early[role] = handshake.leftover
        try:
            await stream.send_all(socks5.reply(socks5.SUCCEEDED, handshake.request.address))
        except BaseException:  # a timeout or a broken socket: no pair may keep a dead side
            if pair.state is _State.WAITING:
                self._end(pair)
            raise
        return pair, role

    def _end(self, pair: _Pair) -> None:
        """Forget `pair` and wake its other side, which closes its own socket."""
        if pair.state is _State.ACTIVE:
            self._active -= 1
        pair.state = _State.ENDED
        if self._pairs.get(pair.key) is pair:
            del self._pairs[pair.key]
        pair.changed.set()

    async def _relay(self, pair: _Pair) -> None:
        """Copy both ways until either side ends, then close both (run by the initiator's task,
        which owns both sockets now)."""
        assert pair.initiator is not None
        initiator, target = pair.initiator, pair.target
        directions = (("initiator", initiator, target), ("target", target, initiator))
        try:
            idle = trio.CancelScope(deadline=trio.current_time() + self.config.idle_timeout)
            with idle:
                async with trio.open_nursery() as nursery:
                    for role, source, sink in directions:
                        nursery.start_soon(self._copy, source, sink, pair.early.get(role, b""),
                                           role in pair.gone, idle, nursery.cancel_scope)  # fmt: skip
        finally:
            self._end(pair)
            with trio.CancelScope(shield=True):
                await initiator.aclose()
                await target.aclose()

    async def _copy(
        self, source: Stream, sink: Stream, early: bytes, gone: bool,
        idle: trio.CancelScope, both: trio.CancelScope,
    ) -> None:  # fmt: skip
        """One direction; its end (EOF, an error, the size limit) ends both."""
        config = self.config
        bucket = TokenBucket(float(config.bandwidth)) if config.bandwidth else None
        sent = 0
        chunk = min(CHUNK, config.bandwidth) if config.bandwidth else CHUNK
        try:
            data = early
            while True:
                over = bool(config.max_transfer) and sent + len(data) > config.max_transfer
                if over:  # what fits still goes, then the stream is cut
                    data = data[: config.max_transfer - sent]
                if data:
                    sent += len(data)
                    if bucket is not None:
                        await trio.sleep(bucket.take(len(data), trio.current_time()))
                    await sink.send_all(data)
                    self._bytes_total += len(data)
                    idle.deadline = trio.current_time() + config.idle_timeout
                if over:
                    log.info("a stream reached max_transfer (%d bytes): closed", config.max_transfer)
                    return
                if gone:
                    return
                data = bytes(await source.receive_some(chunk))
                if not data:
                    return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
        finally:
            both.cancel()
