"""A small raw XMPP client for load: trio sockets, lxml pull parsing, SCRAM, STARTTLS.

Only what the scenarios need: stream open, STARTTLS (optional), SASL SCRAM-SHA-256 or SCRAM-SHA-1
(the one asked for, `bench.run --sasl`, or else the first the server offers: Prosody 0.12's
hashed store has SCRAM-SHA-1 only), bind, presence, IQ round trips,
and sending/receiving messages. The login scenario can also log in with XEP-0388 SASL2 and
XEP-0386 Bind 2 in one exchange (`login_sasl2`), asking for a XEP-0484 FAST token, and with that
token (`login_fast`, HT-SHA-256-NONE). It keeps no object per stanza beyond the
lxml element and parses nothing it does not use.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hmac
import os
import ssl
from collections.abc import Callable
from typing import cast

import trio
from lxml import etree

from imactor.xmpp.scram import hash_digest, hmac_digest, salted_password

STREAM_NS = "http://etherx.jabber.org/streams"
TLS_NS = "urn:ietf:params:xml:ns:xmpp-tls"
SASL_NS = "urn:ietf:params:xml:ns:xmpp-sasl"
BIND_NS = "urn:ietf:params:xml:ns:xmpp-bind"
SASL2_NS = "urn:xmpp:sasl:2"
BIND2_NS = "urn:xmpp:bind:0"
FAST_NS = "urn:xmpp:fast:0"
FAST_MECHANISM = "HT-SHA-256-NONE"
CLIENT_NS = "jabber:client"
HEADER = (
    "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
    "xmlns:stream='http://etherx.jabber.org/streams' to='{domain}' version='1.0'>"
)
# Preferred first. Prosody 0.12 (Debian 12) stores SCRAM-SHA-1 credentials only, so it offers no
# SCRAM-SHA-256; imactor and ejabberd (auth_scram_hash: sha256) offer SCRAM-SHA-256.
MECHANISMS = {"SCRAM-SHA-256": "SHA-256", "SCRAM-SHA-1": "SHA-1"}
_CLOSED = (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError)


class LoginError(Exception):
    """A step of the login failed (the message says which)."""


def tls_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # benchmark servers use self-signed certificates
    return context


@functools.lru_cache(maxsize=16384)
def _salted(hash_name: str, password: str, salt: bytes, iterations: int) -> bytes:
    # RFC 5802 §5.1 lets a client cache SaltedPassword; this keeps PBKDF2 out of the generator's
    # CPU budget (the server never runs PBKDF2 at login: it stores StoredKey/ServerKey).
    return salted_password(hash_name, password.encode(), salt, iterations)


def choose_mechanism(features: etree._Element, wanted: str | None = None) -> str:
    """`wanted` (one of MECHANISMS) if the stream features offer it, else a LoginError; without
    `wanted`, the first of MECHANISMS that they offer."""
    offered = {m.text for m in features.iter(f"{{{SASL_NS}}}mechanism")}
    for mechanism in MECHANISMS if wanted is None else [wanted]:
        if mechanism in offered:
            return mechanism
    asked = "no SCRAM mechanism" if wanted is None else wanted
    raise LoginError(f"{asked} not offered: {sorted(m or '' for m in offered)}")


class ScramClient:
    """Client side of SCRAM-SHA-256 or SCRAM-SHA-1 without channel binding (gs2 header "n,,")."""

    def __init__(self, username: str, password: str, hash_name: str = "SHA-256") -> None:
        self.hash = hash_name
        self.password = password
        self.nonce = base64.b64encode(os.urandom(18)).decode()
        name = username.replace("=", "=3D").replace(",", "=2C")
        self.first_bare = f"n={name},r={self.nonce}"
        self.server_signature = b""

    def first(self) -> bytes:
        return ("n,," + self.first_bare).encode()

    def final(self, server_first: bytes) -> bytes:
        text = server_first.decode()
        attrs = dict(part.split("=", 1) for part in text.split(","))
        nonce, salt, iterations = attrs["r"], base64.b64decode(attrs["s"]), int(attrs["i"])
        if not nonce.startswith(self.nonce):
            raise LoginError("SCRAM: server nonce does not extend ours")
        without_proof = f"c={base64.b64encode(b'n,,').decode()},r={nonce}"
        auth_message = f"{self.first_bare},{text},{without_proof}".encode()
        salted = _salted(self.hash, self.password, salt, iterations)
        client_key = hmac_digest(self.hash, salted, b"Client Key")
        signature = hmac_digest(self.hash, hash_digest(self.hash, client_key), auth_message)
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        self.server_signature = hmac_digest(
            self.hash, hmac_digest(self.hash, salted, b"Server Key"), auth_message
        )
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def verify(self, server_final: bytes) -> None:
        attrs = dict(part.split("=", 1) for part in server_final.decode().split(","))
        if base64.b64decode(attrs.get("v", "")) != self.server_signature:
            raise LoginError("SCRAM: bad server signature")


class LoadClient:
    """One XMPP client connection. `on_element` (if set) sees every top-level element not
    consumed by a waiting `next_element` call; the chat scenario sets it to count messages."""

    def __init__(self, stream: trio.abc.Stream, domain: str) -> None:
        self.stream = stream
        self.domain = domain
        self.closed = False
        self.elements: list[etree._Element] = []
        self.jid = ""
        self._new_parser()

    def _new_parser(self) -> None:
        self.parser = etree.XMLPullParser(events=("start", "end"), resolve_entities=False, no_network=True)
        self.depth = 0

    @classmethod
    async def connect(cls, host: str, port: int, domain: str) -> LoadClient:
        stream = await trio.open_tcp_stream(host, port)
        return cls(stream, domain)

    async def send(self, data: str) -> None:
        await self.stream.send_all(data.encode())

    async def _read(self) -> bool:
        try:
            data = await self.stream.receive_some(65536)
        except _CLOSED:
            data = b""
        if not data:
            self.closed = True
            return False
        self.feed(data)
        return True

    def feed(self, data: bytes | bytearray) -> None:
        """Parse received bytes; complete top-level elements go to `elements`."""
        self.parser.feed(cast(bytes, data))  # an SSLStream hands out bytearray, which lxml takes
        for event, element in self.parser.read_events():
            if not isinstance(element, etree._Element):  # only ("start", "end") events: never
                continue
            if event == "start":
                self.depth += 1
            else:
                self.depth -= 1
                if self.depth == 1:
                    self.elements.append(element)
                    parent = element.getparent()
                    if parent is not None:  # keep the stream root from growing without bound
                        parent.remove(element)
                elif self.depth == 0:
                    self.closed = True

    async def next_element(self, match: Callable[[etree._Element], bool] | None = None) -> etree._Element:
        while True:
            for index, element in enumerate(self.elements):
                if match is None or match(element):
                    del self.elements[: index + 1]
                    return element
            if self.closed or not await self._read():
                raise LoginError("stream closed")

    async def expect(self, tag: str) -> etree._Element:
        element = await self.next_element()
        if element.tag != tag:
            raise LoginError(f"expected {tag}, got {etree.tostring(element)[:200]!r}")
        return element

    async def open_stream(self) -> etree._Element:
        self._new_parser()
        self.elements.clear()
        await self.send(HEADER.format(domain=self.domain))
        return await self.expect(f"{{{STREAM_NS}}}features")

    async def starttls(self, context: ssl.SSLContext) -> etree._Element:
        await self.send(f"<starttls xmlns='{TLS_NS}'/>")
        await self.expect(f"{{{TLS_NS}}}proceed")
        tls = trio.SSLStream(self.stream, context, server_hostname=self.domain)
        await tls.do_handshake()
        self.stream = tls
        return await self.open_stream()

    async def authenticate(self, username: str, password: str, mechanism: str = "SCRAM-SHA-256") -> None:
        scram = ScramClient(username, password, MECHANISMS[mechanism])
        first = base64.b64encode(scram.first()).decode()
        await self.send(f"<auth xmlns='{SASL_NS}' mechanism='{mechanism}'>{first}</auth>")
        challenge = await self.next_element()
        if challenge.tag != f"{{{SASL_NS}}}challenge":
            raise LoginError(f"SASL: {etree.tostring(challenge)[:200]!r}")
        final = scram.final(base64.b64decode(challenge.text or ""))
        await self.send(f"<response xmlns='{SASL_NS}'>{base64.b64encode(final).decode()}</response>")
        success = await self.next_element()
        if success.tag != f"{{{SASL_NS}}}success":
            raise LoginError(f"SASL: {etree.tostring(success)[:200]!r}")
        scram.verify(base64.b64decode(success.text or ""))

    async def bind(self, resource: str) -> str:
        await self.send(
            f"<iq type='set' id='b1'><bind xmlns='{BIND_NS}'><resource>{resource}</resource></bind></iq>"
        )
        bound = await self.next_element(lambda e: e.get("id") == "b1")
        jid = bound.findtext(f".//{{{BIND_NS}}}jid")
        if bound.get("type") != "result" or not jid:
            raise LoginError(f"bind: {etree.tostring(bound)[:200]!r}")
        self.jid = jid
        return jid

    async def login(self, username: str, password: str, resource: str,
                    context: ssl.SSLContext | None, mechanism: str | None = None) -> str:  # fmt: skip
        """STARTTLS (when `context` is given), SCRAM (`mechanism`, or the first of MECHANISMS the
        server offers), bind, initial presence."""
        features = await self.open_stream()
        if context is not None:
            if features.find(f"{{{TLS_NS}}}starttls") is None:
                raise LoginError("server does not offer STARTTLS")
            features = await self.starttls(context)
        await self.authenticate(username, password, choose_mechanism(features, mechanism))
        await self.open_stream()
        jid = await self.bind(resource)
        await self.send("<presence/>")
        return jid

    async def _secure_features(self, context: ssl.SSLContext | None) -> etree._Element:
        features = await self.open_stream()
        if context is not None:
            if features.find(f"{{{TLS_NS}}}starttls") is None:
                raise LoginError("server does not offer STARTTLS")
            features = await self.starttls(context)
        if features.find(f"{{{SASL2_NS}}}authentication") is None:
            raise LoginError("server does not offer SASL2")
        return features

    async def _sasl2_success(self, reply: etree._Element) -> etree._Element:
        """<success/> of a SASL2 login with Bind 2; the full JID kept, initial presence sent."""
        if reply.tag != f"{{{SASL2_NS}}}success":
            raise LoginError(f"SASL2: {etree.tostring(reply)[:200]!r}")
        await self.expect(f"{{{STREAM_NS}}}features")  # no restart: the features follow at once
        self.jid = reply.findtext(f"{{{SASL2_NS}}}authorization-identifier") or ""
        await self.send("<presence/>")
        return reply

    async def login_sasl2(
        self, username: str, password: str, resource: str, context: ssl.SSLContext | None,
        mechanism: str | None, agent: str, request_token: bool = False,
    ) -> str | None:  # fmt: skip
        """STARTTLS, SCRAM in SASL2 with Bind 2 (tag `resource`), initial presence; the FAST
        token received when `request_token`."""
        features = await self._secure_features(context)
        chosen = choose_mechanism(features, mechanism)
        scram = ScramClient(username, password, MECHANISMS[chosen])
        token = f"<request-token xmlns='{FAST_NS}' mechanism='{FAST_MECHANISM}'/>" if request_token else ""
        await self.send(
            f"<authenticate xmlns='{SASL2_NS}' mechanism='{chosen}'>"
            f"<initial-response>{base64.b64encode(scram.first()).decode()}</initial-response>"
            f"<user-agent id='{agent}'><software>bench</software></user-agent>"
            f"<bind xmlns='{BIND2_NS}'><tag>{resource}</tag></bind>{token}</authenticate>"
        )
        challenge = await self.next_element()
        if challenge.tag != f"{{{SASL2_NS}}}challenge":
            raise LoginError(f"SASL2: {etree.tostring(challenge)[:200]!r}")
        final = scram.final(base64.b64decode(challenge.text or ""))
        await self.send(f"<response xmlns='{SASL2_NS}'>{base64.b64encode(final).decode()}</response>")
        success = await self._sasl2_success(await self.next_element())
        scram.verify(base64.b64decode(success.findtext(f"{{{SASL2_NS}}}additional-data") or ""))
        token_element = success.find(f"{{{FAST_NS}}}token")
        if not request_token:
            return None
        if token_element is None:
            raise LoginError("FAST: no token in <success/>")
        return token_element.get("token")

    async def login_fast(self, username: str, token: str, resource: str, context: ssl.SSLContext | None,
                         agent: str, count: int) -> str | None:  # fmt: skip
        """STARTTLS, a FAST login (HT-SHA-256-NONE) with Bind 2, initial presence: one round
        trip and no PBKDF2 on either side. The rotated token, if the server sent one."""
        await self._secure_features(context)
        key = token.encode()
        proof = hmac.digest(key, b"Initiator", "sha256")
        initial = base64.b64encode(username.encode() + b"\x00" + proof).decode()
        await self.send(
            f"<authenticate xmlns='{SASL2_NS}' mechanism='{FAST_MECHANISM}'>"
            f"<initial-response>{initial}</initial-response>"
            f"<user-agent id='{agent}'><software>bench</software></user-agent>"
            f"<fast xmlns='{FAST_NS}' count='{count}'/><bind xmlns='{BIND2_NS}'><tag>{resource}</tag></bind>"
            "</authenticate>"
        )
        success = await self._sasl2_success(await self.next_element())
        responder = base64.b64decode(success.findtext(f"{{{SASL2_NS}}}additional-data") or "")
        if not hmac.compare_digest(responder, hmac.digest(key, b"Responder", "sha256")):
            raise LoginError("FAST: bad responder message")
        rotated = success.find(f"{{{FAST_NS}}}token")
        return None if rotated is None else rotated.get("token")

    async def ping(self, iq_id: str = "p1") -> None:
        await self.send(f"<iq type='get' id='{iq_id}' to='{self.domain}'><ping xmlns='urn:xmpp:ping'/></iq>")
        reply = await self.next_element(lambda e: e.tag == f"{{{CLIENT_NS}}}iq" and e.get("id") == iq_id)
        if reply.get("type") != "result":
            raise LoginError(f"ping: {etree.tostring(reply)[:200]!r}")

    async def aclose(self, graceful: bool = True) -> None:
        with trio.move_on_after(2):
            if graceful and not self.closed:
                with contextlib.suppress(*_CLOSED):
                    await self.send("</stream:stream>")
            with contextlib.suppress(*_CLOSED):
                await self.stream.aclose()
