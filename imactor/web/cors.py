"""Origin checks and CORS headers for the browser-facing endpoints (WebSocket, BOSH).

``[http] allowed_origins`` lists the web origins whose pages may talk to the server
(``"https://chat.example.com"``; ``"null"`` for pages from files; ``"*"`` for any). Empty, the
default, allows the same origin only: a page served from the host and port it connects to.
A request without an ``Origin`` header comes from no browser page, and no origin policy applies.
"""

from __future__ import annotations

from collections.abc import Sequence

from imactor.web.messages import Request, Response

#: How long a browser may cache a preflight answer, in seconds.
PREFLIGHT_MAX_AGE = "86400"


def origin_allowed(request: Request, allowed: Sequence[str]) -> bool:
    origin = request.headers.get("origin")
    if origin is None or "*" in allowed or origin in allowed:
        return True
    if allowed:
        return False
    # Same origin: the Origin's host[:port] is the Host the browser connected to.
    authority = origin.partition("://")[2]
    return bool(authority) and authority.lower() == request.headers.get("host", "").lower()


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
