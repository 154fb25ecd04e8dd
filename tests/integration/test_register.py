"""XEP-0077 In-Band Registration over the network: form, create, log in, conflicts, throttling,
disabled registration, password change and account removal."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from lxml import etree

from tests.support.clients import (
    SASL_NS,
    ScramClient,
    bound_jid,
    raw_authenticated,
    raw_bind,
    raw_plain,
    raw_scram,
    raw_tls_stream,
    run,
    sasl_condition,
    slixmpp_client,
)
from tests.support.peer import stanza_error
from tests.support.raw import RawClient
from tests.support.server import ServerProcess, running_server
from tests.support.timeouts import TIMEOUT

REGISTER = "jabber:iq:register"
Q = f"{{{REGISTER}}}"
REGISTER_FEATURE = "{http://jabber.org/features/iq-register}register"
_names = itertools.count()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The module's shared server, with room for the many registrations of these tests."""
    extra = "\n[limits]\nregistrations_per_address = 1000\n"
    with running_server(tmp_path_factory.mktemp("server"), registration=True, extra=extra) as process:
        yield process


def fresh_name(prefix: str = "reg") -> str:
    return f"{prefix}{next(_names)}"


async def iq(client: RawClient, iq_id: str, type_: str, payload: str) -> etree._Element:
    await client.send(f"<iq type='{type_}' id='{iq_id}'><query xmlns='{REGISTER}'>{payload}</query></iq>")
    return await client.next_element(lambda e: e.get("id") == iq_id)


async def register(client: RawClient, username: str, password: str, iq_id: str = "reg") -> etree._Element:
    return await iq(client, iq_id, "set", f"<username>{username}</username><password>{password}</password>")


async def register_account(server: ServerProcess, username: str, password: str) -> None:
    """Register on a stream of its own (TLS, not authenticated), which is closed afterwards."""
    client, _ = await raw_tls_stream(server.c2s_port)
    assert (await register(client, username, password)).get("type") == "result"
    await client.aclose()


async def login(server: ServerProcess, username: str, password: str, resource: str = "r") -> RawClient:
    """A bound session; fails the test if the login is refused."""
    client = await raw_authenticated(server.c2s_port, username, password)
    bound = await raw_bind(client, resource)
    assert bound.get("type") == "result", etree.tostring(bound)
    return client


async def login_answer(server: ServerProcess, username: str, password: str) -> str:
    """ "success", or the SASL failure condition."""
    client, _ = await raw_tls_stream(server.c2s_port)
    try:
        result = await raw_plain(client, username, password)
        return "success" if result.tag == f"{{{SASL_NS}}}success" else sasl_condition(result)
    finally:
        await client.aclose()


# ---- registration before authentication -------------------------------------------------------


async def test_form_before_auth(server: ServerProcess) -> None:
    with trio.fail_after(TIMEOUT):
        client, features = await raw_tls_stream(server.c2s_port)
        assert features.find(REGISTER_FEATURE) is not None
        form = await iq(client, "form", "get", "")
        assert form.get("type") == "result", etree.tostring(form)
        query = form.find(f"{Q}query")
        assert query is not None
        assert query.find(f"{Q}username") is not None
        assert query.find(f"{Q}password") is not None
        assert query.find(f"{Q}registered") is None
        assert query.findtext(f"{Q}instructions")
        await client.aclose()


async def test_register_then_login(server: ServerProcess) -> None:
    name = fresh_name()
    with trio.fail_after(TIMEOUT):
        client, _ = await raw_tls_stream(server.c2s_port)
        result = await register(client, name, "n3w-secret")
        assert result.get("type") == "result", etree.tostring(result)
        # The same stream goes on to authenticate as the new account (SCRAM: verifiers were stored).
        scram = ScramClient("SCRAM-SHA-256", name, "n3w-secret")
        success, _ = await raw_scram(client, scram, "SCRAM-SHA-256")
        assert success.tag == f"{{{SASL_NS}}}success", etree.tostring(success)
        bound = await raw_bind(client, "home")
        assert bound_jid(bound) == f"{name}@localhost/home"
        await client.aclose()
        assert await login_answer(server, name, "wrong") == "not-authorized"


def test_register_then_login_slixmpp(server: ServerProcess) -> None:
    """A registered account works for a real client library."""
    name = fresh_name()

    async def make() -> None:
        with trio.fail_after(TIMEOUT):
            await register_account(server, name, "lib-pass")

    trio.run(make)

    async def scenario() -> None:
        async with slixmpp_client(f"{name}@localhost/lib", "lib-pass", server.c2s_port) as xmpp:
            assert str(xmpp.boundjid) == f"{name}@localhost/lib"

    run(scenario())


@pytest.mark.parametrize("second", ["same", "UPPER"])
async def test_duplicate_username(server: ServerProcess, second: str) -> None:
    name = fresh_name()
    with trio.fail_after(TIMEOUT):
        client, _ = await raw_tls_stream(server.c2s_port)
        assert (await register(client, name, "first", "r1")).get("type") == "result"
        duplicate = name if second == "same" else name.upper()  # usernames are case-insensitive
        refused = await register(client, duplicate, "second", "r2")
        assert stanza_error(refused) == ("cancel", "conflict")
        await client.aclose()
        # The first password still holds; the second was not taken.
        assert await login_answer(server, name, "first") == "success"
        assert await login_answer(server, name, "second") == "not-authorized"


@pytest.mark.parametrize(
    ("payload", "condition"),
    [
        ("<username>has space</username><password>pw</password>", "jid-malformed"),
        ("<username>a@b</username><password>pw</password>", "jid-malformed"),
        ("<username>nopassword</username>", "not-acceptable"),
        ("<password>nousername</password>", "not-acceptable"),
    ],
)
async def test_unacceptable_registration(server: ServerProcess, payload: str, condition: str) -> None:
    with trio.fail_after(TIMEOUT):
        client, _ = await raw_tls_stream(server.c2s_port)
        refused = await iq(client, "bad", "set", payload)
        assert stanza_error(refused)[1] == condition
        # The stream stays usable: a valid registration follows.
        assert (await register(client, fresh_name(), "pw", "ok")).get("type") == "result"
        await client.aclose()


# ---- throttling and disabling ------------------------------------------------------------------


@pytest.fixture
def throttled_server(tmp_path: Path) -> Iterator[ServerProcess]:
    extra = "\n[limits]\nregistrations_per_address = 2\nregistration_window = 3600.0\n"
    with running_server(tmp_path, registration=True, extra=extra) as process:
        yield process


async def test_registrations_per_address(throttled_server: ServerProcess) -> None:
    srv = throttled_server
    with trio.fail_after(TIMEOUT):
        for index in range(2):
            await register_account(srv, f"ok{index}", "pw")
        client, _ = await raw_tls_stream(srv.c2s_port)
        refused = await register(client, "third", "pw")
        assert stanza_error(refused) == ("wait", "resource-constraint")
        await client.aclose()
        assert await login_answer(srv, "third", "pw") == "not-authorized"
        assert await login_answer(srv, "ok1", "pw") == "success"


@pytest.fixture
def closed_server(tmp_path: Path) -> Iterator[ServerProcess]:
    with running_server(tmp_path, registration=False, users=[("member", "pw")]) as process:
        yield process


@pytest.mark.parametrize("type_", ["get", "set"])
async def test_registration_disabled(closed_server: ServerProcess, type_: str) -> None:
    srv = closed_server
    with trio.fail_after(TIMEOUT):
        client, features = await raw_tls_stream(srv.c2s_port)
        assert features.find(REGISTER_FEATURE) is None
        payload = "<username>intruder</username><password>pw</password>" if type_ == "set" else ""
        await client.send(f"<iq type='{type_}' id='reg'><query xmlns='{REGISTER}'>{payload}</query></iq>")
        # Without registration there is nothing to do before authentication (RFC 6120 §4.9.3.12).
        assert await client.stream_error() == "not-authorized"
        await client.aclose()
        assert await login_answer(srv, "intruder", "pw") == "not-authorized"
        # Existing accounts still manage their password.
        session = await login(srv, "member", "pw")
        changed = await iq(session, "pw", "set", "<username>member</username><password>pw2</password>")
        assert changed.get("type") == "result", etree.tostring(changed)
        await session.aclose()
        assert await login_answer(srv, "member", "pw2") == "success"


# ---- once authenticated ------------------------------------------------------------------------


async def test_password_change(server: ServerProcess) -> None:
    name = fresh_name()
    with trio.fail_after(TIMEOUT):
        await register_account(server, name, "old-pass")
        session = await login(server, name, "old-pass")
        form = await iq(session, "form", "get", "")
        query = form.find(f"{Q}query")
        assert query is not None
        assert query.find(f"{Q}registered") is not None
        assert query.findtext(f"{Q}username") == name
        # Only one's own password.
        other = await iq(session, "other", "set", "<username>someone</username><password>x</password>")
        assert stanza_error(other)[1] == "not-allowed"
        changed = await iq(session, "pw", "set", f"<username>{name}</username><password>new-pass</password>")
        assert changed.get("type") == "result", etree.tostring(changed)
        await session.aclose()
        assert await login_answer(server, name, "new-pass") == "success"
        assert await login_answer(server, name, "old-pass") == "not-authorized"
        # SCRAM too: the stored verifiers were replaced, not just a PLAIN check.
        client, _ = await raw_tls_stream(server.c2s_port)
        success, _ = await raw_scram(client, ScramClient("SCRAM-SHA-1", name, "new-pass"), "SCRAM-SHA-1")
        assert success.tag == f"{{{SASL_NS}}}success"
        await client.aclose()


async def test_account_removal(server: ServerProcess) -> None:
    name = fresh_name()
    with trio.fail_after(TIMEOUT):
        await register_account(server, name, "pw")
        other = await login(server, name, "pw", "other")
        session = await login(server, name, "pw", "main")
        removed = await iq(session, "rm", "set", "<remove/>")
        # The result comes first, then the server ends the stream (XEP-0077 §3.2)...
        assert removed.get("type") == "result", etree.tostring(removed)
        await session.wait_closed()
        assert session.closed
        # ...and every other session of the account.
        assert await other.stream_error() == "not-authorized"
        await other.wait_closed()
        await session.aclose()
        await other.aclose()
        assert await login_answer(server, name, "pw") == "not-authorized"
        # The name is free again.
        await register_account(server, name, "pw2")
        assert await login_answer(server, name, "pw2") == "success"


async def test_remove_before_auth_refused(server: ServerProcess) -> None:
    with trio.fail_after(TIMEOUT):
        client, _ = await raw_tls_stream(server.c2s_port)
        refused = await iq(client, "rm", "set", "<remove/>")
        assert stanza_error(refused)[1] == "not-allowed"
        await client.aclose()
