"""Faults of the disk (issue 20): a full disk or a read-only database turns each write that could
not be stored into an error for whoever asked for it, one log line says so (rate limited), and
the server recovers by itself when space returns.

Full disk: the server's data directory is a small tmpfs (`tests.support.disk`), filled with a
filler file for a real ENOSPC under SQLite and emptied again, with the server running throughout.
Read-only: an ext4 image on a loop device, which the kernel turns read-only under the running
server as it does on an I/O error (`ext4_image`). A tmpfs cannot stand in: ``mount -o
remount,ro`` is refused (EBUSY) while the server holds the database open for writing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from lxml import etree

from tests.integration.conftest import PASSWORD, server_log
from tests.support.disk import ext4_image, fill, small_tmpfs
from tests.support.peer import NS_STANZAS, C, Peer, Peers, bare, message, new_id, show, stanza_error
from tests.support.raw import RawClient
from tests.support.server import ServerProcess, running_server
from tests.support.timeouts import TIMEOUT

SM = "urn:xmpp:sm:3"
NS_PRIVATE = "jabber:iq:private"
USERS = ("alice", "bob", "carol")
#: What the sender of a message reads when the disk is full (RFC 6120 §8.3.3.18).
FULL_DISK_TEXT = "the message could not be stored: the server's disk is full"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    directory = tmp_path_factory.mktemp("disk")
    with small_tmpfs(directory / "data", "8m"), running_server(
        directory, users=[(name, PASSWORD) for name in USERS], log_level="info"
    ) as process:
        yield process


async def _chat(sender: Peer, to: str, body: str, extra: str = "") -> str:
    message_id = new_id("m")
    body_xml = f"<body>{body}</body>{extra}"
    await sender.send(f"<message to='{to}' id='{message_id}' type='chat'>{body_xml}</message>")
    return message_id


def _error_text(element: etree._Element) -> str | None:
    return element.findtext(f"{C}error/{{{NS_STANZAS}}}text")


def _private(value: str) -> str:
    return f"<query xmlns='{NS_PRIVATE}'><note xmlns='test:disk'>{value}</note></query>"


async def test_a_full_disk_refuses_unstored_writes_with_errors_and_recovers(
    server: ServerProcess, peers: Peers
) -> None:
    with trio.fail_after(TIMEOUT):
        alice = await peers.online("alice")
        assert (await alice.iq(_private("before"), type_="set")).get("type") == "result"
        log_before = len(server_log(server))
        filler = fill(server.data_dir)
        try:
            # A chat message for an offline account: its archive write fails first (XEP-0313).
            archived = await _chat(alice, bare("bob"), "lost in the archive")
            error = await alice.expect(message(id_=archived, type_="error"))
            assert stanza_error(error) == ("wait", "resource-constraint"), show(error)
            assert _error_text(error) == FULL_DISK_TEXT
            # Not archived (XEP-0334 no-permanent-store): its offline write fails (XEP-0160).
            hint = "<no-permanent-store xmlns='urn:xmpp:hints'/>"
            offline = await _chat(alice, bare("bob"), "lost offline", hint)
            error = await alice.expect(message(id_=offline, type_="error"))
            assert stanza_error(error) == ("wait", "resource-constraint"), show(error)
            # IQ sets whose store failed get an error, never a result (RFC 6120 §8.2.3).
            reply = await alice.iq(_private("during"), type_="set")
            assert stanza_error(reply) == ("wait", "resource-constraint"), show(reply)
            reply = await alice.roster_set(f"<item jid='{bare('carol')}' name='Carol'/>")
            assert stanza_error(reply) == ("wait", "resource-constraint"), show(reply)
            # One the session answers itself (XEP-0077 password change): an error, the stream lives.
            change = "<username>alice</username><password>not stored</password>"
            reply = await alice.iq(f"<query xmlns='jabber:iq:register'>{change}</query>", type_="set")
            assert stanza_error(reply) == ("wait", "resource-constraint"), show(reply)
            # Stream management: the error reaches the sender, and `h` counts the message as
            # handled by that error (XEP-0198 §4), so the stream's later acks are not held up.
            sm_client = await RawClient.connect(server.c2s_port)
            await sm_client.login("alice", PASSWORD, "sm")
            await sm_client.send(f"<enable xmlns='{SM}'/>")
            await sm_client.expect(f"{{{SM}}}enabled")
            await sm_client.send(f"<message to='{bare('bob')}' id='sm1' type='chat'><body>x</body></message>")
            await sm_client.send(f"<r xmlns='{SM}'/>")
            errors, h = [], 0
            while not errors or h < 1:
                got = await sm_client.next_element(lambda e: e.tag in (f"{C}message", f"{{{SM}}}a"))
                if got.tag == f"{C}message":
                    errors.append(got)
                else:
                    h = int(got.get("h", "-1"))  # at once, and once more when the message is handled
            full = ("wait", "resource-constraint")
            assert [(e.get("id"), stanza_error(e)) for e in errors] == [("sm1", full)]
            assert h == 1
            await sm_client.aclose()
        finally:
            filler.unlink()

        # Space is back: the same server stores again, with no restart.
        kept = await _chat(alice, bare("bob"), "kept")
        reply = await alice.iq(_private("after"), type_="set")
        assert reply.get("type") == "result", show(reply)
        bob = await peers.online("bob")
        delivered = await bob.expect(message(id_=kept))
        assert delivered.findtext(f"{C}body") == "kept"
        await bob.sync()
        await bob.roster()  # once more: the offline messages were all delivered before this
        assert [e.findtext(f"{C}body") for e in bob.inbox if e.tag == f"{C}message"] == []
        await alice.sync()
        assert not [e for e in alice.inbox if e.get("id") == kept], [show(e) for e in alice.inbox]
        stored = await alice.iq(_private(""), type_="get")
        assert stored.findtext(f"{{{NS_PRIVATE}}}query/{{test:disk}}note") == "after"
        assert bare("carol") not in await alice.roster_items()

    log = server_log(server)[log_before:]
    assert "Traceback" not in log, log
    refused = [line for line in log.splitlines() if "writes refused" in line]
    assert len(refused) == 1, log  # rate limited: one line for every write refused
    assert "database or disk is full" in refused[0], refused
    assert "free disk space: writes resume by themselves" in refused[0], refused
    assert sum("writes succeed again" in line for line in log.splitlines()) == 1, log


async def test_a_database_turned_read_only_refuses_writes_with_errors(tmp_path: Path) -> None:
    with ext4_image(tmp_path / "data", "16M") as disk, running_server(
        tmp_path, users=[("alice", PASSWORD), ("bob", PASSWORD)], log_level="info"
    ) as server:
        peers = Peers(server.c2s_port, PASSWORD)
        try:
            with trio.fail_after(TIMEOUT):
                alice = await peers.online("alice")
                # A server that has written before: its writer's files are open (as they would
                # be in a server that ran for a while) when the disk turns read-only.
                assert (await alice.iq(_private("before"), type_="set")).get("type") == "result"
                await _chat(alice, bare("bob"), "kept before")
                # An IQ through bob's actor, behind the message: it is stored by the answer.
                await alice.iq("<query xmlns='http://jabber.org/protocol/disco#info'/>", to=bare("bob"))
                disk.make_read_only()
                sent = await _chat(alice, bare("bob"), "not kept")
                error = await alice.expect(message(id_=sent, type_="error"))
                assert stanza_error(error) == ("cancel", "internal-server-error"), show(error)
                assert _error_text(error) == "the message could not be stored"
                reply = await alice.iq(_private("during"), type_="set")
                assert stanza_error(reply) == ("cancel", "internal-server-error"), show(reply)
                await alice.sync()  # the account's actor lives on and answers what needs no write
                again = await _chat(alice, bare("bob"), "not kept either")
                await alice.expect(message(id_=again, type_="error"))
        finally:
            await peers.aclose()
    log = server_log(server)  # stopped: its shutdown is in the log too
    assert "Traceback" not in log, log
    refused = [line for line in log.splitlines() if "writes refused" in line]
    assert len(refused) == 1, log
    assert "disk I/O error" in refused[0], refused
    assert "once the database file is writable again" in refused[0], refused
