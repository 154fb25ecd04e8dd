"""Multi-user chat with real client libraries: slixmpp's XEP-0045 plugin and aioxmpp's MUCClient.

Each library goes through the use cases an application has (join, configure, topic, history,
voice requests, private messages, invitations, kick, ban, leave) the way applications drive it:
the next request goes out without waiting for the answer to the one before (RFC 6120 §10.1
keeps them in order), and every check waits for the library's own event, under a timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aioxmpp
import aioxmpp.errors
import aioxmpp.im
import aioxmpp.muc
import aioxmpp.muc.xso as muc_xso
import pytest
import slixmpp
from slixmpp.exceptions import PresenceError

from tests.integration.conftest import Accounts
from tests.support.clients import Clients, event_queue, run

SERVICE = "conference.localhost"
WAIT = 10
SLIXMPP_PLUGINS = ("xep_0030", "xep_0004", "xep_0045")
NS_REQUEST = "http://jabber.org/protocol/muc#request"
T = TypeVar("T")


def test_slixmpp_creates_a_room_and_aioxmpp_joins_and_talks(clients: Clients, accounts: Accounts) -> None:
    alice, bob = accounts(2)
    room = f"libraries@{SERVICE}"

    async def scenario() -> None:
        async with clients.slixmpp(alice, plugins=("xep_0030", "xep_0045", "xep_0004")) as a:
            muc = a.plugin["xep_0045"]
            self_presence, _subject, _occupants, _history = await muc.join_muc_wait(
                slixmpp.JID(room), "alice", maxstanzas=0, timeout=WAIT
            )
            assert {110, 201} <= set(self_presence["muc"]["status_codes"])
            form = await muc.get_room_config(room, timeout=WAIT)
            form.set_values({"muc#roomconfig_roomname": "Libraries", "muc#roomconfig_persistentroom": True})
            await muc.set_room_config(room, form, timeout=WAIT)
            heard = event_queue(a, "groupchat_message")

            async with clients.aioxmpp(bob) as b:
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


# ---- aioxmpp's MUCClient ---------------------------------------------------------------------


async def within(awaitable: Awaitable[T]) -> T:
    return await asyncio.wait_for(awaitable, WAIT)


def emission(signal: Any) -> asyncio.Future[tuple[tuple[Any, ...], dict[str, Any]]]:
    """The arguments of the signal's next emission (aioxmpp's own `Signal.future()` takes
    signals of one argument only)."""
    fut: asyncio.Future[tuple[tuple[Any, ...], dict[str, Any]]] = asyncio.get_running_loop().create_future()

    def fire(*args: Any, **kwargs: Any) -> bool:
        if not fut.done():
            fut.set_result((args, kwargs))
        return True  # disconnects this handler

    signal.connect(fire)
    return fut


async def online(client: aioxmpp.Client) -> None:
    """Initial presence (aioxmpp's PresenceServer), once the server echoed it: a client without
    it gets no messages to its bare JID (RFC 6121 §8.5.2.1), mediated invitations included."""
    echoed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_presence(presence: aioxmpp.Presence) -> None:
        if presence.from_ == client.local_jid and not echoed.done():
            echoed.set_result(None)

    token = client.stream.on_presence_received.connect(on_presence)
    client.summon(aioxmpp.PresenceServer).set_presence(aioxmpp.PresenceState(True))
    await within(echoed)
    client.stream.on_presence_received.disconnect(token)


def bodies(room: aioxmpp.muc.Room) -> asyncio.Queue[aioxmpp.Message]:
    """Every message with a body that the room shows from now on."""
    queue: asyncio.Queue[aioxmpp.Message] = asyncio.Queue()

    def on_message(message: aioxmpp.Message, member: Any, source: Any, **_: Any) -> None:
        if message.body:
            queue.put_nowait(message)

    room.on_message.connect(on_message)
    return queue


def chats(client: aioxmpp.Client) -> asyncio.Queue[aioxmpp.Message]:
    """Every chat message the client receives from now on (private messages through a room)."""
    queue: asyncio.Queue[aioxmpp.Message] = asyncio.Queue()
    client.stream.on_message_received.connect(
        lambda message: queue.put_nowait(message) if message.type_ == aioxmpp.MessageType.CHAT else None
    )
    return queue


async def next_body(queue: asyncio.Queue[aioxmpp.Message], body: str) -> aioxmpp.Message:
    while True:
        message = await within(queue.get())
        if message.body.any() == body:
            return message


def groupchat(body: str) -> aioxmpp.Message:
    message = aioxmpp.Message(type_=aioxmpp.MessageType.GROUPCHAT)
    message.body[None] = body
    return message


def private(to: aioxmpp.JID, body: str) -> aioxmpp.Message:
    message = aioxmpp.Message(type_=aioxmpp.MessageType.CHAT, to=to)
    message.body[None] = body
    return message


def test_aioxmpp_room_use_cases_without_waiting(clients: Clients, accounts: Accounts) -> None:
    alice, bob, carol = accounts(3)
    room_jid = aioxmpp.JID.fromstr(f"aioxmpp-cases@{SERVICE}")

    async def scenario() -> None:
        async with (
            clients.aioxmpp(alice) as a,
            clients.aioxmpp(bob) as b,
            clients.aioxmpp(carol) as c,
        ):
            muc_a, muc_b, muc_c = (client.summon(aioxmpp.MUCClient) for client in (a, b, c))
            await online(c)

            # Create: MUCClient.join sends the join; the configuration is fetched and submitted,
            # the topic set and three messages sent before the join's answer is awaited.
            room_a, entered = muc_a.join(room_jid, "alice")
            heard_a = bodies(room_a)
            form = aioxmpp.muc.ConfigurationForm.from_xso(await muc_a.get_room_config(room_jid))
            form.moderatedroom.value = True
            form.roomname.value = "Cases"
            await muc_a.set_room_config(room_jid, form.render_reply())
            await room_a.set_topic({None: "plans"})
            for n in range(3):
                room_a.send_message(groupchat(f"history {n}"))
            await within(entered)
            assert (room_a.me.affiliation, room_a.me.role) == ("owner", "moderator")
            await next_body(heard_a, "history 2")

            # Join with history, asking for voice (the room is moderated) right behind the join.
            voice_requests: asyncio.Queue[tuple[Any, asyncio.Future[Any]]] = asyncio.Queue()
            room_a.on_muc_role_request.connect(lambda form, fut: voice_requests.put_nowait((form, fut)))
            room_b, entered_b = muc_b.join(room_jid, "bob", history=muc_xso.History(maxstanzas=10))
            heard_b = bodies(room_b)
            topic_b = emission(room_b.on_topic_changed)
            await room_b.muc_request_voice()
            await within(entered_b)
            assert room_b.me.role == "visitor"
            for n in range(3):
                old = await next_body(heard_b, f"history {n}")
                assert old.xep0203_delay, old
            (_setter, topic), details = await within(topic_b)
            assert (topic.any(), details["muc_nick"]) == ("plans", "alice")
            request, decision = await within(voice_requests.get())
            assert request.roomnick.value == "bob"
            request.request_allow.value = True
            voiced = emission(room_b.on_muc_role_changed)
            decision.set_result(request.render_reply())
            await within(voiced)
            assert room_b.me.role == "participant"
            room_b.send_message(groupchat("thanks for the voice"))
            await next_body(heard_a, "thanks for the voice")

            # Private messages through the room, both ways.
            chats_a, chats_b = chats(a), chats(b)
            await a.send(private(room_jid.replace(resource="bob"), "psst"))
            got = await within(chats_b.get())
            assert (got.from_, got.body.any()) == (room_jid.replace(resource="alice"), "psst")
            await b.send(private(got.from_, "pssst"))
            got = await within(chats_a.get())
            assert (got.from_, got.body.any()) == (room_jid.replace(resource="bob"), "pssst")

            # A mediated invitation; the invitee joins at once.
            invited = emission(muc_c.on_muc_invitation)
            await room_a.invite(aioxmpp.JID.fromstr(f"{carol}@localhost"), "join us",
                                mode=aioxmpp.im.InviteMode.MEDIATED)  # fmt: skip
            (_stanza, address, _inviter, mode), details = await within(invited)
            assert (address, mode, details["reason"]) == (room_jid, aioxmpp.im.InviteMode.MEDIATED, "join us")
            carol_seen = emission(room_a.on_join)
            room_c, entered_c = muc_c.join(address, "carol")
            await within(entered_c)
            (carol_member,), _ = await within(carol_seen)
            bob_member = next(member for member in room_a.members if member.nick == "bob")

            # Kick and ban, both requests out before either answer.
            kicked, banned = emission(room_c.on_exit), emission(room_b.on_exit)
            await within(asyncio.gather(room_a.kick(carol_member, "bye"), room_a.ban(bob_member, "spam")))
            mode = aioxmpp.muc.LeaveMode
            for exited, how, reason in ((kicked, mode.KICKED, "bye"), (banned, mode.BANNED, "spam")):
                _, details = await within(exited)
                assert (details["muc_leave_mode"], details["muc_reason"]) == (how, reason)
            _, refused = muc_b.join(room_jid, "bob")
            with pytest.raises(aioxmpp.errors.XMPPAuthError) as error:
                await within(refused)
            assert error.value.condition == aioxmpp.ErrorCondition.FORBIDDEN

            # Leave: the temporary room goes with its last occupant; a join creates a new one.
            await within(room_a.leave())
            room_c, entered_c = muc_c.join(room_jid, "carol")
            await within(entered_c)
            assert room_c.me.affiliation == "owner"

    run(scenario())


# ---- slixmpp's XEP-0045 plugin ---------------------------------------------------------------


async def next_matching(queue: asyncio.Queue[Any], match: Callable[[Any], bool]) -> Any:
    while True:
        item = await within(queue.get())
        if match(item):
            return item


def from_nick(nick: str, type_: str | None = None) -> Callable[[Any], bool]:
    """Matches a stanza from the occupant `nick` (of any room), of `type_` when given."""
    return lambda stanza: stanza["from"].resource == nick and (type_ is None or stanza["type"] == type_)


def test_slixmpp_room_use_cases_without_waiting(clients: Clients, accounts: Accounts) -> None:
    alice, bob, carol = accounts(3)
    room = slixmpp.JID(f"slixmpp-cases@{SERVICE}")

    async def scenario() -> None:
        async with (
            clients.slixmpp(alice, plugins=SLIXMPP_PLUGINS) as a,
            clients.slixmpp(bob, plugins=SLIXMPP_PLUGINS) as b,
            clients.slixmpp(carol, plugins=SLIXMPP_PLUGINS, send_presence=True) as c,
        ):
            muc_a, muc_b, muc_c = (client.plugin["xep_0045"] for client in (a, b, c))
            heard_a = event_queue(a, "groupchat_message")

            # Create: the join and the configuration request go out together.
            (self_presence, _subject, _occupants, _history), form = await within(asyncio.gather(
                muc_a.join_muc_wait(room, "alice", maxstanzas=0, timeout=WAIT),
                muc_a.get_room_config(room, timeout=WAIT),
            ))  # fmt: skip
            assert {110, 201} <= set(self_presence["muc"]["status_codes"])
            assert self_presence["muc"]["affiliation"] == "owner"
            form.set_values({"muc#roomconfig_moderatedroom": True, "muc#roomconfig_roomname": "Cases"})
            await muc_a.set_room_config(room, form, timeout=WAIT)
            muc_a.set_subject(room, "plans")
            for n in range(3):
                a.send_message(mto=room, mbody=f"history {n}", mtype="groupchat")
            await next_matching(heard_a, lambda message: message["body"] == "history 2")

            # Join with history, asking for voice right behind the join; the moderator grants it
            # (slixmpp has no helper for the answer: the application submits the form).
            requests = event_queue(a, "message_xform")

            async def ask_for_voice() -> None:
                muc_b.request_voice(room, "participant")

            joined, _ = await within(asyncio.gather(
                muc_b.join_muc_wait(room, "bob", maxstanzas=10, timeout=WAIT), ask_for_voice()
            ))  # fmt: skip
            self_presence, subject, occupants, history = joined
            assert self_presence["muc"]["role"] == "visitor"
            assert [message["body"] for message in history] == [f"history {n}" for n in range(3)]
            assert subject["subject"] == "plans"
            assert {presence["muc"]["nick"] for presence in occupants} == {"alice", "bob"}
            request = await next_matching(requests, lambda message: message["form"]["type"] == "form")
            values = request["form"].get_values()
            assert values["muc#roomnick"] == "bob", values
            approval = a.make_message(mto=room)
            approval["form"]["type"] = "submit"
            approval["form"].add_field(var="FORM_TYPE", ftype="hidden", value=NS_REQUEST)
            approval["form"].add_field(var="muc#role", value="participant")
            approval["form"].add_field(var="muc#jid", value=values["muc#jid"])
            approval["form"].add_field(var="muc#roomnick", value="bob")
            approval["form"].add_field(var="muc#request_allow", ftype="boolean", value=True)
            presences_b = event_queue(b, f"muc::{room}::presence")
            approval.send()
            await next_matching(presences_b, lambda presence: from_nick("bob")(presence)
                                and presence["muc"]["role"] == "participant")  # fmt: skip
            b.send_message(mto=room, mbody="thanks for the voice", mtype="groupchat")
            said = await next_matching(heard_a, lambda message: message["body"] == "thanks for the voice")
            assert said["mucnick"] == "bob"

            # Private messages through the room, both ways.
            private_a, private_b = event_queue(a, "message"), event_queue(b, "message")
            a.send_message(mto=slixmpp.JID(f"{room}/bob"), mbody="psst", mtype="chat")
            got = await next_matching(private_b, lambda message: message["type"] == "chat")
            assert (got["from"], got["body"]) == (slixmpp.JID(f"{room}/alice"), "psst")
            b.send_message(mto=got["from"], mbody="pssst", mtype="chat")
            got = await next_matching(private_a, lambda message: message["type"] == "chat")
            assert (got["from"], got["body"]) == (slixmpp.JID(f"{room}/bob"), "pssst")

            # A mediated invitation; the invitee joins at once.
            invitations = event_queue(c, "groupchat_invite")
            muc_a.invite(room, slixmpp.JID(f"{carol}@localhost"), "join us")
            invitation = await within(invitations.get())
            assert (invitation["from"], invitation["muc"]["invite"]["reason"]) == (room, "join us")
            presences_a = event_queue(a, f"muc::{room}::presence")
            await muc_c.join_muc_wait(room, "carol", maxstanzas=0, timeout=WAIT)
            await next_matching(presences_a, from_nick("carol"))

            # Kick and ban, both requests out before either answer.
            gone_b, gone_c = (event_queue(client, f"muc::{room}::presence") for client in (b, c))
            await within(asyncio.gather(
                muc_a.set_role(room, "carol", "none", reason="bye"),
                muc_a.set_affiliation(room, "outcast", jid=slixmpp.JID(f"{bob}@localhost"), reason="spam"),
            ))  # fmt: skip
            kicked = await next_matching(gone_c, from_nick("carol", "unavailable"))
            assert {110, 307} <= set(kicked["muc"]["status_codes"])
            banned = await next_matching(gone_b, from_nick("bob", "unavailable"))
            assert {110, 301} <= set(banned["muc"]["status_codes"])
            with pytest.raises(PresenceError) as refused:  # within its timeout: not TimeoutError
                await muc_b.join_muc_wait(room, "bob", maxstanzas=0, timeout=WAIT)
            assert refused.value.condition == "forbidden"

            # Leave: the temporary room goes with its last occupant; a join creates a new one.
            left = event_queue(a, "groupchat_presence")  # leave_muc forgets the room at once
            muc_a.leave_muc(room, "alice")
            await next_matching(left, from_nick("alice", "unavailable"))
            again, *_ = await muc_c.join_muc_wait(room, "carol", maxstanzas=0, timeout=WAIT)
            assert 201 in again["muc"]["status_codes"]
            assert again["muc"]["affiliation"] == "owner"

    run(scenario())


def test_slixmpp_tells_one_sender_under_two_nicks_by_its_occupant_id(
    clients: Clients, accounts: Accounts
) -> None:
    """XEP-0421 with slixmpp's plugin: Alice speaks, leaves, comes back under another nick and
    speaks again; Bob sees both messages with one occupant id, and his own with another."""
    alice, bob = accounts(2)
    room = slixmpp.JID(f"masks@{SERVICE}")
    plugins = (*SLIXMPP_PLUGINS, "xep_0421")

    async def scenario() -> None:
        async with (
            clients.slixmpp(alice, plugins=plugins) as a,
            clients.slixmpp(bob, plugins=plugins) as b,
        ):
            muc = a.plugin["xep_0045"]
            await muc.join_muc_wait(room, "alice", maxstanzas=0, timeout=WAIT)
            form = await muc.get_room_config(room, timeout=WAIT)  # unlock the new room as it is
            await muc.set_room_config(room, form, timeout=WAIT)
            await b.plugin["xep_0045"].join_muc_wait(room, "bob", maxstanzas=0, timeout=WAIT)
            heard = event_queue(b, "groupchat_message")
            seen: dict[str, tuple[str, str]] = {}

            async def hear(body: str) -> None:
                message = await next_matching(heard, lambda m: m["body"] == body)
                seen[body] = (message["mucnick"], message["occupant-id"]["id"])

            a.send_message(mto=room, mbody="first", mtype="groupchat")
            await hear("first")
            a.plugin["xep_0045"].leave_muc(room, "alice")
            await a.plugin["xep_0045"].join_muc_wait(room, "mask", maxstanzas=0, timeout=WAIT)
            a.send_message(mto=room, mbody="second", mtype="groupchat")
            await hear("second")
            b.send_message(mto=room, mbody="mine", mtype="groupchat")
            await hear("mine")
            assert seen["first"][0] == "alice"
            assert seen["second"][0] == "mask"
            assert seen["first"][1] == seen["second"][1] != ""
            assert seen["mine"][1] not in ("", seen["first"][1])

    run(scenario())
