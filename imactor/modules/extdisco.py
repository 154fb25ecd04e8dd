"""XEP-0215: External Service Discovery: the STUN and TURN servers for calls.

Jingle calls (XEP-0166/0167) set up media between the clients themselves; behind NAT they need a
STUN server to learn their public address and a TURN relay when no direct path exists. Clients
(Conversations, Dino, Gajim, Monal, Converse.js) ask their server which ones to use:

- ``<services xmlns='urn:xmpp:extdisco:2' [type='turn']/>`` (IQ get to the domain): every
  configured service (or those of one type), each a ``<service type host port transport/>``
  with, where the service needs them (``restricted='1'``), a username, a password and when they
  expire;
- ``<credentials xmlns='urn:xmpp:extdisco:2'><service type host/></credentials>``: fresh
  credentials for one service (``item-not-found`` for a service not configured, or one that needs
  none; ``bad-request`` without ``type`` and ``host``).

Credentials for a TURN server with a shared secret follow the convention of TURN's REST API,
which coturn implements (``use-auth-secret`` with ``static-auth-secret``): the username is
``<expiry as Unix time>:<the asker's bare JID>`` and the password the base64 of
HMAC-SHA1(secret, username), valid until that expiry (``ttl`` seconds from the request). The
TURN server checks them without asking imactor, so a credential cannot be revoked before it
expires: keep the ttl short enough (a day, as the convention suggests, or less). A service
with a fixed `username` and `password` hands those out instead.

Options, in ``[modules.extdisco]``: ``services``, a list of tables with ``type`` (``stun``,
``stuns``, ``turn``, ``turns``), ``host``, ``port`` (default 3478, 5349 for ``stuns``/``turns``),
``transport`` (``udp`` or ``tcp``; default udp, tcp for ``stuns``/``turns``), ``name`` (shown
to users), and either ``secret`` (with ``ttl``, default 86400) or ``username`` and
``password``, or neither (an open STUN server).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from imactor.server.modules import IqContext, Module, ModuleConfigError, Xep
from imactor.xmpp import stanza as st
from imactor.xmpp.errors import StanzaError
from imactor.xmpp.jid import JID

NS_EXTDISCO = "urn:xmpp:extdisco:2"
TYPES = frozenset({"stun", "stuns", "turn", "turns"})
TRANSPORTS = frozenset({"udp", "tcp"})
DEFAULT_TTL = 86400
_KEYS = frozenset({"type", "host", "port", "transport", "name", "secret", "ttl", "username", "password"})


@dataclass(frozen=True, slots=True)
class Service:
    """One external service, as configured."""

    type: str
    host: str
    port: int
    transport: str
    name: str = ""
    secret: str = ""  #: TURN REST API shared secret: credentials made per request
    ttl: int = DEFAULT_TTL
    username: str = ""  #: fixed credentials (without `secret`)
    password: str = ""

    @property
    def restricted(self) -> bool:
        return bool(self.secret or self.username)


@dataclass(frozen=True, slots=True)
class Credentials:
    username: str
    password: str
    expires: datetime | None


def parse_service(raw: object, where: str) -> Service:
    """One ``services`` table, checked; `ModuleConfigError` names the key that is wrong."""
    if not isinstance(raw, Mapping):
        raise ModuleConfigError(f"{where}: expected a table with type and host")
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise ModuleConfigError(f"{where}.{unknown[0]}: unknown key")
    kind = raw.get("type")
    if kind not in TYPES:
        raise ModuleConfigError(f"{where}.type: expected one of {sorted(TYPES)}, got {kind!r}")
    secure = kind in ("stuns", "turns")
    host = raw.get("host")
    if not isinstance(host, str) or not host:
        raise ModuleConfigError(f"{where}.host: expected a host name or address")
    port = raw.get("port", 5349 if secure else 3478)
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise ModuleConfigError(f"{where}.port: expected a port number, got {port!r}")
    transport = raw.get("transport", "tcp" if secure else "udp")
    if transport not in TRANSPORTS:
        raise ModuleConfigError(f"{where}.transport: expected udp or tcp, got {transport!r}")
    text: dict[str, str] = {}
    for key in ("name", "secret", "username", "password"):
        value = raw.get(key, "")
        if not isinstance(value, str):
            raise ModuleConfigError(f"{where}.{key}: expected a string")
        text[key] = value
    ttl = raw.get("ttl", DEFAULT_TTL)
    if not isinstance(ttl, int) or isinstance(ttl, bool) or ttl <= 0:
        raise ModuleConfigError(f"{where}.ttl: expected a positive number of seconds, got {ttl!r}")
    if text["secret"] and (text["username"] or text["password"]):
        raise ModuleConfigError(f"{where}: give either secret or username and password, not both")
    if bool(text["username"]) != bool(text["password"]):
        raise ModuleConfigError(f"{where}: username and password go together")
    return Service(str(kind), host, port, str(transport), ttl=ttl, **text)


@dataclass(frozen=True)
class Options:
    services: Sequence[Any] = field(default_factory=tuple)  #: tables, see the module docstring

    def __post_init__(self) -> None:
        if not isinstance(self.services, Sequence) or isinstance(self.services, str):
            raise ModuleConfigError("modules.extdisco.services: expected a list of tables")
        where = "modules.extdisco.services"
        parsed = tuple(parse_service(raw, f"{where}[{i}]") for i, raw in enumerate(self.services))
        object.__setattr__(self, "services", parsed)


def credentials_for(service: Service, asker: JID, now: float) -> Credentials | None:
    """What `asker` may use on `service` now (None: it needs none)."""
    if service.secret:
        expiry = int(now) + service.ttl
        username = f"{expiry}:{asker.bare}"
        digest = hmac.new(service.secret.encode(), username.encode(), hashlib.sha1).digest()
        return Credentials(username, base64.b64encode(digest).decode(), datetime.fromtimestamp(expiry, UTC))
    if service.username:
        return Credentials(service.username, service.password, None)
    return None


def _service_element(parent: st.Element, service: Service, credentials: Credentials | None) -> None:
    element = st.child(parent, NS_EXTDISCO, "service")
    element.set("type", service.type)
    element.set("host", service.host)
    element.set("port", str(service.port))
    element.set("transport", service.transport)
    if service.name:
        element.set("name", service.name)
    if service.restricted:
        element.set("restricted", "1")
    if credentials is not None:
        element.set("username", credentials.username)
        element.set("password", credentials.password)
        if credentials.expires is not None:
            element.set("expires", credentials.expires.strftime("%Y-%m-%dT%H:%M:%SZ"))


module = Module(
    name="extdisco", summary="External Service Discovery (STUN, TURN)",
    xeps=(Xep("0215", "1.0.0", "complete"),), features=(NS_EXTDISCO,), options=Options,
)  # fmt: skip


@module.iq("get", NS_EXTDISCO, "services")
async def services(ctx: IqContext) -> st.Element:
    """§3.1, §3.2: every service, or those of the requested type, with their credentials."""
    wanted = ctx.payload.get("type")
    now = time.time()
    reply = st.iq_result(ctx.stanza)
    listing = st.child(reply, NS_EXTDISCO, "services")
    if wanted:
        listing.set("type", wanted)
    for service in ctx.options.services:
        if not wanted or service.type == wanted:
            _service_element(listing, service, credentials_for(service, ctx.from_jid, now))
    return reply


@module.iq("get", NS_EXTDISCO, "credentials")
async def credentials(ctx: IqContext) -> st.Element:
    """§3.3: fresh credentials for one service, named by its type and host."""
    asked = ctx.payload.find(f"{{{NS_EXTDISCO}}}service")
    if asked is None or not asked.get("type") or not asked.get("host"):
        raise StanzaError("bad-request", "name the service by its type and host")
    port = asked.get("port")
    for service in ctx.options.services:
        if (service.type, service.host) != (asked.get("type"), asked.get("host")):
            continue
        if port is not None and port != str(service.port):
            continue
        made = credentials_for(service, ctx.from_jid, time.time())
        if made is None:
            break
        reply = st.iq_result(ctx.stanza)
        _service_element(st.child(reply, NS_EXTDISCO, "credentials"), service, made)
        return reply
    raise StanzaError("item-not-found", "no such service with credentials")
