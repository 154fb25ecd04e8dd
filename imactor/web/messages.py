"""HTTP requests and responses as the web endpoints see them (the h11 side is `imactor.web.http_server`)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Request:
    """One request, headers lower-cased (a repeated header's values joined with ", ")."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes = b""


@dataclass(slots=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)


def text_response(status: int, text: str) -> Response:
    return Response(status, (text + "\n").encode())
