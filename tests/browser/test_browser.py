"""End to end in a real browser: Converse.js in headless Chromium logs in over WebSocket (ws:// and
wss://) and over BOSH, and chats with a slixmpp client on TCP.

The browser is Debian's ``chromium``, the client Converse.js from npm, the version pinned in
``scripts/install-browser.sh``, which installs both when they are missing (so a fresh machine and
CI need nothing else). The test serves Converse's built ``dist/`` (bundle, CSS, fonts, lazily
loaded chunks: Converse's default ``assets_path`` is ``/dist``) and a page of its own from a small
HTTP server on loopback; Chromium resolves no other host, so nothing comes from a CDN. The page's
origin is that server's, another origin than the XMPP server's HTTP ports (the usual deployment:
the page comes from the company's web server); the XMPP server runs with its default
``[http] allowed_origins`` (empty: pages of any origin may connect).

For each transport, in a fresh browser profile: Converse starts with only that transport's URL
(``websocket_url`` or ``bosh_service_url``); the test types the JID and password into Converse's
login form and presses Enter (real key events over the DevTools protocol, `tests.browser.cdp`),
opens the chat with the slixmpp user, types a message and presses Enter. slixmpp must receive it
from the JID Converse was bound to, and its answer must show up in Converse's chat view. A
screenshot of that conversation is kept per transport, ``converse-<transport>.png`` in the test's
tmp dir, copied to ``artifacts/``; the test prints the paths. Then Converse logs out, and the
server must drop that session (its status socket), log no error, and the page must have logged
none either. A failure prints the page's last console lines (every stanza: Converse logs at
debug level) and its text, and keeps ``converse-<transport>-failed.png``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import http.server
import json
import os
import queue
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import slixmpp
import trio

from tests.browser.cdp import Page, open_chromium
from tests.support.clients import slixmpp_client
from tests.support.server import ServerProcess, running_server

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("IMACTOR_BROWSER_CACHE", REPO / ".cache" / "browser"))
CONVERSE_DIST = CACHE / "node_modules" / "converse.js" / "dist"
PAGE_JS = Path(__file__).with_name("converse_page.js")
PASSWORD = "browser test password"
DESK = "desk@localhost"  # the slixmpp user
SPONSOR_LOGOS = "net::ERR_NAME_NOT_RESOLVED https://conversejs.org/media/logos/"
TIMEOUT_PER_TRANSPORT = 40.0
LOGOUT_SECONDS = 10.0  # for the server to end the session Converse closed
PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>imactor: Converse.js over {transport}</title>
<link rel="icon" href="data:,"><link rel="stylesheet" href="/dist/converse.min.css"></head>
<body class="converse-fullscreen">
<script type="module" src="/dist/converse.min.js"></script>
<script type="module" src="/converse_page.js"></script></body></html>
"""


@pytest.fixture(scope="module")
def chromium() -> str:
    """The chromium binary, with Converse.js in the cache. The project script always runs: it does
    nothing when both are there, and replaces a Converse.js of another version than its pin."""
    subprocess.run(["bash", str(REPO / "scripts" / "install-browser.sh")], check=True, timeout=1800)
    found = shutil.which("chromium")
    assert found is not None, "scripts/install-browser.sh did not install chromium"
    assert (CONVERSE_DIST / "converse.min.js").exists(), f"install-browser.sh did not install {CONVERSE_DIST}"
    return found


@contextlib.contextmanager
def static_site(root: Path) -> Iterator[str]:
    """Serve the files under `root` on a loopback port; yields the site's origin."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, fmt: str, *args: Any) -> None:
            pass

    class Server(http.server.ThreadingHTTPServer):
        def handle_error(self, request: Any, client_address: Any) -> None:
            pass  # the browser, killed at the end of a transport, drops the downloads it had going

    handler = functools.partial(Quiet, directory=str(root))
    with Server(("127.0.0.1", 0), handler) as httpd:
        thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{httpd.server_address[1]}"
        finally:
            httpd.shutdown()
            thread.join(10)


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
        xmpp, jid = self._xmpp, slixmpp.JID(to)
        self._loop.call_soon_threadsafe(lambda: xmpp.send_message(mto=jid, mbody=body, mtype="chat"))

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


def test_converse_in_chromium_over_websocket_and_bosh(tmp_path: Path, chromium: str) -> None:
    site = tmp_path / "site"
    site.mkdir()
    # What the page loads: Converse's dist/ as published (a link, not a 24 MB copy) and our hooks.
    (site / "dist").symlink_to(CONVERSE_DIST, target_is_directory=True)
    shutil.copyfile(PAGE_JS, site / "converse_page.js")
    accounts = {"ws": "webws", "bosh": "webbosh", "wss": "webwss"}
    users = [(name, PASSWORD) for name in accounts.values()] + [("desk", PASSWORD)]
    for transport in accounts:
        (site / f"{transport}.html").write_text(PAGE.format(transport=transport))
    (tmp_path / "server").mkdir()
    with static_site(site) as origin, running_server(tmp_path / "server", users=users) as server:
        desk = SlixmppThread(f"{DESK}/desk", PASSWORD, server.c2s_port)
        try:
            shots = trio.run(_scenario, chromium, origin, accounts, tmp_path, server, desk)
        finally:
            desk.stop()
    (REPO / "artifacts").mkdir(exist_ok=True)
    for shot in shots:
        assert shot.read_bytes().startswith(b"\x89PNG")
        kept = REPO / "artifacts" / shot.name
        shutil.copyfile(shot, kept)
        print(f"screenshot: {shot} (copied to {kept})")


async def _scenario(
    chromium: str,
    origin: str,
    accounts: dict[str, str],
    tmp_path: Path,
    server: ServerProcess,
    desk: SlixmppThread,
) -> list[Path]:
    port, tls_port = server.http_port, server.https_port
    settings = {
        "ws": {"websocket_url": f"ws://127.0.0.1:{port}/xmpp-websocket"},
        "bosh": {"bosh_service_url": f"http://127.0.0.1:{port}/http-bind"},
        # The self-signed certificate of the test server: see cdp.open_chromium.
        "wss": {"websocket_url": f"wss://localhost:{tls_port}/xmpp-websocket"},
    }
    shots = []
    for transport, account in accounts.items():
        url = f"{origin}/{transport}.html"
        with trio.fail_after(TIMEOUT_PER_TRANSPORT):
            async with open_chromium(
                url, tmp_path / f"profile-{transport}", chromium=chromium, size=(1100, 720)
            ) as page:
                jid = f"{account}@localhost"
                try:
                    shots.append(
                        await _chat(page, transport, jid, settings[transport], desk, server, tmp_path)
                    )
                except BaseException:
                    await _explain(page, tmp_path / f"converse-{transport}-failed.png")
                    raise
    return shots


async def _chat(
    page: Page,
    transport: str,
    jid: str,
    service: dict[str, str],
    desk: SlixmppThread,
    server: ServerProcess,
    tmp_path: Path,
) -> Path:
    """Log in through Converse's form over one transport, chat with slixmpp; the screenshot."""
    config = {
        **service,
        "authentication": "login",
        "discover_connection_methods": False,  # only the transport under test
        "auto_reconnect": False,  # a dropped session must fail the test, not be papered over
        "view_mode": "fullscreen",
        "i18n": "en",
        "loglevel": "debug",  # every stanza in the console: a failure prints the last ones
        "use_system_emojis": True,  # the default fetches images from a CDN
        "play_sounds": False,
        "show_desktop_notifications": False,
        "disable_effects": True,
    }
    await page.evaluate(f"imactorTest.start({json.dumps(config)})")  # focuses the JID field
    await page.type_text(jid)
    await page.evaluate("imactorTest.focus('converse-login-form input[name=\"password\"]')")
    await page.type_text(PASSWORD)
    await page.press_enter()
    full_jid = await page.evaluate("imactorTest.loggedIn()")
    assert full_jid.startswith(f"{jid}/"), full_jid

    text = f"hello from Converse.js over {transport}"
    await page.evaluate(f"imactorTest.openChat({json.dumps(DESK)})")
    await page.type_text(text)
    await page.press_enter()
    sender = await trio.to_thread.run_sync(desk.expect, text)
    assert sender == full_jid
    mine = await page.evaluate(f"imactorTest.waitForMessage({json.dumps(DESK)}, {json.dumps(text)})")
    assert mine["from"] == full_jid, mine

    reply = f"slixmpp answers over {transport}"
    desk.send(full_jid, reply)
    shown = await page.evaluate(f"imactorTest.waitForMessage({json.dumps(DESK)}, {json.dumps(reply)})")
    assert shown["from"] == f"{DESK}/desk", shown
    # The conversation, as the chat view shows it (and the screenshot): those two, nothing else.
    assert await page.evaluate(f"imactorTest.messages({json.dumps(DESK)})") == [
        {"from": full_jid, "text": text},
        {"from": f"{DESK}/desk", "text": reply},
    ]
    shot = await page.screenshot(tmp_path / f"converse-{transport}.png")

    # Converse's logout ends the session (BOSH terminate, WebSocket <close/>): the server is left
    # with slixmpp's session alone. Its status socket is the only witness, so it is polled; a
    # server that logged an error meanwhile (a crashed listener, say) fails at once, with it.
    await page.evaluate("imactorTest.logOut()")
    deadline = trio.current_time() + LOGOUT_SECONDS
    while True:
        document = await trio.to_thread.run_sync(server.status)
        assert not _server_errors(server), _server_errors(server)
        if document["totals"]["sessions"] == 1:
            break
        sessions = [worker["sessions"] for worker in document["workers"]]
        assert trio.current_time() < deadline, f"{LOGOUT_SECONDS} s after Converse's <close/>: {sessions}"
        await trio.sleep(0.1)  # the state is in the server's processes: no event to wait on
    # Nothing went wrong on the way that Converse noticed: no error logged, no uncaught exception,
    # no resource that failed to load (a CDN, say: see cdp.open_chromium), except the sponsors'
    # logos that Converse's login page links from its web site (decoration, no setting turns it off).
    errors = [
        line
        for line in page.console
        if line.startswith(("console.error", "uncaught", "log.error")) and SPONSOR_LOGOS not in line
    ]
    assert not errors, errors
    return shot


def _server_errors(server: ServerProcess) -> list[str]:
    """The ERROR and CRITICAL lines of the server's log (`running_server` writes it)."""
    log = server.data_dir.parent / "server.log"
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    return [line for line in lines if " ERROR " in line or " CRITICAL " in line]


async def _explain(page: Page, path: Path) -> None:
    """On failure: print what the page logged and what it showed, keep a screenshot of it."""
    # Shielded: the failure may be the timeout's cancellation, which would cancel this too.
    with trio.CancelScope(shield=True), trio.move_on_after(5), contextlib.suppress(Exception):
        print("\n".join(page.console[-80:]))
        print(await page.evaluate("document.body.innerText.slice(0, 3000)"))
        print(f"screenshot of the failure: {await page.screenshot(path)}")
