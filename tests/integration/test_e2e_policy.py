"""The end-to-end encryption policy (`[modules.e2e_policy] mode`), end to end over raw XML and slixmpp.

The module's `server` fixture overrides the shared one: a server whose policy is `require`; the
`off` mode gets a server of its own. The default (`allow`) is what every other test module runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import trio

from bench.peers.common import free_ports
from tests.integration.conftest import PASSWORD, Accounts
from tests.support.clients import Clients, event_queue, run
from tests.support.peer import C, Element, Peer, Peers, bare, error_condition, message, new_id, show
from tests.support.server import ServerProcess, add_users, running_server
from tests.support.timeouts import TIMEOUT

NS_MAM = "urn:xmpp:mam:2"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
OMEMO = (
    "<encrypted xmlns='eu.siacs.conversations.axolotl'><header sid='1'><key rid='2'>a2V5</key>"
    "<iv>aXY=</iv></header><payload>Y2lwaGVy</payload></encrypted>"
    "<body>I sent you an OMEMO encrypted message but your client doesn't seem to support that.</body>"
)
OMEMO2 = "<encrypted xmlns='urn:xmpp:omemo:2'><header sid='1'/><payload>eA==</payload></encrypted><body/>"
OPENPGP = "<openpgp xmlns='urn:xmpp:openpgp:0'>LS0tLS1CRUdJTiBQR1A=</openpgp><body>encrypted</body>"


#: A remote domain pinned to a port where nothing listens: a message that passes the policy
#: bounces with remote-server-not-found, one refused never gets that far.
REMOTE = "remote.test"


def _policy(mode: str) -> str:
    (closed,) = free_ports(1)
    return f"""
[modules.e2e_policy]
mode = "{mode}"

[listen.s2s]
host = "127.0.0.1"
port = 0

[s2s]
enabled = true
routes = {{ "{REMOTE}" = "127.0.0.1:{closed}" }}
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    directory = tmp_path_factory.mktemp("e2e-require")
    with running_server(directory, extra=_policy("require")) as process:
        yield process


async def send(sender: Peer, to: str, payload: str, type_: str = "chat") -> str:
    message_id = new_id("m")
    await sender.send(f"<message to='{to}' id='{message_id}' type='{type_}'>{payload}</message>")
    return message_id


async def archived_ids(peer: Peer) -> list[str]:
    """The ids of the messages in `peer`'s archive (XEP-0313, one page)."""
    query_id = new_id("q")
    reply = await peer.iq(f"<query xmlns='{NS_MAM}' queryid='{query_id}'/>", type_="set")
    assert reply.get("type") == "result", show(reply)
    results = [e for e in peer.inbox if e.find(f"{{{NS_MAM}}}result") is not None]
    peer.inbox = [e for e in peer.inbox if e not in results]
    inner = [r.find(f"{{{NS_MAM}}}result/{{urn:xmpp:forward:0}}forwarded/{C}message") for r in results]
    return [m.get("id", "") for m in inner if m is not None]


def refusal_text(bounce: Element) -> str:
    return bounce.findtext(f"{C}error/{{{NS_STANZAS}}}text") or ""


async def test_require_refuses_plaintext_and_stores_nothing(server: ServerProcess, peers: Peers) -> None:
    with trio.fail_after(TIMEOUT):
        a, b = await peers.online_users(2)
        plain = await send(a, b.bare, "<body>the launch code is 1234</body>")
        bounce = await a.expect(message(id_=plain))
        assert error_condition(bounce) == "policy-violation", show(bounce)
        assert bounce.find(f"{C}error").get("type") == "modify", show(bounce)  # type: ignore[union-attr]
        assert "requires end-to-end encryption" in refusal_text(bounce), show(bounce)
        encrypted = await send(a, b.bare, OMEMO)
        earlier = await b.before(message(id_=encrypted))
        assert all(e.get("id") != plain for e in earlier), [show(e) for e in earlier]
        assert await archived_ids(b) == [encrypted]
        assert await archived_ids(a) == [encrypted]


async def test_require_holds_for_messages_to_other_servers(server: ServerProcess, peers: Peers) -> None:
    """No actor of ours sees a message to another server's user: the sender's session checks it
    before it leaves, and before the archive keeps the sender's copy."""
    with trio.fail_after(TIMEOUT):
        (a,) = await peers.online_users(1)
        plain = await send(a, f"someone@{REMOTE}", "<body>the launch code is 1234</body>")
        bounce = await a.expect(message(id_=plain))
        assert error_condition(bounce) == "policy-violation", show(bounce)
        assert "requires end-to-end encryption" in refusal_text(bounce), show(bounce)
        # An encrypted one passes the policy (and is archived): it bounces only for want of a server.
        encrypted = await send(a, f"someone@{REMOTE}", OMEMO)
        unreachable = await a.expect(message(id_=encrypted))
        assert error_condition(unreachable) == "remote-server-not-found", show(unreachable)
        assert await archived_ids(a) == [encrypted]


async def test_require_refuses_plaintext_to_an_offline_account(
    server: ServerProcess, accounts: Accounts, peers: Peers
) -> None:
    alice, bob = accounts(2)
    with trio.fail_after(TIMEOUT):
        a = await peers.online(alice)
        plain = await send(a, bare(bob), "<body>nobody may read this</body>")
        bounce = await a.expect(message(id_=plain))
        assert error_condition(bounce) == "policy-violation", show(bounce)
        encrypted = await send(a, bare(bob), OMEMO2)
        await a.sync()
        b = await peers.online(bob)
        got = await b.expect(message(id_=encrypted))
        assert got.find("{urn:xmpp:omemo:2}encrypted") is not None, show(got)
        assert all(e.get("id") != plain for e in b.inbox), [show(e) for e in b.inbox]


async def test_require_lets_encrypted_and_exempt_messages_through(
    server: ServerProcess, peers: Peers
) -> None:
    with trio.fail_after(TIMEOUT):
        a, b = await peers.online_users(2)
        passing = [
            await send(a, b.jid, OMEMO),
            await send(a, b.jid, OMEMO2),
            await send(a, b.jid, OPENPGP),
            await send(a, b.jid, "<x xmlns='jabber:x:encrypted'>cGdw</x><body>pgp</body>", type_="normal"),
            await send(a, b.jid, "<composing xmlns='http://jabber.org/protocol/chatstates'/>"),
            await send(a, b.jid, "<received xmlns='urn:xmpp:receipts' id='r1'/>", type_="normal"),
            await send(a, b.jid, "<body>news flash</body>", type_="headline"),
        ]
        for message_id in passing:
            got = await b.expect(message(id_=message_id))
            assert got.get("type") != "error", show(got)
        assert all(error_condition(e) is None for e in a.inbox), [show(e) for e in a.inbox]


def test_slixmpp_sender_gets_the_policy_error(clients: Clients, accounts: Accounts) -> None:
    alice, bob = accounts(2)

    async def scenario() -> None:
        async with (
            clients.slixmpp(alice, "pc", send_presence=True) as a,
            clients.slixmpp(bob, "pc", send_presence=True),
        ):
            errors = event_queue(a, "message_error")
            a.send_message(mto=f"{bob}@localhost", mbody="plaintext", mtype="chat")
            error = await asyncio.wait_for(errors.get(), TIMEOUT)
            # COMPAT: slixmpp's error plugin predates RFC 6120's <policy-violation/>; read the XML.
            assert error.xml.find(f"{C}error/{{{NS_STANZAS}}}policy-violation") is not None, str(error)
            assert "end-to-end" in error["error"]["text"]

    run(scenario())


def test_off_refuses_encrypted_messages(tmp_path_factory: pytest.TempPathFactory) -> None:
    directory = tmp_path_factory.mktemp("e2e-off")
    with running_server(directory, extra=_policy("off")) as off:
        add_users(off.config_path, [("alice", PASSWORD), ("bob", PASSWORD)])

        async def scenario() -> None:
            with trio.fail_after(TIMEOUT):
                logins = Peers(off.c2s_port, PASSWORD)
                try:
                    a = await logins.online("alice")
                    b = await logins.online("bob")
                    encrypted = await send(a, b.jid, OMEMO)
                    bounce = await a.expect(message(id_=encrypted))
                    assert error_condition(bounce) == "policy-violation", show(bounce)
                    assert "does not permit end-to-end" in refusal_text(bounce), show(bounce)
                    plain = await send(a, b.jid, "<body>readable</body>")
                    earlier = await b.before(message(id_=plain))
                    assert all(e.get("id") != encrypted for e in earlier), [show(e) for e in earlier]
                    # To another server too: refused in the session, never archived.
                    remote = await send(a, f"someone@{REMOTE}", OMEMO)
                    bounce = await a.expect(message(id_=remote))
                    assert error_condition(bounce) == "policy-violation", show(bounce)
                    assert remote not in await archived_ids(a)
                finally:
                    await logins.aclose()

        trio.run(scenario)


def test_an_unknown_mode_stops_the_server_from_starting(tmp_path_factory: pytest.TempPathFactory) -> None:
    directory = tmp_path_factory.mktemp("e2e-bad")
    bad = '\n[modules.e2e_policy]\nmode = "sometimes"\n'
    with (
        pytest.raises(RuntimeError, match=r"modules\.e2e_policy\.mode"),
        running_server(directory, extra=bad),
    ):
        pass


async def test_require_makes_no_carbon_of_a_refused_message(server: ServerProcess, peers: Peers) -> None:
    with trio.fail_after(TIMEOUT):
        phone, laptop = await peers.devices("phone", "laptop")
        b = await peers.online_user()
        enabled = await laptop.iq("<enable xmlns='urn:xmpp:carbons:2'/>", type_="set")
        assert enabled.get("type") == "result", show(enabled)
        plain = await send(phone, b.bare, "<body>plaintext</body>")
        bounce = await phone.expect(message(id_=plain))
        assert error_condition(bounce) == "policy-violation", show(bounce)
        encrypted = await send(phone, b.bare, OMEMO)

        def sent_copy(e: Element) -> bool:
            inner = e.find("{urn:xmpp:carbons:2}sent/{urn:xmpp:forward:0}forwarded/{jabber:client}message")
            return inner is not None and inner.get("id") == encrypted

        earlier = await laptop.before(sent_copy)
        assert all(e.find("{urn:xmpp:carbons:2}sent") is None for e in earlier), [show(e) for e in earlier]
