"""XEP-0388 SASL2, XEP-0386 Bind 2, XEP-0198 inline and XEP-0484 FAST against the real server.

Raw XML following the XEPs' examples, over STARTTLS: no client library in the venv speaks SASL2
(slixmpp 1.17 and aioxmpp 0.13 have neither SASL2 nor FAST), so the client side is written here,
independently of the server's code (SCRAM in tests/support/clients.py, HT from RFC 2104 HMAC).
slixmpp is the other party of the chat. One server for the module.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from lxml import etree

from tests.integration.conftest import PASSWORD, Accounts
from tests.support.clients import ScramClient, event_queue, run, slixmpp_client, tls_channel_binding
from tests.support.raw import STREAM_NS, RawClient
from tests.support.server import ServerProcess, imactor_cli, running_server
from tests.support.timeouts import TIMEOUT

SASL2 = "urn:xmpp:sasl:2"
BIND2 = "urn:xmpp:bind:0"
FAST = "urn:xmpp:fast:0"
SM = "urn:xmpp:sm:3"
SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
C = "{jabber:client}"
HT = "HT-SHA-256-NONE"

pytestmark = pytest.mark.usefixtures("server_alive")


#: Failed logins per account before the throttle (per address: four times as many). Above what
#: one test fails for one account, below what the module's tests fail from 127.0.0.1 in total.
LOGIN_FAILURES = 10


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    extra = f"\n[limits]\nlogin_failures = {LOGIN_FAILURES}\n"
    with running_server(tmp_path_factory.mktemp("sasl2-server"), extra=extra) as process:
        yield process


def q(ns: str, name: str) -> str:
    return f"{{{ns}}}{name}"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class Agent:
    """One installation of a client: its XEP-0388 <user-agent/> and the FAST token it holds."""

    def __init__(self, software: str = "AwesomeXMPP") -> None:
        self.id = str(uuid.uuid4())
        self.software = software
        self.token: str | None = None
        self.count = 0

    def element(self) -> str:
        software = f"<software>{self.software}</software><device>test</device>"
        return f"<user-agent id='{self.id}'>{software}</user-agent>"


async def sasl2_stream(server: ServerProcess) -> tuple[RawClient, etree._Element]:
    """STARTTLS; the client and its features under TLS."""
    client = await RawClient.connect(server.c2s_port)
    return client, await client.starttls()


async def scram_login(client: RawClient, username: str, inner: str = "", *, password: str = PASSWORD,
                      mechanism: str = "SCRAM-SHA-256", cb_data: bytes = b"") -> etree._Element:  # fmt: skip
    """SCRAM in SASL2 (XEP-0388 §2.3-§2.6, its example's shape); the final element (<success/>
    with its server-final checked, or <failure/>). -PLUS binds to tls-server-end-point."""
    cb_type = "tls-server-end-point" if mechanism.endswith("-PLUS") else None
    scram = ScramClient(mechanism, username, password, cb_type=cb_type, cb_data=cb_data)
    await client.send(
        f"<authenticate xmlns='{SASL2}' mechanism='{mechanism}'>"
        f"<initial-response>{b64(scram.client_first())}</initial-response>{inner}</authenticate>"
    )
    challenge = await client.next_element()
    if challenge.tag != q(SASL2, "challenge"):
        return challenge
    final = scram.client_final(base64.b64decode(challenge.text or ""))
    await client.send(f"<response xmlns='{SASL2}'>{b64(final)}</response>")
    outcome = await client.next_element()
    if outcome.tag == q(SASL2, "success"):
        assert scram.verify(base64.b64decode(outcome.findtext(q(SASL2, "additional-data")) or ""))
    return outcome


def ht_message(username: str, token: str, cb_data: bytes = b"") -> tuple[bytes, bytes]:
    """An HT-SHA-256 mechanism: the initiator message and the responder message to expect."""
    initiator = hmac.new(token.encode(), b"Initiator" + cb_data, hashlib.sha256).digest()
    responder = hmac.new(token.encode(), b"Responder" + cb_data, hashlib.sha256).digest()
    return username.encode() + b"\x00" + initiator, responder


async def fast_login(client: RawClient, username: str, agent: Agent, token: str, inner: str = "", *,
                     count: int | None = None, mechanism: str = HT,
                     cb_data: bytes = b"") -> etree._Element:  # fmt: skip
    """A FAST login (XEP-0484 §4.4): <success/> (its responder checked) or <failure/>."""
    agent.count += 1
    used = agent.count if count is None else count
    initial, responder = ht_message(username, token, cb_data)
    await client.send(
        f"<authenticate xmlns='{SASL2}' mechanism='{mechanism}'>"
        f"<initial-response>{b64(initial)}</initial-response>"
        f"{agent.element()}<fast xmlns='{FAST}' count='{used}'/>{inner}</authenticate>"
    )
    outcome = await client.next_element()
    if outcome.tag == q(SASL2, "success"):
        assert base64.b64decode(outcome.findtext(q(SASL2, "additional-data")) or "") == responder
    return outcome


def failure_condition(element: etree._Element) -> str:
    assert element.tag == q(SASL2, "failure"), etree.tostring(element)
    return next(etree.QName(child).localname for child in element if etree.QName(child).namespace == SASL)


def new_token(success: etree._Element) -> str | None:
    token = success.find(q(FAST, "token"))
    return None if token is None else token.get("token")


async def after_success(client: RawClient) -> etree._Element:
    """The <stream:features/> that follows <success/> on the same stream (no restart)."""
    return await client.expect(q(STREAM_NS, "features"))


def database(server: ServerProcess) -> Path:
    return server.data_dir / "imactor.sqlite3"


def set_expiry(server: ServerProcess, username: str, client_id: str, expires_at: float) -> None:
    with contextlib.closing(sqlite3.connect(database(server))) as db:
        db.execute("UPDATE fast_token SET expires_at = ? WHERE username = ? AND client = ?",
                   (expires_at, username, client_id))  # fmt: skip
        db.commit()


# ---- SASL2 and Bind 2 ----------------------------------------------------------------------------


async def test_features_offer_sasl2_with_bind2_sm_and_fast_only_after_tls(server: ServerProcess) -> None:
    with trio.fail_after(TIMEOUT):
        client = await RawClient.connect(server.c2s_port)
        plain_features = await client.open_stream()
        assert plain_features.find(q(SASL2, "authentication")) is None
        await client.send(f"<authenticate xmlns='{SASL2}' mechanism='PLAIN'/>")  # before TLS
        assert await client.stream_error() == "policy-violation"
        await client.aclose()
        client, features = await sasl2_stream(server)
        authentication = features.find(q(SASL2, "authentication"))
        assert authentication is not None
        legacy = [m.text for m in features.iterfind(f"{q(SASL, 'mechanisms')}/{q(SASL, 'mechanism')}")]
        assert [m.text for m in authentication.iterfind(q(SASL2, "mechanism"))] == legacy
        inline = authentication.find(q(SASL2, "inline"))
        assert inline is not None
        bind_vars = [f.get("var") for f in inline.iterfind(f"{q(BIND2, 'bind')}/{q(BIND2, 'inline')}/*")]
        assert bind_vars == ["urn:xmpp:carbons:2", "urn:xmpp:csi:0", SM]
        assert inline.find(q(SM, "sm")) is not None
        assert HT in [m.text for m in inline.iterfind(f"{q(FAST, 'fast')}/{q(FAST, 'mechanism')}")]
        await client.aclose()


async def test_scram_and_bind2_in_one_round_trip_then_chat_with_slixmpp(
    server: ServerProcess, accounts: Accounts
) -> None:
    alice, bob = accounts(2)
    with trio.fail_after(TIMEOUT):
        client, _ = await sasl2_stream(server)
        assert client.header is not None
        stream_id = client.header.get("id")
        bind = (f"<bind xmlns='{BIND2}'><tag>AwesomeXMPP</tag><enable xmlns='urn:xmpp:carbons:2'/>"
                f"<inactive xmlns='urn:xmpp:csi:0'/></bind>")  # fmt: skip
        success = await scram_login(client, alice, Agent().element() + bind)
        assert success.tag == q(SASL2, "success"), etree.tostring(success)
        full = success.findtext(q(SASL2, "authorization-identifier")) or ""
        assert full.startswith(f"{alice}@localhost/AwesomeXMPP/")
        assert success.find(q(BIND2, "bound")) is not None
        features = await after_success(client)
        assert features.find("{urn:ietf:params:xml:ns:xmpp-bind}bind") is None  # bound already
        # No restart: the features came on the stream the header before authentication opened
        # (a new server header would be a second XML document, which this parser refuses).
        assert client.header is not None
        assert client.header.get("id") == stream_id
        # Bound exactly as the RFC 6120 way: initial presence comes back, the roster answers.
        # The session started inactive (CSI inline): the echo of our presence is held until
        # something that matters is sent (the roster result), and goes out before it.
        await client.send("<presence/>")
        assert await client.iq("<ping xmlns='urn:xmpp:ping'/>", to="localhost") is not None
        assert not [e for e in client.elements if e.tag == f"{C}presence"]  # held
        await client.send("<iq type='get' id='roster1'><query xmlns='jabber:iq:roster'/></iq>")
        echoed = await client.next_element(lambda e: e.tag == f"{C}presence")
        assert echoed.get("from") == full
        roster = await client.next_element(lambda e: e.get("id") == "roster1")
        assert roster.get("type") == "result"

        async def bob_side() -> str:
            async with slixmpp_client(f"{bob}@localhost/desk", PASSWORD, server.c2s_port) as xmpp:
                replies = event_queue(xmpp, "message")
                xmpp.send_message(mto=full, mbody="hello alice", mtype="chat")
                reply = await asyncio.wait_for(replies.get(), TIMEOUT)
                return str(reply["body"])

        async with trio.open_nursery() as nursery:
            answer: list[str] = []

            async def in_thread() -> None:
                answer.append(await trio.to_thread.run_sync(lambda: run(bob_side())))

            nursery.start_soon(in_thread)
            # CSI inactive holds chat states and presence, not a message with a body.
            hello = await client.next_element(lambda e: e.tag == f"{C}message")
            assert hello.findtext(f"{C}body") == "hello alice"
            assert hello.get("from") == f"{bob}@localhost/desk"
            await client.send(f"<message to='{hello.get('from')}' type='chat'><body>hi bob</body></message>")
        assert answer == ["hi bob"]
        await client.aclose()


async def test_bind2_resource_is_stable_per_client_and_replaces_its_old_session(
    server: ServerProcess, accounts: Accounts
) -> None:
    (alice,) = accounts(1)
    agent = Agent()
    bind = f"<bind xmlns='{BIND2}'><tag>Phone</tag></bind>"
    with trio.fail_after(TIMEOUT):
        first, _ = await sasl2_stream(server)
        jid1 = (await scram_login(first, alice, agent.element() + bind)).findtext(
            q(SASL2, "authorization-identifier")
        )
        second, _ = await sasl2_stream(server)
        jid2 = (await scram_login(second, alice, agent.element() + bind)).findtext(
            q(SASL2, "authorization-identifier")
        )
        assert jid1 == jid2
        assert agent.id not in (jid2 or "")  # XEP-0386 §3.2.1: the id is never shown
        assert await first.stream_error() == "conflict"
        other, _ = await sasl2_stream(server)
        jid3 = (await scram_login(other, alice, Agent().element() + bind)).findtext(
            q(SASL2, "authorization-identifier")
        )
        assert jid3 != jid1
        for client in (second, other):
            await client.aclose()


async def test_sasl2_without_bind_leaves_rfc6120_binding(server: ServerProcess, accounts: Accounts) -> None:
    (alice,) = accounts(1)
    with trio.fail_after(TIMEOUT):
        client, _ = await sasl2_stream(server)
        success = await scram_login(client, alice)
        assert success.findtext(q(SASL2, "authorization-identifier")) == f"{alice}@localhost"
        features = await after_success(client)
        assert features.find("{urn:ietf:params:xml:ns:xmpp-bind}bind") is not None
        await client.send("<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                          "<resource>legacy</resource></bind></iq>")  # fmt: skip
        bound = await client.next_element(lambda e: e.get("id") == "b1")
        assert bound.get("type") == "result"
        await client.aclose()


# ---- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("inner", "condition"),
    [
        ("<unknown xmlns='urn:example:nothing'/>", "malformed-request"),
        (f"<bind xmlns='{BIND2}'><enable xmlns='urn:example:feature'/></bind>", "malformed-request"),
    ],
)
async def test_unknown_inline_requests_fail_and_the_stream_goes_on(
    server: ServerProcess, accounts: Accounts, inner: str, condition: str
) -> None:
    (alice,) = accounts(1)
    with trio.fail_after(TIMEOUT):
        client, _ = await sasl2_stream(server)
        assert failure_condition(await scram_login(client, alice, inner)) == condition
        success = await scram_login(client, alice)  # the same stream, a correct attempt
        assert success.tag == q(SASL2, "success")
        await client.aclose()


async def test_wrong_password_then_retry_limit(server: ServerProcess, accounts: Accounts) -> None:
    (alice,) = accounts(1)
    with trio.fail_after(TIMEOUT):
        client, _ = await sasl2_stream(server)
        for _ in range(3):  # [auth] sasl_retries = 3: three failures are retried ...
            assert failure_condition(await scram_login(client, alice, password="wrong")) == "not-authorized"
        assert failure_condition(await scram_login(client, alice, password="wrong")) == "not-authorized"
        assert await client.stream_error() == "policy-violation"  # ... the fourth ends the stream


async def test_a_second_authenticate_after_success_is_a_stream_error(
    server: ServerProcess, accounts: Accounts
) -> None:
    (alice,) = accounts(1)
    with trio.fail_after(TIMEOUT):
        client, _ = await sasl2_stream(server)
        assert (await scram_login(client, alice)).tag == q(SASL2, "success")
        await after_success(client)
        await client.send(f"<authenticate xmlns='{SASL2}' mechanism='PLAIN'/>")
        assert await client.stream_error() == "policy-violation"


# ---- XEP-0198 inline ---------------------------------------------------------------------------


async def test_inline_sm_enable_then_inline_resume_gets_the_missed_stanzas(
    server: ServerProcess, accounts: Accounts
) -> None:
    alice, bob = accounts(2)
    agent = Agent()
    with trio.fail_after(TIMEOUT):
        client, _ = await sasl2_stream(server)
        bind = f"<bind xmlns='{BIND2}'><tag>Phone</tag><enable xmlns='{SM}' resume='true'/></bind>"
        success = await scram_login(client, alice, agent.element() + bind)
        full = success.findtext(q(SASL2, "authorization-identifier"))
        enabled = success.find(f"{q(BIND2, 'bound')}/{q(SM, 'enabled')}")
        assert enabled is not None, etree.tostring(success)
        assert enabled.get("resume") == "true"
        previd = enabled.get("id")
        await after_success(client)
        # Break the transport without a word, as a phone losing its network does.
        tls = client.stream
        assert isinstance(tls, trio.SSLStream)
        tcp = tls.transport_stream
        assert isinstance(tcp, trio.SocketStream)
        tcp.socket.close()
        sender = await RawClient.connect(server.c2s_port)
        await sender.login(bob, PASSWORD, "desk")
        for n in range(3):
            await sender.send(f"<message to='{full}' type='chat'><body>missed {n}</body></message>")
        await sender.iq("<ping xmlns='urn:xmpp:ping'/>", to="localhost")
        # A new connection resumes inside its authentication, and asks for Bind 2 too: a
        # successful resumption ignores it (XEP-0386 §3.2).
        again, _ = await sasl2_stream(server)
        resume = f"<resume xmlns='{SM}' previd='{previd}' h='0'/>"
        success = await scram_login(again, alice, agent.element() + resume + bind)
        assert success.tag == q(SASL2, "success"), etree.tostring(success)
        resumed = success.find(q(SM, "resumed"))
        assert resumed is not None
        assert resumed.get("previd") == previd
        assert success.find(q(BIND2, "bound")) is None
        assert success.findtext(q(SASL2, "authorization-identifier")) == full
        await after_success(again)
        bodies = [(await again.next_element(lambda e: e.tag == f"{C}message")).findtext(f"{C}body")
                  for _ in range(3)]  # fmt: skip
        assert bodies == ["missed 0", "missed 1", "missed 2"]
        await again.send(f"<r xmlns='{SM}'/>")
        assert (await again.expect(q(SM, "a"))).get("h") == "0"
        for c in (again, sender):
            await c.aclose()


async def test_a_failed_inline_resumption_binds_anew(server: ServerProcess, accounts: Accounts) -> None:
    (alice,) = accounts(1)
    with trio.fail_after(TIMEOUT):
        client, _ = await sasl2_stream(server)
        inner = (
            f"<resume xmlns='{SM}' previd='no-such-session' h='0'/><bind xmlns='{BIND2}'><tag>T</tag></bind>"
        )
        success = await scram_login(client, alice, Agent().element() + inner)
        failed = success.find(q(SM, "failed"))
        assert failed is not None
        assert failed.find("{urn:ietf:params:xml:ns:xmpp-stanzas}item-not-found") is not None
        assert success.find(q(BIND2, "bound")) is not None
        assert (success.findtext(q(SASL2, "authorization-identifier")) or "").startswith(
            f"{alice}@localhost/T/"
        )
        await client.aclose()


# ---- FAST --------------------------------------------------------------------------------------


async def request_token(server: ServerProcess, username: str, agent: Agent) -> str:
    client, _ = await sasl2_stream(server)
    success = await scram_login(
        client, username, agent.element() + f"<request-token xmlns='{FAST}' mechanism='{HT}'/>"
    )
    token = success.find(q(FAST, "token"))
    assert token is not None, etree.tostring(success)
    expiry = token.get("expiry", "")
    assert expiry.endswith("Z")
    assert expiry > time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    value = token.get("token")
    assert value
    await client.aclose()
    return value


async def test_fast_token_login_rotation_and_invalidation(server: ServerProcess, accounts: Accounts) -> None:
    (alice,) = accounts(1)
    agent = Agent()
    with trio.fail_after(TIMEOUT):
        token = await request_token(server, alice, agent)
        with contextlib.closing(sqlite3.connect(database(server))) as db:
            stored = db.execute("SELECT token_hash FROM fast_token WHERE username = ?", (alice,)).fetchall()
        assert stored == [(hashlib.sha256(token.encode()).hexdigest(),)]  # hashed, never the token

        client, _ = await sasl2_stream(server)
        success = await fast_login(
            client, alice, agent, token, f"<bind xmlns='{BIND2}'><tag>Fast</tag></bind>"
        )
        assert success.tag == q(SASL2, "success"), etree.tostring(success)
        assert success.find(q(BIND2, "bound")) is not None
        assert new_token(success) is None  # young token: no rotation
        await client.aclose()

        # Past half its life, a login with it brings a new one; the old stays valid until then.
        set_expiry(server, alice, agent.id, time.time() + 60)
        client, _ = await sasl2_stream(server)
        rotated = new_token(await fast_login(client, alice, agent, token))
        assert rotated is not None
        assert rotated != token
        await client.aclose()
        client, _ = await sasl2_stream(server)
        # The old token still works (the client may have missed the new one), and is still due:
        # another new token, which replaces the unused one (XEP-0484 §4.5).
        again = await fast_login(client, alice, agent, token)
        assert again.tag == q(SASL2, "success")
        unused, rotated = rotated, new_token(again)
        assert rotated is not None
        assert rotated not in (token, unused)
        await client.aclose()
        client, _ = await sasl2_stream(server)
        assert failure_condition(await fast_login(client, alice, agent, unused)) == "not-authorized"
        await client.aclose()
        client, _ = await sasl2_stream(server)
        assert (await fast_login(client, alice, agent, rotated)).tag == q(SASL2, "success")
        await client.aclose()
        client, _ = await sasl2_stream(server)
        # Using the newer token ended the older one.
        assert failure_condition(await fast_login(client, alice, agent, token)) == "not-authorized"

        # Invalidation: the login succeeds, the token is gone after it.
        success = await fast_login(client, alice, agent, rotated)
        assert success.tag == q(SASL2, "success")
        await client.aclose()
        client, _ = await sasl2_stream(server)
        initial, _ = ht_message(alice, rotated)
        agent.count += 1
        await client.send(
            f"<authenticate xmlns='{SASL2}' mechanism='{HT}'>"
            f"<initial-response>{b64(initial)}</initial-response>{agent.element()}"
            f"<fast xmlns='{FAST}' count='{agent.count}' invalidate='true'/></authenticate>"
        )
        assert (await client.next_element()).tag == q(SASL2, "success")
        await client.aclose()
        client, _ = await sasl2_stream(server)
        assert failure_condition(await fast_login(client, alice, agent, rotated)) == "not-authorized"
        await client.aclose()


async def test_fast_bad_tokens(server: ServerProcess, accounts: Accounts) -> None:
    alice, bob = accounts(2)
    agent = Agent()
    with trio.fail_after(TIMEOUT):
        token = await request_token(server, alice, agent)
        client, _ = await sasl2_stream(server)
        # An invalid token, then a replayed count, then alice's token presented as bob's.
        assert failure_condition(await fast_login(client, alice, agent, "f" * 128)) == "not-authorized"
        assert (await fast_login(client, alice, agent, token, count=10)).tag == q(SASL2, "success")
        await client.aclose()
        client, _ = await sasl2_stream(server)
        assert failure_condition(await fast_login(client, alice, agent, token, count=10)) == "not-authorized"
        assert failure_condition(await fast_login(client, bob, agent, token)) == "not-authorized"
        # Another installation of alice's client does not have her token either.
        assert failure_condition(await fast_login(client, alice, Agent(), token)) == "not-authorized"
        await client.aclose()
        set_expiry(server, alice, agent.id, time.time() - 1)
        client, _ = await sasl2_stream(server)
        assert (
            failure_condition(await fast_login(client, alice, agent, token, count=11))
            == "credentials-expired"
        )
        await client.aclose()


async def test_logout_everywhere_revokes_tokens_and_ends_sessions(
    server: ServerProcess, accounts: Accounts
) -> None:
    alice, bob = accounts(2)
    agent = Agent()
    with trio.fail_after(TIMEOUT):
        token = await request_token(server, alice, agent)
        bob_token = await request_token(server, bob, Agent())
        online, _ = await sasl2_stream(server)
        assert (await fast_login(online, alice, agent, token, f"<bind xmlns='{BIND2}'/>")).tag == q(
            SASL2, "success"
        )
        await after_success(online)
        result = await trio.to_thread.run_sync(
            lambda: imactor_cli(server.config_path, "user", "logout-everywhere", alice)
        )
        assert result.returncode == 0, result.stderr
        assert "revoked 1 FAST token(s)" in result.stdout
        assert "ended 1 session(s)" in result.stdout
        assert await online.stream_error() == "not-authorized"
        client, _ = await sasl2_stream(server)
        assert failure_condition(await fast_login(client, alice, agent, token)) == "not-authorized"
        # Another account's tokens are untouched.
        with contextlib.closing(sqlite3.connect(database(server))) as db:
            rows = db.execute("SELECT COUNT(*) FROM fast_token WHERE username = ?", (bob,)).fetchone()
        assert rows == (1,)
        assert bob_token
        await client.aclose()


async def test_channel_binding_in_sasl2_scram_plus_and_ht_endp(
    server: ServerProcess, accounts: Accounts
) -> None:
    """-PLUS and the HT mechanisms with a channel binding, bound to tls-server-end-point (the one
    the client side can compute with the standard library under TLS 1.3)."""
    (alice,) = accounts(1)
    agent = Agent()
    with trio.fail_after(TIMEOUT):
        client, features = await sasl2_stream(server)
        authentication = features.find(q(SASL2, "authentication"))
        assert authentication is not None
        assert "SCRAM-SHA-256-PLUS" in [m.text for m in authentication.iterfind(q(SASL2, "mechanism"))]
        fast_offer = [m.text for m in authentication.iterfind(f"{q(SASL2, 'inline')}/{q(FAST, 'fast')}/*")]
        assert "HT-SHA-256-ENDP" in fast_offer
        cb = tls_channel_binding(client, "tls-server-end-point")
        wrong = await scram_login(client, alice, mechanism="SCRAM-SHA-256-PLUS", cb_data=b"\x00" * len(cb))
        assert failure_condition(wrong) == "not-authorized"
        token_request = f"{agent.element()}<request-token xmlns='{FAST}' mechanism='HT-SHA-256-ENDP'/>"
        success = await scram_login(client, alice, token_request, mechanism="SCRAM-SHA-256-PLUS", cb_data=cb)
        assert success.tag == q(SASL2, "success"), etree.tostring(success)
        token = new_token(success)
        assert token is not None
        await client.aclose()

        client, _ = await sasl2_stream(server)
        cb = tls_channel_binding(client, "tls-server-end-point")
        # A token is bound to the mechanism it was issued for (XEP-0484 §4.4): not -NONE.
        assert failure_condition(await fast_login(client, alice, agent, token)) == "not-authorized"
        ok = await fast_login(client, alice, agent, token, mechanism="HT-SHA-256-ENDP", cb_data=cb)
        assert ok.tag == q(SASL2, "success"), etree.tostring(ok)
        await client.aclose()


async def test_sasl2_and_fast_share_the_login_throttle(server: ServerProcess, accounts: Accounts) -> None:
    """[limits] login_failures counts SASL2 and FAST failures with the RFC 6120 ones, and holds
    back a correct password or a valid token alike (RFC 6120 §13.7.1 advice)."""
    (alice,) = accounts(1)
    agent = Agent()
    with trio.fail_after(TIMEOUT):
        token = await request_token(server, alice, agent)
        failures = 0
        while failures < LOGIN_FAILURES:
            client, _ = await sasl2_stream(server)
            for _ in range(4):  # [auth] sasl_retries = 3: the fourth failure ends the stream
                if failures == LOGIN_FAILURES:
                    break
                bad = await (fast_login(client, alice, agent, "0" * 128) if failures % 2
                             else scram_login(client, alice, password="wrong"))  # fmt: skip
                assert failure_condition(bad) == "not-authorized"
                failures += 1
            await client.aclose()
        client, _ = await sasl2_stream(server)
        assert failure_condition(await scram_login(client, alice)) == "temporary-auth-failure"
        assert failure_condition(await fast_login(client, alice, agent, token)) == "temporary-auth-failure"
        await client.aclose()


async def test_carbons_enabled_inline_copy_messages_to_the_bind2_session(
    server: ServerProcess, accounts: Accounts
) -> None:
    alice, bob = accounts(2)
    with trio.fail_after(TIMEOUT):
        client, _ = await sasl2_stream(server)
        bind = f"<bind xmlns='{BIND2}'><tag>Tablet</tag><enable xmlns='urn:xmpp:carbons:2'/></bind>"
        assert (await scram_login(client, alice, Agent().element() + bind)).tag == q(SASL2, "success")
        await after_success(client)
        phone = await RawClient.connect(server.c2s_port)
        await phone.login(alice, PASSWORD, "phone")
        sender = await RawClient.connect(server.c2s_port)
        await sender.login(bob, PASSWORD, "desk")
        await sender.send(
            f"<message to='{alice}@localhost/phone' type='chat'><body>to the phone</body></message>"
        )
        carbon = await client.next_element(lambda e: e.tag == f"{C}message")
        forwarded = carbon.find(
            "{urn:xmpp:carbons:2}received/{urn:xmpp:forward:0}forwarded/{jabber:client}message"
        )
        assert forwarded is not None, etree.tostring(carbon)
        assert forwarded.findtext(f"{C}body") == "to the phone"
        for c in (client, phone, sender):
            await c.aclose()
