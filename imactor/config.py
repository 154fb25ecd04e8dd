"""The server configuration: one TOML file → frozen, typed config objects.

Every key is optional and has a default (``conf/imactor.toml`` lists them all). Unknown keys and
wrong types are `ConfigError`s naming the file, the dotted key and what is wrong, so a typo never
silently falls back to a default. Relative paths are relative to the config file's directory,
except ``status.socket`` (relative to ``server.data_dir``). ``[modules.<name>]`` tables stay raw:
each module validates its own options. Each field declares its default and check in one line
(`_opt`) and `parse_config` walks the dataclasses, so adding a key is adding a line.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, get_args

# ruff: noqa: RUF009  # `_opt` / `_table` return dataclass fields that carry each key's check.

TLSVersion = Literal["1.2", "1.3"]
Conflict = Literal["kick_old", "refuse", "random"]  # what a second login with a bound resource does
LogLevel = Literal["debug", "info", "warning", "error", "critical"]
LogFormat = Literal["text", "json"]

DEFAULT_MODULES: tuple[str, ...] = (
    "disco", "caps", "ping", "version", "entity_time", "last", "vcard", "private", "blocking",
    "register", "roster", "presence", "offline", "keepalive", "mam", "muc_mam",
    "carbons", "e2e_policy", "csi", "push",
    "pep",
    "avatar",
    "bookmarks",
    "http_upload",
    "adhoc",
)  # fmt: skip


class ConfigError(Exception):
    """The configuration file cannot be read or is invalid; the message says where and why."""


class _Invalid(Exception):
    """A check failed: ``(message, *subkeys)``; turned into a `ConfigError` naming the key."""


_Check = Callable[[Any], object]


def _show(value: object) -> str:
    """A value about as TOML writes it (JSON is close enough: "text", true, [1, 2]), for messages."""
    return "a table" if isinstance(value, dict) else json.dumps(value, ensure_ascii=False, default=str)


def _opt(default: object, check: _Check) -> Any:
    return field(default=default, metadata={"check": check})


def _table(cls: type[object]) -> Any:
    return field(default_factory=cls, metadata={"table": cls})


def _check(ok: Callable[[Any], object], expected: str, convert: _Check = lambda v: v) -> _Check:
    def check(value: object) -> object:
        if not ok(value):
            raise _Invalid(f"expected {expected}, got {_show(value)}")
        return convert(value)

    return check


def _int(low: int = 1, high: int | None = None) -> _Check:
    expected = {1: "a positive integer", 0: "a non-negative integer"}.get(low, f"an integer >= {low}")
    if high is not None:
        expected = f"an integer from {low} to {high}"
    # `type(v) is int`: bool is an int subclass in Python, but `true` is not a number in TOML.
    return _check(lambda v: type(v) is int and low <= v <= (v if high is None else high), expected)


def _str(pattern: str, what: str, convert: _Check = lambda v: v) -> _Check:
    return _check(lambda v: isinstance(v, str) and re.fullmatch(pattern, v), what, convert)


def _choice(*options: str) -> _Check:
    return _check(lambda v: v in options, "one of " + ", ".join(map(_show, options)))


def _strings(pattern: str = r".+", what: str = "non-empty strings") -> _Check:
    def unique(value: list[str]) -> tuple[str, ...]:
        if twice := [v for i, v in enumerate(value) if v in value[:i]]:
            raise _Invalid(f"{_show(twice[0])} is listed twice")
        return tuple(value)

    def ok(v: object) -> bool:
        return isinstance(v, list) and all(isinstance(x, str) and re.fullmatch(pattern, x) for x in v)

    return _check(ok, f"a list of {what}", unique)


_bool = _check(lambda v: isinstance(v, bool), "true or false")
_number = _check(lambda v: type(v) in (int, float) and 0 < v < float("inf"), "a positive number", float)
_workers = _check(lambda v: v == "auto" or (type(v) is int and v >= 1), '"auto" or a positive integer')
_path = _str(r".*", "a path", lambda v: Path(v).expanduser() if v else None)  # "": default location
_required_path = _str(r".+", "a non-empty path", lambda v: Path(v).expanduser())
_HOST_PATTERN = r"\S+"


def _hosts(value: object) -> tuple[str, ...]:
    """One address or a list of them: a listener binds each (IPv4 and IPv6 loopback by default)."""
    items = [value] if isinstance(value, str) else value
    if not (isinstance(items, list) and items and all(isinstance(h, str) and re.fullmatch(_HOST_PATTERN, h)
                                                     for h in items)):  # fmt: skip
        raise _Invalid(f"expected a host name or address, or a list of them, got {_show(value)}")
    if twice := [h for i, h in enumerate(items) if h in items[:i]]:
        raise _Invalid(f"{_show(twice[0])} is listed twice")
    return tuple(items)


_LOOPBACK = ("127.0.0.1", "::1")


@dataclass(frozen=True, slots=True)
class ServerConfig:
    domain: str = _opt("localhost", _str(r"[^\s@/:]+", "a domain name", str.lower))
    data_dir: Path = _opt(Path("data"), _required_path)  # absolute after load_config
    workers: int | Literal["auto"] = _opt(1, _workers)
    modules: tuple[str, ...] = _opt(DEFAULT_MODULES, _strings())
    admins: tuple[str, ...] = _opt((), _strings(r"[^\s@/]+@[^\s@/]+", "bare JIDs (user@domain)"))

    @property
    def worker_count(self) -> int:
        """`workers` with "auto" resolved to the number of CPUs."""
        return (os.cpu_count() or 1) if self.workers == "auto" else self.workers


@dataclass(frozen=True, slots=True)
class C2SListenerConfig:
    host: tuple[str, ...] = _opt(_LOOPBACK, _hosts)
    port: int = _opt(5222, _int(0, 65535))  # 0 = any free port (tests)
    starttls_required: bool = _opt(True, _bool)


@dataclass(frozen=True, slots=True)
class DirectTLSListenerConfig:  # XEP-0368: TLS from the first byte
    host: tuple[str, ...] = _opt(_LOOPBACK, _hosts)
    port: int = _opt(5223, _int(0, 65535))
    enabled: bool = _opt(True, _bool)


@dataclass(frozen=True, slots=True)
class HTTPListenerConfig:  # plain HTTP: WebSocket, BOSH and host-meta (imactor/web)
    host: tuple[str, ...] = _opt(_LOOPBACK, _hosts)
    port: int = _opt(5280, _int(0, 65535))
    enabled: bool = _opt(True, _bool)


@dataclass(frozen=True, slots=True)
class HTTPSListenerConfig:  # the same over TLS
    host: tuple[str, ...] = _opt(_LOOPBACK, _hosts)
    port: int = _opt(5443, _int(0, 65535))
    enabled: bool = _opt(True, _bool)


@dataclass(frozen=True, slots=True)
class S2SListenerConfig:  # server-to-server (RFC 6120), bound only when [s2s] enabled
    host: tuple[str, ...] = _opt(_LOOPBACK, _hosts)
    port: int = _opt(5269, _int(0, 65535))


def _networks(value: object) -> tuple[str, ...]:
    """A list of addresses or networks ("127.0.0.0/8", "::1"), each checked and normalised."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _Invalid(f"expected a list of addresses or networks, got {_show(value)}")
    networks = []
    for item in value:
        try:
            networks.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise _Invalid(f"{_show(item)} is not an address or a network") from None
    return tuple(networks)


@dataclass(frozen=True, slots=True)
class MetricsListenerConfig:  # Prometheus metrics of the whole node, served by the node supervisor
    enabled: bool = _opt(False, _bool)
    host: tuple[str, ...] = _opt(_LOOPBACK, _hosts)
    port: int = _opt(9580, _int(0, 65535))
    # Who may read them (the others get 403): the metrics name no user, but they show the load.
    allow: tuple[str, ...] = _opt(("127.0.0.0/8", "::1/128"), _networks)


@dataclass(frozen=True, slots=True)
class ConsoleListenerConfig:  # the web admin console (imactor/console), served by the node supervisor
    enabled: bool = _opt(False, _bool)
    host: tuple[str, ...] = _opt(_LOOPBACK, _hosts)  # another host needs tls = true
    port: int = _opt(5290, _int(0, 65535))
    tls: bool = _opt(False, _bool)  # HTTPS with the server's certificate ([tls]); the cookie is then Secure
    # Who may open it (the others get 403), on top of the host it listens on.
    allow: tuple[str, ...] = _opt(("127.0.0.0/8", "::1/128"), _networks)
    session_timeout: float = _opt(1800.0, _number)  # idle seconds before an administrator logs in again


@dataclass(frozen=True, slots=True)
class Proxy65ListenerConfig:  # XEP-0065 SOCKS5 bytestreams proxy, bound only when [proxy65] enabled
    host: tuple[str, ...] = _opt(_LOOPBACK, _hosts)
    port: int = _opt(7777, _int(0, 65535))


@dataclass(frozen=True, slots=True)
class ComponentListenerConfig:  # XEP-0114 external components, bound only when [components] lists one
    # Loopback by default: the handshake is a shared secret over plain TCP (docs/components.md).
    host: tuple[str, ...] = _opt(_LOOPBACK, _hosts)
    port: int = _opt(5347, _int(0, 65535))
    handshake_timeout: float = _opt(10.0, _number)  # seconds to open the stream and prove the secret


@dataclass(frozen=True, slots=True)
class ListenConfig:
    c2s: C2SListenerConfig = _table(C2SListenerConfig)
    c2s_tls: DirectTLSListenerConfig = _table(DirectTLSListenerConfig)
    http: HTTPListenerConfig = _table(HTTPListenerConfig)
    https: HTTPSListenerConfig = _table(HTTPSListenerConfig)
    s2s: S2SListenerConfig = _table(S2SListenerConfig)
    proxy65: Proxy65ListenerConfig = _table(Proxy65ListenerConfig)
    metrics: MetricsListenerConfig = _table(MetricsListenerConfig)
    console: ConsoleListenerConfig = _table(ConsoleListenerConfig)
    component: ComponentListenerConfig = _table(ComponentListenerConfig)


_url_path = _str(r"/[^\s?#]*", "a path starting with /")


@dataclass(frozen=True, slots=True)
class HTTPConfig:  # the web endpoints of [listen.http] and [listen.https]
    websocket_path: str = _opt("/xmpp-websocket", _url_path)  # RFC 7395
    bosh_path: str = _opt("/http-bind", _url_path)  # XEP-0124/0206
    # []: pages of any origin may connect; a list: only those and the server's own (imactor/web/cors.py)
    allowed_origins: tuple[str, ...] = _opt((), _strings(r"\*|null|https?://[^\s/]+", "origins"))
    see_other_uri: str = _opt("", _str(r"|wss?://\S+", "a ws:// or wss:// URI"))  # RFC 7395 §3.6.2
    max_header_size: int = _opt(16384, _int(1024))  # bytes of request line and headers
    max_body_size: int = _opt(1048576, _int(1024))  # bytes of a request body
    header_timeout: float = _opt(10.0, _number)  # seconds for a request's headers
    keepalive_timeout: float = _opt(75.0, _number)  # idle seconds between requests
    max_connections: int = _opt(1024, _int())  # open HTTP connections per worker
    bosh_max_wait: int = _opt(60, _int())  # XEP-0124 'wait' ceiling, seconds
    bosh_inactivity: int = _opt(60, _int())  # seconds with no request before a session ends
    bosh_max_hold: int = _opt(1, _int())  # requests held at once
    bosh_polling: int = _opt(2, _int(0))  # least seconds between empty requests of a poller


@dataclass(frozen=True, slots=True)
class TLSConfig:
    certificate: Path | None = _opt(None, _path)  # None: self-signed, generated into data_dir
    key: Path | None = _opt(None, _path)
    min_version: TLSVersion = _opt("1.2", _choice(*get_args(TLSVersion)))


@dataclass(frozen=True, slots=True)
class StorageConfig:
    url: str = _opt("", _str(r"|\S+://.*", 'a database URL such as "sqlite:////path/db"'))  # "": in data_dir
    # PostgreSQL: hash partitions of the archive and the offline messages, fixed when the schema
    # is created (docs/postgresql.md); 0: plain tables. SQLite ignores it.
    partitions: int = _opt(16, _int(0, 1024))


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    max_stanza_size: int = _opt(262144, _int())  # bytes
    handshake_timeout: float = _opt(30.0, _number)  # seconds to authenticate and bind
    idle_timeout: float = _opt(300.0, _number)  # silence before the server pings
    ping_timeout: float = _opt(60.0, _number)
    stanzas_per_second: float = _opt(200.0, _number)  # per-connection token bucket rate…
    stanza_burst: int = _opt(400, _int())  # …and depth
    max_offline_messages: int = _opt(1000, _int())
    login_failures: int = _opt(5, _int())  # per account and per address…
    login_failure_window: float = _opt(300.0, _number)  # …within this many seconds
    registrations_per_address: int = _opt(5, _int())
    registration_window: float = _opt(3600.0, _number)
    max_sessions_per_user: int = _opt(64, _int())
    mailbox_size: int = _opt(1024, _int())
    resume_timeout: float = _opt(300.0, _number)  # XEP-0198: a broken session waits for resumption


@dataclass(frozen=True, slots=True)
class AuthConfig:
    scram_iterations: int = _opt(4096, _int(4096))  # RFC 7677 §4: at least 4096
    allow_plain: bool = _opt(True, _bool)  # offered only over TLS
    sasl_retries: int = _opt(3, _int(2, 5))  # RFC 6120 §6.4.5: failed SASL exchanges retried per stream
    sasl2: bool = _opt(True, _bool)  # XEP-0388 SASL2 (with XEP-0386 Bind 2) beside RFC 6120 SASL
    fast_token_lifetime: int = _opt(1209600, _int(0))  # XEP-0484 FAST token lifetime, seconds (0: no FAST)


@dataclass(frozen=True, slots=True)
class RegistrationConfig:
    enabled: bool = _opt(False, _bool)  # XEP-0077 in-band registration


@dataclass(frozen=True, slots=True)
class ResourcesConfig:
    conflict: Conflict = _opt("kick_old", _choice(*get_args(Conflict)))


@dataclass(frozen=True, slots=True)
class MucConfig:  # XEP-0045 multi-user chat service
    enabled: bool = _opt(True, _bool)
    subdomain: str = _opt("conference", _str(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", "a DNS label"))
    max_rooms_per_user: int = _opt(100, _int())  # rooms one account may create (server admins: no limit)
    max_occupants: int = _opt(1000, _int())  # per room, above any room's own max users
    max_history: int = _opt(200, _int(0))  # most messages a room keeps as history
    idle_timeout: float = _opt(300.0, _number)  # seconds before an empty room's actor stops
    create_rooms: Literal["anyone", "admins"] = _opt("anyone", _choice("anyone", "admins"))


@dataclass(frozen=True, slots=True)
class Proxy65Config:  # XEP-0065 SOCKS5 bytestreams proxy (imactor/proxy65, docs/file-transfer.md)
    enabled: bool = _opt(False, _bool)
    subdomain: str = _opt("proxy", _str(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", "a DNS label"))
    name: str = _opt("SOCKS5 Bytestreams Service", _str(r".+", "a name"))
    # What clients are told to connect to ("": the first [listen.proxy65] host; 0: its bound port),
    # for a proxy behind NAT or a load balancer.
    announce_host: str = _opt("", _str(r"|\S+", "a host name or address"))
    announce_port: int = _opt(0, _int(0, 65535))
    max_pending: int = _opt(100, _int())  # connections waiting for their pair or activation, per node
    max_active: int = _opt(100, _int())  # activated streams relaying at once, per node
    bandwidth: int = _opt(0, _int(0))  # bytes per second per connection and direction (0: no limit)
    activation_timeout: float = _opt(60.0, _number)  # seconds a connection may wait for activation
    idle_timeout: float = _opt(300.0, _number)  # seconds an active stream may carry nothing
    max_transfer: int = _opt(0, _int(0))  # bytes per stream and direction before it is cut (0: no limit)


_DOMAIN_PATTERN = r"[^\s@/:*]+"


def _routes(value: object) -> Mapping[str, tuple[str, int]]:
    """`[s2s.routes]`: remote domain = "host:port" (an IPv6 address in brackets: "[::1]:5269")."""
    if not isinstance(value, dict):
        raise _Invalid(f'expected a table of domain = "host:port", got {_show(value)}')
    routes: dict[str, tuple[str, int]] = {}
    for domain, target in value.items():
        match = (
            re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d+)|([^\s:\[\]]+):(\d+)", target)
            if isinstance(target, str)
            else None
        )
        if match is None or not re.fullmatch(_DOMAIN_PATTERN, domain):
            raise _Invalid(f'expected "host:port", got {_show(target)}', domain)
        host, port = match.group(1) or match.group(3), int(match.group(2) or match.group(4))
        if not 0 < port < 65536:
            raise _Invalid(f"expected a port from 1 to 65535, got {port}", domain)
        routes[domain.lower().rstrip(".")] = (host, port)
    return MappingProxyType(routes)


@dataclass(frozen=True, slots=True)
class Rate:
    """A token bucket's setting: `per_second` stanzas on average, `burst` at once (0: no limit)."""

    per_second: float
    burst: int


#: Stanzas per second; 0: no limit.
_rate = _check(
    lambda v: type(v) in (int, float) and 0 <= v < float("inf"), "a non-negative number (0: no limit)", float
)


def _rate_overrides(value: object) -> Mapping[str, Rate]:
    """`[s2s] rate_overrides`: remote domain = { rate = stanzas/s, burst = stanzas }; a burst left
    out is five seconds' worth of the rate (at least 1)."""
    if not isinstance(value, dict):
        raise _Invalid(f"expected a table of domain = {{ rate = ..., burst = ... }}, got {_show(value)}")
    overrides: dict[str, Rate] = {}
    for domain, options in value.items():
        if not re.fullmatch(_DOMAIN_PATTERN, domain):
            raise _Invalid("expected a domain name", domain)
        if not isinstance(options, dict) or "rate" not in options:
            raise _Invalid(f"expected {{ rate = ..., burst = ... }}, got {_show(options)}", domain)
        for key in options:
            if key not in ("rate", "burst"):
                raise _Invalid("unknown key", domain, key)
        try:
            per_second = float(_rate(options["rate"]))  # type: ignore[arg-type]
        except _Invalid as exc:
            raise _Invalid(exc.args[0], domain, "rate") from None
        burst = options.get("burst", max(1, round(per_second * 5)))
        if type(burst) is not int or burst < 1:
            raise _Invalid(f"expected a positive integer, got {_show(burst)}", domain, "burst")
        overrides[domain.lower().rstrip(".")] = Rate(per_second, burst)
    return MappingProxyType(overrides)


@dataclass(frozen=True, slots=True)
class S2SConfig:  # federation: server-to-server streams (imactor/s2s, docs/federation.md)
    # Off by default: a company server talks to no other server unless the operator says so.
    enabled: bool = _opt(False, _bool)
    # true: a peer must present a certificate valid for its domain (SASL EXTERNAL, XEP-0178);
    # false: Server Dialback (XEP-0220) authenticates peers whose certificates do not.
    require_valid_certificates: bool = _opt(False, _bool)
    starttls_required: bool = _opt(True, _bool)  # both directions
    # PEM file of the CAs trusted for peers' certificates; "": the system's store
    ca_file: Path | None = _opt(None, _path)
    # the key of dialback keys (XEP-0185); "": derived from the TLS private key, so every worker
    # and every node with that key agrees without configuration
    dialback_secret: str = _opt("", _str(r".*", "a string"))
    routes: Mapping[str, tuple[str, int]] = field(
        default_factory=lambda: MappingProxyType({}), metadata={"check": _routes}
    )
    allow: tuple[str, ...] = _opt((), _strings(_DOMAIN_PATTERN, "domains"))  # []: any domain not denied
    deny: tuple[str, ...] = _opt((), _strings(_DOMAIN_PATTERN, "domains"))
    connect_timeout: float = _opt(10.0, _number)  # seconds to resolve, connect and authenticate out
    handshake_timeout: float = _opt(30.0, _number)  # seconds an inbound peer has to authenticate
    idle_timeout: float = _opt(600.0, _number)  # an outbound stream with no stanza for this long closes
    max_queue: int = _opt(1000, _int())  # stanzas waiting for a remote domain's stream
    # Stanzas per second that the servers of one remote domain may send us (across all their
    # streams to this worker), and how many at once beyond it; 0: no limit. Over it, imactor
    # reads that domain's streams more slowly: nothing is dropped (docs/federation.md).
    rate: float = _opt(100.0, _rate)
    burst: int = _opt(500, _int())
    rate_overrides: Mapping[str, Rate] = field(
        default_factory=lambda: MappingProxyType({}), metadata={"check": _rate_overrides}
    )  # remote domain = { rate = ..., burst = ... }

    def rate_of(self, domain: str) -> Rate:
        """The inbound stanza rate allowed to `domain`'s servers (`rate_overrides`, else the default)."""
        return self.rate_overrides.get(domain, Rate(self.rate, self.burst))

    def permits(self, domain: str) -> bool:
        """Whether federation with `domain` is allowed by `allow` and `deny`."""
        return domain not in self.deny and (not self.allow or domain in self.allow)


@dataclass(frozen=True, slots=True)
class ComponentConfig:  # one external component (XEP-0114): [components."<domain>"]
    secret: str = _opt("", _str(r"|\S.*", "a string"))  # the shared secret, or:
    secret_file: Path | None = _opt(None, _path)  # a file holding it (trimmed; read at start)


def _components(value: object) -> Mapping[str, ComponentConfig]:
    """`[components."<domain>"]` tables: each names a domain and how its secret is found."""
    if not isinstance(value, dict):
        raise _Invalid(f"expected a table of component domains, got {_show(value)}")
    components: dict[str, ComponentConfig] = {}
    for domain, options in value.items():
        where = f'"{domain}"'  # quoted: a domain has dots of its own
        if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?", domain) or ".." in domain:
            raise _Invalid("expected a domain name as the table's name", where)
        if not isinstance(options, dict):
            raise _Invalid(f"expected a table with secret or secret_file, got {_show(options)}", where)
        for key in options:
            if key not in ("secret", "secret_file"):
                raise _Invalid("unknown key", where, key)
        values: dict[str, Any] = {}
        for name in ("secret", "secret_file"):
            if name in options:
                check = ComponentConfig.__dataclass_fields__[name].metadata["check"]
                try:
                    values[name] = check(options[name])
                except _Invalid as exc:
                    raise _Invalid(exc.args[0], where, name) from None
        component = ComponentConfig(**values)
        if bool(component.secret) == (component.secret_file is not None):
            raise _Invalid("set one of secret and secret_file (not both, not neither)", where)
        if domain.lower() in components:
            raise _Invalid("is listed twice (domains are case-insensitive)", where)
        components[domain.lower()] = component
    return MappingProxyType(components)


_DOMAIN_NAME = r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?"
_domain = _str(_DOMAIN_NAME, "a domain name", str.lower)


@dataclass(frozen=True, slots=True)
class HostConfig:  # one more domain this server serves: [[hosts]] (a virtual host, docs/hosts.md)
    domain: str = _opt("", _domain)  # required
    # The host's certificate and key, chosen by the TLS client's SNI; none: the [tls] ones.
    certificate: Path | None = _opt(None, _path)
    key: Path | None = _opt(None, _path)
    # Modules of [server] modules this host does without, and modules only this host has.
    modules_disabled: tuple[str, ...] = _opt((), _strings())
    modules_enabled: tuple[str, ...] = _opt((), _strings())
    # [hosts.modules.<name>]: options overriding [modules.<name>] for this host, key by key.
    modules: Mapping[str, Mapping[str, object]] = field(
        default_factory=lambda: MappingProxyType({}), metadata={"check": lambda v: _module_tables(v)}
    )


@dataclass(frozen=True, slots=True)
class StatusConfig:
    socket: Path = _opt(Path("imactor.sock"), _required_path)  # relative to data_dir


@dataclass(frozen=True, slots=True)
class SupervisionConfig:
    intensity: int = _opt(5, _int(0))  # restarts allowed…
    period: float = _opt(30.0, _number)  # …within this many seconds


@dataclass(frozen=True, slots=True)
class ClusterConfig:  # several nodes on one PostgreSQL database (docs/cluster.md)
    enabled: bool = _opt(False, _bool)
    node: str = _opt("", _str(r"|[A-Za-z0-9][A-Za-z0-9._-]{0,62}", "a node name (letters, digits, . _ -)"))
    # Where this node's workers bind their mesh sockets for the other nodes: worker N takes
    # mesh_port + N (0: ports chosen by the OS at start). `advertise`: the address the other
    # nodes use ("": mesh_host).
    mesh_host: str = _opt("127.0.0.1", _str(_HOST_PATTERN, "a host name or address"))
    mesh_port: int = _opt(7600, _int(0, 65535))
    advertise: str = _opt("", _str(r"|\S+", "a host name or address"))
    key_file: Path | None = _opt(None, _path)  # the node's CURVE secret key (imactor cluster keygen)
    lease: float = _opt(6.0, _number)  # seconds a renewal keeps the node live for the others
    heartbeat: float = _opt(1.0, _number)  # seconds between renewals
    # How clients reach this node, for see-other-host redirects ("": the c2s listener's first host).
    client_host: str = _opt("", _str(r"|\S+", "a host name or address"))
    # RFC 6120 §4.9.3.19: send a new client to a less loaded node ("least-loaded") or never ("none").
    redirect: Literal["none", "least-loaded"] = _opt("none", _choice("none", "least-loaded"))
    redirect_margin: int = _opt(100, _int(1))  # sessions more than the least loaded node before redirecting


@dataclass(frozen=True, slots=True)
class LogConfig:
    level: LogLevel = _opt("info", _choice(*get_args(LogLevel)))
    format: LogFormat = _opt("text", _choice(*get_args(LogFormat)))


def _module_tables(value: object) -> Mapping[str, Mapping[str, object]]:
    if not isinstance(value, dict):
        raise _Invalid(f"expected a table, got {_show(value)}")
    for name, options in value.items():
        if not isinstance(options, dict):
            raise _Invalid(f"expected a table, got {_show(options)}", name)
    return MappingProxyType({name: MappingProxyType(options) for name, options in value.items()})


@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration. Build it with `load_config` (or `parse_config` in tests)."""

    source: Path = Path("<defaults>")  # the file it was loaded from
    server: ServerConfig = _table(ServerConfig)
    listen: ListenConfig = _table(ListenConfig)
    tls: TLSConfig = _table(TLSConfig)
    storage: StorageConfig = _table(StorageConfig)
    limits: LimitsConfig = _table(LimitsConfig)
    auth: AuthConfig = _table(AuthConfig)
    registration: RegistrationConfig = _table(RegistrationConfig)
    resources: ResourcesConfig = _table(ResourcesConfig)
    status: StatusConfig = _table(StatusConfig)
    supervision: SupervisionConfig = _table(SupervisionConfig)
    muc: MucConfig = _table(MucConfig)
    proxy65: Proxy65Config = _table(Proxy65Config)
    log: LogConfig = _table(LogConfig)
    http: HTTPConfig = _table(HTTPConfig)
    s2s: S2SConfig = _table(S2SConfig)
    cluster: ClusterConfig = _table(ClusterConfig)
    components: Mapping[str, ComponentConfig] = field(
        default_factory=lambda: MappingProxyType({}), metadata={"check": _components}
    )
    modules: Mapping[str, Mapping[str, object]] = field(
        default_factory=lambda: MappingProxyType({}), metadata={"check": _module_tables}
    )
    #: [[hosts]]: the domains served besides `server.domain` (parsed by `_parse_hosts`).
    hosts: tuple[HostConfig, ...] = ()

    @property
    def domains(self) -> tuple[str, ...]:
        """Every domain whose accounts live here: `server.domain` (the primary) first."""
        return (self.server.domain, *(host.domain for host in self.hosts))

    def host(self, domain: str) -> HostConfig | None:
        """The [[hosts]] entry of `domain`; None for the primary domain and any other."""
        return next((host for host in self.hosts if host.domain == domain), None)

    def modules_of(self, domain: str) -> tuple[str, ...]:
        """The modules enabled for `domain`: [server] modules, less and plus the host's own."""
        host = self.host(domain)
        if host is None:
            return self.server.modules
        kept = tuple(name for name in self.server.modules if name not in host.modules_disabled)
        return kept + tuple(name for name in host.modules_enabled if name not in kept)

    def module_options_of(self, domain: str) -> Mapping[str, Mapping[str, object]]:
        """[modules.*] with `domain`'s [hosts.modules.*] laid over them, key by key."""
        host = self.host(domain)
        if host is None or not host.modules:
            return self.modules
        merged = {name: dict(options) for name, options in self.modules.items()}
        for name, options in host.modules.items():
            merged.setdefault(name, {}).update(options)
        return MappingProxyType({name: MappingProxyType(options) for name, options in merged.items()})

    def certificate_of(self, domain: str) -> tuple[Path, Path]:
        """The certificate and key presented for `domain`: [tls]'s for `server.domain`, a host's
        own, else one generated for the host under ``data_dir/tls`` (as [tls]'s is)."""
        host = self.host(domain)
        if host is None:
            return self.tls_certificate, self.tls_key
        if host.certificate is not None and host.key is not None:
            return host.certificate, host.key
        return self.server.data_dir / "tls" / f"{domain}.crt", self.server.data_dir / "tls" / f"{domain}.key"

    @property
    def certificates(self) -> dict[str, tuple[Path, Path]]:
        """Every served domain's certificate and key (`certificate_of`)."""
        return {domain: self.certificate_of(domain) for domain in self.domains}

    @property
    def storage_url(self) -> str:
        """The database URL: ``storage.url``, or a SQLite file in the data directory."""
        return self.storage.url or f"sqlite:///{self.server.data_dir / 'imactor.sqlite3'}"

    @property
    def tls_certificate(self) -> Path:
        """The certificate file; under ``data_dir/tls`` when it is generated."""
        return self.tls.certificate or self.server.data_dir / "tls" / f"{self.server.domain}.crt"

    @property
    def tls_key(self) -> Path:
        """The private key file; under ``data_dir/tls`` when it is generated."""
        return self.tls.key or self.server.data_dir / "tls" / f"{self.server.domain}.key"

    @property
    def status_socket(self) -> Path:
        """The status socket (``status.socket`` under the data directory unless absolute)."""
        return self.server.data_dir / self.status.socket


def load_config(path: Path) -> Config:
    """Read and validate a TOML config file.

    Raises:
        ConfigError: Unreadable, not TOML, or invalid, e.g.
            ``conf/imactor.toml: limits.mailbox_size: expected a positive integer, got "x"``.
    """
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    return parse_config(raw, source=path, base_dir=path.absolute().parent)


def parse_config(raw: Mapping[str, object], *, source: Path, base_dir: Path) -> Config:
    """Validate an already-parsed TOML document; relative paths are resolved against `base_dir`."""
    raw = dict(raw)
    raw_hosts = raw.pop("hosts", [])
    config: Config = _build(Config, raw, str(source), "")
    tls = config.tls
    if (tls.certificate is None) != (tls.key is None):
        missing = "tls.key" if tls.key is None else "tls.certificate"
        raise ConfigError(f"{source}: {missing}: certificate and key must be set together")
    cert, key = (p and _resolve(base_dir, p) for p in (tls.certificate, tls.key))
    cluster = _checked_cluster(config, str(source))
    _check_console(config, str(source))
    components = _read_component_secrets(config, str(source), base_dir)
    return dataclasses.replace(
        config,
        source=source,
        server=dataclasses.replace(config.server, data_dir=_resolve(base_dir, config.server.data_dir)),
        tls=dataclasses.replace(tls, certificate=cert, key=key),
        storage=dataclasses.replace(config.storage, url=_resolve_sqlite_url(base_dir, config.storage.url)),
        s2s=dataclasses.replace(
            config.s2s, ca_file=config.s2s.ca_file and _resolve(base_dir, config.s2s.ca_file)
        ),
        cluster=dataclasses.replace(
            cluster, key_file=cluster.key_file and _resolve(base_dir, cluster.key_file)
        ),
        components=components,
        hosts=_parse_hosts(raw_hosts, config, str(source), base_dir),
    )


def _parse_hosts(raw: object, config: Config, source: str, base_dir: Path) -> tuple[HostConfig, ...]:
    """`[[hosts]]`: each entry a `HostConfig` whose domain no other part of the server serves;
    keys are named ``hosts."<domain>".<key>`` (``hosts[N]`` until the domain is known)."""
    if not isinstance(raw, list) or not all(isinstance(item, dict) for item in raw):
        raise ConfigError(f"{source}: hosts: expected an array of tables ([[hosts]]), got {_show(raw)}")
    taken = {config.server.domain: "server.domain"}
    for subdomain, what in ((config.muc.subdomain, "muc"), (config.proxy65.subdomain, "proxy65")):
        if getattr(config, what).enabled:
            taken[f"{subdomain}.{config.server.domain}"] = f"{what}.subdomain"
    taken.update((domain, f'components."{domain}"') for domain in config.components)
    hosts: list[HostConfig] = []
    for number, item in enumerate(raw, 1):
        domain = item.get("domain")
        where = f"hosts[{number}]"
        if domain is None:
            raise ConfigError(f"{source}: {where}.domain: a host needs its domain")
        if not (isinstance(domain, str) and re.fullmatch(_DOMAIN_NAME, domain) and ".." not in domain):
            raise ConfigError(f"{source}: {where}.domain: expected a domain name, got {_show(domain)}")
        if domain.lower() in taken:
            raise ConfigError(f"{source}: {where}.domain: {_show(domain)} is already served "
                              f"(by {taken[domain.lower()]}; domains are case-insensitive)")  # fmt: skip
        prefix = f'hosts."{domain.lower()}"'
        host: HostConfig = _build(HostConfig, item, source, prefix)
        taken[host.domain] = prefix
        rooms = f"{config.muc.subdomain}.{host.domain}"  # the host's own chat service
        if config.muc.enabled and rooms in taken:
            raise ConfigError(f"{source}: {where}.domain: its chat service {rooms} is already served "
                              f"(by {taken[rooms]})")  # fmt: skip
        taken[rooms] = f"{prefix} (its chat service)"
        if (host.certificate is None) != (host.key is None):
            missing = "key" if host.key is None else "certificate"
            raise ConfigError(f"{source}: {prefix}.{missing}: certificate and key must be set together")
        for name in host.modules_disabled:
            if name not in config.server.modules:
                raise ConfigError(
                    f"{source}: {prefix}.modules_disabled: {_show(name)} is not in server.modules"
                )
        cert, key = (p and _resolve(base_dir, p) for p in (host.certificate, host.key))
        hosts.append(dataclasses.replace(host, certificate=cert, key=key))
    return tuple(hosts)


def _read_component_secrets(config: Config, source: str, base_dir: Path) -> Mapping[str, ComponentConfig]:
    """Each component's secret in `secret` (read from `secret_file` now, so that a missing file
    fails the start, naming the key); a component's domain must not be one the server serves."""
    taken = {config.server.domain: "server.domain"}
    if config.muc.enabled:
        taken[f"{config.muc.subdomain}.{config.server.domain}"] = "muc.subdomain"
    if config.proxy65.enabled:
        taken[f"{config.proxy65.subdomain}.{config.server.domain}"] = "proxy65.subdomain"
    read: dict[str, ComponentConfig] = {}
    for domain, component in config.components.items():
        key = f'components."{domain}"'
        if domain in taken:
            raise ConfigError(f"{source}: {key}: the same domain as {taken[domain]}")
        if component.secret_file is not None:
            path = _resolve(base_dir, component.secret_file)
            try:
                secret = path.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
                raise ConfigError(f"{source}: {key}.secret_file: cannot read {path}: {reason}") from None
            if not secret:
                raise ConfigError(f"{source}: {key}.secret_file: {path} is empty")
            component = ComponentConfig(secret=secret, secret_file=path)
        read[domain] = component
    return MappingProxyType(read)


def _checked_cluster(config: Config, source: str) -> ClusterConfig:
    """A cluster needs a name, a key and a database every node shares (docs/cluster.md)."""
    cluster = config.cluster
    if not cluster.enabled:
        return cluster
    if not cluster.node:
        raise ConfigError(f"{source}: cluster.node: a cluster node needs a name, unique in the cluster")
    if cluster.key_file is None:
        raise ConfigError(
            f"{source}: cluster.key_file: a cluster node needs its key (imactor cluster keygen)"
        )
    if not config.storage.url.startswith("postgresql"):
        raise ConfigError(f"{source}: storage.url: a cluster's nodes share one PostgreSQL database, "
                          f"not {config.storage.url or 'the default SQLite file'!r}")  # fmt: skip
    if cluster.heartbeat * 3 > cluster.lease:
        raise ConfigError(f"{source}: cluster.heartbeat: at most a third of cluster.lease "
                          f"({cluster.lease:g} s), so that a lease survives a lost renewal")  # fmt: skip
    return cluster


def _check_console(config: Config, source: str) -> None:
    """An administrator's password must not cross a network in clear: the console listens on
    loopback only, unless it speaks TLS."""
    console = config.listen.console
    if not console.enabled or console.tls:
        return
    for host in console.host:
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if not loopback:
            raise ConfigError(
                f"{source}: listen.console.host: {host} is not a loopback address; "
                "set listen.console.tls = true to serve the console beyond this host"
            )


def _build(cls: type[Any], raw: object, source: str, prefix: str) -> Any:
    """One dataclass from one TOML table: check each present key, recurse into sub-tables."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: {prefix}: expected a table, got {_show(raw)}")
    known = {f.name: f for f in dataclasses.fields(cls) if f.metadata}
    for key in raw:
        if key not in known:
            raise ConfigError(f"{source}: {prefix + '.' if prefix else ''}{key}: unknown key")
    values: dict[str, object] = {}
    for key, value in raw.items():
        dotted = f"{prefix}.{key}" if prefix else key
        meta = known[key].metadata
        if "table" in meta:
            values[key] = _build(meta["table"], value, source, dotted)
            continue
        try:
            values[key] = meta["check"](value)
        except _Invalid as exc:
            where = ".".join((dotted, *exc.args[1:]))
            raise ConfigError(f"{source}: {where}: {exc.args[0]}") from None
    return cls(**values)


def _resolve(base: Path, path: Path) -> Path:
    # normpath turns "conf/../data" into "data", so logs and errors show the real place.
    return Path(os.path.normpath(base / path))


def _resolve_sqlite_url(base: Path, url: str) -> str:
    """Make a relative SQLite file path absolute (relative to the config file), like other paths."""
    match = re.fullmatch(r"(sqlite(?:\+\w+)?:///)([^/?][^?]*)(\?.*)?", url)
    if match is None or match.group(2) == ":memory:":
        return url
    return f"{match.group(1)}{_resolve(base, Path(match.group(2)))}{match.group(3) or ''}"
