"""Tests of the sans-IO SASL server: RFC 5802 / RFC 7677 vectors, SCRAM(-PLUS), PLAIN, misuse."""

from __future__ import annotations

import base64
import random
from collections.abc import Callable, Mapping

import pytest

from imactor.xmpp.errors import LocalProtocolError
from imactor.xmpp.sasl import (
    SaslChallenge,
    SaslFailure,
    SaslNeedCredentials,
    SaslServer,
    SaslState,
    SaslStep,
    SaslSuccess,
)
from imactor.xmpp.scram import (
    ScramCredentials,
    derive_credentials,
    hash_digest,
    hmac_digest,
    salted_password,
)

PASSWORD = "pencil"
CB_EXPORTER = b"\x01" * 32  # stands in for what the TLS layer would export
CB_END_POINT = b"\x02" * 32
BINDINGS = {"tls-server-end-point": CB_END_POINT, "tls-exporter": CB_EXPORTER}

_CREDS_CACHE: dict[tuple[str, str], ScramCredentials] = {}


def creds(hash_name: str, password: str = PASSWORD) -> ScramCredentials:
    """Verifiers with a fixed salt, cached: PBKDF2 is the slow part of these tests."""
    key = (hash_name, password)
    if key not in _CREDS_CACHE:
        salt = b"fixed-test-salt!"
        _CREDS_CACHE[key] = derive_credentials(hash_name, password, salt=salt, iterations=4096)
    return _CREDS_CACHE[key]


def account(password: str = PASSWORD) -> dict[str, ScramCredentials]:
    return {"SHA-1": creds("SHA-1", password), "SHA-256": creds("SHA-256", password)}


PENCIL = account()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def escape(name: str) -> str:
    return name.replace("=", "=3D").replace(",", "=2C")


class ScramClient:
    """A minimal SCRAM client (RFC 5802 §3), written from the RFC to drive the server."""

    def __init__(
        self,
        hash_name: str,
        username: str = "user",
        password: str = PASSWORD,
        *,
        nonce: str = "cl1entN0nce+/",
        gs2_header: str = "n,,",
        cb_data: bytes = b"",
        first_extensions: str = "",
        final_extensions: str = "",
    ) -> None:
        self.hash_name = hash_name
        self.password = password
        self.nonce = nonce
        self.gs2_header = gs2_header
        self.cb_data = cb_data
        self.bare = f"n={escape(username)},r={nonce}{first_extensions}"
        self.final_extensions = final_extensions
        self.server_signature = b""

    def first(self) -> bytes:
        return (self.gs2_header + self.bare).encode()

    def final(self, server_first: bytes) -> bytes:
        text = server_first.decode()
        attributes = dict(part.split("=", 1) for part in text.split(","))
        nonce = attributes["r"]  # a real client checks it extends its own; the tests do that
        h = self.hash_name
        salted = salted_password(
            h, self.password.encode(), base64.b64decode(attributes["s"]), int(attributes["i"])
        )
        client_key = hmac_digest(h, salted, b"Client Key")
        without_proof = f"c={b64(self.gs2_header.encode() + self.cb_data)},r={nonce}{self.final_extensions}"
        auth_message = f"{self.bare},{text},{without_proof}".encode()
        signature = hmac_digest(h, hash_digest(h, client_key), auth_message)
        proof = bytes(k ^ s for k, s in zip(client_key, signature, strict=True))
        self.server_signature = hmac_digest(h, hmac_digest(h, salted, b"Server Key"), auth_message)
        return f"{without_proof},p={b64(proof)}".encode()

    def verify(self, server_final: bytes | None) -> bool:
        return server_final == b"v=" + base64.b64encode(self.server_signature)


def run_scram(
    server: SaslServer,
    mechanism: str,
    client: ScramClient,
    credentials: Mapping[str, ScramCredentials] | None = PENCIL,
) -> SaslStep:
    """Drive one SCRAM exchange to its end; `credentials` defaults to the pencil account."""
    step = server.start(mechanism, client.first())
    if not isinstance(step, SaslNeedCredentials):
        return step
    step = server.provide_credentials(credentials)
    assert isinstance(step, SaslChallenge)
    return server.respond(client.final(step.data))


def tls_server(nonce_factory: Callable[[], str] | None = None) -> SaslServer:
    return SaslServer(tls_active=True, channel_bindings=BINDINGS, nonce_factory=nonce_factory)


# --- RFC test vectors -------------------------------------------------------------------------


def test_rfc5802_scram_sha1_example() -> None:
    server = SaslServer(tls_active=False, nonce_factory=lambda: "3rfcNHYJY1ZVvWVs7j")
    stored = derive_credentials("SHA-1", "pencil", salt=base64.b64decode("QSXCR+Q6sek8bf92"), iterations=4096)

    assert server.start("SCRAM-SHA-1", b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL") == SaslNeedCredentials("user")
    assert server.provide_credentials({"SHA-1": stored}) == SaslChallenge(
        b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096"
    )
    step = server.respond(
        b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="
    )
    assert step == SaslSuccess("user", None, b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ=")
    assert server.state is SaslState.SUCCEEDED
    assert server.mechanism == "SCRAM-SHA-1"
    assert server.channel_binding is None


def test_rfc7677_scram_sha256_example() -> None:
    server = SaslServer(tls_active=False, nonce_factory=lambda: "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0")
    salt = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
    stored = derive_credentials("SHA-256", "pencil", salt=salt, iterations=4096)
    nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"

    assert server.start("SCRAM-SHA-256", b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO") == SaslNeedCredentials("user")
    assert server.provide_credentials({"SHA-256": stored}) == SaslChallenge(
        f"r={nonce},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096".encode()
    )
    step = server.respond(f"c=biws,r={nonce},p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=".encode())
    assert step == SaslSuccess("user", None, b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")


# --- SCRAM with the test client ---------------------------------------------------------------


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-1", "SCRAM-SHA-256"])
@pytest.mark.parametrize("with_tls", [False, True])
def test_scram_full_exchange(mechanism: str, with_tls: bool) -> None:
    server = tls_server() if with_tls else SaslServer(tls_active=False)
    client = ScramClient(mechanism.removeprefix("SCRAM-"))
    step = run_scram(server, mechanism, client)
    assert isinstance(step, SaslSuccess)
    assert (step.username, step.authzid) == ("user", None)
    assert client.verify(step.data)
    assert server.channel_binding is None


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-1-PLUS", "SCRAM-SHA-256-PLUS"])
@pytest.mark.parametrize("cb_type", ["tls-exporter", "tls-server-end-point"])
def test_scram_plus_full_exchange(mechanism: str, cb_type: str) -> None:
    server = tls_server()
    hash_name = mechanism.removeprefix("SCRAM-").removesuffix("-PLUS")
    client = ScramClient(hash_name, gs2_header=f"p={cb_type},,", cb_data=BINDINGS[cb_type])
    step = run_scram(server, mechanism, client)
    assert isinstance(step, SaslSuccess)
    assert client.verify(step.data)
    assert server.channel_binding == cb_type
    assert server.mechanism == mechanism


def test_scram_without_initial_response_gets_empty_challenge() -> None:
    server = SaslServer(tls_active=False)
    client = ScramClient("SHA-256")
    assert server.start("SCRAM-SHA-256", None) == SaslChallenge(b"")
    assert server.state is SaslState.AWAITING_RESPONSE
    assert server.respond(client.first()) == SaslNeedCredentials("user")
    step = server.provide_credentials(account())
    assert isinstance(step, SaslChallenge)
    result = server.respond(client.final(step.data))
    assert isinstance(result, SaslSuccess)
    assert client.verify(result.data)


def test_scram_server_nonce_comes_from_factory_and_extends_client_nonce() -> None:
    server = SaslServer(tls_active=False, nonce_factory=lambda: "SERVERPART")
    server.start("SCRAM-SHA-256", ScramClient("SHA-256", nonce="abc").first())
    step = server.provide_credentials(account())
    assert isinstance(step, SaslChallenge)
    assert step.data.startswith(b"r=abcSERVERPART,s=")


def test_default_nonce_is_fresh() -> None:
    challenges = []
    for _ in range(2):
        server = SaslServer(tls_active=False)
        server.start("SCRAM-SHA-1", ScramClient("SHA-1").first())
        step = server.provide_credentials(account())
        assert isinstance(step, SaslChallenge)
        challenges.append(step.data)
    assert challenges[0] != challenges[1]


def test_scram_wrong_password() -> None:
    step = run_scram(SaslServer(tls_active=False), "SCRAM-SHA-256", ScramClient("SHA-256", password="pen"))
    assert step == SaslFailure("not-authorized", "invalid-proof")


def test_scram_nonce_mismatch() -> None:
    server = SaslServer(tls_active=False)
    client = ScramClient("SHA-1")
    server.start("SCRAM-SHA-1", client.first())
    step = server.provide_credentials(account())
    assert isinstance(step, SaslChallenge)
    tampered = step.data.replace(b"r=cl1entN0nce+/", b"r=cl1entN0nce+/X")
    result = server.respond(client.final(tampered))
    assert isinstance(result, SaslFailure)
    assert result.condition == "not-authorized"


def test_scram_proof_of_wrong_length_is_malformed() -> None:
    server = SaslServer(tls_active=False)
    client = ScramClient("SHA-256")
    server.start("SCRAM-SHA-256", client.first())
    step = server.provide_credentials(account())
    assert isinstance(step, SaslChallenge)
    final = client.final(step.data)
    short = final[: final.index(b",p=")] + b",p=" + base64.b64encode(b"x" * 20)
    assert server.respond(short) == SaslFailure("malformed-request", "invalid-encoding")


def test_scram_non_canonical_base64_proof_is_malformed() -> None:
    server = SaslServer(tls_active=False)
    client = ScramClient("SHA-256")
    server.start("SCRAM-SHA-256", client.first())
    step = server.provide_credentials(PENCIL)
    assert isinstance(step, SaslChallenge)
    final = client.final(step.data)
    # A 32-byte proof leaves two spare bits in its last base64 digit; setting one keeps the bytes.
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = alphabet.index(final[-2:-1])
    assert last & 0b11 == 0
    tweaked = final[:-2] + alphabet[last | 1 : (last | 1) + 1] + b"="
    # ",p=" and not "p=": the tweaked last digit itself may be a "p" right before the padding.
    assert base64.b64decode(tweaked.rpartition(b",p=")[2]) == base64.b64decode(final.rpartition(b",p=")[2])
    assert server.respond(tweaked) == SaslFailure("malformed-request", "invalid-encoding")


def test_scram_optional_extensions_are_ignored() -> None:
    client = ScramClient("SHA-256", first_extensions=",x=1", final_extensions=",y=two")
    step = run_scram(SaslServer(tls_active=False), "SCRAM-SHA-256", client)
    assert isinstance(step, SaslSuccess)
    assert client.verify(step.data)


@pytest.mark.parametrize(
    "first",
    [b"n,,m=ext,n=user,r=abc", b"n,,n=user,r=abc,m=ext"],
)
def test_scram_mandatory_extension_fails(first: bytes) -> None:
    step = SaslServer(tls_active=False).start("SCRAM-SHA-1", first)
    assert step == SaslFailure("malformed-request", "extensions-not-supported")


def test_scram_mandatory_extension_in_final_fails() -> None:
    client = ScramClient("SHA-1", final_extensions=",m=ext")
    step = run_scram(SaslServer(tls_active=False), "SCRAM-SHA-1", client)
    assert step == SaslFailure("malformed-request", "extensions-not-supported")


# --- Channel binding --------------------------------------------------------------------------


def test_scram_plus_wrong_cb_data() -> None:
    client = ScramClient("SHA-256", gs2_header="p=tls-exporter,,", cb_data=b"\x09" * 32)
    step = run_scram(tls_server(), "SCRAM-SHA-256-PLUS", client)
    assert step == SaslFailure("not-authorized", "channel-bindings-dont-match")


def test_scram_plus_cb_data_of_other_type() -> None:
    client = ScramClient("SHA-256", gs2_header="p=tls-exporter,,", cb_data=CB_END_POINT)
    step = run_scram(tls_server(), "SCRAM-SHA-256-PLUS", client)
    assert step == SaslFailure("not-authorized", "channel-bindings-dont-match")


def test_scram_plus_unsupported_cb_type() -> None:
    client = ScramClient("SHA-256", gs2_header="p=tls-unique,,")
    step = tls_server().start("SCRAM-SHA-256-PLUS", client.first())
    assert step == SaslFailure("not-authorized", "unsupported-channel-binding-type")


@pytest.mark.parametrize("gs2_header", ["n,,", "y,,"])
def test_scram_plus_without_p_flag(gs2_header: str) -> None:
    step = tls_server().start("SCRAM-SHA-1-PLUS", ScramClient("SHA-1", gs2_header=gs2_header).first())
    assert isinstance(step, SaslFailure)
    assert step.condition == "not-authorized"


def test_y_flag_while_plus_is_advertised_is_a_downgrade() -> None:
    server = tls_server()
    assert "SCRAM-SHA-256-PLUS" in server.mechanisms()
    step = server.start("SCRAM-SHA-256", ScramClient("SHA-256", gs2_header="y,,").first())
    assert step == SaslFailure("not-authorized", "server-does-support-channel-binding")


def test_y_flag_without_plus_offer_is_fine() -> None:
    client = ScramClient("SHA-256", gs2_header="y,,")
    step = run_scram(SaslServer(tls_active=True), "SCRAM-SHA-256", client)
    assert isinstance(step, SaslSuccess)
    assert client.verify(step.data)


def test_y_flag_must_be_repeated_in_c() -> None:
    # The gs2 header is covered by c=: a client claiming "y" then sending "n" in c= is refused.
    client = ScramClient("SHA-256", gs2_header="y,,")
    server = SaslServer(tls_active=True)
    server.start("SCRAM-SHA-256", client.first())
    step = server.provide_credentials(account())
    assert isinstance(step, SaslChallenge)
    client.gs2_header = "n,,"
    assert server.respond(client.final(step.data)) == SaslFailure(
        "not-authorized", "channel-bindings-dont-match"
    )


def test_p_flag_on_non_plus_mechanism_is_malformed() -> None:
    step = tls_server().start("SCRAM-SHA-256", ScramClient("SHA-256", gs2_header="p=tls-exporter,,").first())
    assert isinstance(step, SaslFailure)
    assert step.condition == "malformed-request"


def test_channel_binding_types_and_mechanisms() -> None:
    server = SaslServer(tls_active=True, channel_bindings={"tls-unique": b"u", **BINDINGS})
    assert server.channel_binding_types() == ["tls-exporter", "tls-server-end-point", "tls-unique"]
    assert server.mechanisms() == [
        "SCRAM-SHA-256-PLUS",
        "SCRAM-SHA-1-PLUS",
        "SCRAM-SHA-256",
        "SCRAM-SHA-1",
        "PLAIN",
    ]
    assert SaslServer(tls_active=True).channel_binding_types() == []
    assert SaslServer(tls_active=True).mechanisms() == ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"]
    assert SaslServer(tls_active=True, allow_plain=False).mechanisms() == ["SCRAM-SHA-256", "SCRAM-SHA-1"]
    assert SaslServer(tls_active=False).mechanisms() == ["SCRAM-SHA-256", "SCRAM-SHA-1"]


def test_plus_mechanism_without_bindings_is_invalid() -> None:
    client = ScramClient("SHA-256", gs2_header="p=tls-exporter,,")
    step = SaslServer(tls_active=True).start("SCRAM-SHA-256-PLUS", client.first())
    assert step == SaslFailure("invalid-mechanism")


def test_constructor_rejects_bad_domain() -> None:
    with pytest.raises(ValueError, match="domainpart"):
        SaslServer(tls_active=True, domain="exa mple..com")


def test_constructor_rejects_bad_channel_bindings() -> None:
    with pytest.raises(ValueError, match="invalid channel binding type"):
        SaslServer(tls_active=True, channel_bindings={"tls exporter": b"x"})
    with pytest.raises(ValueError, match="need TLS"):
        SaslServer(tls_active=False, channel_bindings=BINDINGS)


# --- Usernames, authzid -----------------------------------------------------------------------


def test_saslname_escapes_are_decoded() -> None:
    server = SaslServer(tls_active=False)
    assert server.start("SCRAM-SHA-1", b"n,,n=a=2Cb=3D=3D2c,r=abc") == SaslNeedCredentials("a,b==2c")


@pytest.mark.parametrize("name", [b"a=2cb", b"a=41", b"a=", b"=", b"a=3", b""])
def test_bad_saslname_escapes_are_malformed(name: bytes) -> None:
    step = SaslServer(tls_active=False).start("SCRAM-SHA-1", b"n,,n=" + name + b",r=abc")
    assert isinstance(step, SaslFailure)
    assert step.condition == "malformed-request"


def test_username_is_precis_prepared() -> None:
    from imactor.xmpp.jid import prep_localpart

    step = SaslServer(tls_active=False).start(
        "SCRAM-SHA-256", ScramClient("SHA-256", username="UsEr").first()
    )
    assert step == SaslNeedCredentials(prep_localpart("UsEr"))


def test_username_that_is_no_localpart_is_refused() -> None:
    step = SaslServer(tls_active=False).start(
        "SCRAM-SHA-256", ScramClient("SHA-256", username="a b@c").first()
    )
    assert isinstance(step, SaslFailure)
    assert step.condition == "not-authorized"


@pytest.mark.parametrize(
    ("authzid", "domain", "accepted"),
    [
        ("user", None, True),
        ("user@example.com", "example.com", True),
        ("user@EXAMPLE.com.", "Example.COM", True),  # domainparts are compared prepared
        ("USER@example.com", "example.com", True),
        ("user@elsewhere.net", None, True),  # the shell checks the domain when it gave none
        ("user@evil.com", "example.com", False),
        ("other@example.com", "example.com", False),
        ("other", None, False),
        ("user@example.com/phone", "example.com", False),
        ("user@", "example.com", False),
        ("@example.com", "example.com", False),
        ("example.com", "example.com", False),  # a domain JID, not the user
        ("user@exa mple.com", None, False),
    ],
)
def test_scram_authzid(authzid: str, domain: str | None, accepted: bool) -> None:
    client = ScramClient("SHA-256", gs2_header=f"n,a={escape(authzid)},")
    step = run_scram(SaslServer(tls_active=False, domain=domain), "SCRAM-SHA-256", client)
    if accepted:
        assert step == SaslSuccess("user", authzid, step.data if isinstance(step, SaslSuccess) else None)
        assert isinstance(step, SaslSuccess)
        assert client.verify(step.data)
    else:
        assert step == SaslFailure("invalid-authzid")


def test_scram_authzid_bound_into_channel_binding() -> None:
    client = ScramClient("SHA-256", gs2_header="p=tls-exporter,a=user,", cb_data=CB_EXPORTER)
    step = run_scram(tls_server(), "SCRAM-SHA-256-PLUS", client)
    assert isinstance(step, SaslSuccess)
    assert step.authzid == "user"


# --- Unknown users ----------------------------------------------------------------------------


def _server_first_for_unknown(secret: bytes, username: str = "ghost", hash_name: str = "SHA-256") -> bytes:
    server = SaslServer(tls_active=False, fake_salt_secret=secret, nonce_factory=lambda: "fixed")
    server.start(f"SCRAM-{hash_name}", ScramClient(hash_name, username=username).first())
    step = server.provide_credentials(None)
    assert isinstance(step, SaslChallenge)
    return step.data


def test_unknown_user_scram_fails_like_a_wrong_password() -> None:
    nothing: list[Mapping[str, ScramCredentials] | None] = [None, {}]
    for credentials in nothing:
        unknown = run_scram(
            SaslServer(tls_active=False), "SCRAM-SHA-256", ScramClient("SHA-256"), credentials
        )
        wrong = run_scram(SaslServer(tls_active=False), "SCRAM-SHA-256", ScramClient("SHA-256", password="x"))
        assert unknown == wrong == SaslFailure("not-authorized", "invalid-proof")


def test_account_without_verifier_for_the_hash_is_treated_as_unknown() -> None:
    only_sha1 = {"SHA-1": creds("SHA-1")}
    step = run_scram(SaslServer(tls_active=False), "SCRAM-SHA-256", ScramClient("SHA-256"), only_sha1)
    assert step == SaslFailure("not-authorized", "invalid-proof")


def test_unknown_user_fake_salt_is_stable_per_secret() -> None:
    first = _server_first_for_unknown(b"secret-1")
    assert first == _server_first_for_unknown(b"secret-1")
    assert first != _server_first_for_unknown(b"secret-2")
    assert first != _server_first_for_unknown(b"secret-1", username="phantom")
    assert first.endswith(b",i=4096")
    # Looks like a real 16-byte salt.
    salt = first.split(b",s=")[1].split(b",")[0]
    assert len(base64.b64decode(salt)) == 16
    # The default secret is per process, so it too is stable between connections.
    assert _server_first_for_unknown(b"") == _server_first_for_unknown(b"")


def test_unknown_user_iterations_follow_configuration() -> None:
    server = SaslServer(tls_active=False, fake_iterations=10000)
    server.start("SCRAM-SHA-1", ScramClient("SHA-1").first())
    step = server.provide_credentials(None)
    assert isinstance(step, SaslChallenge)
    assert step.data.endswith(b",i=10000")


# --- PLAIN ------------------------------------------------------------------------------------


def plain(server: SaslServer, message: bytes, credentials: Mapping[str, ScramCredentials] | None) -> SaslStep:
    step = server.start("PLAIN", message)
    if isinstance(step, SaslNeedCredentials):
        return server.provide_credentials(credentials)
    return step


def test_plain_good_password() -> None:
    server = SaslServer(tls_active=True)
    assert server.start("PLAIN", b"\x00user\x00pencil") == SaslNeedCredentials("user")
    assert server.provide_credentials(account()) == SaslSuccess("user", None, None)
    assert server.state is SaslState.SUCCEEDED


def test_plain_falls_back_to_sha1_verifier() -> None:
    step = plain(SaslServer(tls_active=True), b"\x00user\x00pencil", {"SHA-1": creds("SHA-1")})
    assert step == SaslSuccess("user", None, None)


def test_plain_uses_sha256_verifier_first() -> None:
    mixed = {"SHA-1": creds("SHA-1", "old"), "SHA-256": creds("SHA-256", "pencil")}
    assert plain(SaslServer(tls_active=True), b"\x00user\x00pencil", mixed) == SaslSuccess("user", None, None)


def test_plain_bad_password_and_unknown_user_look_the_same() -> None:
    bad = plain(SaslServer(tls_active=True), b"\x00user\x00pencils", account())
    unknown = plain(SaslServer(tls_active=True), b"\x00ghost\x00pencil", None)
    empty = plain(SaslServer(tls_active=True), b"\x00ghost\x00pencil", {})
    assert bad == unknown == empty == SaslFailure("not-authorized")


def test_plain_password_is_precis_prepared() -> None:
    # OpaqueString maps non-ASCII spaces to U+0020 and applies NFC (RFC 8265 §4.2).
    stored = {"SHA-256": creds("SHA-256", "pen cil\u00e9")}
    step = plain(SaslServer(tls_active=True), "\x00user\x00pen\u00a0cile\u0301".encode(), stored)
    assert step == SaslSuccess("user", None, None)


def test_plain_password_failing_precis_is_refused() -> None:
    step = plain(SaslServer(tls_active=True), b"\x00user\x00pen\x07cil", account())
    assert step == SaslFailure("not-authorized")


@pytest.mark.parametrize(
    ("authzid", "domain", "expected"),
    [
        ("user", None, SaslSuccess("user", "user", None)),
        ("user@example.com", "example.com", SaslSuccess("user", "user@example.com", None)),
        ("admin@example.com", "example.com", SaslFailure("invalid-authzid")),
        ("user@other.org", "example.com", SaslFailure("invalid-authzid")),
        ("user@example.com/res", "example.com", SaslFailure("invalid-authzid")),
    ],
)
def test_plain_authzid(authzid: str, domain: str | None, expected: SaslStep) -> None:
    message = authzid.encode() + b"\x00user\x00pencil"
    assert plain(SaslServer(tls_active=True, domain=domain), message, account()) == expected


@pytest.mark.parametrize(
    "message",
    [
        b"",
        b"user",
        b"\x00user",
        b"\x00user\x00",
        b"\x00\x00pencil",
        b"a\x00b\x00c\x00d",
        b"\x00us\xffer\x00pw",
    ],
)
def test_plain_malformed(message: bytes) -> None:
    step = SaslServer(tls_active=True).start("PLAIN", message)
    assert isinstance(step, SaslFailure)
    assert step.condition == "malformed-request"


def test_plain_without_initial_response() -> None:
    server = SaslServer(tls_active=True)
    assert server.start("PLAIN", None) == SaslChallenge(b"")
    assert server.respond(b"\x00user\x00pencil") == SaslNeedCredentials("user")
    assert server.provide_credentials(account()) == SaslSuccess("user", None, None)


def test_plain_needs_tls() -> None:
    server = SaslServer(tls_active=False)
    assert "PLAIN" not in server.mechanisms()
    assert server.start("PLAIN", b"\x00user\x00pencil") == SaslFailure("encryption-required")


def test_plain_can_be_disabled() -> None:
    server = SaslServer(tls_active=True, allow_plain=False)
    assert server.start("PLAIN", b"\x00user\x00pencil") == SaslFailure("invalid-mechanism")


# --- State machine ----------------------------------------------------------------------------


@pytest.mark.parametrize("mechanism", ["DIGEST-MD5", "scram-sha-1", "", "SCRAM-SHA-512", "EXTERNAL"])
def test_unknown_mechanism(mechanism: str) -> None:
    server = tls_server()
    assert server.start(mechanism, b"x") == SaslFailure("invalid-mechanism")
    assert server.mechanism is None
    assert server.state is SaslState.FAILED


def test_methods_out_of_order_raise() -> None:
    server = SaslServer(tls_active=True)
    with pytest.raises(LocalProtocolError):
        server.respond(b"x")
    with pytest.raises(LocalProtocolError):
        server.provide_credentials(account())
    server.start("PLAIN", b"\x00user\x00pencil")
    with pytest.raises(LocalProtocolError):
        server.respond(b"x")
    with pytest.raises(LocalProtocolError):
        server.start("PLAIN", b"\x00user\x00pencil")
    server.provide_credentials(account())
    calls: list[Callable[[], object]] = [
        lambda: server.start("PLAIN", None),
        lambda: server.respond(b""),
        lambda: server.provide_credentials(None),
        server.abort,
    ]
    for call in calls:
        with pytest.raises(LocalProtocolError):
            call()


def test_scram_respond_while_waiting_for_credentials_raises() -> None:
    server = SaslServer(tls_active=False)
    server.start("SCRAM-SHA-1", ScramClient("SHA-1").first())
    with pytest.raises(LocalProtocolError):
        server.respond(b"c=biws")


def test_abort_then_retry() -> None:
    server = SaslServer(tls_active=False)
    server.start("SCRAM-SHA-256", ScramClient("SHA-256").first())
    assert server.abort() == SaslFailure("aborted")
    assert server.state is SaslState.FAILED
    with pytest.raises(LocalProtocolError):
        server.provide_credentials(account())
    client = ScramClient("SHA-256")
    step = run_scram(server, "SCRAM-SHA-256", client)
    assert isinstance(step, SaslSuccess)
    assert client.verify(step.data)


def test_retry_after_failure_with_other_mechanism() -> None:
    server = tls_server()
    assert plain(server, b"\x00user\x00wrong", account()) == SaslFailure("not-authorized")
    client = ScramClient("SHA-1", gs2_header="p=tls-server-end-point,,", cb_data=CB_END_POINT)
    step = run_scram(server, "SCRAM-SHA-1-PLUS", client)
    assert isinstance(step, SaslSuccess)
    assert server.channel_binding == "tls-server-end-point"


def test_bad_nonce_factory_is_our_bug() -> None:
    server = SaslServer(tls_active=False, nonce_factory=lambda: "has,comma")
    server.start("SCRAM-SHA-1", ScramClient("SHA-1").first())
    with pytest.raises(LocalProtocolError):
        server.provide_credentials(account())


def test_mislabelled_credentials_are_our_bug() -> None:
    server = SaslServer(tls_active=False)
    server.start("SCRAM-SHA-1", ScramClient("SHA-1").first())
    with pytest.raises(LocalProtocolError):
        server.provide_credentials({"SHA-1": creds("SHA-256")})


# --- Malformed input --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "first",
    [
        b"",
        b"n",
        b"n,,",
        b"x,,n=user,r=abc",
        b"p=,,n=user,r=abc",
        b"p=tls exporter,,n=user,r=abc",
        b"n,b=user,n=user,r=abc",
        b"n,,r=abc,n=user",
        b"n,,n=user",
        b"n,,n=user,r=",
        b"n,,n=user,r=a b",
        b"n,,n=user,r=abc,",
        b"n,,n=user,r=abc,1=x",
        b"n,,n=user,r=abc,xy=1",
        b"n,,n=us\x00er,r=abc",
        b"n,,n=user,r=\xc3\xa9",
        b"\xff\xfe,,n=user,r=abc",
    ],
)
def test_malformed_client_first(first: bytes) -> None:
    step = SaslServer(tls_active=False).start("SCRAM-SHA-256", first)
    assert isinstance(step, SaslFailure)
    assert step.condition == "malformed-request"


@pytest.mark.parametrize(
    "final",
    [
        b"",
        b"c=biws",
        b"c=biws,r=NONCE",
        b"r=NONCE,c=biws,p=AAAA",
        b"c=biws,r=NONCE,p=",
        b"c=biws,r=NONCE,p=!!!!",
        b"c=bi*s,r=NONCE,p=AAAA",
        b"c=biws,r=NONCE,p=AAAA,x=1",
        b"c=biws,r=NONCE,x,p=AAAA",
        b"c=biws,p=AAAA",
        b"c=biws,r=NONCE,p=\xc3\xa9",
    ],
)
def test_malformed_client_final(final: bytes) -> None:
    server = SaslServer(tls_active=False, nonce_factory=lambda: "S")
    server.start("SCRAM-SHA-1", b"n,,n=user,r=C")
    server.provide_credentials(account())
    step = server.respond(final.replace(b"NONCE", b"CS"))
    assert isinstance(step, SaslFailure)
    assert step.condition == "malformed-request"


def _drive_to_end(server: SaslServer, step: SaslStep, rng: random.Random) -> SaslStep:
    """Keep answering with random data until the exchange ends."""
    for _ in range(4):
        if isinstance(step, SaslNeedCredentials):
            step = server.provide_credentials(account() if rng.random() < 0.5 else None)
        elif isinstance(step, SaslChallenge):
            step = server.respond(rng.randbytes(rng.randrange(64)))
        else:
            return step
    return step


def _mutate(data: bytes, rng: random.Random) -> bytes:
    buffer = bytearray(data)
    for _ in range(rng.randrange(1, 4)):
        choice = rng.randrange(3)
        position = rng.randrange(len(buffer) + 1)
        if choice == 0 and buffer:
            del buffer[min(position, len(buffer) - 1)]
        elif choice == 1:
            buffer.insert(position, rng.choice(b",=\x00\xffnyp=arcm2C3D"))
        elif buffer:
            buffer[min(position, len(buffer) - 1)] ^= 1 << rng.randrange(8)
    return bytes(buffer)


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-1", "SCRAM-SHA-256-PLUS", "PLAIN"])
def test_fuzz_random_bytes_always_end_in_failure(mechanism: str) -> None:
    rng = random.Random(f"sasl-fuzz-{mechanism}")
    for _ in range(40):
        server = tls_server()
        initial = rng.randbytes(rng.randrange(80)) if rng.random() < 0.9 else None
        step = _drive_to_end(server, server.start(mechanism, initial), rng)
        assert isinstance(step, SaslFailure)
        assert server.state is SaslState.FAILED


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-1-PLUS"])
def test_fuzz_mutated_messages_never_raise(mechanism: str) -> None:
    rng = random.Random(f"sasl-mutate-{mechanism}")
    hash_name = mechanism.removeprefix("SCRAM-").removesuffix("-PLUS")
    plus = mechanism.endswith("-PLUS")
    for _ in range(40):
        server = tls_server(nonce_factory=lambda: "srv")
        client = ScramClient(
            hash_name,
            gs2_header="p=tls-exporter,," if plus else "n,,",
            cb_data=CB_EXPORTER if plus else b"",
        )
        step = server.start(mechanism, _mutate(client.first(), rng))
        if isinstance(step, SaslNeedCredentials):
            step = server.provide_credentials(account())
        if isinstance(step, SaslChallenge):
            step = server.respond(_mutate(client.final(step.data), rng))
        assert isinstance(step, (SaslFailure, SaslSuccess))
        if isinstance(step, SaslSuccess):  # a mutation that kept the message valid
            assert client.verify(step.data)


def test_fuzz_mutated_final_never_succeeds() -> None:
    rng = random.Random("sasl-final")
    for _ in range(40):
        server = SaslServer(tls_active=False)
        client = ScramClient("SHA-256")
        server.start("SCRAM-SHA-256", client.first())
        step = server.provide_credentials(account())
        assert isinstance(step, SaslChallenge)
        final = client.final(step.data)
        mutated = _mutate(final, rng)
        result = server.respond(mutated)
        assert isinstance(result, SaslFailure) or mutated == final
