"""RFC 7395 framing, sans-IO: one complete XML element per transport message.

XMPP over WebSocket (and, through `imactor.web.bosh`, over BOSH) carries no enclosing
<stream:stream> document: the stream opens with ``<open xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>``,
closes with ``<close/>``, and every stanza or nonza is a message of its own (§3.3). `parse_frame`
turns one message into the event the stream parser would have produced for the same content on
TCP, so `ServerStream` runs the very same state machine for both; `open_frame` / `CLOSE_FRAME`
are what the server writes in place of the stream header and ``</stream:stream>``.

Each message is parsed with the stream's own restricted parser (`XMLStreamParser`: no DTD,
comments, PIs or entities, the stanza size limit), inside a synthetic stream root, so a frame that
holds half an element or two of them, or anything else but one element, is ``not-well-formed``
and an oversized one a ``policy-violation``, like the same bytes on a TCP stream.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Final

from lxml import etree

from imactor.xmpp.errors import RemoteProtocolError
from imactor.xmpp.namespaces import NS_CLIENT, NS_FRAMING, NS_STREAMS, qname
from imactor.xmpp.parser import ElementReceived, ParserEvent, StreamClosed, StreamOpened, XMLStreamParser
from imactor.xmpp.stanza import default_ns

OPEN: Final = qname(NS_FRAMING, "open")
CLOSE: Final = qname(NS_FRAMING, "close")
CLOSE_FRAME: Final = f"<close xmlns='{NS_FRAMING}'/>".encode()

_ROOT: Final = f"<stream:stream xmlns='{NS_CLIENT}' xmlns:stream='{NS_STREAMS}'>".encode()
_END: Final = b"</stream:stream>"
_XML_LANG: Final = "{http://www.w3.org/XML/1998/namespace}lang"


def parse_frame(data: bytes, *, max_stanza_size: int) -> ParserEvent:
    """One RFC 7395 message → `StreamOpened` (<open/>), `StreamClosed` (<close/>) or `ElementReceived`.

    Raises:
        RemoteProtocolError: Not exactly one complete, well-formed element (``not-well-formed``),
            restricted XML (``restricted-xml``), over `max_stanza_size` (``policy-violation``), or
            an <open/> that is not empty (``invalid-xml``).
    """
    parser = XMLStreamParser(max_stanza_size=max_stanza_size)
    try:
        events = parser.feed(_ROOT + data + _END)
    finally:
        parser.close()
    elements = [event for event in events if isinstance(event, ElementReceived)]
    complete = len(events) == len(elements) + 2 and isinstance(events[-1], StreamClosed)
    if len(elements) != 1 or not complete:
        raise RemoteProtocolError("not-well-formed", "a WebSocket message carries exactly one element")
    element = elements[0].element
    if element.tag == OPEN:
        if len(element) or (element.text or "").strip():
            raise RemoteProtocolError("invalid-xml", "<open/> is empty")
        return StreamOpened(
            tag=qname(NS_STREAMS, "stream"),
            attributes=MappingProxyType({str(k): str(v) for k, v in element.attrib.items()}),
            default_namespace=NS_CLIENT,
            stream_prefix="stream",
        )
    if element.tag == CLOSE:
        return StreamClosed()
    return elements[0]


def open_frame(stream_id: str, domain: str) -> bytes:
    """The server's <open/> (§3.3.1): what the stream header says on TCP."""
    element = etree.Element(OPEN, nsmap=default_ns(NS_FRAMING))
    for name, value in (("from", domain), ("id", stream_id), ("version", "1.0"), (_XML_LANG, "en")):
        element.set(name, value)
    return etree.tostring(element)


def close_frame(see_other_uri: str = "") -> bytes:
    """<close/>; with `see_other_uri`, the §3.6.2 redirect to another WebSocket endpoint."""
    if not see_other_uri:
        return CLOSE_FRAME
    element = etree.Element(CLOSE, nsmap=default_ns(NS_FRAMING))
    element.set("see-other-uri", see_other_uri)
    return etree.tostring(element)
