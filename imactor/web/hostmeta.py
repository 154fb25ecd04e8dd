"""XEP-0156: the host-meta documents announcing the WebSocket and BOSH endpoints.

``/.well-known/host-meta`` (XRD, RFC 6415) and ``/.well-known/host-meta.json`` (JRD) list one link
each for BOSH (``urn:xmpp:alt-connections:xbosh``) and WebSocket
(``urn:xmpp:alt-connections:websocket``). The URLs use the host the client asked for (its ``Host``
header, when it is a plain host[:port]) and the scheme of the listener it reached. In a cluster
(docs/cluster.md) the other live nodes' listeners of the same scheme follow, so that a client
whose node dies knows where else to go. Anyone may read them, from any origin (XEP-0156 §3.1:
CORS ``*``).
"""

from __future__ import annotations

import json
import re
from xml.sax.saxutils import quoteattr

from imactor.web.messages import Request, Response

XRD_PATH = "/.well-known/host-meta"
JRD_PATH = "/.well-known/host-meta.json"
PATHS = frozenset({XRD_PATH, JRD_PATH})
REL_BOSH = "urn:xmpp:alt-connections:xbosh"
REL_WEBSOCKET = "urn:xmpp:alt-connections:websocket"
_HOST = re.compile(r"[A-Za-z0-9.-]+(:\d{1,5})?|\[[0-9A-Fa-f:.]+\](:\d{1,5})?")


def respond(
    request: Request,
    websocket_path: str,
    bosh_path: str,
    *,
    tls: bool,
    domain: str,
    others: tuple[str, ...] = (),
) -> Response:
    """`others`: the other nodes' web listeners (``http://host:port``), in a cluster."""
    if request.method not in ("GET", "HEAD"):
        return Response(405, b"GET only\n", headers=[("Allow", "GET")])
    host = request.headers.get("host", "")
    if not _HOST.fullmatch(host):
        host = domain
    scheme = "https" if tls else "http"
    bases = [f"{scheme}://{host}", *(base for base in others if base.startswith(f"{scheme}://"))]
    links = [(REL_BOSH, f"{base}{bosh_path}") for base in bases]
    links += [
        (REL_WEBSOCKET, f"{'wss' if tls else 'ws'}{base[len(scheme) :]}{websocket_path}") for base in bases
    ]
    cors = [("Access-Control-Allow-Origin", "*")]
    if request.path == JRD_PATH:
        document = {"links": [{"rel": rel, "href": href} for rel, href in links]}
        return Response(200, json.dumps(document).encode(), "application/json", cors)
    lines = "".join(f"  <Link rel={quoteattr(rel)} href={quoteattr(href)}/>\n" for rel, href in links)
    xrd = f"<?xml version='1.0' encoding='utf-8'?>\n<XRD xmlns='http://docs.oasis-open.org/ns/xri/xrd-1.0'>\n{lines}</XRD>\n"
    return Response(200, xrd.encode(), "application/xrd+xml; charset=utf-8", cors)
