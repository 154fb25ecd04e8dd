"""The origin policy of the web endpoints (issue 13, 9) and the rate-limited log of its refusals."""

from __future__ import annotations

import logging

import pytest

from imactor.web import cors
from imactor.web.messages import Request


def request(origin: str | None, host: str = "xmpp.example.com:5443") -> Request:
    headers = {"host": host}
    if origin is not None:
        headers["origin"] = origin
    return Request("POST", "/http-bind", headers)


@pytest.mark.parametrize(
    ("origin", "allowed", "admitted"),
    [
        ("https://intranet.example.com", (), True),  # the default: any page
        ("null", (), True),
        (None, ("https://chat.example.com",), True),  # not a browser page
        ("https://chat.example.com", ("https://chat.example.com",), True),
        ("https://Chat.Example.com", ("https://chat.example.com",), True),
        ("https://xmpp.example.com:5443", ("https://chat.example.com",), True),  # the server's own
        ("https://intranet.example.com", ("https://chat.example.com",), False),
        ("null", ("https://chat.example.com",), False),
        ("null", ("null",), True),
        ("https://intranet.example.com", ("https://chat.example.com", "*"), True),
    ],
)
def test_policy(origin: str | None, allowed: tuple[str, ...], admitted: bool) -> None:
    assert cors.origin_allowed(request(origin), allowed) is admitted


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def refusal_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    records = caplog.records
    return [r.getMessage() for r in records if r.name == "imactor.web" and r.levelno == logging.WARNING]


def has_all(line: str, *parts: str) -> bool:
    return all(part in line for part in parts)


def test_refusals_are_logged_once_per_origin_per_window(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    guard = cors.OriginGuard(clock)
    allowed = ("https://chat.example.com",)

    def admits(origin: str, endpoint: str, remote: str) -> bool:
        return guard.admits(request(origin), allowed, endpoint=endpoint, remote=remote)

    caplog.set_level(logging.INFO, "imactor.web")
    assert admits("https://chat.example.com", "BOSH request", "10.0.0.1")
    for address in ("10.0.0.2", "10.0.0.3", "10.0.0.4"):
        assert not admits("https://evil.example", "WebSocket upgrade", address)
    assert not admits("https://other.example", "BOSH request", "10.0.0.5")
    lines = refusal_lines(caplog)
    assert len(lines) == 2, lines
    assert has_all(lines[0], "WebSocket upgrade", "'https://evil.example'", "10.0.0.2"), lines
    assert has_all(lines[1], "BOSH request", "'https://other.example'", "10.0.0.5"), lines

    clock.now += cors.REFUSAL_WINDOW
    caplog.clear()
    assert not admits("https://evil.example", "BOSH request", "10.0.0.6")
    summary, again = refusal_lines(caplog)
    assert summary.startswith("2 more requests"), summary
    assert has_all(again, "'https://evil.example'", "10.0.0.6"), again


def test_a_flood_of_made_up_origins_is_bounded(caplog: pytest.LogCaptureFixture) -> None:
    guard = cors.OriginGuard(Clock())
    caplog.set_level(logging.INFO, "imactor.web")
    for n in range(cors.REFUSAL_LINES_PER_WINDOW * 5):
        guard.admits(request(f"https://x{n}.example"), ("https://chat.example.com",), endpoint="BOSH request",
                     remote="10.0.0.1")  # fmt: skip
    assert len(refusal_lines(caplog)) == cors.REFUSAL_LINES_PER_WINDOW
