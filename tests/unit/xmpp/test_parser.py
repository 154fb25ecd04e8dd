"""The XML stream parser: bytes in, events out. No trio, no sockets."""

from __future__ import annotations

import gc
import random
import time
from typing import Any

import pytest
from lxml import etree

from imactor.xmpp.errors import LocalProtocolError, RemoteProtocolError
from imactor.xmpp.namespaces import NS_CLIENT, NS_STREAMS, NS_XML
from imactor.xmpp.parser import (
    MAX_DEPTH,
    ElementReceived,
    ParserEvent,
    ParserPool,
    StreamClosed,
    StreamOpened,
    XMLStreamParser,
    _new_lxml_parser,
)

HEADER = (
    b"<?xml version='1.0'?>"
    b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'"
    b" to='example.com' version='1.0' xml:lang='en'>"
)
BARE_HEADER = b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"

# Depth-1 elements chosen to hit every path of the segmenting logic: ">" and "/>" inside attribute
# values, nested elements sharing the stanza's name (or its prefix), an end tag inside CDATA, spaces
# in an end tag, prefixed elements, entities, multi-byte UTF-8.
STANZAS = [
    b"<presence/>",
    b"<presence a='/>' b=\"x>y\"/>",
    b"<message to='romeo@example.net' id='a>b'><body>Art thou not Romeo?</body></message>",
    b"<message><forwarded xmlns='urn:xmpp:forward:0'><message><body>inner</body></message>"
    b"</forwarded><messages>1</messages><x:message xmlns:x='urn:x'/></message  >",
    b"<iq type='get' id='1'><query xmlns='jabber:iq:roster'/></iq>",
    b"<message><body><![CDATA[</message> & <b>]]></body></message>",
    b"<message xml:lang='fr'><body>caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"
    b" &amp;&lt;&gt;&apos;&quot;&#65;&#x42;</body></message>",
    b"<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/></stream:features>",
]
SESSION = HEADER + b"\n  " + b" \n".join(STANZAS) + b"\t\r\n</stream:stream>\n"


def describe(events: list[Any]) -> list[tuple[Any, ...]]:
    """A comparable summary of parser events."""
    summary: list[tuple[Any, ...]] = []
    for event in events:
        if isinstance(event, ElementReceived):
            summary.append(("element", etree.tostring(event.element), event.size))
        elif isinstance(event, StreamOpened):
            summary.append(
                ("opened", event.tag, dict(event.attributes), event.default_namespace, event.stream_prefix)
            )
        else:
            summary.append(("closed",))
    return summary


def one_element(events: list[ParserEvent]) -> ElementReceived:
    [event] = events
    assert isinstance(event, ElementReceived)
    return event


def fresh() -> XMLStreamParser:
    """A parser with a pool of its own, so that no test borrows another's lxml parser."""
    return XMLStreamParser(pool=ParserPool())


def feed_all(chunks: list[bytes], parser: XMLStreamParser | None = None) -> list[Any]:
    parser = parser or fresh()
    events: list[Any] = []
    for chunk in chunks:
        events += parser.feed(chunk)
    return events


def opened(parser: XMLStreamParser | None = None, header: bytes = BARE_HEADER) -> XMLStreamParser:
    parser = parser or fresh()
    [event] = parser.feed(header)
    assert isinstance(event, StreamOpened)
    return parser


def condition_of(data: bytes, parser: XMLStreamParser | None = None) -> str:
    parser = parser or fresh()
    with pytest.raises(RemoteProtocolError) as info:
        parser.feed(data)
    return info.value.stream_condition


# --- How lxml behaves: the facts the parser's design rests on ------------------------------------


def lxml_parser() -> Any:
    """An lxml pull parser set up exactly as XMLStreamParser sets up its own."""
    return _new_lxml_parser()


def lxml_feed(parser: Any, data: bytes) -> list[tuple[str, Any]]:
    parser.feed(data)
    return [(action, getattr(node, "tag", node)) for action, node in parser.read_events()]


def test_lxml_reports_a_doctype_only_in_docinfo() -> None:
    # No pull event, no error, even with an internal subset: lxml accepts a DOCTYPE silently. This is
    # why the parser rejects "<!" in the prolog before lxml sees it.
    parser = lxml_parser()
    events = lxml_feed(parser, b"<!DOCTYPE stream:stream [<!ENTITY x 'y'>]>" + BARE_HEADER)
    assert events == [("start", f"{{{NS_STREAMS}}}stream")]
    assert len(parser.feed_error_log) == 0
    parser.feed(b"<a/>")
    root = next(node for action, node in parser.read_events()).getparent()
    assert root.getroottree().docinfo.doctype.startswith("<!DOCTYPE")
    assert root.getroottree().docinfo.internalDTD is not None


def test_lxml_keeps_a_declared_entity_reference_unexpanded() -> None:
    parser = lxml_parser()
    parser.feed(b"<!DOCTYPE r [<!ENTITY x 'expanded'>]><r><a>&x;</a></r>")
    events = [(action, node.tag) for action, node in parser.read_events()]
    assert events == [("start", "r"), ("start", "a"), ("end", "a"), ("end", "r")]  # none for "&x;"
    root = parser.close()
    [entity] = list(root[0])
    assert isinstance(entity, etree._Entity)
    assert entity.text == "&x;"
    assert root[0].text is None  # nothing expanded


def test_lxml_swallows_an_undeclared_entity_reference() -> None:
    # No exception: lxml ignores this libxml2 error on purpose when entities are not resolved. The
    # containing element loses its end event, the document silently ends, and the next feed starts a
    # new document, so the next element is a root with no namespace. Only the feed_error_log of the
    # very feed that held the reference tells; the parser checks it after every feed.
    parser = lxml_parser()
    lxml_feed(parser, BARE_HEADER)
    assert lxml_feed(parser, b"<message>&foo;</message>") == [("start", f"{{{NS_CLIENT}}}message")]
    [entry] = list(parser.feed_error_log)
    assert entry.type == etree.ErrorTypes.ERR_UNDECLARED_ENTITY
    parser.feed(b"<iq/>")
    [(_, iq), _] = list(parser.read_events())
    assert iq.tag == "iq"
    assert iq.getparent() is None
    assert len(parser.feed_error_log) == 0  # the new document's log no longer shows it


def test_lxml_swallows_xml_names_errors_until_close() -> None:
    parser = lxml_parser()
    lxml_feed(parser, BARE_HEADER)
    assert lxml_feed(parser, b"<foo:m/>") == [("start", "foo:m"), ("end", "foo:m")]
    [entry] = list(parser.feed_error_log)
    assert entry.type == etree.ErrorTypes.NS_ERR_UNDEFINED_NAMESPACE


def test_lxml_obeys_a_declared_latin1_encoding() -> None:
    parser = lxml_parser()
    lxml_feed(parser, b"<?xml version='1.0' encoding='ISO-8859-1'?><r>")
    parser.feed(b"<a>\xe9</a>")
    [_, (_, element)] = list(parser.read_events())
    assert element.text == "\u00e9"  # decoded as Latin-1, no complaint


def test_lxml_remove_renames_the_default_namespace_and_copy_does_not() -> None:
    parser = lxml_parser()
    parser.feed(BARE_HEADER + b"<message><body/></message>")
    events: list[Any] = list(parser.read_events())
    root, message = events[0][1], events[-1][1]
    assert b"xmlns:stream" in etree.tostring(message)  # attached: every header namespace is copied
    clean = etree.tostring(message.__copy__())
    assert clean == b'<message xmlns="jabber:client"><body/></message>'
    root.remove(message)
    assert etree.tostring(message).startswith(b"<ns0:message xmlns:ns0=")


def test_lxml_keeps_every_warning_of_a_document() -> None:
    parser = lxml_parser()
    parser.feed(BARE_HEADER)
    for _ in range(3):
        parser.feed(b"<vCard xmlns='vcard-temp'/>")
    assert len(parser.feed_error_log) == 3  # WAR_NS_URI_RELATIVE, one per declaration, forever


# --- Events ---------------------------------------------------------------------------------------


def test_stream_opened() -> None:
    [event] = XMLStreamParser().feed(HEADER)
    assert event == StreamOpened(
        tag=f"{{{NS_STREAMS}}}stream",
        attributes={"to": "example.com", "version": "1.0", f"{{{NS_XML}}}lang": "en"},
        default_namespace=NS_CLIENT,
        stream_prefix="stream",
    )
    with pytest.raises(TypeError):
        event.attributes["to"] = "evil.example"  # type: ignore[index]


def test_stream_opened_with_streams_as_default_namespace() -> None:
    [event] = XMLStreamParser().feed(b"<stream xmlns='http://etherx.jabber.org/streams'>")
    assert isinstance(event, StreamOpened)
    assert event.tag == f"{{{NS_STREAMS}}}stream"
    assert event.default_namespace == NS_STREAMS
    assert event.stream_prefix is None


def test_stream_opened_reports_other_namespaces_as_they_are() -> None:
    # Checking the header's namespace is the stream state machine's job.
    [event] = XMLStreamParser().feed(
        b"<s:stream xmlns:s='urn:other' xmlns:stream='" + NS_STREAMS.encode() + b"'>"
    )
    assert isinstance(event, StreamOpened)
    assert event.tag == "{urn:other}stream"
    assert event.stream_prefix == "stream"
    assert event.default_namespace is None


def test_a_session() -> None:
    events = feed_all([SESSION])
    assert isinstance(events[0], StreamOpened)
    assert isinstance(events[-1], StreamClosed)
    received = events[1:-1]
    assert [type(e) for e in received] == [ElementReceived] * len(STANZAS)
    for raw, event in zip(STANZAS, received, strict=True):
        assert event.size == len(raw)  # exact: from "<" to the final ">", whitespace excluded
        reparsed = etree.fromstring(BARE_HEADER + raw + b"</stream:stream>")[0]
        assert etree.tostring(event.element, method="c14n", exclusive=True) == etree.tostring(
            reparsed, method="c14n", exclusive=True
        )


def test_element_is_detached_and_has_clean_namespaces() -> None:
    parser = opened()
    event = one_element(parser.feed(b"<message to='a@b'><body>hi</body></message>"))
    element = event.element
    assert element.getparent() is None
    assert element.getroottree().getroot() is element
    assert etree.tostring(element) == b'<message xmlns="jabber:client" to="a@b"><body>hi</body></message>'
    assert element.nsmap == {None: NS_CLIENT}
    assert element.tag == f"{{{NS_CLIENT}}}message"


def test_element_keeps_the_namespace_declarations_it_uses() -> None:
    parser = opened()
    event = one_element(
        parser.feed(b"<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features>")
    )
    assert etree.tostring(event.element) == (
        b'<stream:features xmlns:stream="http://etherx.jabber.org/streams">'
        b'<bind xmlns="urn:ietf:params:xml:ns:xmpp-bind"/></stream:features>'
    )
    event = one_element(parser.feed(b"<iq xmlns:unused='urn:x'><x:q xmlns:x='urn:q'/></iq>"))
    assert etree.tostring(event.element) == (
        b'<iq xmlns:unused="urn:x" xmlns="jabber:client"><x:q xmlns:x="urn:q"/></iq>'
    )


def test_whitespace_keepalives_produce_no_events() -> None:
    parser = opened()
    for keepalive in (b" ", b"\n", b"\r\n", b"\t \n  ", b" " * 100_000):
        assert parser.feed(keepalive) == []
    event = one_element(parser.feed(b"  <presence/>  "))
    assert event.size == len(b"<presence/>")


def test_stream_closed() -> None:
    parser = opened()
    assert parser.feed(b"</stream:stream>") == [StreamClosed()]
    assert parser.feed(b" \r\n") == []
    with pytest.raises(RemoteProtocolError) as info:
        parser.feed(b"<presence/>")
    assert info.value.stream_condition == "not-well-formed"


def test_self_closing_stream() -> None:
    events = XMLStreamParser().feed(b"<stream:stream xmlns:stream='" + NS_STREAMS.encode() + b"'/>")
    assert [type(e) for e in events] == [StreamOpened, StreamClosed]


def test_empty_feed() -> None:
    assert XMLStreamParser().feed(b"") == []
    assert opened().feed(b"") == []


# --- Chunking ------------------------------------------------------------------------------------


def test_byte_by_byte_equals_one_chunk() -> None:
    expected = describe(feed_all([SESSION]))
    assert describe(feed_all([SESSION[i : i + 1] for i in range(len(SESSION))])) == expected


def test_every_split_point_equals_one_chunk() -> None:
    expected = describe(feed_all([SESSION]))
    for split in range(1, len(SESSION)):
        assert describe(feed_all([SESSION[:split], SESSION[split:]])) == expected, split


def test_random_chunkings_equal_one_chunk() -> None:
    expected = describe(feed_all([SESSION]))
    rng = random.Random(6120)
    for _ in range(300):
        cuts = sorted(rng.sample(range(1, len(SESSION)), rng.randint(2, 40)))
        chunks = [SESSION[a:b] for a, b in zip([0, *cuts], [*cuts, len(SESSION)], strict=True)]
        assert describe(feed_all(chunks)) == expected, cuts


def test_many_stanzas_in_one_chunk_have_exact_sizes() -> None:
    stanzas = [b"<message id='%d'><body>%s</body></message>" % (i, b"x" * i) for i in range(200)]
    events = opened().feed(b"".join(stanzas))
    assert [one_element([e]).size for e in events] == [len(s) for s in stanzas]


class CountingFeeds:
    """Counts how often the lxml parsers an XMLStreamParser creates are fed, priming included."""

    def __init__(self) -> None:
        self.feeds = 0
        self.fed: list[bytes] = []
        self.parsers: list[CountingParser] = []

    def new_parser(self) -> CountingParser:
        parser = CountingParser(self, parser_module_new())
        self.parsers.append(parser)
        return parser


class CountingParser:
    """One lxml parser, wrapped to count its feeds."""

    def __init__(self, counter: CountingFeeds, parser: Any) -> None:
        self.counter = counter
        self.parser = parser

    def feed(self, data: bytes) -> None:
        self.counter.feeds += 1
        self.counter.fed.append(data)
        self.parser.feed(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.parser, name)


def parser_module_new() -> Any:
    return _new_lxml_parser()


def count_feeds(monkeypatch: pytest.MonkeyPatch) -> CountingFeeds:
    """Make every lxml parser created from now on count its feeds (white box)."""
    counter = CountingFeeds()
    monkeypatch.setattr("imactor.xmpp.parser._new_lxml_parser", counter.new_parser)
    return counter


def test_gt_in_attribute_values_costs_no_extra_feeds(monkeypatch: pytest.MonkeyPatch) -> None:
    # Stopping at every ">" would cost one lxml feed per byte of such a start tag.
    counter = count_feeds(monkeypatch)
    parser = opened()
    value = b">" * 50_000
    stanza = b"<message a='" + value + b"' b=\"'" + value + b'"><body>x</body></message>'
    chunks = [stanza[i : i + 4096] for i in range(0, len(stanza), 4096)]
    assert one_element(feed_all(chunks, parser)).size == len(stanza)
    assert counter.feeds <= len(chunks) + 2  # + 1: the stream header, fed to the same lxml parser
    header = b"<stream:stream xmlns:stream='" + NS_STREAMS.encode() + b"' a='" + b">" * 4000 + b"'>"
    counter = count_feeds(monkeypatch)
    parser = fresh()
    assert isinstance(
        feed_all([header[i : i + 100] for i in range(0, len(header), 100)], parser)[0], StreamOpened
    )
    assert counter.feeds == 1


# --- Restricted XML (RFC 6120 §11.1) -------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"<!DOCTYPE stream:stream>" + BARE_HEADER,
        b"<?xml version='1.0'?><!DOCTYPE stream:stream [<!ENTITY x 'y'>]>" + BARE_HEADER,
        b"<!DOCTYPE stream:stream SYSTEM 'http://example.com/evil.dtd'>" + BARE_HEADER,
        b"<!-- hello -->" + BARE_HEADER,
        b"<?xml-stylesheet href='a.xsl'?>" + BARE_HEADER,
        BARE_HEADER + b"<!-- hello -->",
        BARE_HEADER + b"<message><!-- hello --></message>",
        BARE_HEADER + b"<?pi?>",
        BARE_HEADER + b"<message><body><?pi data?></body></message>",
        BARE_HEADER + b"<message>&foo;</message>",
        BARE_HEADER + b"<message><body>a &lol9; b</body></message>",
        BARE_HEADER + b"<message to='&foo;'/>",
        b"<stream:stream xmlns:stream='http://etherx.jabber.org/streams' to='&foo;'>",
    ],
)
def test_restricted_xml(data: bytes) -> None:
    assert condition_of(data) == "restricted-xml"


def test_restricted_xml_split_across_chunks() -> None:
    for data in (b"<!DOCTYPE x>" + BARE_HEADER, BARE_HEADER + b"<message>&foo;</message>"):
        for split in range(1, len(data)):
            with pytest.raises(RemoteProtocolError) as info:
                feed_all([data[:split], data[split:]])
            assert info.value.stream_condition == "restricted-xml", split


def test_predefined_entities_and_character_references_are_allowed() -> None:
    stanza = b"<message a='&lt;&#x26;'><body>&amp;&lt;&gt;&apos;&quot;&#65;&#x42;</body></message>"
    event = one_element(opened().feed(stanza))
    assert event.element.get("a") == "<&"
    assert event.element[0].text == "&<>'\"AB"


def test_billion_laughs_never_expands() -> None:
    lol = (
        b"<!DOCTYPE lolz [<!ENTITY lol 'lol'>"
        + b"".join(
            b"<!ENTITY lol%d '%s'>" % (i, (b"&lol%d;" % (i - 1) if i > 1 else b"&lol;") * 10)
            for i in range(1, 10)
        )
        + b"]>"
    )
    started = time.perf_counter()
    for data in (
        lol + BARE_HEADER + b"<message>&lol9;</message>",  # in the prolog
        BARE_HEADER + lol + b"<message>&lol9;</message>",  # after the header
        BARE_HEADER + b"<message>" + lol + b"&lol9;</message>",  # inside a stanza
        BARE_HEADER + b"<message>&lol9;</message>",  # references without the declarations
    ):
        with pytest.raises(RemoteProtocolError) as info:
            feed_all([data])
        assert info.value.stream_condition in {"restricted-xml", "not-well-formed"}
    assert time.perf_counter() - started < 1.0


def test_quadratic_blowup_never_expands() -> None:
    data = b"<!DOCTYPE r [<!ENTITY a '" + b"a" * 50_000 + b"'>]>" + BARE_HEADER
    started = time.perf_counter()
    assert condition_of(data, XMLStreamParser(max_header_size=100_000)) == "restricted-xml"
    assert time.perf_counter() - started < 1.0


# --- Malformed XML and encodings ----------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"<message><body></message>",  # tag mismatch
        b"<message a='1' a='2'/>",  # duplicate attribute
        b"<foo:message/>",  # unbound element prefix (XML-Names)
        b"<message foo:a='1'/>",  # unbound attribute prefix
        b"<message xmlns:x='urn:a' xmlns:y='urn:a' x:a='1' y:a='2'/>",  # duplicate expanded name
        b"<message xmlns:x=''/>",  # empty prefixed namespace (XML-Names 1.0)
        b"<message>\x00</message>",  # NUL
        b"<message>\x01</message>",  # C0 control
        b"<message>&#0;</message>",  # reference to a non-character
        b"<message>]]></message>",
        b"<message>& </message>",  # "&" that starts no reference: libxml2 alone would wait for ";"
        b"<message>AT&T rocks</message>",
        b"<message>&#12a;</message>",
        b"<?xml version='1.0'?>",  # XML declaration after the start
        b"<!DOCTYPE x>",  # DOCTYPE after the root started
        b"</message>",
        b"<message>\xff</message>",  # bytes that are not UTF-8
        b"<message>\xc3(</message>",  # truncated sequence
        b"<message>\xed\xa0\x80</message>",  # UTF-8 encoded surrogate
        # A namespace name that is not a URI reference (XML-Names §2.2): found by fuzzing; every
        # later parse of the stanza's bytes (`Stanza.element`) refuses it.
        b"<message><x xmlns='urn:a]]>b'/></message>",
        b"<message xmlns:p='a b'><p:x/></message>",
    ],
)
def test_not_well_formed(data: bytes) -> None:
    assert condition_of(data, opened()) == "not-well-formed"


@pytest.mark.parametrize(
    "data",
    [
        b"<stream:stream xmlns='jabber:client'>",  # unbound stream prefix
        b"x" + BARE_HEADER,
        b"  <?xml version='1.0'?>" + BARE_HEADER,  # declaration not at the start
        b"<stream:stream xmlns:stream='" + NS_STREAMS.encode() + b"' a='1' a='2'>",
        b"\xef\xbb\xbf" + BARE_HEADER,  # RFC 6120 §11.6: U+FEFF is a character, not a BOM
    ],
)
def test_not_well_formed_header(data: bytes) -> None:
    assert condition_of(data) == "not-well-formed"


# A TLS 1.2/1.3 ClientHello begins: handshake record (0x16), version 3.1, length, then ClientHello (1).
CLIENT_HELLO_START = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"


@pytest.mark.parametrize(
    ("first_bytes", "condition"),
    [
        pytest.param(CLIENT_HELLO_START, "not-well-formed", id="tls-client-hello"),
        pytest.param(b"GET / HTTP/1.1\r\n", "not-well-formed", id="http-request"),
        pytest.param(b" \r\n\tx", "not-well-formed", id="text-after-whitespace"),
        pytest.param(b"\xef", "not-well-formed", id="utf8-bom"),
        pytest.param(b"\xfe", "unsupported-encoding", id="utf16-bom"),
    ],
)
def test_bytes_that_cannot_begin_a_stream_fail_as_they_arrive(first_bytes: bytes, condition: str) -> None:
    """No waiting for a '>' that a non-XML peer never sends: the first byte that is neither
    whitespace nor '<' fails the stream, even when it comes alone, after whitespace fed earlier."""
    parser = XMLStreamParser()
    whitespace = len(first_bytes) - len(first_bytes.lstrip(b" \t\r\n"))
    for index in range(whitespace):
        assert parser.feed(first_bytes[index : index + 1]) == []
    assert condition_of(first_bytes[whitespace : whitespace + 1], parser) == condition


@pytest.mark.parametrize(
    "data",
    [
        b"<?xml version='1.0' encoding='ISO-8859-1'?>" + BARE_HEADER,
        b'<?xml version="1.0" encoding="UTF-16"?>' + BARE_HEADER,
        b"<?xml version='1.0' encoding='us-ascii'?>" + BARE_HEADER,
        BARE_HEADER.decode().encode("utf-16"),  # with a byte order mark
        BARE_HEADER.decode().encode("utf-16-le"),
        BARE_HEADER.decode().encode("utf-16-be"),
        BARE_HEADER.decode().encode("utf-32"),
    ],
)
def test_unsupported_encoding(data: bytes) -> None:
    assert condition_of(data) == "unsupported-encoding"


def test_utf8_declarations_are_accepted() -> None:
    for declaration in (
        b"<?xml version='1.0' encoding='UTF-8'?>",
        b'<?xml version="1.0" encoding="utf-8" ?>',
    ):
        [event] = XMLStreamParser().feed(declaration + BARE_HEADER)
        assert isinstance(event, StreamOpened)


def test_character_data_at_stream_level_is_bad_format() -> None:
    for data in (b"hello", b"&amp;<presence/>", b"<![CDATA[x]]><presence/>", b"<presence/>x<presence/>"):
        assert condition_of(data, opened()) == "bad-format", data


# --- Limits ----------------------------------------------------------------------------------------


def test_stanza_at_the_limit_passes_and_one_byte_more_fails() -> None:
    stanza = b"<message><body>" + b"x" * 100 + b"</body></message>"
    event = one_element(opened(XMLStreamParser(max_stanza_size=len(stanza))).feed(stanza))
    assert event.size == len(stanza)
    parser = opened(XMLStreamParser(max_stanza_size=len(stanza) - 1))
    assert condition_of(stanza, parser) == "policy-violation"


def test_limit_applies_per_stanza() -> None:
    stanza = b"<message><body>" + b"x" * 100 + b"</body></message>"
    parser = opened(XMLStreamParser(max_stanza_size=len(stanza)))
    events = parser.feed(stanza * 50 + b" " * 10_000 + stanza)
    assert len(events) == 51


@pytest.mark.parametrize(
    ("opening", "filler"),
    [
        (b"<message><body>", b"x" * 1024),  # endless text
        (b"<message>", b"<b>x</b>" * 128),  # endless children
        (b"<message to='", b"x" * 1024),  # endless start tag
        (b"<message></message", b" " * 1024),  # endless end tag
        (b"<![CDATA[", b"x" * 1024),  # endless character data at stream level
    ],
)
def test_endless_element_is_cut_off_as_it_streams_in(opening: bytes, filler: bytes) -> None:
    limit = 64 * 1024
    parser = opened(XMLStreamParser(max_stanza_size=limit))
    parser.feed(opening)
    fed = len(opening)
    while fed + len(filler) <= limit:
        assert parser.feed(filler) == []
        fed += len(filler)
    # The first chunk that crosses the limit is refused, before it reaches lxml.
    assert condition_of(filler, parser) == "policy-violation"


def test_header_limit() -> None:
    header = b"<stream:stream xmlns:stream='" + NS_STREAMS.encode() + b"' to='" + b"x" * 100 + b"'>"
    [event] = XMLStreamParser(max_header_size=len(header)).feed(header)
    assert isinstance(event, StreamOpened)
    assert condition_of(header, XMLStreamParser(max_header_size=len(header) - 1)) == "policy-violation"


def test_a_namespace_with_a_brace_is_not_well_formed() -> None:
    """Found by the BOSH fuzzer: lxml names an attribute in such a namespace "{urn:a}b}x" in
    Clark notation and cannot look that key up again (copying the attributes once raised
    KeyError out of `feed`). A brace cannot be in a URI (RFC 3986 §2), and a namespace name must
    be a URI reference (Namespaces in XML §2.2): refused, in the header as in a stanza, since no
    later parse of the bytes would take it either."""
    header = HEADER[:-1] + b" xmlns:x='urn:a}b' x:restart='true'>"
    assert condition_of(header) == "not-well-formed"
    assert condition_of(b"<presence xmlns:x='urn:a}b' x:y='1'/>", opened()) == "not-well-formed"


def test_endless_header_is_cut_off() -> None:
    parser = XMLStreamParser(max_header_size=8192)
    parser.feed(b"<stream:stream to='")
    for _ in range(7):
        assert parser.feed(b"x" * 1024) == []
    assert condition_of(b"x" * 1024, parser) == "policy-violation"


def test_nesting_limit() -> None:
    depth_ok = MAX_DEPTH - 1  # the stream root is the first level
    nested = b"<a>" * depth_ok + b"</a>" * depth_ok
    event = one_element(opened().feed(nested))
    assert event.size == len(nested)
    too_deep = b"<a>" * (depth_ok + 1)
    assert condition_of(too_deep, opened()) == "policy-violation"


def test_nesting_bomb_fails_fast() -> None:
    started = time.perf_counter()
    bomb = b"<a>" * 80_000  # under max_stanza_size, so the depth limit is what stops it
    assert condition_of(bomb, opened()) == "policy-violation"
    assert time.perf_counter() - started < 1.0


def test_size_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        XMLStreamParser(max_stanza_size=0)
    with pytest.raises(ValueError, match="positive"):
        XMLStreamParser(max_header_size=0)


# --- Lifecycle -------------------------------------------------------------------------------------


def test_failed_parser_refuses_input_until_reset() -> None:
    parser = opened()
    with pytest.raises(RemoteProtocolError):
        parser.feed(b"<a></b>")
    with pytest.raises(LocalProtocolError):
        parser.feed(b"<presence/>")
    parser.reset()
    assert [type(e) for e in parser.feed(BARE_HEADER + b"<presence/>")] == [StreamOpened, ElementReceived]


def test_reset_starts_a_new_stream_and_drops_buffered_input() -> None:
    parser = opened()
    assert parser.feed(b"<message><body>sent before TLS") == []
    parser.reset()
    events = parser.feed(HEADER + b"<presence/>")
    assert [type(e) for e in events] == [StreamOpened, ElementReceived]
    assert etree.tostring(one_element(events[1:]).element) == b'<presence xmlns="jabber:client"/>'


def test_close() -> None:
    parser = opened()
    parser.feed(b"<message>")
    parser.close()
    parser.close()  # idempotent
    with pytest.raises(LocalProtocolError):
        parser.feed(b"</message>")


def test_memory_stays_flat_over_a_long_stream() -> None:
    parser = opened()
    stanzas = b"".join(b"<message id='%d'><body>x</body></message>\n" % i for i in range(2000))
    # One feed: the same lxml document carries every stanza, and must not keep them.
    events = parser.feed(stanzas + b"<message>")
    assert len(events) == 2000
    root = parser._root  # white box: the live lxml tree must not keep stanzas or whitespace
    assert root is not None
    assert len(root) == 1  # only the element still open
    assert root.text is None


def test_warnings_do_not_pile_up(monkeypatch: pytest.MonkeyPatch) -> None:
    # libxml2 warns about the relative namespace URI "vcard-temp" on every declaration; the parser
    # starts a new lxml document (primed with the stream header) before the warning log grows past
    # a bound, also within one feed.
    counter = count_feeds(monkeypatch)
    parser = opened(header=HEADER)
    stanza = b"<iq id='1' type='get'><vCard xmlns='vcard-temp'/></iq>"
    events = parser.feed(stanza * 1000)
    assert len(events) == 1000
    assert all(one_element([e]).element[0].tag == "{vcard-temp}vCard" for e in events)
    primed = sum(1 for data in counter.fed if data == HEADER)
    assert 1 < primed < 100  # the first document, then each new one after a rollover
    assert all(len(p.feed_error_log) <= 100 for p in counter.parsers)  # white box
    assert parser.feed(b"</stream:stream>") == [StreamClosed()]


# --- The lxml parser is lent to a pool between elements ------------------------------------------

PREFIXED_HEADER = (
    b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'"
    b" xmlns:db='jabber:server:dialback' xmlns:foo='urn:foo'>"
)


def pooled(pool: ParserPool, header: bytes = PREFIXED_HEADER) -> XMLStreamParser:
    return opened(XMLStreamParser(pool=pool), header)


def test_lxml_parser_lent_to_the_pool_between_elements() -> None:
    pool = ParserPool()
    parser = pooled(pool)
    assert not parser.holds_parser()  # nothing held once the header is parsed...
    assert pool.idle_count() == 1  # ...the header's lxml parser waits in the pool
    for i in range(3):
        [event] = parser.feed(b"<message id='%d'><body>hi</body><foo:x/></message>" % i)
        assert not parser.holds_parser()
        assert pool.idle_count() == 1  # the same one, borrowed and given back
        assert isinstance(event, ElementReceived)
        element = event.element
        # The borrowed parser has the stream's bindings: the default namespace and the prefixes
        # declared only in the header.
        assert element.tag == "{jabber:client}message"
        assert [child.tag for child in element] == ["{jabber:client}body", "{urn:foo}x"]
        assert etree.tostring(element) == (
            b'<message xmlns="jabber:client" xmlns:foo="urn:foo" id="%d">'
            b"<body>hi</body><foo:x/></message>" % i
        )
        assert event.size == len(b"<message id='%d'><body>hi</body><foo:x/></message>" % i)
    [event] = parser.feed(b"<stream:features/>")
    assert one_element([event]).element.tag == "{http://etherx.jabber.org/streams}features"
    assert parser.feed(b"</stream:stream>") == [StreamClosed()]
    assert not parser.holds_parser()


def test_streams_with_the_same_bindings_share_one_lxml_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    pool = ParserPool()
    counter = count_feeds(monkeypatch)
    streams = [pooled(pool, HEADER) for _ in range(50)]
    for round_ in range(3):
        for index, stream in enumerate(streams):
            element = one_element(stream.feed(b"<message id='%d-%d'/>" % (round_, index))).element
            assert element.get("id") == f"{round_}-{index}"
    # Each header needs a new document (the bindings are known only once it is parsed). The pool
    # keeps `per_key` parsers between elements; a parser given back beyond that ends its document
    # (the stream root's end tag) and parses the next header. So `per_key` parsers wait between
    # elements, one more serves the headers, and every later element reuses one of those.
    assert len(counter.parsers) == pool.per_key + 1
    assert pool.idle_count() == pool.per_key


def test_streams_with_other_bindings_get_other_parsers() -> None:
    pool = ParserPool()
    with_foo = pooled(pool, PREFIXED_HEADER)
    without = pooled(pool, BARE_HEADER)
    # "foo" is bound only in the first stream's header: the second must not parse it.
    assert one_element(with_foo.feed(b"<message><foo:x/></message>")).element[0].tag == "{urn:foo}x"
    assert condition_of(b"<message><foo:x/></message>", without) == "not-well-formed"
    assert one_element(with_foo.feed(b"<message><foo:y/></message>")).element[0].tag == "{urn:foo}y"


def test_a_failed_parser_is_not_lent_again() -> None:
    pool = ParserPool()
    parser = pooled(pool, BARE_HEADER)
    assert pool.idle_count() == 1
    assert condition_of(b"<message><bar:x/></message>", parser) == "not-well-formed"
    assert pool.idle_count() == 0  # closed, not given back half-used
    other = pooled(pool, BARE_HEADER)
    assert one_element(other.feed(b"<message><body>ok</body></message>")).element[0].text == "ok"


def test_a_reused_parser_checks_a_new_stream_from_its_first_byte() -> None:
    """A stream header takes a parser whose old document ended (`ParserPool.take_fresh`); lxml
    starts that parser's error log afresh at the new document's first feed. Counting the old
    document's entries (warnings on relative namespace URIs, its end) as already seen skipped the
    new header's own errors: a header with an unbound prefix was accepted. Found by fuzzing
    (xml_parser: a disagreement between reads that showed only after other inputs)."""
    pool = ParserPool()
    first = pooled(pool, BARE_HEADER)
    warned = b"<iq type='get' id='v'><vCard xmlns='vcard-temp'/><x xmlns='storage:rosternotes'/></iq>"
    one_element(first.feed(warned))  # two warnings: relative namespace URIs (not errors)
    assert isinstance(first.feed(b"</stream:stream>")[-1], StreamClosed)  # its parser is kept for reuse
    unbound = b"<stream:stream xmlns='jabber:client' to='example.com' version='1.0'>"
    assert condition_of(unbound + b"<presence/>", XMLStreamParser(pool=pool)) == "not-well-formed"
    # And a good stream after it still parses.
    good = pooled(pool, BARE_HEADER)
    assert one_element(good.feed(b"<presence/>")).element.tag == "{jabber:client}presence"


def live_elements() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, etree._Element))


@pytest.mark.parametrize("restarts", [0, 2])
def test_streams_that_end_without_their_end_tag_leave_nothing_behind(restarts: int) -> None:
    """A stream restarted (STARTTLS, SASL success: RFC 6120 §5.4.3.3, §6.4.6) or dropped ends its
    lxml document without the root's end event; lxml keeps such a root on the parser. A closed
    parser reused for the next stream header kept every one of them: 2 per login (3 KB each, with
    their documents), for as long as the parser lived. Nothing may pile up with the streams."""
    pool = ParserPool()
    before = live_elements()
    for _ in range(300):
        parser = pooled(pool, BARE_HEADER)
        one_element(parser.feed(b"<presence/>"))
        for _restart in range(restarts):
            parser.reset()
            opened(parser, BARE_HEADER)
        parser.close()  # the connection dropped: no </stream:stream>
        clean = pooled(pool, BARE_HEADER)  # and one that ends well, whose parser may be reused
        assert isinstance(clean.feed(b"</stream:stream>")[-1], StreamClosed)
        clean.close()
    del parser, clean
    # What the pool holds: at most `per_key` idle parsers, each with its stream root.
    assert live_elements() - before <= pool.per_key


def test_parsers_that_streams_leave_are_freed_without_the_cyclic_collector() -> None:
    """An lxml parser whose stream root is still open is in a reference cycle (the root's document
    keeps the parser, the parser keeps the root on its stack): dropped like that, it and its
    libxml2 buffers wait for a full collection, which a worker runs rarely (`tune_gc`). Streams
    that overflow the pool, restart (STARTTLS, SASL) or drop must leave no such parser behind."""
    pool = ParserPool(max_uses=50)
    gc.collect()
    gc.disable()  # what is not freed by reference counting stays visible in gc.get_objects()
    try:
        before = sum(1 for o in gc.get_objects() if isinstance(o, etree.XMLPullParser))
        for _ in range(3):
            streams = [pooled(pool, BARE_HEADER) for _ in range(40)]  # more than `per_key` at once
            for stream in streams:
                one_element(stream.feed(b"<presence/>"))
                stream.reset()  # a restart: a new header follows
                opened(stream, BARE_HEADER)
                one_element(stream.feed(b"<presence/>"))
            for stream in streams:
                stream.close()  # dropped: no </stream:stream>
            pool_less = opened(XMLStreamParser(pool=None), BARE_HEADER)
            one_element(pool_less.feed(b"<presence/>"))
            pool_less.close()
            del streams, stream, pool_less
        pool.clear()
        after = sum(1 for o in gc.get_objects() if isinstance(o, etree.XMLPullParser))
    finally:
        gc.enable()
    assert after - before == 0


def test_pooled_parsers_retire_after_max_uses(monkeypatch: pytest.MonkeyPatch) -> None:
    pool = ParserPool(max_uses=10)
    parser = pooled(pool, BARE_HEADER)
    counter = count_feeds(monkeypatch)
    for i in range(25):
        one_element(parser.feed(b"<presence id='%d'/>" % i))
    assert len(counter.parsers) == 2  # the header's parser retired after 10, then two more
    assert pool.idle_count() == 1


def test_lxml_parser_kept_inside_an_element() -> None:
    pool = ParserPool()
    parser = pooled(pool)
    for part in (b"<", b"message id='a'>", b"<body>one ", b"two</body></mess", b"age>"):
        events = parser.feed(part)
        if part != b"age>":
            assert events == []
            assert parser.holds_parser()  # half an element lives in lxml
            assert pool.idle_count() == 0
    element = one_element(events).element
    assert element.findtext("{jabber:client}body") == "one two"
    assert not parser.holds_parser()
    # Whitespace keepalives neither borrow nor need a parser.
    assert parser.feed(b"\n \n") == []
    assert not parser.holds_parser()


def test_without_a_pool_the_owner_releases_the_parser() -> None:
    parser = opened(XMLStreamParser(pool=None), PREFIXED_HEADER)
    assert parser.holds_parser()
    one_element(parser.feed(b"<message><foo:x/></message>"))
    assert parser.holds_parser()  # kept until the owner says the stream is quiet
    parser.release_idle()
    assert not parser.holds_parser()
    # The next element gets a fresh parser primed with the saved header.
    assert one_element(parser.feed(b"<message><foo:x/></message>")).element[0].tag == "{urn:foo}x"


def test_errors_still_found_with_a_borrowed_parser() -> None:
    pool = ParserPool()
    for data, condition in (
        (b"<message><bar:x/></message>", "not-well-formed"),  # unbound prefix
        (b"<message>&foo;</message>", "restricted-xml"),
        (b"<!-- hi --><presence/>", "restricted-xml"),
    ):
        parser = pooled(pool)
        one_element(parser.feed(b"<presence/>"))
        assert condition_of(data, parser) == condition


def test_reset_after_a_release_parses_a_new_stream() -> None:
    parser = opened(header=PREFIXED_HEADER)
    one_element(parser.feed(b"<presence/>"))
    parser.reset()
    opened(parser)  # BARE_HEADER: no "foo" prefix any more
    one_element(parser.feed(b"<presence/>"))
    assert condition_of(b"<message><foo:x/></message>", parser) == "not-well-formed"


def test_a_stream_header_takes_a_parser_whose_document_ended(monkeypatch: pytest.MonkeyPatch) -> None:
    # A login parses three headers; an lxml parser takes a new document after close(), so a
    # closed stream's parser serves the next stream's header, with nothing of the old one.
    pool = ParserPool()
    counter = count_feeds(monkeypatch)
    first = pooled(pool, PREFIXED_HEADER)
    one_element(first.feed(b"<message><foo:x/></message>"))
    assert first.feed(b"</stream:stream>") == [StreamClosed()]
    assert pool.idle_count() == 0  # nothing open: the closed parser waits for a new document
    assert len(counter.parsers) == 1
    second = pooled(pool, BARE_HEADER)
    assert len(counter.parsers) == 1  # the same lxml parser, a new document
    assert condition_of(b"<message><foo:x/></message>", second) == "not-well-formed"  # no old "foo"
    third = pooled(pool, BARE_HEADER)  # the failed one was not kept
    assert len(counter.parsers) == 2
    assert one_element(third.feed(b"<presence/>")).element.tag == "{jabber:client}presence"
