"""HTTP requests and responses as the web endpoints see them (the h11 side is `imactor.web.http_server`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import h11


@dataclass(frozen=True, slots=True)
class Request:
    """One request, headers lower-cased (a repeated header's values joined with ", ")."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes = b""
    query: str = ""  #: after "?", as sent


@dataclass(slots=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)


def text_response(status: int, text: str) -> Response:
    return Response(status, (text + "\n").encode())


def read_head(event: h11.Request) -> Request:
    """The endpoints' view of a request head: the path without query or fragment, headers
    lower-cased, a repeated header's values joined (RFC 9110 §5.3)."""
    headers: dict[str, str] = {}
    for name, value in event.headers:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    target = event.target.decode("latin-1").split("#", 1)[0]
    path, _, query = target.partition("?")
    return Request(event.method.decode("ascii"), path, headers, query=query)
