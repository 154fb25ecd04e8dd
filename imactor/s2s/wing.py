"""The worker's federation wing: the router's way out to other domains, and the way in.

One `Outgoing` per remote domain in each worker (ARCHITECTURE.md, "Federation", says why not one
per node), and per local domain it speaks for (the server's, or `conference.<domain>` for the
rooms), created on the first stanza or dialback question for that pair and dropped when it ends
(failed or idle). Policy (`[s2s] allow` / `deny`) applies both ways: a stanza to a refused
domain bounces with `remote-server-not-found` before any connection, and a refused domain
cannot authenticate on an inbound stream.
"""

from __future__ import annotations

import hashlib
import logging
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from imactor import tls
from imactor.s2s.inbound import serve_s2s
from imactor.s2s.limits import InboundLimits, InboundStatistics
from imactor.s2s.outbound import Outgoing
from imactor.xmpp import s2s
from imactor.xmpp.errors import StanzaError
from imactor.xmpp.stanza import Stanza

if TYPE_CHECKING:
    from pathlib import Path

    from imactor.server.services import Services

log = logging.getLogger("imactor.s2s")

#: The ALPN protocol of server-to-server XMPP over direct TLS (XEP-0368 §4).
ALPN_XMPP_SERVER = "xmpp-server"
#: After a remote server could not be reached, the next attempt waits this long, doubled at each
#: failure in a row up to `BACKOFF_MAX`; meanwhile stanzas for it bounce at once.
BACKOFF_FIRST = 5.0
BACKOFF_MAX = 300.0


@dataclass(frozen=True, slots=True)
class _Backoff:
    failures: int  #: in a row
    until: float  #: trio time of the next attempt
    condition: str  #: the last failure's stanza error condition, for the bounces meanwhile
    text: str


class S2SWing:
    def __init__(self, services: Services, listeners: Sequence[trio.SocketListener]) -> None:
        self.services = services
        self.router = services.router
        self.config = services.config.s2s
        self._listeners = listeners
        #: By (our domain, their domain): a stream speaks for one of our domains (XEP-0220 §2.5).
        self._outgoing: dict[tuple[str, str], Outgoing] = {}
        self._backoff: dict[tuple[str, str], _Backoff] = {}
        self._nursery: trio.Nursery | None = None
        served: set[str] = set()
        for domain, view in services.host_views.items():  # the primary domain and each [[hosts]] host
            served.add(domain)
            served.update(service.domain for service in view.modules.services(domain))
            if services.config.muc.enabled:
                served.add(f"{services.config.muc.subdomain}.{domain}")
        served.update(services.config.components)  # external components: reachable from other servers
        secret = (
            self.config.dialback_secret.encode()
            or hashlib.sha256(b"imactor-dialback\0" + services.tls_key_bytes).digest()
        )  # the same in every worker and node that shares the key
        self.protocol = s2s.S2SConfig(
            local_domain=services.domain, secret=secret, served_domains=frozenset(served),
            tls_required=self.config.starttls_required,
            dialback_allowed=not self.config.require_valid_certificates,
            max_stanza_size=services.config.limits.max_stanza_size,
        )  # fmt: skip
        # Per served domain ([[hosts]]): its certificate, to the peer that names it (SNI) and on
        # the streams we open for it (the peer's SASL EXTERNAL checks it against our 'from').
        certificates = services.config.certificates
        self.server_context = self._server_context(*certificates[services.domain])
        self._server_contexts = {domain: self._server_context(*pair) for domain, pair in certificates.items()}
        self._server_contexts[services.domain] = self.server_context
        if len(certificates) > 1:
            self.server_context.sni_callback = self._by_name
        self.client_context = self._client_context(*certificates[services.domain])
        self._client_contexts = {domain: self._client_context(*pair) for domain, pair in certificates.items()}
        #: `[s2s] rate`: one token bucket per remote domain, shared by its streams to this worker.
        self.limits = InboundLimits(self.config.rate_of)
        services.status_records["s2s"] = self.statistics

    def statistics(self) -> InboundStatistics:
        now = trio.current_time()
        limits = self.limits
        return InboundStatistics(
            stanzas_in=limits.stanzas_in, throttled=limits.throttled,
            throttled_seconds=round(limits.throttled_seconds, 3), throttled_domains=limits.over(now),
            outgoing=sum(1 for outgoing in self._outgoing.values() if not outgoing.closed),
        )  # fmt: skip

    # ---- contexts ------------------------------------------------------------------------------

    def _by_name(self, connection: ssl.SSLObject, server_name: str | None, _context: ssl.SSLContext) -> None:
        chosen = self._server_contexts.get(self._host_of((server_name or "").lower().rstrip(".")))
        if chosen is not None and chosen is not self.server_context:
            connection.context = chosen

    def _host_of(self, domain: str) -> str:
        """The served domain whose certificate speaks for `domain`: itself, or the host it is a
        service of (conference.<host>, upload.<host>); the primary domain otherwise."""
        for host in self.services.config.domains:
            if domain == host or domain.endswith(f".{host}"):
                return host
        return self.services.domain

    def client_context_for(self, local_domain: str) -> ssl.SSLContext:
        """The context of a stream we open for `local_domain` (its host's certificate)."""
        return self._client_contexts.get(self._host_of(local_domain), self.client_context)

    def _server_context(self, certificate: Path, key: Path) -> ssl.SSLContext:
        config = self.services.config
        context = tls.make_server_context(certificate, key, config.tls.min_version)
        context.set_alpn_protocols([ALPN_XMPP_SERVER])  # XEP-0368 §4, for direct TLS
        if self.config.require_valid_certificates:
            # Ask for the peer's certificate and let OpenSSL check its chain; the names are ours
            # to check (RFC 6125, imactor.xmpp.certnames). Without this setting no certificate is
            # asked for: stdlib TLS cannot accept an untrusted one and still report it, so
            # dialback is then the only way in.
            context.verify_mode = ssl.CERT_OPTIONAL
            self._load_trust(context)
        return context

    def _client_context(self, certificate: Path, key: Path) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.check_hostname = False  # RFC 6125 matching is ours (SRV-ID, XmppAddr too)
        context.load_cert_chain(certificate, key)  # for the peer's SASL EXTERNAL
        context.set_alpn_protocols([ALPN_XMPP_SERVER])
        if self.config.require_valid_certificates:
            context.verify_mode = ssl.CERT_REQUIRED
            self._load_trust(context)
        else:
            context.verify_mode = ssl.CERT_NONE  # dialback authenticates the peer
        return context

    def _load_trust(self, context: ssl.SSLContext) -> None:
        if self.config.ca_file is not None:
            context.load_verify_locations(cafile=self.config.ca_file)
        else:
            context.load_default_certs(ssl.Purpose.SERVER_AUTH)

    # ---- the worker's child --------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve the s2s listeners and host the outgoing streams' tasks until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for listener in self._listeners:
                await nursery.start(serve_s2s, self, listener)
            self.router.federate(self.route)
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self.router.federate(None)
                self._nursery = None

    # ---- what the router and the inbound streams call ------------------------------------------

    async def route(self, stanza: Stanza) -> None:
        """A stanza for another domain: queue it on that domain's stream (never waits)."""
        domain = stanza.to_jid.domainpart
        if self.protocol.serves(domain):
            # One of our own domains that the router has no handler for: never a stream to
            # ourselves (it would loop back in through our own listener).
            self.bounce(stanza, StanzaError("service-unavailable"))
            return
        if not self.config.permits(domain):
            self.bounce(
                stanza, StanzaError("remote-server-not-found", "federation with this domain is not allowed")
            )
            return
        sender = stanza.from_jid.domainpart
        local = sender if self.protocol.serves(sender) else self.protocol.local_domain
        backoff = self._held_back(local, domain)
        if backoff is not None:
            wait = backoff.until - trio.current_time()
            self.bounce(
                stanza, StanzaError(backoff.condition, f"{backoff.text}; next attempt in {wait:.0f} s")
            )
            return
        self._stream_to(local, domain).send(stanza)

    async def inbound(self, stanza: Stanza) -> None:
        """A stanza from an authenticated inbound stream: into the router, once its domain's
        rate allows. Waiting here stops the stream's reading (the caller's loop), so a flood
        fills the peer's TCP window instead of our memory (`imactor.s2s.limits`)."""
        domain = stanza.from_jid.domainpart
        if self.protocol.serves(domain):
            # Never authenticated for our own domains (dialback keys are ours to check); a
            # guard all the same: such a stanza would speak for one of our accounts.
            log.warning("s2s: dropped a stanza from our own domain %s", domain)
            return
        wait = self.limits.delay(domain, trio.current_time())
        if wait > 0:
            await trio.sleep(wait)
        await self.router.route(stanza, wait=True)

    async def verify(self, originating: str, receiving: str, stream_id: str, key: str) -> bool:
        """Whether `originating`'s server confirms `key`, which it sent to our domain `receiving`
        (XEP-0220 §2.1.2: asked on our stream from `receiving` to `originating`)."""
        if self._held_back(receiving, originating) is not None:
            return False  # its server could not be reached a moment ago: the key cannot be checked
        return await self._stream_to(receiving, originating).verify(originating, stream_id, key)

    def bounce(self, stanza: Stanza, error: StanzaError) -> None:
        """Send `error` back to the local sender of `stanza`, from the router's side."""
        nursery = self._nursery
        if nursery is not None:
            nursery.start_soon(self.router.bounce, stanza, error)

    def forget(self, outgoing: object, failure: tuple[str, str] | None) -> None:
        """`outgoing` ended; with `failure` (condition, text) it never got ready: back off."""
        if not isinstance(outgoing, Outgoing):
            return
        key = (outgoing.local_domain, outgoing.domain)
        if self._outgoing.get(key) is outgoing:
            del self._outgoing[key]
        if failure is None:
            self._backoff.pop(key, None)
            return
        previous = self._backoff.get(key)
        failures = previous.failures + 1 if previous is not None else 1
        delay = min(BACKOFF_FIRST * 2 ** (failures - 1), BACKOFF_MAX)
        self._backoff[key] = _Backoff(failures, trio.current_time() + delay, *failure)

    def _held_back(self, local: str, domain: str) -> _Backoff | None:
        backoff = self._backoff.get((local, domain))
        return backoff if backoff is not None and trio.current_time() < backoff.until else None

    def _stream_to(self, local: str, domain: str) -> Outgoing:
        outgoing = self._outgoing.get((local, domain))
        if outgoing is None or outgoing.closed:
            assert self._nursery is not None, "the wing is not running"
            outgoing = Outgoing(self, domain, local)
            self._outgoing[(local, domain)] = outgoing
            self._nursery.start_soon(outgoing.run)
        return outgoing
