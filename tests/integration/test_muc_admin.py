"""Rooms and the administrator: limits from TOML, the CLI, and rooms that outlive a restart."""

from __future__ import annotations

import json
from pathlib import Path

import trio

from tests.integration.conftest import PASSWORD
from tests.support.muc import configure, create_instant, heard, join, join_error, say, status_codes
from tests.support.peer import C, Peer, show
from tests.support.server import imactor_cli, running_server
from tests.support.timeouts import WORKERS_TIMEOUT as TIMEOUT

SERVICE = "conference.localhost"
LIMITS = """
[muc]
max_rooms_per_user = 1
"""


async def test_rooms_per_user_limit(tmp_path: Path) -> None:
    with running_server(tmp_path, users=[("maker", PASSWORD)], extra=LIMITS) as server:
        with trio.fail_after(TIMEOUT):
            maker = await Peer.online(server.c2s_port, "maker", PASSWORD)
            await create_instant(maker, f"first@{SERVICE}", "maker")
            assert await join_error(maker, f"second@{SERVICE}", "maker") == "not-allowed"
            # Joining a room that exists is not creating one: another session of the same account.
            other = await Peer.online(server.c2s_port, "maker", PASSWORD, "other")
            await join(other, f"first@{SERVICE}", "maker-again")
            for peer in (maker, other):
                await peer.aclose()


async def test_cli_lists_and_destroys_rooms(tmp_path: Path) -> None:
    users = [("owner", PASSWORD), ("guest", PASSWORD)]
    with running_server(tmp_path, users=users) as server:
        with trio.fail_after(TIMEOUT):
            owner = await Peer.online(server.c2s_port, "owner", PASSWORD)
            guest = await Peer.online(server.c2s_port, "guest", PASSWORD)
            room = f"townhall@{SERVICE}"
            await create_instant(owner, room, "owner")
            reply = await configure(owner, room, {"muc#roomconfig_roomname": "Town hall",
                                                  "muc#roomconfig_persistentroom": "1"})  # fmt: skip
            assert reply.get("type") == "result", show(reply)
            await join(guest, room, "guest")
            listed = await trio.to_thread.run_sync(imactor_cli, server.config_path, "room", "list", "--json")
            assert listed.returncode == 0, listed.stderr
            rooms = [json.loads(line) for line in listed.stdout.splitlines()]
            assert {"jid": room, "name": "Town hall", "public": True, "persistent": True,
                    "creator": "owner@localhost"} in rooms  # fmt: skip

            destroyed = await trio.to_thread.run_sync(
                imactor_cli, server.config_path, "room", "destroy", "townhall", "--reason", "closing",
                "--alternate", f"agora@{SERVICE}",
            )  # fmt: skip
            assert destroyed.returncode == 0, destroyed.stderr
            gone = await guest.expect(
                lambda e: e.get("from") == f"{room}/guest" and e.get("type") == "unavailable"
            )
            destroy = gone.find(
                "{http://jabber.org/protocol/muc#user}x/{http://jabber.org/protocol/muc#user}destroy"
            )
            assert destroy is not None, show(gone)
            assert destroy.get("jid") == f"agora@{SERVICE}"
            missing = await trio.to_thread.run_sync(
                imactor_cli, server.config_path, "room", "destroy", "townhall"
            )
            assert missing.returncode == 1
            assert "no room townhall@conference.localhost" in missing.stderr
            for peer in (owner, guest):
                await peer.aclose()


async def test_a_persistent_room_outlives_a_restart(tmp_path: Path) -> None:
    room = f"lasting@{SERVICE}"
    with running_server(tmp_path, users=[("keeper", PASSWORD)]) as server:
        with trio.fail_after(TIMEOUT):
            keeper = await Peer.online(server.c2s_port, "keeper", PASSWORD)
            await create_instant(keeper, room, "keeper")
            reply = await configure(keeper, room, {"muc#roomconfig_persistentroom": "1",
                                                   "muc#roomconfig_roomname": "Lasting"})  # fmt: skip
            assert reply.get("type") == "result", show(reply)
            await keeper.send(
                f"<message to='{room}' type='groupchat'><subject>kept topic</subject></message>"
            )
            for n in range(3):
                await say(keeper, room, f"old {n}")
                await heard(keeper, room, f"old {n}")
            await keeper.aclose()
    # A restart with the room empty; offline, the CLI still lists it.
    listed = imactor_cli(tmp_path / "imactor.toml", "room", "list")
    assert "lasting@conference.localhost" in listed.stdout
    with running_server(tmp_path) as server:
        with trio.fail_after(TIMEOUT):
            keeper = await Peer.online(server.c2s_port, "keeper", PASSWORD)
            back = await join(keeper, room, "keeper", history="<history maxstanzas='5'/>")
            assert "201" not in status_codes(back.self_presence)
            assert [m.findtext(f"{C}body") for m in back.history] == ["old 0", "old 1", "old 2"]
            assert back.subject.findtext(f"{C}subject") == "kept topic"
            await keeper.aclose()
    # Offline, the CLI destroys it in the database.
    destroyed = imactor_cli(tmp_path / "imactor.toml", "room", "destroy", "lasting")
    assert destroyed.returncode == 0, destroyed.stderr
    assert "lasting" not in imactor_cli(tmp_path / "imactor.toml", "room", "list").stdout
