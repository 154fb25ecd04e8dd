"""Failover tests' tools: a XEP-0198 client that reconnects and keeps exact books, and the status
socket helpers that SIGKILL a worker and wait for its replacement.

`SmClient` is one account's raw-XML client (trio, over `RawClient`) with stream management
enabled and resumable. It knows precisely which of its messages the server acknowledged: a
message is *acked* only when an `h` from the server covers it (`<a h/>`, `<resumed h/>`, or the
`h` of a `<failed/>` resumption, XEP-0198 §4–5). When its connection breaks it reconnects to the
same port (any worker may accept it) and resumes; if resumption fails it binds a new session and
sends again what was not acked (with the same origin-id: a duplicate at worst). Everything it
receives is recorded: live messages, delayed ones (offline storage or a resumption's re-send,
both stamped with XEP-0203 <delay/>), and archive results (XEP-0313).

In a cluster (`failover`: the c2s ports of every node) a client whose connection attempt fails
tries the next node's port, as a client does with the next address its DNS SRV lookup gave it
(RFC 6120 §3.2.1): so a client of a killed node moves to a surviving one, and resumes there or
logs in again.

The client's own `h` (what it tells the server it received) counts every stanza read after
<enabled/>, and continues after <resumed/>; it answers every <r/> at once, so the server re-sends
on resumption exactly what this client never read.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import re
import signal
import ssl
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol, TypeVar

import trio
from lxml import etree

from imactor.node.status import StatusUnavailable, request_status
from tests.support.raw import RawClient
from tests.support.timeouts import START_TIMEOUT

SM = "urn:xmpp:sm:3"
C = "{jabber:client}"
NS_MAM = "urn:xmpp:mam:2"
NS_RSM = "http://jabber.org/protocol/rsm"
NS_SID = "urn:xmpp:sid:0"
NS_DELAY = "urn:xmpp:delay"
NS_FORWARD = "urn:xmpp:forward:0"
SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
BIND = "urn:ietf:params:xml:ns:xmpp-bind"

#: Seconds one connection attempt (TCP, TLS, SASL, resume or bind, enable) may take.
CONNECT_TIMEOUT = 10.0
#: Failed connection attempts in a row before a client gives up (and fails the test).
MAX_ATTEMPTS = 60
#: Pause between two connection attempts: nothing to wait for but the listener coming back.
RETRY_DELAY = 0.1
#: Seconds an IQ (an archive page) may take.
IQ_TIMEOUT = 15.0
#: Seconds between two polls of the status socket.
STATUS_POLL = 0.1
#: Connections tried before one lands on the wanted worker (the kernel picks the accepting one).
MAX_LANDINGS = 40

Element = etree._Element
T = TypeVar("T")
_CONNECTION_ERRORS = (EOFError, OSError, ssl.SSLError, trio.BrokenResourceError, trio.ClosedResourceError)
_ids = itertools.count()
BODY = re.compile(r"^pair-(\d+) #(\d+)$")


def sm(name: str) -> str:
    return f"{{{SM}}}{name}"


def chat_body(pair: int, n: int) -> str:
    return f"pair-{pair} #{n}"


def parse_body(text: str | None) -> tuple[int, int] | None:
    """(pair, n) of a chaos message body, None for any other text."""
    match = BODY.match(text or "")
    return (int(match.group(1)), int(match.group(2))) if match else None


@dataclass(frozen=True, slots=True)
class Receipt:
    """One copy of a chaos message that reached its recipient."""

    pair: int
    n: int
    how: str  #: "live", "delayed" (offline storage or re-sent on resumption) or "archive"
    origin_id: str | None
    stanza_id: str | None


@dataclass(frozen=True, slots=True)
class Connection:
    """One successful (re)connection of a client."""

    at: float  #: trio.current_time() when it became usable
    how: str  #: "login" (first), "resumed", or "relogin" (resumption failed or not possible)
    attempts: int  #: failed attempts just before it


@dataclass
class Books:
    """What a client counted; the test reads these after the run."""

    sent: dict[int, str] = field(default_factory=dict)  #: n → message id, once handed to a stream
    acked: set[int] = field(default_factory=set)  #: n covered by an `h` from the server
    resent: int = 0  #: messages sent again on a new session (their ack was lost)
    #: n → how many times it went out on a stream (more than once: re-sent after a resumption
    #: or on a new session, so the server may rightly have it twice)
    copies: Counter[int] = field(default_factory=Counter)
    receipts: list[Receipt] = field(default_factory=list)
    connections: list[Connection] = field(default_factory=list)
    drops: list[float] = field(default_factory=list)  #: when a usable connection ended
    failed_attempts: int = 0
    failures: dict[str, int] = field(default_factory=dict)  #: why attempts failed → how often
    over_acks: list[tuple[int, int]] = field(default_factory=list)  #: (h, stanzas sent): a server bug
    stream_errors: list[str] = field(default_factory=list)


class ClientGaveUp(Exception):
    """`MAX_ATTEMPTS` connection attempts failed in a row."""


class SmClient:
    """One account, reconnecting, with XEP-0198 (see the module doc).

    Args:
        username: The account (of `domain`).
        password: Its password.
        port: The STARTTLS client port.
        available: Send initial presence on each new session (and so get offline messages).
        failover: The c2s ports of every node of a cluster, read anew at each attempt (a restarted
            node listens on a new port): a failed attempt moves on to the next one.
    """

    def __init__(self, username: str, password: str, port: int, *, domain: str = "localhost",
                 resource: str = "chaos", available: bool = True,
                 failover: Callable[[], Sequence[int]] | None = None) -> None:  # fmt: skip
        self.username = username
        self.password = password
        self.port = port
        self.failover = failover
        self.domain = domain
        self.resource = resource
        self.available = available
        self.bare = f"{username}@{domain}"
        self.books = Books()
        self.sm_id: str | None = None
        self.ready = False
        self._ready_event = trio.Event()
        self._acked_event = trio.Event()
        self._conn: RawClient | None = None
        self._send_lock = trio.Lock()
        self._h_in = 0  # stanzas received in the current SM session (our `h`)
        self._counting = False
        self._out = 0  # stanzas sent in the current SM session
        self._unacked: deque[tuple[int, bytes, int | None]] = deque()  # (seq, bytes, n)
        self._iqs: dict[str, trio.MemorySendChannel[Element]] = {}
        self._mam: dict[str, list[Element]] = {}
        self._closing = False
        self._cancel = trio.CancelScope()
        self._done = trio.Event()
        self.on_stanza: Callable[[Element], None] | None = None  #: sees every stanza received

    # ---- life cycle --------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, read, reconnect, until `aclose`; `started` after the first connection."""
        with self._cancel:
            try:
                await self._run(task_status)
            finally:
                self._done.set()

    async def _run(self, task_status: trio.TaskStatus[None]) -> None:
        started = False
        attempts = 0
        while not self._closing:
            try:
                with trio.fail_after(CONNECT_TIMEOUT):
                    conn, how = await self._connect()
            except (*_CONNECTION_ERRORS, trio.TooSlowError, PermissionError, _Refused) as exc:
                attempts += 1
                self.books.failed_attempts += 1
                reason = f"{type(exc).__name__}: {exc}"[:200]
                self.books.failures[reason] = self.books.failures.get(reason, 0) + 1
                if attempts >= MAX_ATTEMPTS:
                    raise ClientGaveUp(
                        f"{self.bare}: {attempts} connection attempts failed; last: {reason}"
                    ) from None
                self._next_port()
                await trio.sleep(RETRY_DELAY)
                continue
            self.books.connections.append(Connection(trio.current_time(), how, attempts))
            attempts = 0
            self._conn = conn
            self.ready = True
            self._ready_event.set()
            if not started:
                started = True
                task_status.started()
            with contextlib.suppress(*_CONNECTION_ERRORS):
                await self._read_forever(conn)
            self.ready = False
            self._ready_event = trio.Event()
            self._conn = None
            if not self._closing:
                self.books.drops.append(trio.current_time())
            await conn.aclose()

    def _next_port(self) -> None:
        """After a failed attempt: the next node's port, if there are several (module doc)."""
        if self.failover is None:
            return
        ports = list(self.failover())
        if ports:
            after = ports.index(self.port) + 1 if self.port in ports else 0
            self.port = ports[after % len(ports)]

    async def wait_ready(self) -> None:
        while not self.ready:
            await self._ready_event.wait()

    async def aclose(self) -> None:
        """Close the stream cleanly (the reader sees the server's </stream:stream>) and stop `run`;
        after 2 s, whatever the state, `run` is cancelled."""
        self._closing = True
        conn = self._conn
        if conn is not None and self.ready:
            with trio.move_on_after(2), contextlib.suppress(*_CONNECTION_ERRORS):
                async with self._send_lock:
                    await conn.send("</stream:stream>")
                await self._done.wait()
        self._cancel.cancel()

    async def drop(self) -> None:
        """Break the TCP connection without a word (a lost network), to test resumption."""
        conn = self._conn
        if conn is None:
            return
        stream = conn.stream
        tcp = stream.transport_stream if isinstance(stream, trio.SSLStream) else stream
        if isinstance(tcp, trio.SocketStream):
            tcp.socket.close()

    # ---- connecting --------------------------------------------------------------------------

    async def _authenticated(self) -> RawClient:
        conn = await RawClient.connect(self.port, self.domain)
        await conn.starttls()
        token = base64.b64encode(f"\0{self.username}\0{self.password}".encode()).decode()
        await conn.send(f"<auth xmlns='{SASL}' mechanism='PLAIN'>{token}</auth>")
        result = await conn.next_element()
        if result.tag != f"{{{SASL}}}success":
            raise PermissionError(etree.tostring(result).decode())
        await conn.open_stream()
        return conn

    async def _connect(self) -> tuple[RawClient, str]:
        self._counting = False  # nothing counts until <resumed/> or <enabled/>
        conn = await self._authenticated()
        try:
            if self.sm_id is not None:
                await conn.send(f"<resume xmlns='{SM}' previd='{self.sm_id}' h='{self._h_in}'/>")
                answer = await self._next_nonza(conn, ("resumed", "failed"))
                h = _h(answer)
                if answer.tag == sm("resumed"):
                    assert h is not None, etree.tostring(answer)
                    await self._resumed(conn, h)
                    return conn, "resumed"
                if h is not None:
                    self._acknowledge(h)  # §5: what the old session handled
                self.sm_id = None
            first = not self.books.connections
            await self._new_session(conn)
            return conn, "login" if first else "relogin"
        except BaseException:
            await conn.aclose()
            raise

    async def _new_session(self, conn: RawClient) -> None:
        iq_id = f"bind{next(_ids)}"
        await conn.send(f"<iq type='set' id='{iq_id}'><bind xmlns='{BIND}'>"
                        f"<resource>{self.resource}</resource></bind></iq>")  # fmt: skip
        bound = await conn.next_element()
        if bound.get("id") != iq_id or bound.get("type") != "result":
            raise _Refused(etree.tostring(bound).decode())
        await conn.send(f"<enable xmlns='{SM}' resume='true'/>")
        enabled = await self._next_nonza(conn, ("enabled", "failed"))
        if enabled.tag != sm("enabled") or not enabled.get("id"):
            raise _Refused(etree.tostring(enabled).decode())
        self.sm_id = enabled.get("id")
        self._h_in = 0
        self._counting = True
        # A new session numbers our stanzas from 1: send again what no `h` covered.
        pending = [(data, n) for _, data, n in self._unacked if n is not None]
        self._unacked.clear()
        self._out = 0
        if self.available:
            await self._send_counted(conn, b"<presence/>", None)
        for data, n in pending:
            self.books.resent += 1
            await self._send_counted(conn, data, n)
        await conn.send(f"<r xmlns='{SM}'/>")

    async def _resumed(self, conn: RawClient, h: int) -> None:
        """§5: the server handled `h` of our stanzas; send the rest again, numbered after it."""
        self._acknowledge(h)
        self._counting = True
        pending = list(self._unacked)
        self._unacked.clear()
        self._out = h
        for _, data, n in pending:
            await self._send_counted(conn, data, n)
        await conn.send(f"<r xmlns='{SM}'/>")

    async def _next_nonza(self, conn: RawClient, names: Sequence[str]) -> Element:
        """The next SM element named one of `names`; stanzas before it are handled as usual."""
        wanted = {sm(name) for name in names}
        while True:
            element = await conn.next_element()
            if element.tag in wanted:
                return element
            await self._dispatch(conn, element)

    # ---- sending -----------------------------------------------------------------------------

    async def _send_counted(self, conn: RawClient, data: bytes, n: int | None) -> None:
        """Number a stanza in this SM session, then write it (a failed write leaves it unacked)."""
        self._out += 1
        self._unacked.append((self._out, data, n))
        if n is not None:
            self.books.copies[n] += 1
        await conn.send(data)

    async def send_chat(self, to: str, pair: int, n: int) -> None:
        """Send chaos message `n` of `pair` to `to` with an <r/>, waiting for a usable connection.

        Once this returns, the message is on the books: it will be sent again on a new session
        until an `h` covers it.
        """
        ident = message_id(pair, n)
        data = (f"<message to='{to}' id='{ident}' type='chat'><body>{chat_body(pair, n)}</body>"
                f"<origin-id xmlns='{NS_SID}' id='{ident}'/></message>").encode()  # fmt: skip
        while True:
            await self.wait_ready()
            async with self._send_lock:
                conn = self._conn
                if conn is None or not self.ready:
                    continue
                self.books.sent[n] = ident
                with contextlib.suppress(*_CONNECTION_ERRORS):
                    await self._send_counted(conn, data, n)
                    await conn.send(f"<r xmlns='{SM}'/>")
                return

    async def request_ack(self) -> None:
        """Send an <r/> if connected (the answer arrives through the reader)."""
        conn = self._conn
        if conn is None or not self.ready:
            return
        async with self._send_lock:
            with contextlib.suppress(*_CONNECTION_ERRORS):
                await conn.send(f"<r xmlns='{SM}'/>")

    @property
    def unacked(self) -> list[int]:
        """Numbers of the sent messages that no `h` has covered yet."""
        return sorted(set(self.books.sent) - self.books.acked)

    async def wait_all_acked(self, timeout: float) -> bool:
        """Request acks until every sent message is acked; False if `timeout` passes first."""
        with trio.move_on_after(timeout):
            while self.unacked:
                event = self._acked_event
                await self.request_ack()
                with trio.move_on_after(1.0):  # an <r/> lost with a connection is asked again
                    await event.wait()
            return True
        return False

    async def wait_acked(self, count: int) -> None:
        """Wait until at least `count` of our messages are acked (the caller bounds the wait)."""
        while len(self.books.acked) < count:
            await self._acked_event.wait()

    def _acknowledge(self, h: int) -> None:
        if h > self._out:
            self.books.over_acks.append((h, self._out))
        while self._unacked and self._unacked[0][0] <= h:
            _, _, n = self._unacked.popleft()
            if n is not None:
                self.books.acked.add(n)
        self._acked_event.set()
        self._acked_event = trio.Event()

    # ---- receiving ---------------------------------------------------------------------------

    async def _read_forever(self, conn: RawClient) -> None:
        while True:
            element = await conn.next_element()
            if element.tag == sm("a"):
                h = _h(element)
                if h is not None:
                    self._acknowledge(h)
            elif element.tag == sm("r"):
                async with self._send_lock:
                    await conn.send(f"<a xmlns='{SM}' h='{self._h_in}'/>")
            elif element.tag == "{http://etherx.jabber.org/streams}error":
                self.books.stream_errors.append(
                    next((etree.QName(child).localname for child in element), "?")
                )
            else:
                await self._dispatch(conn, element)

    async def _dispatch(self, conn: RawClient, element: Element) -> None:
        """A stanza (or a stray element) received on `conn`."""
        if etree.QName(element).namespace != "jabber:client":
            return
        if self._counting:
            self._h_in += 1
        if self.on_stanza is not None:
            self.on_stanza(element)
        if element.tag == f"{C}message":
            self._on_message(element)
        elif element.tag == f"{C}iq":
            iq_type = element.get("type")
            if iq_type in ("result", "error"):
                channel = self._iqs.pop(element.get("id", ""), None)
                if channel is not None:
                    channel.send_nowait(element)
            elif iq_type in ("get", "set"):
                reply = "result" if element.find("{urn:xmpp:ping}ping") is not None else "error"
                body = "" if reply == "result" else (
                    "<error type='cancel'><service-unavailable "
                    "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>"
                )  # fmt: skip
                data = (f"<iq type='{reply}' id='{element.get('id', '')}'"
                        f" to='{element.get('from', self.domain)}'>{body}</iq>").encode()  # fmt: skip
                # A reply is a stanza like any other: the server counts it in its `h` (XEP-0198
                # §4), so it is numbered here too, or a pinged client reads an `h` beyond its count.
                async with self._send_lock:
                    await self._send_counted(conn, data, None)

    def _on_message(self, element: Element) -> None:
        result = element.find(f"{{{NS_MAM}}}result")
        if result is not None:
            self._mam.setdefault(result.get("queryid", ""), []).append(element)
            return
        parsed = parse_body(element.findtext(f"{C}body"))
        if parsed is None:
            return
        delayed = element.find(f"{{{NS_DELAY}}}delay") is not None
        self.books.receipts.append(_receipt(element, parsed, "delayed" if delayed else "live", self.bare))

    # ---- IQs and the archive -----------------------------------------------------------------

    async def iq(self, payload: str, type_: str = "get", to: str | None = None) -> Element:
        """An IQ on the current connection; its answer (result or error).

        Raises:
            AssertionError: No answer within `IQ_TIMEOUT` (with the client's state, to diagnose).
        """
        await self.wait_ready()
        conn = self._conn
        assert conn is not None
        iq_id = f"iq{next(_ids)}"
        send, receive = trio.open_memory_channel[Element](1)
        self._iqs[iq_id] = send
        to_attr = "" if to is None else f" to='{to}'"
        data = f"<iq type='{type_}' id='{iq_id}'{to_attr}>{payload}</iq>"
        try:
            with trio.move_on_after(IQ_TIMEOUT):
                async with self._send_lock:
                    await self._send_counted(conn, data.encode(), None)
                return await receive.receive()
        finally:
            self._iqs.pop(iq_id, None)
        books = self.books
        raise AssertionError(
            f"{self.bare}: no answer to {data[:300]} within {IQ_TIMEOUT} s; same connection: "
            f"{conn is self._conn}, ready {self.ready}, connections {[c.how for c in books.connections]}, "
            f"drops {len(books.drops)}, stream errors {books.stream_errors}"
        )

    async def archive(self, with_jid: str, page_size: int = 100, max_pages: int = 1000) -> list[Receipt]:
        """Every chaos message in our archive exchanged with `with_jid` (XEP-0313, RSM pages)."""
        receipts: list[Receipt] = []
        after = ""
        for _ in range(max_pages):
            query_id = f"q{next(_ids)}"
            rsm = f"<max>{page_size}</max>" + (f"<after>{after}</after>" if after else "")
            form = (f"<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>"
                    f"<value>{NS_MAM}</value></field>"
                    f"<field var='with'><value>{with_jid}</value></field></x>")  # fmt: skip
            reply = await self.iq(f"<query xmlns='{NS_MAM}' queryid='{query_id}'>{form}"
                                  f"<set xmlns='{NS_RSM}'>{rsm}</set></query>", "set")  # fmt: skip
            if reply.get("type") != "result":
                raise AssertionError(f"archive query failed: {etree.tostring(reply).decode()}")
            for result in self._mam.pop(query_id, []):
                inner = result.find(f"{{{NS_MAM}}}result/{{{NS_FORWARD}}}forwarded/{C}message")
                assert inner is not None, etree.tostring(result)
                parsed = parse_body(inner.findtext(f"{C}body"))
                if parsed is not None:
                    archive_id = result.find(f"{{{NS_MAM}}}result")
                    sid = None if archive_id is None else archive_id.get("id")
                    origin = inner.find(f"{{{NS_SID}}}origin-id")
                    receipts.append(Receipt(parsed[0], parsed[1], "archive",
                                            None if origin is None else origin.get("id"), sid))  # fmt: skip
            fin = reply.find(f"{{{NS_MAM}}}fin")
            assert fin is not None, etree.tostring(reply)
            last = fin.findtext(f"{{{NS_RSM}}}set/{{{NS_RSM}}}last")
            if fin.get("complete") == "true" or not last:
                return receipts
            after = last
        raise AssertionError(f"archive of {self.bare} longer than {max_pages} pages")


class _Refused(Exception):
    """The server refused a bind or an enable: try again on a new connection."""


def _h(element: Element) -> int | None:
    value = element.get("h")
    return int(value) if value is not None and value.isdigit() else None


def _receipt(element: Element, parsed: tuple[int, int], how: str, by: str) -> Receipt:
    origin = element.find(f"{{{NS_SID}}}origin-id")
    stanza_id = next((sid.get("id") for sid in element.findall(f"{{{NS_SID}}}stanza-id")
                      if sid.get("by") == by), None)  # fmt: skip
    return Receipt(parsed[0], parsed[1], how, None if origin is None else origin.get("id"), stanza_id)


# ---- a chaos run: traffic and its books -------------------------------------------------------


#: Server log lines worth counting in the summary: each explains a failure of the promise.
LOG_SIGNS = {
    "acked_without_durable_write": "not durably handled",
    "frames_dropped": "dropped a",
    "tracebacks": "Traceback",
}
#: Seconds for traffic to show progress (acks) after a start or a recovery.
PROGRESS_TIMEOUT = 60


async def send_steadily(sender: SmClient, to: str, pair: int, rate: float, stop: trio.Event) -> None:
    """Numbered messages 1, 2, … at `rate` per second until `stop`; a reconnection pauses the
    clock (no burst afterwards)."""
    interval = 1 / rate
    next_at = trio.current_time()
    n = 0
    while not stop.is_set():
        n += 1
        await sender.send_chat(to, pair, n)
        next_at = max(next_at + interval, trio.current_time())
        with trio.move_on_at(next_at):
            await stop.wait()


async def wait_progress(senders: list[SmClient], targets: list[int]) -> None:
    """Wait until each sender has `targets[i]` messages acked; fail after `PROGRESS_TIMEOUT` with
    the state of those that lag."""
    with trio.move_on_after(PROGRESS_TIMEOUT):
        for sender, target in zip(senders, targets, strict=True):
            await sender.wait_acked(target)
        return
    lagging = [f"{s.username}: acked {len(s.books.acked)}/{target}, sent {len(s.books.sent)}, "
               f"ready {s.ready}, connections {[c.how for c in s.books.connections]}, "
               f"drops {len(s.books.drops)}, failed attempts {s.books.failed_attempts}"
               for s, target in zip(senders, targets, strict=True)
               if len(s.books.acked) < target]  # fmt: skip
    raise AssertionError(f"no progress within {PROGRESS_TIMEOUT} s: {lagging}")


def message_id(pair: int, n: int) -> str:
    """The id and origin-id (XEP-0359) of chaos message `n` of `pair`."""
    return f"p{pair}n{n}"


def pair_report(pair: int, sender: SmClient, receiver: SmClient, archive: list[Receipt]) -> dict[str, Any]:
    """What became of one sender's messages to one receiver: sent, acked, received (live, delayed,
    archived), what is missing, and the duplicates.

    A message the client put on a stream once (`Books.copies`) is one message to the server: all
    its copies, delivered or archived, must carry one stanza-id (XEP-0359 §3: the server's id of
    the one message it stored). One the client sent again, after a resumption failed or on a
    resumption, may rightly have been stored twice (XEP-0198 §4: the client cannot know whether
    the server had it), so its copies may carry two stanza-ids; they are counted, not faulted.
    """
    acked = sender.books.acked
    sent = set(sender.books.sent)
    delivered = [r for r in receiver.books.receipts if r.pair == pair]
    live = Counter(r.n for r in delivered if r.how == "live")
    delayed = Counter(r.n for r in delivered if r.how == "delayed")
    archived = Counter(r.n for r in archive if r.pair == pair)
    received = set(live) | set(delayed) | set(archived)
    by_n: dict[int, set[str | None]] = {}
    for receipt in delivered:
        by_n.setdefault(receipt.n, set()).add(receipt.stanza_id)
    stored_as: dict[int, set[str | None]] = {n: set(ids) for n, ids in by_n.items()}
    for receipt in archive:
        if receipt.pair == pair:
            stored_as.setdefault(receipt.n, set()).add(receipt.stanza_id)
    copies = sender.books.copies
    return {
        "pair": pair,
        "sender": sender.username,
        "receiver": receiver.username,
        "sent": len(sent),
        "acked": len(acked),
        "unacked_at_end": sorted(sent - acked),
        "resent_after_failed_resumption": sender.books.resent,
        "sent_more_than_once": sum(1 for n in sent if copies[n] > 1),
        "received_live": len(live),
        "received_delayed": len(delayed),
        "archived": len(archived),
        "only_in_archive": len(acked - set(live) - set(delayed)),
        "missing": sorted(acked - received),
        "never_sent_but_received": sorted(received - sent),
        "foreign": sorted({(r.pair, r.n) for r in receiver.books.receipts if r.pair != pair}),
        "origin_id_changed": sorted(
            {r.n for r in [*delivered, *archive] if r.pair == pair and r.origin_id != message_id(pair, r.n)}
        ),
        "duplicates_delivered": sum((live + delayed).values()) - len(set(live) | set(delayed)),
        "duplicates_delivered_with_another_stanza_id": sum(1 for ids in by_n.values() if len(ids) > 1),
        "duplicates_archived": sum(archived.values()) - len(archived),
        "sent_once_stored_twice": sorted(
            n for n, ids in stored_as.items() if len(ids) > 1 and copies[n] == 1
        ),
        "over_acks": sender.books.over_acks,
    }


def client_report(client: SmClient) -> dict[str, Any]:
    books = client.books
    return {"account": client.username, "connections": Counter(c.how for c in books.connections),
            "failed_attempts": books.failed_attempts, "failures": books.failures,
            "stream_errors": books.stream_errors}  # fmt: skip


#: The summary's totals: sums over the pairs of these `pair_report` keys.
TOTALS = ("sent", "acked", "received_live", "received_delayed", "archived", "only_in_archive",
          "duplicates_delivered", "duplicates_delivered_with_another_stanza_id", "duplicates_archived",
          "resent_after_failed_resumption", "sent_more_than_once")  # fmt: skip


def totals(pairs: Sequence[dict[str, Any]]) -> dict[str, int]:
    return {key: sum(p[key] for p in pairs) for key in TOTALS}


def log_signs(logs: Sequence[Path]) -> dict[str, int]:
    """How often each of `LOG_SIGNS` occurs in the server logs `logs`."""
    text = "".join(path.read_text(errors="replace") for path in logs if path.exists())
    return {name: text.count(sign) for name, sign in LOG_SIGNS.items()}


def write_summary(summary: dict[str, Any], directory: Path, headline: Sequence[str]) -> None:
    """`chaos-summary.json` in `directory`, and its `headline` keys printed (pytest -s shows them)."""
    (directory / "chaos-summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({key: summary[key] for key in headline}, indent=2))
    print(f"summary: {directory / 'chaos-summary.json'}  (seed {summary['plan']['seed']})")


def check_books(
    pairs: Sequence[dict[str, Any]], drained: Sequence[bool], *, stored_once: bool = True
) -> None:
    """The promise, from the pairs' reports: nothing acknowledged is lost, nothing is made up,
    a message sent once is stored once (unless `stored_once` is False), and once the killing
    stops everything gets acked."""
    missing = {p["pair"]: p["missing"] for p in pairs if p["missing"]}
    assert not missing, f"acknowledged but never received (pair: numbers): {missing}"
    assert all(not p["over_acks"] for p in pairs), "the server acked more than was sent"
    assert all(not p["never_sent_but_received"] and not p["foreign"] for p in pairs)
    changed = {p["pair"]: p["origin_id_changed"] for p in pairs if p["origin_id_changed"]}
    assert not changed, f"copies whose origin-id is not the sender's (pair: numbers): {changed}"
    twice = {p["pair"]: p["sent_once_stored_twice"] for p in pairs if p["sent_once_stored_twice"]}
    assert not stored_once or not twice, f"sent once, yet copies with two stanza-ids (pair: numbers): {twice}"
    assert all(drained), [p["unacked_at_end"] for p in pairs]


# ---- the status socket and the workers ----------------------------------------------------------


async def node_status(path: Path, timeout: float = 5.0) -> dict[str, Any]:
    """The node's status document (`imactor status --json`), read in a thread."""
    return await trio.to_thread.run_sync(request_status, path, timeout)


async def wait_mesh_views(path: Path, *, live: list[int], seen_by: Sequence[int] | None = None) -> None:
    """Poll the status socket until the mesh of each worker in `seen_by` sees exactly `live` as the
    live workers. Without `seen_by`: the node lists exactly as many workers as `live`, and every
    one of them sees it."""
    while True:
        with contextlib.suppress(StatusUnavailable):
            workers = (await node_status(path))["workers"]
            if seen_by is None:
                watched = workers if len(workers) == len(live) else []
            else:
                watched = [w for w in workers if w["index"] in seen_by]
            if watched and all(w.get("mesh", {}).get("live_workers") == live for w in watched):
                return
        await trio.sleep(0.05)


def running_workers(document: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """Worker index → entry, for the workers that run and answered the supervisor."""
    return {
        w["index"]: w for w in document.get("workers", []) if w.get("state") == "running" and w.get("pid")
    }


async def wait_for_workers(path: Path, count: int, *, not_pids: Sequence[int] = (),
                           timeout: float = START_TIMEOUT) -> dict[int, dict[str, Any]]:  # fmt: skip
    """Poll the status socket until `count` workers run, none of them with a pid in `not_pids`."""
    with trio.fail_after(timeout):
        while True:
            with contextlib.suppress(StatusUnavailable):
                workers = running_workers(await node_status(path))
                if len(workers) >= count and not {w["pid"] for w in workers.values()} & set(not_pids):
                    return workers
            await trio.sleep(STATUS_POLL)


@dataclass
class Kill:
    """One SIGKILL of a worker and how long the node and the clients took to recover."""

    index: int
    pid: int
    sessions: int  #: sessions the status showed on it just before
    at: float  #: trio.current_time() of the kill
    new_pid: int = 0
    replaced_after: float = 0.0  #: seconds until the status showed a new worker running
    clients_back_after: float | None = None  #: seconds until every client was connected again
    clients_dropped: int = 0

    def summary(self) -> dict[str, Any]:
        return {"index": self.index, "pid": self.pid, "new_pid": self.new_pid, "sessions": self.sessions,
                "replaced_after_s": round(self.replaced_after, 3), "clients_dropped": self.clients_dropped,
                "clients_back_after_s": None if self.clients_back_after is None
                else round(self.clients_back_after, 3)}  # fmt: skip


async def kill_worker(
    path: Path, workers: int, *, index: int | None = None, timeout: float = START_TIMEOUT
) -> Kill:
    """SIGKILL a worker (by default the one with most sessions) and wait until the status shows
    a new process running in its place."""
    running = await wait_for_workers(path, workers, timeout=timeout)
    if index is None:
        index = max(running, key=lambda i: (running[i]["sessions"]["count"], -i))
    entry = running[index]
    kill = Kill(index, int(entry["pid"]), int(entry["sessions"]["count"]), trio.current_time())
    os.kill(kill.pid, signal.SIGKILL)
    replaced = await wait_for_workers(path, workers, not_pids=[kill.pid], timeout=timeout)
    kill.new_pid = int(replaced[index]["pid"])
    kill.replaced_after = trio.current_time() - kill.at
    return kill


class Outage(Protocol):
    """A kill (of a worker, of a node) as `wait_clients_back` records the clients' return."""

    at: float  #: trio.current_time() of the kill
    clients_dropped: int
    clients_back_after: float | None


async def wait_clients_back(
    clients: Sequence[SmClient], kill: Outage, timeout: float = START_TIMEOUT
) -> None:
    """Wait until every client is connected; record in `kill` when the last one that dropped
    after it came back."""
    with trio.fail_after(timeout):
        for client in clients:
            await client.wait_ready()
    back = 0.0
    for client in clients:
        if any(t >= kill.at for t in client.books.drops):
            kill.clients_dropped += 1
            back = max([back, *(c.at - kill.at for c in client.books.connections if c.at >= kill.at)])
    kill.clients_back_after = back


async def session_counts(path: Path) -> dict[int, int]:
    """Open sessions per worker index, as the status socket reports them."""
    return {w["index"]: int(w["sessions"]["count"]) for w in (await node_status(path))["workers"]}


async def wait_session_counts(path: Path, done: Callable[[dict[int, int]], bool]) -> dict[int, int]:
    """Poll the per-worker session counts until `done` holds (the caller bounds the wait)."""
    while True:
        counts = await session_counts(path)
        if done(counts):
            return counts
        await trio.sleep(STATUS_POLL)


def _more_than(total: int, counts: dict[int, int]) -> bool:
    return sum(counts.values()) > total


async def land_on(path: Path, index: int, open_: Callable[[], Awaitable[T]],
                  close: Callable[[T], Awaitable[None]]) -> T:  # fmt: skip
    """A client (made by `open_`, logged in) whose session the worker `index` holds.

    Which worker accepts a connection is the kernel's choice: this opens one, sees on the status
    socket which worker's session count grew, and if it is another closes it (and waits until the
    count is back) and tries again. Nothing else may open or close sessions meanwhile.
    """
    for _ in range(MAX_LANDINGS):
        before = await session_counts(path)
        client = await open_()
        after = await wait_session_counts(path, partial(_more_than, sum(before.values())))
        grown = [i for i, count in after.items() if count > before.get(i, 0)]
        if grown == [index]:
            return client
        await close(client)
        await wait_session_counts(path, before.__eq__)
    raise AssertionError(f"{MAX_LANDINGS} connections, none on worker {index}")
