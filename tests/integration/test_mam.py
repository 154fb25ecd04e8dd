"""XEP-0313 Message Archive Management and XEP-0359 stanza ids, end to end (raw XML and slixmpp)."""

from __future__ import annotations

import contextlib
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
from slixmpp import JID
from slixmpp.exceptions import IqError

from imactor.storage.files import sqlite_files
from tests.integration.conftest import PASSWORD, sqlite_server_only
from tests.support.clients import Clients, run
from tests.support.peer import (
    C,
    Element,
    Peer,
    Peers,
    bare,
    error_condition,
    kind,
    message,
    new_id,
    show,
)
from tests.support.server import ServerProcess, add_users, imactor_cli, running_server, write_config
from tests.support.timeouts import TIMEOUT

Accounts = Callable[..., list[str]]
NS_MAM = "urn:xmpp:mam:2"
NS_SID = "urn:xmpp:sid:0"
NS_RSM = "http://jabber.org/protocol/rsm"
NS_FORWARD = "urn:xmpp:forward:0"
NS_DELAY = "urn:xmpp:delay"
NS_DISCO = "http://jabber.org/protocol/disco#info"
M = f"{{{NS_MAM}}}"
RSM = f"{{{NS_RSM}}}"


@pytest.fixture(scope="module")
def server(server_on_each_backend: ServerProcess) -> ServerProcess:
    """The archive is the largest table of a store: these tests run on SQLite and PostgreSQL."""
    return server_on_each_backend


async def chat(sender: Peer, to: str, body: str = "hello", extra: str = "", type_: str = "chat") -> str:
    message_id = new_id("m")
    await sender.send(
        f"<message to='{to}' id='{message_id}' type='{type_}'><body>{body}</body>{extra}</message>"
    )
    return message_id


def stanza_id(element: Element, by: str) -> str | None:
    for sid in element.findall(f"{{{NS_SID}}}stanza-id"):
        if sid.get("by") == by:
            return sid.get("id")
    return None


def form(**fields: str) -> str:
    if not fields:
        return ""
    body = f"<field var='FORM_TYPE' type='hidden'><value>{NS_MAM}</value></field>"
    body += "".join(f"<field var='{var.replace('_', '-')}'><value>{value}</value></field>"
                    for var, value in fields.items())  # fmt: skip
    return f"<x xmlns='jabber:x:data' type='submit'>{body}</x>"


class Fin:
    def __init__(self, results: list[Element], reply: Element) -> None:
        self.results = results
        self.reply = reply
        fin = reply.find(f"{M}fin")
        assert fin is not None, show(reply)
        self.complete = fin.get("complete") == "true"
        rsm = fin.find(f"{RSM}set")
        assert rsm is not None, show(reply)
        self.first = rsm.findtext(f"{RSM}first")
        self.last = rsm.findtext(f"{RSM}last")
        self.count = int(rsm.findtext(f"{RSM}count") or "-1")

    @property
    def ids(self) -> list[str]:
        return [r.find(f"{M}result").get("id", "") for r in self.results]  # type: ignore[union-attr]

    @property
    def bodies(self) -> list[str]:
        return [forwarded(r).findtext(f"{C}body") or "" for r in self.results]


def forwarded(result_message: Element) -> Element:
    inner = result_message.find(f"{M}result/{{{NS_FORWARD}}}forwarded/{C}message")
    assert inner is not None, show(result_message)
    return inner


def stamp(result_message: Element) -> str:
    delay = result_message.find(f"{M}result/{{{NS_FORWARD}}}forwarded/{{{NS_DELAY}}}delay")
    assert delay is not None, show(result_message)
    return delay.get("stamp", "")


async def settled(sender: Peer, to: str) -> None:
    """An IQ through `to`'s user actor: the messages `sender` sent it before are archived."""
    await sender.iq(f"<query xmlns='{NS_DISCO}'/>", to=to)


async def query_raw(peer: Peer, payload: str, to: str | None = None) -> tuple[list[Element], Element]:
    query_id = new_id("q")
    reply = await peer.iq(
        f"<query xmlns='{NS_MAM}' queryid='{query_id}'>{payload}</query>", type_="set", to=to
    )

    def is_result(e: Element) -> bool:
        result = e.find(f"{M}result")
        return kind(e) == "message" and result is not None and result.get("queryid") == query_id

    results = [e for e in peer.inbox if is_result(e)]
    peer.inbox = [e for e in peer.inbox if not is_result(e)]
    return results, reply


async def query(peer: Peer, rsm: str = "", **fields: str) -> Fin:
    results, reply = await query_raw(
        peer, form(**fields) + (f"<set xmlns='{NS_RSM}'>{rsm}</set>" if rsm else "")
    )
    assert reply.get("type") == "result", show(reply)
    return Fin(results, reply)


async def test_chat_is_archived_in_both_archives(server: ServerProcess, peers: Peers) -> None:
    with trio.fail_after(TIMEOUT):
        a, b = await peers.online_users(2)
        forged = f"<stanza-id xmlns='{NS_SID}' by='{b.bare}' id='forged'/>"
        origin = "<origin-id xmlns='urn:xmpp:sid:0' id='origin-1'/>"
        first_id = await chat(a, b.bare, "online", forged + origin)
        got = await b.expect(message(id_=first_id))
        online_sid = stanza_id(got, b.bare)
        assert online_sid is not None, show(got)
        assert online_sid != "forged", show(got)
        assert len(got.findall(f"{{{NS_SID}}}stanza-id")) == 1, show(got)
        assert got.find(f"{{{NS_SID}}}origin-id").get("id") == "origin-1", show(got)  # type: ignore[union-attr]

        await b.send("<presence type='unavailable'/>")
        await b.sync()  # now unavailable: the next message is stored offline
        await b.aclose()
        second_id = await chat(a, b.bare, "offline")
        await settled(a, b.bare)
        b = await peers.online(b.username, "later")
        got = await b.expect(message(id_=second_id))
        offline_sid = stanza_id(got, b.bare)
        assert offline_sid is not None, show(got)
        assert offline_sid != online_sid, show(got)

        for peer in (b, a):
            fin = await query(peer)
            assert fin.ids == [online_sid, offline_sid]
            assert fin.bodies == ["online", "offline"]
            assert (fin.count, fin.complete, fin.first, fin.last) == (2, True, online_sid, offline_sid)
            inner = forwarded(fin.results[0])
            assert inner.get("to") == b.bare
            assert inner.get("from", "").startswith(a.bare + "/")
            assert stanza_id(inner, b.bare) is None  # the archived copy has no forged id either
            assert fin.results[0].get("to") == peer.jid
            assert stamp(fin.results[0]).endswith("Z")


async def test_paging_forwards_and_backwards(server: ServerProcess, accounts: Accounts, peers: Peers) -> None:
    alice, bob = accounts(2)
    with trio.fail_after(TIMEOUT):
        a = await peers.login(alice)
        for n in range(60):
            await chat(a, bare(bob), f"m{n}")
        await settled(a, bare(bob))
        b = await peers.login(bob)
        forward: list[str] = []
        pages = []
        after = ""
        while True:
            fin = await query(b, f"<max>25</max>{after}")
            pages.append(fin)
            forward += fin.bodies
            assert fin.count == 60
            assert fin.first == fin.ids[0]
            assert fin.last == fin.ids[-1]
            if fin.complete:
                break
            after = f"<after>{fin.last}</after>"
        assert forward == [f"m{n}" for n in range(60)]
        assert [len(p.ids) for p in pages] == [25, 25, 10]
        assert [p.complete for p in pages] == [False, False, True]

        backward: list[str] = []
        before = "<before/>"
        sizes = []
        while True:
            fin = await query(b, f"<max>25</max>{before}")
            backward = fin.bodies + backward
            sizes.append((len(fin.ids), fin.complete))
            if fin.complete:
                break
            before = f"<before>{fin.first}</before>"
        assert backward == [f"m{n}" for n in range(60)]
        assert sizes == [(25, False), (25, False), (10, True)]

        # The extended form fields bound the result set itself.
        all_ids = [i for p in pages for i in p.ids]
        fin = await query(b, after_id=all_ids[9], before_id=all_ids[20])
        assert fin.ids == all_ids[10:20]
        assert fin.count == 10


def first_index(fin: Fin) -> str | None:
    """The 'index' attribute of <fin><set><first/>, None when absent."""
    first = fin.reply.find(f"{M}fin/{RSM}set/{RSM}first")
    return None if first is None else first.get("index")


async def test_fin_of_one_result_pages(server: ServerProcess, accounts: Accounts, peers: Peers) -> None:
    """Issue 13 (3): one result per page, raw. Backwards (<before/>, then <before>first id</before>):
    newest first, complete='true' only on the oldest, no <first index> (XEP-0313 §4.3.2 makes it
    optional; slixmpp's iterator reads index + items == count as the end even backwards).
    Forwards: <first index>, complete='true' only on the newest. <index/> is refused."""
    alice, bob = accounts(2)
    with trio.fail_after(TIMEOUT):
        a = await peers.login(alice)
        for n in range(3):
            await chat(a, bare(bob), f"m{n}")
        await settled(a, bare(bob))
        b = await peers.login(bob)

        backward: list[Fin] = []
        before = "<before/>"
        while len(backward) < 4:
            fin = await query(b, f"<max>1</max>{before}")
            backward.append(fin)
            if fin.complete:
                break
            before = f"<before>{fin.first}</before>"
        assert [f.bodies for f in backward] == [["m2"], ["m1"], ["m0"]]
        assert [f.complete for f in backward] == [False, False, True]
        assert all(f.count == 3 and f.first == f.last == f.ids[0] for f in backward)
        assert [first_index(f) for f in backward] == [None, None, None], show(backward[0].reply)
        # Before the oldest: an empty page, complete, without <first/> or <last/> (XEP-0059 §2.2).
        empty = await query(b, f"<max>1</max><before>{backward[-1].first}</before>")
        assert (empty.ids, empty.complete, empty.first, empty.last, empty.count) == ([], True, None, None, 3)

        forward: list[Fin] = []
        after = ""
        while len(forward) < 4:
            fin = await query(b, f"<max>1</max>{after}")
            forward.append(fin)
            if fin.complete:
                break
            after = f"<after>{fin.last}</after>"
        assert [f.bodies for f in forward] == [["m0"], ["m1"], ["m2"]]
        assert [f.complete for f in forward] == [False, False, True]
        assert [first_index(f) for f in forward] == ["0", "1", "2"]
        empty = await query(b, f"<max>1</max><after>{forward[-1].last}</after>")
        assert (empty.ids, empty.complete, empty.first, empty.last) == ([], True, None, None)

        _, by_index = await query_raw(b, f"<set xmlns='{NS_RSM}'><max>1</max><index>1</index></set>")
        assert error_condition(by_index) == "feature-not-implemented", show(by_index)


async def test_filters(server: ServerProcess, accounts: Accounts, peers: Peers) -> None:
    alice, bob, carol = accounts(3)
    with trio.fail_after(TIMEOUT):
        a = await peers.login(alice)
        c = await peers.login(carol)
        await chat(a, bare(bob), "from alice 1")
        await trio.sleep(0.05)
        await chat(c, bare(bob), "from carol")
        await trio.sleep(0.05)
        await chat(a, bare(bob), "from alice 2")
        await settled(a, bare(bob))
        await settled(c, bare(bob))
        b = await peers.login(bob)
        everything = await query(b)
        assert everything.bodies == ["from alice 1", "from carol", "from alice 2"]
        with_alice = await query(b, **{"with": bare(alice)})
        assert with_alice.bodies == ["from alice 1", "from alice 2"]
        assert with_alice.count == 2
        with_resource = await query(b, **{"with": f"{bare(carol)}/{c.resource}"})
        assert with_resource.bodies == ["from carol"]
        assert (await query(b, **{"with": f"{bare(carol)}/elsewhere"})).bodies == []
        middle = stamp(everything.results[1])
        assert (await query(b, start=middle)).bodies == ["from carol", "from alice 2"]
        assert (await query(b, end=middle)).bodies == ["from alice 1", "from carol"]
        assert (await query(b, start=middle, end=middle)).bodies == ["from carol"]
        # The sender's own copy is filed under the recipient.
        assert (await query(a, **{"with": bare(bob)})).bodies == ["from alice 1", "from alice 2"]


async def test_preferences(server: ServerProcess, accounts: Accounts, peers: Peers) -> None:
    alice, bob = accounts(2)
    with trio.fail_after(TIMEOUT):
        a = await peers.login(alice)
        b = await peers.online(bob)
        got = await b.iq(f"<prefs xmlns='{NS_MAM}'/>")
        assert got.find(f"{M}prefs").get("default") == "always", show(got)  # type: ignore[union-attr]
        lists = f"<always/><never><jid>{bare(alice)}</jid></never>"
        new = f"<prefs xmlns='{NS_MAM}' default='never'>{lists}</prefs>"
        set_reply = await b.iq(new, type_="set")
        assert set_reply.get("type") == "result", show(set_reply)
        got = await b.iq(f"<prefs xmlns='{NS_MAM}'/>")
        prefs = got.find(f"{M}prefs")
        assert prefs is not None, show(got)
        assert prefs.get("default") == "never", show(got)
        assert prefs.findtext(f"{M}never/{M}jid") == bare(alice), show(got)

        message_id = await chat(a, bare(bob), "private")
        delivered = await b.expect(message(id_=message_id))
        assert stanza_id(delivered, bare(bob)) is None, show(delivered)  # not archived: no id
        assert (await query(b)).ids == []
        assert (await query(a)).bodies == ["private"]  # the sender's preferences still say always

        bad = await b.iq(f"<prefs xmlns='{NS_MAM}' default='sometimes'/>", type_="set")
        assert error_condition(bad) == "bad-request", show(bad)


async def test_what_is_not_archived(server: ServerProcess, accounts: Accounts, peers: Peers) -> None:
    alice, bob = accounts(2)
    with trio.fail_after(TIMEOUT):
        a = await peers.login(alice)
        b = await peers.online(bob)
        hinted = [
            await chat(a, bare(bob), hint, f"<{hint} xmlns='urn:xmpp:hints'/>")
            for hint in ("no-store", "no-permanent-store")
        ]
        headline = await chat(a, bare(bob), "headline", type_="headline")
        groupchat = await chat(a, b.jid, "groupchat", type_="groupchat")
        no_body_id = new_id("m")
        await a.send(f"<message to='{bare(bob)}' id='{no_body_id}' type='chat'>"
                     "<active xmlns='http://jabber.org/protocol/chatstates'/></message>")  # fmt: skip
        for message_id in (*hinted, headline, groupchat, no_body_id):
            got = await b.expect(message(id_=message_id))
            assert stanza_id(got, bare(bob)) is None, show(got)
        archived = await chat(a, bare(bob), "normal", type_="normal")
        got = await b.expect(message(id_=archived))
        assert stanza_id(got, bare(bob)) is not None, show(got)
        assert (await query(b)).bodies == ["normal"]
        assert (await query(a)).bodies == ["normal"]


async def test_errors(server: ServerProcess, accounts: Accounts, peers: Peers) -> None:
    alice, bob = accounts(2)
    with trio.fail_after(TIMEOUT):
        a = await peers.login(alice)
        _, foreign = await query_raw(a, "", to=bare(bob))
        assert error_condition(foreign) == "forbidden", show(foreign)
        prefs = await a.iq(f"<prefs xmlns='{NS_MAM}'/>", to=bare(bob))
        assert error_condition(prefs) == "forbidden", show(prefs)
        for payload in (
            form(start="yesterday"),
            form(**{"with": "@@"}),
            form(color="blue"),
            "<x xmlns='jabber:x:data' type='submit'>"
            "<field var='FORM_TYPE'><value>urn:xmpp:mam:1</value></field></x>",
            f"<set xmlns='{NS_RSM}'><max>many</max></set>",
        ):
            _, reply = await query_raw(a, payload)
            assert error_condition(reply) == "bad-request", (payload, show(reply))
        for payload in (form(after_id="nope"), f"<set xmlns='{NS_RSM}'><after>nope</after></set>"):
            _, reply = await query_raw(a, payload)
            assert error_condition(reply) == "item-not-found", (payload, show(reply))


async def test_form_and_disco(server: ServerProcess, accounts: Accounts, peers: Peers) -> None:
    (alice,) = accounts(1)
    with trio.fail_after(TIMEOUT):
        a = await peers.login(alice)
        got = await a.iq(f"<query xmlns='{NS_MAM}'/>")
        fields = [f.get("var") for f in got.iter("{jabber:x:data}field")]
        assert fields == ["FORM_TYPE", "with", "start", "end", "after-id", "before-id"], show(got)
        account = await a.iq(f"<query xmlns='{NS_DISCO}'/>", to=bare(alice))
        features = {f.get("var") for f in account.iter(f"{{{NS_DISCO}}}feature")}
        assert {NS_MAM, NS_MAM + "#extended"} <= features, show(account)
        host = await a.iq(f"<query xmlns='{NS_DISCO}'/>", to="localhost")
        features = {f.get("var") for f in host.iter(f"{{{NS_DISCO}}}feature")}
        assert NS_SID in features, show(host)


async def test_account_removal_deletes_the_archive(
    server: ServerProcess, accounts: Accounts, peers: Peers
) -> None:
    alice, bob = accounts(2)
    with trio.fail_after(TIMEOUT):
        a = await peers.login(alice)
        await chat(a, bare(bob), "before removal")
        await settled(a, bare(bob))
        b = await Peer.login(server.c2s_port, bob, PASSWORD)
        assert (await query(b)).bodies == ["before removal"]
        removed = await b.iq("<query xmlns='jabber:iq:register'><remove/></query>", type_="set")
        assert removed.get("type") == "result", show(removed)
        await b.aclose()
    add_users(server.config_path, [(bob, PASSWORD)])  # the same name, a new account
    with trio.fail_after(TIMEOUT):
        b = await peers.login(bob)
        assert (await query(b)).ids == []
        assert (await query(a)).bodies == ["before removal"]  # the other party keeps its copy


def test_slixmpp_retrieves_the_archive(clients: Clients, accounts: Accounts) -> None:
    alice, bob = accounts(2)

    async def scenario() -> None:
        plugins = ("xep_0030", "xep_0059", "xep_0297", "xep_0313")
        async with clients.slixmpp(alice, "pc", plugins=plugins) as xmpp:
            for n in range(3):
                xmpp.send_message(mto=JID(bare(bob)), mbody=f"slix {n}", mtype="chat")
            with contextlib.suppress(IqError):  # through bob's user actor: all archived
                await xmpp.plugin["xep_0030"].get_info(jid=JID(bare(bob)))
            results = xmpp.plugin["xep_0313"].iterate(with_jid=JID(bare(bob)), total=10, rsm={"amount": 2})
            bodies = [result["mam_result"]["forwarded"]["stanza"]["body"] async for result in results]
            assert bodies == ["slix 0", "slix 1", "slix 2"]

    run(scenario())


def test_slixmpp_pages_one_by_one_both_ways(clients: Clients, accounts: Accounts) -> None:
    """Issue 13 (3): slixmpp's archive iterator with one result per page, backwards (reverse=True:
    <before/>, then <before>first id of the previous page</before>) and forwards, gets every
    message, in its order."""
    alice, bob = accounts(2)
    bodies = [f"one by one {n}" for n in range(5)]

    async def scenario() -> None:
        plugins = ("xep_0030", "xep_0059", "xep_0297", "xep_0313")
        async with clients.slixmpp(alice, "pc", plugins=plugins) as xmpp:
            for body in bodies:
                xmpp.send_message(mto=JID(bare(bob)), mbody=body, mtype="chat")
            with contextlib.suppress(IqError):  # through bob's user actor: all archived
                await xmpp.plugin["xep_0030"].get_info(jid=JID(bare(bob)))
            mam = xmpp.plugin["xep_0313"]
            for reverse, expected in ((True, bodies[::-1]), (False, bodies)):
                results = mam.iterate(with_jid=JID(bare(bob)), reverse=reverse, rsm={"max": 1})
                got = [result["mam_result"]["forwarded"]["stanza"]["body"] async for result in results]
                assert got == expected, reverse

    run(scenario())


@sqlite_server_only  # SQLite's online backup; PostgreSQL's is pg_dump (docs/postgresql.md)
async def test_backup_of_a_running_server_restores_accounts_and_archives(
    server: ServerProcess, accounts: Accounts, peers: Peers, tmp_path: Path
) -> None:
    alice, bob = accounts(2)
    sent = ["kept 1", "kept 2", "kept 3"]
    with trio.fail_after(TIMEOUT):
        a = await peers.login(alice)
        for text in sent:
            await chat(a, bare(bob), text)
        await settled(a, bare(bob))
    backup = tmp_path / "nightly.sqlite3"
    done = await trio.to_thread.run_sync(imactor_cli, server.config_path, "backup", str(backup))
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    # Not over a running server's database: it would go on writing to the old file.
    refused = await trio.to_thread.run_sync(imactor_cli, server.config_path, "restore", str(backup))
    assert refused.returncode == 1
    assert "a server is running on this database" in refused.stderr, refused.stderr

    elsewhere = tmp_path / "restored"
    elsewhere.mkdir()
    restored = await trio.to_thread.run_sync(imactor_cli, write_config(elsewhere), "restore", str(backup))
    assert restored.returncode == 0, restored.stderr
    with running_server(elsewhere) as second:
        # Restored into a directory that did not exist: private from the start, WAL included.
        database = second.data_dir / "imactor.sqlite3"
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (second.data_dir, *sqlite_files(database))}
        assert modes == {"data": 0o700, database.name: 0o600, f"{database.name}-wal": 0o600,
                         f"{database.name}-shm": 0o600}  # fmt: skip
        with trio.fail_after(TIMEOUT):
            b = await Peer.login(second.c2s_port, bob, PASSWORD)  # the restored credentials
            try:
                assert (await query(b)).bodies == sent
            finally:
                await b.aclose()
            a = await Peer.login(second.c2s_port, alice, PASSWORD)
            try:
                assert (await query(a)).bodies == sent  # the sender's copies too
            finally:
                await a.aclose()
