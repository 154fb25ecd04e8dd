"""Bad input on the web endpoints: each gets the error its RFC/XEP names, and the server serves on.

Every test runs with ``server_alive``: after it, the server process is up, answers a TCP stream
and logged no traceback. The HTTP cases are raw bytes (`http_request`), the WebSocket ones
trio-websocket (`ws_client`), the BOSH ones `BoshClient`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trio_websocket

from tests.integration.conftest import PASSWORD, account_pool, server_log
from tests.support.server import ServerProcess, running_server
from tests.support.timeouts import TIMEOUT
from tests.support.web_clients import (
    FRAMING,
    STREAMS,
    BoshClient,
    http_post,
    http_request,
    response_body,
    show,
    status_of,
    tag,
    ws_client,
    ws_refused,
)

pytestmark = pytest.mark.usefixtures("server_alive")

GOOD_ORIGIN = "https://chat.example.com"
MAX_STANZA = 10000
CONFIG = f"""
[limits]
max_stanza_size = {MAX_STANZA}

[http]
allowed_origins = ["{GOOD_ORIGIN}"]
header_timeout = 1.0
max_header_size = 4096
max_body_size = 65536
max_connections = 40
bosh_polling = 2
"""
STREAM_ERRORS = "urn:ietf:params:xml:ns:xmpp-streams"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    directory: Path = tmp_path_factory.mktemp("web-bad-input")
    with running_server(directory, extra=CONFIG) as process:
        yield process


@pytest.fixture(scope="module")
def pool(server: ServerProcess) -> Iterator[str]:
    return account_pool(server, "webbad", 20)


async def stream_error(client: object) -> str:
    """The condition of the <stream:error/> that comes next, checking that <close/> follows it."""
    error = await client.receive()  # type: ignore[attr-defined]
    assert error.tag == tag(STREAMS, "error"), show(error)
    conditions = [etree_local(c) for c in error if c.tag != tag(STREAM_ERRORS, "text")]
    close = await client.receive()  # type: ignore[attr-defined]
    assert close.tag == tag(FRAMING, "close"), show(close)
    return conditions[0]


def etree_local(element: object) -> str:
    return str(element.tag).rsplit("}", 1)[-1]  # type: ignore[attr-defined]


# ---- WebSocket -----------------------------------------------------------------------------


async def test_websocket_without_the_xmpp_subprotocol_is_refused(server: ServerProcess) -> None:
    with trio.fail_after(TIMEOUT):
        assert await ws_refused(server.http_port, subprotocols=("chat",)) == 400
        assert await ws_refused(server.http_port, subprotocols=()) == 400


def refusals_logged(server: ServerProcess, origin: str) -> list[str]:
    """The server's log lines about refusing `origin` (cors.OriginGuard)."""
    return [line for line in server_log(server).splitlines() if f"from origin {origin!r} refused" in line]


async def test_websocket_from_a_disallowed_origin_is_refused(server: ServerProcess) -> None:
    """Issue 13 (9): with a restrictive allowed_origins, other pages get 403, and the server logs
    it (the page cannot show why): the origin and the peer's address, once per origin a minute.
    The listed origin and the server's own origin connect."""
    origin = "https://evil.example"
    with trio.fail_after(TIMEOUT):
        for _ in range(3):
            assert await ws_refused(server.http_port, origin=origin) == 403
        [line] = refusals_logged(server, origin)
        assert all(part in line for part in ("WARNING", "WebSocket upgrade", "peer 127.0.0.1")), line
        for allowed in (GOOD_ORIGIN, f"http://127.0.0.1:{server.http_port}"):
            async with ws_client(server.http_port, origin=allowed) as client:
                features = await client.open()
                assert features.tag == tag(STREAMS, "features")


@pytest.mark.parametrize(
    ("frame", "condition"),
    [
        ("<message xmlns='jabber:client' to='a@localhost'><body>half", "not-well-formed"),
        ("<presence xmlns='jabber:client'/><presence xmlns='jabber:client'/>", "not-well-formed"),
        ("<!-- a comment --><presence xmlns='jabber:client'/>", "restricted-xml"),
        (
            f"<message xmlns='jabber:client'><body>{'x' * (MAX_STANZA + 100)}</body></message>",
            "policy-violation",
        ),
    ],
    ids=["half-a-stanza", "two-stanzas", "comment", "oversized"],
)
async def test_bad_frames_get_their_stream_error(
    server: ServerProcess, user: str, frame: str, condition: str
) -> None:
    with trio.fail_after(TIMEOUT):
        async with ws_client(server.http_port) as client:
            await client.login(user, PASSWORD)
            await client.send(frame)
            assert await stream_error(client) == condition


async def test_bad_frame_before_open(server: ServerProcess) -> None:
    """An error before <open/> is answered by an <open/> first (RFC 6120 §4.9.1.2)."""
    with trio.fail_after(TIMEOUT):
        async with ws_client(server.http_port) as client:
            await client.send(
                "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='localhost' version='1.0'"
            )
            opened = await client.receive()
            assert opened.tag == tag(FRAMING, "open")
            assert await stream_error(client) == "not-well-formed"


async def test_a_frame_far_over_the_limit_closes_the_websocket(server: ServerProcess) -> None:
    """Past the stanza limit and the framing slack, trio-websocket closes with 1009 unbuffered."""
    with trio.fail_after(TIMEOUT):
        async with ws_client(server.http_port) as client:
            await client.open()
            await client.send(
                "<message xmlns='jabber:client'><body>" + "x" * (MAX_STANZA * 2) + "</body></message>"
            )
            with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                await client.receive()
            assert closed.value.reason.code == 1009


async def test_a_binary_message_closes_the_websocket(server: ServerProcess) -> None:
    with trio.fail_after(TIMEOUT):
        async with ws_client(server.http_port) as client:
            await client.open()
            await client.ws.send_message(b"<presence xmlns='jabber:client'/>")
            with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                await client.receive()
            assert closed.value.reason.code == 1003


# ---- HTTP ----------------------------------------------------------------------------------


async def test_slow_headers_get_408_while_others_are_served(server: ServerProcess) -> None:
    """A client that never finishes its headers is cut off after header_timeout (1 s here)."""
    with trio.fail_after(TIMEOUT):
        stream = await trio.open_tcp_stream("127.0.0.1", server.http_port)
        async with stream:
            await stream.send_all(b"GET /.well-known/host-meta HTTP/1.1\r\nHost: local")
            # Meanwhile, another client is served at once.
            request = b"GET /.well-known/host-meta HTTP/1.1\r\nHost: x\r\n\r\n"
            other = await http_request(server.http_port, request, read_all=False)
            assert status_of(other) == 200
            received = b""
            while chunk := await stream.receive_some(4096):
                received += chunk
            assert status_of(received) == 408


async def test_an_idle_connection_is_closed_after_header_timeout(server: ServerProcess) -> None:
    with trio.fail_after(TIMEOUT):
        stream = await trio.open_tcp_stream("127.0.0.1", server.http_port)
        async with stream:
            assert await stream.receive_some(4096) == b""  # closed, nothing said: no request began


async def test_malformed_http_gets_400(server: ServerProcess) -> None:
    with trio.fail_after(TIMEOUT):
        response = await http_request(server.http_port, b"NOT HTTP AT ALL\r\n\r\n")
        assert status_of(response) == 400


async def test_oversized_headers_get_431(server: ServerProcess) -> None:
    with trio.fail_after(TIMEOUT):
        huge = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 8000 + b"\r\n\r\n"
        response = await http_request(server.http_port, huge)
        assert status_of(response) == 431


async def test_oversized_body_gets_413(server: ServerProcess) -> None:
    with trio.fail_after(TIMEOUT):
        response = await http_request(server.http_port, http_post("/http-bind", b"x" * 70000))
        assert status_of(response) == 413


async def test_unknown_path_gets_404(server: ServerProcess) -> None:
    with trio.fail_after(TIMEOUT):
        response = await http_request(
            server.http_port, b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        assert status_of(response) == 404


async def test_too_many_connections_get_503(server: ServerProcess) -> None:
    """Past max_connections (40 here) a worker answers 503 and closes; earlier ones still work."""
    request = b"GET /.well-known/host-meta HTTP/1.1\r\nHost: x\r\n\r\n"
    with trio.fail_after(TIMEOUT):
        streams = [await trio.open_tcp_stream("127.0.0.1", server.http_port) for _ in range(40)]
        try:
            for stream in streams:  # each answered: accepted and counted, then idle (keep-alive)
                await stream.send_all(request)
                assert status_of(await stream.receive_some(65536)) == 200
            assert status_of(await http_request(server.http_port, request)) == 503
            await streams[0].send_all(request)
            assert status_of(await streams[0].receive_some(65536)) == 200
        finally:
            for stream in streams:
                await stream.aclose()


# ---- BOSH ----------------------------------------------------------------------------------


async def test_bosh_unknown_sid_is_item_not_found(server: ServerProcess) -> None:
    with trio.fail_after(TIMEOUT):
        client = BoshClient(server.http_port)
        client.sid = "no-such-session"
        answer = await client.post()
        assert answer.get("type") == "terminate"
        assert answer.get("condition") == "item-not-found"


async def test_bosh_rid_outside_the_window_ends_the_session(server: ServerProcess) -> None:
    with trio.fail_after(TIMEOUT):
        client = BoshClient(server.http_port)
        await client.create(wait=2)
        await client.features()
        answer = await client.send_body(client.body(rid=client.rid + 10))
        assert answer.get("condition") == "item-not-found", show(answer)
        after = await client.post()
        assert after.get("condition") == "item-not-found"  # the session is gone


async def test_bosh_replayed_old_rid_is_item_not_found(server: ServerProcess) -> None:
    """A rid answered long ago (out of the repeat cache) cannot be replayed."""
    with trio.fail_after(TIMEOUT):
        client = BoshClient(server.http_port)
        await client.create(wait=1, hold=1)
        first_rid = client.rid
        for _ in range(4):
            await client.post()
        answer = await client.send_body(client.body(rid=first_rid))
        assert answer.get("type") == "terminate"
        assert answer.get("condition") == "item-not-found"


async def test_bosh_request_flood_is_policy_violation(server: ServerProcess) -> None:
    """§11: empty requests one after another (each releasing the one held before it, with no
    payload) faster than 'polling' (2 s here) are overactivity."""
    with trio.fail_after(TIMEOUT):
        client = BoshClient(server.http_port)
        await client.create(wait=10, hold=1)
        await client.features()
        answers: list[object] = []
        async with trio.open_nursery() as nursery:
            for _ in range(2):
                data = client.body()

                async def post(data: bytes = data) -> None:
                    answers.append(await client.send_body(data))

                nursery.start_soon(post)
                await trio.sleep(0.2)
        conditions = [a.get("condition") for a in answers]  # type: ignore[attr-defined]
        assert "policy-violation" in conditions, conditions


async def test_bosh_polling_too_fast_is_policy_violation(server: ServerProcess) -> None:
    """§11: a polling session (hold='0') may not send empty requests faster than 'polling'."""
    with trio.fail_after(TIMEOUT):
        client = BoshClient(server.http_port)
        await client.create(wait=1, hold=0)
        answers = []
        for _ in range(3):  # the features come in the creation response or the next one
            answers.append(await client.post())
            if answers[-1].get("type") == "terminate":
                break
        assert answers[-1].get("condition") == "policy-violation", [show(a) for a in answers]


@pytest.mark.parametrize(
    "body",
    [b"<body xmlns='http://jabber.org/protocol/httpbind' rid='1'", b"<nobody/>", b"<!DOCTYPE x><body/>"],
    ids=["truncated", "wrong-root", "doctype"],
)
async def test_bosh_bad_body_is_bad_request(server: ServerProcess, body: bytes) -> None:
    with trio.fail_after(TIMEOUT):
        response = await http_request(server.http_port, http_post("/http-bind", body))
        assert status_of(response) == 200
        assert b"condition='bad-request'" in response_body(response)


async def test_bosh_wrong_host_is_host_unknown(server: ServerProcess) -> None:
    with trio.fail_after(TIMEOUT):
        client = BoshClient(server.http_port, domain="elsewhere.example")
        answer = await client.post(to="elsewhere.example", xmpp_version="1.0")
        assert answer.get("condition") == "host-unknown"


async def test_bosh_from_a_disallowed_origin_gets_403(server: ServerProcess) -> None:
    """Issue 13 (9): the same policy for BOSH, its CORS preflight included; refusals logged."""
    origin = "https://evil-bosh.example"
    with trio.fail_after(TIMEOUT):
        preflight = (f"OPTIONS /http-bind HTTP/1.1\r\nHost: localhost\r\nOrigin: {origin}\r\n"
                     "Access-Control-Request-Method: POST\r\nConnection: close\r\n\r\n")  # fmt: skip
        refused = await http_request(server.http_port, preflight.encode())
        assert status_of(refused) == 403, refused
        assert b"Access-Control-Allow-Origin" not in refused
        body = BoshClient(server.http_port).body(to="localhost", xmpp_version="1.0")
        response = await http_request(server.http_port, http_post("/http-bind", body, origin=origin))
        assert status_of(response) == 403
        [line] = refusals_logged(server, origin)
        assert all(part in line for part in ("WARNING", "BOSH request", "peer 127.0.0.1")), line
        allowed = await http_request(server.http_port, http_post("/http-bind", body, origin=GOOD_ORIGIN))
        assert status_of(allowed) == 200
        assert f"Access-Control-Allow-Origin: {GOOD_ORIGIN}".encode() in allowed


async def test_bosh_login_works_after_all_that(server: ServerProcess, user: str) -> None:
    with trio.fail_after(TIMEOUT):
        client = BoshClient(server.http_port)
        assert await client.login(user, PASSWORD) == f"{user}@localhost/bosh"
