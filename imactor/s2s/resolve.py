"""Where a remote domain's XMPP server listens: `[s2s] routes`, else DNS (RFC 6120 §3.2, XEP-0368).

Order: a pinned route; else the SRV records of `_xmpps-server._tcp` (direct TLS, XEP-0368) and
`_xmpp-server._tcp` (STARTTLS), by priority then weight; else, when neither name has records,
the domain itself on 5269 (RFC 6120 §3.2.2, the A/AAAA fallback). A single SRV record with the
target "." says the service is not offered there (RFC 2782): no fallback then.

dnspython's resolver blocks, so every lookup runs in a thread (`trio.to_thread`): a worker's
loop never waits on DNS.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import dns.exception
import dns.resolver
import trio

log = logging.getLogger("imactor.s2s")

DEFAULT_PORT = 5269


@dataclass(frozen=True, slots=True)
class Target:
    host: str
    port: int
    direct_tls: bool = False  #: XEP-0368: TLS from the first byte


class NoService(Exception):
    """The domain says it offers no XMPP server-to-server service (SRV target ".")."""


async def resolve(domain: str, routes: Mapping[str, tuple[str, int]]) -> list[Target]:
    """The places to try, in order, for `domain`'s server (empty: none found)."""
    pinned = routes.get(domain)
    if pinned is not None:
        return [Target(*pinned)]
    return await trio.to_thread.run_sync(_lookup, domain, abandon_on_cancel=True)


def _lookup(domain: str) -> list[Target]:
    direct = _srv(f"_xmpps-server._tcp.{domain}.", direct_tls=True)
    starttls = _srv(f"_xmpp-server._tcp.{domain}.", direct_tls=False)
    if direct is None and starttls is None:
        return [Target(domain, DEFAULT_PORT)]  # no records at all: the A/AAAA fallback
    records = (direct or []) + (starttls or [])
    if not records:
        raise NoService(domain)
    # By priority; at equal priority direct TLS first (XEP-0368 §3: a round trip less), then
    # the heavier weight (a simplification of RFC 2782's weighted random choice).
    records.sort(key=lambda record: (record[0], not record[2].direct_tls, -record[1]))
    return [target for _, _, target in records]


def _srv(name: str, *, direct_tls: bool) -> list[tuple[int, int, Target]] | None:
    """(priority, weight, target) of one SRV name; None: no such records; []: the "." target."""
    try:
        answer = dns.resolver.resolve(name, "SRV")
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return None
    except dns.exception.DNSException as exc:
        log.info("SRV lookup of %s failed: %s", name, exc)
        return None
    records = [(int(r.priority), int(r.weight), str(r.target).rstrip("."), int(r.port)) for r in answer]
    if len(records) == 1 and records[0][2] == "":
        return []
    return [(priority, weight, Target(host, port, direct_tls)) for priority, weight, host, port in records]
