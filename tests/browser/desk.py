"""The slixmpp user the browser tests' pages talk to (the ``desk`` fixture, tests/browser/conftest.py):
a slixmpp client on TCP, running its asyncio loop in a thread of its own, so that a Trio test
(or Chromium's driver) can wait for what it receives."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import ssl
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import NamedTuple, TypeVar

import aiohttp
import slixmpp

from tests.support.clients import slixmpp_client
from tests.support.server import ServerProcess
from tests.support.timeouts import TIMEOUT

T = TypeVar("T")

#: The desk's account: every browser test module's server creates it with this password.
DESK = "desk@localhost"
DESK_PASSWORD = "browser tests desk password"


@contextlib.contextmanager
def running_desk(server: ServerProcess) -> Iterator[SlixmppThread]:
    """The desk logged in to `server` (resource "desk") until the block ends."""
    client = SlixmppThread(f"{DESK}/desk", DESK_PASSWORD, server.c2s_port)
    try:
        yield client
    finally:
        client.stop()


class Received(NamedTuple):
    sender: str
    body: str
    oob_url: str | None  #: the XEP-0066 <x xmlns="jabber:x:oob"><url/> of the message, if any


class SlixmppThread:
    """A slixmpp client on TCP, running its asyncio loop in a thread of its own."""

    def __init__(self, jid: str, password: str, port: int) -> None:
        self.received: queue.Queue[Received] = queue.Queue()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._xmpp: slixmpp.ClientXMPP | None = None
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._main(jid, password, port)), daemon=True
        )
        self._thread.start()
        if not self._ready.wait(30) or self._error is not None:
            raise RuntimeError(f"slixmpp did not log in: {self._error!r}")

    async def _main(self, jid: str, password: str, port: int) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            plugins = ("xep_0030", "xep_0066", "xep_0128", "xep_0363")
            async with slixmpp_client(jid, password, port, send_presence=True, plugins=plugins) as xmpp:
                self._xmpp = xmpp
                xmpp.add_event_handler(
                    "message",
                    lambda msg: self.received.put(
                        Received(str(msg["from"]), msg["body"], msg["oob"]["url"] or None)
                    ),
                )
                self._ready.set()
                await self._stop.wait()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            raise

    def send(self, to: str, body: str) -> None:
        assert self._loop is not None
        assert self._xmpp is not None
        xmpp, jid = self._xmpp, slixmpp.JID(to)
        self._loop.call_soon_threadsafe(lambda: xmpp.send_message(mto=jid, mbody=body, mtype="chat"))

    def expect(self, body: str, timeout: float = 30.0) -> str:
        """Wait for a message with this body; return its sender."""
        return self.expect_from(lambda message: message.body == body, timeout).sender

    def expect_from(self, wanted: Callable[[Received], bool], timeout: float = 30.0) -> Received:
        """Wait for a message that is `wanted`; the ones before it are dropped."""
        while True:
            message = self.received.get(timeout=timeout)
            if wanted(message):
                return message

    def call(self, work: Callable[[slixmpp.ClientXMPP], Awaitable[T]], timeout: float = 30.0) -> T:
        """Run ``work(client)`` on slixmpp's loop; its result (blocks this thread)."""
        assert self._loop is not None
        assert self._xmpp is not None
        xmpp = self._xmpp

        async def run() -> T:
            return await work(xmpp)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout)

    def upload_and_send(self, service: str, to: str, name: str, data: bytes, context: ssl.SSLContext) -> str:
        """Upload `data` through the server's XEP-0363 service (which disco must find at
        `service`), PUT verified with `context`, and send its GET URL to `to` (body and XEP-0066
        OOB, as Converse does); the URL."""

        async def work(xmpp: slixmpp.ClientXMPP) -> str:
            upload = xmpp.plugin["xep_0363"]
            found = await upload.find_upload_service(timeout=TIMEOUT)
            assert found is not None
            assert str(found["from"]) == service, found
            slot = (await upload.request_slot(found["from"], name, len(data), "image/png", timeout=TIMEOUT))[
                "http_upload_slot"
            ]
            headers = {"Content-Type": "image/png", "Content-Length": str(len(data))}
            connector = aiohttp.TCPConnector(ssl=context)
            async with (
                aiohttp.ClientSession(connector=connector) as http,
                http.put(slot["put"]["url"], data=data, headers=headers) as response,
            ):
                assert response.status == 201, response.status
            url = str(slot["get"]["url"])
            message = xmpp.make_message(mto=slixmpp.JID(to), mbody=url, mtype="chat")
            message["oob"]["url"] = url
            message.send()
            return url

        return self.call(work)

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(15)
