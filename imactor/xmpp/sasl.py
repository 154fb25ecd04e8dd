"""Server-side SASL for XMPP (RFC 6120 §6, RFC 4422) as a sans-IO state machine.

Mechanisms: SCRAM-SHA-1/-256 with their -PLUS variants (RFC 5802, RFC 7677; channel binding per
RFC 5929 and RFC 9266, advertised per XEP-0440) and PLAIN (RFC 4616, only under TLS).

The shell feeds decoded <auth/>, <response/> and <abort/> payloads in and sends whatever step
comes out. Account look-ups are not done here: on `SaslNeedCredentials` the shell fetches the
stored SCRAM verifiers and calls `SaslServer.provide_credentials`.
"""

from __future__ import annotations

import enum
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from imactor.xmpp.errors import LocalProtocolError
from imactor.xmpp.jid import JID, prep_domainpart, prep_localpart, prep_password
from imactor.xmpp.sasl_scram import (
    CB_NAME,
    NONCE,
    ClientFirst,
    SaslError,
    ScramExchange,
    fake_credentials,
    malformed,
    parse_client_first,
    select_channel_binding,
)
from imactor.xmpp.scram import DEFAULT_ITERATIONS, ScramCredentials, verify_password


@dataclass(frozen=True, slots=True)
class SaslChallenge:
    """Send <challenge/> with base64 of `data`."""

    data: bytes


@dataclass(frozen=True, slots=True)
class SaslSuccess:
    """Send <success/>; `data` is the additional data (SCRAM's ``v=...``), if any.

    `username` is the prepared authcid; `authzid` is as sent, checked to name that same account.
    """

    username: str
    authzid: str | None
    data: bytes | None


@dataclass(frozen=True, slots=True)
class SaslFailure:
    """Send <failure/> with an RFC 6120 §6.5 `condition` and optional <text/>."""

    condition: str
    text: str = ""


@dataclass(frozen=True, slots=True)
class SaslNeedCredentials:
    """Look up the SCRAM verifiers of `username` (PRECIS-prepared) and call provide_credentials()."""

    username: str


SaslStep = SaslChallenge | SaslSuccess | SaslFailure | SaslNeedCredentials


class SaslState(enum.Enum):
    """Where the exchange is; it tells which method may be called next."""

    IDLE = "idle"  # start()
    AWAITING_RESPONSE = "awaiting-response"  # respond() or abort()
    AWAITING_CREDENTIALS = "awaiting-credentials"  # provide_credentials() or abort()
    SUCCEEDED = "succeeded"  # nothing: the stream restarts
    FAILED = "failed"  # start() again (RFC 6120 §6.4.5 allows retries), or give up


_NEXT_STATE: dict[type, SaslState] = {
    SaslChallenge: SaslState.AWAITING_RESPONSE,
    SaslNeedCredentials: SaslState.AWAITING_CREDENTIALS,
    SaslSuccess: SaslState.SUCCEEDED,
    SaslFailure: SaslState.FAILED,
}

#: SCRAM mechanism → (hash name of imactor.xmpp.scram, uses channel binding), preference order.
_SCRAM: dict[str, tuple[str, bool]] = {
    "SCRAM-SHA-256-PLUS": ("SHA-256", True),
    "SCRAM-SHA-1-PLUS": ("SHA-1", True),
    "SCRAM-SHA-256": ("SHA-256", False),
    "SCRAM-SHA-1": ("SHA-1", False),
}

#: Strongest first: tls-exporter (RFC 9266) works on TLS 1.3, tls-unique does not.
_CB_PREFERENCE = ("tls-exporter", "tls-server-end-point", "tls-unique")

#: Fallback fake-salt secret, shared by the whole process so that the fake salt of an unknown
#: user does not change from one connection to the next. Shells should pass a configured one so
#: it also survives restarts and agrees between worker processes.
_PROCESS_FAKE_SALT_SECRET = secrets.token_bytes(32)


def _default_nonce() -> str:
    return secrets.token_urlsafe(18)


@dataclass(frozen=True, slots=True)
class _Config:
    channel_bindings: Mapping[str, bytes]
    nonce_factory: Callable[[], str]
    fake_salt_secret: bytes
    fake_iterations: int
    domain: str | None

    def fake(self, hash_name: str, username: str) -> ScramCredentials:
        return fake_credentials(hash_name, username, self.fake_salt_secret, self.fake_iterations)


def _prep_username(raw: str) -> str:
    """PRECIS-prepare an authcid; a name that is no valid localpart cannot be an account."""
    try:
        return prep_localpart(raw)
    except ValueError:
        raise SaslError("not-authorized", "invalid-username-encoding") from None


def _check_authzid(authzid: str | None, username: str, domain: str | None) -> str | None:
    """Allow only acting as oneself: the authzid must be our username or our bare JID.

    Args:
        authzid: As the client sent it; empty means none.
        username: The prepared authcid.
        domain: Our prepared domainpart; None lets any domain through for the shell to check.

    Raises:
        SaslError: invalid-authzid (RFC 6120 §6.5.6).
    """
    if not authzid:
        return None
    try:
        if "@" not in authzid and "/" not in authzid:
            allowed = prep_localpart(authzid) == username  # a bare username, as many clients send
        else:
            jid = JID.parse(authzid)
            allowed = jid.is_bare and jid.localpart == username and domain in (None, jid.domainpart)
    except ValueError:  # InvalidJID
        allowed = False
    if not allowed:
        raise SaslError("invalid-authzid")
    return authzid


def _pick(credentials: Mapping[str, ScramCredentials] | None, hash_name: str) -> ScramCredentials | None:
    creds = None if credentials is None else credentials.get(hash_name)
    if creds is not None and creds.hash_name != hash_name:
        raise LocalProtocolError(f"credentials under {hash_name!r} are for {creds.hash_name!r}")
    return creds


class _Mechanism(Protocol):
    channel_binding: str | None

    def receive(self, data: bytes) -> SaslStep: ...

    def credentials(self, credentials: Mapping[str, ScramCredentials] | None) -> SaslStep: ...


class _Plain:
    """PLAIN (RFC 4616): one message, then a password check against a SCRAM verifier."""

    channel_binding: str | None = None

    def __init__(self, config: _Config) -> None:
        self._config = config
        self._username = ""
        self._authzid: str | None = None
        self._password = ""

    def receive(self, data: bytes) -> SaslStep:
        try:
            authzid, authcid, password = data.decode("utf-8").split("\x00")
        except (UnicodeDecodeError, ValueError):  # ValueError: not exactly two NULs
            raise malformed("") from None
        if not authcid or not password:
            raise malformed("")
        self._username = _prep_username(authcid)
        self._authzid = _check_authzid(authzid, self._username, self._config.domain)
        self._password = password
        return SaslNeedCredentials(self._username)

    def credentials(self, credentials: Mapping[str, ScramCredentials] | None) -> SaslStep:
        creds = _pick(credentials, "SHA-256") or _pick(credentials, "SHA-1")
        try:
            password: str | None = prep_password(self._password)
        except ValueError:
            password = None
        if creds is None or password is None:
            # Spend the same PBKDF2 time: a quick answer would reveal that the account is missing.
            verify_password(self._password, self._config.fake("SHA-256", self._username))
            raise SaslError("not-authorized")
        if not verify_password(password, creds):
            raise SaslError("not-authorized")
        return SaslSuccess(self._username, self._authzid, None)


class _Scram:
    """SCRAM-SHA-* and -PLUS: client-first, server-first, client-final, server-final in <success/>."""

    def __init__(self, config: _Config, hash_name: str, plus: bool) -> None:
        self._config = config
        self._hash_name = hash_name
        self._plus = plus
        self.channel_binding: str | None = None
        self._username = ""
        self._authzid: str | None = None
        self._first: ClientFirst | None = None
        self._cb_data = b""
        self._exchange: ScramExchange | None = None

    def receive(self, data: bytes) -> SaslStep:
        if self._exchange is not None:
            server_final = self._exchange.client_final(data)
            return SaslSuccess(self._username, self._authzid, server_final)
        first = parse_client_first(data)
        self._cb_data = select_channel_binding(
            first, plus=self._plus, channel_bindings=self._config.channel_bindings
        )
        self._username = _prep_username(first.username)
        self._authzid = _check_authzid(first.authzid, self._username, self._config.domain)
        self._first = first
        self.channel_binding = first.cb_name if self._plus else None
        return SaslNeedCredentials(self._username)

    def credentials(self, credentials: Mapping[str, ScramCredentials] | None) -> SaslStep:
        if self._first is None:
            raise LocalProtocolError("credentials before the client-first-message")
        creds = _pick(credentials, self._hash_name)
        known = creds is not None
        if creds is None:
            # Unknown user (or no verifier for this hash): play along with stable fake values and
            # fail at the end exactly like a wrong password, so accounts cannot be enumerated.
            creds = self._config.fake(self._hash_name, self._username)
        self._exchange = ScramExchange(self._first, self._cb_data, creds, known=known)
        nonce = self._config.nonce_factory()
        if not NONCE.fullmatch(nonce):
            raise LocalProtocolError(f"nonce factory returned an unusable nonce {nonce!r}")
        return SaslChallenge(self._exchange.server_first(nonce))


class SaslServer:
    """One connection's SASL negotiation, as a state machine without I/O.

    Every method returns the next step for the shell to act on; inputs from the peer never raise,
    they end in a `SaslFailure`. Calling a method the current `state` does not allow raises
    `LocalProtocolError`.
    """

    def __init__(
        self,
        *,
        tls_active: bool,
        channel_bindings: Mapping[str, bytes] = {},  # read-only, copied below
        allow_plain: bool = True,
        nonce_factory: Callable[[], str] | None = None,
        fake_salt_secret: bytes = b"",
        fake_iterations: int = DEFAULT_ITERATIONS,
        domain: str | None = None,
    ) -> None:
        """Configure the offer.

        Args:
            tls_active: Whether the stream is under TLS; PLAIN is offered only then.
            channel_bindings: Channel binding type → data the TLS layer provides, e.g.
                ``{"tls-exporter": ..., "tls-server-end-point": ...}``. Non-empty enables -PLUS.
            allow_plain: Offer PLAIN (still only under TLS).
            nonce_factory: Returns the server part of SCRAM nonces (printable ASCII, no ",").
            fake_salt_secret: Server-wide secret the fake salts of unknown users are derived from;
                empty uses a random per-process secret.
            fake_iterations: Iteration count shown for unknown users; match the account store's.
            domain: The served domain, to check the domain part of an authzid.

        Raises:
            ValueError: On a channel binding type name that is not a cb-name, channel bindings
                without TLS, or an invalid `domain` (InvalidJID).
        """
        for name in channel_bindings:
            if not CB_NAME.fullmatch(name):
                raise ValueError(f"invalid channel binding type {name!r}")
        if channel_bindings and not tls_active:
            raise ValueError("channel bindings need TLS")
        self._tls_active = tls_active
        self._allow_plain = allow_plain
        self._config = _Config(
            channel_bindings=dict(channel_bindings),
            nonce_factory=nonce_factory or _default_nonce,
            fake_salt_secret=fake_salt_secret or _PROCESS_FAKE_SALT_SECRET,
            fake_iterations=fake_iterations,
            domain=None if domain is None else prep_domainpart(domain),
        )
        self._state = SaslState.IDLE
        self._handler: _Mechanism | None = None
        self._mechanism: str | None = None
        self._channel_binding: str | None = None

    @property
    def state(self) -> SaslState:
        """Where the exchange stands."""
        return self._state

    @property
    def mechanism(self) -> str | None:
        """The mechanism of the current or last exchange, once accepted by start()."""
        return self._mechanism

    @property
    def channel_binding(self) -> str | None:
        """The channel binding type the client authenticated with, once successful."""
        return self._channel_binding

    def mechanisms(self) -> list[str]:
        """The mechanisms to advertise, most preferred first."""
        offer = [name for name, (_, plus) in _SCRAM.items() if not plus or self._config.channel_bindings]
        if self._tls_active and self._allow_plain:
            offer.append("PLAIN")
        return offer

    def channel_binding_types(self) -> list[str]:
        """Channel binding types for XEP-0440 <sasl-channel-binding/>, strongest first."""
        rank = {name: index for index, name in enumerate(_CB_PREFERENCE)}
        return sorted(self._config.channel_bindings, key=lambda name: (rank.get(name, len(rank)), name))

    def start(self, mechanism: str, initial_response: bytes | None) -> SaslStep:
        """Handle <auth/>.

        Args:
            mechanism: The mechanism the client chose.
            initial_response: Base64-decoded initial response; None when absent, b"" for "=".

        Raises:
            LocalProtocolError: Unless `state` is IDLE or FAILED.
        """
        if self._state not in (SaslState.IDLE, SaslState.FAILED):
            raise LocalProtocolError(f"start() in state {self._state.value}")
        self._handler, self._mechanism, self._channel_binding = None, None, None
        if mechanism not in self.mechanisms():
            return self._fail(SaslFailure(self._refusal(mechanism)))
        self._mechanism = mechanism
        if mechanism == "PLAIN":
            self._handler = _Plain(self._config)
        else:
            hash_name, plus = _SCRAM[mechanism]
            self._handler = _Scram(self._config, hash_name, plus)
        if initial_response is None:
            # RFC 6120 §6.4.2: an empty challenge asks for the initial response.
            return self._advance(lambda: SaslChallenge(b""))
        return self._advance(lambda: self._current().receive(initial_response))

    def respond(self, data: bytes) -> SaslStep:
        """Handle <response/> with its base64-decoded payload.

        Raises:
            LocalProtocolError: Unless `state` is AWAITING_RESPONSE.
        """
        self._expect(SaslState.AWAITING_RESPONSE, "respond()")
        return self._advance(lambda: self._current().receive(data))

    def provide_credentials(self, credentials: Mapping[str, ScramCredentials] | None) -> SaslStep:
        """Continue after `SaslNeedCredentials`.

        Args:
            credentials: The account's verifiers keyed by "SHA-1"/"SHA-256"; None if no account.

        Raises:
            LocalProtocolError: Unless `state` is AWAITING_CREDENTIALS.
        """
        self._expect(SaslState.AWAITING_CREDENTIALS, "provide_credentials()")
        return self._advance(lambda: self._current().credentials(credentials))

    def abort(self) -> SaslFailure:
        """Handle <abort/> (RFC 6120 §6.4.4).

        Raises:
            LocalProtocolError: After success, when there is nothing left to abort.
        """
        if self._state is SaslState.SUCCEEDED:
            raise LocalProtocolError("abort() after success")
        return self._fail(SaslFailure("aborted"))

    def _refusal(self, mechanism: str) -> str:
        # PLAIN exists but is held back until TLS: say why, so the client can fix it.
        if mechanism == "PLAIN" and self._allow_plain and not self._tls_active:
            return "encryption-required"
        return "invalid-mechanism"

    def _expect(self, state: SaslState, what: str) -> None:
        if self._state is not state:
            raise LocalProtocolError(f"{what} in state {self._state.value}")

    def _current(self) -> _Mechanism:
        if self._handler is None:
            raise LocalProtocolError("no mechanism in progress")
        return self._handler

    def _fail(self, failure: SaslFailure) -> SaslFailure:
        self._state = SaslState.FAILED
        self._handler = None
        return failure

    def _advance(self, action: Callable[[], SaslStep]) -> SaslStep:
        try:
            step = action()
        except SaslError as exc:
            return self._fail(SaslFailure(exc.condition, exc.text))
        if isinstance(step, SaslSuccess):
            self._channel_binding = self._current().channel_binding
            self._handler = None
        self._state = _NEXT_STATE[type(step)]
        return step
