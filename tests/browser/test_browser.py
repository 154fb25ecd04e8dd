"""End to end in a real browser: Strophe.js in headless Chromium logs in over WebSocket (ws:// and
wss://) and over BOSH, and chats with a slixmpp client on TCP.

The browser is Debian's ``chromium``, the client library Strophe.js from npm (the XMPP library
of Converse.js; its own browser bundle, ``dist/strophe.umd.min.js``); ``scripts/install-browser.sh``
installs both when they are missing (so a fresh machine and CI need nothing else). Chromium is
driven over its DevTools protocol (`tests.browser.cdp`). The page is a local file, so its origin is
``null``, which the server's ``[http] allowed_origins`` lets in here. The screenshot of the page
(its log of logins and messages) is kept as ``browser-e2e.png`` in the test's tmp dir and copied
to ``artifacts/browser-e2e.png``; the test prints both paths.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import shutil
import subprocess
import threading
from pathlib import Path

import pytest
import slixmpp
import trio

from tests.browser.cdp import open_chromium
from tests.support.clients import slixmpp_client
from tests.support.server import ServerProcess, running_server

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("IMACTOR_BROWSER_CACHE", REPO / ".cache" / "browser"))
STROPHE = CACHE / "node_modules" / "strophe.js" / "dist" / "strophe.umd.min.js"
CLIENT_JS = Path(__file__).with_name("client.js")
PASSWORD = "browser test password"
TIMEOUT = 120.0
PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>imactor browser test</title>
<style>body {{ font: 15px sans-serif; margin: 2em; }} .ok {{ color: #070; }} .error {{ color: #b00; }}
.in {{ color: #036; }} .out {{ color: #555; }}</style></head>
<body><h1>imactor: Strophe.js over WebSocket and BOSH</h1><ol id="log"></ol>
<script src="{strophe}"></script><script src="{client}"></script></body></html>
"""


@pytest.fixture(scope="module")
def chromium() -> str:
    """The chromium binary, with Strophe.js in the cache; installed by the project script if missing."""
    if shutil.which("chromium") is None or not STROPHE.exists():
        subprocess.run(["bash", str(REPO / "scripts" / "install-browser.sh")], check=True, timeout=1800)
    found = shutil.which("chromium")
    assert found is not None, "scripts/install-browser.sh did not install chromium"
    assert STROPHE.exists(), f"scripts/install-browser.sh did not install {STROPHE}"
    return found


class SlixmppThread:
    """A slixmpp client on TCP, running its asyncio loop in a thread of its own."""

    def __init__(self, jid: str, password: str, port: int) -> None:
        self.received: queue.Queue[tuple[str, str]] = queue.Queue()
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
            async with slixmpp_client(jid, password, port, send_presence=True) as xmpp:
                self._xmpp = xmpp
                xmpp.add_event_handler(
                    "message", lambda msg: self.received.put((str(msg["from"]), msg["body"]))
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
        xmpp = self._xmpp
        self._loop.call_soon_threadsafe(lambda: xmpp.send_message(mto=to, mbody=body, mtype="chat"))

    def expect(self, body: str, timeout: float = 30.0) -> str:
        """Wait for a message with this body; return its sender."""
        while True:
            sender, text = self.received.get(timeout=timeout)
            if text == body:
                return sender

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(15)


def test_strophe_in_chromium_over_websocket_and_bosh(tmp_path: Path, chromium: str) -> None:
    users = [("webws", PASSWORD), ("webbosh", PASSWORD), ("webwss", PASSWORD), ("desk", PASSWORD)]
    extra = '\n[http]\nallowed_origins = ["null"]\n'
    page = tmp_path / "page.html"
    page.write_text(PAGE.format(strophe=STROPHE.as_uri(), client=CLIENT_JS.as_uri()))
    (tmp_path / "server").mkdir()
    with running_server(tmp_path / "server", users=users, extra=extra) as server:
        desk = SlixmppThread("desk@localhost/desk", PASSWORD, server.c2s_port)
        try:
            shot = trio.run(_scenario, chromium, page, tmp_path, server, desk)
        finally:
            desk.stop()
    kept = REPO / "artifacts" / "browser-e2e.png"
    kept.parent.mkdir(exist_ok=True)
    shutil.copyfile(shot, kept)
    print(f"screenshot: {shot} (copied to {kept})")
    assert shot.read_bytes().startswith(b"\x89PNG")


async def _scenario(
    chromium: str, page_file: Path, tmp_path: Path, server: ServerProcess, desk: SlixmppThread
) -> Path:
    port, tls_port = server.http_port, server.https_port
    services = {
        "ws": f"ws://127.0.0.1:{port}/xmpp-websocket",
        "bosh": f"http://127.0.0.1:{port}/http-bind",
        "wss": f"wss://localhost:{tls_port}/xmpp-websocket",  # the self-signed certificate: see cdp
    }
    accounts = {"ws": "webws", "bosh": "webbosh", "wss": "webwss"}
    with trio.fail_after(TIMEOUT):
        async with open_chromium(page_file.as_uri(), tmp_path / "profile", chromium=chromium) as page:
            jids: dict[str, str] = {}
            for name, service in services.items():
                jid = f"{accounts[name]}@localhost/chromium-{name}"
                call = f"imactorTest.connect({json.dumps(name)}, {json.dumps(service)}, {json.dumps(jid)}, "
                jids[name] = await page.evaluate(call + f"{json.dumps(PASSWORD)})")
                assert jids[name] == jid
            for name in services:
                text = f"hello from the browser over {name}"
                await page.evaluate(
                    f"imactorTest.send({json.dumps(name)}, 'desk@localhost/desk', {json.dumps(text)})"
                )
                sender = await trio.to_thread.run_sync(desk.expect, text)
                assert sender == jids[name]
                reply = f"slixmpp answers {name}"
                desk.send(jids[name], reply)
                got = await page.evaluate(f"imactorTest.waitFor({json.dumps(name)}, {json.dumps(reply)})")
                assert got == {"from": "desk@localhost/desk", "body": reply}
            shot = await page.screenshot(tmp_path / "browser-e2e.png")
            for name in services:
                await page.evaluate(f"imactorTest.disconnect({json.dumps(name)})")
            return shot
