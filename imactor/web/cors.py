"""Origin checks and CORS headers for the browser-facing endpoints (WebSocket, BOSH).

By default (``[http] allowed_origins = []``) a page from any origin may connect, as with Prosody
and ejabberd: the usual deployment serves Converse.js or another web client from the company's
web server, another origin than the XMPP server's HTTP port. What an origin check (RFC 6455 §10.2)
guards against is a foreign page riding on the browser's ambient credentials (cookies, HTTP auth,
TLS client certificates). Nothing of the kind exists here: the server sets no cookie and reads
none, and every XMPP stream authenticates itself with SASL over that very stream (RFC 6120 §6),
so a foreign page gets nothing it could not get by connecting from anywhere else. The CORS headers
of BOSH (its POSTs are cross-origin requests with a preflight) follow the same policy: the page's
origin is echoed in ``Access-Control-Allow-Origin`` (with ``Vary: Origin``), never with
``-Allow-Credentials``.

``allowed_origins`` is the opt-in restriction: when it lists origins (``"https://chat.example.com"``;
``"null"`` for pages opened from files; ``"*"`` for any), only their pages and the server's own
origin (a page from the host and port it connects to) may connect; others get 403. A request
without an ``Origin`` header comes from no browser page, and no origin policy applies to it.

Every refusal is logged at warning level with the origin, the endpoint and the peer's address
(`OriginGuard`), since the page itself cannot show why it cannot connect. The log is rate-limited
(`REFUSAL_WINDOW`): a refused page retries every few seconds in every browser that opens it, and
anyone can send such requests, so an unlimited log would be a way to fill the disk. The first
refusal of each origin in a window is logged at once; the rest are counted, and the count is
logged with the next refusal after the window.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from imactor.web.messages import Request, Response

log = logging.getLogger("imactor.web")

#: How long a browser may cache a preflight answer, in seconds.
PREFLIGHT_MAX_AGE = "86400"
#: Seconds during which each refused origin is logged once.
REFUSAL_WINDOW = 60.0
#: Most refusal lines logged per window, all origins together (against floods of made-up origins).
REFUSAL_LINES_PER_WINDOW = 20


def origin_allowed(request: Request, allowed: Sequence[str]) -> bool:
    """Whether a request may proceed under ``[http] allowed_origins`` = `allowed` (docstring)."""
    origin = request.headers.get("origin")
    if origin is None or not allowed or "*" in allowed:
        return True
    if origin.lower() in (entry.lower() for entry in allowed):
        return True
    # The server's own origin: the Origin's host[:port] is the Host the browser connected to.
    authority = origin.partition("://")[2]
    return bool(authority) and authority.lower() == request.headers.get("host", "").lower()


class OriginGuard:
    """One worker's origin checks, with the rate-limited log of refusals (docstring)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._window_start = -REFUSAL_WINDOW
        self._logged: set[str] = set()  #: origins logged in this window
        self._lines = 0  #: refusal lines logged in this window
        self._unlogged = 0  #: refusals counted but not logged since the last summary

    def admits(self, request: Request, allowed: Sequence[str], *, endpoint: str, remote: str) -> bool:
        """Whether `request` may proceed; a refusal is logged (rate-limited)."""
        if origin_allowed(request, allowed):
            return True
        self._refused(request.headers.get("origin", ""), endpoint, remote)
        return False

    def _refused(self, origin: str, endpoint: str, remote: str) -> None:
        now = self._clock()
        if now - self._window_start >= REFUSAL_WINDOW:
            if self._unlogged:
                log.warning("%d more requests from origins not in [http] allowed_origins were refused "
                            "in the last %.0f s (not logged one by one)",
                            self._unlogged, now - self._window_start)  # fmt: skip
            self._window_start, self._lines, self._unlogged = now, 0, 0
            self._logged.clear()
        if origin in self._logged or self._lines >= REFUSAL_LINES_PER_WINDOW:
            self._unlogged += 1
            return
        self._logged.add(origin)
        self._lines += 1
        log.warning("%s from origin %r refused (peer %s): not in [http] allowed_origins, nor the "
                    "server's own origin", endpoint, origin, remote)  # fmt: skip


def allow_headers(request: Request) -> list[tuple[str, str]]:
    """Headers that let an allowed cross-origin page read the response."""
    origin = request.headers.get("origin")
    if origin is None:
        return []
    return [("Access-Control-Allow-Origin", origin), ("Vary", "Origin")]


def preflight(request: Request) -> Response:
    """The answer to a CORS preflight (OPTIONS) of an allowed origin."""
    asked = request.headers.get("access-control-request-headers", "Content-Type")
    headers = [
        *allow_headers(request),
        ("Access-Control-Allow-Methods", "POST, OPTIONS"),
        ("Access-Control-Allow-Headers", asked),
        ("Access-Control-Max-Age", PREFLIGHT_MAX_AGE),
    ]
    return Response(204, headers=headers)
