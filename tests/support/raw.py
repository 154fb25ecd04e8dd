"""A raw XMPP client over trio sockets, for tests about bytes on the wire.

It parses what the server sends with its own lxml pull parser (not the server's), so a test sees
exactly the elements on the wire.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import ssl
from collections.abc import Callable

import trio
from lxml import etree

STREAM_NS = "http://etherx.jabber.org/streams"
TLS_NS = "urn:ietf:params:xml:ns:xmpp-tls"
HEADER = (
    "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'"
    " to='{domain}' version='1.0'>"
)
PING = "<ping xmlns='urn:xmpp:ping'/>"
_iq_ids = itertools.count()


def client_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the test server's certificate is self-signed
    return context


class RawClient:
    def __init__(self, stream: trio.abc.Stream, domain: str) -> None:
        self.stream = stream
        self.domain = domain
        self._new_parser()
        self.closed = False

    def _new_parser(self) -> None:
        self.parser = etree.XMLPullParser(events=("start", "end"), resolve_entities=False, no_network=True)
        self.depth = 0
        self.elements: list[etree._Element] = []
        self.header: etree._Element | None = None

    @classmethod
    async def connect(cls, port: int, domain: str = "localhost", *, direct_tls: bool = False,
                      context: ssl.SSLContext | None = None,
                      host: str = "127.0.0.1") -> RawClient:  # fmt: skip
        """With `direct_tls`, TLS from the first byte with `context` (default: `client_context()`)."""
        stream: trio.abc.Stream = await trio.open_tcp_stream(host, port)
        if direct_tls:
            tls = trio.SSLStream(stream, context or client_context(), server_hostname=domain)
            await tls.do_handshake()
            stream = tls
        return cls(stream, domain)

    async def send(self, data: str | bytes) -> None:
        await self.stream.send_all(data.encode() if isinstance(data, str) else data)

    async def open_stream(self) -> etree._Element:
        """Send a header; return the <stream:features/>."""
        self._new_parser()
        await self.send(HEADER.format(domain=self.domain))
        return await self.expect(f"{{{STREAM_NS}}}features")

    async def _read(self) -> bool:
        try:
            data = await self.stream.receive_some(65536)
        except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError):
            data = b""
        if not data:
            self.closed = True
            return False
        self.parser.feed(data)
        for event, element in self.parser.read_events():
            if event == "start":
                self.depth += 1
                if self.depth == 1:
                    self.header = element
            else:
                self.depth -= 1
                if self.depth == 1:
                    self.elements.append(element)
                elif self.depth == 0:
                    self.closed = True
        return True

    async def next_element(self, match: Callable[[etree._Element], bool] | None = None) -> etree._Element:
        """The next top-level element (that satisfies `match`); raises EOFError if the stream ends."""
        while True:
            for index, element in enumerate(self.elements):
                if match is None or match(element):
                    del self.elements[: index + 1]
                    return element
            if self.closed or not await self._read():
                raise EOFError("stream closed")

    async def expect(self, tag: str) -> etree._Element:
        return await self.next_element(lambda e: e.tag == tag)

    async def stream_error(self) -> str:
        """Wait for a stream error and the close; return the condition's local name."""
        error = await self.expect(f"{{{STREAM_NS}}}error")
        condition = next(etree.QName(child).localname for child in error
                         if etree.QName(child).namespace == "urn:ietf:params:xml:ns:xmpp-streams"
                         and etree.QName(child).localname != "text")  # fmt: skip
        return condition

    async def wait_closed(self) -> None:
        while not self.closed:
            if not await self._read():
                break

    async def request_starttls(self) -> None:
        """Open the stream and ask for STARTTLS; return at <proceed/>, before the TLS handshake."""
        await self.open_stream()
        await self.send(f"<starttls xmlns='{TLS_NS}'/>")
        await self.expect(f"{{{TLS_NS}}}proceed")

    async def starttls(self, context: ssl.SSLContext | None = None) -> etree._Element:
        """STARTTLS with `context` (default: `client_context()`); return the features offered under TLS."""
        await self.request_starttls()
        tls = trio.SSLStream(self.stream, context or client_context(), server_hostname=self.domain)
        await tls.do_handshake()
        self.stream = tls
        return await self.open_stream()

    async def login(self, username: str, password: str, resource: str = "raw") -> str:
        """STARTTLS (unless already TLS), SASL PLAIN, bind; returns the bound full JID."""
        if isinstance(self.stream, trio.SSLStream):
            await self.open_stream()
        else:
            await self.starttls()
        token = base64.b64encode(f"\0{username}\0{password}".encode()).decode()
        await self.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>")
        result = await self.next_element()
        if result.tag != "{urn:ietf:params:xml:ns:xmpp-sasl}success":
            raise PermissionError(etree.tostring(result).decode())
        await self.open_stream()
        await self.send(
            "<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
            f"<resource>{resource}</resource></bind></iq>"
        )
        bound = await self.next_element(lambda e: e.get("id") == "bind1")
        jid = bound.findtext(".//{urn:ietf:params:xml:ns:xmpp-bind}jid")
        assert jid, etree.tostring(bound)
        return jid

    async def iq(self, payload: str, *, to: str | None = None, type_: str = "get") -> etree._Element:
        """Send an IQ with a fresh id; return the IQ that answers it (result or error)."""
        iq_id = f"iq{next(_iq_ids)}"
        to_attr = f" to='{to}'" if to is not None else ""
        await self.send(f"<iq type='{type_}' id='{iq_id}'{to_attr}>{payload}</iq>")
        return await self.next_element(lambda e: e.tag == "{jabber:client}iq" and e.get("id") == iq_id)

    async def aclose(self) -> None:
        with trio.move_on_after(2):
            closed_already = (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError)
            with contextlib.suppress(*closed_already):
                await self.stream.aclose()


async def assert_pong(client: RawClient, to: str = "localhost") -> None:
    """A XEP-0199 ping to `to` is answered with a result."""
    reply = await client.iq(PING, to=to)
    assert reply.get("type") == "result", etree.tostring(reply)


S2S_HEADER = (
    "<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams'"
    " xmlns:db='jabber:server:dialback' from='{origin}' to='{domain}' version='1.0'>"
)
DIALBACK_NS = "jabber:server:dialback"


class RawServer(RawClient):
    """A raw remote server's stream to the test server (RFC 6120 §2.4 s2s: jabber:server, the
    dialback prefix declared), from the domain `origin`."""

    def __init__(self, stream: trio.abc.Stream, domain: str, origin: str) -> None:
        super().__init__(stream, domain)
        self.origin = origin

    @classmethod
    async def connect_to(cls, port: int, domain: str, origin: str, *,
                         context: ssl.SSLContext | None = None) -> RawServer:  # fmt: skip
        """With `context`, TLS from the first byte (XEP-0368)."""
        stream: trio.abc.Stream = await trio.open_tcp_stream("127.0.0.1", port)
        if context is not None:
            tls = trio.SSLStream(stream, context, server_hostname=domain)
            await tls.do_handshake()
            stream = tls
        return cls(stream, domain, origin)

    async def open_stream(self) -> etree._Element:
        self._new_parser()
        await self.send(S2S_HEADER.format(origin=self.origin, domain=self.domain))
        return await self.expect(f"{{{STREAM_NS}}}features")

    @property
    def stream_id(self) -> str:
        assert self.header is not None
        return self.header.get("id", "")

    async def dialback(self, key: str) -> etree._Element:
        """Send our key (XEP-0220 §2.1.1); return the receiving server's <db:result/> verdict."""
        await self.send(
            f"<db:result xmlns:db='{DIALBACK_NS}' from='{self.origin}' to='{self.domain}'>{key}</db:result>"
        )
        return await self.expect(f"{{{DIALBACK_NS}}}result")
