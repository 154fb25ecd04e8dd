"""The company directory (module `directory`, `imactor org ...`) end to end.

One server for the module, two workers, with `directory` enabled, ``share = "parents"`` (own
department, those above and those below), ``max_results = 3`` (so that paging shows with few
people) and ``check_interval`` an hour: a directory imported while the server runs must reach
every worker through the CLI's ``reload-modules`` request, not by the periodic check. The
directory is the server's, so each test imports its own, naming its own fresh accounts:

    Acme                     ceo
    ├── Sales                head
    │   ├── EMEA             eve, emil
    │   └── APAC             ada
    └── R&D                  rob

Under "parents": eve sees emil (EMEA), head (Sales) and ceo (Acme); head sees ceo, eve, emil and
ada; rob sees ceo only. Clients: slixmpp and aioxmpp as applications use them, raw XML where the
exact stanza matters (roster pushes, errors).
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aioxmpp
import aioxmpp.roster
import pytest
import trio

from imactor.config import DEFAULT_MODULES
from tests.integration.conftest import Accounts
from tests.support.clients import Clients, event_queue, run
from tests.support.peer import (
    C,
    Element,
    Peer,
    Peers,
    error_condition,
    presence,
    show,
)
from tests.support.server import ServerProcess, imactor_cli, running_server
from tests.support.timeouts import TIMEOUT

NS_ROSTER = "jabber:iq:roster"
NS_SEARCH = "jabber:iq:search"
NS_DATA = "jabber:x:data"
NS_RSM = "http://jabber.org/protocol/rsm"
NS_VCARD = "vcard-temp"
MODULES = "modules = [" + ", ".join(f'"{name}"' for name in (*DEFAULT_MODULES, "directory")) + "]\n"
SETTINGS = '\n[modules.directory]\nshare = "parents"\nmax_results = 3\ncheck_interval = 3600.0\n'
SEARCH = "search.localhost"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    directory = tmp_path_factory.mktemp("directory")
    with running_server(
        directory, server_options=MODULES, extra=SETTINGS, workers=2, log_level="info"
    ) as process:
        yield process


def org_cli(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return imactor_cli(server.config_path, "org", *args)


def import_org(server: ServerProcess, path: Path, text: str) -> str:
    """Write `text` to `path` and import it into the running server; its stdout (must succeed)."""
    path.write_text(text, encoding="utf-8")
    done = org_cli(server, "import", str(path))
    assert done.returncode == 0, done.stderr
    assert "the running server uses the new directory (2 workers)" in done.stdout, done.stdout
    return done.stdout


def acme(ceo: str, head: str, eve: str, emil: str, ada: str, rob: str) -> str:
    """The directory of the module docstring, as CSV."""
    return (
        "username,name,department,title,phone,email\n"
        f"{ceo},Chief Executive,Acme,CEO,,\n"
        f"{head},Hedda Head,Acme/Sales,Head of sales,+86 10 5555 0100,{head}@acme.example\n"
        f"{eve},Eve Martin,Acme/Sales/EMEA,Account manager,+33 1 5555 0101,{eve}@acme.example\n"
        f"{emil},Emil Berg,Acme/Sales/EMEA,Account manager,,{emil}@acme.example\n"
        f"{ada},Ada Wong,Acme/Sales/APAC,Sales engineer,,{ada}@acme.example\n"
        f"{rob},Rob Stone,Acme/R&D,Engineer,,{rob}@acme.example\n"
    )


def jid(username: str) -> str:
    return f"{username}@localhost"


# ---- shared roster groups ------------------------------------------------------------------------


def test_colleagues_are_in_the_roster_and_see_each_others_presence(
    server: ServerProcess, accounts: Accounts, clients: Clients, tmp_path: Path
) -> None:
    """slixmpp and aioxmpp see colleagues as contacts subscribed both ways, grouped by
    department, and presence flows between them as between subscribed contacts: a probe at
    login (eve was online first) and the broadcast of a later change."""
    ceo, head, eve, emil, ada, rob = accounts(6)
    import_org(server, tmp_path / "acme.csv", acme(ceo, head, eve, emil, ada, rob))

    async def scenario() -> None:
        async with clients.slixmpp(eve, send_presence=True) as sx:
            await sx.get_roster()
            roster = sx.client_roster
            contacts = sorted(key for key in roster if key != jid(eve))  # slixmpp lists the own JID too
            assert contacts == sorted(jid(name) for name in (ceo, head, emil))  # not ada, not rob
            assert roster[jid(head)]["subscription"] == "both"
            assert roster[jid(head)]["name"] == "Hedda Head"
            assert roster[jid(head)]["groups"] == ["Sales"]
            assert roster[jid(emil)]["groups"] == ["EMEA"]
            head_online = event_queue(sx, "got_online")
            async with clients.aioxmpp(head) as ax:
                items = ax.summon(aioxmpp.roster.RosterClient)
                await items._request_initial_roster()  # summoned after the stream started
                names = {str(i.jid): (i.subscription, i.name, i.groups) for i in items.items.values()}
                assert names[jid(ada)] == ("both", "Ada Wong", {"APAC"})
                assert sorted(names) == sorted(jid(name) for name in (ceo, eve, emil, ada))
                eve_seen: asyncio.Future[aioxmpp.Presence] = asyncio.get_running_loop().create_future()

                def on_available(who: aioxmpp.JID, stanza: aioxmpp.Presence) -> None:
                    if who.localpart == eve and not eve_seen.done():
                        eve_seen.set_result(stanza)

                ax.summon(aioxmpp.PresenceClient).on_available.connect(on_available)
                presence_server = ax.summon(aioxmpp.PresenceServer)
                presence_server.set_presence(aioxmpp.PresenceState(True), status="at my desk")
                online = await asyncio.wait_for(head_online.get(), TIMEOUT)
                assert online["from"].bare == jid(head)
                assert online["status"] == "at my desk"
                await asyncio.wait_for(eve_seen, TIMEOUT)  # eve's presence answered head's probe
                changed = event_queue(sx, "changed_status")
                away_state = aioxmpp.PresenceState(True, aioxmpp.PresenceShow.AWAY)
                presence_server.set_presence(away_state, status="lunch")
                away = await asyncio.wait_for(changed.get(), TIMEOUT)
                assert (away["from"].bare, away["show"], away["status"]) == (jid(head), "away", "lunch")

    run(scenario())


async def test_an_import_pushes_the_changes_and_presence_follows(
    server: ServerProcess, peers: Peers, tmp_path: Path
) -> None:
    """Moving people between departments while they are online: roster pushes (RFC 6121 §2.1.6)
    with a new version, available presence from the new colleague and unavailable from the old
    one, a removed person dropped; the old version then gets the whole roster."""
    ceo, head, eve, emil, ada, rob = peers.accounts(6)
    import_org(server, tmp_path / "acme.csv", acme(ceo, head, eve, emil, ada, rob))
    with trio.fail_after(TIMEOUT):
        e = await peers.online(eve)
        r = await peers.online(rob)
        m = await peers.online(emil)
        before = await e.roster()
        assert before is not None
        old_version, items = before
        assert sorted(items) == sorted(jid(name) for name in (ceo, head, emil))
        await e.expect(presence(from_=m.jid))  # emil came online after eve: broadcast
        # Rob joins EMEA (and so sees eve, emil, head, ceo); emil leaves the company.
        lines = acme(ceo, head, eve, emil, ada, rob).splitlines(keepends=True)
        moved = "".join(line for line in lines if not line.startswith(f"{emil},")).replace(
            f"{rob},Rob Stone,Acme/R&D", f"{rob},Rob Stone,Acme/Sales/EMEA")  # fmt: skip
        output = import_org(server, tmp_path / "moved.csv", moved)
        assert f"~ person {rob}:" in output
        assert f"- person {emil}" in output
        added = await e.push_for(jid(rob))
        assert (added.get("subscription"), added.get("name"), added.findtext(f"{{{NS_ROSTER}}}group")) == (
            "both", "Rob Stone", "EMEA")  # fmt: skip
        removed = await e.push_for(jid(emil))
        assert removed.get("subscription") == "remove"
        await e.expect(presence(from_=r.jid))  # rob's presence, without a new login
        gone = await e.expect(presence(from_=m.jid, type_="unavailable"))
        assert gone is not None
        await r.expect(presence(from_=e.jid))  # and eve's presence reached rob
        await m.expect(presence(from_=e.jid, type_="unavailable"))  # emil lost eve's presence
        changed = await e.roster(old_version)
        assert changed is not None, "the version did not change"
        new_version, items = changed
        assert new_version != old_version
        assert sorted(items) == sorted(jid(name) for name in (ceo, head, rob))
        assert await e.roster(new_version) is None  # §2.6.3: unchanged since
        # Presence now flows both ways as between subscribed contacts.
        await r.send("<presence><show>dnd</show></presence>")
        dnd = await e.expect(lambda el: presence(from_=r.jid)(el) and el.find(f"{C}show") is not None)
        assert dnd.findtext(f"{C}show") == "dnd"
        assert [el for el in e.inbox if presence(from_=r.jid)(el)] == []  # rob's presence came once


async def test_a_colleague_can_be_renamed_but_not_removed_or_unsubscribed(
    server: ServerProcess, peers: Peers, tmp_path: Path
) -> None:
    ceo, head, eve, emil, ada, rob = peers.accounts(6)
    import_org(server, tmp_path / "acme.csv", acme(ceo, head, eve, emil, ada, rob))
    with trio.fail_after(TIMEOUT):
        e = await peers.online(eve)
        m = await peers.online(emil)
        await e.expect(presence(from_=m.jid))
        refused = await e.roster_set(f"<item jid='{jid(emil)}' subscription='remove'/>")
        assert error_condition(refused) == "not-allowed", show(refused)
        renamed = await e.roster_set(f"<item jid='{jid(emil)}' name='Em'><group>Friends</group></item>")
        assert renamed.get("type") == "result", show(renamed)
        item = await e.push_for(jid(emil))
        assert (item.get("name"), item.get("subscription")) == ("Em", "both")
        groups = sorted(g.text or "" for g in item.findall(f"{{{NS_ROSTER}}}group"))
        assert groups == ["EMEA", "Friends"]  # the user's group and the department's
        # Cancelling the subscription is not the user's to do: emil still sees eve's changes.
        await e.send(f"<presence to='{jid(emil)}' type='unsubscribed'/>")
        await e.send(f"<presence to='{jid(emil)}' type='unsubscribe'/>")
        await e.send("<presence><status>still here</status></presence>")
        meanwhile = await m.before(lambda el: presence(from_=e.jid)(el) and el.find(f"{C}status") is not None)
        # Nothing made eve look offline to emil (an unsubscribed would take her presence away).
        assert [show(el) for el in meanwhile if presence(from_=e.jid, type_="unavailable")(el)] == []
        unchanged = await m.roster_items()
        assert unchanged[jid(eve)].get("subscription") == "both"


# ---- XEP-0055 search ---------------------------------------------------------------------------


def search_form(**fields: str) -> str:
    values = "".join(f"<field var='{var}'><value>{text}</value></field>" for var, text in fields.items())
    return (f"<x xmlns='{NS_DATA}' type='submit'><field var='FORM_TYPE' type='hidden'>"
            f"<value>{NS_SEARCH}</value></field>{values}</x>")  # fmt: skip


def test_slixmpp_finds_colleagues_with_the_search_form(
    server: ServerProcess, accounts: Accounts, clients: Clients, tmp_path: Path
) -> None:
    ceo, head, eve, emil, ada, rob = accounts(6)
    import_org(server, tmp_path / "acme.csv", acme(ceo, head, eve, emil, ada, rob))

    async def scenario() -> None:
        async with clients.slixmpp(rob, plugins=("xep_0030", "xep_0004", "xep_0055")) as sx:
            sx.plugin["xep_0055"].provide_search = False
            services = await sx.plugin["xep_0030"].get_items(jid="localhost")
            assert SEARCH in [item[0] for item in services["disco_items"]["items"]]
            info = await sx.plugin["xep_0030"].get_info(jid=SEARCH)
            assert NS_SEARCH in info["disco_info"]["features"]
            assert ("directory", "user", None, "Company directory") in info["disco_info"]["identities"]
            asked = sx.make_iq_get(ito=SEARCH)
            asked.enable("search")
            form = (await asked.send())["search"]["form"]
            assert {"name", "department", "title", "email"} <= set(form.get_fields())
            query = sx.plugin["xep_0055"].make_search_iq(ito=SEARCH)
            query["search"]["form"].add_field(var="department", value="emea")
            result = (await query.send())["search"]["form"]
            rows = {item["jid"]: item for item in result["items"]}
            assert sorted(rows) == sorted(jid(name) for name in (eve, emil))
            assert rows[jid(eve)]["name"] == "Eve Martin"
            assert rows[jid(eve)]["department"] == "Acme / Sales / EMEA"
            assert rows[jid(eve)]["phone"] == "+33 1 5555 0101"
            assert rows[jid(eve)]["email"] == f"{eve}@acme.example"
            by_name = sx.plugin["xep_0055"].make_search_iq(ito=SEARCH)
            by_name["search"]["form"].add_field(var="name", value="wong")
            by_name["search"]["form"].add_field(var="title", value="engineer")
            found = (await by_name.send())["search"]["form"]["items"]
            assert [item["jid"] for item in found] == [jid(ada)]

    run(scenario())


async def test_search_pages_and_old_fields_and_bad_requests(
    server: ServerProcess, peers: Peers, tmp_path: Path
) -> None:
    """XEP-0059 paging over the results (max_results is 3), the fixed fields of clients older
    than forms, and the errors for what the directory cannot answer."""
    ceo, head, eve, emil, ada, rob = peers.accounts(6)
    import_org(server, tmp_path / "acme.csv", acme(ceo, head, eve, emil, ada, rob))
    with trio.fail_after(TIMEOUT):
        r = await peers.login(rob)
        everyone = search_form(email="acme.example")  # five people; pages of at most 3

        async def page(rsm: str) -> tuple[list[str], dict[str, str | None]]:
            reply = await search(r, f"{everyone}{rsm}")
            assert reply.get("type") == "result", show(reply)
            values = [v.text or "" for v in reply.iter(f"{{{NS_DATA}}}value")]
            jids = [v for v in values if v.endswith("@localhost")]
            answer = reply.find(f"{{{NS_SEARCH}}}query/{{{NS_RSM}}}set")
            assert answer is not None, show(reply)
            first = answer.find(f"{{{NS_RSM}}}first")
            return jids, {"count": answer.findtext(f"{{{NS_RSM}}}count"),
                          "last": answer.findtext(f"{{{NS_RSM}}}last"),
                          "index": None if first is None else first.get("index")}  # fmt: skip

        first, meta = await page(f"<set xmlns='{NS_RSM}'><max>2</max></set>")
        assert first == [jid(head), jid(eve)]
        assert meta == {"count": "5", "last": jid(eve), "index": "0"}
        second, meta = await page(f"<set xmlns='{NS_RSM}'><max>10</max><after>{jid(eve)}</after></set>")
        assert second == [jid(emil), jid(ada), jid(rob)]  # at most max_results
        assert meta["index"] == "2"
        last, _ = await page(f"<set xmlns='{NS_RSM}'><max>1</max><before/></set>")
        assert last == [jid(rob)]

        legacy = await search(r, "<last>martin</last>")
        items = legacy.findall(f"{{{NS_SEARCH}}}query/{{{NS_SEARCH}}}item")
        assert [(i.get("jid"), i.findtext(f"{{{NS_SEARCH}}}first")) for i in items] == [(jid(eve), "Eve")]

        unknown = await search(r, search_form(floor="3"))
        assert error_condition(unknown) == "bad-request", show(unknown)
        assert "floor" in (unknown.findtext(f"{C}error/{{urn:ietf:params:xml:ns:xmpp-stanzas}}text") or "")
        empty = await search(r, search_form(name="*"))
        assert error_condition(empty) == "not-acceptable", show(empty)
        stray = await search(r, f"{everyone}<set xmlns='{NS_RSM}'><after>x@y</after></set>")
        assert error_condition(stray) == "item-not-found", show(stray)
        bad_max = await search(r, f"{everyone}<set xmlns='{NS_RSM}'><max>-1</max></set>")
        assert error_condition(bad_max) == "bad-request", show(bad_max)


async def search(peer: Peer, inside: str) -> Element:
    """A search request (`inside` the <query/>) to the directory; the answer."""
    return await peer.iq(f"<query xmlns='{NS_SEARCH}'>{inside}</query>", type_="set", to=SEARCH)


# ---- vCards ------------------------------------------------------------------------------------


async def test_vcards_show_the_directory_where_the_member_set_nothing(
    server: ServerProcess, peers: Peers, tmp_path: Path
) -> None:
    ceo, head, eve, emil, ada, rob, outsider = peers.accounts(7)
    import_org(server, tmp_path / "acme.csv", acme(ceo, head, eve, emil, ada, rob))
    with trio.fail_after(TIMEOUT):
        r = await peers.login(rob)
        e = await peers.login(eve)
        card = await vcard_of(r, eve)
        assert card == {"FN": "Eve Martin", "ORGNAME": "Acme", "ORGUNIT": "Sales EMEA",
                        "TITLE": "Account manager", "USERID": f"{eve}@acme.example",
                        "NUMBER": "+33 1 5555 0101"}  # fmt: skip
        own = "<vCard xmlns='vcard-temp'><FN>Evie</FN><NICKNAME>evie</NICKNAME><TITLE/></vCard>"
        stored = await e.iq(own, type_="set")
        assert stored.get("type") == "result", show(stored)
        card = await vcard_of(r, eve)
        assert card["FN"] == "Evie"  # hers wins
        assert card["NICKNAME"] == "evie"
        assert card["TITLE"] == "Account manager"  # she left it empty: the directory's
        assert await vcard_of(r, outsider) == {}  # not in the directory: the empty vCard


async def vcard_of(peer: Peer, username: str) -> dict[str, str]:
    reply = await peer.iq("<vCard xmlns='vcard-temp'/>", to=jid(username))
    assert reply.get("type") == "result", show(reply)
    fields: dict[str, str] = {}
    for element in reply.iter():
        if not isinstance(element.tag, str) or not element.tag.startswith(f"{{{NS_VCARD}}}"):
            continue
        if (element.text or "").strip():
            name = element.tag.split("}", 1)[1]
            fields[name] = f"{fields[name]} {element.text}" if name in fields else element.text or ""
    return fields


# ---- the commands --------------------------------------------------------------------------------


def test_import_is_all_or_nothing_repeatable_and_dry_runs(
    server: ServerProcess, accounts: Accounts, tmp_path: Path
) -> None:
    ceo, head, eve, emil, ada, rob = accounts(6)
    text = acme(ceo, head, eve, emil, ada, rob)
    import_org(server, tmp_path / "acme.csv", text)
    exported = org_cli(server, "export")
    assert exported.returncode == 0, exported.stderr

    bad = tmp_path / "bad.csv"
    bad.write_text(text + f"{rob}2,Robert,Acme/R&D,,,not-an-address\n", encoding="utf-8")
    refused = org_cli(server, "import", str(bad))
    assert refused.returncode == 1
    assert refused.stderr.strip() == (f"imactor: error: {bad}:8: email: 'not-an-address' is not an e-mail "
                                      "address; nothing imported")  # fmt: skip
    cyclic = tmp_path / "cycle.json"
    cyclic.write_text('{"departments": [\n{"id": "a", "name": "A", "parent": "b"},\n'
                      '{"id": "b", "name": "B", "parent": "a"}], "people": []}')  # fmt: skip
    refused = org_cli(server, "import", str(cyclic))
    assert refused.returncode == 1
    assert f"{cyclic}:2: parent: department 'a' is its own ancestor" in refused.stderr
    assert org_cli(server, "export").stdout == exported.stdout  # nothing changed

    again = org_cli(server, "import", str(tmp_path / "acme.csv"))
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("no changes (5 departments, 6 people)"), again.stdout

    as_json = tmp_path / "acme.json"
    written = org_cli(server, "export", str(as_json))
    assert written.returncode == 0, written.stderr
    assert "no changes" in org_cli(server, "import", str(as_json)).stdout  # JSON keeps the ids as they are

    moved = tmp_path / "moved.csv"
    moved.write_text(text.replace(f"{ada},Ada Wong,Acme/Sales/APAC", f"{ada},Ada Wong,Acme/R&D"))
    dry = org_cli(server, "import", "--dry-run", str(moved))
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines() == [
        "- department Acme/Sales/APAC",  # nobody left in it
        f"~ person {ada}: 'Ada Wong', 'Acme/Sales/APAC', 'Sales engineer', '', '{ada}@acme.example' (#0) => "
        f"'Ada Wong', 'Acme/R&D', 'Sales engineer', '', '{ada}@acme.example' (#0)",
        f"~ person {rob}: 'Rob Stone', 'Acme/R&D', 'Engineer', '', '{rob}@acme.example' (#0) => "
        f"'Rob Stone', 'Acme/R&D', 'Engineer', '', '{rob}@acme.example' (#1)",  # after ada, as in the file
        "dry run: 3 changes not made",
    ]
    assert org_cli(server, "export").stdout == exported.stdout


def test_import_from_stdin_and_export_as_csv(server: ServerProcess, accounts: Accounts) -> None:
    (alice,) = accounts(1)
    person = f'{{"username": "{alice}", "name": "A", "department": "hq"}}'
    stdin = f'{{"departments": [{{"id": "hq", "name": "HQ"}}], "people": [{person}]}}'
    done = imactor_cli(server.config_path, "org", "import", "-", stdin=stdin)
    assert done.returncode == 0, done.stderr
    exported = org_cli(server, "export", "--format", "csv")
    assert exported.stdout == f"username,name,department,title,phone,email\n{alice},A,HQ,,,\n"

