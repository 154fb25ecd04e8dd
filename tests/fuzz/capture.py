"""Capture the bytes of real client sessions as seeds (tests/fuzz/corpus/); run by hand.

    python -m tests.fuzz.capture

Starts the real server (tests/support/server.py) and drives real clients against it:

- slixmpp (STARTTLS, PLAIN and SCRAM, XEP-0198, a room created and configured with its XEP-0045
  plugin, a XEP-0313 query, pings): every string the client writes (`send_raw`, the plaintext
  inside TLS) is recorded, one write per item;
- trio-websocket (RFC 7395) and the suite's BOSH client through a recording TCP proxy: the HTTP
  requests as they reach the server's port.

The writes become seeds of `stream` and `xml_parser` (whole sessions), `data_forms` (the stanzas
that carry a form), `http` (requests) and `bosh` (request bodies). The account logs in with the
fuzz targets' password, so a PLAIN session replays past authentication in the `stream` target.
"""

from __future__ import annotations

import asyncio
import tempfile
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from tests.fuzz import targets
from tests.fuzz.seeds import write
from tests.support.clients import run, slixmpp_client
from tests.support.server import ServerProcess, running_server
from tests.support.web_clients import BoshClient, ws_client

ROOM = "lobby@conference.localhost"


def record_writes(xmpp: Any, writes: list[bytes]) -> None:
    original = xmpp.send_raw

    def send_raw(data: str | bytes) -> None:
        writes.append(data.encode() if isinstance(data, str) else data)
        original(data)

    xmpp.send_raw = send_raw


async def slixmpp_session(port: int, mechanism: str, writes: list[bytes]) -> None:
    plugins = ("xep_0030", "xep_0045", "xep_0199", "xep_0198", "xep_0313", "xep_0004")
    async with slixmpp_client(f"{targets.USER}@localhost/capture", targets.PASSWORD, port,
                              mechanism=mechanism, plugins=plugins, send_presence=True) as xmpp:  # fmt: skip
        # The writes so far happened inside connect(); from here on every write is recorded. The
        # library's own handshake is recorded by a second client (below) that hooks before connecting.
        record_writes(xmpp, writes)
        await xmpp.get_roster()
        xmpp.send_message(mto="bob@localhost", mbody="hello <bob> & 'all'", mtype="chat")
        await xmpp.plugin["xep_0199"].ping("localhost", timeout=10)
        muc = xmpp.plugin["xep_0045"]
        await muc.join_muc_wait(ROOM, "alice", maxchars=0, timeout=10)
        form = await muc.get_room_config(ROOM)
        form["type"] = "submit"
        fields = form.get_fields()
        submitted = {"muc#roomconfig_roomname": "Lobby", "muc#roomconfig_persistentroom": True,
                     "muc#roomconfig_maxusers": "50", "muc#roomconfig_whois": "anyone"}  # fmt: skip
        for name, value in submitted.items():
            if name in fields:
                fields[name]["value"] = value
        await muc.set_room_config(ROOM, form)
        xmpp.send_message(mto=ROOM, mbody="hi room", mtype="groupchat")
        await xmpp.plugin["xep_0313"].retrieve(jid=None, with_jid="bob@localhost", timeout=10)
        xmpp.plugin["xep_0198"].request_ack()
        await asyncio.sleep(0.2)  # let the ack request go out with the rest before the close


async def slixmpp_login(port: int, mechanism: str, writes: list[bytes]) -> None:
    """A whole session from the first byte: hook `send_raw` before connecting."""
    import slixmpp.xmlstream.xmlstream as xs

    original = xs.XMLStream.send_raw

    def send_raw(self: Any, data: str | bytes) -> None:
        writes.append(data.encode() if isinstance(data, str) else data)
        original(self, data)

    xs.XMLStream.send_raw = send_raw  # type: ignore[method-assign]
    try:
        async with slixmpp_client(
            f"{targets.USER}@localhost/whole",
            targets.PASSWORD,
            port,
            mechanism=mechanism,
            plugins=("xep_0198",),
            send_presence=True,
        ) as xmpp:
            xmpp.send_message(mto="bob@localhost", mbody="one", mtype="chat")
            await asyncio.sleep(0.2)
    finally:
        xs.XMLStream.send_raw = original  # type: ignore[method-assign]


class Recorder:
    """A TCP proxy on loopback that records what each client connection sends."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.connections: list[bytearray] = []
        self.port = 0

    async def serve(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, client: trio.SocketStream) -> None:
        recorded = bytearray()
        self.connections.append(recorded)
        server = await trio.open_tcp_stream("127.0.0.1", self.upstream)
        async with client, server, trio.open_nursery() as nursery:

            async def pump(source: trio.SocketStream, sink: trio.SocketStream, record: bool) -> None:
                try:
                    async for chunk in source:
                        if record:
                            recorded.extend(chunk)
                        await sink.send_all(chunk)
                    await sink.send_eof()
                except trio.BrokenResourceError:
                    pass
                nursery.cancel_scope.cancel()

            nursery.start_soon(pump, client, server, True)
            nursery.start_soon(pump, server, client, False)


async def web_sessions(server: ServerProcess) -> list[bytes]:
    recorder = Recorder(server.http_port)
    async with trio.open_nursery() as nursery:
        await nursery.start(recorder.serve)
        with trio.fail_after(30):
            bosh = BoshClient(recorder.port)
            await bosh.login(targets.USER, targets.PASSWORD)
            await bosh.post(
                "<message xmlns='jabber:client' to='bob@localhost' type='chat'><body>b</body></message>"
            )
            await bosh.post(type="terminate")
            async with ws_client(recorder.port, origin="https://intranet.example.com") as ws:
                await ws.login(targets.USER, targets.PASSWORD)
                await ws.close()
        nursery.cancel_scope.cancel()
    return [bytes(c) for c in recorder.connections]


def in_thread(function: Callable[[], Awaitable[Any]]) -> None:
    failure: list[BaseException] = []

    def target() -> None:
        try:
            run(function())  # type: ignore[arg-type]
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]


def main() -> None:
    with tempfile.TemporaryDirectory() as directory, running_server(
        Path(directory), users=[(targets.USER, targets.PASSWORD), ("bob", "bob-password")],
    ) as server:  # fmt: skip
        sessions: dict[str, list[bytes]] = {}
        for mechanism in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-1"):
            writes: list[bytes] = []
            in_thread(lambda m=mechanism, w=writes: slixmpp_login(server.c2s_port, m, w))  # type: ignore[misc]
            sessions[f"slixmpp-login-{mechanism.lower()}"] = writes
        writes = []
        in_thread(lambda: slixmpp_session(server.c2s_port, "PLAIN", writes))
        sessions["slixmpp-muc-mam"] = writes
        requests = trio.run(web_sessions, server)
    # The MUC session's client was hooked after its login: put the PLAIN login's writes (header,
    # auth, header, bind) before it, so that the stream target replays it as one session.
    login = [w for w in sessions["slixmpp-login-plain"] if w]
    bind = next(i for i, w in enumerate(login) if b"xmpp-bind" in w)
    sessions["slixmpp-muc-mam"] = login[: bind + 1] + sessions["slixmpp-muc-mam"]
    for name, session_writes in sessions.items():
        # After STARTTLS the client's writes went through TLS; the fuzz target runs with TLS on,
        # so the <starttls/> write and the header before it are left out of the stream seeds.
        writes = [w for w in session_writes if w]
        start = next((i + 1 for i, w in enumerate(writes) if b"xmpp-tls" in w), 0)
        writes = writes[start:]
        write("stream", name, b"\xff" + b"\0".join(writes))
        write("xml_parser", name, b"\x3f" + b"".join(writes))
        for index, data in enumerate(writes):
            if b"jabber:x:data" in data:
                write("data_forms", f"{name}-{index}", data)
    for index, request in enumerate(requests):
        write("http", f"request-{index}", b"\xff" + request)
        body = request.split(b"\r\n\r\n", 1)[-1]
        if body.startswith(b"<body"):
            write("bosh", f"body-{index}", body)
    print(f"{len(sessions)} sessions, {len(requests)} HTTP connections")


if __name__ == "__main__":
    main()
