"""Headless Chromium driven over its DevTools protocol (CDP) with trio-websocket: no Playwright.

`open_chromium` starts Debian's ``chromium`` on a page with ``--remote-debugging-port=0``, reads the
port it chose from its stderr, finds the page's DevTools WebSocket and yields a `Page` that can
evaluate JavaScript (awaiting promises), type and press keys as a user would (``Input`` domain,
so the page sees trusted keyboard events), pick files in a file input (``DOM.setFileInputFiles``),
and take screenshots. What the page logs to its console is kept (`Page.console`), to explain a
failure. The browser is killed at the end.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import itertools
import json
import re
import subprocess
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import trio
import trio_websocket
from cryptography import x509
from cryptography.hazmat.primitives import serialization

DEVTOOLS_LINE = re.compile(rb"DevTools listening on (ws://[^\s]+)")


class JavaScriptError(Exception):
    """A script thrown or rejected in the page."""


class Page:
    """One page target."""

    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self.ws = ws
        self._ids = itertools.count(1)
        self.console: list[str] = []  # console messages and uncaught exceptions, in order

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one CDP command and return its result (events that arrive meanwhile are skipped)."""
        command_id = next(self._ids)
        await self.ws.send_message(json.dumps({"id": command_id, "method": method, "params": params}))
        while True:
            reply = await self._receive()
            if reply.get("id") == command_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                result: dict[str, Any] = reply.get("result", {})
                return result

    async def _receive(self) -> dict[str, Any]:
        """The next message from the browser; console events are recorded on the way."""
        message: dict[str, Any] = json.loads(await self.ws.get_message())
        params = message.get("params", {})
        if message.get("method") == "Runtime.consoleAPICalled":
            words = [str(arg.get("value", arg.get("description", ""))) for arg in params.get("args", [])]
            self.console.append(f"console.{params.get('type')}: {' '.join(words)}")
        elif message.get("method") == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            self.console.append(f"uncaught: {details.get('exception', {}).get('description') or details}")
        elif message.get("method") == "Log.entryAdded":  # the browser's own: failed loads, CSP...
            entry = params.get("entry", {})
            self.console.append(f"log.{entry.get('level')}: {entry.get('text')} {entry.get('url', '')}")
        return message

    async def goto(self, url: str) -> None:
        """Navigate to `url` and wait for its load event (scripts have run by then)."""
        await self.call("Page.enable")
        await self.call("Runtime.enable")
        await self.call("Log.enable")
        await self.call("Page.navigate", url=url)
        while (await self._receive()).get("method") != "Page.loadEventFired":
            pass

    async def evaluate(self, expression: str) -> Any:
        """The value of `expression` in the page (a promise is awaited).

        The promise is kept in a page global until it settles: the protocol holds the promise it
        awaits only weakly, and Debian's Chromium 150 failed the call with "Promise was
        collected" while the page was still waiting on it (a login's wait, in three runs of the
        browser tests out of four; in none since it is kept)."""
        kept = (
            "(() => { const kept = (globalThis.__imactorAwaited ??= new Set());"
            f" const awaited = Promise.resolve(({expression}));"
            " kept.add(awaited); awaited.finally(() => kept.delete(awaited)).catch(() => {});"
            " return awaited; })()"
        )
        result = await self.call("Runtime.evaluate", expression=kept, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise JavaScriptError(details.get("exception", {}).get("description") or details.get("text"))
        return result.get("result", {}).get("value")

    async def type_text(self, text: str) -> None:
        """Type `text` into the focused element, as the keyboard would (trusted input events)."""
        await self.call("Input.insertText", text=text)

    async def press_enter(self) -> None:
        """Press and release the Enter key in the focused element."""
        key = {"key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13, "nativeVirtualKeyCode": 13}
        await self.call("Input.dispatchKeyEvent", type="keyDown", text="\r", **key)
        await self.call("Input.dispatchKeyEvent", type="keyUp", **key)

    async def set_files(self, selector: str, files: list[Path]) -> None:
        """Choose `files` in the page's ``<input type=file>`` matching `selector`, as the file chooser
        would: the input gets them and fires its ``change`` event (the page cannot tell the difference)."""
        found = await self.call(
            "Runtime.evaluate", expression=f"document.querySelector({json.dumps(selector)})"
        )
        element = found.get("result", {})
        if element.get("subtype") != "node":
            raise JavaScriptError(f"no element {selector}")
        await self.call("DOM.setFileInputFiles", files=[str(f) for f in files], objectId=element["objectId"])

    async def screenshot(self, path: Path) -> Path:
        data = await self.call("Page.captureScreenshot", format="png")
        await trio.Path(path).write_bytes(base64.b64decode(data["data"]))
        return path


@contextlib.asynccontextmanager
async def open_chromium(
    url: str,
    profile: Path,
    *,
    chromium: str = "chromium",
    size: tuple[int, int] = (1000, 700),
    trust: Sequence[Path] = (),
) -> AsyncIterator[Page]:
    """Headless Chromium showing `url` (loaded), its profile in `profile`, for the duration of the block.

    `trust`: PEM certificates (a test server's self-signed one) that Chromium accepts for any host
    their names fit, besides the system's CAs; any other certificate error still fails the load."""
    argv = [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--mute-audio",
        f"--window-size={size[0]},{size[1]}", "--remote-debugging-port=0",
        "--remote-debugging-address=127.0.0.1",
        # The test server's self-signed certificate: its key, and no other, gets past the checks
        # that fail it (the unknown issuer). A key is named by the SHA-256 of its SubjectPublicKeyInfo.
        f"--ignore-certificate-errors-spki-list={','.join(spki_hash(pem) for pem in trust)}",
        # Only loopback resolves: a page that reached for the internet (a CDN) fails here as it
        # would in an offline CI, instead of passing by luck.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
        f"--user-data-dir={profile}", "about:blank",
    ]  # fmt: skip
    process = await trio.lowlevel.open_process(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert process.stderr is not None
        log = b""
        browser_url: str | None = None
        while browser_url is None:
            chunk = await process.stderr.receive_some(4096)
            if not chunk:
                raise RuntimeError(f"chromium exited: {log.decode(errors='replace')}")
            log += chunk
            found = DEVTOOLS_LINE.search(log)
            if found:
                browser_url = found.group(1).decode()
        port = int(browser_url.split(":")[2].split("/")[0])
        page_url = await _page_websocket(port)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_drain, process.stderr)
            ws = await trio_websocket.connect_websocket_url(nursery, page_url, max_message_size=1 << 26)
            page = Page(ws)
            await page.goto(url)
            try:
                yield page
            finally:
                await ws.aclose()
                nursery.cancel_scope.cancel()
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        with trio.move_on_after(5):
            await process.wait()


def spki_hash(certificate: Path) -> str:
    """base64(SHA-256(SubjectPublicKeyInfo)) of a PEM certificate: how Chromium's flags name a key."""
    key = x509.load_pem_x509_certificate(certificate.read_bytes()).public_key()
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


async def _page_websocket(port: int) -> str:
    """The DevTools WebSocket of the first page target (``/json/list``)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(f"GET /json/list HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        data = b""
        # Read by Content-Length: the DevTools HTTP server may keep the connection open.
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < _content_length(data):
            chunk = await stream.receive_some(65536)
            if not chunk:
                break
            data += chunk
    targets = json.loads(data.split(b"\r\n\r\n", 1)[1])
    pages = [t for t in targets if t.get("type") == "page"]
    assert pages, targets
    return str(pages[0]["webSocketDebuggerUrl"])


def _content_length(data: bytes) -> int:
    found = re.search(rb"(?im)^content-length:\s*(\d+)", data.split(b"\r\n\r\n", 1)[0])
    return int(found.group(1)) if found else 0


async def _drain(stream: trio.abc.ReceiveStream) -> None:
    """Keep reading chromium's stderr, so that it never blocks on a full pipe."""
    with contextlib.suppress(trio.ClosedResourceError, trio.BrokenResourceError):
        while await stream.receive_some(65536):
            pass
