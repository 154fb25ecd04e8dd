"""XEP-0124 bodies, sans-IO: parse a request's <body/>, build a response's.

The BOSH session logic (rids, holds, waits) is `imactor.web.bosh`; this is only the XML. A request
body is parsed with the stream's restricted parser (`XMLStreamParser`: no DTD, comments, PIs or
entities, the stanza size limit on each child), so a body is as safe to read as a stream.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from lxml import etree

from imactor.xmpp.errors import RemoteProtocolError
from imactor.xmpp.framing import OPEN
from imactor.xmpp.namespaces import NS_FRAMING, NS_HTTPBIND, NS_STREAMS, NS_XBOSH, qname
from imactor.xmpp.parser import ElementReceived, StreamClosed, StreamOpened, XMLStreamParser
from imactor.xmpp.stanza import default_ns, serialize

BODY: Final = qname(NS_HTTPBIND, "body")
XMPP_VERSION: Final = qname(NS_XBOSH, "version")
XMPP_RESTART: Final = qname(NS_XBOSH, "restart")
MAX_PAUSE: Final = 120
#: The highest rid a client may start with (XEP-0124 §14.1: 2^53 − 1, so it never overflows).
MAX_RID: Final = 2**53 - 1


class BoshError(Exception):
    """Ends a request (and its session, if any) with ``<body type='terminate' condition/>``."""

    def __init__(self, condition: str, text: str = "") -> None:
        super().__init__(f"{condition}: {text}" if text else condition)
        self.condition = condition


def terminate_body(condition: str | None = None, payload: Sequence[bytes] = ()) -> bytes:
    attrs = f" condition='{condition}'" if condition else ""
    return response_body(f" type='terminate'{attrs}", payload)


def response_body(attributes: str, payload: Sequence[bytes]) -> bytes:
    head = f"<body xmlns='{NS_HTTPBIND}' xmlns:xmpp='{NS_XBOSH}' xmlns:stream='{NS_STREAMS}'{attributes}"
    if not payload:
        return (head + "/>").encode()
    return head.encode() + b">" + b"".join(payload) + b"</body>"


@dataclass(frozen=True, slots=True)
class ParsedBody:
    attributes: dict[str, str]
    children: list[bytes]


def parse_body(data: bytes, max_stanza_size: int) -> ParsedBody:
    """A request's <body/>: its attributes and its children, each serialized on its own.

    Raises:
        BoshError: ``bad-request``, the body is not one well-formed <body/> in the httpbind namespace.
    """
    parser = XMLStreamParser(max_stanza_size=max_stanza_size)
    try:
        events = parser.feed(data)
    except RemoteProtocolError as exc:
        raise BoshError("bad-request", exc.text) from None
    finally:
        parser.close()
    if not events or not isinstance(events[0], StreamOpened) or not isinstance(events[-1], StreamClosed):
        raise BoshError("bad-request", "one complete <body/> per request")
    opened = events[0]
    if opened.tag != BODY:
        raise BoshError("bad-request", "the root is <body xmlns='http://jabber.org/protocol/httpbind'/>")
    children = [serialize(e.element) for e in events[1:-1] if isinstance(e, ElementReceived)]
    return ParsedBody(dict(opened.attributes), children)


def open_for(attributes: dict[str, str], domain: str) -> bytes:
    """The RFC 7395 <open/> frame a session creation or restart request stands for (XEP-0206 §4-5)."""
    element = etree.Element(OPEN, nsmap=default_ns(NS_FRAMING))
    element.set("to", attributes.get("to", domain))
    element.set("version", attributes.get(XMPP_VERSION, "1.0"))
    return etree.tostring(element)


def request_rid(attributes: Mapping[str, str]) -> int:
    """The request's 'rid' (XEP-0124 §14): a positive integer up to `MAX_RID`."""
    rid_text = attributes.get("rid", "")
    if not decimal(rid_text) or not 0 < int(rid_text) <= MAX_RID:
        raise BoshError("bad-request", "rid must be a positive integer")
    return int(rid_text)


def client_number(value: str | None, ceiling: int, *, low: int = 1) -> int:
    """A client's 'wait' or 'hold': at most the configured ceiling (XEP-0124 §7.1)."""
    if value is None:
        return ceiling
    if not decimal(value) or int(value) < low:
        raise BoshError("bad-request", f"expected an integer >= {low}, got {value!r}")
    return min(int(value), ceiling)


def decimal(text: str) -> bool:
    """ASCII digits only: XEP-0124's numbers are xs:unsignedLong/xs:unsignedShort (XML Schema
    Part 2 §3.3), and str.isdigit() alone also takes "²", which int() refuses (a ValueError that
    failed the whole HTTP connection instead of answering with a terminate body)."""
    return text.isascii() and text.isdigit()
