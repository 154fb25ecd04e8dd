"""BOSH (XEP-0124) carrying XMPP (XEP-0206): HTTP request bodies in, held responses out.

A BOSH session is a `BoshTransport` under an ordinary `SessionActor`, so BOSH clients get the same
SASL, binding, stream management and resumption as every other client. The transport speaks RFC
7395 framing to the session (`imactor.xmpp.framing`): the session-creation request and each
``xmpp:restart`` become an <open/> frame, every child of a request's <body/> a frame of its own,
``type='terminate'`` a <close/>; going out, the session's frames are collected into the next
response <body/> (its <open/> frames dropped: BOSH has no stream header, XEP-0206 §5).

The XML of bodies (parsing requests, building responses) is sans-IO, in `imactor.xmpp.bosh`.
XEP-0124 rules kept here:

- Request ids (§14): each request carries the next ``rid``; requests are processed in ``rid``
  order (a later one waits for the gap to fill), a repeated ``rid`` gets the cached response
  again, and a ``rid`` outside the window (``requests`` wide) or already forgotten, or an unknown
  ``sid``, ends with ``<body type='terminate' condition='item-not-found'/>``.
- Holds and waits (§7): up to ``hold`` requests wait for data, each at most ``wait`` seconds; one
  more request answers the oldest held one at once.
- Overactivity (§11): more than ``requests`` unanswered requests, or two consecutive empty
  requests less than ``polling`` seconds apart when the first got (or will get) no payload, is a
  ``policy-violation``: a client flooding empty requests is cut off.
- Inactivity (§8): no request for ``inactivity`` seconds (or the ``pause`` asked for, §10, up to
  ``maxpause``) ends the session.
- A malformed body is ``bad-request``; a stream error from the session ends the BOSH session with
  ``remote-stream-error`` carrying it (XEP-0206 §8).

Limits come from ``[http]``: ``bosh_max_wait``, ``bosh_max_hold``, ``bosh_inactivity``,
``bosh_polling``; a request body is at most ``max_body_size`` bytes (the HTTP layer checks).

Several workers: a BOSH session lives in the worker that created it, and its ``sid`` names that
worker (``"<worker>.<144 random bits>"``, as XEP-0198 resumption ids do). The kernel hands each
HTTP connection to any worker; one that holds no session of that sid but whose number is another
worker's forwards the request body over the actor mesh (`BoshRequest`, asked with a reply, target
kind ``bosh``), and the owner runs it through the session's rid window exactly like a local
request (in a task of its own: a held request never blocks the mesh) and replies with the
response body (`BoshResponse`), which the receiving worker writes. If the owner is not live (killed,
not yet replaced), dies while the request is there, or does not answer within
``2 * bosh_max_wait + FORWARD_MARGIN`` seconds, the request ends with
``remote-connection-failed`` (XEP-0124 §17.2: the connection manager lost the server behind it);
a live owner that has no such session (the dead owner's replacement) answers ``item-not-found``.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

import trio

from imactor import messages as m
from imactor.actors import ActorGone, AskTimeout, ask
from imactor.c2s.session import SessionActor
from imactor.c2s.transport import FramedStream
from imactor.mesh.codec import BodyError
from imactor.web.messages import Request, Response
from imactor.xmpp.bosh import (
    MAX_PAUSE,
    XMPP_RESTART,
    XMPP_VERSION,
    BoshError,
    ParsedBody,
    client_number,
    decimal,
    open_for,
    parse_body,
    request_rid,
    response_body,
    terminate_body,
)
from imactor.xmpp.errors import StanzaError
from imactor.xmpp.framing import CLOSE_FRAME
from supervisors import ChildSpec, Restart

if TYPE_CHECKING:
    from imactor.server.services import Services

log = logging.getLogger("imactor.web.bosh")

CONTENT_TYPE: Final = "text/xml; charset=utf-8"
#: Bytes of responses waiting for requests before the session's writes wait (back-pressure).
MAX_BUFFERED: Final = 1 << 20
#: The mesh target kind of forwarded requests (`imactor.mesh.mesh`).
TARGET_KIND: Final = "bosh"
#: Seconds a forwarded request may take beyond the longest a local one can (waiting up to 'wait'
#: for an earlier rid, then held up to 'wait'), before it ends with remote-connection-failed.
FORWARD_MARGIN: Final = 10.0


@dataclass
class _Held:
    rid: int
    arrived: float
    done: trio.Event = field(default_factory=trio.Event)
    payload: list[bytes] = field(default_factory=list)


class BoshTransport(FramedStream):
    """One BOSH session: the session actor's transport, fed and drained by HTTP requests."""

    def __init__(
        self, manager: BoshSessions, sid: str, rid: int, *, wait: int, hold: int, secure: bool
    ) -> None:
        config = manager.services.config.http
        self.manager = manager
        self.sid = sid
        #: The served domain the creation request named (a [[hosts]] host or the primary one).
        self.domain = manager.services.domain
        self.secure = secure
        self.wait = wait
        self.hold = hold
        self.requests = hold + 1
        self.inactivity = config.bosh_inactivity
        self.polling = config.bosh_polling
        #: The rid the next new request must carry.
        self.next_rid = rid
        self._rid_changed = trio.Condition()
        self._responses: dict[int, bytes] = {}  #: recent answers, for repeated rids
        self._pending: dict[int, trio.Event] = {}  #: rids received and not answered yet
        self._unanswered = 0
        self._held: deque[_Held] = deque()
        self._out: list[bytes] = []
        self._out_size = 0
        self._drained = trio.Event()
        self._in_send, self._in_receive = trio.open_memory_channel[bytes](256)
        self.terminated: str | None = None  #: set once over: "" (clean) or the condition
        self._stream_error: list[bytes] = []
        self._last_request = trio.current_time()
        #: The previous new request, if it was empty (for the §11 polling rule).
        self._previous: _Held | None = None
        self._pause_until = 0.0

    @property
    def is_over(self) -> bool:
        return self.terminated is not None

    # ---- the session's side ------------------------------------------------------------------

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """The next frame from the client; ``b""`` once the session is over or inactive too long."""
        while True:
            deadline = max(self._last_request + self.inactivity, self._pause_until)
            with trio.move_on_at(deadline):
                try:
                    return await self._in_receive.receive()
                except (trio.EndOfChannel, trio.ClosedResourceError):
                    return b""
            # A held request means the client is there; otherwise the time since the last one counts.
            if not self._unanswered and trio.current_time() >= max(
                self._last_request + self.inactivity, self._pause_until
            ):
                log.debug("bosh %s: inactive, ending", self.sid)
                self._terminate("")
                return b""

    async def send_frames(self, frames: Sequence[bytes]) -> None:
        if self.terminated is not None:
            raise trio.BrokenResourceError("the BOSH session is over")
        for frame in frames:
            if frame.startswith(b"<open"):
                continue  # XEP-0206 §5: no stream header in BOSH
            if frame == CLOSE_FRAME:
                self._terminate("remote-stream-error" if self._stream_error else "")
                return
            if frame.startswith(b"<stream:error"):
                self._stream_error.append(frame)
                continue
            self._out.append(frame)
            self._out_size += len(frame)
        self._release()
        while self._out_size > MAX_BUFFERED and self.terminated is None:
            self._drained = trio.Event()
            await self._drained.wait()

    async def aclose(self) -> None:
        self._terminate("")

    def _terminate(self, condition: str) -> None:
        if self.terminated is not None:
            return
        self.terminated = condition
        self.manager.forget(self)
        self._in_send.close()
        self._drained.set()
        while self._held:
            held = self._held.popleft()
            held.payload = [*self._take_out(), *self._stream_error]
            held.done.set()

    # ---- the client's side (HTTP requests) ---------------------------------------------------

    async def request(self, rid: int, body: ParsedBody, extra: str = "") -> bytes:
        """Answer one request of this session (see the module doc for the rules)."""
        if rid in self._responses:
            return self._responses[rid]  # §14.3: a repeated request gets the same answer
        if rid in self._pending:
            # §14.3: the connection of a request still pending broke and the client sent it
            # again: this copy gets the answer the first one gets.
            with trio.move_on_after(self.wait + 1):
                await self._pending[rid].wait()
            if rid in self._responses:
                return self._responses[rid]
            raise BoshError("item-not-found", "the repeated request was never answered")
        if rid < self.next_rid or rid >= self.next_rid + self.requests:
            raise BoshError("item-not-found", "rid outside the window")
        if self._unanswered >= self.requests:
            raise BoshError("policy-violation", "too many simultaneous requests")
        self._unanswered += 1
        self._pending[rid] = trio.Event()
        try:
            with trio.move_on_after(self.wait) as scope:
                async with self._rid_changed:
                    while self.next_rid != rid:
                        await self._rid_changed.wait()
            if scope.cancelled_caught:
                raise BoshError("item-not-found", "an earlier rid never came")
            response = await self._process(rid, body, extra)
            self._responses[rid] = response
            self._responses.pop(rid - self.requests, None)
            return response
        finally:
            self._unanswered -= 1
            self._pending.pop(rid).set()

    async def _process(self, rid: int, body: ParsedBody, extra: str) -> bytes:
        """Feed the request's frames in; answer with what the session sends (`extra`: attributes
        of the response <body/>, those of the session creation response)."""
        now = trio.current_time()
        attributes = body.attributes
        self._last_request = now
        async with self._rid_changed:
            self.next_rid = rid + 1
            self._rid_changed.notify_all()
        empty = not body.children and not {"type", "pause", XMPP_RESTART} & attributes.keys()
        previous, self._previous = self._previous, None
        if empty and previous is not None and now - previous.arrived < self.polling and not previous.payload:
            # §11: two consecutive empty requests within 'polling', the first answered empty
            # (or to be: still held, it is answered empty by this one).
            raise BoshError("policy-violation", f"empty requests at most every {self.polling} s")
        if attributes.get(XMPP_RESTART) == "true":
            await self._feed(open_for(attributes, self.domain))
        for child in body.children:
            await self._feed(child)
        if attributes.get("type") == "terminate":
            await self._feed(CLOSE_FRAME)
            self._terminate("")
            return terminate_body()
        if "pause" in attributes:
            pause = attributes["pause"]
            if not decimal(pause) or int(pause) > MAX_PAUSE:
                raise BoshError("bad-request", f"pause is at most {MAX_PAUSE}")
            self._pause_until = now + int(pause)
            while self._held:
                self._answer_oldest()
            return response_body(extra, self._take_out())
        if self.terminated is not None:
            return terminate_body(self.terminated or None, self._stream_error)
        held = _Held(rid, now)
        self._held.append(held)
        if empty:
            self._previous = held
        while len(self._held) > max(self.hold, 1 if self._out else 0):
            self._answer_oldest()
        if self._out:
            self._release()
        with trio.move_on_after(self.wait):
            await held.done.wait()
        with contextlib.suppress(ValueError):
            self._held.remove(held)
        if not held.done.is_set():
            held.payload = self._take_out()
        if self.is_over:
            return terminate_body(self.terminated or None, held.payload or self._stream_error)
        return response_body(extra, held.payload)

    async def _feed(self, frame: bytes) -> None:
        if self.terminated is None:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await self._in_send.send(frame)

    def _release(self) -> None:
        """Data is ready: it goes out in the oldest held request."""
        if self._out and self._held:
            self._answer_oldest()

    def _answer_oldest(self) -> None:
        held = self._held.popleft()
        held.payload = self._take_out()
        held.done.set()

    def _take_out(self) -> list[bytes]:
        out, self._out, self._out_size = self._out, [], 0
        self._drained.set()
        return out


class BoshSessions:
    """The BOSH sessions of one worker, by sid."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.sessions: dict[str, BoshTransport] = {}
        #: How long a request forwarded to the session's worker may take (see the module doc).
        self.forward_timeout = 2 * services.config.http.bosh_max_wait + FORWARD_MARGIN
        if services.mesh is not None:
            services.mesh.handle(TARGET_KIND, self._on_forwarded)

    def forget(self, session: BoshTransport) -> None:
        if self.sessions.get(session.sid) is session:
            del self.sessions[session.sid]

    async def handle(self, request: Request, remote: str, *, secure: bool) -> Response:
        """Answer one POST to the BOSH path (HTTP 200 even for errors: XEP-0124 §17)."""
        return Response(200, await self._answer(request.body, remote, secure), CONTENT_TYPE)

    def _on_forwarded(self, sid: str, request: object) -> None:
        """A frame of the mesh's ``bosh`` kind: served in a task of its own, since a held
        request waits for data."""
        if not isinstance(request, m.BoshRequest):
            raise BodyError(f"a {type(request).__name__} for a BOSH session")
        mesh = self.services.mesh
        assert mesh is not None
        mesh.spawn(self.serve_forwarded, sid, request)

    async def serve_forwarded(self, sid: str, request: m.BoshRequest) -> None:
        """Answer a request that another worker received for a session of this one (run by the
        mesh in a task of its own). Never raises: the mesh's tasks must not fail."""
        answered = False
        try:
            answer = await self._answer(request.body, None, secure=False)
            request.reply.send(m.BoshResponse(answer))
            answered = True
        except Exception:
            log.exception("bosh %s: a forwarded request failed", sid)
            request.reply.fail(StanzaError("internal-server-error"))
            answered = True
        finally:
            if not answered:  # cancelled: this worker's mesh is stopping
                request.reply.fail(StanzaError("service-unavailable", "the session's worker is stopping"))

    async def _answer(self, data: bytes, remote: str | None, secure: bool) -> bytes:
        """The response body for a request body; `remote` None: forwarded by another worker."""
        limits = self.services.config.limits
        session: BoshTransport | None = None
        try:
            body = parse_body(data, limits.max_stanza_size)
            rid = request_rid(body.attributes)
            sid = body.attributes.get("sid")
            if sid is None:
                if remote is None:
                    raise BoshError("bad-request", "a forwarded request has no sid")
                return await self._create(body, rid, remote, secure)
            session = self.sessions.get(sid)
            if session is None:
                owner = self._owner(sid) if remote is not None else None
                if owner is None:
                    raise BoshError("item-not-found", "no such session")
                return await self._forward(owner, sid, data)
            return await session.request(rid, body)
        except BoshError as error:
            log.debug("bosh request refused: %s", error)
            if session is not None:
                session._terminate(error.condition)
            return terminate_body(error.condition)

    def _owner(self, sid: str) -> int | None:
        """The other worker of this node that `sid` names; None: none (a local or forged sid)."""
        mesh = self.services.mesh
        prefix, dot, _ = sid.partition(".")
        if mesh is None or not dot or not decimal(prefix) or len(prefix) > 6:
            return None
        owner = int(prefix)
        return owner if owner != mesh.index and owner in mesh.membership.live else None

    async def _forward(self, owner: int, sid: str, data: bytes) -> bytes:
        """Have the worker that owns `sid` answer the request (see the module doc)."""
        mesh = self.services.mesh
        assert mesh is not None
        mesh.count("bosh_forwarded")
        target = mesh.remote(TARGET_KIND, sid, owner)
        try:
            response: m.BoshResponse = await ask(
                target, lambda reply: m.BoshRequest(data, reply), timeout=self.forward_timeout
            )
        except (ActorGone, AskTimeout) as exc:
            log.info("bosh %s: the session's worker %d is unreachable: %s", sid, owner, exc)
            raise BoshError("remote-connection-failed", f"worker {owner} is gone") from None
        except StanzaError as exc:
            condition = _FAILED_AS.get(exc.condition, "internal-server-error")
            raise BoshError(condition, exc.text or "") from None
        return response.body

    async def _create(self, body: ParsedBody, rid: int, remote: str, secure: bool) -> bytes:
        config = self.services.config.http
        attributes = body.attributes
        to = attributes.get("to", "")
        domain = to.lower().rstrip(".")
        if not self.services.hosts.is_local(domain):
            raise BoshError("host-unknown", f"this server does not serve {to!r}")
        if XMPP_VERSION not in attributes:
            raise BoshError("bad-request", "XEP-0206: xmpp:version is required")
        wait = client_number(attributes.get("wait"), config.bosh_max_wait)
        hold = client_number(attributes.get("hold"), config.bosh_max_hold, low=0)
        sid = f"{self.services.worker_index}.{secrets.token_urlsafe(18)}"
        transport = BoshTransport(self, sid, rid, wait=wait, hold=hold, secure=secure)
        transport.domain = domain
        self.sessions[sid] = transport
        supervisor = self.services.session_supervisor
        assert supervisor is not None
        session = SessionActor(self.services, transport, remote, direct_tls=False)
        spec = ChildSpec(id=str(session.address), start=session.run, restart=Restart.TEMPORARY)
        await supervisor.start_child(spec)
        # The creation request stands for the first <open/>; its answer carries the session's
        # parameters (XEP-0124 §7.1, XEP-0206 §4) and the stream features.
        opening = {k: v for k, v in attributes.items() if k in ("to", XMPP_VERSION)}
        params = (
            f" sid='{sid}' wait='{wait}' hold='{hold}' requests='{transport.requests}'"
            f" inactivity='{transport.inactivity}' polling='{transport.polling}' maxpause='{MAX_PAUSE}'"
            f" ver='1.11' from='{domain}' xmpp:version='1.0' xmpp:restartlogic='true'"
        )
        return await transport.request(rid, ParsedBody({**opening, XMPP_RESTART: "true"}, []), params)


#: The BOSH condition for each way a forwarded request can fail on the owner's side.
_FAILED_AS: Final = {"item-not-found": "item-not-found", "service-unavailable": "remote-connection-failed"}
