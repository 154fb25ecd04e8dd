"""Scheduled reminders (module `adhoc`, docs/reminders.md) end to end.

One server for most tests, two workers, `boss` as its administrator, and a short
``reminder_recheck`` so that a reminder scheduled on the second worker (whose delivery task does
not run there) is seen within a second. Users drive the commands with raw XEP-0050 stanzas and
with slixmpp's plugin; the reminders arrive as headlines from the server. The restart and the
SIGKILL of the delivering worker run servers of their own, on the same data directory across
the restart.
"""

from __future__ import annotations

import calendar
import json
import math
import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import pytest
import trio

from tests.integration.conftest import PASSWORD, Accounts, Clients
from tests.support.chaos import kill_worker, land_on
from tests.support.clients import run
from tests.support.peer import C, Element, Peer, Peers, error_condition, message, new_id, show
from tests.support.server import ServerProcess, add_users, running_server
from tests.support.timeouts import START_TIMEOUT, TIMEOUT, WORKERS_TIMEOUT

NS_COMMANDS = "http://jabber.org/protocol/commands"
NS_REMINDERS = "urn:imactor:reminders"
NS_DATA = "jabber:x:data"
NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
NS_NICK = "http://jabber.org/protocol/nick"
NS_DELAY = "urn:xmpp:delay"
CMD = f"{{{NS_COMMANDS}}}command"
X = f"{{{NS_DATA}}}x"
BOSS = "boss"
DOMAIN = "localhost"
DAY = 86400
MAX_TEXT = 300
MAX_REMINDERS = 4
OPTIONS = (
    f"\n[modules.adhoc]\nreminder_recheck = 0.5\nmax_reminder_text = {MAX_TEXT}\n"
    f"max_reminders = {MAX_REMINDERS}\n"
)
pytestmark = pytest.mark.usefixtures("server_alive")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    directory = tmp_path_factory.mktemp("reminders")
    with running_server(
        directory, server_options=f'admins = ["{BOSS}@{DOMAIN}"]\n', workers=2, extra=OPTIONS
    ) as process:
        add_users(process.config_path, [(BOSS, PASSWORD)])
        yield process


# ---- the commands, as raw XEP-0050 stanzas ----------------------------------------------------------


def stamp(moment: float) -> str:
    """XEP-0082 DateTime, UTC, to the second."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment))


def soon(seconds: float) -> float:
    """A whole second at least `seconds` from now (what `stamp` writes exactly)."""
    return float(math.ceil(time.time() + seconds))


async def command(
    peer: Peer,
    name: str,
    *,
    sessionid: str | None = None,
    fields: Mapping[str, str | Sequence[str]] | None = None,
) -> Element:
    attributes = f" node={quoteattr(f'{NS_REMINDERS}#{name}')}"
    if sessionid is not None:
        attributes += f" sessionid={quoteattr(sessionid)}"
    form = ""
    if fields is not None:
        parts = [f"<field var='FORM_TYPE' type='hidden'><value>{NS_REMINDERS}</value></field>"]
        for var, value in fields.items():
            values = [value] if isinstance(value, str) else list(value)
            parts.append(
                f"<field var='{var}'>" + "".join(f"<value>{escape(v)}</value>" for v in values) + "</field>"
            )
        form = f"<x xmlns='{NS_DATA}' type='submit'>{''.join(parts)}</x>"
    return await peer.iq(
        f"<command xmlns='{NS_COMMANDS}'{attributes}>{form}</command>", type_="set", to=DOMAIN
    )


def status(reply: Element) -> tuple[str, str]:
    assert reply.get("type") == "result", show(reply)
    element = reply.find(CMD)
    assert element is not None, show(reply)
    return element.get("status", ""), element.get("sessionid", "")


def notes(reply: Element) -> list[tuple[str, str]]:
    return [(n.get("type", ""), n.text or "") for n in reply.iterfind(f"{CMD}/{{{NS_COMMANDS}}}note")]


def form_fields(reply: Element) -> dict[str, list[str]]:
    form = reply.find(f"{CMD}/{X}")
    assert form is not None, show(reply)
    return {
        f.get("var", ""): [v.text or "" for v in f.iterfind(f"{{{NS_DATA}}}value")]
        for f in form.iterfind(f"{{{NS_DATA}}}field")
    }


async def submit(peer: Peer, name: str, fields: Mapping[str, str | Sequence[str]]) -> Element:
    """Execute `name` and submit its one form: the reply to the submission."""
    state, sessionid = status(await command(peer, name))
    assert state == "executing"
    return await command(peer, name, sessionid=sessionid, fields=fields)


async def schedule(peer: Peer, when: str, text: str, **more: str | Sequence[str]) -> int:
    """Schedule a reminder that the server accepts; its id."""
    done = await submit(peer, "schedule", {"when": when, "text": text, **more})
    assert status(done)[0] == "completed", show(done)
    return int(form_fields(done)["id"][0])


async def listed(peer: Peer) -> list[str]:
    """The lines of "list my reminders" (empty when there are none)."""
    done = await command(peer, "list")
    assert status(done)[0] == "completed", show(done)
    return form_fields(done)["reminders"] if done.find(f"{CMD}/{X}") is not None else []


def refused(reply: Element) -> str:
    """The error note of a submission the command refused (its form shown again)."""
    assert status(reply)[0] == "executing", show(reply)
    assert "when" in form_fields(reply) or "id" in form_fields(reply)
    (note,) = notes(reply)
    assert note[0] == "error", note
    return note[1]


def reminder(*, id_: str | None = None) -> Any:
    """Matches a reminder: a headline from the server (with that id)."""
    return message(from_=DOMAIN, type_="headline", id_=id_)


async def copies(peer: Peer, stanza_id: str) -> int:
    """How many copies of the message `stanza_id` reached `peer` so far (after a round trip)."""
    await peer.sync()
    return sum(1 for e in peer.inbox if e.tag == f"{C}message" and e.get("id") == stanza_id)


async def wait_listed(peer: Peer, done: Any) -> list[str]:
    """Poll the list until `done(lines)`: the delivery task is not observable otherwise."""
    while True:
        lines = await listed(peer)
        if done(lines):
            return lines
        await trio.sleep(0.2)


async def set_name(peer: Peer, name: str) -> None:
    reply = await peer.iq(f"<vCard xmlns='vcard-temp'><FN>{escape(name)}</FN></vCard>", type_="set")
    assert reply.get("type") == "result", show(reply)


# ---- discovery ------------------------------------------------------------------------------------


async def test_every_user_sees_the_reminder_commands(server: ServerProcess, peers: Peers) -> None:
    with trio.fail_after(TIMEOUT):
        user = await peers.online_user()
        found = await user.iq(f"<query xmlns='{NS_DISCO_ITEMS}' node='{NS_COMMANDS}'/>", to=DOMAIN)
        nodes = {item.get("node") for item in found.iterfind(f".//{{{NS_DISCO_ITEMS}}}item")}
        assert nodes == {f"{NS_REMINDERS}#{name}" for name in ("schedule", "list", "cancel")}
        shown = await command(user, "schedule")
        fields = form_fields(shown)
        assert fields["FORM_TYPE"] == [NS_REMINDERS]
        assert {"when", "repeat", "text"} <= set(fields)
        assert "recipients" not in fields  # only administrators remind others
        boss = await peers.online(BOSS, new_id("r"))
        assert {"recipients", "accountjids"} <= set(form_fields(await command(boss, "schedule")))


# ---- delivery ---------------------------------------------------------------------------------------


async def test_a_reminder_arrives_as_a_headline_with_the_owners_name(
    server: ServerProcess, peers: Peers
) -> None:
    with trio.fail_after(TIMEOUT):
        user = await peers.online_user()
        await set_name(user, "Ada Lovelace")
        due = soon(2)
        reminder_id = await schedule(user, stamp(due), "Stand-up meeting\nbring the notes")
        assert await listed(user) == [f"{reminder_id}: {stamp(due)} (none) for {user.bare}: Stand-up meeting"]
        got = await user.expect(reminder())
        assert time.time() >= due - 0.5  # not early (the clocks are the same machine's)
        assert got.get("to") == user.bare
        assert got.findtext(f"{C}subject") == "Reminder from Ada Lovelace"
        assert got.findtext(f"{C}body") == "Stand-up meeting\nbring the notes"
        assert got.findtext(f"{{{NS_NICK}}}nick") == "Ada Lovelace"
        stanza_id = got.get("id", "")
        assert stanza_id == f"reminder-{reminder_id}-{int(due * 1000)}"
        assert await copies(user, stanza_id) == 0  # the one copy was taken by `expect`
        assert await listed(user) == []  # a one-off reminder is over once delivered


def test_slixmpp_schedules_a_reminder_in_minutes_and_lists_it(
    server: ServerProcess, clients: Clients, accounts: Accounts
) -> None:
    (username,) = accounts(1)

    async def scenario() -> None:
        async with clients.slixmpp(username, "adhoc", plugins=("xep_0004", "xep_0030", "xep_0050")) as client:
            adhoc = client.plugin["xep_0050"]
            items = await client.plugin["xep_0030"].get_items(jid=DOMAIN, node=NS_COMMANDS)
            assert f"{NS_REMINDERS}#schedule" in {node for _, node, _ in items["disco_items"]["items"]}
            first = await adhoc.send_command(DOMAIN, f"{NS_REMINDERS}#schedule", action="execute")
            assert first["command"]["status"] == "executing"
            form = client.plugin["xep_0004"].make_form(ftype="submit")
            form.add_field(var="FORM_TYPE", ftype="hidden", value=NS_REMINDERS)
            form.add_field(var="when", value="in 90 minutes")
            form.add_field(var="repeat", value="weekly")
            form.add_field(var="text", ftype="text-multi", value="Water the plants")
            done = await adhoc.send_command(
                DOMAIN,
                f"{NS_REMINDERS}#schedule",
                action="complete",
                sessionid=first["command"]["sessionid"],
                payload=form,
            )
            assert done["command"]["status"] == "completed"
            values = done["command"]["form"].get_values()
            expected = time.time() + 90 * 60
            next_at = calendar.timegm(time.strptime(values["next"], "%Y-%m-%dT%H:%M:%SZ"))
            assert abs(next_at - expected) < 30
            listing = await adhoc.send_command(DOMAIN, f"{NS_REMINDERS}#list", action="execute")
            lines = listing["command"]["form"].get_values()["reminders"]
            line = f"{values['id']}: {values['next']} (weekly) for {username}@{DOMAIN}: Water the plants"
            assert lines == [line]

    run(scenario())


async def test_an_offline_user_gets_the_administrators_reminder_at_login(
    server: ServerProcess, peers: Peers
) -> None:
    with trio.fail_after(TIMEOUT):
        (away,) = peers.accounts(1)
        boss = await peers.online(BOSS, new_id("r"))
        due = soon(1.5)
        reminder_id = await schedule(
            boss,
            stamp(due),
            "Quarterly figures are due",
            recipients="accounts",
            accountjids=[f"{away}@{DOMAIN}"],
        )
        await wait_listed(boss, lambda lines: not any(line.startswith(f"{reminder_id}:") for line in lines))
        user = await peers.online(away)  # the offline message comes with the initial presence
        got = await user.expect(reminder())
        assert got.findtext(f"{C}subject") == f"Reminder from {BOSS}"
        assert got.findtext(f"{C}body") == "Quarterly figures are due"
        assert got.find(f"{{{NS_DELAY}}}delay") is not None  # kept offline (XEP-0203 stamp)
        assert await copies(user, got.get("id", "")) == 0
        assert await listed(user) == []  # the administrator's reminder is the administrator's


async def test_an_administrator_reminds_several_users(server: ServerProcess, peers: Peers) -> None:
    with trio.fail_after(TIMEOUT):
        first, second = await peers.online_users(2)
        boss = await peers.online(BOSS, new_id("r"))
        await schedule(
            boss,
            stamp(soon(1.5)),
            "Fire drill at noon",
            recipients="accounts",
            accountjids=[first.bare, second.bare],
        )
        for user in (first, second):
            got = await user.expect(reminder())
            assert (got.get("to"), got.findtext(f"{C}body")) == (user.bare, "Fire drill at noon")


async def test_a_daily_reminder_moves_to_the_next_day(server: ServerProcess, peers: Peers) -> None:
    with trio.fail_after(TIMEOUT):
        user = await peers.online_user()
        due = soon(1.5)
        reminder_id = await schedule(user, stamp(due), "Take the pills", repeat="daily")
        got = await user.expect(reminder())
        assert got.get("id") == f"reminder-{reminder_id}-{int(due * 1000)}"
        lines = await wait_listed(
            user, lambda lines: lines != [] and not lines[0].startswith(f"{reminder_id}: {stamp(due)} ")
        )
        assert lines == [f"{reminder_id}: {stamp(due + DAY)} (daily) for {user.bare}: Take the pills"]


async def test_list_and_cancel(server: ServerProcess, peers: Peers) -> None:
    with trio.fail_after(TIMEOUT):
        user = await peers.online_user()
        later, tomorrow = soon(3600), soon(DAY)
        first = await schedule(user, stamp(tomorrow), "Dentist", repeat="weekdays")
        second = await schedule(user, stamp(later), "Call the bank")
        assert await listed(user) == [  # the soonest first
            f"{second}: {stamp(later)} (none) for {user.bare}: Call the bank",
            f"{first}: {stamp(tomorrow)} (weekdays) for {user.bare}: Dentist",
        ]
        shown = await command(user, "cancel")
        _, sessionid = status(shown)
        options = shown.findall(f"{CMD}/{X}/{{{NS_DATA}}}field[@var='id']/{{{NS_DATA}}}option")
        assert sorted(o.findtext(f"{{{NS_DATA}}}value") for o in options) == sorted([str(first), str(second)])
        done = await command(user, "cancel", sessionid=sessionid, fields={"id": str(second)})
        assert status(done)[0] == "completed"
        assert notes(done) == [("info", f"Reminder {second} is cancelled")]
        assert [line.split(":")[0] for line in await listed(user)] == [str(first)]
        # Someone else's reminder, or one that is gone, is not yours to cancel.
        other = await peers.online_user()
        assert "no reminder" in refused(await submit(other, "cancel", {"id": str(first)}))
        assert "no reminder" in refused(await submit(user, "cancel", {"id": str(second)}))
        assert len(await listed(user)) == 1


# ---- bad input --------------------------------------------------------------------------------------


async def test_bad_values_show_the_form_again_with_the_reason(server: ServerProcess, peers: Peers) -> None:
    with trio.fail_after(TIMEOUT):
        user = await peers.online_user()
        attempts = [
            ({"when": stamp(time.time() - 60), "text": "x"}, "in the past"),
            ({"when": "tomorrow-ish", "text": "x"}, "is not a time"),
            ({"when": "2026-02-30T10:00:00Z", "text": "x"}, "not a valid date-time"),
            ({"when": "2030-01-01T10:00:00", "text": "x"}, "is not a time"),  # no time zone
            ({"when": "in 5 minutes", "text": "y" * (MAX_TEXT + 1)}, f"at most {MAX_TEXT}"),
            ({"when": "in 5 minutes", "text": "  "}, "empty"),
            ({"when": "in 5 minutes", "text": "x", "repeat": "hourly"}, "not one of"),
        ]
        for fields, reason in attempts:
            assert reason in refused(await submit(user, "schedule", fields)), fields
        assert await listed(user) == []
        for n in range(MAX_REMINDERS):
            await schedule(user, "in 2 days", f"number {n}")
        one_more = await submit(user, "schedule", {"when": "in 1 day", "text": "x"})
        assert "the most allowed" in refused(one_more)


async def test_a_user_cannot_remind_others(server: ServerProcess, peers: Peers) -> None:
    with trio.fail_after(TIMEOUT):
        user, other = await peers.online_users(2)
        for fields in (
            {"recipients": "all"},
            {"recipients": "accounts", "accountjids": [other.bare]},
            {"accountjids": [other.bare]},
        ):
            reply = await submit(user, "schedule", {"when": "in 5 minutes", "text": "spam", **fields})
            assert error_condition(reply) == "forbidden", show(reply)
        assert await listed(user) == []
        boss = await peers.online(BOSS, new_id("r"))
        reply = await submit(
            boss,
            "schedule",
            {
                "when": "in 5 minutes",
                "text": "x",
                "recipients": "accounts",
                "accountjids": ["someone@elsewhere.example"],
            },
        )
        assert "not an account of" in refused(reply)


# ---- restarts and failures: servers of their own ----------------------------------------------------


def own_server(directory: Path) -> Any:
    return running_server(directory, workers=2, extra=OPTIONS)


def test_a_restart_delivers_what_fell_due_and_what_a_dead_worker_left_pending(tmp_path: Path) -> None:
    """A reminder that falls due while the server is stopped (SIGTERM) arrives once after the
    restart. So does the occurrence a crash between the claim and its record leaves behind
    (claimed, maybe sent, not recorded): written into the database while the server is stopped,
    claimed by a process of node 0 that no longer runs; the node's next worker 0 delivers it
    again at once, with the same stanza id, and moves the daily reminder to its next day."""
    due = 0.0

    async def before() -> int:
        nonlocal due
        user = await Peer.online(first.c2s_port, "ann", PASSWORD)
        try:
            due = soon(3)
            return await schedule(user, stamp(due), "Survive the restart")
        finally:
            await user.aclose()

    with own_server(tmp_path) as first:
        add_users(first.config_path, [("ann", PASSWORD)])
        reminder_id = trio.run(_within, START_TIMEOUT, before)
        assert first.stop() == 0  # SIGTERM before the due time
    assert time.time() < due, "the server took too long to stop for this test"
    left = float(int(time.time()) - 30)
    with sqlite3.connect(tmp_path / "data" / "imactor.sqlite3") as db:
        cursor = db.execute(
            "INSERT INTO reminder (owner, recipients, text, next_at, repeat, state, pending_at, claimed_by, "
            "claimed_at, created) VALUES ('ann', ?, 'Left behind', ?, 'daily', 'active', ?, 'node0:999999', "
            "?, ?)",
            (json.dumps([f"ann@{DOMAIN}"]), left + DAY, left, left + 0.01, left - 60),
        )
        pending_id = cursor.lastrowid

    async def after() -> None:
        user = await Peer.online(second.c2s_port, "ann", PASSWORD)
        try:
            got = {
                e.findtext(f"{C}body"): e.get("id") for e in [await user.expect(reminder()) for _ in range(2)]
            }
            assert got == {
                "Survive the restart": f"reminder-{reminder_id}-{int(due * 1000)}",
                "Left behind": f"reminder-{pending_id}-{int(left * 1000)}",
            }
            expected = [f"{pending_id}: {stamp(left + DAY)} (daily) for ann@{DOMAIN}: Left behind"]
            assert await wait_listed(user, lambda lines: lines == expected) == expected
            for stanza_id in got.values():
                assert await copies(user, stanza_id or "") == 0
        finally:
            await user.aclose()

    with own_server(tmp_path) as second:
        trio.run(_within, START_TIMEOUT, after)


def test_a_kill_of_the_delivering_worker_loses_and_repeats_nothing(tmp_path: Path) -> None:
    """SIGKILL of worker 0 (where the delivery task runs) just before a reminder is due: its
    successor delivers it, once. The user's session is on worker 1, which lives on."""
    with own_server(tmp_path) as server:
        add_users(server.config_path, [("kim", PASSWORD)])

        async def scenario() -> None:
            user = await land_on(
                server.status_socket, 1, lambda: Peer.online(server.c2s_port, "kim", PASSWORD), Peer.aclose
            )
            try:
                due = soon(2)
                ids = [await schedule(user, stamp(due), f"number {n}") for n in range(3)]
                await trio.sleep_until(trio.current_time() + max(0.0, due - time.time() - 0.3))
                await kill_worker(server.status_socket, 2, index=0)
                got = [await user.expect(reminder()) for _ in ids]
                assert sorted(e.findtext(f"{C}body") or "" for e in got) == [f"number {n}" for n in range(3)]
                assert await wait_listed(user, lambda lines: lines == []) == []
                # Another look of the successor's task finds nothing left to send.
                with trio.move_on_after(1.5):
                    extra = await user.expect(reminder())
                    pytest.fail(f"a second copy: {show(extra)}")
                for each in got:
                    assert await copies(user, each.get("id", "")) == 0
            finally:
                await user.aclose()

        trio.run(_within, WORKERS_TIMEOUT, scenario)


async def _within(timeout: float, fn: Any, *args: Any) -> Any:
    with trio.fail_after(timeout):
        return await fn(*args)


def test_a_reminder_scheduled_on_the_delivering_worker_wakes_it(tmp_path: Path) -> None:
    """With the default ``reminder_recheck`` (30 s) the task sleeps while nothing is due; a
    reminder scheduled from a session on worker 0 wakes it, and arrives on time."""
    with running_server(tmp_path, workers=2) as server:
        add_users(server.config_path, [("max", PASSWORD)])

        async def scenario() -> None:
            user = await land_on(
                server.status_socket, 0, lambda: Peer.online(server.c2s_port, "max", PASSWORD), Peer.aclose
            )
            try:
                due = soon(2)
                await schedule(user, stamp(due), "Right on time")
                with trio.fail_after(due - time.time() + 5):  # well before the next recheck
                    got = await user.expect(reminder())
                assert got.findtext(f"{C}body") == "Right on time"
            finally:
                await user.aclose()

        trio.run(_within, WORKERS_TIMEOUT, scenario)
