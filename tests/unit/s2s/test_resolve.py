"""Where a remote domain's server is: routes, then SRV (RFC 6120 §3.2, XEP-0368), then A/AAAA.

DNS itself is replaced by a table of records (dnspython's own SRV rdata), so the order of the
targets is checked without a network.
"""

from __future__ import annotations

from collections.abc import Mapping

import dns.rdata
import dns.resolver
import pytest

from imactor.s2s import resolve as resolve_module
from imactor.s2s.resolve import NoService, Target, resolve


def fake_dns(monkeypatch: pytest.MonkeyPatch, records: Mapping[str, list[str]]) -> list[str]:
    asked: list[str] = []

    def lookup(name: str, rdtype: str) -> list[object]:
        asked.append(name)
        assert rdtype == "SRV"
        if name not in records:
            raise dns.resolver.NXDOMAIN
        return [dns.rdata.from_text("IN", "SRV", text) for text in records[name]]

    monkeypatch.setattr(resolve_module.dns.resolver, "resolve", lookup)
    return asked


async def test_a_route_is_used_without_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    asked = fake_dns(monkeypatch, {})
    assert await resolve("partner.example", {"partner.example": ("10.0.0.5", 5270)}) == [
        Target("10.0.0.5", 5270)
    ]
    assert asked == []


async def test_srv_targets_by_priority_direct_tls_first(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_dns(monkeypatch, {
        "_xmpp-server._tcp.example.com.": ["20 0 5269 backup.example.com.", "10 0 5269 xmpp.example.com."],
        "_xmpps-server._tcp.example.com.": ["10 0 5270 xmpp.example.com."],
    })  # fmt: skip
    assert await resolve("example.com", {}) == [
        Target("xmpp.example.com", 5270, direct_tls=True),
        Target("xmpp.example.com", 5269),
        Target("backup.example.com", 5269),
    ]


async def test_no_records_fall_back_to_the_domain_on_5269(monkeypatch: pytest.MonkeyPatch) -> None:
    asked = fake_dns(monkeypatch, {})
    assert await resolve("example.net", {}) == [Target("example.net", 5269)]
    assert asked == ["_xmpps-server._tcp.example.net.", "_xmpp-server._tcp.example.net."]


async def test_a_dot_target_says_no_service(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_dns(monkeypatch, {"_xmpp-server._tcp.example.org.": ["0 0 0 ."]})
    with pytest.raises(NoService):
        await resolve("example.org", {})
