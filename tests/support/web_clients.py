"""Small web XMPP clients for tests (trio): RFC 7395 over trio-websocket, and raw HTTP requests.

No maintained Python XMPP library speaks WebSocket or BOSH (slixmpp and aioxmpp are TCP only),
so these speak the framing themselves and stay close to the wire: a test sees every element.
`WsClient` parses each message on its own (one element per message, as RFC 7395 §3.3.3 says) and
keeps what it did not wait for in `inbox`.
"""

from __future__ import annotations

import base64
import contextlib
import ssl
from collections.abc import AsyncIterator, Callable, Sequence

import trio
import trio_websocket
from lxml import etree

from tests.support.raw import client_context

FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"
STREAMS = "http://etherx.jabber.org/streams"
SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
BIND = "urn:ietf:params:xml:ns:xmpp-bind"
SM = "urn:xmpp:sm:3"
C = "{jabber:client}"
OPEN = f"<open xmlns='{FRAMING}' to='{{domain}}' version='1.0'/>"
CLOSE = f"<close xmlns='{FRAMING}'/>"

Element = etree._Element
Match = Callable[[Element], bool]


def tag(namespace: str, name: str) -> str:
    return f"{{{namespace}}}{name}"


def show(element: Element) -> str:
    return etree.tostring(element).decode()


class WsClient:
    """One RFC 7395 connection."""

    def __init__(self, ws: trio_websocket.WebSocketConnection, domain: str) -> None:
        self.ws = ws
        self.domain = domain
        self.inbox: list[Element] = []
        self.jid: str | None = None

    async def send(self, frame: str) -> None:
        await self.ws.send_message(frame)

    async def receive(self) -> Element:
        """The next message, parsed; raises `trio_websocket.ConnectionClosed` at the end."""
        if self.inbox:
            return self.inbox.pop(0)
        message = await self.ws.get_message()
        assert isinstance(message, str), f"a binary message: {message!r}"
        return etree.fromstring(message.encode())

    async def expect(self, match: Match) -> Element:
        """The first element (queued or to come) that matches; others stay in `inbox`."""
        for index, element in enumerate(self.inbox):
            if match(element):
                del self.inbox[index]
                return element
        while True:
            message = await self.ws.get_message()
            assert isinstance(message, str)
            element = etree.fromstring(message.encode())
            if match(element):
                return element
            self.inbox.append(element)

    async def open(self) -> Element:
        """Send <open/>; return the features that follow the server's <open/>."""
        await self.send(OPEN.format(domain=self.domain))
        opened = await self.receive()
        assert opened.tag == tag(FRAMING, "open"), show(opened)
        features = await self.receive()
        assert features.tag == tag(STREAMS, "features"), show(features)
        return features

    async def login(self, username: str, password: str, resource: str = "web") -> str:
        """PLAIN (the transport is HTTPS or loopback), then bind; returns the bound JID."""
        features = await self.open()
        mechanisms = [m.text for m in features.iter(tag(SASL, "mechanism"))]
        assert "PLAIN" in mechanisms, show(features)
        token = base64.b64encode(f"\0{username}\0{password}".encode()).decode()
        await self.send(f"<auth xmlns='{SASL}' mechanism='PLAIN'>{token}</auth>")
        success = await self.receive()
        assert success.tag == tag(SASL, "success"), show(success)
        await self.open()
        return await self.bind(resource)

    async def bind(self, resource: str) -> str:
        await self.send(
            f"<iq xmlns='jabber:client' type='set' id='bind'><bind xmlns='{BIND}'>"
            f"<resource>{resource}</resource></bind></iq>"
        )
        result = await self.receive()
        jid = result.findtext(f"{tag(BIND, 'bind')}/{tag(BIND, 'jid')}")
        assert result.get("type") == "result", show(result)
        assert jid, show(result)
        self.jid = jid
        return jid

    async def close(self) -> Element:
        """Send <close/>; return the server's answer (its <close/>)."""
        await self.send(CLOSE)
        return await self.receive()


async def connect_ws(
    nursery: trio.Nursery,
    port: int,
    *,
    domain: str = "localhost",
    tls: bool = False,
    path: str = "/xmpp-websocket",
    subprotocols: Sequence[str] = ("xmpp",),
    origin: str | None = None,
    max_message_size: int = 1 << 22,
) -> WsClient:
    """A WebSocket to the server's HTTP (or, with `tls`, HTTPS) port, in `nursery`."""
    headers = [] if origin is None else [("Origin", origin)]
    context: ssl.SSLContext | None = client_context() if tls else None
    ws = await trio_websocket.connect_websocket(
        nursery, "127.0.0.1", port, path, use_ssl=context or False, subprotocols=list(subprotocols),
        extra_headers=headers, max_message_size=max_message_size,
    )  # fmt: skip
    return WsClient(ws, domain)


@contextlib.asynccontextmanager
async def ws_client(port: int, **options: object) -> AsyncIterator[WsClient]:
    """`connect_ws` for the duration of a block; the WebSocket is closed after it."""
    async with trio.open_nursery() as nursery:
        client = await connect_ws(nursery, port, **options)  # type: ignore[arg-type]
        try:
            yield client
        finally:
            with trio.move_on_after(2):
                await client.ws.aclose()
            nursery.cancel_scope.cancel()


async def ws_refused(port: int, **options: object) -> int:
    """Try a WebSocket handshake that the server must refuse; its HTTP status."""
    statuses: list[int] = []
    try:
        async with ws_client(port, **options):
            pass
    except* trio_websocket.ConnectionRejected as group:
        statuses.extend(
            e.status_code for e in group.exceptions if isinstance(e, trio_websocket.ConnectionRejected)
        )
    assert statuses, "the handshake was accepted"
    return statuses[0]


async def http_request(port: int, data: bytes, *, tls: bool = False, read_all: bool = True) -> bytes:
    """Send raw bytes to the HTTP port; everything the server answers until it closes (or, without
    `read_all`, the first chunk)."""
    stream: trio.abc.Stream = await trio.open_tcp_stream("127.0.0.1", port)
    if tls:
        stream = trio.SSLStream(stream, client_context(), server_hostname="localhost")
    async with stream:
        await stream.send_all(data)
        received = b""
        while True:
            try:
                chunk = await stream.receive_some(65536)
            except trio.BrokenResourceError:
                break
            if not chunk:
                break
            received += chunk
            if not read_all:
                break
        return received


def status_of(response: bytes) -> int:
    """The status code of a raw HTTP response."""
    return int(response.split(b" ", 2)[1])


HTTPBIND = "http://jabber.org/protocol/httpbind"
XBOSH = "urn:xmpp:xbosh"


def http_post(path: str, body: bytes, *, origin: str | None = None, close: bool = True) -> bytes:
    """A raw HTTP/1.1 POST request (``Connection: close``: the server answers and closes)."""
    headers = [f"POST {path} HTTP/1.1", "Host: localhost", "Content-Type: text/xml; charset=utf-8",
               f"Content-Length: {len(body)}"]  # fmt: skip
    if origin is not None:
        headers.append(f"Origin: {origin}")
    if close:
        headers.append("Connection: close")
    return ("\r\n".join(headers) + "\r\n\r\n").encode() + body


def response_body(response: bytes) -> bytes:
    return response.split(b"\r\n\r\n", 1)[1]


class BoshClient:
    """A XEP-0124/0206 client: one HTTP request per connection, rids counted here."""

    def __init__(self, port: int, *, tls: bool = False, domain: str = "localhost", path: str = "/http-bind",
                 rid: int = 1000, origin: str | None = None) -> None:  # fmt: skip
        self.port, self.tls, self.domain, self.path, self.origin = port, tls, domain, path, origin
        self.rid = rid
        self.sid: str | None = None
        self.inbox: list[Element] = []
        self.jid: str | None = None

    def next_rid(self) -> int:
        self.rid += 1
        return self.rid

    def body(self, payload: str = "", *, rid: int | None = None, **attributes: str) -> bytes:
        attrs = {"rid": str(self.next_rid() if rid is None else rid), **attributes}
        if self.sid is not None and "sid" not in attrs:
            attrs["sid"] = self.sid
        text = " ".join(f"{k.replace('xmpp_', 'xmpp:')}='{v}'" for k, v in attrs.items())
        return f"<body xmlns='{HTTPBIND}' xmlns:xmpp='{XBOSH}' {text}>{payload}</body>".encode()

    async def send_body(self, data: bytes) -> Element:
        """POST one body; the response <body/> (HTTP 200 expected)."""
        response = await http_request(self.port, http_post(self.path, data, origin=self.origin), tls=self.tls)
        assert status_of(response) == 200, response
        return etree.fromstring(response_body(response))

    async def post(self, payload: str = "", **attributes: str) -> Element:
        """POST the next request; its children go to `inbox` too."""
        answer = await self.send_body(self.body(payload, **attributes))
        self.inbox.extend(answer)
        return answer

    async def expect(self, match: Match, *, polls: int = 20) -> Element:
        """The first element (in `inbox`, or from the next empty requests) that matches."""
        for _ in range(polls):
            for index, element in enumerate(self.inbox):
                if match(element):
                    del self.inbox[index]
                    return element
            await self.post()
        raise AssertionError(f"not received; inbox: {[show(e) for e in self.inbox]}")

    async def create(self, *, wait: int = 5, hold: int = 1) -> Element:
        answer = await self.post(to=self.domain, wait=str(wait), hold=str(hold), xmpp_version="1.0",
                                 ver="1.11", **{"xml:lang": "en"})  # fmt: skip
        assert answer.get("type") != "terminate", show(answer)
        self.sid = answer.get("sid")
        return answer

    async def features(self) -> Element:
        return await self.expect(lambda e: e.tag == tag(STREAMS, "features"))

    async def login(self, username: str, password: str, resource: str = "bosh") -> str:
        await self.create()
        features = await self.features()
        assert "PLAIN" in [m.text for m in features.iter(tag(SASL, "mechanism"))], show(features)
        token = base64.b64encode(f"\0{username}\0{password}".encode()).decode()
        await self.post(f"<auth xmlns='{SASL}' mechanism='PLAIN'>{token}</auth>")
        success = await self.expect(lambda e: e.tag in (tag(SASL, "success"), tag(SASL, "failure")))
        assert success.tag == tag(SASL, "success"), show(success)
        await self.post(xmpp_restart="true", to=self.domain)
        await self.features()
        await self.post(f"<iq xmlns='jabber:client' type='set' id='bind'><bind xmlns='{BIND}'>"
                        f"<resource>{resource}</resource></bind></iq>")  # fmt: skip
        result = await self.expect(lambda e: e.get("id") == "bind")
        jid = result.findtext(f"{tag(BIND, 'bind')}/{tag(BIND, 'jid')}")
        assert jid, show(result)
        self.jid = jid
        return jid
