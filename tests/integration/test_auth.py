"""Authentication over the network: every SASL mechanism, failures, throttling, resource binding.

Real client libraries log in where they support the mechanism (slixmpp: SCRAM, and -PLUS with
tls-unique on TLS 1.2; aioxmpp/aiosasl: SCRAM, PLAIN, -PLUS with tls-server-end-point or
tls-unique); a raw client (`tests.support.clients.ScramClient`) checks the details the libraries
hide: the exact offer, the server signature, a forged channel binding, the failure element.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import aiosasl
import pytest
import trio
from lxml import etree

from tests.integration.conftest import PASSWORD, account_pool
from tests.support.clients import (
    BIND_NS,
    SASL_NS,
    AuthFailed,
    Clients,
    ScramClient,
    aioxmpp_client,
    bound_jid,
    channel_binding_types,
    mechanisms,
    raw_authenticated,
    raw_bind,
    raw_bind_request,
    raw_connect,
    raw_plain,
    raw_scram,
    raw_tls_stream,
    run,
    sasl_condition,
    slixmpp_client,
    tls_channel_binding,
)
from tests.support.peer import stanza_error
from tests.support.raw import assert_pong
from tests.support.server import ServerProcess, imactor_cli, running_server
from tests.support.timeouts import SLOW_TIMEOUT, TIMEOUT

SCRAM = ["SCRAM-SHA-256", "SCRAM-SHA-1"]
SCRAM_PLUS = ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS"]
ALL_MECHANISMS = [*SCRAM_PLUS, *SCRAM, "PLAIN"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The module's shared server; failures here must not trip the login throttle of other tests."""
    extra = "\n[limits]\nlogin_failures = 1000\n"
    with running_server(tmp_path_factory.mktemp("server"), registration=True, extra=extra) as process:
        yield process


@pytest.fixture(scope="module")
def pool(server: ServerProcess) -> Iterator[str]:
    """Fresh accounts (password `PASSWORD`), made with one CLI call for the whole module."""
    return account_pool(server, "auth", 80)


# ---- real client libraries ---------------------------------------------------------------------


@pytest.mark.parametrize("mechanism", [*SCRAM, "PLAIN"])
def test_slixmpp_login(clients: Clients, user: str, mechanism: str) -> None:
    alice = user

    async def scenario() -> None:
        async with clients.slixmpp(alice, "lib", mechanism=mechanism) as x:
            assert str(x.boundjid) == f"{alice}@localhost/lib"
            assert x.plugin["feature_mechanisms"].mech.name == mechanism

    run(scenario())


@pytest.mark.parametrize("mechanism", SCRAM_PLUS)
def test_slixmpp_scram_plus_tls_unique(clients: Clients, user: str, mechanism: str) -> None:
    """slixmpp binds with tls-unique, which exists on TLS 1.2 only (RFC 9266)."""
    alice = user

    async def scenario() -> None:
        async with clients.slixmpp(alice, "plus", mechanism=mechanism, tls_max_version="1.2") as x:
            assert x.socket.version() == "TLSv1.2"
            assert x.plugin["feature_mechanisms"].mech.name == mechanism
            assert str(x.boundjid) == f"{alice}@localhost/plus"

    run(scenario())


@pytest.mark.parametrize(
    ("mechanism", "tls_max_version", "channel_binding"),
    [
        *(pytest.param(m, None, "tls-server-end-point", id=m) for m in ALL_MECHANISMS),
        *(pytest.param(m, "1.2", "tls-unique", id=f"{m}-tls-unique") for m in SCRAM_PLUS),
    ],
)
def test_aioxmpp_login(
    server: ServerProcess,
    clients: Clients,
    user: str,
    mechanism: str,
    tls_max_version: str | None,
    channel_binding: str,
) -> None:
    """aiosasl; the -PLUS variants bind with tls-server-end-point, or with tls-unique on TLS 1.2 (TLS 1.3
    has no tls-unique)."""
    bob = user

    async def scenario() -> None:
        async with clients.aioxmpp(bob, "aio", mechanism=mechanism,
                                  tls_max_version=tls_max_version,
                                  channel_binding=channel_binding) as c:  # fmt: skip
            assert str(c.local_jid) == f"{bob}@localhost/aio"

    run(scenario())


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "PLAIN"])
def test_slixmpp_wrong_password(server: ServerProcess, user: str, mechanism: str) -> None:
    alice = user

    async def scenario() -> None:
        with pytest.raises(AuthFailed) as failure:
            async with slixmpp_client(f"{alice}@localhost", "wrong", server.c2s_port, mechanism=mechanism):
                pass
        assert failure.value.condition == "not-authorized"

    run(scenario())


def test_aioxmpp_wrong_password(server: ServerProcess, user: str) -> None:
    bob = user

    async def scenario() -> None:
        with pytest.raises(aiosasl.AuthenticationFailure) as failure:
            async with aioxmpp_client(
                f"{bob}@localhost", "wrong", server.c2s_port, mechanism="SCRAM-SHA-1-PLUS"
            ):
                pass
        assert failure.value.opaque_error == "not-authorized"

    run(scenario())


# ---- the offer ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tls_max_version", "version", "cb_types"),
    [
        # tls-unique is undefined on TLS 1.3; the stdlib has no tls-exporter.
        pytest.param(None, "TLSv1.3", ["tls-server-end-point"], id="tls13"),
        pytest.param("1.2", "TLSv1.2", ["tls-server-end-point", "tls-unique"], id="tls12"),
    ],
)
async def test_offer_under_tls(
    server: ServerProcess, tls_max_version: str | None, version: str, cb_types: list[str]
) -> None:
    with trio.fail_after(TIMEOUT):
        client, features = await raw_tls_stream(server.c2s_port, tls_max_version)
        assert client.stream.version() == version  # type: ignore[attr-defined]
        assert mechanisms(features) == ALL_MECHANISMS
        assert channel_binding_types(features) == cb_types
        await client.aclose()


async def test_no_plain_and_no_plus_without_tls(tmp_path: Path) -> None:
    """With STARTTLS optional, a cleartext stream offers SCRAM only: PLAIN would expose the password,
    and there is no channel to bind to."""
    options = "starttls_required = false\n"
    with (
        running_server(tmp_path, users=[("carol", PASSWORD)], c2s_options=options) as srv,
        trio.fail_after(TIMEOUT),
    ):
        client = await raw_connect(srv.c2s_port)
        features = await client.open_stream()
        starttls = features.find("{urn:ietf:params:xml:ns:xmpp-tls}starttls")
        assert starttls is not None
        assert starttls.find("{urn:ietf:params:xml:ns:xmpp-tls}required") is None
        assert mechanisms(features) == SCRAM
        assert channel_binding_types(features) is None
        # PLAIN is refused in cleartext, and says why.
        result = await raw_plain(client, "carol", PASSWORD)
        assert sasl_condition(result) == "encryption-required"
        # SCRAM works in cleartext: the password never crosses the wire.
        scram = ScramClient("SCRAM-SHA-256", "carol", PASSWORD)
        success, _ = await raw_scram(client, scram, "SCRAM-SHA-256")
        assert success.tag == f"{{{SASL_NS}}}success"
        assert scram.verify(base64.b64decode(success.text or ""))
        bound = await raw_bind(client, "clear")
        assert bound_jid(bound) == "carol@localhost/clear"
        await client.aclose()


# ---- raw SCRAM ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mechanism", "cb_type", "tls_max_version"),
    [
        ("SCRAM-SHA-256", None, None),
        ("SCRAM-SHA-1", None, None),
        ("SCRAM-SHA-256-PLUS", "tls-server-end-point", None),
        ("SCRAM-SHA-1-PLUS", "tls-server-end-point", None),
        ("SCRAM-SHA-256-PLUS", "tls-unique", "1.2"),
        ("SCRAM-SHA-1-PLUS", "tls-unique", "1.2"),
        ("SCRAM-SHA-256-PLUS", "tls-server-end-point", "1.2"),
    ],
)
async def test_raw_scram(
    server: ServerProcess, user: str, mechanism: str, cb_type: str | None,
    tls_max_version: str | None,
) -> None:  # fmt: skip
    alice = user
    with trio.fail_after(TIMEOUT):
        client, _ = await raw_tls_stream(server.c2s_port, tls_max_version)
        cb_data = b"" if cb_type is None else tls_channel_binding(client, cb_type)
        scram = ScramClient(mechanism, alice, PASSWORD, cb_type=cb_type, cb_data=cb_data)
        success, server_first = await raw_scram(client, scram, mechanism)
        assert success.tag == f"{{{SASL_NS}}}success", etree.tostring(success)
        assert server_first is not None
        assert b",i=4096" in server_first
        # Mutual authentication: the server proved it knows the verifier too.
        assert scram.verify(base64.b64decode(success.text or ""))
        bound = await raw_bind(client, "scram")
        assert bound_jid(bound) == f"{alice}@localhost/scram"
        await client.aclose()


@pytest.mark.parametrize("cb_type", ["tls-server-end-point", "tls-unique"])
async def test_forged_channel_binding_refused(server: ServerProcess, user: str, cb_type: str) -> None:
    """A man in the middle terminates TLS, so the binding the client sees differs from the server's."""
    alice = user
    with trio.fail_after(TIMEOUT):
        client, _ = await raw_tls_stream(server.c2s_port, "1.2")
        forged = bytes(b ^ 0xFF for b in tls_channel_binding(client, cb_type))
        scram = ScramClient("SCRAM-SHA-256-PLUS", alice, PASSWORD, cb_type=cb_type, cb_data=forged)
        failure, server_first = await raw_scram(client, scram, "SCRAM-SHA-256-PLUS")
        assert server_first is not None
        assert sasl_condition(failure) == "not-authorized"
        await client.aclose()


async def test_tls_unique_refused_on_tls13(server: ServerProcess, user: str) -> None:
    alice = user
    with trio.fail_after(TIMEOUT):
        client, _ = await raw_tls_stream(server.c2s_port)
        scram = ScramClient("SCRAM-SHA-256-PLUS", alice, PASSWORD, cb_type="tls-unique", cb_data=b"x" * 12)
        failure, server_first = await raw_scram(client, scram, "SCRAM-SHA-256-PLUS")
        assert server_first is None
        assert sasl_condition(failure) == "not-authorized"
        await client.aclose()


async def test_binding_downgrade_detected(server: ServerProcess, user: str) -> None:
    """gs2 flag "y": the client could bind but saw no -PLUS offer, so someone stripped it (RFC 5802 §6)."""
    alice = user
    with trio.fail_after(TIMEOUT):
        client, _ = await raw_tls_stream(server.c2s_port)
        scram = ScramClient("SCRAM-SHA-256", alice, PASSWORD, gs2_flag="y")
        failure, _ = await raw_scram(client, scram, "SCRAM-SHA-256")
        assert sasl_condition(failure) == "not-authorized"
        await client.aclose()


# ---- failures ----------------------------------------------------------------------------------


@pytest.mark.parametrize("mechanism", [*SCRAM, "PLAIN"])
async def test_wrong_password_and_unknown_user_look_alike(
    server: ServerProcess, user: str, mechanism: str
) -> None:
    alice = user
    with trio.fail_after(TIMEOUT):
        client, _ = await raw_tls_stream(server.c2s_port)
        answers = []
        firsts = []
        # Failed exchanges may be retried on the same stream (RFC 6120 §6.4.5).
        for username, password in [(alice, "wrong"), ("nobody-here", PASSWORD), ("nobody-here", "other")]:
            if mechanism == "PLAIN":
                failure = await raw_plain(client, username, password)
            else:
                scram = ScramClient(mechanism, username, password)
                failure, server_first = await raw_scram(client, scram, mechanism)
                assert server_first is not None
                fields = dict(item.split(b"=", 1) for item in server_first.split(b","))
                firsts.append((fields[b"s"], fields[b"i"]))
            answers.append(etree.tostring(failure))
            assert sasl_condition(failure) == "not-authorized"
        assert answers[0] == answers[1] == answers[2]
        if firsts:
            # An unknown user gets the real iteration count and the same made-up salt every time.
            assert firsts[0][1] == firsts[1][1] == b"4096"
            assert firsts[1][0] == firsts[2][0]
            assert firsts[0][0] != firsts[1][0]
        # And the stream still accepts the right password afterwards.
        result = await raw_plain(client, alice, PASSWORD)
        assert result.tag == f"{{{SASL_NS}}}success"
        await client.aclose()


async def test_too_many_failed_attempts_end_the_stream(server: ServerProcess, user: str) -> None:
    """RFC 6120 §6.4.5: a client may retry `[auth] sasl_retries` times (3 by default) on one stream.
    The failure after that is still reported with <failure/> (its cause), then the stream ends
    with <policy-violation/>. Only that stream: a new one logs in."""
    with trio.fail_after(TIMEOUT):
        client, _ = await raw_tls_stream(server.c2s_port)
        for _ in range(3):
            assert sasl_condition(await raw_plain(client, user, "wrong")) == "not-authorized"
        assert sasl_condition(await raw_plain(client, user, "wrong")) == "not-authorized"
        assert await client.stream_error() == "policy-violation"
        await client.wait_closed()
        assert client.closed
        client = await raw_authenticated(server.c2s_port, user, PASSWORD)
        await client.aclose()


async def test_unknown_mechanism(server: ServerProcess) -> None:
    with trio.fail_after(TIMEOUT):
        client, _ = await raw_tls_stream(server.c2s_port)
        await client.send(f"<auth xmlns='{SASL_NS}' mechanism='DIGEST-MD5'/>")
        assert sasl_condition(await client.next_element()) == "invalid-mechanism"
        await client.aclose()


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-1", "PLAIN"])
async def test_auth_without_initial_response(server: ServerProcess, user: str, mechanism: str) -> None:
    """RFC 6120 §6.4.2: no initial response in <auth/>; the server asks with an empty challenge."""
    with trio.fail_after(TIMEOUT):
        client, _ = await raw_tls_stream(server.c2s_port)
        await client.send(f"<auth xmlns='{SASL_NS}' mechanism='{mechanism}'/>")
        empty = await client.next_element()
        assert empty.tag == f"{{{SASL_NS}}}challenge", etree.tostring(empty)
        assert (empty.text or "").strip() in ("", "=")
        if mechanism == "PLAIN":
            message = f"\0{user}\0{PASSWORD}".encode()
        else:
            scram = ScramClient(mechanism, user, PASSWORD)
            message = scram.client_first()
        await client.send(f"<response xmlns='{SASL_NS}'>{base64.b64encode(message).decode()}</response>")
        reply = await client.next_element()
        if mechanism != "PLAIN":
            assert reply.tag == f"{{{SASL_NS}}}challenge", etree.tostring(reply)
            final = scram.client_final(base64.b64decode(reply.text or ""))
            await client.send(f"<response xmlns='{SASL_NS}'>{base64.b64encode(final).decode()}</response>")
            reply = await client.next_element()
            assert scram.verify(base64.b64decode(reply.text or ""))
        assert reply.tag == f"{{{SASL_NS}}}success", etree.tostring(reply)
        bound = await raw_bind(client, "late")
        assert bound_jid(bound) == f"{user}@localhost/late"
        await client.aclose()


async def test_abort(server: ServerProcess, user: str) -> None:
    with trio.fail_after(TIMEOUT):
        client, _ = await raw_tls_stream(server.c2s_port)
        scram = ScramClient("SCRAM-SHA-256", user, PASSWORD)
        first = base64.b64encode(scram.client_first()).decode()
        await client.send(f"<auth xmlns='{SASL_NS}' mechanism='SCRAM-SHA-256'>{first}</auth>")
        assert (await client.next_element()).tag == f"{{{SASL_NS}}}challenge"
        await client.send(f"<abort xmlns='{SASL_NS}'/>")
        assert sasl_condition(await client.next_element()) == "aborted"
        # A new exchange may follow on the same stream.
        assert (await raw_plain(client, user, PASSWORD)).tag == f"{{{SASL_NS}}}success"
        await client.aclose()


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256"])
async def test_authzid(server: ServerProcess, pool: Iterator[str], mechanism: str) -> None:
    """Acting as oneself (bare JID as authzid) is fine; acting as another account is not."""
    alice, bob = next(pool), next(pool)
    with trio.fail_after(TIMEOUT):
        for authzid, expected in [(f"{alice}@localhost", "success"), (f"{bob}@localhost", "invalid-authzid")]:
            client, _ = await raw_tls_stream(server.c2s_port)
            if mechanism == "PLAIN":
                token = base64.b64encode(f"{authzid}\0{alice}\0{PASSWORD}".encode()).decode()
                await client.send(f"<auth xmlns='{SASL_NS}' mechanism='PLAIN'>{token}</auth>")
                result = await client.next_element()
            else:
                scram = ScramClient(mechanism, alice, PASSWORD, gs2_flag="n", authzid=authzid)
                result, _ = await raw_scram(client, scram, mechanism)
            if expected == "success":
                assert result.tag == f"{{{SASL_NS}}}success", etree.tostring(result)
                bound = await raw_bind(client, "az")
                assert bound_jid(bound) == f"{alice}@localhost/az"
            else:
                assert sasl_condition(result) == expected
            await client.aclose()


# ---- throttling --------------------------------------------------------------------------------

THROTTLED = "\n[limits]\nlogin_failures = 3\nlogin_failure_window = 600.0\n"


@pytest.fixture
def throttled_server(tmp_path: Path) -> Iterator[ServerProcess]:
    users = [("alice", PASSWORD), ("bob", PASSWORD)] + [(f"fresh{i}", PASSWORD) for i in range(40)]
    with running_server(tmp_path, users=users, extra=THROTTLED) as process:
        yield process


async def _plain_login(server: ServerProcess, username: str, password: str) -> etree._Element:
    client, _ = await raw_tls_stream(server.c2s_port)
    try:
        return await raw_plain(client, username, password)
    finally:
        await client.aclose()


async def test_failed_login_throttle(throttled_server: ServerProcess) -> None:
    srv = throttled_server
    with trio.fail_after(SLOW_TIMEOUT):
        # Per account: three failures block alice, even with the right password and another mechanism.
        client, _ = await raw_tls_stream(srv.c2s_port)
        # Failures of any mechanism count.
        assert sasl_condition(await raw_plain(client, "alice", "wrong")) == "not-authorized"
        for mechanism in SCRAM:
            failure, _ = await raw_scram(client, ScramClient(mechanism, "alice", "wrong"), mechanism)
            assert sasl_condition(failure) == "not-authorized"
        assert sasl_condition(await raw_plain(client, "alice", PASSWORD)) == "temporary-auth-failure"
        await client.aclose()
        assert sasl_condition(await _plain_login(srv, "alice", PASSWORD)) == "temporary-auth-failure"
        client, _ = await raw_tls_stream(srv.c2s_port)
        scram = ScramClient("SCRAM-SHA-256", "alice", PASSWORD)
        failure, server_first = await raw_scram(client, scram, "SCRAM-SHA-256")
        assert server_first is None
        assert sasl_condition(failure) == "temporary-auth-failure"
        await client.aclose()
        # Only alice: bob, from the same address, still logs in.
        assert (await _plain_login(srv, "bob", PASSWORD)).tag == f"{{{SASL_NS}}}success"

        # Per address: failures spread over many names block every account from this address.
        failures = 3
        for index in range(40):
            assert sasl_condition(await _plain_login(srv, f"ghost{index}", "wrong")) == "not-authorized"
            failures += 1
            answer = await _plain_login(srv, f"fresh{index}", PASSWORD)
            if answer.tag != f"{{{SASL_NS}}}success":
                assert sasl_condition(answer) == "temporary-auth-failure"
                break
        else:
            pytest.fail("the address was never throttled")
        # The address allows more failures than one account does (many users behind one NAT).
        assert failures > 3


# ---- resource binding --------------------------------------------------------------------------


async def test_bind_client_chosen_resource(server: ServerProcess, user: str) -> None:
    alice = user
    with trio.fail_after(TIMEOUT):
        client = await raw_authenticated(server.c2s_port, alice, PASSWORD)
        bound = await raw_bind(client, "Laptöp Home")
        assert bound.get("type") == "result"
        assert bound_jid(bound) == f"{alice}@localhost/Laptöp Home"
        await assert_pong(client)
        await client.aclose()


@pytest.mark.parametrize("request_body", ["", "<resource/>"])
async def test_bind_server_chosen_resource(server: ServerProcess, user: str, request_body: str) -> None:
    alice = user
    with trio.fail_after(TIMEOUT):
        first = await raw_authenticated(server.c2s_port, alice, PASSWORD)
        second = await raw_authenticated(server.c2s_port, alice, PASSWORD)
        jids = []
        for client in (first, second):
            await client.open_stream()
            await client.send(f"<iq type='set' id='b'><bind xmlns='{BIND_NS}'>{request_body}</bind></iq>")
            bound = await client.next_element(lambda e: e.get("id") == "b")
            jid = bound_jid(bound) or ""
            bare, _, resource = jid.partition("/")
            assert bare == f"{alice}@localhost", etree.tostring(bound)
            assert resource
            jids.append(jid)
        assert jids[0] != jids[1]  # each session gets its own resource
        await first.aclose()
        await second.aclose()


async def test_bind_conflict_kicks_old_session(server: ServerProcess, user: str) -> None:
    alice = user
    with trio.fail_after(TIMEOUT):
        old = await raw_authenticated(server.c2s_port, alice, PASSWORD)
        assert (await raw_bind(old, "desk")).get("type") == "result"
        new = await raw_authenticated(server.c2s_port, alice, PASSWORD)
        bound = await raw_bind(new, "desk")
        assert bound_jid(bound) == f"{alice}@localhost/desk"
        assert await old.stream_error() == "conflict"
        await old.wait_closed()
        assert old.closed
        await assert_pong(new)
        await new.aclose()


async def test_legacy_session_iq(server: ServerProcess, user: str) -> None:
    alice = user
    with trio.fail_after(TIMEOUT):
        client = await raw_authenticated(server.c2s_port, alice, PASSWORD)
        features = await client.open_stream()
        # RFC 6121 Appendix E: offered, and optional.
        session = "{urn:ietf:params:xml:ns:xmpp-session}"
        assert features.find(f"{session}session/{session}optional") is not None
        assert (await raw_bind_request(client, "old-client", "b")).get("type") == "result"
        await client.send(
            "<iq type='set' id='sess'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>"
        )
        reply = await client.next_element(lambda e: e.get("id") == "sess")
        assert reply.tag == "{jabber:client}iq"
        assert reply.get("type") == "result", etree.tostring(reply)
        await client.aclose()


@pytest.mark.parametrize("resource", ["tab&#9;here", "x" * 1024])
async def test_bind_invalid_resource(server: ServerProcess, user: str, resource: str) -> None:
    """A control character (PRECIS OpaqueString) or over 1023 octets: bad-request; binding may be retried."""
    alice = user
    with trio.fail_after(TIMEOUT):
        client = await raw_authenticated(server.c2s_port, alice, PASSWORD)
        refused = await raw_bind(client, resource)
        assert stanza_error(refused) == ("modify", "bad-request")
        bound = await raw_bind_request(client, "fine", "again")
        assert bound_jid(bound) == f"{alice}@localhost/fine"
        await client.aclose()


async def test_bind_conflict_refuse(tmp_path: Path) -> None:
    extra = '\n[resources]\nconflict = "refuse"\n'
    with running_server(tmp_path, users=[("dave", PASSWORD)], extra=extra) as srv, trio.fail_after(TIMEOUT):
        first = await raw_authenticated(srv.c2s_port, "dave", PASSWORD)
        assert (await raw_bind(first, "desk")).get("type") == "result"
        second = await raw_authenticated(srv.c2s_port, "dave", PASSWORD)
        refused = await raw_bind(second, "desk")
        assert stanza_error(refused) == ("cancel", "conflict")
        # The first session is untouched, and the second may bind another resource.
        await assert_pong(first)
        bound = await raw_bind_request(second, "couch", "b2")
        assert bound_jid(bound) == "dave@localhost/couch"
        await first.aclose()
        await second.aclose()


async def test_bind_conflict_random(tmp_path: Path) -> None:
    extra = '\n[resources]\nconflict = "random"\n'
    with running_server(tmp_path, users=[("erin", PASSWORD)], extra=extra) as srv, trio.fail_after(TIMEOUT):
        first = await raw_authenticated(srv.c2s_port, "erin", PASSWORD)
        assert (await raw_bind(first, "desk")).get("type") == "result"
        second = await raw_authenticated(srv.c2s_port, "erin", PASSWORD)
        bound = await raw_bind(second, "desk")
        jid = bound_jid(bound) or ""
        assert jid.startswith("erin@localhost/"), etree.tostring(bound)
        assert jid != "erin@localhost/desk"
        # Both sessions live on.
        await assert_pong(first)
        await assert_pong(second)
        await first.aclose()
        await second.aclose()


async def test_stanza_before_bind_refused(server: ServerProcess, user: str) -> None:
    alice = user
    with trio.fail_after(TIMEOUT):
        client = await raw_authenticated(server.c2s_port, alice, PASSWORD)
        await client.open_stream()
        await client.send("<message to='localhost'><body>early</body></message>")
        assert await client.stream_error() == "not-authorized"
        await client.aclose()


# ---- accounts in bulk --------------------------------------------------------------------------


async def test_bulk_user_add_then_login(server: ServerProcess, tmp_path: Path) -> None:
    listing = tmp_path / "bulk.txt"
    listing.write_text("".join(f"bulk{i}:secret-{i}\n" for i in range(2000)))
    result = await trio.to_thread.run_sync(
        lambda: imactor_cli(server.config_path, "user", "add", "--file", str(listing))
    )
    assert result.returncode == 0, result.stderr
    assert "2000" in result.stdout
    with trio.fail_after(TIMEOUT):
        client, _ = await raw_tls_stream(server.c2s_port)
        scram = ScramClient("SCRAM-SHA-256", "bulk1234", "secret-1234")
        success, _ = await raw_scram(client, scram, "SCRAM-SHA-256")
        assert success.tag == f"{{{SASL_NS}}}success"
        bound = await raw_bind(client, "bulk")
        assert bound_jid(bound) == "bulk1234@localhost/bulk"
        await client.aclose()
