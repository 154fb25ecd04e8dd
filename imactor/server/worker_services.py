"""What the actors of one worker share: config, storage, registry, router, modules, TLS, throttles.

Built once per worker by `imactor.worker.tree`; handed to actors by reference. It holds no
per-account state (that lives in user actors) and nothing that needs a lock.
"""

from __future__ import annotations

import hashlib
import secrets
import ssl
import time
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio

from imactor.actors import ActorRef, Registry
from imactor.server import messages as m
from imactor.server.modules import Module, ModuleHost
from imactor.server.router import Router
from imactor.xmpp import sm
from imactor.xmpp.jid import JID
from imactor.xmpp.stanza import Element, Stanza

if TYPE_CHECKING:
    from imactor.c2s.session import SessionActor
    from imactor.config import Config
    from imactor.mesh.mesh import Mesh
    from imactor.storage import Storage
    from supervisors import DynamicSupervisor, TaskSupervisor


#: How many ended XEP-0198 sessions are remembered for the `h` of a late resumption attempt.
EXPIRED_RESUMPTIONS_KEPT = 4096

#: FailureThrottle sweeps expired keys once it holds more than this many (and then twice as many
#: as survived the last sweep).
_SWEEP_MIN = 1024


class FailureThrottle:
    """Counts failures per key in a sliding window (failed logins, registrations per address)."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit, self.window = limit, window
        self._failures: dict[str, deque[float]] = {}
        self._sweep_at = _SWEEP_MIN

    def _recent(self, key: str, now: float) -> deque[float]:
        stamps = self._failures.setdefault(key, deque())
        while stamps and stamps[0] <= now - self.window:
            stamps.popleft()
        if not stamps:
            self._failures.pop(key, None)
        return stamps

    def is_blocked(self, key: str, now: float | None = None) -> bool:
        now = trio.current_time() if now is None else now
        return len(self._recent(key, now)) >= self.limit

    def record(self, key: str, now: float | None = None) -> None:
        now = trio.current_time() if now is None else now
        self._recent(key, now)
        stamps = self._failures.setdefault(key, deque())
        stamps.append(now)
        # Only the newest `limit` stamps decide a block: a client hammering away while blocked
        # must not grow the memory kept for its key.
        while len(stamps) > self.limit:
            stamps.popleft()
        if len(self._failures) > self._sweep_at:
            # Keys are pruned when looked up again, and a made-up username never is: drop the
            # expired ones now and then (amortized O(1) per record), or memory grows forever.
            for stale in list(self._failures):
                self._recent(stale, now)
            self._sweep_at = max(_SWEEP_MIN, 2 * len(self._failures))


@dataclass
class LoginThrottle:
    """RFC 6120 §13.7.1 advice: throttle repeated failed logins, per account and per address."""

    per_account: FailureThrottle
    per_address: FailureThrottle

    def is_blocked(self, username: str, address: str) -> bool:
        return self.per_account.is_blocked("u:" + username) or self.per_address.is_blocked("a:" + address)

    def record_failure(self, username: str | None, address: str) -> None:
        if username is not None:
            self.per_account.record("u:" + username)
        self.per_address.record("a:" + address)


@dataclass
class Services:
    config: Config
    storage: Storage
    modules: ModuleHost
    ssl_context: ssl.SSLContext
    endpoint_binding: bytes
    tls_key_bytes: bytes
    worker_index: int = 0
    registry: Registry = field(default_factory=Registry)
    sessions: set[SessionActor] = field(default_factory=set)
    user_supervisor: DynamicSupervisor | None = None
    room_supervisor: DynamicSupervisor | None = None
    session_supervisor: DynamicSupervisor | None = None
    worker_supervisor: TaskSupervisor | None = None
    started_at: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        limits = self.config.limits
        self.domain = self.config.server.domain
        from imactor.rooms.service import MucService

        #: The multi-user chat service ([muc] enabled), whose rooms this worker may host.
        self.muc = MucService(self) if self.config.muc.enabled else None
        self.router = Router(self.domain, self.registry, self._start_user, self._start_room, self.muc)
        self.login_throttle = LoginThrottle(
            FailureThrottle(limits.login_failures, limits.login_failure_window),
            FailureThrottle(limits.login_failures * 4, limits.login_failure_window),
        )
        self.registration_throttle = FailureThrottle(
            limits.registrations_per_address, limits.registration_window
        )
        self.server = ServerFacade(self)
        self.bound_features = (*self.server.stream_features(), sm.FEATURE, *self.modules.stream_features)
        #: XEP-0198 sessions that may be resumed, by their unguessable id (see `SessionActor`).
        self.resumable: dict[str, SessionActor] = {}
        #: Ended resumable sessions: id → (username, h), for the `h` of a late <failed/> (§5).
        self._expired_resumptions: OrderedDict[str, tuple[str, int]] = OrderedDict()
        # Derived from the TLS key: stable across restarts and identical in every worker.
        self.fake_salt_secret = hashlib.sha256(b"imactor-fake-salt\0" + self.tls_key_bytes).digest()
        self._no_sessions: trio.Event | None = None
        self._sessions_by_key: dict[str, SessionActor] = {}
        self._sessions_by_jid: dict[JID, SessionActor] = {}
        self._moved_resumptions: OrderedDict[str, int] = OrderedDict()
        self._moved_sessions: OrderedDict[str, ActorRef[m.SessionMessage]] = OrderedDict()
        #: The link to the node's other workers; None for a standalone worker (no peers).
        self.mesh: Mesh | None = None
        # Counted by the sessions, for the status socket: O(1) to sample every second.
        self.stanzas_in_total = self.stanzas_out_total = 0

    async def _start_user(self, username: str) -> ActorRef[m.UserMessage]:
        from imactor.user.actor import UserActor
        from supervisors import ChildSpec, Restart

        assert self.user_supervisor is not None
        actor = UserActor(username, self)
        ref = await self.user_supervisor.start_child(
            ChildSpec(id=str(actor.address), start=actor.run, restart=Restart.TEMPORARY)
        )
        return ref  # type: ignore[return-value]

    async def _start_room(self, name: str) -> ActorRef[m.RoomMessage]:
        from imactor.rooms.actor import RoomActor
        from supervisors import ChildSpec, Restart

        assert self.room_supervisor is not None
        assert self.muc is not None
        actor = RoomActor(name, self, self.muc)
        ref = await self.room_supervisor.start_child(
            ChildSpec(id=str(actor.address), start=actor.run, restart=Restart.TEMPORARY)
        )
        return ref  # type: ignore[return-value]

    def new_id(self) -> str:
        return secrets.token_hex(8)

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

    def session_moved(self, key: str, resumption_id: str, to: ActorRef[m.SessionMessage]) -> None:
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
        self._expired_resumptions[resumption_id] = (username, h)
        while len(self._expired_resumptions) > EXPIRED_RESUMPTIONS_KEPT:
            self._expired_resumptions.popitem(last=False)

    def expired_resumption(self, resumption_id: str, username: str) -> int | None:
        """The last `h` of an ended session of `username` with this id, if still remembered."""
        found = self._expired_resumptions.get(resumption_id)
        return found[1] if found is not None and found[0] == username else None

    def new_resource(self) -> str:
        return "imactor-" + secrets.token_hex(6)

    def channel_bindings(self, ssl_object: ssl.SSLSocket | ssl.SSLObject) -> dict[str, bytes]:
        """RFC 5929 bindings this TLS session supports (tls-unique is undefined for TLS 1.3)."""
        bindings = {"tls-server-end-point": self.endpoint_binding}
        if ssl_object.version() == "TLSv1.2":
            unique = ssl_object.get_channel_binding("tls-unique")
            if unique:
                bindings["tls-unique"] = unique
        return bindings

    def sessions_open(self, session: SessionActor) -> None:
        self.sessions.add(session)
        self._sessions_by_key[session.address.key] = session

    def sessions_closed(self, session: SessionActor) -> None:
        self.sessions.discard(session)
        if self._sessions_by_key.get(session.address.key) is session:
            del self._sessions_by_key[session.address.key]
        if session.jid is not None and self._sessions_by_jid.get(session.jid) is session:
            del self._sessions_by_jid[session.jid]
        if not self.sessions and self._no_sessions is not None:
            self._no_sessions.set()

    async def wait_sessions_closed(self) -> None:
        """Return once no session is left (shutdown waits for the streams it ended)."""
        if self.sessions:
            self._no_sessions = trio.Event()
            await self._no_sessions.wait()

    def session_bound(self, session: SessionActor) -> None:
        """The session's full JID is known (bound or resumed here): room broadcasts find it."""
        assert session.jid is not None
        self._sessions_by_jid[session.jid] = session

    def session_by_jid(self, jid: JID) -> SessionActor | None:
        """The live session of this worker bound to the full JID `jid`."""
        return self._sessions_by_jid.get(jid)

    def session_by_key(self, key: str) -> SessionActor | None:
        """The live session of this worker whose address key is `key` (frames name sessions so)."""
        return self._sessions_by_key.get(key)

    def kill_session(self, ref: ActorRef[m.SessionMessage]) -> None:
        """End a session that does not read (a local one; a remote one's worker sees to its own)."""
        session = self._sessions_by_key.get(ref.address.key)
        if session is not None and ref.address.worker == self.worker_index:
            session.kick("policy-violation", "not reading")

    def presence_changed(self, jid: JID, resource: str, available: bool) -> None:
        """Hook for statistics; per-resource availability is owned by the user actor."""

    def kick_all(self, condition: str, text: str = "") -> None:
        for session in list(self.sessions):
            session.kick(condition, text)


class ServerFacade:
    """The `ServerApi` handed to module handlers."""

    def __init__(self, services: Services) -> None:
        self._services = services
        self.domain = services.domain
        self.started_at = services.started_at

    async def route(self, element: Element) -> None:
        await self._services.router.route(Stanza.from_element(element), wait=False)

    def features(self) -> Sequence[str]:
        return self._services.modules.features()

    def identities(self) -> Sequence[tuple[str, str, str]]:
        return [("server", "im", "imactor")]

    def modules(self) -> Sequence[Module]:
        return [loaded.module for loaded in self._services.modules.loaded.values()]

    def service_items(self) -> Sequence[str]:
        muc = self._services.muc
        return [] if muc is None else [muc.domain]

    def caps_nodes(self) -> Sequence[str]:
        """`node#ver` of the server's XEP-0115 caps, if the caps module is enabled."""
        if "caps" not in self._services.modules.loaded:
            return []
        from imactor.modules import caps

        return [f"{caps.NODE}#{caps.ver(self.identities(), self.features())}"]

    def stream_features(self) -> tuple[bytes, ...]:
        """Extra stream features offered to clients (XEP-0115 §6.3)."""
        if "caps" not in self._services.modules.loaded:
            return ()
        from imactor.modules import caps

        return (caps.caps_feature(self.identities(), self.features()),)

    def registration_allowed(self, address: str) -> bool:
        """Counts this attempt; False once the address used up its registrations in the window."""
        throttle = self._services.registration_throttle
        if throttle.is_blocked(address):
            return False
        throttle.record(address)
        return True

    async def account_removed(self, username: str) -> None:
        """XEP-0077 §3.2: the account's sessions end once the reply has been sent.

        `send_nowait` has no checkpoint, so the session that asked queues its IQ result before
        its user actor can run and kick it. No user actor means no bound session.
        """
        await self._services.router.to_user(username, m.AccountRemoved(), None, wait=False)
