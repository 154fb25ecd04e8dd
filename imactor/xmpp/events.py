"""Events the C2S stream state machine hands to its I/O shell (`ServerStream.next_event`)."""

from __future__ import annotations

from dataclasses import dataclass

from lxml import etree

from imactor.xmpp.sasl2 import Authenticate


@dataclass(frozen=True, slots=True)
class StartTLSRequested:
    """The client sent <starttls/>; <proceed/> is queued. Flush it, wrap TLS, call `tls_established`."""


@dataclass(frozen=True, slots=True)
class CredentialsNeeded:
    """SASL needs the stored verifiers of `username`: call `provide_credentials` (or `refuse_auth`)."""

    username: str


@dataclass(frozen=True, slots=True)
class Authenticated:
    """SASL succeeded; <success/> is queued and the stream waits for the client's restart."""

    username: str


@dataclass(frozen=True, slots=True)
class TokenNeeded:
    """A XEP-0484 FAST login: check `proof` (the HT initiator's HMAC over `cb_data`) against the
    tokens of `username` and `request.user_agent`, then call `token_checked` (or `refuse_auth`)."""

    username: str
    request: Authenticate
    proof: bytes
    cb_data: bytes


@dataclass(frozen=True, slots=True)
class Sasl2Authenticated:
    """XEP-0388 SASL2 succeeded; act on `request`'s inline requests (resumption, Bind 2, FAST
    tokens), then call `sasl2_succeeded` with `additional_data` (SCRAM's server-final, the HT
    responder). Nothing is read meanwhile; the stream is not restarted."""

    username: str
    request: Authenticate
    additional_data: bytes | None


@dataclass(frozen=True, slots=True)
class AuthFailed:
    """SASL failed (the failure is queued); the shell counts it for throttling."""

    username: str | None
    condition: str


@dataclass(frozen=True, slots=True)
class BindRequested:
    """The client asks to bind `resource` (None: the server chooses). Answer with `bind_*`."""

    iq_id: str
    resource: str | None


@dataclass(frozen=True, slots=True)
class PreAuthIqReceived:
    """An IQ the stream allows before authentication (XEP-0077 registration)."""

    element: etree._Element


@dataclass(frozen=True, slots=True)
class StanzaReceived:
    """A message, presence or iq from the bound client."""

    element: etree._Element


@dataclass(frozen=True, slots=True)
class NonzaReceived:
    """A top-level element of an extension that negotiated it (e.g. XEP-0198 <r/>, <a/>)."""

    element: etree._Element


@dataclass(frozen=True, slots=True)
class StreamClosed:
    """The stream is over: the peer closed it, or we sent a stream error. Close the transport."""

    condition: str | None = None


Event = (
    StartTLSRequested | CredentialsNeeded | Authenticated | TokenNeeded | Sasl2Authenticated | AuthFailed
    | BindRequested | PreAuthIqReceived | StanzaReceived | NonzaReceived | StreamClosed
)  # fmt: skip
