"""XEP-0050 ad-hoc commands and the XEP-0133 administration commands (module `adhoc`) end to end.

One server for the module, two workers, `boss` as its administrator ([server] admins). The
administrator drives the commands with slixmpp's XEP-0050 plugin where a client library would,
and with raw XML where the exact stanza is the point (actions, errors, notes). Users whose
session must be on one worker are placed there with `land_on` (the status socket shows which
worker took each connection): announcements and ended sessions cross the mesh.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from functools import partial
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import pytest
import trio
from slixmpp import ClientXMPP
from slixmpp.exceptions import IqError

from tests.integration.conftest import PASSWORD, Accounts, Clients
from tests.support.chaos import land_on, wait_session_counts
from tests.support.clients import AuthFailed, run, slixmpp_client
from tests.support.peer import C, Element, Peer, Peers, error_condition, message, new_id, show
from tests.support.raw import RawClient
from tests.support.server import ServerProcess, add_users, running_server
from tests.support.timeouts import TIMEOUT, WORKERS_TIMEOUT

NS_COMMANDS = "http://jabber.org/protocol/commands"
NS_ADMIN = "http://jabber.org/protocol/admin"
NS_DATA = "jabber:x:data"
NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
CMD = f"{{{NS_COMMANDS}}}command"
X = f"{{{NS_DATA}}}x"
BOSS = "boss"
DOMAIN = "localhost"
#: After each test: the server runs and logged no traceback.
pytestmark = pytest.mark.usefixtures("server_alive")
COMMANDS = {
    "add-user", "delete-user", "disable-user", "reenable-user", "end-user-session", "change-user-password",
    "get-registered-users-num", "get-disabled-users-num", "get-online-users-num", "get-registered-users-list",
    "get-disabled-users-list", "get-online-users-list", "announce", "set-motd", "edit-motd", "delete-motd",
}  # fmt: skip


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    directory = tmp_path_factory.mktemp("admin-commands")
    with running_server(directory, server_options=f'admins = ["{BOSS}@{DOMAIN}"]\n', workers=2) as process:
        add_users(process.config_path, [(BOSS, PASSWORD)])
        yield process


def node(name: str) -> str:
    return f"{NS_ADMIN}#{name}"


async def command(peer: Peer, name: str, *, action: str | None = None, sessionid: str | None = None,
                  fields: Mapping[str, str | Sequence[str]] | None = None) -> Element:  # fmt: skip
    """Send one stage of the command `name` (a submitted form when `fields` is given); the IQ reply."""
    attributes = f" node={quoteattr(node(name))}"
    if action is not None:
        attributes += f" action='{action}'"
    if sessionid is not None:
        attributes += f" sessionid={quoteattr(sessionid)}"
    form = ""
    if fields is not None:
        parts = [f"<field var='FORM_TYPE' type='hidden'><value>{NS_ADMIN}</value></field>"]
        for var, value in fields.items():
            values = [value] if isinstance(value, str) else list(value)
            parts.append(f"<field var='{var}'>" + "".join(f"<value>{escape(v)}</value>" for v in values)
                         + "</field>")  # fmt: skip
        form = f"<x xmlns='{NS_DATA}' type='submit'>{''.join(parts)}</x>"
    return await peer.iq(
        f"<command xmlns='{NS_COMMANDS}'{attributes}>{form}</command>", type_="set", to=DOMAIN
    )


def status(reply: Element) -> tuple[str, str]:
    """(status, sessionid) of a command reply."""
    assert reply.get("type") == "result", show(reply)
    element = reply.find(CMD)
    assert element is not None, show(reply)
    return element.get("status", ""), element.get("sessionid", "")


def notes(reply: Element) -> list[tuple[str, str]]:
    return [(n.get("type", ""), n.text or "") for n in reply.iterfind(f"{CMD}/{{{NS_COMMANDS}}}note")]


def form_fields(reply: Element) -> dict[str, list[str]]:
    """Each field of the reply's form: its values."""
    form = reply.find(f"{CMD}/{X}")
    assert form is not None, show(reply)
    return {f.get("var", ""): [v.text or "" for v in f.iterfind(f"{{{NS_DATA}}}value")]
            for f in form.iterfind(f"{{{NS_DATA}}}field")}  # fmt: skip


def app_condition(reply: Element) -> str:
    """The XEP-0050 condition of an error reply (bad-action, bad-sessionid, ...)."""
    found = [child for child in reply.iterfind(f"{C}error/*") if child.tag.startswith(f"{{{NS_COMMANDS}}}")]
    assert found, show(reply)
    return found[0].tag.split("}")[1]


async def run_command(peer: Peer, name: str, fields: Mapping[str, str | Sequence[str]]) -> Element:
    """Execute `name`, submit its form with `fields` (the default action), expect completion."""
    shown = await command(peer, name)
    state, sessionid = status(shown)
    assert state == "executing", show(shown)
    done = await command(peer, name, sessionid=sessionid, fields=fields)
    assert status(done)[0] == "completed", show(done)
    return done


async def boss(peers: Peers) -> Peer:
    return await peers.login(BOSS, new_id("admin"))


async def login_refused(server: ServerProcess, username: str, password: str = PASSWORD) -> str:
    """The SASL failure of a login that must fail (its element, serialized)."""
    raw = await RawClient.connect(server.c2s_port, DOMAIN)
    try:
        with pytest.raises(PermissionError) as refused:
            await raw.login(username, password)
    finally:
        await raw.aclose()
    return str(refused.value)


async def peer_on(server: ServerProcess, worker: int, username: str) -> Peer:
    """`username` online with its session on `worker`."""
    open_ = partial(Peer.online, server.c2s_port, username, PASSWORD, new_id("w"))
    return await land_on(server.status_socket, worker, open_, Peer.aclose)


async def wait_no_sessions(server: ServerProcess) -> None:
    """Until the sessions of earlier tests (and of the last test's liveness check) have ended on
    the server's side: `land_on` reads which worker's count grows, and must see no other change."""
    await wait_session_counts(server.status_socket, lambda counts: not any(counts.values()))


# ---- discovery and who may run commands --------------------------------------------------------


async def test_the_administrator_sees_every_command_and_others_only_theirs(
    server: ServerProcess, peers: Peers
) -> None:
    with trio.fail_after(TIMEOUT):
        admin, user = await boss(peers), await peers.online_user()
        listed = await admin.iq(f"<query xmlns='{NS_DISCO_ITEMS}' node='{NS_COMMANDS}'/>", to=DOMAIN)
        items = listed.findall(f"{{{NS_DISCO_ITEMS}}}query/{{{NS_DISCO_ITEMS}}}item")
        nodes = {item.get("node", "") for item in items}
        assert {n.removeprefix(f"{NS_ADMIN}#") for n in nodes if n.startswith(NS_ADMIN)} == COMMANDS
        assert {item.get("jid") for item in items} == {DOMAIN}
        assert all(item.get("name") for item in items)
        # Everyone else sees the commands for users (reminders, tests/integration/test_reminders.py).
        theirs = await user.iq(f"<query xmlns='{NS_DISCO_ITEMS}' node='{NS_COMMANDS}'/>", to=DOMAIN)
        assert theirs.get("type") == "result", show(theirs)
        user_nodes = {item.get("node", "") for item in theirs.iterfind(f".//{{{NS_DISCO_ITEMS}}}item")}
        assert user_nodes == {n for n in nodes if n.startswith("urn:imactor:reminders#")} != set()

        info = await admin.iq(f"<query xmlns='{NS_DISCO_INFO}' node='{node('announce')}'/>", to=DOMAIN)
        identity = info.find(f"{{{NS_DISCO_INFO}}}query/{{{NS_DISCO_INFO}}}identity")
        assert identity is not None, show(info)
        assert (identity.get("category"), identity.get("type")) == ("automation", "command-node")
        features = {f.get("var") for f in info.iterfind(f".//{{{NS_DISCO_INFO}}}feature")}
        assert features == {NS_COMMANDS, NS_DATA}
        refused = await user.iq(f"<query xmlns='{NS_DISCO_INFO}' node='{node('announce')}'/>", to=DOMAIN)
        assert error_condition(refused) == "forbidden"
        unknown = await admin.iq(f"<query xmlns='{NS_DISCO_INFO}' node='{node('no-such')}'/>", to=DOMAIN)
        assert error_condition(unknown) == "item-not-found"


async def test_a_user_who_is_not_an_administrator_is_forbidden(server: ServerProcess, peers: Peers) -> None:
    with trio.fail_after(TIMEOUT):
        user = await peers.online_user()
        for name in ("announce", "get-registered-users-num", "delete-motd"):
            assert error_condition(await command(user, name)) == "forbidden"
        admin = await boss(peers)
        assert error_condition(await command(admin, "no-such-command")) == "item-not-found"


# ---- the XEP-0050 session: actions and errors ----------------------------------------------------


async def test_actions_sessions_and_their_errors(server: ServerProcess, peers: Peers) -> None:
    with trio.fail_after(TIMEOUT):
        admin = await boss(peers)
        shown = await command(admin, "announce", action="execute")
        state, sessionid = status(shown)
        assert state == "executing"
        actions = shown.find(f"{CMD}/{{{NS_COMMANDS}}}actions")
        assert actions is not None, show(shown)
        assert actions.get("execute") == "complete"
        assert [a.tag.split("}")[1] for a in actions] == ["complete"]
        fields = form_fields(shown)
        assert fields["FORM_TYPE"] == [NS_ADMIN]
        assert "announcement" in fields

        # A stage with one form offers neither next nor prev (§4.6 bad-action).
        for wrong in ("next", "prev"):
            reply = await command(admin, "announce", action=wrong, sessionid=sessionid,
                                  fields={"announcement": "x"})  # fmt: skip
            assert (error_condition(reply), app_condition(reply)) == ("bad-request", "bad-action")
        malformed = await command(admin, "announce", action="jump", sessionid=sessionid)
        assert (error_condition(malformed), app_condition(malformed)) == ("bad-request", "malformed-action")
        no_form = await command(admin, "announce", action="complete", sessionid=sessionid)
        assert (error_condition(no_form), app_condition(no_form)) == ("bad-request", "bad-payload")

        # Another JID (even the same account's other resource) cannot go on with the session.
        other = await boss(peers)
        stolen = await command(other, "announce", sessionid=sessionid, fields={"announcement": "x"})
        assert (error_condition(stolen), app_condition(stolen)) == ("bad-request", "bad-sessionid")

        canceled = await command(admin, "announce", action="cancel", sessionid=sessionid)
        assert status(canceled) == ("canceled", sessionid)
        late = await command(admin, "announce", sessionid=sessionid, fields={"announcement": "x"})
        assert (error_condition(late), app_condition(late)) == ("bad-request", "bad-sessionid")
        made_up = await command(admin, "announce", sessionid="announce:made-up", fields={"announcement": "x"})
        assert (error_condition(made_up), app_condition(made_up)) == ("bad-request", "bad-sessionid")


async def test_a_refused_value_shows_the_form_again_with_the_reason(
    server: ServerProcess, peers: Peers, accounts: Accounts
) -> None:
    with trio.fail_after(TIMEOUT):
        admin = await boss(peers)
        (existing,) = accounts(1)
        _, sessionid = status(await command(admin, "add-user"))
        attempts: list[tuple[str, str, str]] = [
            ("new@elsewhere.example", "p", "not an account of"),
            ("new1@localhost", "q", "passwords differ"),
            (f"{existing}@localhost", "p", "exists already"),
        ]
        for jid, verify, reason in attempts:
            fields = {"accountjid": jid, "password": "p", "password-verify": verify}
            again = await command(admin, "add-user", sessionid=sessionid, fields=fields)
            assert status(again) == ("executing", sessionid), show(again)
            assert [kind for kind, _ in notes(again)] == ["error"]
            assert reason in notes(again)[0][1]
            assert "accountjid" in form_fields(again)


# ---- accounts (slixmpp's XEP-0050 plugin as the administrator's client) ---------------------------


def test_add_user_then_change_their_password_with_slixmpp(server: ServerProcess, clients: Clients) -> None:
    async def scenario() -> None:
        newcomer = f"hire{new_id()}".lower()
        async with clients.slixmpp(BOSS, "adhoc", plugins=("xep_0004", "xep_0030", "xep_0050")) as admin:
            adhoc = admin.plugin["xep_0050"]

            async def submit(name: str, values: Mapping[str, str]) -> Any:
                first = await adhoc.send_command(DOMAIN, node(name), action="execute")
                assert first["command"]["status"] == "executing"
                assert first["command"]["form"].get_values()["FORM_TYPE"] in (NS_ADMIN, [NS_ADMIN])
                form = admin.plugin["xep_0004"].make_form(ftype="submit")
                form.add_field(var="FORM_TYPE", ftype="hidden", value=NS_ADMIN)
                for var, value in values.items():
                    form.add_field(var=var, value=value)
                done = await adhoc.send_command(DOMAIN, node(name), action="complete", payload=form,
                                                sessionid=first["command"]["sessionid"])  # fmt: skip
                assert done["command"]["status"] == "completed"
                return done

            async def registered() -> int:
                done = await adhoc.send_command(DOMAIN, node("get-registered-users-num"))
                assert done["command"]["status"] == "completed"
                return int(done["command"]["form"].get_values()["registeredusersnum"])

            before = await registered()
            secret = "first secret"
            fields = {"accountjid": f"{newcomer}@{DOMAIN}", "password": secret, "password-verify": secret}
            added = await submit("add-user", fields)
            assert newcomer in added["command"]["notes"][0][1]
            assert await registered() == before + 1
            async with _login(clients, newcomer, "first secret"):
                pass
            await submit("change-user-password", {"accountjid": f"{newcomer}@{DOMAIN}", "password": "second"})
        with pytest.raises(AuthFailed) as refused:
            async with _login(clients, newcomer, "first secret"):
                pass
        assert refused.value.condition == "not-authorized"
        async with _login(clients, newcomer, "second"):
            pass

    run(scenario())


def _login(clients: Clients, username: str, password: str) -> AbstractAsyncContextManager[ClientXMPP]:
    return slixmpp_client(clients.jid(username, "sx"), password, clients.port)


def test_slixmpp_is_forbidden_without_the_rights(
    server: ServerProcess, clients: Clients, accounts: Accounts
) -> None:
    (name,) = accounts(1)

    async def scenario() -> None:
        async with clients.slixmpp(name, plugins=("xep_0004", "xep_0030", "xep_0050")) as xmpp:
            with pytest.raises(IqError) as refused:
                await xmpp.plugin["xep_0050"].send_command(DOMAIN, node("get-online-users-num"))
            assert refused.value.condition == "forbidden"
            listed = await xmpp.plugin["xep_0050"].get_commands(DOMAIN)
            # Only the commands for every user (reminders): none of XEP-0133's.
            assert [node for _, node, _ in listed["disco_items"]["items"] if node.startswith(NS_ADMIN)] == []

    run(scenario())


async def test_a_disabled_user_is_logged_out_cannot_log_in_until_reenabled(
    server: ServerProcess, peers: Peers, accounts: Accounts
) -> None:
    with trio.fail_after(WORKERS_TIMEOUT):
        admin = await boss(peers)
        (victim,) = accounts(1)
        online = await peers.online(victim)
        done = await run_command(
            admin, "disable-user", {"accountjids": [f"{victim}@localhost", "ghost@localhost"]}
        )
        assert notes(done) == [
            ("info", f"Disabled: {victim}@localhost"),
            ("error", "No such account: ghost@localhost"),
        ]
        assert await online.raw.stream_error() == "not-authorized"
        assert "account-disabled" in await login_refused(server, victim)
        # Still an account, listed among the disabled ones.
        registered = await run_command(admin, "get-registered-users-list", {"max_items": "none"})
        assert f"{victim}@localhost" in form_fields(registered)["registereduserjids"]
        disabled = await run_command(admin, "get-disabled-users-list", {"max_items": "none"})
        assert f"{victim}@localhost" in form_fields(disabled)["disableduserjids"]
        counted = await command(admin, "get-disabled-users-num")
        assert int(form_fields(counted)["disabledusersnum"][0]) == len(
            form_fields(disabled)["disableduserjids"]
        )

        await run_command(admin, "reenable-user", {"accountjids": f"{victim}@localhost"})
        disabled = await run_command(admin, "get-disabled-users-list", {"max_items": "none"})
        assert f"{victim}@localhost" not in form_fields(disabled).get("disableduserjids", [])
        back = await peers.online(victim)
        assert back.jid.startswith(f"{victim}@localhost/")


async def test_disabling_ends_a_login_that_authenticated_but_has_not_bound_yet(
    server: ServerProcess, peers: Peers, accounts: Accounts
) -> None:
    with trio.fail_after(WORKERS_TIMEOUT):
        admin = await boss(peers)
        (victim,) = accounts(1)
        raw = await RawClient.connect(server.c2s_port, DOMAIN)
        try:
            await raw.starttls()
            token = base64.b64encode(f"\0{victim}\0{PASSWORD}".encode()).decode()
            await raw.send(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{token}</auth>")
            await raw.expect(f"{{{NS_SASL}}}success")
            await raw.open_stream()  # authenticated; no resource bound yet
            await run_command(admin, "disable-user", {"accountjids": f"{victim}@localhost"})
            assert await raw.stream_error() == "not-authorized"
        finally:
            await raw.aclose()


async def test_a_deleted_user_is_logged_out_and_cannot_log_in(
    server: ServerProcess, peers: Peers, accounts: Accounts
) -> None:
    with trio.fail_after(WORKERS_TIMEOUT):
        admin = await boss(peers)
        (victim,) = accounts(1)
        online = await peers.online(victim)
        done = await run_command(admin, "delete-user", {"accountjids": f"{victim}@localhost"})
        assert notes(done) == [("info", f"Deleted: {victim}@localhost")]
        assert await online.raw.stream_error() == "not-authorized"
        assert "not-authorized" in await login_refused(server, victim)
        again = await run_command(admin, "delete-user", {"accountjids": f"{victim}@localhost"})
        assert notes(again) == [("error", f"No such account: {victim}@localhost")]


# ---- every worker: online users, announcements, ended sessions ---------------------------------


async def test_announcements_and_lists_reach_users_on_both_workers(
    server: ServerProcess, peers: Peers, accounts: Accounts
) -> None:
    with trio.fail_after(WORKERS_TIMEOUT):
        first, second = accounts(2)
        await wait_no_sessions(server)
        on_0, on_1 = await peer_on(server, 0, first), await peer_on(server, 1, second)
        try:
            admin = await boss(peers)
            listed = await run_command(admin, "get-online-users-list", {"max_items": "none"})
            online = form_fields(listed)["onlineuserjids"]
            assert {f"{first}@localhost", f"{second}@localhost", f"{BOSS}@localhost"} <= set(online)
            assert online == sorted(set(online))
            counted = await command(admin, "get-online-users-num")
            assert status(counted)[0] == "completed"
            assert int(form_fields(counted)["onlineusersnum"][0]) == len(online)

            lines = ["Down at 18:00.", "Back at 18:30."]
            await run_command(admin, "announce", {"subject": "Maintenance", "announcement": lines})
            for peer in (on_0, on_1):
                got = await peer.expect(message(from_=DOMAIN, type_="headline"))
                assert got.get("to") == peer.jid
                assert got.findtext(f"{C}subject") == "Maintenance"
                assert got.findtext(f"{C}body") == "Down at 18:00.\nBack at 18:30."

            # As a normal message instead (a field of this server's), without a subject.
            await run_command(admin, "announce", {"announcement": "Read this.", "type": "normal"})
            for peer in (on_0, on_1):
                got = await peer.expect(message(from_=DOMAIN, type_="normal"))
                assert (got.findtext(f"{C}subject"), got.findtext(f"{C}body")) == (None, "Read this.")
            _, sessionid = status(await command(admin, "announce"))
            refused = await command(admin, "announce", sessionid=sessionid,
                                    fields={"announcement": "x", "type": "chat"})  # fmt: skip
            assert status(refused)[0] == "executing"
            assert [kind for kind, _ in notes(refused)] == ["error"]
        finally:
            await on_0.aclose()
            await on_1.aclose()


async def test_end_user_session_ends_one_resource_or_all_on_any_worker(
    server: ServerProcess, peers: Peers, accounts: Accounts
) -> None:
    with trio.fail_after(WORKERS_TIMEOUT):
        (name,) = accounts(1)
        await wait_no_sessions(server)
        far, near = await peer_on(server, 1, name), await peer_on(server, 0, name)
        admin = await boss(peers)
        await run_command(admin, "end-user-session", {"accountjids": far.jid})
        assert await far.raw.stream_error() == "policy-violation"
        await near.sync()  # still there
        await run_command(admin, "end-user-session", {"accountjids": f"{name}@localhost"})
        assert await near.raw.stream_error() == "policy-violation"


# ---- the message of the day --------------------------------------------------------------------


async def test_the_message_of_the_day_comes_at_each_login_until_deleted(
    server: ServerProcess, peers: Peers, accounts: Accounts
) -> None:
    with trio.fail_after(WORKERS_TIMEOUT):
        admin = await boss(peers)
        early, late = accounts(2)
        already = await peers.online(early)
        await run_command(admin, "set-motd", {"motd": ["Welcome to the new server.", "Read the rules."]})
        text = "Welcome to the new server.\nRead the rules."
        now = await already.expect(message(from_=DOMAIN))  # online users get it at once
        assert now.findtext(f"{C}body") == text

        arriving = await peers.login(late)
        await arriving.roster()
        await arriving.available()
        motd = [e for e in arriving.inbox if e.tag == f"{C}message"]
        assert [(m.get("from"), m.findtext(f"{C}subject"), m.findtext(f"{C}body")) for m in motd] == [
            (DOMAIN, "Message of the day", text)
        ]
        arriving.inbox.clear()
        await arriving.available("<show>away</show>")  # a presence update is no new login
        await arriving.sync()
        assert [e for e in arriving.inbox if e.tag == f"{C}message"] == []

        edit = await command(admin, "edit-motd")
        assert form_fields(edit)["motd"] == ["Welcome to the new server.", "Read the rules."]
        await command(admin, "edit-motd", action="cancel", sessionid=status(edit)[1])

        deleted = await command(admin, "delete-motd")
        assert notes(deleted) == [("info", "The message of the day is deleted")]
        again = await peers.login(late, "second")
        await again.roster()
        await again.available()
        await again.sync()
        assert [e for e in again.inbox if e.tag == f"{C}message"] == []
        assert notes(await command(admin, "delete-motd")) == [("warn", "No message of the day was set")]
