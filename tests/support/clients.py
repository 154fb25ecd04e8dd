"""Real client libraries (slixmpp, aioxmpp) against the test server, for plain sync pytest tests.

The suite runs pytest-trio in trio_mode, so a test that drives an asyncio library is a plain
``def test_...`` that calls `run`::

    def test_login(server, accounts):
        (alice,) = accounts(1)

        async def scenario() -> None:
            async with slixmpp_client(f"{alice}@localhost/pc", PASSWORD, server.c2s_port) as xmpp:
                assert str(xmpp.boundjid) == f"{alice}@localhost/pc"

        run(scenario())

API (kept stable; other test modules rely on it):

- ``run(coro, timeout=TIMEOUT)``: ``asyncio.run(asyncio.wait_for(coro, timeout))``.
- ``slixmpp_client(jid, password, port, *, mechanism=None, direct_tls=False, starttls_fallback=False,
  tls_max_version=None, plugins=(), send_presence=False)``: async context manager yielding a
  connected, session-started ``slixmpp.ClientXMPP`` (self-signed certificate accepted). ``port`` is
  the STARTTLS port, or the direct TLS port with ``direct_tls=True``; with both ``direct_tls`` and
  ``starttls_fallback``, slixmpp's own default: direct TLS first, then STARTTLS, on ``port``. A
  failed login raises `AuthFailed` with the SASL condition. On exit the stream is closed.
- ``aioxmpp_client(jid, password, port, *, mechanism=None, direct_tls=False, tls_max_version=None)``:
  async context manager yielding a connected ``aioxmpp.Client`` (no initial presence). The
  mechanism may be any the server offers, including ``SCRAM-*-PLUS``: it then binds with
  ``tls-server-end-point`` (or ``tls-unique`` when `channel_binding` says so).
- ``event_queue(xmpp, name)``: an ``asyncio.Queue`` that receives every later slixmpp event
  ``name`` (call it before triggering the event).
- ``stream_errors(xmpp)``: the stream error conditions a slixmpp client received so far.
- ``wait_disconnected(xmpp, timeout)``: wait until a slixmpp client's connection is gone.
- ``Clients(port, password)``, the integration tests' ``clients`` fixture:
  ``clients.slixmpp(username, resource="sx", *, <slixmpp_client's options>)`` and
  ``clients.aioxmpp(username, resource="ax", *, ...)``: the two context managers above for an
  account of the server, on its STARTTLS port.

Raw (trio, over `tests.support.raw.RawClient`) SASL helpers: ``raw_connect``, ``raw_starttls``
(with a custom ``ssl.SSLContext``, e.g. ``raw_client_context("1.2")``), ``raw_tls_stream`` (both),
``raw_plain``, ``raw_authenticated`` (STARTTLS + PLAIN), ``raw_login`` (connected, logged in and
bound), ``ScramClient`` + ``raw_scram``, ``tls_channel_binding``, ``raw_bind`` /
``raw_bind_request`` and ``bound_jid``, and readers of the features: ``mechanisms``,
``channel_binding_types``, ``sasl_condition``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import logging
import os
import ssl
from collections.abc import AsyncIterator, Coroutine, Sequence
from typing import Any, TypeVar

import aiosasl
import aiosasl.channel_binding
import aioxmpp
import aioxmpp.connector
import aioxmpp.sasl
import aioxmpp.security_layer
import OpenSSL.SSL
import slixmpp
import trio
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from lxml import etree

from tests.support.raw import RawClient, client_context
from tests.support.timeouts import TIMEOUT  # default overall bound of one scenario

T = TypeVar("T")


HOST = "127.0.0.1"

_TLS_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
_OPENSSL_VERSIONS = {"1.2": OpenSSL.SSL.TLS1_2_VERSION, "1.3": OpenSSL.SSL.TLS1_3_VERSION}

# The libraries log every failed login and dropped stream as errors; tests assert on outcomes.
logging.getLogger("slixmpp").setLevel(logging.CRITICAL)
logging.getLogger("aioxmpp").setLevel(logging.CRITICAL)


class AuthFailed(Exception):
    """The server answered SASL with <failure/>; `condition` is its RFC 6120 §6.5 condition."""

    def __init__(self, condition: str, text: str = "") -> None:
        super().__init__(condition, text)
        self.condition = condition
        self.text = text


def run(coro: Coroutine[Any, Any, T], timeout: float = TIMEOUT) -> T:
    """Run an asyncio scenario to completion from a sync test, failing after `timeout` seconds."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def ssl_context(tls_max_version: str | None = None) -> ssl.SSLContext:
    """A stdlib client context that accepts the test server's self-signed certificate."""
    context = client_context()
    if tls_max_version is not None:
        context.maximum_version = _TLS_VERSIONS[tls_max_version]
    return context


# ---- slixmpp ---------------------------------------------------------------------------------


def event_queue(xmpp: slixmpp.ClientXMPP, name: str) -> asyncio.Queue[Any]:
    """Every later occurrence of slixmpp event `name`, in order."""
    queue: asyncio.Queue[Any] = asyncio.Queue()
    xmpp.add_event_handler(name, queue.put_nowait)
    return queue


def stream_errors(xmpp: slixmpp.ClientXMPP) -> list[str]:
    """Stream error conditions this client received, oldest first."""
    return list(getattr(xmpp, "_imactor_stream_errors", []))


async def wait_disconnected(xmpp: slixmpp.ClientXMPP, timeout: float = 10.0) -> None:
    """Wait until the connection of `xmpp` is gone (server closed it, or we did)."""
    await asyncio.wait_for(asyncio.shield(xmpp._imactor_disconnected), timeout)  # type: ignore[attr-defined]


def make_slixmpp(
    jid: str,
    password: str,
    *,
    mechanism: str | None = None,
    direct_tls: bool = False,
    starttls_fallback: bool = False,
    tls_max_version: str | None = None,
    plugins: Sequence[str] = (),
) -> slixmpp.ClientXMPP:
    """A configured, not yet connected slixmpp client (for tests that drive `connect` themselves)."""
    xmpp = slixmpp.ClientXMPP(jid, password, sasl_mech=mechanism)
    xmpp.ssl_context = ssl_context(tls_max_version)
    xmpp.enable_direct_tls = direct_tls
    xmpp.enable_starttls = not direct_tls or starttls_fallback
    xmpp.enable_plaintext = False
    for plugin in plugins:
        xmpp.register_plugin(plugin)
    errors: list[str] = []
    xmpp._imactor_stream_errors = errors  # type: ignore[attr-defined]
    disconnected: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    xmpp._imactor_disconnected = disconnected  # type: ignore[attr-defined]

    def on_stream_error(error: Any) -> None:
        errors.append(error["condition"])

    def on_disconnected(_: Any) -> None:
        if not disconnected.done():
            disconnected.set_result(None)

    xmpp.add_event_handler("stream_error", on_stream_error)
    xmpp.add_event_handler("disconnected", on_disconnected)
    return xmpp


@contextlib.asynccontextmanager
async def slixmpp_client(
    jid: str,
    password: str,
    port: int,
    *,
    mechanism: str | None = None,
    direct_tls: bool = False,
    starttls_fallback: bool = False,
    tls_max_version: str | None = None,
    plugins: Sequence[str] = (),
    send_presence: bool = False,
) -> AsyncIterator[slixmpp.ClientXMPP]:
    """A slixmpp client, logged in and bound, for the duration of the block.

    Args:
        jid: Bare or full JID; a full JID asks for that resource.
        password: The account's password.
        port: The server's STARTTLS port, or its direct TLS port with `direct_tls`.
        mechanism: Restrict SASL to this mechanism (e.g. "SCRAM-SHA-1-PLUS"); None: slixmpp's pick.
        direct_tls: TLS from the first byte (XEP-0368) instead of STARTTLS.
        starttls_fallback: With `direct_tls`, STARTTLS on the same port if direct TLS fails:
            slixmpp's default order, used since 1.9 for a domain without SRV records.
        tls_max_version: "1.2" to force TLS 1.2 (slixmpp's -PLUS needs it: tls-unique).
        plugins: slixmpp plugins to register, e.g. ("xep_0030", "xep_0199").
        send_presence: Send initial presence once the session started.

    Raises:
        AuthFailed: The server refused the login (with its SASL condition).
        ConnectionError: The stream ended before the session started.
    """
    xmpp = make_slixmpp(jid, password, mechanism=mechanism, direct_tls=direct_tls,
                        starttls_fallback=starttls_fallback, tls_max_version=tls_max_version,
                        plugins=plugins)  # fmt: skip
    loop = asyncio.get_running_loop()
    outcome: asyncio.Future[None] = loop.create_future()

    def on_session_start(_: Any) -> None:
        if not outcome.done():
            outcome.set_result(None)

    def on_failed_auth(failure: Any) -> None:
        # Stop slixmpp from trying the next mechanism: each try would count as another failure.
        feature = xmpp.plugin["feature_mechanisms"]
        feature.attempted_mechs |= feature.mech_list
        if not outcome.done():
            outcome.set_exception(AuthFailed(failure["condition"], failure["text"]))

    def on_disconnected(_: Any) -> None:
        if not outcome.done():
            errors = stream_errors(xmpp)
            outcome.set_exception(ConnectionError(f"disconnected before session start; errors {errors}"))

    xmpp.add_event_handler("session_start", on_session_start)
    xmpp.add_event_handler("failed_auth", on_failed_auth)
    xmpp.add_event_handler("disconnected", on_disconnected)
    xmpp.add_event_handler("failed_all_auth", on_disconnected)
    xmpp.connect(HOST, port)
    try:
        await outcome
        if send_presence:
            xmpp.send_presence()
        yield xmpp
    finally:
        xmpp.del_event_handler("disconnected", on_disconnected)
        if xmpp.transport is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(xmpp.disconnect(wait=2.0), 5)
        xmpp.abort()
        xmpp.cancel_connection_attempt()
        await _cancel_tasks(xmpp)


async def _cancel_tasks(xmpp: slixmpp.ClientXMPP) -> None:
    """Stop slixmpp's background tasks, so asyncio.run() does not warn about pending ones."""
    task = getattr(xmpp, "_run_out_filters", None)
    if task is not None and not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


# ---- aioxmpp ---------------------------------------------------------------------------------


class _ServerEndPoint(aiosasl.channel_binding.ChannelBindingProvider):
    """RFC 5929 §4 tls-server-end-point from the peer certificate.

    aiosasl's own provider cannot name the hash of an ECDSA signature ("ecdsa-with-SHA256").
    """

    def __init__(self, connection: OpenSSL.SSL.Connection) -> None:
        super().__init__()
        self._connection = connection

    @property
    def cb_name(self) -> bytes:
        return b"tls-server-end-point"

    def extract_cb_data(self) -> bytes:
        return server_end_point(self._connection.get_peer_certificate().to_cryptography())


def server_end_point(certificate: x509.Certificate) -> bytes:
    """The tls-server-end-point binding of `certificate`: its DER hashed with the signature's hash
    (MD5 and SHA-1 replaced by SHA-256)."""
    algorithm = certificate.signature_hash_algorithm
    assert algorithm is not None
    name = "sha256" if algorithm.name in ("md5", "sha1") else algorithm.name
    return hashlib.new(name, certificate.public_bytes(serialization.Encoding.DER)).digest()


class _OneMechanism(aioxmpp.security_layer.SASLProvider):
    """SASL with exactly one mechanism, -PLUS included (aioxmpp's own provider never binds)."""

    def __init__(self, password: str, mechanism: str, channel_binding: str) -> None:
        super().__init__()
        self._password = password
        self._mechanism = mechanism
        self._channel_binding = channel_binding

    async def execute(self, client_jid: aioxmpp.JID, features: Any, xmlstream: Any,
                      tls_transport: Any) -> bool:  # fmt: skip
        offered = features[aioxmpp.security_layer.SASLMechanisms].get_mechanism_list()
        if self._mechanism not in offered:
            return False
        username = client_jid.localpart

        async def credentials() -> tuple[str, str]:
            return username, self._password

        mechanism: Any
        if self._mechanism == "PLAIN":
            mechanism, token = aiosasl.PLAIN(credentials), "PLAIN"
        elif self._mechanism.endswith("-PLUS"):
            if tls_transport is None:
                return False
            connection = tls_transport.get_extra_info("ssl_object")
            cb: aiosasl.channel_binding.ChannelBindingProvider
            if self._channel_binding == "tls-unique":
                cb = aiosasl.channel_binding.TLSUnique(connection)
            else:
                cb = _ServerEndPoint(connection)
            mechanism = aiosasl.SCRAMPLUS(credentials, cb)
            token = aiosasl.SCRAMPLUS.any_supported([self._mechanism])
        else:
            mechanism = aiosasl.SCRAM(credentials, after_scram_plus=False)
            token = aiosasl.SCRAM.any_supported([self._mechanism])
        return bool(await self._execute(aioxmpp.sasl.SASLXMPPInterface(xmlstream), mechanism, token))


def aioxmpp_security_layer(
    password: str,
    *,
    mechanism: str | None = None,
    tls_max_version: str | None = None,
    channel_binding: str = "tls-server-end-point",
) -> aioxmpp.security_layer.SecurityLayer:
    """TLS required, the self-signed certificate accepted, SASL as asked."""

    def context_factory() -> OpenSSL.SSL.Context:
        context = aioxmpp.security_layer.default_ssl_context()
        if tls_max_version is not None:
            context.set_max_proto_version(_OPENSSL_VERSIONS[tls_max_version])
        return context

    providers: tuple[aioxmpp.security_layer.SASLProvider, ...]
    if mechanism is None:
        providers = aioxmpp.make_security_layer(password, no_verify=True).sasl_providers
    else:
        providers = (_OneMechanism(password, mechanism, channel_binding),)
    return aioxmpp.security_layer.SecurityLayer(
        context_factory, aioxmpp.security_layer._NullVerifier, True, providers
    )


@contextlib.asynccontextmanager
async def aioxmpp_client(
    jid: str,
    password: str,
    port: int,
    *,
    mechanism: str | None = None,
    direct_tls: bool = False,
    tls_max_version: str | None = None,
    channel_binding: str = "tls-server-end-point",
) -> AsyncIterator[aioxmpp.Client]:
    """An aioxmpp client, logged in and bound (no presence sent), for the duration of the block.

    Args:
        jid: Bare or full JID; a full JID asks for that resource.
        password: The account's password.
        port: The STARTTLS port, or the direct TLS port with `direct_tls`.
        mechanism: Exactly this SASL mechanism; None: aioxmpp's default (SCRAM, then PLAIN).
        direct_tls: TLS from the first byte (XEP-0368).
        tls_max_version: "1.2" to force TLS 1.2 (needed for tls-unique).
        channel_binding: For -PLUS: "tls-server-end-point" or "tls-unique".

    Raises:
        aiosasl.AuthenticationFailure: The server refused the login (``opaque_error`` is the
            SASL condition).
    """
    connector: aioxmpp.connector.BaseConnector = (
        aioxmpp.connector.XMPPOverTLSConnector() if direct_tls else aioxmpp.connector.STARTTLSConnector()
    )
    client = aioxmpp.Client(
        aioxmpp.JID.fromstr(jid),
        aioxmpp_security_layer(password, mechanism=mechanism, tls_max_version=tls_max_version,
                               channel_binding=channel_binding),
        override_peer=[(HOST, port, connector)],
        max_initial_attempts=1,
    )  # fmt: skip
    async with client.connected() as stream:
        del stream
        yield client


# ---- the `clients` fixture ----------------------------------------------------------------------


class Clients:
    """Real client libraries logged in to one test server (the `clients` fixture of
    tests/integration/conftest.py): the JID, password and port of every test in one place.

    ``clients.slixmpp(alice, "pc", plugins=...)`` is ``slixmpp_client(f"{alice}@localhost/pc",
    PASSWORD, server.c2s_port, plugins=...)``; ``clients.aioxmpp`` likewise for ``aioxmpp_client``.
    Direct TLS to the direct TLS port is not here: those tests name the port themselves.
    """

    def __init__(self, port: int, password: str, domain: str = "localhost") -> None:
        self.port = port
        self.password = password
        self.domain = domain

    def jid(self, username: str, resource: str) -> str:
        return f"{username}@{self.domain}/{resource}"

    def slixmpp(
        self,
        username: str,
        resource: str = "sx",
        *,
        mechanism: str | None = None,
        direct_tls: bool = False,
        starttls_fallback: bool = False,
        tls_max_version: str | None = None,
        plugins: Sequence[str] = (),
        send_presence: bool = False,
    ) -> contextlib.AbstractAsyncContextManager[slixmpp.ClientXMPP]:
        """`slixmpp_client` for `username` at `resource`, on the STARTTLS port."""
        return slixmpp_client(self.jid(username, resource), self.password, self.port, mechanism=mechanism,
                              direct_tls=direct_tls, starttls_fallback=starttls_fallback,
                              tls_max_version=tls_max_version, plugins=plugins,
                              send_presence=send_presence)  # fmt: skip

    def aioxmpp(
        self,
        username: str,
        resource: str = "ax",
        *,
        mechanism: str | None = None,
        tls_max_version: str | None = None,
        channel_binding: str = "tls-server-end-point",
    ) -> contextlib.AbstractAsyncContextManager[aioxmpp.Client]:
        """`aioxmpp_client` for `username` at `resource`, on the STARTTLS port."""
        return aioxmpp_client(self.jid(username, resource), self.password, self.port, mechanism=mechanism,
                              tls_max_version=tls_max_version, channel_binding=channel_binding)  # fmt: skip


# ---- raw SASL over tests.support.raw (trio) --------------------------------------------------
# For what the libraries cannot do or hide: an exact mechanism list, tls-server-end-point with
# the stdlib, a forged channel binding, the failure element itself.

SASL_NS = "urn:ietf:params:xml:ns:xmpp-sasl"
BIND_NS = "urn:ietf:params:xml:ns:xmpp-bind"
_SCRAM_HASHES = {"SHA-1": "sha1", "SHA-256": "sha256"}


async def raw_connect(port: int, *, direct_tls: bool = False, context: ssl.SSLContext | None = None,
                      domain: str = "localhost") -> RawClient:  # fmt: skip
    """A `RawClient`; with `direct_tls`, TLS from the first byte with `context` (default: trusting)."""
    return await RawClient.connect(port, domain, direct_tls=direct_tls, context=context)


async def raw_starttls(client: RawClient, context: ssl.SSLContext | None = None) -> etree._Element:
    """Open the stream, STARTTLS with `context`; return the features offered under TLS."""
    return await client.starttls(context)


async def raw_tls_stream(port: int, tls_max_version: str | None = None) -> tuple[RawClient, etree._Element]:
    """A `RawClient` after STARTTLS (at most `tls_max_version`), and the features offered under TLS."""
    client = await raw_connect(port)
    return client, await raw_starttls(client, raw_client_context(tls_max_version))


async def raw_authenticated(port: int, username: str, password: str) -> RawClient:
    """STARTTLS and SASL PLAIN, not bound yet; fails the test unless the server answers <success/>."""
    client, _ = await raw_tls_stream(port)
    result = await raw_plain(client, username, password)
    assert result.tag == f"{{{SASL_NS}}}success", etree.tostring(result)
    return client


async def raw_login(port: int, username: str, password: str, resource: str = "raw", *,
                    available: bool = False) -> RawClient:  # fmt: skip
    """A bound `RawClient` (`RawClient.login`); with `available`, initial presence sent and echoed."""
    client = await raw_connect(port)
    await client.login(username, password, resource)
    if available:
        full = f"{username}@{client.domain}/{resource}"
        await client.send("<presence/>")
        await client.next_element(lambda e: e.tag == "{jabber:client}presence" and e.get("from") == full)
    return client


def raw_client_context(tls_max_version: str | None = None, alpn: Sequence[str] = ()) -> ssl.SSLContext:
    context = ssl_context(tls_max_version)
    if alpn:
        context.set_alpn_protocols(list(alpn))
    return context


def mechanisms(features: etree._Element) -> list[str]:
    return [m.text or "" for m in features.iterfind(f"{{{SASL_NS}}}mechanisms/{{{SASL_NS}}}mechanism")]


def channel_binding_types(features: etree._Element) -> list[str] | None:
    """XEP-0440 <sasl-channel-binding/> types, or None when the element is absent."""
    element = features.find("{urn:xmpp:sasl-cb:0}sasl-channel-binding")
    if element is None:
        return None
    return [cb.get("type", "") for cb in element.iterfind("{urn:xmpp:sasl-cb:0}channel-binding")]


def sasl_condition(element: etree._Element) -> str:
    """The condition of a SASL <failure/> (raises if `element` is something else)."""
    assert element.tag == f"{{{SASL_NS}}}failure", etree.tostring(element)
    return next(etree.QName(child).localname for child in element if etree.QName(child).localname != "text")


async def raw_plain(client: RawClient, username: str, password: str) -> etree._Element:
    """SASL PLAIN on an open stream; return <success/> or <failure/>."""
    token = base64.b64encode(f"\0{username}\0{password}".encode()).decode()
    await client.send(f"<auth xmlns='{SASL_NS}' mechanism='PLAIN'>{token}</auth>")
    return await client.next_element()


class ScramClient:
    """The client half of SCRAM-SHA-1/-256 and -PLUS (RFC 5802), independent of the server's code."""

    def __init__(self, mechanism: str, username: str, password: str, *, cb_type: str | None = None,
                 cb_data: bytes = b"", gs2_flag: str | None = None,
                 authzid: str | None = None) -> None:  # fmt: skip
        plus = mechanism.endswith("-PLUS")
        self.hash = _SCRAM_HASHES[mechanism.removeprefix("SCRAM-").removesuffix("-PLUS")]
        if gs2_flag is None:
            gs2_flag = f"p={cb_type}" if plus else "n"
        authz = "" if authzid is None else "a=" + authzid.replace("=", "=3D").replace(",", "=2C")
        self.gs2_header = f"{gs2_flag},{authz},".encode()
        self.cb_data = cb_data
        self.password = password.encode()
        self.nonce = base64.b64encode(os.urandom(18)).decode()
        self.first_bare = f"n={username.replace('=', '=3D').replace(',', '=2C')},r={self.nonce}".encode()
        self.server_signature = b""

    def client_first(self) -> bytes:
        return self.gs2_header + self.first_bare

    def client_final(self, server_first: bytes) -> bytes:
        fields = dict(item.split(b"=", 1) for item in server_first.split(b","))
        assert fields[b"r"].startswith(self.nonce.encode()), server_first
        salted = hashlib.pbkdf2_hmac(self.hash, self.password, base64.b64decode(fields[b"s"]),
                                     int(fields[b"i"]))  # fmt: skip
        client_key = hmac.digest(salted, b"Client Key", self.hash)
        stored_key = hashlib.new(self.hash, client_key).digest()
        without_proof = b"c=" + base64.b64encode(self.gs2_header + self.cb_data) + b",r=" + fields[b"r"]
        auth_message = self.first_bare + b"," + server_first + b"," + without_proof
        signature = hmac.digest(stored_key, auth_message, self.hash)
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        server_key = hmac.digest(salted, b"Server Key", self.hash)
        self.server_signature = hmac.digest(server_key, auth_message, self.hash)
        return without_proof + b",p=" + base64.b64encode(proof)

    def verify(self, server_final: bytes) -> bool:
        return server_final == b"v=" + base64.b64encode(self.server_signature)


def tls_channel_binding(client: RawClient, cb_type: str) -> bytes:
    """The RFC 5929 binding of the client's TLS connection, computed on the client side."""
    tls = client.stream
    assert isinstance(tls, trio.SSLStream)
    if cb_type == "tls-server-end-point":
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        return server_end_point(x509.load_der_x509_certificate(der))
    data = tls.get_channel_binding(cb_type)
    assert data is not None, cb_type
    return data


async def raw_scram(
    client: RawClient, scram: ScramClient, mechanism: str
) -> tuple[etree._Element, bytes | None]:
    """Run `scram` on an open stream; return (last element, server-first-message or None).

    The last element is <success/> (check it with `scram.verify`) or <failure/>.
    """
    first = base64.b64encode(scram.client_first()).decode()
    await client.send(f"<auth xmlns='{SASL_NS}' mechanism='{mechanism}'>{first}</auth>")
    reply = await client.next_element()
    if reply.tag != f"{{{SASL_NS}}}challenge":
        return reply, None
    server_first = base64.b64decode(reply.text or "")
    final = base64.b64encode(scram.client_final(server_first)).decode()
    await client.send(f"<response xmlns='{SASL_NS}'>{final}</response>")
    return await client.next_element(), server_first


async def raw_bind(client: RawClient, resource: str | None, iq_id: str = "bind1") -> etree._Element:
    """Restart the stream after <success/> and send a bind request; return the IQ answer."""
    await client.open_stream()
    return await raw_bind_request(client, resource, iq_id)


async def raw_bind_request(client: RawClient, resource: str | None, iq_id: str = "bind1") -> etree._Element:
    """Send a bind request on the stream as it is (restarted, or bound before); return the IQ answer."""
    inner = f"<resource>{resource}</resource>" if resource is not None else ""
    await client.send(f"<iq type='set' id='{iq_id}'><bind xmlns='{BIND_NS}'>{inner}</bind></iq>")
    return await client.next_element(lambda e: e.get("id") == iq_id)


def bound_jid(bound: etree._Element) -> str | None:
    """The JID of a resource binding result (None if it holds none)."""
    return bound.findtext(f"{{{BIND_NS}}}bind/{{{BIND_NS}}}jid")
