"""Multi-user chat with real client libraries: slixmpp's XEP-0045 plugin and aioxmpp's MUCClient."""

from __future__ import annotations

import asyncio

import aioxmpp
import aioxmpp.muc
import slixmpp

from tests.integration.conftest import PASSWORD, Accounts
from tests.support.clients import aioxmpp_client, event_queue, run, slixmpp_client
from tests.support.server import ServerProcess

SERVICE = "conference.localhost"
WAIT = 10


def test_slixmpp_creates_a_room_and_aioxmpp_joins_and_talks(
    server: ServerProcess, accounts: Accounts
) -> None:
    alice, bob = accounts(2)
    room = f"libraries@{SERVICE}"

    async def scenario() -> None:
        async with slixmpp_client(f"{alice}@localhost/sx", PASSWORD, server.c2s_port,
                                  plugins=("xep_0030", "xep_0045", "xep_0004")) as a:  # fmt: skip
            muc = a.plugin["xep_0045"]
            self_presence, _subject, _occupants, _history = await muc.join_muc_wait(
                slixmpp.JID(room), "alice", maxstanzas=0, timeout=WAIT
            )
            assert {110, 201} <= set(self_presence["muc"]["status_codes"])
            form = await muc.get_room_config(room, timeout=WAIT)
            form.set_values({"muc#roomconfig_roomname": "Libraries", "muc#roomconfig_persistentroom": True})
            await muc.set_room_config(room, form, timeout=WAIT)
            heard = event_queue(a, "groupchat_message")

            async with aioxmpp_client(f"{bob}@localhost/ax", PASSWORD, server.c2s_port) as b:
                client = b.summon(aioxmpp.MUCClient)
                bob_room, entered = client.join(aioxmpp.JID.fromstr(room), "bob")
                await asyncio.wait_for(entered, WAIT)
                assert {m.nick for m in bob_room.members} == {"alice", "bob"}
                bob_heard: asyncio.Queue[str] = asyncio.Queue()
                bob_room.on_message.connect(
                    lambda msg, member, source, **_: bob_heard.put_nowait(msg.body.any())
                )

                a.send_message(mto=slixmpp.JID(room), mbody="hello from slixmpp", mtype="groupchat")
                assert await asyncio.wait_for(_next_body(bob_heard, "hello from slixmpp"), WAIT)
                reply = aioxmpp.Message(type_=aioxmpp.MessageType.GROUPCHAT)
                reply.body[None] = "hello from aioxmpp"
                await bob_room.send_message(reply)
                while True:
                    message = await asyncio.wait_for(heard.get(), WAIT)
                    if message["body"] == "hello from aioxmpp":
                        assert message["mucnick"] == "bob"
                        break
                await bob_room.leave()

    run(scenario())


async def _next_body(queue: asyncio.Queue[str], body: str) -> bool:
    while await queue.get() != body:
        pass
    return True
