"""XEP-0198 Stream Management (urn:xmpp:sm:3), sans-IO: counters, the unacked queue, nonzas.

`StreamManagement` is the state of one managed session, which outlives a connection when the
session is resumed. It reads no clock and draws no random numbers: the shell passes the
resumption id. It never writes: `handle` returns what to send (`Reply`) or raises `SmStreamError`
for a violation that ends the stream.

Counters are modulo 2^32 (§4): `h_in` counts the stanzas the client sent that the server handled,
`sent` the stanzas the server sent; `acked` is the last `h` the client acknowledged, and
`unacked` holds the bytes of stanzas `acked+1 … sent`, oldest first.

A stanza may be handled after later ones (a message counts once its recipient's durable writes are
done): `stanza_received` numbers each stanza in arrival order and `stanza_handled` marks one done;
`h_in` covers only the contiguous prefix of handled stanzas, so it never counts a stanza ahead of
an earlier one still pending.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from lxml import etree

from imactor.xmpp.namespaces import NS_SM, NS_STANZA_ERRORS, qname
from imactor.xmpp.stanza import default_ns

MOD = 2**32
#: What `stanza_received` returns while SM is not enabled: a stanza that is never counted.
NOT_COUNTED = -1
ENABLE = qname(NS_SM, "enable")
RESUME = qname(NS_SM, "resume")
R = qname(NS_SM, "r")
A = qname(NS_SM, "a")
#: Every nonza the server accepts from a client.
NONZAS = frozenset({ENABLE, RESUME, R, A})
#: The <sm/> stream feature, offered once authenticated.
FEATURE = b"<sm xmlns='urn:xmpp:sm:3'/>"
#: `StreamManagement.unacked` before the first stanza is counted: holds nothing, ever (maxlen 0).
_NOT_ENABLED: deque[bytes] = deque(maxlen=0)


class SmStreamError(Exception):
    """A violation that ends the stream: `condition` is a stream error, `app` its §4 child."""

    def __init__(self, condition: str, text: str = "", app: bytes | None = None) -> None:
        super().__init__(condition, text)
        self.condition = condition
        self.text = text
        self.app = app


@dataclass(frozen=True, slots=True)
class Reply:
    """Nonza bytes to write; `enabled`: SM was just enabled (the shell registers a resumable id)."""

    data: bytes
    enabled: bool = False


def failed(condition: str = "unexpected-request", h: int | None = None) -> bytes:
    """<failed/> with a stanza error condition (§3, §5); `h` when the old session's count is known."""
    element = etree.Element(qname(NS_SM, "failed"), nsmap=default_ns(NS_SM))
    if h is not None:
        element.set("h", str(h))
    etree.SubElement(element, qname(NS_STANZA_ERRORS, condition), nsmap=default_ns(NS_STANZA_ERRORS))
    return etree.tostring(element)


def ack(h: int) -> bytes:
    return f"<a xmlns='{NS_SM}' h='{h}'/>".encode()


REQUEST = f"<r xmlns='{NS_SM}'/>".encode()


def parse_h(element: etree._Element) -> int | None:
    """The `h` attribute as an unsigned 32-bit integer, or None if missing or malformed."""
    text = element.get("h", "")
    # xs:unsignedInt: ASCII digits. str.isdigit() alone takes "²" (which int() refuses) and "١".
    if not (text.isascii() and text.isdigit()) or len(text) > 10:
        return None
    value = int(text)
    return value if value < MOD else None


class StreamManagement:
    """One managed session. Create it unbound; `handle` each SM nonza the stream hands over."""

    # One per session: slots keep the idle ones small.
    __slots__ = (
        "_first_pending", "_handled_ahead", "_next_seq", "ack_every", "acked", "enabled", "h_in", "id",
        "max", "resumable", "sent", "unacked", "unrequested",
    )  # fmt: skip

    def __init__(self, *, ack_every: int = 5) -> None:
        self.ack_every = ack_every
        self.enabled = False
        self.resumable = False
        self.id: str | None = None
        self.max = 0
        self.h_in = 0
        self._next_seq = 0  #: the number the next received stanza gets
        self._first_pending = 0  #: the oldest stanza not yet counted into `h_in`
        #: Handled, but after a pending one; None while there are none (as in most sessions).
        self._handled_ahead: set[int] | None = None
        self.sent = 0
        self.acked = 0
        #: Shared and always empty until SM is enabled: most sessions never enable it, and an
        #: empty deque of their own would cost each of them 600 bytes.
        self.unacked: deque[bytes] = _NOT_ENABLED
        #: Stanzas sent since the last <r/> (the shell asks for an ack when it reaches `ack_every`).
        self.unrequested = 0

    # ---- nonzas from the client ---------------------------------------------------------------

    def handle(
        self,
        element: etree._Element,
        *,
        bound: bool,
        new_id: Callable[[], str],
        max_resume: int,
    ) -> Reply | None:
        """Act on <enable/>, <r/> or <a/>; raise `SmStreamError` on a stream-ending violation.

        <resume/> needs the shell (it looks the old session up): here it only fails when bound.
        """
        tag = element.tag
        if tag == ENABLE:
            return self._enable(element, bound=bound, new_id=new_id, max_resume=max_resume)
        if tag == RESUME:
            return Reply(failed("unexpected-request"))  # §5: only before binding
        if not self.enabled:
            return Reply(failed("unexpected-request"))
        if tag == R:
            return Reply(ack(self.h_in))
        if tag == A:
            h = parse_h(element)
            if h is None:
                raise SmStreamError("invalid-xml", "<a/> needs an unsigned 32-bit 'h'")
            self.acknowledge(h)
            return None
        raise SmStreamError("unsupported-stanza-type", f"unexpected element {tag}")

    def _enable(
        self, element: etree._Element, *, bound: bool, new_id: Callable[[], str], max_resume: int
    ) -> Reply:
        if not bound or self.enabled:
            # §3: only after binding, and only once.
            return Reply(failed("unexpected-request"))
        self.enabled = True
        enabled = etree.Element(qname(NS_SM, "enabled"), nsmap=default_ns(NS_SM))
        if element.get("resume") in ("true", "1") and max_resume > 0:
            self.resumable = True
            self.id = new_id()
            wanted = element.get("max", "")
            # 'max' is an xs:unsignedInt (ASCII digits); anything else leaves the server's maximum.
            number = wanted.isascii() and wanted.isdigit() and int(wanted) > 0
            self.max = min(max_resume, int(wanted)) if number else max_resume
            enabled.set("id", self.id)
            enabled.set("resume", "true")
            enabled.set("max", str(self.max))
        return Reply(etree.tostring(enabled), enabled=True)

    # ---- counting ------------------------------------------------------------------------------

    def received(self, count: int = 1) -> None:
        """The server received and at once handled `count` more stanzas from the client."""
        for _ in range(count):
            self.stanza_handled(self.stanza_received())

    def stanza_received(self) -> int:
        """A stanza arrived: its sequence number, for `stanza_handled` (`NOT_COUNTED` unless enabled)."""
        if not self.enabled:
            return NOT_COUNTED
        seq = self._next_seq
        self._next_seq += 1
        return seq

    def stanza_handled(self, seq: int) -> None:
        """The stanza numbered `seq` is handled: `h_in` advances over the contiguous handled prefix.

        Unknown, repeated or `NOT_COUNTED` numbers are ignored."""
        if not self._first_pending <= seq < self._next_seq:
            return
        ahead = self._handled_ahead
        if ahead is None:
            if seq == self._first_pending:  # in order, the usual case
                self._first_pending += 1
                self.h_in = (self.h_in + 1) % MOD
                return
            ahead = self._handled_ahead = set()
        ahead.add(seq)
        while self._first_pending in ahead:
            ahead.remove(self._first_pending)
            self._first_pending += 1
            self.h_in = (self.h_in + 1) % MOD
        if not ahead:
            self._handled_ahead = None

    @property
    def pending_in(self) -> int:
        """Stanzas received but not yet counted into `h_in` (some earlier one is still pending)."""
        return self._next_seq - self._first_pending

    def stanza_sent(self, data: bytes) -> None:
        """A stanza went (or is about to go) to the client: it waits in `unacked` for an <a/>."""
        if self.enabled:
            self.sent = (self.sent + 1) % MOD
            if self.unacked is _NOT_ENABLED:
                self.unacked = deque()
            self.unacked.append(data)
            self.unrequested += 1

    def wants_ack_request(self, *, idle: bool = False) -> bool:
        """Time to send <r/>: `ack_every` stanzas since the last one, or any when the queue idles."""
        return self.enabled and (self.unrequested >= self.ack_every or (idle and self.unrequested > 0))

    def ack_requested(self) -> None:
        self.unrequested = 0

    def acknowledge(self, h: int) -> None:
        """The client handled stanzas up to `h`: drop them; `h` beyond what was sent is a §4 error."""
        newly = (h - self.acked) % MOD
        if newly > len(self.unacked):
            app = etree.Element(qname(NS_SM, "handled-count-too-high"), nsmap=default_ns(NS_SM))
            app.set("h", str(h))
            app.set("send-count", str(self.sent))
            raise SmStreamError("undefined-condition", "", etree.tostring(app))
        for _ in range(newly):
            self.unacked.popleft()
        self.acked = h

    # ---- resumption ----------------------------------------------------------------------------

    def resume(self, h: int) -> list[bytes]:
        """The client resumes having handled `h`: the stanzas to send again, oldest first.

        They stay in `unacked` with their numbers, since they were already counted in `sent`.
        """
        self.acknowledge(h)
        self.unrequested = len(self.unacked)
        return list(self.unacked)

    @classmethod
    def moved(
        cls, *, session_id: str, max_resume: int, h_in: int, sent: int, acked: int,
        unacked: list[bytes], ack_every: int = 5,
    ) -> StreamManagement:  # fmt: skip
        """The session state another worker handed over for a resumption there (after `resume`):
        counting goes on from where it stopped, with `unacked` still awaiting the client's ack."""
        moved = cls(ack_every=ack_every)
        moved.enabled = moved.resumable = True
        moved.id, moved.max, moved.h_in = session_id, max_resume, h_in
        moved.sent, moved.acked = sent, acked
        moved.unacked = deque(unacked)
        moved.unrequested = len(unacked)
        return moved

    def resumed(self, previd: str) -> bytes:
        return f"<resumed xmlns='{NS_SM}' h='{self.h_in}' previd='{previd}'/>".encode()

    def take_unacked(self) -> list[bytes]:
        """The session is over: what the client never acknowledged (§4: treat as undelivered)."""
        pending = list(self.unacked)
        self.unacked.clear()
        return pending
