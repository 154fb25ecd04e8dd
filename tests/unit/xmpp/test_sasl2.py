"""XEP-0388 SASL2, XEP-0386 Bind 2 and XEP-0484 FAST in the sans-IO stream and their modules.

The stream is driven with the byte-level client of `test_stream`; the HT mechanism is checked
against its definition in draft-schmaus-kitten-sasl-ht (which gives no test vectors: the
expected values are computed here from RFC 2104 HMAC directly, independently of the module).
"""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from lxml import etree

from imactor.xmpp import events as ev
from imactor.xmpp import fast, sasl2
from imactor.xmpp.errors import LocalProtocolError
from imactor.xmpp.jid import JID
from imactor.xmpp.namespaces import (
    NS_BIND,
    NS_BIND2,
    NS_CARBONS,
    NS_CSI,
    NS_FAST,
    NS_SASL,
    NS_SASL2,
    NS_SM,
    NS_STREAMS,
    qname,
)  # fmt: skip
from imactor.xmpp.sasl import SaslFailure, SaslSuccess
from imactor.xmpp.stream import State, StreamConfig
from tests.unit.xmpp.test_stream import (
    CB_EXPORTER,
    CREDENTIALS,
    DOMAIN,
    JULIET,
    Client,
    ScramClient,
    at_sasl,
    b64,
    children,
    opened,
    plain,
    tags,
)

SASL2_CONFIG = StreamConfig(domain=DOMAIN, sasl2=True, fast=True, bind2_features=sasl2.BIND2_FEATURES)
AGENT = "<user-agent id='d4565fa7-4d72-4749-b3d3-740edbf87770'><software>AwesomeXMPP</software></user-agent>"
SUCCESS = qname(NS_SASL2, "success")
FAILURE = qname(NS_SASL2, "failure")
FEATURES = qname(NS_STREAMS, "features")


def authenticate(mechanism: str, payload: bytes | None = None, inner: str = "") -> bytes:
    initial = "" if payload is None else f"<initial-response>{b64(payload)}</initial-response>"
    return (
        f"<authenticate xmlns='{NS_SASL2}' mechanism='{mechanism}'>{initial}{inner}</authenticate>".encode()
    )


def sasl2_failure(element: etree._Element) -> tuple[str, str | None]:
    assert element.tag == FAILURE
    conditions = [child for child in element if etree.QName(child).namespace == NS_SASL]
    assert len(conditions) == 1
    return etree.QName(conditions[0]).localname, element.findtext(qname(NS_SASL2, "text"))


# ---- features --------------------------------------------------------------------------------


def test_sasl2_is_offered_beside_sasl_only_after_tls() -> None:
    client = opened(SASL2_CONFIG)
    before = client.stream.data_to_send()
    assert before == b""  # read by opened()
    assert client.out.elements[-1].find(qname(NS_SASL2, "authentication")) is None
    features = client.start_tls({"tls-exporter": CB_EXPORTER})
    legacy = [
        m.text for m in features.iterfind(f"{qname(NS_SASL, 'mechanisms')}/{qname(NS_SASL, 'mechanism')}")
    ]
    authentication = features.find(qname(NS_SASL2, "authentication"))
    assert authentication is not None
    assert [m.text for m in authentication.iterfind(qname(NS_SASL2, "mechanism"))] == legacy
    inline = authentication.find(qname(NS_SASL2, "inline"))
    assert inline is not None
    assert children(inline) == [qname(NS_BIND2, "bind"), qname(NS_SM, "sm"), qname(NS_FAST, "fast")]
    bind_features = inline.find(f"{qname(NS_BIND2, 'bind')}/{qname(NS_BIND2, 'inline')}")
    assert bind_features is not None
    assert [f.get("var") for f in bind_features] == [NS_CARBONS, NS_CSI, NS_SM]
    fast_el = inline.find(qname(NS_FAST, "fast"))
    assert fast_el is not None
    # tls-exporter is here; tls-server-end-point and tls-unique are not: their HT variants neither.
    assert [m.text for m in fast_el] == ["HT-SHA-256-EXPR", "HT-SHA-256-NONE"]


def test_where_tls_is_optional_sasl2_goes_with_sasl_but_fast_waits_for_tls() -> None:
    config = StreamConfig(domain=DOMAIN, tls_required=False, sasl2=True, fast=True,
                          bind2_features=sasl2.BIND2_FEATURES)  # fmt: skip
    features = opened(config).out.elements[-1]
    assert features.find(qname(NS_SASL, "mechanisms")) is not None  # RFC 6120 SASL before TLS here
    authentication = features.find(qname(NS_SASL2, "authentication"))
    assert authentication is not None
    assert authentication.find(f"{qname(NS_SASL2, 'inline')}/{qname(NS_FAST, 'fast')}") is None
    client = opened(config)
    events = client.send(authenticate("HT-SHA-256-NONE", b"juliet\x00" + b"x" * 32, AGENT))
    assert events == [ev.AuthFailed(None, "invalid-mechanism")]


def test_sasl2_is_not_offered_unless_configured() -> None:
    features = at_sasl().out.elements[-1]
    assert features.find(qname(NS_SASL2, "authentication")) is None


def test_authenticate_before_tls_is_a_policy_violation() -> None:
    client = opened(SASL2_CONFIG)
    assert client.send(authenticate("PLAIN", b"\x00juliet\x00pencil")) == [
        ev.StreamClosed("policy-violation")
    ]


# ---- authentication ----------------------------------------------------------------------------


def sasl2_at_sasl(bindings: dict[str, bytes] | None = None) -> Client:
    return at_sasl(SASL2_CONFIG, bindings)


def test_scram_in_sasl2_challenge_response_and_success_without_restart() -> None:
    client = sasl2_at_sasl()
    scram = ScramClient("SHA-256")
    assert client.send(authenticate("SCRAM-SHA-256", scram.first(), AGENT)) == [
        ev.CredentialsNeeded("juliet")
    ]
    client.stream.provide_credentials(CREDENTIALS)
    (challenge,) = client.read()
    assert challenge.tag == qname(NS_SASL2, "challenge")
    final = scram.final(base64.b64decode(challenge.text or ""))
    events = client.send(f"<response xmlns='{NS_SASL2}'>{b64(final)}</response>".encode())
    assert len(events) == 1
    done = events[0]
    assert isinstance(done, ev.Sasl2Authenticated)
    assert done.username == "juliet"
    assert done.additional_data == b"v=" + base64.b64encode(scram.server_signature)
    assert done.request.user_agent == sasl2.UserAgent(
        "d4565fa7-4d72-4749-b3d3-740edbf87770", "AwesomeXMPP", ""
    )
    assert client.read() == []  # nothing until the shell answers
    bare = JID.parse("juliet@example.com")
    client.stream.sasl2_succeeded(bare, done.additional_data)
    success, features = client.read()
    assert success.tag == SUCCESS
    assert success.findtext(qname(NS_SASL2, "authorization-identifier")) == "juliet@example.com"
    assert (
        base64.b64decode(success.findtext(qname(NS_SASL2, "additional-data")) or "") == done.additional_data
    )
    # No restart: the same stream, now offering (RFC 6120) binding.
    assert len(client.out.headers) == 2
    assert features.tag == FEATURES
    assert features.find(qname(NS_BIND, "bind")) is not None
    assert client.stream.state is State.WAIT_FOR_BIND


def test_bind2_success_establishes_the_stream_with_bound_features() -> None:
    client = sasl2_at_sasl()
    bind = f"<bind xmlns='{NS_BIND2}'><tag>AwesomeXMPP</tag><enable xmlns='{NS_CARBONS}'/></bind>"
    (done,) = client.send(authenticate("PLAIN", b"\x00juliet\x00pencil", bind))
    assert done == ev.CredentialsNeeded("juliet")
    client.stream.provide_credentials(CREDENTIALS)
    (done,) = client.events()
    assert isinstance(done, ev.Sasl2Authenticated)
    assert done.request.bind == sasl2.BindRequest("AwesomeXMPP", carbons=True)
    full = JID.parse("juliet@example.com/AwesomeXMPP/x1")
    client.stream.sasl2_succeeded(full, None, (sasl2.bound(()),), bound=True)
    success, features = client.read()
    assert success.findtext(qname(NS_SASL2, "authorization-identifier")) == str(full)
    assert success.find(qname(NS_BIND2, "bound")) is not None
    assert features.find(qname(NS_BIND, "bind")) is None  # bound already
    assert client.stream.state is State.ESTABLISHED
    assert client.stream.jid == full


def test_wrong_password_is_a_sasl2_failure_and_counts_towards_the_retries() -> None:
    client = sasl2_at_sasl()
    for _ in range(SASL2_CONFIG.sasl_retries + 1):
        assert client.send(authenticate("PLAIN", b"\x00juliet\x00wrong")) == [ev.CredentialsNeeded("juliet")]
        client.stream.provide_credentials(CREDENTIALS)
        events = client.events()
        assert events[0] == ev.AuthFailed("juliet", "not-authorized")
        failure = client.read()[0]
        assert sasl2_failure(failure) == ("not-authorized", None)
    assert events[-1] == ev.StreamClosed("policy-violation")


@pytest.mark.parametrize(
    ("inner", "condition", "text"),
    [
        ("<bogus xmlns='urn:example:x'/>", "malformed-request",
         "unsupported inline request {urn:example:x}bogus"),
        (f"<bind xmlns='{NS_BIND2}'><enable xmlns='urn:example:feature'/></bind>", "malformed-request",
         "unsupported Bind 2 inline feature {urn:example:feature}enable"),
        (f"<request-token xmlns='{NS_FAST}' mechanism='HT-SHA-256-NONE'/>", "malformed-request",
         "FAST needs a <user-agent id=''/>"),
        (f"{AGENT}<request-token xmlns='{NS_FAST}' mechanism='HT-SHA-512-NONE'/>", "invalid-mechanism",
         "no FAST mechanism 'HT-SHA-512-NONE' is offered"),
        (f"<fast xmlns='{NS_FAST}' count='1'/>{AGENT}", "malformed-request",
         "<fast/> goes with a FAST mechanism"),
        (f"<bind xmlns='{NS_BIND2}'><tag>a/b</tag></bind>", "malformed-request", None),
    ],
)  # fmt: skip
def test_unknown_or_bad_inline_requests_fail_before_the_mechanism_runs(
    inner: str, condition: str, text: str | None
) -> None:
    client = sasl2_at_sasl()
    events = client.send(authenticate("PLAIN", b"\x00juliet\x00pencil", inner))
    # No credentials were looked up: the mechanism never ran.
    assert events == [ev.AuthFailed(None, condition)]
    got = sasl2_failure(client.read()[0])
    assert got[0] == condition
    if text is not None:
        assert got[1] == text
    # The stream goes on: a correct attempt logs in.
    assert client.send(authenticate("PLAIN", b"\x00juliet\x00pencil")) == [ev.CredentialsNeeded("juliet")]


def test_an_upgrade_that_was_not_offered_fails() -> None:
    client = sasl2_at_sasl()
    client.send(f"<authenticate xmlns='{NS_SASL2}' mechanism='PLAIN' upgrade='SCRAM-SHA-256'/>".encode())
    assert sasl2_failure(client.read()[0]) == ("invalid-mechanism", "no upgrade task is offered")


def test_incorrect_base64_is_incorrect_encoding() -> None:
    client = sasl2_at_sasl()
    client.send(f"<authenticate xmlns='{NS_SASL2}' mechanism='PLAIN'><initial-response>!!</initial-response>"
                "</authenticate>".encode())  # fmt: skip
    assert sasl2_failure(client.read()[0])[0] == "incorrect-encoding"


def test_legacy_response_inside_a_sasl2_exchange_is_a_stream_error() -> None:
    client = sasl2_at_sasl()
    client.send(authenticate("SCRAM-SHA-256", None))
    assert client.read()[0].tag == qname(NS_SASL2, "challenge")
    assert client.send(f"<response xmlns='{NS_SASL}'>=</response>".encode()) == [
        ev.StreamClosed("policy-violation")
    ]


def test_sasl2_abort() -> None:
    client = sasl2_at_sasl()
    client.send(authenticate("SCRAM-SHA-256", None))
    client.read()
    assert client.send(f"<abort xmlns='{NS_SASL2}'/>".encode()) == [ev.AuthFailed(None, "aborted")]
    assert sasl2_failure(client.read()[0])[0] == "aborted"


@pytest.mark.parametrize("bound", [False, True])
def test_a_second_authenticate_after_success_is_a_policy_violation(bound: bool) -> None:
    client = sasl2_at_sasl()
    client.send(authenticate("PLAIN", b"\x00juliet\x00pencil"))
    client.stream.provide_credentials(CREDENTIALS)
    client.events()
    client.stream.sasl2_succeeded(JULIET if bound else JULIET.bare, None, bound=bound)
    client.read()
    closed = client.send(authenticate("PLAIN", b"\x00juliet\x00pencil"))
    assert closed == [ev.StreamClosed("policy-violation")]


def test_legacy_auth_still_works_with_sasl2_offered() -> None:
    client = sasl2_at_sasl()
    assert client.send(plain()) == [ev.CredentialsNeeded("juliet")]
    client.stream.provide_credentials(CREDENTIALS)
    assert client.events() == [ev.Authenticated("juliet")]
    assert tags(client.read()) == [qname(NS_SASL, "success")]


def test_sasl2_succeeded_without_an_authentication_is_a_local_error() -> None:
    client = sasl2_at_sasl()
    with pytest.raises(LocalProtocolError):
        client.stream.sasl2_succeeded(JULIET, None)


# ---- FAST in the stream ------------------------------------------------------------------------


def ht_initial(token: str, cb: bytes = b"", authcid: str = "juliet") -> bytes:
    proof = hmac.new(token.encode(), b"Initiator" + cb, hashlib.sha256).digest()
    return authcid.encode() + b"\x00" + proof


def test_fast_login_asks_the_shell_for_the_token_and_answers_with_the_responder() -> None:
    client = sasl2_at_sasl({"tls-exporter": CB_EXPORTER})
    token = "t" * 100
    inner = f"{AGENT}<fast xmlns='{NS_FAST}' count='7'/>"
    (needed,) = client.send(authenticate("HT-SHA-256-EXPR", ht_initial(token, CB_EXPORTER), inner))
    assert isinstance(needed, ev.TokenNeeded)
    assert needed.username == "juliet"
    assert needed.cb_data == CB_EXPORTER
    assert needed.request.fast == sasl2.FastUse(7, False)
    key = fast.token_key(token)
    assert hmac.compare_digest(fast.initiator_proof(key, needed.cb_data), needed.proof)
    responder = fast.responder_message(key, CB_EXPORTER)
    client.stream.token_checked(SaslSuccess("juliet", None, responder))
    (done,) = client.events()
    assert isinstance(done, ev.Sasl2Authenticated)
    assert done.additional_data == responder


def test_a_refused_token_is_a_sasl2_failure() -> None:
    client = sasl2_at_sasl()
    client.send(authenticate("HT-SHA-256-NONE", ht_initial("x" * 100), AGENT))
    client.stream.token_checked(SaslFailure("credentials-expired", "the token has expired"))
    assert client.events() == [ev.AuthFailed("juliet", "credentials-expired")]
    assert sasl2_failure(client.read()[0]) == ("credentials-expired", "the token has expired")


@pytest.mark.parametrize("payload", [None, b"juliet", b"\x00proof", b"juliet\x00", b"\xff\xfe\x00proof"])
def test_a_malformed_ht_message_fails_without_asking_the_shell(payload: bytes | None) -> None:
    client = sasl2_at_sasl()
    events = client.send(authenticate("HT-SHA-256-NONE", payload, AGENT))
    assert events == [ev.AuthFailed(None, "malformed-request")]


# ---- HT and the token slots, pure --------------------------------------------------------------


def reference_hmac(token: str, label: bytes, cb: bytes) -> bytes:
    return hmac.new(token.encode("utf-8"), label + cb, hashlib.sha256).digest()


def test_the_stored_hash_keys_the_hmac_exactly_as_the_token() -> None:
    # RFC 2104 §2: a key longer than the block is hashed first; the server relies on it.
    token, key = fast.new_token(bytes(range(64)))
    assert len(token.encode()) > 64
    assert key == hashlib.sha256(token.encode()).digest()
    for cb in (b"", CB_EXPORTER):
        assert fast.initiator_proof(key, cb) == reference_hmac(token, b"Initiator", cb)
        assert fast.responder_message(key, cb) == reference_hmac(token, b"Responder", cb)


def test_a_short_token_cannot_be_stored_hashed() -> None:
    with pytest.raises(ValueError, match="longer than 64"):
        fast.token_key("short")


def stored(slot: str, token: str, *, mechanism: str = "HT-SHA-256-NONE", expires: float = 1000.0,
           count: int = -1) -> fast.StoredToken:  # fmt: skip
    return fast.StoredToken(slot, fast.token_key(token), mechanism, expires, count)


OLD, NEW = "o" * 100, "n" * 100


def attempt(tokens: list[fast.StoredToken], token: str, *, count: int | None = None,
            mechanism: str = "HT-SHA-256-NONE", now: float = 10.0) -> fast.Accepted:  # fmt: skip
    proof = reference_hmac(token, b"Initiator", b"")
    return fast.check(tokens, mechanism=mechanism, proof=proof, cb_data=b"", count=count, now=now)


def test_check_accepts_either_slot_and_says_which() -> None:
    tokens = [stored(fast.CURRENT, OLD), stored(fast.NEW, NEW)]
    assert attempt(tokens, NEW).slot == fast.NEW
    assert attempt(tokens, OLD).slot == fast.CURRENT
    assert attempt(tokens, OLD).responder == reference_hmac(OLD, b"Responder", b"")


@pytest.mark.parametrize(
    ("tokens", "kwargs", "condition"),
    [
        ([], {}, "not-authorized"),  # no token for this client (or another account's token)
        (
            [stored(fast.NEW, NEW)],
            {"mechanism": "HT-SHA-256-ENDP"},
            "not-authorized",
        ),  # bound to its mechanism
        ([stored(fast.NEW, NEW, expires=5.0)], {}, "credentials-expired"),
        ([stored(fast.NEW, NEW, count=7)], {"count": 7}, "not-authorized"),  # replay
        ([stored(fast.NEW, NEW, count=7)], {"count": 3}, "not-authorized"),
    ],
)
def test_check_refusals(tokens: list[fast.StoredToken], kwargs: dict[str, object], condition: str) -> None:
    with pytest.raises(fast.FastError) as caught:
        attempt(tokens, NEW, **kwargs)  # type: ignore[arg-type]
    assert caught.value.condition == condition


def test_a_higher_count_is_accepted() -> None:
    assert attempt([stored(fast.NEW, NEW, count=7)], NEW, count=8).slot == fast.NEW


def test_rotation_is_due_past_half_the_lifetime() -> None:
    token = stored(fast.CURRENT, OLD, expires=100.0)
    assert not fast.due_for_rotation(token, lifetime=100.0, now=40.0)
    assert fast.due_for_rotation(token, lifetime=100.0, now=60.0)


@pytest.mark.parametrize("raw", ["-1", "1.5", "x", "1" * 19])
def test_bad_counts_are_malformed(raw: str) -> None:
    with pytest.raises(fast.FastError):
        fast.parse_count(raw)


def test_offered_mechanisms_follow_the_channel_bindings() -> None:
    assert fast.offered({}) == ["HT-SHA-256-NONE"]
    assert fast.offered({"tls-server-end-point": b"x", "tls-exporter": b"y"}) == [
        "HT-SHA-256-EXPR", "HT-SHA-256-ENDP", "HT-SHA-256-NONE",
    ]  # fmt: skip


def test_bind2_resource_is_tag_slash_server_part() -> None:
    assert sasl2.resource("AwesomeXMPP", "rQ7Lwut0") == "AwesomeXMPP/rQ7Lwut0"
    assert sasl2.resource(None, "rQ7Lwut0") == "rQ7Lwut0"
