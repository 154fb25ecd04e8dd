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
from tests.support.muc import (
    NS_MUC_OWNER,
    configure,
    create_instant,
    heard,
    join,
    join_error,
    say,
    status_codes,
)
from tests.support.peer import (
    NS_STANZAS,
    C,
    Peer,
    Peers,
    bare,
    message,
    new_id,
    presence,
    show,
    stanza_error,
)
from tests.support.raw import RawClient
from tests.support.server import ServerProcess, imactor_cli, running_server
from tests.support.timeouts import TIMEOUT

SM = "urn:xmpp:sm:3"
NS_PRIVATE = "jabber:iq:private"
USERS = ("alice", "bob", "carol")
#: What the sender of a message reads when the disk is full (RFC 6120 §8.3.3.18).
FULL_DISK_TEXT = "the message could not be stored: the server's disk is full"
SERVICE = "conference.localhost"
FULL = ("wait", "resource-constraint")


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
            # vCard (XEP-0054) and PEP (XEP-0163) writes, answered by the account's actor.
            reply = await alice.iq("<vCard xmlns='vcard-temp'><FN>not stored</FN></vCard>", type_="set")
            assert stanza_error(reply) == ("wait", "resource-constraint"), show(reply)
            item = "<item id='current'><note xmlns='test:disk'>not stored</note></item>"
            publish = f"<publish node='test:disk'>{item}</publish>"
            publish = f"<pubsub xmlns='http://jabber.org/protocol/pubsub'>{publish}</pubsub>"
            reply = await alice.iq(publish, type_="set")
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


async def _room_name(owner: Peer, room: str) -> str | None:
    """The room's muc#roomconfig_roomname, from the owner's configuration form (XEP-0045 §10.2)."""
    form = await owner.iq(f"<query xmlns='{NS_MUC_OWNER}'/>", to=room)
    assert form.get("type") == "result", show(form)
    xdata = "{jabber:x:data}"
    field = form.find(f"{{{NS_MUC_OWNER}}}query/{xdata}x/{xdata}field[@var='muc#roomconfig_roomname']")
    assert field is not None, show(form)
    return field.findtext(f"{xdata}value")


async def test_a_room_refuses_changes_it_cannot_store(server: ServerProcess, peers: Peers) -> None:
    """A room whose state save fails answers the stanza that changed it with the error (RFC 6120
    §8.3.3.18), sends nothing of the change, keeps its earlier state and its occupants, and takes
    the same change once space returns. (It crashed: its actor died with the exception.)"""
    room, other_room, brief = (f"disk-{new_id('r')}@{SERVICE}" for _ in range(3))
    with trio.fail_after(TIMEOUT):
        owner, member, creator = await peers.online_users(3)
        await create_instant(owner, room, "owner")
        await join(member, room, "member")
        await create_instant(creator, brief, "creator")  # temporary: it ends when its occupant leaves
        log_before = len(server_log(server))
        filler = fill(server.data_dir)
        try:
            # muc#owner configuration (§10.2): the IQ gets the error, the room keeps its name.
            reply = await configure(owner, room, {"muc#roomconfig_roomname": "during"})
            assert stanza_error(reply) == FULL, show(reply)
            # A subject (§8.1): the sender gets the error, the occupants see no new subject.
            subject_id = new_id("s")
            subject = "<subject>during</subject>"
            await owner.send(f"<message to='{room}' type='groupchat' id='{subject_id}'>{subject}</message>")
            error = await owner.expect(message(id_=subject_id, type_="error"))
            assert stanza_error(error) == FULL, show(error)
            # An owner's destruction (§10.9): refused, the room and its occupants stay.
            destroy = f"<query xmlns='{NS_MUC_OWNER}'><destroy><reason>full</reason></destroy></query>"
            reply = await owner.iq(destroy, type_="set", to=room)
            assert stanza_error(reply) == FULL, show(reply)
            # The same through the administrator's command: it says so, and nothing else happens.
            name = room.partition("@")[0]
            command = await trio.to_thread.run_sync(imactor_cli, server.config_path, "room", "destroy", name)
            assert command.returncode == 1, command
            assert "the room was not destroyed: its deletion could not be stored" in command.stderr, command
            # A new room (§10.1): the creator gets an error presence and no room is left behind.
            assert await join_error(creator, other_room, "creator") == "resource-constraint"
            info = await creator.iq("<query xmlns='http://jabber.org/protocol/disco#info'/>", to=other_room)
            assert stanza_error(info) == ("cancel", "item-not-found"), show(info)
            # Leaving cannot be refused: the last occupant of a temporary room leaves (§10.1),
            # though the room's row could not be deleted yet (written again when its actor stops).
            await creator.send(f"<presence to='{brief}/creator' type='unavailable'/>")
            left = await creator.expect(presence(from_=f"{brief}/creator", type_="unavailable"))
            assert "110" in status_codes(left), show(left)
            # The room lives and talks: its messages go out (their archive write fails, logged).
            await say(member, room, "still here")
            await heard(owner, room, "still here")
            assert await _room_name(owner, room) == ""
        finally:
            filler.unlink()

        # Space is back: the same changes are stored and go out, with no restart.
        reply = await configure(owner, room, {"muc#roomconfig_roomname": "after"})
        assert reply.get("type") == "result", show(reply)
        assert await _room_name(owner, room) == "after"
        await owner.send(f"<message to='{room}' type='groupchat'><subject>after</subject></message>")
        earlier = await member.before(lambda e: e.findtext(f"{C}subject") == "after")
        assert not [e for e in earlier if e.find(f"{C}subject") is not None], [show(e) for e in earlier]
        await create_instant(creator, other_room, "creator")
        await create_instant(creator, brief, "creator")  # a new room: the one that ended is gone
        await say(member, room, "after")
        await heard(owner, room, "after")

    log = server_log(server)[log_before:]
    assert "Traceback" not in log, log
    assert "a change to the room was refused" in log, log


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
