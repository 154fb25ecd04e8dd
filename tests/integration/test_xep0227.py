"""`imactor import` of XEP-0227 files written by a real Prosody 0.12 and a real ejabberd 23.01
(tests/data/xep0227/, made by scripts/make_xep0227_samples.py), then the real server: the users
log in with their old passwords and find their rosters, pending requests, vCards, private XML,
PEP items, archives and offline messages.

Credentials: both peers' exports hold SCRAM-SHA-1 verifiers only (Prosody 0.12's hashed store
keeps no other; ejabberd is configured as Debian ships it, `auth_password_format: scram` with
its default hash SHA-1). imactor keeps them as they are (salt, iteration count, keys), so
SCRAM-SHA-1 and PLAIN work with the old password; SCRAM-SHA-256 cannot (no SHA-256 verifier
can be made without the password) and fails like a wrong password would.

Each test runs its own server: both files hold the same three accounts (alice, bob, carol).
"""

from __future__ import annotations

import base64
from pathlib import Path

import trio
from lxml import etree

from tests.support import clients
from tests.support.clients import (
    SASL_NS,
    ScramClient,
    bound_jid,
    raw_bind,
    raw_scram,
    raw_tls_stream,
    slixmpp_client,
)
from tests.support.peer import C, Peer, message, presence
from tests.support.pie_samples import EJABBERD_MAIN, PASSWORDS, PROSODY_FILES
from tests.support.server import imactor_cli, running_server
from tests.support.timeouts import TIMEOUT

NS_MAM = "urn:xmpp:mam:2"
NS_NICK = "http://jabber.org/protocol/nick"


def run(check: object, *args: object) -> None:
    async def main() -> None:
        with trio.fail_after(TIMEOUT):
            await check(*args)  # type: ignore[operator]

    trio.run(main)


async def scram_login(port: int, username: str, mechanism: str) -> tuple[etree._Element, dict[str, str]]:
    """SCRAM with the old password; the last SASL element and the server-first-message's fields."""
    client, _ = await raw_tls_stream(port)
    try:
        scram = ScramClient(mechanism, username, PASSWORDS[username])
        result, server_first = await raw_scram(client, scram, mechanism)
        fields = dict(f.split("=", 1) for f in (server_first or b"").decode().split(",") if "=" in f)
        if result.tag == f"{{{SASL_NS}}}success":
            assert scram.verify(base64.b64decode(result.text or "")), "the server's signature (ServerKey)"
            assert bound_jid(await raw_bind(client, "old-password")) == f"{username}@localhost/old-password"
        return result, fields
    finally:
        await client.aclose()


async def vcard_fn(peer: Peer) -> str | None:
    reply = await peer.iq("<vCard xmlns='vcard-temp'/>")
    return reply.findtext("{vcard-temp}vCard/{vcard-temp}FN")


async def private_note(peer: Peer) -> str | None:
    reply = await peer.iq("<query xmlns='jabber:iq:private'><storage xmlns='storage:rosternotes'/></query>")
    return reply.findtext(".//{storage:rosternotes}note")


async def check_alice(port: int) -> None:
    """What alice had on both peers: her roster, carol's unanswered request, vCard, private XML."""
    alice = await Peer.login(port, "alice", PASSWORDS["alice"], "laptop")  # PLAIN, the old password
    try:
        items = await alice.roster_items()
        assert set(items) == {"bob@localhost"}  # carol's request alone is no roster item (§3.1.3)
        bob = items["bob@localhost"]
        assert (bob.get("name"), bob.get("subscription"), bob.get("ask")) == ("Bob", "both", None)
        assert sorted(g.text or "" for g in bob) == ["Friends", "Work"]
        assert await vcard_fn(alice) == "Alice Liddell"
        assert await private_note(alice) == "Met at the tea party"
        await alice.available()
        # RFC 6121 §3.1.3: the pending request is delivered again at login.
        await alice.expect(presence(from_="carol@localhost", type_="subscribe"))
    finally:
        await alice.aclose()


async def check_carol(port: int) -> None:
    carol = await Peer.login(port, "carol", PASSWORDS["carol"], "desk")
    try:
        alice = (await carol.roster_items())["alice@localhost"]
        assert (alice.get("subscription"), alice.get("ask"), alice.get("name")) == (
            "none",
            "subscribe",
            "Alice",
        )
        assert [g.text for g in alice] == ["Colleagues"]
    finally:
        await carol.aclose()


async def check_prosody_extras(port: int) -> None:
    """What only Prosody's export holds: the message archive and a PEP node."""
    alice = await Peer.login(port, "alice", PASSWORDS["alice"], "laptop")
    try:
        await alice.send(f"<iq type='set' id='mam1'><query xmlns='{NS_MAM}' queryid='q1'/></iq>")
        earlier = await alice.before(lambda e: e.tag == f"{C}iq" and e.get("id") == "mam1")
        bodies = [m.findtext(f".//{C}body") for m in earlier if m.find(f"{{{NS_MAM}}}result") is not None]
        assert bodies == ["Hello Bob", "Hi Alice!", "Are you there, Bob?"]
        reply = await alice.iq(
            f"<pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='{NS_NICK}'/></pubsub>",
            to="alice@localhost",
        )
        assert reply.findtext(f".//{{{NS_NICK}}}nick") == "Alice L.", etree.tostring(reply)
    finally:
        await alice.aclose()


async def check_offline(port: int) -> None:
    """bob was offline when alice wrote on ejabberd: the message waits for him here."""
    bob = await Peer.login(port, "bob", PASSWORDS["bob"], "phone")
    try:
        items = await bob.roster_items()
        assert items["alice@localhost"].get("subscription") == "both"
        await bob.send("<presence/>")
        waiting = await bob.expect(message(from_="alice@localhost/laptop"))
        assert waiting.findtext(f"{C}body") == "Are you there, Bob?"
        assert waiting.find("{urn:xmpp:delay}delay").get("stamp", "").startswith("2026-")  # type: ignore[union-attr]
        # ejabberd's own archive id for the message is not handed out as if it were ours
        assert [s.get("id") for s in waiting.iter("{urn:xmpp:sid:0}stanza-id")] == []
    finally:
        await bob.aclose()


def test_prosody_export_logs_in_with_old_passwords(tmp_path: Path) -> None:
    with running_server(tmp_path) as server:
        result = imactor_cli(server.config_path, "import", *map(str, PROSODY_FILES))
        assert result.returncode == 0, result.stderr
        assert "changed 3 of 3 accounts" in result.stdout
        assert "note: the server is running" in result.stdout  # its status socket answered

        async def checks() -> None:
            success, fields = await scram_login(server.c2s_port, "alice", "SCRAM-SHA-1")
            assert success.tag == f"{{{SASL_NS}}}success", etree.tostring(success)
            assert fields["i"] == "10000"  # Prosody's verifier as it was: its iteration count
            failure, _ = await scram_login(server.c2s_port, "alice", "SCRAM-SHA-256")
            assert failure.find(f"{{{SASL_NS}}}not-authorized") is not None  # no SHA-256 verifier
            await check_alice(server.c2s_port)
            await check_carol(server.c2s_port)
            await check_prosody_extras(server.c2s_port)

        run(checks)


def test_ejabberd_export_logs_in_with_old_passwords(tmp_path: Path) -> None:
    with running_server(tmp_path) as server:
        result = imactor_cli(server.config_path, "import", str(EJABBERD_MAIN))  # XIncludes its host file
        assert result.returncode == 0, result.stderr
        assert "bob: new account" in result.stdout
        assert "offline messages 1" in result.stdout

        async def checks() -> None:
            for name in PASSWORDS:
                success, fields = await scram_login(server.c2s_port, name, "SCRAM-SHA-1")
                assert success.tag == f"{{{SASL_NS}}}success", (name, etree.tostring(success))
                assert fields["i"] == "4096"  # ejabberd's count: its verifier, not a new one
            await check_alice(server.c2s_port)
            await check_carol(server.c2s_port)
            await check_offline(server.c2s_port)

        run(checks)

        async def with_slixmpp() -> None:
            """A real client library, with the mechanism the old verifier serves."""
            jid, password = "alice@localhost/slixmpp", PASSWORDS["alice"]
            async with slixmpp_client(jid, password, server.c2s_port, mechanism="SCRAM-SHA-1") as xmpp:
                await xmpp.get_roster()
                bob = xmpp.client_roster["bob@localhost"]
                state = (bob["name"], bob["subscription"], sorted(bob["groups"]))
                assert state == ("Bob", "both", ["Friends", "Work"])

        clients.run(with_slixmpp())
