"""End to end in a real browser: Converse.js in headless Chromium logs in over WebSocket (ws:// and
wss://) and over BOSH, and chats with a slixmpp client on TCP; and sends it a picture through
XEP-0363 HTTP upload, and shows one slixmpp uploaded.

The browser is Debian's ``chromium``, the client Converse.js from npm, the version pinned in
``scripts/install-browser.sh``, which installs both when they are missing (so a fresh machine and
CI need nothing else). The test serves Converse's built ``dist/`` (bundle, CSS, fonts, lazily
loaded chunks: Converse's default ``assets_path`` is ``/dist``) and a page of its own from a small
HTTP server on loopback; Chromium resolves no other host, so nothing comes from a CDN. The page's
origin is that server's, another origin than the XMPP server's HTTP ports (the usual deployment:
the page comes from the company's web server); the XMPP server runs with its default
``[http] allowed_origins`` (empty: pages of any origin may connect) and default modules. One
server, one site and one slixmpp user serve the module's tests (module fixtures); each test starts
its browsers. Chromium accepts the server's self-signed certificate by its key and no other
(``--ignore-certificate-errors-spki-list``, see `tests.browser.cdp.open_chromium`); Python's
HTTPS clients verify it as their only trust anchor.

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

The upload (``converse-upload.png``; Converse over ws://): the test picks a PNG of random pixels,
written in its tmp dir, in the chat's file input (the one behind Converse's paperclip button,
which Converse shows once its disco found ``upload.localhost``) with the DevTools protocol's
``DOM.setFileInputFiles``, as the browser's file chooser would. Converse does the rest by
itself: the slot request, the PUT to the HTTPS listener (another origin than the page's, so a
CORS preflight first: ``Content-Type: image/png`` is not a "simple" header), and the message
with the GET URL as its body and in a XEP-0066 ``jabber:x:oob`` element. slixmpp must receive
both, and the GET must return the picture's bytes as ``image/png``; Converse's own chat view must
show the picture, loaded from that URL. Then the other way: slixmpp's XEP-0363 plugin finds the
service and gets a slot, aiohttp PUTs another picture, slixmpp sends its URL, and Converse must
show it, loaded (its natural size is the picture's). Both end with Converse's logout and the same
checks as the chats.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import os
import shutil
import ssl
import struct
import subprocess
import threading
import urllib.request
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.browser.cdp import Page, open_chromium
from tests.browser.desk import DESK, DESK_PASSWORD, SlixmppThread
from tests.support.server import ServerProcess, running_server
from tests.support.timeouts import TIMEOUT

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("IMACTOR_BROWSER_CACHE", REPO / ".cache" / "browser"))
CONVERSE_DIST = CACHE / "node_modules" / "converse.js" / "dist"
PAGE_JS = Path(__file__).with_name("converse_page.js")
PASSWORD = "browser test password"
SPONSOR_LOGOS = "net::ERR_NAME_NOT_RESOLVED https://conversejs.org/media/logos/"
#: What Converse logs when work it began before its logout goes on after it: the chat partner's
#: OMEMO device list, read from the browser's storage, then asked of the server on a connection
#: Converse itself has closed. Its own race (it refuses to send), nothing the server did.
SENT_AFTER_LOGOUT = (
    "console.error: Could not fetch OMEMO devices for ",
    "console.error: Error: Not sending IQ stanza because we're not connected!",
)
TIMEOUT_PER_TRANSPORT = 40.0
ACCOUNTS = {"ws": "webws", "bosh": "webbosh", "wss": "webwss"}  # transport: the account using it
UPLOADER = "webupload"  # the account of the upload test (over ws://)
UPLOAD_SERVICE = "upload.localhost"
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


@pytest.fixture(scope="module")
def origin(chromium: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The site that serves Converse and the test's pages, for the module's tests; its origin."""
    site = tmp_path_factory.mktemp("site")
    # What the page loads: Converse's dist/ as published (a link, not a 24 MB copy) and our hooks.
    (site / "dist").symlink_to(CONVERSE_DIST, target_is_directory=True)
    shutil.copyfile(PAGE_JS, site / "converse_page.js")
    for transport in ACCOUNTS:
        (site / f"{transport}.html").write_text(PAGE.format(transport=transport))
    (site / "upload.html").write_text(PAGE.format(transport="ws, sending a file"))
    with static_site(site) as url:
        yield url


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for the module's tests, with its default modules (XEP-0363 upload among them)."""
    users = [(name, PASSWORD) for name in (*ACCOUNTS.values(), UPLOADER)] + [("desk", DESK_PASSWORD)]
    with running_server(tmp_path_factory.mktemp("server"), users=users) as process:
        yield process


def test_converse_in_chromium_over_websocket_and_bosh(
    tmp_path: Path, chromium: str, origin: str, server: ServerProcess, desk: SlixmppThread
) -> None:
    _keep(trio.run(_scenario, chromium, origin, ACCOUNTS, tmp_path, server, desk))


def _keep(shots: list[Path]) -> None:
    """Check the screenshots and copy them to artifacts/."""
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
                url,
                tmp_path / f"profile-{transport}",
                chromium=chromium,
                size=(1100, 720),
                trust=[_cert(server)],
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
    full_jid = await _log_in(page, jid, service)
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
    await _log_out(page, server)
    return shot


async def _log_in(page: Page, jid: str, service: dict[str, str]) -> str:
    """Start Converse with `service` (its transport's URL), log in as `jid` through its login form
    (typed, Enter pressed); the full JID the server bound."""
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
    full_jid: str = await page.evaluate("imactorTest.loggedIn()")
    assert full_jid.startswith(f"{jid}/"), full_jid
    return full_jid


async def _log_out(page: Page, server: ServerProcess) -> None:
    """Log Converse out; the server must end its session and have logged no error, and the page too."""
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
    # logos that Converse's login page links from its web site (decoration, no setting turns it off)
    # and, once Converse said it was disconnected, its own sends refused for that (above).
    console = page.console
    said = [i for i, line in enumerate(console) if "Status changed to: DISCONNECTED" in line]
    disconnected = said[0] if said else len(console)
    errors = [
        line
        for i, line in enumerate(console)
        if line.startswith(("console.error", "uncaught", "log.error"))
        and SPONSOR_LOGOS not in line
        and not (i > disconnected and line.startswith(SENT_AFTER_LOGOUT))
    ]
    assert not errors, errors


def test_converse_sends_and_shows_files_through_http_upload(
    tmp_path: Path, chromium: str, origin: str, server: ServerProcess, desk: SlixmppThread
) -> None:
    picture = tmp_path / "from converse.png"  # a space: the URLs quote the name
    picture.write_bytes(_png(160, 90))
    _keep([trio.run(_upload, chromium, origin, picture, tmp_path, server, desk)])


async def _upload(
    chromium: str, origin: str, picture: Path, tmp_path: Path, server: ServerProcess, desk: SlixmppThread
) -> Path:
    with trio.fail_after(TIMEOUT_PER_TRANSPORT):
        async with open_chromium(
            f"{origin}/upload.html",
            tmp_path / "profile-upload",
            chromium=chromium,
            size=(1100, 720),
            trust=[_cert(server)],
        ) as page:
            try:
                return await _send_and_show_files(page, picture, tmp_path, server, desk)
            except BaseException:
                await _explain(page, tmp_path / "converse-upload-failed.png")
                raise


async def _send_and_show_files(
    page: Page, picture: Path, tmp_path: Path, server: ServerProcess, desk: SlixmppThread
) -> Path:
    """Converse uploads a picture the user picked and sends its URL; slixmpp downloads the same
    bytes. Then slixmpp uploads one, and Converse shows it. The screenshot of the conversation."""
    websocket = {"websocket_url": f"ws://127.0.0.1:{server.http_port}/xmpp-websocket"}
    full_jid = await _log_in(page, f"{UPLOADER}@localhost", websocket)
    await page.evaluate(f"imactorTest.openChat({json.dumps(DESK)})")
    # The paperclip button's file input: the file chooser's choice, and its change event, come
    # from the browser (DevTools), so Converse takes it as a user's; it does the rest on its own:
    # the slot request to the service its disco found, the cross-origin PUT, the message.
    selector = await page.evaluate(f"imactorTest.uploadInput({json.dumps(DESK)})")
    await page.set_files(selector, [picture])
    # Converse shows the picture once its PUT succeeded (loaded from the GET URL), or an error
    # at once when the slot request or the PUT failed: that error is the test's failure.
    mine = await page.evaluate(f"imactorTest.waitForImage({json.dumps(DESK)}, {json.dumps(full_jid)})")
    # (Converse's chat states come from that JID too, without a body.)
    sent = await trio.to_thread.run_sync(desk.expect_from, lambda m: m.sender == full_jid and bool(m.body))
    base = f"https://localhost:{server.https_port}/upload/"
    assert sent.body.startswith(base), sent
    assert sent.body.endswith("/from%20converse.png"), sent
    assert sent.oob_url == sent.body, sent  # XEP-0066, how clients know the body is a file
    trusted = ssl.create_default_context(cafile=str(_cert(server)))
    content_type, data = await trio.to_thread.run_sync(_download, sent.body, trusted)
    assert content_type == "image/png"
    assert data == await trio.Path(picture).read_bytes()
    assert mine == {"from": full_jid, "src": sent.body, "width": 160, "height": 90}, mine

    # The other way: slixmpp's XEP-0363 plugin finds the service and asks a slot, the PUT is
    # aiohttp's; Converse loads the picture from the GET URL it got in the message.
    theirs = _png(120, 120)
    url = await trio.to_thread.run_sync(
        desk.upload_and_send, UPLOAD_SERVICE, full_jid, "from slixmpp.png", theirs, trusted
    )
    shown = await page.evaluate(f"imactorTest.waitForImage({json.dumps(DESK)}, {json.dumps(DESK + '/desk')})")
    assert shown == {"from": f"{DESK}/desk", "src": url, "width": 120, "height": 120}, shown
    shot = await page.screenshot(tmp_path / "converse-upload.png")
    await _log_out(page, server)
    return shot


def _download(url: str, context: ssl.SSLContext) -> tuple[str, bytes]:
    """GET `url` (HTTPS, verified with `context`): its Content-Type and body."""
    with urllib.request.urlopen(url, context=context, timeout=TIMEOUT) as response:
        return str(response.headers["Content-Type"]), bytes(response.read())


def _png(width: int, height: int) -> bytes:
    """A PNG of random colours (so no two runs upload the same bytes), RGB, 8 bits a channel."""
    rows = b"".join(b"\x00" + os.urandom(width * 3) for _ in range(height))  # filter 0 per row

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def _cert(server: ServerProcess) -> Path:
    """The server's self-signed certificate (generated at its first start) for localhost."""
    return server.data_dir / "tls" / "localhost.crt"


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
