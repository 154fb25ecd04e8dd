"""The sensitive-word filter (module `word_filter`, `imactor filter ...`) end to end.

One server for the module, two workers, with `word_filter` enabled, a compliance officer
(`officer`) as `alert_to`, and `check_interval` an hour: a list changed while the server runs must
reach every worker through the CLI's `reload-modules` request or SIGHUP, not by the periodic
check. Its lists, made with the CLI once the server runs:

- `profanity` (server, mask): darn, 敏感词
- `secrets` (server, reject): verboten, 绝密
- `watch` (server, alert): merger, 收购
- `lobby-only` (room:filtered@conference.localhost, reject): roomword

Clients: raw XML (`tests/support/peer.py`) where the exact stanza matters, slixmpp as an
application would use it.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from bench.peers.common import free_ports
from imactor.config import DEFAULT_MODULES
from tests.integration.conftest import PASSWORD, Accounts, server_log
from tests.support.clients import event_queue, run, slixmpp_client
from tests.support.muc import NS_MAM, create_instant, from_room, join, join_error, say
from tests.support.peer import (
    C,
    Element,
    Peer,
    Peers,
    bare,
    error_condition,
    message,
    new_id,
    presence,
    show,
    subscribe,
)
from tests.support.server import ServerProcess, add_users, imactor_cli, running_server
from tests.support.timeouts import TIMEOUT

NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
SENT = "{urn:xmpp:carbons:2}sent/{urn:xmpp:forward:0}forwarded/{jabber:client}message"
OFFICER = "officer"
ROOM = "filtered@conference.localhost"
MODULES = "modules = [" + ", ".join(f'"{name}"' for name in (*DEFAULT_MODULES, "word_filter")) + "]\n"
SETTINGS = f'\n[modules.word_filter]\nalert_to = ["{OFFICER}@localhost"]\ncheck_interval = 3600.0\n'
#: A remote domain pinned to a port where nothing listens: a message that passes the filter
#: bounces with remote-server-not-found, one refused never gets that far.
REMOTE = "remote.test"
FEDERATION = """
[listen.s2s]
host = "127.0.0.1"
port = 0

[s2s]
enabled = true
routes = {{ "{remote}" = "127.0.0.1:{port}" }}
"""
OMEMO = (
    "<encrypted xmlns='eu.siacs.conversations.axolotl'><header sid='1'><key rid='2'>a2V5</key>"
    "<iv>aXY=</iv></header><payload>Y2lwaGVy</payload></encrypted>"
    "<body>verboten fallback: I sent you an OMEMO encrypted message</body>"
)


def filter_cli(server: ServerProcess, *args: str) -> str:
    """Run `imactor filter ...` against the server's config; its stdout (it must succeed)."""
    done = imactor_cli(server.config_path, "filter", *args)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    directory = tmp_path_factory.mktemp("word-filter")
    (closed,) = free_ports(1)
    extra = SETTINGS + FEDERATION.format(remote=REMOTE, port=closed)
    with running_server(
        directory, server_options=MODULES, extra=extra, workers=2, log_level="info"
    ) as process:
        add_users(process.config_path, [(OFFICER, PASSWORD)])
        words = directory / "secrets.txt"
        words.write_text("# refused everywhere\nverboten\n\n绝密\n", encoding="utf-8")
        filter_cli(process, "add", "profanity", "darn", "敏感词")
        filter_cli(process, "import", "secrets", str(words), "--action", "reject")
        filter_cli(process, "add", "watch", "merger", "收购", "--action", "alert")
        filter_cli(process, "add", "lobby-only", "roomword", "--action", "reject", "--scope", "room:filtered")
        yield process


async def send(sender: Peer, to: str, body: str, type_: str = "chat", extra: str = "") -> str:
    message_id = new_id("m")
    await sender.send(
        f"<message to='{to}' id='{message_id}' type='{type_}'><body>{body}</body>{extra}</message>"
    )
    return message_id


async def delivered_body(sender: Peer, recipient: Peer, text: str) -> str:
    """Send `text` to `recipient`; the body it receives."""
    message_id = await send(sender, recipient.jid, text)
    got = await recipient.expect(message(id_=message_id))
    return got.findtext(f"{C}body") or ""


def refusal(bounce: Element) -> tuple[str | None, str]:
    return error_condition(bounce), bounce.findtext(f"{C}error/{{{NS_STANZAS}}}text") or ""


async def archived_bodies(peer: Peer, to: str | None = None) -> list[str]:
    """The bodies in `peer`'s archive (XEP-0313), or in the room `to`'s."""
    query_id = new_id("q")
    reply = await peer.iq(f"<query xmlns='{NS_MAM}' queryid='{query_id}'/>", type_="set", to=to)
    assert reply.get("type") == "result", show(reply)
    results = [e for e in peer.inbox if e.find(f"{{{NS_MAM}}}result") is not None]
    peer.inbox = [e for e in peer.inbox if e not in results]
    path = f"{{{NS_MAM}}}result/{{urn:xmpp:forward:0}}forwarded/{C}message/{C}body"
    return [r.findtext(path) or "" for r in results]


# ---- one-to-one messages -----------------------------------------------------------------------


async def test_a_masked_word_arrives_masked_and_is_archived_masked(
    server: ServerProcess, accounts: Accounts, peers: Peers
) -> None:
    with trio.fail_after(TIMEOUT):
        a, b = await peers.online_users(2)
        assert await delivered_body(a, b, "well darn it, Darn!") == "well **** it, ****!"
        assert await archived_bodies(b) == ["well **** it, ****!"]
        assert await archived_bodies(a) == ["well **** it, ****!"]
        # Inside another word of a spaced script it is not the word (no "Scunthorpe" mask).
        assert await delivered_body(a, b, "darnation, undarned") == "darnation, undarned"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("这是敏感词吗", "这是***吗"),
        ("这是敏 感 词吗", "这是*****吗"),  # spaces between the characters
        ("这是敏\u200b感\u200b词吗", "这是*****吗"),  # zero-width spaces
        ("这是敏\u3000感\u3000词吗", "这是*****吗"),  # ideographic spaces
        ("敏．感．词", "*****"),  # full-width full stops
        ("ＤＡＲＮ it", "**** it"),  # full-width Latin
        ("d.a r-n it", "******* it"),  # separators between Latin letters
        ("d\u200ba\u200br\u200bn", "*******"),
        ("d\u0336a\u0336r\u0336n\u0336 it", "******** it"),  # strike-through combining marks
    ],
)
async def test_words_match_across_separators_and_width(
    server: ServerProcess, accounts: Accounts, peers: Peers, text: str, expected: str
) -> None:
    with trio.fail_after(TIMEOUT):
        a, b = await peers.online_users(2)
        assert await delivered_body(a, b, text) == expected


async def test_a_refused_word_bounces_and_is_neither_delivered_nor_archived(
    server: ServerProcess, accounts: Accounts, peers: Peers
) -> None:
    alice, bob = accounts(2)
    with trio.fail_after(TIMEOUT):
        a = await peers.online(alice)
        b = await peers.online(bob)
        refused = await send(a, b.jid, "the VERBOTEN plan")
        bounce = await a.expect(message(id_=refused))
        condition, text = refusal(bounce)
        assert condition == "policy-violation", show(bounce)
        assert bounce.find(f"{C}error").get("type") == "modify", show(bounce)  # type: ignore[union-attr]
        assert "not allowed" in text, show(bounce)
        refused_cn = await send(a, bare(bob), "这是绝 密文件")
        assert refusal(await a.expect(message(id_=refused_cn)))[0] == "policy-violation"
        passed = await send(a, b.jid, "a clean one")
        earlier = await b.before(message(id_=passed))
        assert all(e.get("id") not in (refused, refused_cn) for e in earlier), [show(e) for e in earlier]
        assert await archived_bodies(b) == ["a clean one"]
        assert await archived_bodies(a) == ["a clean one"]


async def test_messages_to_other_servers_are_filtered_before_they_leave(
    server: ServerProcess, accounts: Accounts, peers: Peers
) -> None:
    """No actor of ours is on the recipient's side: the sender's session masks and refuses, and
    the sender's archive keeps what left (the masked text), nothing of a refused message."""
    (alice,) = accounts(1)
    with trio.fail_after(TIMEOUT):
        a = await peers.online(alice)
        refused = await send(a, f"someone@{REMOTE}", "the VERBOTEN plan")
        assert refusal(await a.expect(message(id_=refused)))[0] == "policy-violation"
        masked = await send(a, f"someone@{REMOTE}", "well darn it")
        unreachable = await a.expect(message(id_=masked))
        assert error_condition(unreachable) == "remote-server-not-found", show(unreachable)
        assert await archived_bodies(a) == ["well **** it"]


async def test_a_refused_word_is_not_stored_for_an_offline_account(
    server: ServerProcess, accounts: Accounts, peers: Peers
) -> None:
    alice, bob = accounts(2)
    with trio.fail_after(TIMEOUT):
        a = await peers.online(alice)
        refused = await send(a, bare(bob), "verboten while you were out")
        assert refusal(await a.expect(message(id_=refused)))[0] == "policy-violation"
        kept = await send(a, bare(bob), "darn, you were out")
        await a.sync()
        b = await peers.online(bob)
        got = await b.expect(message(id_=kept))
        assert got.findtext(f"{C}body") == "****, you were out", show(got)
        assert all(e.get("id") != refused for e in b.inbox), [show(e) for e in b.inbox]


async def test_an_alert_word_is_delivered_and_the_officer_is_told(
    server: ServerProcess, accounts: Accounts, peers: Peers
) -> None:
    alice, bob = accounts(2)
    with trio.fail_after(TIMEOUT):
        officer = await peers.online(OFFICER, new_id("desk"))
        a = await peers.online(alice)
        b = await peers.online(bob)
        assert await delivered_body(a, b, "the merger closes on Friday") == "the merger closes on Friday"
        alert = await officer.expect(
            lambda e: message(from_="localhost")(e) and alice in (e.findtext(f"{C}body") or "")
        )
        body = alert.findtext(f"{C}body") or ""
        assert f"{alice}@localhost/r -> {bob}@localhost/r" in body, body
        assert "words: merger (lists: watch (server))" in body, body
        assert "text: the merger closes on Friday" in body, body
        assert "word filter alert" in server_log(server)


def test_slixmpp_clients_see_masks_and_the_policy_error(server: ServerProcess, accounts: Accounts) -> None:
    alice, bob = accounts(2)

    async def scenario() -> None:
        async with (
            slixmpp_client(f"{alice}@localhost/pc", PASSWORD, server.c2s_port, send_presence=True) as a,
            slixmpp_client(f"{bob}@localhost/pc", PASSWORD, server.c2s_port, send_presence=True) as b,
        ):
            errors = event_queue(a, "message_error")
            received = event_queue(b, "message")
            a.send_message(mto=f"{bob}@localhost", mbody="this is 绝密", mtype="chat")
            error = await asyncio.wait_for(errors.get(), 10)
            # COMPAT: slixmpp's error plugin predates RFC 6120's <policy-violation/>; read the XML.
            assert error.xml.find(f"{C}error/{{{NS_STANZAS}}}policy-violation") is not None, str(error)
            assert "not allowed" in error["error"]["text"]
            a.send_message(mto=f"{bob}@localhost", mbody="oh 敏感词 again", mtype="chat")
            got = await asyncio.wait_for(received.get(), 10)
            assert got["body"] == "oh *** again", str(got)

    run(scenario())


async def test_sent_carbons_show_the_mask_and_nothing_of_a_refused_message(
    server: ServerProcess, accounts: Accounts, peers: Peers
) -> None:
    """The sender's other resources (XEP-0280) see what was delivered: masked, and nothing of
    a refused message."""
    alice, bob = accounts(2)
    with trio.fail_after(TIMEOUT):
        phone = await peers.online(alice, "phone")
        laptop = await peers.online(alice, "laptop")
        b = await peers.online(bob)
        enabled = await laptop.iq("<enable xmlns='urn:xmpp:carbons:2'/>", type_="set")
        assert enabled.get("type") == "result", show(enabled)
        refused = await send(phone, bare(bob), "verboten")
        assert refusal(await phone.expect(message(id_=refused)))[0] == "policy-violation"
        masked = await send(phone, bare(bob), "darn it")
        assert (await b.expect(message(id_=masked))).findtext(f"{C}body") == "**** it"

        def sent_copy(e: Element, message_id: str = masked) -> bool:
            inner = e.find(SENT)
            return inner is not None and inner.get("id") == message_id

        copy = await laptop.expect(sent_copy)
        assert copy.findtext(f"{SENT}/{C}body") == "**** it", show(copy)
        assert not [e for e in laptop.inbox if sent_copy(e, refused)], [show(e) for e in laptop.inbox]


# ---- encrypted messages -----------------------------------------------------------------------


async def test_encrypted_messages_pass_unchecked_by_default(
    server: ServerProcess, accounts: Accounts, peers: Peers
) -> None:
    with trio.fail_after(TIMEOUT):
        a, b = await peers.online_users(2)
        message_id = new_id("omemo")
        await a.send(f"<message to='{b.jid}' id='{message_id}' type='chat'>{OMEMO}</message>")
        got = await b.expect(message(id_=message_id))
        assert got.get("type") == "chat", show(got)
        assert (got.findtext(f"{C}body") or "").startswith("verboten fallback"), show(got)


def test_encrypted_messages_refused_when_configured(tmp_path_factory: pytest.TempPathFactory) -> None:
    directory = tmp_path_factory.mktemp("word-filter-e2e")
    settings = '\n[modules.word_filter]\nencrypted = "reject"\n'
    with running_server(directory, server_options=MODULES, extra=settings) as process:
        add_users(process.config_path, [("alice", PASSWORD), ("bob", PASSWORD)])

        async def scenario() -> None:
            with trio.fail_after(TIMEOUT):
                logins = Peers(process.c2s_port, PASSWORD)
                try:
                    a = await logins.online("alice")
                    b = await logins.online("bob")
                    encrypted = new_id("omemo")
                    await a.send(f"<message to='{b.jid}' id='{encrypted}' type='chat'>{OMEMO}</message>")
                    condition, text = refusal(await a.expect(message(id_=encrypted)))
                    assert condition == "policy-violation"
                    assert "cannot be checked" in text, text
                    plain = await send(a, b.jid, "readable")
                    earlier = await b.before(message(id_=plain))
                    assert all(e.get("id") != encrypted for e in earlier), [show(e) for e in earlier]
                finally:
                    await logins.aclose()

        trio.run(scenario)


# ---- presence to contacts ----------------------------------------------------------------------


async def test_status_texts_to_contacts_are_masked_or_removed(
    server: ServerProcess, accounts: Accounts, peers: Peers
) -> None:
    alice, bob = accounts(2)
    with trio.fail_after(TIMEOUT):
        a = await peers.online(alice)
        b = await peers.online(bob)
        await subscribe(b, a)  # bob sees alice's presence
        await a.send("<presence><status>darn Mondays</status></presence>")
        seen = await b.expect(presence(from_=a.jid))
        assert seen.findtext(f"{C}status") == "**** Mondays", show(seen)
        await a.send("<presence><show>away</show><status>verboten stuff</status></presence>")
        seen = await b.expect(presence(from_=a.jid))
        assert seen.findtext(f"{C}show") == "away", show(seen)
        assert seen.find(f"{C}status") is None, show(seen)
        error = await a.expect(lambda e: e.tag == f"{C}presence" and e.get("type") == "error")
        assert refusal(error)[0] == "policy-violation", show(error)


# ---- chat rooms ------------------------------------------------------------------------------


async def open_room(peers: Peers, accounts: Accounts, room: str = ROOM) -> tuple[Peer, Peer]:
    """A new instant `room` with its owner and one more occupant, "owner" and "guest"."""
    owner_name, guest_name = accounts(2)
    owner = await peers.online(owner_name)
    guest = await peers.online(guest_name)
    await create_instant(owner, room, "owner")
    await join(guest, room, "guest")
    owner.inbox.clear()
    return owner, guest


async def groupchat_body(peer: Peer, room: str, message_id: str) -> str:
    got = await peer.expect(lambda e: from_room(room, "groupchat")(e) and e.get("id") == message_id)
    return got.findtext(f"{C}body") or ""


async def test_room_messages_are_masked_refused_and_archived_masked(
    server: ServerProcess, accounts: Accounts, peers: Peers
) -> None:
    with trio.fail_after(TIMEOUT):
        room = f"masked-{new_id()}@conference.localhost".lower()
        owner, guest = await open_room(peers, accounts, room)
        masked = await say(owner, room, "darn 敏 感 词")
        assert await groupchat_body(guest, room, masked) == "**** *****"
        assert await groupchat_body(owner, room, masked) == "**** *****"
        refused = await say(owner, room, "verboten")
        bounce = await owner.expect(lambda e: e.get("id") == refused and e.get("type") == "error")
        assert refusal(bounce)[0] == "policy-violation", show(bounce)
        clean = await say(owner, room, "all clean")
        earlier = await guest.before(lambda e: e.get("id") == clean)
        assert all(e.get("id") != refused for e in earlier), [show(e) for e in earlier]
        assert await archived_bodies(guest, to=room) == ["**** *****", "all clean"]


async def test_room_subjects_are_masked_or_refused(
    server: ServerProcess, accounts: Accounts, peers: Peers
) -> None:
    with trio.fail_after(TIMEOUT):
        room = f"subject-{new_id()}@conference.localhost".lower()
        owner, guest = await open_room(peers, accounts, room)
        await owner.send(f"<message to='{room}' type='groupchat'><subject>darn topic</subject></message>")
        got = await guest.expect(
            lambda e: from_room(room, "groupchat")(e) and e.find(f"{C}subject") is not None
        )
        assert got.findtext(f"{C}subject") == "**** topic", show(got)
        await owner.send(
            f"<message to='{room}' id='s2' type='groupchat'><subject>绝密 topic</subject></message>"
        )
        bounce = await owner.expect(lambda e: e.get("id") == "s2" and e.get("type") == "error")
        assert refusal(bounce)[0] == "policy-violation", show(bounce)
        late = await peers.online(accounts(1)[0])
        joined = await join(late, room, "late")
        assert joined.subject.findtext(f"{C}subject") == "**** topic", show(joined.subject)


async def test_room_nicks_and_status_texts(server: ServerProcess, accounts: Accounts, peers: Peers) -> None:
    with trio.fail_after(TIMEOUT):
        room = f"nicks-{new_id()}@conference.localhost".lower()
        owner, guest = await open_room(peers, accounts, room)
        newcomer = await peers.online(accounts(1)[0])
        assert await join_error(newcomer, room, "darn") == "policy-violation"
        assert await join_error(newcomer, room, "Ve rbo ten") == "policy-violation"
        # A status text with a refused word refuses the presence; a masked one is masked.
        await guest.send(f"<presence to='{room}/guest'><status>verboten</status></presence>")
        error = await guest.expect(lambda e: from_room(room, kind="presence")(e) and e.get("type") == "error")
        assert refusal(error)[0] == "policy-violation", show(error)
        await guest.send(f"<presence to='{room}/guest'><status>darn busy</status></presence>")
        seen = await owner.expect(
            lambda e: e.get("from") == f"{room}/guest" and e.find(f"{C}status") is not None
        )
        assert seen.findtext(f"{C}status") == "**** busy", show(seen)
        # Leaving is never refused: the status goes, the exit stays.
        await guest.send(
            f"<presence to='{room}/guest' type='unavailable'><status>verboten</status></presence>"
        )
        gone = await owner.expect(
            lambda e: e.get("from") == f"{room}/guest" and e.get("type") == "unavailable"
        )
        assert gone.find(f"{C}status") is None, show(gone)
        # An alert word in a nick lets the occupant in and tells the officer.
        officer = await peers.online(OFFICER, new_id("desk"))
        await join(newcomer, room, "merger fan")
        alert = await officer.expect(lambda e: "room nickname" in (e.findtext(f"{C}body") or ""))
        assert f"{room}/merger fan" in (alert.findtext(f"{C}body") or ""), show(alert)


async def test_a_room_list_applies_only_to_its_room(
    server: ServerProcess, accounts: Accounts, peers: Peers
) -> None:
    with trio.fail_after(TIMEOUT):
        owner, _ = await open_room(peers, accounts, ROOM)
        refused = await say(owner, ROOM, "the roomword")
        bounce = await owner.expect(lambda e: e.get("id") == refused and e.get("type") == "error")
        assert refusal(bounce)[0] == "policy-violation", show(bounce)
        other = f"other-{new_id()}@conference.localhost".lower()
        owner2, guest2 = await open_room(peers, accounts, other)
        passed = await say(owner2, other, "the roomword")
        assert await groupchat_body(guest2, other, passed) == "the roomword"


# ---- lists changed while the server runs --------------------------------------------------------


async def test_a_list_changed_with_the_cli_applies_at_once(
    server: ServerProcess, accounts: Accounts, peers: Peers
) -> None:
    with trio.fail_after(TIMEOUT):
        a, b = await peers.online_users(2)
        assert await delivered_body(a, b, "a gizmo and a 小工具") == "a gizmo and a 小工具"
        out = await trio.to_thread.run_sync(filter_cli, server, "add", "late", "gizmo", "小工具")
        assert "the running server uses the new lists (2 workers)" in out, out
        assert await delivered_body(a, b, "a gizmo and a 小 工 具") == "a ***** and a *****"
        await trio.to_thread.run_sync(filter_cli, server, "set", "late", "--action", "reject")
        refused = await send(a, b.jid, "one more gizmo")
        assert refusal(await a.expect(message(id_=refused)))[0] == "policy-violation"
        await trio.to_thread.run_sync(filter_cli, server, "drop", "late")
        assert await delivered_body(a, b, "gizmo again") == "gizmo again"


def log_count(server: ServerProcess, text: str) -> int:
    return server_log(server).count(text)


async def test_sighup_makes_every_worker_read_the_lists(
    server: ServerProcess, accounts: Accounts, peers: Peers
) -> None:
    """A change the running server was not told of (the CLI found no status socket to tell)
    applies once SIGHUP makes each worker read the lists (`Module.on_reload`)."""
    alice, bob = accounts(2)
    elsewhere = server.config_path.with_name("no-status.toml")
    elsewhere.write_text(
        server.config_path.read_text() + '\n[status]\nsocket = "/nonexistent/imactor.sock"\n'
    )
    with trio.fail_after(TIMEOUT):
        a = await peers.online(alice)
        b = await peers.online(bob)
        done = await trio.to_thread.run_sync(imactor_cli, elsewhere, "filter", "add", "unheard", "widget")
        assert done.returncode == 0, done.stderr
        assert "running server" not in done.stdout, done.stdout
        assert await delivered_body(a, b, "a widget") == "a widget"  # not told, and not due to look
        loaded = log_count(server, "word lists loaded")
        server.proc.send_signal(signal.SIGHUP)
        while log_count(server, "word lists loaded") < loaded + 2:  # noqa: ASYNC110 - another process's log
            await trio.sleep(0.05)
        assert await delivered_body(a, b, "a widget") == "a ******"
        await trio.to_thread.run_sync(filter_cli, server, "drop", "unheard")


def test_a_word_file_with_a_bad_line_changes_nothing(server: ServerProcess, tmp_path: Path) -> None:
    words = tmp_path / "words.txt"
    words.write_text("fine\n...\n" + "x" * 500 + "\n", encoding="utf-8")
    done = imactor_cli(server.config_path, "filter", "import", "badfile", str(words))
    assert done.returncode == 1
    assert f"{words}:2: '...' has no letter or digit" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    listed = imactor_cli(server.config_path, "filter", "list", "badfile")
    assert listed.returncode == 1
    assert "no word list 'badfile'" in listed.stderr, listed.stderr
    words.write_text("fine\n" + "x" * 500 + "\n", encoding="utf-8")
    done = imactor_cli(server.config_path, "filter", "import", "badfile", str(words))
    assert f"{words}:2: a word of 500 characters is too long" in done.stderr, done.stderr


def test_bad_options_stop_the_server_naming_the_file_and_key(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    directory = tmp_path_factory.mktemp("word-filter-bad")
    bad = '\n[modules.word_filter]\nalert_to = ["not a jid/with resource"]\n'
    with (
        pytest.raises(
            RuntimeError, match=r"imactor\.toml: modules\.word_filter\.alert_to\[0\]: expected a bare"
        ),
        running_server(directory, server_options=MODULES, extra=bad),
    ):
        pass
