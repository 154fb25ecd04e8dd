"""Incremental XML stream parser for RFC 6120 streams: bytes in, events out.

`XMLStreamParser.feed` takes raw bytes as they come off the socket and returns a list of events:

- `StreamOpened` when the stream header (the depth-0 start tag) is complete;
- `ElementReceived` for each complete depth-1 element (a stanza or a stream-level element such as
  `<starttls/>` or `<auth/>`), as a standalone lxml element: its own document, no parent, and only the
  namespace declarations it needs (no inherited `xmlns:stream`);
- `StreamClosed` on `</stream:stream>`.

Whitespace between depth-1 elements (keepalives) produces no events. Every violation raises
`RemoteProtocolError` with the RFC 6120 stream error condition to send:

=============================================  ========================  ===============================
Input                                          Condition                 Why
=============================================  ========================  ===============================
DOCTYPE, comment, processing instruction       ``restricted-xml``        RFC 6120 §11.1 (§4.9.3.18)
reference to an entity other than the five     ``restricted-xml``        §11.1: the reference itself is
predefined ones (``&foo;``)                                              what the RFC forbids, even though
                                                                         XML also calls it not well-formed
XML declaration naming an encoding other       ``unsupported-encoding``  §11.6 (§4.9.3.22)
than UTF-8; a UTF-16/32 byte order mark
or NUL byte signature at the stream start
bytes that are not valid UTF-8                 ``not-well-formed``       XML 1.0 §4.3.3 makes an encoding
                                                                         error a fatal well-formedness
                                                                         error: the peer claimed UTF-8 and
                                                                         broke it (§4.9.3.13)
a UTF-8 byte order mark                        ``not-well-formed``       §11.6: U+FEFF must be read as a
                                                                         character, and character data
                                                                         before the root is not allowed
any other first byte that is neither           ``not-well-formed``       XML 1.0 §2.1; raised as soon as
whitespace nor ``<`` (a TLS ClientHello, an                              that byte arrives, not when a
HTTP request, ...)                                                       header is complete
any other XML or XML-Names error (unbound      ``not-well-formed``       §4.9.3.13
prefix, tag mismatch, bad character, …)
character data between depth-1 elements        ``bad-format``            well-formed XML that the stream
(other than whitespace)                                                  cannot carry (§4.9.3.1)
depth-1 element over ``max_stanza_size``       ``policy-violation``      local limit (§4.9.3.14)
bytes; header over ``max_header_size``;
elements nested deeper than `MAX_DEPTH`
=============================================  ========================  ===============================

How lxml behaves (pinned down in ``tests/unit/xmpp/test_parser.py``), and so why this module works the
way it does:

- A DOCTYPE produces no pull event and no error: lxml accepts it silently (even with an internal subset
  declaring entities) and only ``docinfo`` shows it. So the parser rejects ``<!`` in the prolog at the byte
  level, before libxml2 sees it; no DTD, and so no entity declaration, ever reaches libxml2.
- With ``resolve_entities=False``, a reference to an undeclared entity does not raise: lxml ignores that
  libxml2 error on purpose, the element containing the reference loses its end event, the document
  silently ends and the next feed starts a new one (whose elements have lost the stream's namespaces).
  The error shows only in the ``feed_error_log`` of that very feed, so the log is checked after every
  feed. The same log carries the XML-Names errors (unbound prefixes, duplicate expanded
  attribute names) that lxml reports only at ``close()``.
- A declared encoding other than UTF-8 is obeyed silently, so the XML declaration is checked here first.
- ``root.remove(child)`` makes lxml re-declare the default namespace under generated ``ns0:`` prefixes,
  and serializing a child still attached to the root copies every namespace declared on the stream
  header. ``copy.copy(child)`` (libxml2's ``xmlDocCopyNode``) declares only the namespaces the copy uses,
  with their original prefixes; the original child is then deleted from the root.
- The push parser keeps every warning in ``feed_error_log`` for the life of the document (libxml2 warns on
  each relative namespace URI such as ``vcard-temp``). To keep memory and the per-feed check flat, the
  lxml parser is replaced after `_LOG_ROLLOVER` warnings by a fresh one primed with the saved stream
  header.
- An lxml parser with its libxml2 context and document costs about 10 KB, most of what an idle stream
  holds apart from TLS, and priming a fresh one with a stream header costs more than parsing a small
  stanza. Between depth-1 elements an lxml parser holds nothing of its stream but the header's namespace
  bindings, so a stream lends it out: at the end of every `feed` that leaves no element half-parsed,
  the lxml parser goes back to a `ParserPool`, keyed by those bindings, and the next feed of any
  stream with the same bindings takes one from there (a new one, primed with the saved stream header,
  only when none is free). In a worker that reads one stream at a time, a handful of lxml parsers
  serve every quiet stream: an idle stream holds none, and a stanza that arrives alone after a pause
  pays for no new parser and no timer. A stream header takes a parser whose document ended (an
  lxml parser accepts a new document after ``close()``), if one whose stream ended with its end tag is
  free (lxml keeps an open root alive on the parser until its end event), before it makes a new one.
  A pooled parser is retired (closed) after
  `ParserPool.max_uses` elements or `_LOG_ROLLOVER` warnings, so libxml2's per-document state (its
  name dictionary, the warning log) stays bounded. Dropping a push parser without ``close()`` leaks
  a few bytes in libxml2 each time, so a parser that leaves for good is closed.

Size accounting: every byte is fed to lxml in segments chosen so that a depth-1 element can only end at
the end of a segment (the first ``>`` after ``</`` + the element's own qualified name). So the element's
size is exact: from its ``<`` to its final ``>``; whitespace before it is not counted. The limit is checked
before each segment is fed, so an endless element is cut off as soon as it passes the limit, and the
buffered input never exceeds it.
"""

from __future__ import annotations

import contextlib
import copy
import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Final, TypeAlias, cast

from lxml import etree

from imactor.xmpp.errors import LocalProtocolError, RemoteProtocolError
from imactor.xmpp.namespaces import NS_STREAMS

if TYPE_CHECKING:
    from collections.abc import Iterator

    # What XMLPullParser.read_events() yields with the events this module asks for.
    _Events: TypeAlias = Iterator[tuple[str, etree._Element]]

#: Deepest element nesting accepted, counting the stream root as depth 1 and a stanza as depth 2.
#: libxml2 stops at 256 on its own; real stanzas (MAM results wrapping forwarded messages) stay below 20.
MAX_DEPTH: Final = 64

#: Accumulated lxml warnings after which the lxml parser is replaced (see the module docstring).
_LOG_ROLLOVER: Final = 64

_NON_WHITESPACE: Final = re.compile(rb"[^ \t\r\n]")
# A complete start tag: "<", its qualified name (group 1), then attributes with quoted values that may
# hold ">", up to the closing ">". Possessive quantifiers keep the match linear. The name may not start
# with "!", "?" or "/" so comments, CDATA, PIs and end tags never match.
_START_TAG: Final = re.compile(rb"""<([^\s/>!?][^\s/>]*)(?:[^>"']++|"[^"]*+"|'[^']*+')*+>""")
# An "&" followed by enough input to tell that it starts no entity or character reference. In character
# data libxml2 does not fail on these: it waits for a ";", so the element would stall until the size limit.
_BAD_REFERENCE: Final = re.compile(
    rb"&(?:[^#A-Za-z_:\x80-\xff]"
    rb"|[A-Za-z_:\x80-\xff][-.\w:\x80-\xff]*+[^-.\w:\x80-\xff;]"
    rb"|#(?:x[0-9A-Fa-f]*+[^0-9A-Fa-f;]|[0-9]*+[^0-9x;]|[0-9]++x))"
)
_QUOTE_OR_GT: Final = re.compile(rb"""["'>]""")
_XML_DECL_ENCODING: Final = re.compile(rb"""\sencoding\s*=\s*(?:"([^"]*)"|'([^']*)')""")
_UTF8_BOM: Final = b"\xef\xbb\xbf"
# Bytes that never start a UTF-8 XML document but do start UTF-16/UTF-32 ones (BOMs, NUL padding).
_NON_UTF8_SIGNATURE_BYTES: Final = frozenset((0x00, 0xFE, 0xFF))

_ERROR_LEVEL: Final[int] = etree.ErrorLevels.ERROR
# None. libxml2 files a namespace name that is not a URI reference (``urn:a]]>b``, one with a space)
# as an error (XML-Names 1.0 §2.2: the name MUST be a URI reference). Letting it through once looked
# lenient, but every stanza is parsed again later from its bytes (`Stanza.element`: a MAM result,
# an offline message, a hop to another worker or server), by a parser that refuses it: a stanza let
# in here would fail there, after it was acknowledged. Found by fuzzing the component streams.
_IGNORED_ERROR_TYPES: Final[frozenset[int]] = frozenset()
_ENTITY_ERROR_TYPES: Final = frozenset(
    (etree.ErrorTypes.ERR_UNDECLARED_ENTITY, etree.ErrorTypes.WAR_UNDECLARED_ENTITY)
)


@dataclass(frozen=True, slots=True)
class StreamOpened:
    """The stream header (depth-0 start tag) is complete."""

    #: Clark notation, e.g. ``{http://etherx.jabber.org/streams}stream``.
    tag: str
    #: Header attributes; namespaced ones in Clark notation (``{http://www.w3.org/XML/1998/namespace}lang``).
    attributes: Mapping[str, str]
    #: The header's default namespace (``jabber:client`` expected), or None.
    default_namespace: str | None
    #: The prefix bound to the streams namespace (usually ``stream``), or None.
    stream_prefix: str | None


@dataclass(frozen=True, slots=True)
class ElementReceived:
    """A complete depth-1 element."""

    #: The element, detached: its own document, no parent, only the namespace declarations it uses.
    element: etree._Element
    #: Exact bytes of raw input from the element's ``<`` to its final ``>``.
    size: int


@dataclass(frozen=True, slots=True)
class StreamClosed:
    """The peer closed the stream (``</stream:stream>``)."""


ParserEvent: TypeAlias = StreamOpened | ElementReceived | StreamClosed


class _State(enum.Enum):
    #: Before the stream header is complete.
    HEADER = enum.auto()
    #: Stream open, between depth-1 elements: only whitespace is skipped here.
    BETWEEN = enum.auto()
    #: A ``<`` arrived at depth 1, but no depth-1 start tag is complete yet.
    ELEMENT_START = enum.auto()
    #: Inside a depth-1 element whose end-tag prefix is known.
    ELEMENT_BODY = enum.auto()
    #: The peer closed the stream; only whitespace may follow.
    STREAM_CLOSED = enum.auto()
    #: A RemoteProtocolError was raised; only reset() helps.
    FAILED = enum.auto()
    #: close() was called.
    CLOSED = enum.auto()


NamespaceKey: TypeAlias = tuple[tuple[str, str], ...]


class ParserPool:
    """Idle lxml parsers, primed with a stream header, lent to streams between their elements.

    Keyed by the header's namespace bindings (the only part of a header that changes how an
    element parses), so streams of different clients share parsers as long as they declare the
    same namespaces. Bounded: `per_key` parsers per key and `max_keys` keys; a parser is closed
    after `max_uses` elements. Not thread-safe: one per thread (a worker reads in one thread).

    It also keeps parsers whose document ended (`close()`d) for the next stream header: an lxml
    parser takes a new document after `close()`, for half what a new one costs, and a login
    parses three headers (the first, after STARTTLS, after SASL).
    """

    __slots__ = ("_fresh", "_idle", "max_keys", "max_uses", "per_key")

    def __init__(self, *, per_key: int = 8, max_keys: int = 64, max_uses: int = 10_000) -> None:
        self.per_key = per_key
        self.max_keys = max_keys
        self.max_uses = max_uses
        #: key → [(parser, its stream root, elements it parsed)]
        self._idle: dict[NamespaceKey, list[tuple[etree.XMLPullParser, etree._Element, int]]] = {}
        #: Closed parsers, ready for a new document: (parser, elements it parsed)
        self._fresh: list[tuple[etree.XMLPullParser, int]] = []

    def take(self, key: NamespaceKey) -> tuple[etree.XMLPullParser, etree._Element, int] | None:
        idle = self._idle.get(key)
        return idle.pop() if idle else None

    def give(self, key: NamespaceKey, parser: etree.XMLPullParser, root: etree._Element, uses: int) -> None:
        if uses >= self.max_uses or len(parser.feed_error_log) > _LOG_ROLLOVER:
            _end_document(parser, root)
            return
        idle = self._idle.get(key)
        if idle is None:
            if len(self._idle) >= self.max_keys:
                self.clear()
            idle = self._idle[key] = []
        if len(idle) >= self.per_key:
            # More streams between elements than the key keeps: the parser ends its document and
            # waits for the next stream header instead (a login parses three).
            if _end_document(parser, root):
                self._keep_fresh(parser, uses)
            return
        idle.append((parser, root, uses))

    def take_fresh(self) -> tuple[etree.XMLPullParser, int]:
        """A parser for a new document (a stream header): a closed one, or a new one."""
        return self._fresh.pop() if self._fresh else (_new_lxml_parser(), 0)

    def give_closed(self, parser: etree.XMLPullParser, uses: int) -> None:
        """Close `parser`'s document and keep the parser for `take_fresh`, unless it is worn out.

        Only for a parser whose document ended with its root's end tag: lxml keeps every element
        whose start it reported on a stack of the parser until its end comes, and `close()` does not
        empty that stack. A stream root left open there (a STARTTLS or SASL restart, a connection
        that dropped) stayed alive with its document for the parser's whole life: about 3 KB
        per restart, two restarts per login, until the parser retired after `max_uses` elements.
        """
        _close_quietly(parser)
        for _event in parser.read_events():  # what close() completed belongs to the old document
            pass
        self._keep_fresh(parser, uses)

    def _keep_fresh(self, parser: etree.XMLPullParser, uses: int) -> None:
        if uses < self.max_uses and len(self._fresh) < self.per_key:
            self._fresh.append((parser, uses))

    def clear(self) -> None:
        """Close every idle parser."""
        for idle in self._idle.values():
            for parser, root, _uses in idle:
                _end_document(parser, root)
        self._idle.clear()
        self._fresh.clear()

    def idle_count(self) -> int:
        return sum(len(idle) for idle in self._idle.values())


#: The pool of the streams that do not bring their own (one per process: a worker is one thread).
SHARED_POOL: Final = ParserPool()


class XMLStreamParser:
    """Incremental parser for one XML stream, restricted per RFC 6120 §11.

    Args:
        max_stanza_size: Most bytes a depth-1 element may span, from its ``<`` to its final ``>``.
        max_header_size: Most bytes before the end of the stream header (XML declaration included).
        pool: Where the lxml parser goes between depth-1 elements (see the module docstring);
            None: the stream keeps its own.

    Error handling:
        `feed` raises `RemoteProtocolError` carrying the stream error condition (see the module
        docstring). The events of that `feed` call are lost with it, and the parser stays failed:
        further `feed` calls raise `LocalProtocolError` until `reset`.
    """

    # One per stream: slots keep the idle ones small.
    __slots__ = (
        "_depth", "_element_bytes", "_end_matched", "_end_prefix", "_header", "_header_fed",
        "_in_end_tag", "_log_base", "_log_seen", "_max_header_size", "_max_stanza_size", "_maybe_cdata",
        "_namespaces", "_parser", "_pool", "_quote", "_root", "_state", "_uses",
    )  # fmt: skip

    def __init__(
        self, *, max_stanza_size: int = 262144, max_header_size: int = 8192,
        pool: ParserPool | None = SHARED_POOL,
    ) -> None:  # fmt: skip
        if max_stanza_size < 1 or max_header_size < 1:
            raise ValueError("size limits must be positive")
        self._max_stanza_size = max_stanza_size
        self._max_header_size = max_header_size
        self._pool = pool
        self._start()

    def _start(self) -> None:
        # Created (or borrowed from the pool) on demand; lent back to the pool after each feed
        # that ends between depth-1 elements (see the module docstring).
        self._parser: etree.XMLPullParser | None = None
        #: Elements the current lxml parser has parsed, over all the streams it served.
        self._uses = 0
        #: The stream header's namespace bindings: the pool's key for this stream's parsers.
        self._namespaces: NamespaceKey = ()
        self._state = _State.HEADER
        self._root: etree._Element | None = None
        self._depth = 0
        # The stream header as received, kept to prime each later lxml parser (_lxml).
        self._header = bytearray()
        self._header_fed = 0
        # The quote character of the attribute value a start tag was cut in, if any (_tag_stop).
        self._quote = b""
        # Bytes of the current depth-1 element already fed to lxml.
        self._element_bytes = 0
        # The current depth-1 element may contain a CDATA section, where "&" is a plain character.
        self._maybe_cdata = False
        # "</" + qualified name of the open depth-1 element: its end tag starts with this.
        self._end_prefix = b""
        # How many bytes of _end_prefix the input fed so far ends with (split across feeds).
        self._end_matched = 0
        # _end_prefix was fed but not the ">" after it.
        self._in_end_tag = False
        # Entries of the lxml feed_error_log already checked, and how many of them the header caused.
        self._log_seen = 0
        self._log_base = 0

    def feed(self, data: bytes) -> list[ParserEvent]:
        """Parse more input.

        Args:
            data: The next bytes of the stream, split anywhere.

        Returns:
            The events completed by this input, in order. Splitting the input differently yields the
            same events.

        Raises:
            RemoteProtocolError: The input breaks XML, RFC 6120 §11 or a size limit.
            LocalProtocolError: The parser has failed or was closed.
        """
        state = self._state
        if state is _State.FAILED:
            raise LocalProtocolError("the parser failed; reset() it before feeding more data")
        if state is _State.CLOSED:
            raise LocalProtocolError("the parser is closed")
        events: list[ParserEvent] = []
        try:
            self._consume(data, events)
        except RemoteProtocolError:
            self._state = _State.FAILED
            self._release()
            raise
        if self._state is _State.BETWEEN:
            self._lend()
        elif self._state is _State.STREAM_CLOSED:
            self._release()
        return events

    def release_idle(self) -> None:
        """Give up the lxml parser if nothing is half-parsed; the next element gets another.

        A stream with a pool does this after every feed; for one without, the owner calls it once
        the stream has gone quiet.
        """
        if self._state is _State.BETWEEN or self._state is _State.STREAM_CLOSED:
            # lxml holds only the stream header, which is saved.
            self._release()

    def holds_parser(self) -> bool:
        """Whether an lxml parser is attached now (for tests and memory accounting)."""
        return self._parser is not None

    def _lend(self) -> None:
        """Between depth-1 elements: lend the lxml parser to the pool (module docstring)."""
        parser, pool = self._parser, self._pool
        if parser is None or pool is None:
            return
        root = self._root
        assert root is not None
        self._parser = None
        self._root = None
        pool.give(self._namespaces, parser, root, self._uses)

    def reset(self) -> None:
        """Start over with a fresh parser, for a stream restart (after STARTTLS or SASL success).

        Any input received but not yet turned into events is discarded, as RFC 6120 §5.4.3.3 requires
        after STARTTLS: nothing received before TLS took effect may count in the new stream.
        """
        self._discard()
        self._start()

    def close(self) -> None:
        """Release the underlying lxml parser; `feed` raises `LocalProtocolError` afterwards."""
        self._discard()
        self._state = _State.CLOSED

    def _discard(self) -> None:
        if self._state is _State.BETWEEN:
            self._lend()
        self._release()

    def _release(self) -> None:
        parser, root = self._parser, self._root
        if parser is not None:
            self._parser = None
            self._root = None
            if self._state is _State.STREAM_CLOSED:
                if self._pool is not None:
                    self._pool.give_closed(parser, self._uses)
                else:
                    _close_quietly(parser)
            elif self._state is _State.BETWEEN and root is not None:
                _end_document(parser, root)  # a stream without a pool, restarted or dropped
            else:
                # Failed, or dropped inside an element: lxml keeps the open elements, and with
                # them a reference cycle that only the cyclic collector frees (`_end_document`).
                # Rare (bad input, a connection cut mid-stanza), so not worth more.
                _close_quietly(parser)

    def _lxml(self) -> etree.XMLPullParser:
        """The lxml parser: once the stream is open, one from the pool with the same namespace
        bindings, or a fresh one primed with the stream header."""
        parser = self._parser
        if parser is not None:
            return parser
        lent = None
        if self._state is not _State.HEADER and self._pool is not None:
            lent = self._pool.take(self._namespaces)
        if lent is not None:
            parser, self._root, self._uses = lent
        else:
            parser, self._uses = (_new_lxml_parser(), 0) if self._pool is None else self._pool.take_fresh()
            if self._state is not _State.HEADER:
                parser.feed(bytes(self._header))
                for action, node in cast("_Events", parser.read_events()):
                    if action == "start":
                        self._root = node
        self._parser = parser
        if self._state is _State.HEADER:
            # A new document: lxml starts its feed_error_log afresh with the first feed, so what a
            # reused parser's old document logged (another stream's warnings) must not count as
            # seen, or this header's errors (an unbound prefix) would be skipped as if checked.
            self._log_seen = self._log_base = 0
        else:
            # Warnings logged before (the header's, or another stream's) are not this element's.
            self._log_seen = self._log_base = len(parser.feed_error_log)
        return parser

    def _consume(self, buf: bytes, events: list[ParserEvent]) -> None:
        pos = 0
        end = len(buf)
        while pos < end:
            state = self._state
            if state is _State.ELEMENT_BODY:
                stop = self._next_element_stop(buf, pos)
            elif state is _State.BETWEEN:
                if buf[pos] != 0x3C:  # "<"
                    match = _NON_WHITESPACE.search(buf, pos)
                    if match is None:
                        return  # whitespace keepalive: never fed to lxml, never buffered
                    pos = match.start()
                    if buf[pos] != 0x3C:
                        raise RemoteProtocolError("bad-format", "character data at stream level")
                if self._log_seen - self._log_base > _LOG_ROLLOVER:
                    self._release()  # many elements in one feed: the next gets a fresh lxml parser
                self._element_bytes = 0
                self._maybe_cdata = False
                tag = _START_TAG.match(buf, pos)
                if tag is None or buf[tag.end() - 2] == 0x2F:  # incomplete, or ends with "/>"
                    # Learn the element's name from lxml once its start tag is complete.
                    self._state = _State.ELEMENT_START
                    self._quote = b""
                else:
                    # Common case, one lxml feed per element: the start tag is all here, so its raw
                    # qualified name, which the end tag must repeat, is known without asking lxml.
                    self._set_end_prefix(tag.group(1))
                continue
            elif state is _State.ELEMENT_START:
                stop = self._tag_stop(buf, pos)
            elif state is _State.HEADER:
                pos = self._feed_header(buf, pos, events)
                continue
            else:  # STREAM_CLOSED
                if _NON_WHITESPACE.search(buf, pos) is not None:
                    raise RemoteProtocolError("not-well-formed", "data after the end of the stream")
                return
            if self._element_bytes + stop - pos > self._max_stanza_size:
                raise RemoteProtocolError(
                    "policy-violation", f"element larger than {self._max_stanza_size} bytes"
                )
            chunk = buf if stop - pos == end else buf[pos:stop]
            self._feed_lxml(chunk, events)
            if not self._maybe_cdata:
                if b"<!" in chunk or chunk[-1] == 0x3C:  # "<" could start "<![CDATA[" in the next chunk
                    self._maybe_cdata = True
                elif b"&" in chunk and _BAD_REFERENCE.search(chunk) is not None:
                    # libxml2 would wait for a ";" that may never come instead of failing.
                    raise RemoteProtocolError("not-well-formed", "'&' that does not start a reference")
            pos = stop

    def _tag_stop(self, buf: bytes, pos: int) -> int:
        """Index just after the next ``>`` outside a quoted attribute value, or the end of the input.

        Stopping there, rather than at every ``>``, keeps a start tag whose attribute values are full of
        ``>`` from costing one lxml feed per byte. The quote state carries over to the next input.
        """
        quote = self._quote
        while True:
            if quote:
                close = buf.find(quote, pos)
                if close < 0:
                    self._quote = quote
                    return len(buf)
                pos = close + 1
            match = _QUOTE_OR_GT.search(buf, pos)
            if match is None:
                self._quote = b""
                return len(buf)
            pos = match.end()
            if buf[pos - 1] == 0x3E:  # ">"
                self._quote = b""
                return pos
            quote = buf[pos - 1 : pos]

    def _feed_header(self, buf: bytes, pos: int, events: list[ParserEvent]) -> int:
        if _NON_WHITESPACE.search(self._header) is None:
            _check_first_byte(buf, pos)
        stop = self._tag_stop(buf, pos)
        complete = not self._quote and buf[stop - 1] == 0x3E
        header = self._header
        checked = len(header)
        if checked + stop - pos > self._max_header_size:
            raise RemoteProtocolError("policy-violation", "stream header too large")
        header += buf[pos:stop]
        if header.find(b"<!", max(checked - 1, 0)) >= 0:
            # A DOCTYPE (or a comment) in the prolog. lxml would accept a DOCTYPE silently.
            raise RemoteProtocolError("restricted-xml", "DOCTYPE or comment in the stream prolog")
        if not complete:
            # Header bytes go to lxml a whole tag at a time, and the XML declaration is checked first.
            return stop
        if self._header_fed == 0:
            _check_prolog(header)
        chunk = bytes(header[self._header_fed :])
        self._header_fed = len(header)
        self._feed_lxml(chunk, events)
        return stop

    def _next_element_stop(self, buf: bytes, pos: int) -> int:
        """Where to stop feeding input of the open depth-1 element: right after its next candidate end tag.

        The element can only end with ``</`` + its own qualified name + optional whitespace + ``>``, so no
        stop is needed before the first ``>`` that follows that prefix. A candidate that turns out to close
        a nested element of the same name (or sits in a CDATA section) only costs one more feed.
        """
        end = len(buf)
        prefix = self._end_prefix
        if self._in_end_tag:
            # The prefix was fed already; the end tag's ">" is the next one.
            gt = buf.find(b">", pos)
            if gt < 0:
                return end
            self._in_end_tag = False
            return gt + 1
        if self._end_matched:
            # The input fed so far ends with the first _end_matched bytes of the prefix.
            rest = prefix[self._end_matched :]
            if buf.startswith(rest, pos):
                self._end_matched = 0
                gt = buf.find(b">", pos + len(rest))
                if gt < 0:
                    self._in_end_tag = True
                    return end
                return gt + 1
            if end - pos < len(rest) and rest.startswith(buf[pos:]):
                self._end_matched += end - pos
                return end
            self._end_matched = 0
        found = buf.find(prefix, pos)
        if found < 0:
            # Remember a partial prefix at the end of the input; it can only start at the last "<".
            lt = buf.rfind(b"<", max(pos, end - len(prefix) + 1))
            if lt >= 0 and prefix.startswith(buf[lt:]):
                self._end_matched = end - lt
            return end
        gt = buf.find(b">", found + len(prefix))
        if gt < 0:
            self._in_end_tag = True
            return end
        return gt + 1

    def _feed_lxml(self, chunk: bytes, events: list[ParserEvent]) -> None:
        parser = self._lxml()
        try:
            parser.feed(chunk)
        except etree.XMLSyntaxError as exc:
            raise _syntax_error(exc) from None
        log = parser.feed_error_log
        if len(log) != self._log_seen:
            self._check_log(log)
        length = len(chunk)
        completed = 0
        depth = self._depth
        node: etree._Element | None = None
        for action, node in cast("_Events", parser.read_events()):
            if action == "start":
                depth += 1
                if depth > 2:
                    if depth > MAX_DEPTH:
                        raise RemoteProtocolError(
                            "policy-violation", f"elements nested deeper than {MAX_DEPTH}"
                        )
                elif depth == 2:
                    if self._state is _State.ELEMENT_START:
                        self._open_element(node)
                else:
                    self._root = node
                    self._log_base = self._log_seen
                    self._state = _State.BETWEEN
                    self._namespaces = _namespace_key(node)
                    events.append(_stream_opened(node))
            elif action == "end":
                depth -= 1
                if depth == 1:
                    # Segments end right after a candidate end tag, so a depth-1 element ends at the end
                    # of this segment and its size is exact. Should lxml ever report two in one segment,
                    # the later ones are charged the whole segment: never less than their true size.
                    # copy.copy gives the copy a document of its own and declares on it only the
                    # namespaces it uses, with their original prefixes (see the module docstring).
                    size = length if completed else self._element_bytes + length
                    events.append(ElementReceived(copy.copy(node), size))
                    completed += 1
                    self._uses += 1
                    self._state = _State.BETWEEN
                elif depth == 0:
                    self._state = _State.STREAM_CLOSED
                    events.append(StreamClosed())
            else:  # "comment" or "pi"
                raise RemoteProtocolError("restricted-xml", f"{action} not allowed in an XML stream")
        self._depth = depth
        node = None  # drop the last proxy, so the originals are freed instead of re-homed by lxml
        if completed:
            root = self._root
            assert root is not None
            if root.text is not None:
                # A CDATA section at depth 1 (plain text is caught earlier, in the BETWEEN state).
                raise RemoteProtocolError("bad-format", "character data at stream level")
            del root[:completed]
            self._element_bytes = length if self._state is _State.ELEMENT_BODY else 0
        else:
            self._element_bytes += length

    def _open_element(self, node: etree._Element) -> None:
        tag: str = node.tag
        local = tag[tag.rfind("}") + 1 :]
        prefix: str | None = node.prefix
        self._set_end_prefix((f"{prefix}:{local}" if prefix else local).encode())

    def _set_end_prefix(self, qname: bytes) -> None:
        self._end_prefix = b"</" + qname
        self._end_matched = 0
        self._in_end_tag = False
        self._state = _State.ELEMENT_BODY

    def _check_log(self, log: etree._ListErrorLog) -> None:
        entries = list(log)
        for entry in entries[self._log_seen :]:
            if entry.level < _ERROR_LEVEL or entry.type in _IGNORED_ERROR_TYPES:
                continue
            if entry.type in _ENTITY_ERROR_TYPES:
                raise RemoteProtocolError("restricted-xml", "reference to a non-predefined entity")
            raise RemoteProtocolError("not-well-formed", _one_line(entry.message))
        self._log_seen = len(entries)


def _new_lxml_parser() -> etree.XMLPullParser:
    return etree.XMLPullParser(
        events=("start", "end", "comment", "pi"),
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        attribute_defaults=False,
        huge_tree=False,
        collect_ids=False,  # xml:id values would pile up in the long-lived document's ID table
        recover=False,
    )


def _end_document(parser: etree.XMLPullParser, root: etree._Element) -> bool:
    """End `parser`'s document with its open stream root's end tag, close it and drain its events.

    lxml keeps each element whose start it reported on its parser until the element's end comes,
    and the element's document keeps the parser: a stream root left open (a stream restarted by
    STARTTLS or SASL, dropped, or a parser the pool has no room for) is a reference cycle that only
    the cyclic collector frees, with the parser's libxml2 buffers. A worker runs a full collection
    rarely (`tune_gc`), so such parsers piled up between collections by the thousand (docs/
    hardening.md, "Reference cycles"). Ended this way, the parser goes with its last reference.

    Returns:
        True if the document ended cleanly: the parser can take a new one (`ParserPool.take_fresh`).
    """
    tag: str = root.tag
    local = tag[tag.rfind("}") + 1 :]
    prefix: str | None = root.prefix
    end_tag = f"</{prefix}:{local}>" if prefix else f"</{local}>"
    try:
        parser.feed(end_tag.encode())
        parser.close()
    except etree.XMLSyntaxError:
        _close_quietly(parser)
        return False
    finally:
        for _event in parser.read_events():
            pass
    return True


def _close_quietly(parser: etree.XMLPullParser) -> None:
    # close() frees libxml2's state; on an unfinished document it also raises, which is expected here.
    with contextlib.suppress(etree.XMLSyntaxError):
        parser.close()


def _check_first_byte(buf: bytes, pos: int) -> None:
    """The first byte that is not whitespace must be "<" (an XML declaration or the stream header).

    Checked as soon as it arrives, not once a header is complete: bytes that can never begin an XML
    document (a TLS ClientHello, an HTTP request line, a UTF-8 byte order mark) would otherwise be
    buffered while the server waits for a ">" until the handshake timeout. XML 1.0 §2.1 allows only
    whitespace before the root element's prolog, so anything else violates well-formedness: RFC 6120
    §4.9.3.13 ``not-well-formed``; a UTF-16/32 signature is ``unsupported-encoding`` (§11.6).
    """
    match = _NON_WHITESPACE.search(buf, pos)
    if match is None or buf[match.start()] == 0x3C:  # only whitespace so far, or "<"
        return
    first = buf[match.start()]
    if first in _NON_UTF8_SIGNATURE_BYTES:
        raise RemoteProtocolError("unsupported-encoding", "the stream is not UTF-8")
    if first == _UTF8_BOM[0]:
        # §11.6: U+FEFF is a character (zero width no-break space), and no character data may
        # come before the stream header.
        raise RemoteProtocolError("not-well-formed", "byte order mark (U+FEFF) before the stream header")
    raise RemoteProtocolError("not-well-formed", f"an XML stream starts with '<', not byte 0x{first:02x}")


def _check_prolog(header: bytearray) -> None:
    """Check the encoding signals of the stream start: NUL bytes and the XML declaration."""
    if not _NON_UTF8_SIGNATURE_BYTES.isdisjoint(header[:4]):
        raise RemoteProtocolError("unsupported-encoding", "the stream is not UTF-8")
    if header.startswith(b"<?xml"):
        declaration = header[: header.find(b">") + 1]
        match = _XML_DECL_ENCODING.search(declaration)
        if match is not None:
            encoding = (match.group(1) or match.group(2) or b"").decode("ascii", "replace")
            if encoding.lower() != "utf-8":
                raise RemoteProtocolError("unsupported-encoding", f"encoding {encoding!r} is not UTF-8")


def _namespace_key(root: etree._Element) -> NamespaceKey:
    """The stream header's namespace bindings, in a canonical order (the default one as "")."""
    nsmap: dict[str | None, str] = root.nsmap
    return tuple(sorted((prefix or "", uri) for prefix, uri in nsmap.items()))


def _stream_opened(root: etree._Element) -> StreamOpened:
    nsmap: dict[str | None, str] = root.nsmap
    if root.tag.startswith("{" + NS_STREAMS + "}"):
        stream_prefix: str | None = root.prefix
    else:
        stream_prefix = next((p for p, uri in nsmap.items() if uri == NS_STREAMS and p is not None), None)
    return StreamOpened(
        tag=root.tag,
        # items(), not dict(attrib): lxml cannot look up again the Clark key of an attribute whose
        # namespace name holds a "}" (no URI does, RFC 3986 §2, but libxml2 only warns about it).
        attributes=MappingProxyType(dict(cast("Mapping[str, str]", root.attrib).items())),
        default_namespace=nsmap.get(None),
        stream_prefix=stream_prefix,
    )


def _syntax_error(exc: etree.XMLSyntaxError) -> RemoteProtocolError:
    message = _one_line(str(exc.msg))
    if getattr(exc, "code", None) in _ENTITY_ERROR_TYPES:
        return RemoteProtocolError("restricted-xml", "reference to a non-predefined entity")
    if message.startswith("Excessive depth"):
        # libxml2's own nesting limit (256), hit when a deep chunk arrives in one piece: the same
        # local limit as MAX_DEPTH, which the event loop only sees once lxml has built the elements.
        return RemoteProtocolError("policy-violation", f"elements nested deeper than {MAX_DEPTH}")
    return RemoteProtocolError("not-well-formed", message)


def _one_line(message: str) -> str:
    # libxml2 messages carry newlines; the text may end up in a <text/> of a stream error.
    return " ".join(message.split())
