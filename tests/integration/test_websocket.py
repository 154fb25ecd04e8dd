"""XMPP over WebSocket (RFC 7395) against the real server: framing, login, chat, SM and resumption.

The WebSocket side is `tests.support.web_clients.WsClient` (trio-websocket, RFC 7395 framing);
the TCP side is a raw `Peer` or slixmpp, so every message crosses from one transport to the other.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from lxml import etree

from tests.integration.conftest import PASSWORD, account_pool
from tests.support.clients import Clients, event_queue, run
from tests.support.peer import Peer, message
from tests.support.raw import RawClient
from tests.support.server import ServerProcess, running_server
from tests.support.timeouts import SLOW_TIMEOUT, TIMEOUT
from tests.support.web_clients import (
    FRAMING,
    SASL,
    SM,
    STREAMS,
    BoshClient,
    connect_ws,
    http_post,
    http_request,
    response_body,
    show,
    status_of,
    tag,
    ws_client,
)

pytestmark = pytest.mark.usefixtures("server_alive")


@pytest.fixture(scope="module")
def pool(server: ServerProcess) -> Iterator[str]:
    return account_pool(server, "ws", 40)


def mechanisms(features: object) -> list[str]:
    return [m.text or "" for m in features.iter(tag(SASL, "mechanism"))]  # type: ignore[attr-defined]


async def test_open_answers_open_and_features_without_starttls(server: ServerProcess) -> None:
    with trio.fail_after(TIMEOUT):
        async with ws_client(server.https_port, tls=True) as client:
            assert client.ws.subprotocol == "xmpp"
            await client.send(f"<open xmlns='{FRAMING}' to='localhost' version='1.0'/>")
            opened = await client.receive()
            assert opened.tag == tag(FRAMING, "open")
            assert opened.get("from") == "localhost"
            assert opened.get("version") == "1.0"
            assert opened.get("id")
            features = await client.receive()
            assert features.tag == tag(STREAMS, "features")
            # An HTTPS transport is already confidential: no STARTTLS, PLAIN is offered.
            assert features.find(tag("urn:ietf:params:xml:ns:xmpp-tls", "starttls")) is None
            assert "PLAIN" in mechanisms(features)
            assert "SCRAM-SHA-256" in mechanisms(features)


async def test_login_over_wss_and_chat_with_a_tcp_client(server: ServerProcess, user: str) -> None:
    web_user = user
    with trio.fail_after(TIMEOUT):
        async with ws_client(server.https_port, tls=True) as client:
            jid = await client.login(web_user, PASSWORD, "browser")
            assert jid == f"{web_user}@localhost/browser"
            tcp = await Peer.login(server.c2s_port, web_user, PASSWORD, "desk")
            try:
                await client.send(
                    f"<message xmlns='jabber:client' to='{tcp.jid}' id='w1' type='chat'>"
                    "<body>from web</body></message>"
                )
                got = await tcp.expect(message(id_="w1"))
                assert got.get("from") == jid
                assert got.findtext("{jabber:client}body") == "from web"
                await tcp.send(f"<message to='{jid}' id='t1' type='chat'><body>from tcp</body></message>")
                back = await client.expect(lambda e: e.get("id") == "t1")
                assert back.tag == "{jabber:client}message"
                assert back.get("from") == tcp.jid
                assert back.findtext("{jabber:client}body") == "from tcp"
            finally:
                await tcp.aclose()


async def test_close_is_answered_with_close(server: ServerProcess, user: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with ws_client(server.http_port) as client:
            await client.login(user, PASSWORD)
            answer = await client.close()
            assert answer.tag == tag(FRAMING, "close"), show(answer)


async def test_plain_http_from_loopback_counts_as_secure(server: ServerProcess, user: str) -> None:
    """Plain HTTP on loopback (a TLS-terminating proxy on this host, or tests) may use PLAIN."""
    with trio.fail_after(TIMEOUT):
        async with ws_client(server.http_port) as client:
            assert await client.login(user, PASSWORD) == f"{user}@localhost/web"


async def test_stream_management_and_resumption_over_websocket(server: ServerProcess, user: str) -> None:
    with trio.fail_after(TIMEOUT):
        tcp = await Peer.login(server.c2s_port, user, PASSWORD, "desk")
        try:
            async with ws_client(server.http_port) as first:
                jid = await first.login(user, PASSWORD, "phone")
                await first.send(f"<enable xmlns='{SM}' resume='true'/>")
                enabled = await first.receive()
                assert enabled.tag == tag(SM, "enabled"), show(enabled)
                assert enabled.get("resume") == "true", show(enabled)
                previd = enabled.get("id")
                # The WebSocket drops without <close/>: the session waits to be resumed.
                await first.ws.aclose(code=4000)
            await tcp.send(f"<message to='{jid}' id='held1' type='chat'><body>while away</body></message>")
            async with ws_client(server.http_port) as second:
                features = await second.open()
                token = base64.b64encode(f"\0{user}\0{PASSWORD}".encode()).decode()
                await second.send(f"<auth xmlns='{SASL}' mechanism='PLAIN'>{token}</auth>")
                assert (await second.receive()).tag == tag(SASL, "success")
                features = await second.open()
                assert features.find(tag(SM, "sm")) is not None, show(features)
                await second.send(f"<resume xmlns='{SM}' previd='{previd}' h='0'/>")
                resumed = await second.expect(lambda e: e.tag in (tag(SM, "resumed"), tag(SM, "failed")))
                assert resumed.tag == tag(SM, "resumed"), show(resumed)
                held = await second.expect(lambda e: e.get("id") == "held1")
                assert held.findtext("{jabber:client}body") == "while away"
        finally:
            await tcp.aclose()


def test_chat_with_slixmpp(server: ServerProcess, clients: Clients, pool: Iterator[str]) -> None:
    """A slixmpp client on TCP and a WebSocket client exchange messages."""
    web_user, tcp_user = next(pool), next(pool)
    received: list[str] = []

    async def web_side(ready: trio.Event, done: trio.Event) -> None:
        async with ws_client(server.http_port) as client:
            await client.login(web_user, PASSWORD, "web")
            ready.set()
            got = await client.expect(lambda e: e.tag == "{jabber:client}message")
            received.append(got.findtext("{jabber:client}body") or "")
            await client.send(
                f"<message xmlns='jabber:client' to='{tcp_user}@localhost/sx' type='chat'>"
                "<body>pong</body></message>"
            )
            await done.wait()

    ready_flag = threading.Event()
    done_flag = threading.Event()

    def trio_thread() -> None:
        async def main() -> None:
            ready, done = trio.Event(), trio.Event()
            with trio.fail_after(TIMEOUT):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(web_side, ready, done)
                    await ready.wait()
                    ready_flag.set()
                    await trio.to_thread.run_sync(done_flag.wait, abandon_on_cancel=True)
                    done.set()

        trio.run(main)

    thread = threading.Thread(target=trio_thread)
    thread.start()

    async def scenario() -> None:
        async with clients.slixmpp(tcp_user) as xmpp:
            messages = event_queue(xmpp, "message")
            await asyncio.get_running_loop().run_in_executor(None, ready_flag.wait, TIMEOUT)
            xmpp.send_message(mto=f"{web_user}@localhost/web", mbody="ping", mtype="chat")
            reply = await asyncio.wait_for(messages.get(), TIMEOUT)
            assert reply["body"] == "pong"
            assert str(reply["from"]) == f"{web_user}@localhost/web"

    try:
        run(scenario())
    finally:
        done_flag.set()
        thread.join(TIMEOUT)
    assert received == ["ping"]


@pytest.fixture
def redirecting(tmp_path: Path) -> Iterator[ServerProcess]:
    extra = '\n[http]\nsee_other_uri = "wss://other.example/xmpp-websocket"\n'
    with running_server(tmp_path, extra=extra) as process:
        yield process


async def test_see_other_uri(redirecting: ServerProcess) -> None:
    """RFC 7395 §3.6.2: a configured redirect answers <open/> with <open/> and <close see-other-uri/>."""
    with trio.fail_after(TIMEOUT):
        async with ws_client(redirecting.http_port) as client:
            await client.send(f"<open xmlns='{FRAMING}' to='localhost' version='1.0'/>")
            assert (await client.receive()).tag == tag(FRAMING, "open")
            close = await client.receive()
            assert close.tag == tag(FRAMING, "close")
            assert close.get("see-other-uri") == "wss://other.example/xmpp-websocket"


async def test_host_meta_announces_both_endpoints(server: ServerProcess) -> None:
    """XEP-0156: XRD and JRD, readable from any origin, with the URLs of the listener asked."""
    port = server.https_port
    with trio.fail_after(TIMEOUT):
        request = (
            f"GET /.well-known/host-meta HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: close\r\n\r\n"
        )
        xrd = await http_request(port, request.encode(), tls=True)
        assert status_of(xrd) == 200
        assert b"Access-Control-Allow-Origin: *" in xrd
        links = {
            link.get("rel"): link.get("href")
            for link in etree.fromstring(response_body(xrd)).iter(
                "{http://docs.oasis-open.org/ns/xri/xrd-1.0}Link"
            )
        }
        assert links == {
            "urn:xmpp:alt-connections:xbosh": f"https://localhost:{port}/http-bind",
            "urn:xmpp:alt-connections:websocket": f"wss://localhost:{port}/xmpp-websocket",
        }
        request = request.replace("host-meta ", "host-meta.json ")
        jrd = await http_request(port, request.encode(), tls=True)
        assert status_of(jrd) == 200
        document = json.loads(response_body(jrd))
        assert {link["rel"]: link["href"] for link in document["links"]} == links


FOREIGN_ORIGIN = "https://intranet.example.com"


async def test_bosh_cors_preflight(server: ServerProcess) -> None:
    """Issue 13 (9): by default (no allowed_origins) a page of any origin may use BOSH: the
    preflight answers 204 with the page's origin in Access-Control-Allow-Origin, whatever it is."""
    port = server.http_port
    with trio.fail_after(TIMEOUT):
        for origin in (f"http://localhost:{port}", FOREIGN_ORIGIN, "null"):
            request = (
                f"OPTIONS /http-bind HTTP/1.1\r\nHost: localhost:{port}\r\nOrigin: {origin}\r\n"
                "Access-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: content-type\r\n"
                "Connection: close\r\n\r\n"
            )
            response = await http_request(port, request.encode())
            assert status_of(response) == 204, response
            assert f"Access-Control-Allow-Origin: {origin}".encode() in response
            assert b"Vary: Origin" in response
            assert b"Access-Control-Allow-Methods: POST, OPTIONS" in response
            assert b"Access-Control-Allow-Credentials" not in response


async def test_a_page_of_another_origin_connects_by_default(
    server: ServerProcess, pool: Iterator[str]
) -> None:
    """Issue 13 (9): Converse.js served by the company's web server, another origin than the XMPP
    server's HTTP port, logs in over WebSocket and over BOSH on a server with the default config
    (Prosody and ejabberd accept such pages too); BOSH responses carry its CORS header."""
    ws_user, bosh_user = next(pool), next(pool)
    with trio.fail_after(TIMEOUT):
        async with ws_client(server.http_port, origin=FOREIGN_ORIGIN) as client:
            assert await client.login(ws_user, PASSWORD, "page") == f"{ws_user}@localhost/page"
        creation = BoshClient(server.http_port).body(to="localhost", xmpp_version="1.0", wait="1")
        response = await http_request(
            server.http_port, http_post("/http-bind", creation, origin=FOREIGN_ORIGIN)
        )
        assert status_of(response) == 200, response
        assert f"Access-Control-Allow-Origin: {FOREIGN_ORIGIN}".encode() in response
        bosh = BoshClient(server.http_port, origin=FOREIGN_ORIGIN)
        assert await bosh.login(bosh_user, PASSWORD, "page") == f"{bosh_user}@localhost/page"


async def test_a_tcp_session_resumed_over_websocket(server: ServerProcess, user: str) -> None:
    """The same session actor behind both transports: XEP-0198 resumes a TCP session on a WebSocket."""
    with trio.fail_after(TIMEOUT):
        tcp = await RawClient.connect(server.c2s_port)
        jid = await tcp.login(user, PASSWORD, "roaming")
        await tcp.send(f"<enable xmlns='{SM}' resume='true'/>")
        enabled = await tcp.next_element(lambda e: e.tag == tag(SM, "enabled"))
        previd = enabled.get("id")
        await tcp.stream.aclose()  # the TCP connection drops: the session waits to be resumed
        async with ws_client(server.http_port) as web:
            await web.open()
            token = base64.b64encode(f"\0{user}\0{PASSWORD}".encode()).decode()
            await web.send(f"<auth xmlns='{SASL}' mechanism='PLAIN'>{token}</auth>")
            assert (await web.receive()).tag == tag(SASL, "success")
            await web.open()
            await web.send(f"<resume xmlns='{SM}' previd='{previd}' h='0'/>")
            resumed = await web.expect(lambda e: e.tag in (tag(SM, "resumed"), tag(SM, "failed")))
            assert resumed.tag == tag(SM, "resumed"), show(resumed)
            await web.send("<iq xmlns='jabber:client' type='get' id='who'><ping xmlns='urn:xmpp:ping'/></iq>")
            pong = await web.expect(lambda e: e.get("id") == "who")
            assert pong.get("type") == "result"
            assert pong.get("to") == jid  # still the TCP session's full JID


@pytest.fixture
def two_workers(tmp_path: Path) -> Iterator[ServerProcess]:
    users = [(f"pair{i}", PASSWORD) for i in range(6)]
    with running_server(tmp_path, users=users, workers=2) as process:
        yield process


async def test_websocket_clients_on_a_two_worker_node(two_workers: ServerProcess) -> None:
    """Both workers accept on the inherited HTTP socket; WebSocket sessions chat through the mesh."""
    with trio.fail_after(TIMEOUT * 2):
        async with trio.open_nursery() as nursery:
            clients = []
            for i in range(6):
                client = await connect_ws(nursery, two_workers.http_port)
                await client.login(f"pair{i}", PASSWORD, "ws")
                clients.append(client)
            status = await trio.to_thread.run_sync(two_workers.status)
            # Every WebSocket is an ordinary session, in the status of its worker.
            assert status["totals"]["sessions"] == 6
            assert len(status["workers"]) == 2
            for i, client in enumerate(clients):
                to = f"pair{(i + 1) % 6}@localhost/ws"
                message = f"<message xmlns='jabber:client' to='{to}' id='r{i}'><body>{i}</body></message>"
                await client.send(message)
            for i, client in enumerate(clients):
                got = await client.expect(lambda e: e.tag == "{jabber:client}message")
                assert got.get("from") == f"pair{(i - 1) % 6}@localhost/ws"
            for client in clients:
                await client.ws.aclose()
            nursery.cancel_scope.cancel()


async def test_a_clean_close_ends_a_resumable_session(tmp_path: Path) -> None:
    """XEP-0198 §5: a stream closed cleanly is not resumable. Browser clients send
    <presence type='unavailable'/> and <close/> and drop the WebSocket at once; the server's
    answer to the presence then fails to be written, often before the server has read the
    <close/>. The session must still end, not wait for a resumption (regression: it lingered
    for `resume_timeout`, about one close in three)."""
    with running_server(tmp_path, users=[("closer", PASSWORD)]) as server, trio.fail_after(SLOW_TIMEOUT):
        for n in range(12):
            secure = n % 2 == 0
            async with ws_client(server.https_port if secure else server.http_port, tls=secure) as client:
                await client.login("closer", PASSWORD, f"r{n}")
                await client.send(f"<enable xmlns='{SM}' resume='true'/>")
                assert (await client.receive()).tag == tag(SM, "enabled")
                await client.send("<presence xmlns='jabber:client'/>")
                await client.send("<presence xmlns='jabber:client' type='unavailable'/>")
                await client.send(f"<close xmlns='{FRAMING}'/>")
                await client.ws.aclose()
            with trio.move_on_after(5):
                while True:
                    sessions = (await trio.to_thread.run_sync(server.status))["totals"]["sessions"]
                    if not sessions:
                        break
                    await trio.sleep(0.05)
            sessions = (await trio.to_thread.run_sync(server.status))["totals"]["sessions"]
            assert sessions == 0, f"close {n} ({'wss' if secure else 'ws'}) left {sessions} sessions"
