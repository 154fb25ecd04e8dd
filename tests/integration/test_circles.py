"""Circles (module `circles`): department and chat group feeds at pubsub.localhost, end to end.

One server per backend (SQLite, PostgreSQL: the feeds are the pubsub service's rows), two
workers, with `pubsub`, `directory` (``share = "none"``: no shared roster traffic in the inboxes;
``check_interval`` an hour, so a move reaches both workers through the import's reload, not the
periodic check) and `circles` (``max_entry_bytes`` small, to test the limit). Each test imports
its own directory with its own fresh accounts:

    Acme
    ├── Sales          (its circle: Sales and EMEA people)
    │   └── EMEA
    └── R&D

slixmpp's xep_0060 and xep_0059 plugins drive a member's client (post, comment, like, events,
paging); raw XML checks the exact errors and what an offline member gets at login.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, unquote
from xml.sax.saxutils import escape

import pytest
import slixmpp
import trio
from slixmpp.exceptions import IqError
from slixmpp.plugins.xep_0059 import stanza as rsm_stanza
from slixmpp.plugins.xep_0060.stanza import Pubsub
from slixmpp.xmlstream import register_stanza_plugin

from imactor.config import DEFAULT_MODULES
from tests.integration.conftest import Accounts
from tests.support.clients import Clients, event_queue, run
from tests.support.muc import admin, configure, create_instant
from tests.support.peer import C, Element, Peer, Peers, error_condition, new_id, nothing_before_marker, show
from tests.support.postgres import PostgresServer
from tests.support.server import ServerProcess, imactor_cli, running_server
from tests.support.timeouts import TIMEOUT

pytestmark = pytest.mark.usefixtures("server_alive")

SERVICE = "pubsub.localhost"
NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_OWNER = "http://jabber.org/protocol/pubsub#owner"
NS_EVENT = "http://jabber.org/protocol/pubsub#event"
NS_ERRORS = "http://jabber.org/protocol/pubsub#errors"
NS_RSM = "http://jabber.org/protocol/rsm"
NS_ATOM = "http://www.w3.org/2005/Atom"
NS_ATTACH = "urn:xmpp:pubsub-attachments:1"
NS_ITEMS = "http://jabber.org/protocol/disco#items"
P, EV, A = f"{{{NS_PUBSUB}}}", f"{{{NS_EVENT}}}", f"{{{NS_ATOM}}}"
MAX_ENTRY = 2000
MODULES = (
    "modules = [" + ", ".join(f'"{m}"' for m in (*DEFAULT_MODULES, "pubsub", "directory", "circles")) + "]\n"
)
SETTINGS = (
    '\n[modules.directory]\nshare = "none"\ncheck_interval = 3600.0\n'
    f"\n[modules.circles]\nmax_entry_bytes = {MAX_ENTRY}\n"
)


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    extra = SETTINGS
    if request.param == "postgresql":
        postgres: PostgresServer = request.getfixturevalue("postgres")
        extra += f'\n[storage]\nurl = "{postgres.database_url("circles")}"\npartitions = 4\n'
    with running_server(tmp_path_factory.mktemp(f"circles-{request.param}"), server_options=MODULES,
                        extra=extra, workers=2) as process:  # fmt: skip
        yield process


def import_org(server: ServerProcess, path: Path, people: dict[str, str], company: str = "") -> str:
    """Make the directory a company (a new one unless named: its feeds are new too) with
    `people` (username → department under the company), at once in both workers; its name."""
    company = company or new_id("Acme")
    lines = ["username,name,department"]
    lines += [f"{user},{user.capitalize()} Person,{company}/{dept}" for user, dept in people.items()]
    lines += [f"zz-sales,Placeholder,{company}/Sales/EMEA", f"zz-rnd,Placeholder,{company}/R&D"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    done = imactor_cli(server.config_path, "org", "import", str(path))
    assert done.returncode == 0, done.stderr
    assert "the running server uses the new directory (2 workers)" in done.stdout, done.stdout
    return company


def feeds(company: str) -> tuple[str, str]:
    """The circles of the company's Sales and R&D."""
    return f"circles/dept/{company}/Sales", f"circles/dept/{company}/R&D"


# ---- raw XML helpers ----------------------------------------------------------------------------


def entry(title: str, extra: str = "") -> str:
    return f"<entry xmlns='{NS_ATOM}'><title type='text'>{title}</title>{extra}</entry>"


async def ps(peer: Peer, body: str, type_: str = "set", ns: str = NS_PUBSUB) -> Element:
    return await peer.iq(f"<pubsub xmlns='{ns}'>{body}</pubsub>", type_=type_, to=SERVICE)


async def post(peer: Peer, node: str, item_id: str, payload: str) -> Element:
    return await ps(
        peer, f"<publish node='{escape(node)}'><item id='{escape(item_id)}'>{payload}</item></publish>"
    )


async def items(peer: Peer, node: str, rsm: str = "") -> Element:
    return await ps(peer, f"<items node='{escape(node)}'/>{rsm}", type_="get")


def ok(reply: Element) -> Element:
    assert reply.get("type") == "result", show(reply)
    return reply


def errors(reply: Element) -> tuple[str | None, str | None]:
    """(the stanza error condition, the pubsub#errors condition)."""
    assert reply.get("type") == "error", show(reply)
    error = reply.find(f"{C}error")
    assert error is not None
    app = [c.tag.split("}")[1] for c in error if c.tag.startswith(f"{{{NS_ERRORS}}}")]
    return error_condition(reply), (app[0] if app else None)


def ids(reply: Element) -> list[str]:
    return [item.get("id", "") for item in ok(reply).iter(f"{P}item")]


def inner(element: Element, path: str) -> Element:
    found = element.find(path)
    assert found is not None, show(element)
    return found


def link(entry_element: Element, rel: str) -> str:
    """The node of an entry's ``xmpp:`` link of relation `rel`."""
    for found in entry_element.iter(f"{A}link"):
        if found.get("rel") == rel:
            href = found.get("href", "")
            assert href.startswith(f"xmpp:{SERVICE}?;node="), href
            return unquote(href.split(";node=")[1].split(";")[0])
    raise AssertionError(f"no {rel} link")


def likes_node(feed: str, post_id: str) -> str:
    return f"{NS_ATTACH}/xmpp:{SERVICE}?;node={quote(feed, safe='')};item={quote(post_id, safe='')}"


def event_of(node: str, item_id: str | None = None):  # type: ignore[no-untyped-def]
    """Matches a notification from the service about `node` (and the item `item_id`)."""

    def match(e: Element) -> bool:
        ev = e.find(f"{EV}event")
        if e.tag != f"{C}message" or e.get("from") != SERVICE or ev is None or ev[0].get("node") != node:
            return False
        return item_id is None or item_id in {item.get("id") for item in ev[0]}

    return match


# ---- a member's client: slixmpp's pubsub and RSM plugins ----------------------------------------


def test_members_post_comment_like_and_page_with_slixmpp(
    server: ServerProcess, accounts: Accounts, clients: Clients, tmp_path: Path
) -> None:
    """Ann (Sales) posts; Ben (Sales/EMEA, so in the Sales circle) is notified with the entry the
    service stamped, comments through the post's replies link and likes it (twice: one like);
    Cid (R&D) is refused; then 25 more posts are paged through, newest first, with XEP-0059."""
    ann, ben, cid = accounts(3)
    sales = feeds(import_org(server, tmp_path / "acme.csv", {ann: "Sales", ben: "Sales/EMEA", cid: "R&D"}))[0]
    register_stanza_plugin(Pubsub, rsm_stanza.Set)  # slixmpp pages pubsub items with it
    plugins = ("xep_0004", "xep_0030", "xep_0059", "xep_0060")

    async def scenario() -> None:
        async with (
            clients.slixmpp(ann, plugins=plugins, send_presence=True) as a,
            clients.slixmpp(ben, plugins=plugins, send_presence=True) as b,
            clients.slixmpp(cid, plugins=plugins, send_presence=True) as c,
        ):
            a_events, b_events = event_queue(a, "pubsub_publish"), event_queue(b, "pubsub_publish")
            pubsub_a, pubsub_b = a.plugin["xep_0060"], b.plugin["xep_0060"]
            first = slixmpp.ET.fromstring(
                entry("Quarter closed: thanks all", "<author><name>Forged</name></author>")
            )
            await pubsub_a.publish(SERVICE, sales, id="q1", payload=first)
            got = await asyncio.wait_for(b_events.get(), TIMEOUT)
            assert got["pubsub_event"]["items"]["node"] == sales
            item = got["pubsub_event"]["items"]["item"]
            assert (item["id"], item["publisher"]) == ("q1", f"{ann}@localhost")
            stamped = item["payload"]
            assert stamped.findtext(f"{A}author/{A}name") == f"{ann.capitalize()} Person"  # not "Forged"
            assert stamped.findtext(f"{A}author/{A}uri") == f"xmpp:{ann}@localhost"
            assert stamped.findtext(f"{A}published")
            comments = link(stamped, "replies")
            await asyncio.wait_for(a_events.get(), TIMEOUT)  # Ann's own copy
            # Ben comments; Ann hears of it.
            remark = slixmpp.ET.fromstring(entry("Well done!"))
            await pubsub_b.publish(SERVICE, comments, id="c1", payload=remark)
            heard = await asyncio.wait_for(a_events.get(), TIMEOUT)
            assert heard["pubsub_event"]["items"]["node"] == comments
            assert heard["pubsub_event"]["items"]["item"]["payload"].findtext(f"{A}title") == "Well done!"
            await asyncio.wait_for(b_events.get(), TIMEOUT)
            # Ben likes the post, twice: one like (XEP-0470: the item id is his bare JID).
            likes = likes_node(sales, "q1")
            for _ in range(2):
                noticed = slixmpp.ET.fromstring(f"<attachments xmlns='{NS_ATTACH}'><noticed/></attachments>")
                await pubsub_b.publish(SERVICE, likes, id=f"{ben}@localhost", payload=noticed)
            liked = await pubsub_a.get_items(SERVICE, likes)
            assert [i["id"] for i in liked["pubsub"]["items"]] == [f"{ben}@localhost"]
            # Cid is not in Sales: no post, no reading.
            with pytest.raises(IqError) as refused:
                await c.plugin["xep_0060"].publish(
                    SERVICE, sales, id="x", payload=slixmpp.ET.fromstring(entry("hi"))
                )
            assert refused.value.condition == "forbidden"
            with pytest.raises(IqError) as closed:
                await c.plugin["xep_0060"].get_items(SERVICE, sales)
            assert closed.value.condition == "not-allowed"
            # 25 more posts; a client pages through them, newest first, ten at a time.
            for n in range(25):
                await pubsub_a.publish(SERVICE, sales, id=f"p{n:02}",
                                       payload=slixmpp.ET.fromstring(entry(f"post {n}")))  # fmt: skip
            pager = pubsub_b.get_items(SERVICE, sales, iterator=True)
            pages = [[i["id"] for i in page["pubsub"]["items"]] async for page in pager]
            assert [len(p) for p in pages] == [10, 10, 6]
            newest_first = [f"p{n:02}" for n in reversed(range(25))] + ["q1"]
            assert [item_id for p in pages for item_id in p] == newest_first

    run(scenario(), timeout=2 * TIMEOUT)


# ---- offline members ------------------------------------------------------------------------------


async def test_an_offline_member_gets_the_posts_at_login(
    server: ServerProcess, peers: Peers, tmp_path: Path
) -> None:
    """Posts and comments come as `normal` messages, so offline storage keeps them for a member
    who is away (XEP-0160), with their delay stamp; likes are for those online only."""
    ann, dora = peers.accounts(2)
    sales = feeds(import_org(server, tmp_path / "acme.csv", {ann: "Sales", dora: "Sales/EMEA"}))[0]
    with trio.fail_after(TIMEOUT):
        a = await peers.online(ann)
        ok(await post(a, sales, "away1", entry("While you were out")))
        ok(await post(a, sales, "away2", entry("Second news")))
        published = await a.expect(event_of(sales))
        comments = link(inner(published, f"{EV}event/{EV}items/{EV}item/{A}entry"), "replies")
        ok(await post(a, comments, "c1", entry("A comment")))
        like = f"<attachments xmlns='{NS_ATTACH}'><noticed/></attachments>"
        ok(await post(a, likes_node(sales, "away1"), f"{ann}@localhost", like))
        d = await peers.online(dora)
        got = [await d.expect(event_of(node)) for node in (sales, sales, comments)]
        assert [m.get("type") for m in got] == ["normal"] * 3
        assert [inner(m, f"{EV}event/{EV}items/{EV}item").get("id") for m in got] == ["away1", "away2", "c1"]
        assert all(m.find("{urn:xmpp:delay}delay") is not None for m in got)
        ok(await items(d, sales))  # and she may read the feed
        # The offline messages came in one batch at her initial presence: the like was not kept.
        assert [m for m in d.inbox if event_of(likes_node(sales, "away1"))(m)] == []


# ---- bad input ----------------------------------------------------------------------------------


async def test_bad_input_gets_the_xep_errors(server: ServerProcess, peers: Peers, tmp_path: Path) -> None:
    ann, ben, cid = peers.accounts(3)
    company = import_org(server, tmp_path / "acme.csv", {ann: "Sales", ben: "Sales", cid: "R&D"})
    sales = feeds(company)[0]
    with trio.fail_after(TIMEOUT):
        a, b, c = await peers.online(ann), await peers.online(ben), await peers.online(cid)
        ok(await post(a, sales, "mine", entry("Mine")))
        # Not a member: publish is forbidden, reading a closed node (XEP-0060 §7.1.3.1, §6.5.5).
        assert errors(await post(c, sales, "x", entry("x")))[0] == "forbidden"
        assert errors(await items(c, sales)) == ("not-allowed", "closed-node")
        assert errors(await ps(c, f"<subscribe node='{sales}' jid='{c.bare}'/>")) == (
            "not-allowed",
            "closed-node",
        )
        # Not an Atom entry, no title, too big.
        assert errors(await post(a, sales, "x", "<note xmlns='urn:test'>hi</note>")) == (
            "bad-request",
            "invalid-payload",
        )
        assert errors(await post(a, sales, "x", f"<entry xmlns='{NS_ATOM}'/>")) == (
            "bad-request",
            "invalid-payload",
        )
        assert errors(await post(a, sales, "x", entry("x" * MAX_ENTRY))) == (
            "not-acceptable",
            "payload-too-big",
        )
        # A comment or like on a post that does not exist; a like in another's name.
        missing = f"urn:xmpp:microblog:0:comments/{sales}/no-such-post"
        assert errors(await post(a, missing, "c", entry("?")))[0] == "item-not-found"
        like = f"<attachments xmlns='{NS_ATTACH}'><noticed/></attachments>"
        assert (
            errors(await post(a, likes_node(sales, "no-such-post"), f"{ann}@localhost", like))[0]
            == "item-not-found"
        )
        assert errors(await post(a, likes_node(sales, "mine"), f"{ben}@localhost", like))[0] == "bad-request"
        # Liking twice is one like.
        ok(await post(b, likes_node(sales, "mine"), f"{ben}@localhost", like))
        ok(await post(b, likes_node(sales, "mine"), f"{ben}@localhost", like))
        assert ids(await items(a, likes_node(sales, "mine"))) == [f"{ben}@localhost"]
        # Paging after an item that is not there (XEP-0059 §2.5), a bad <max/>.
        bad_after = f"<set xmlns='{NS_RSM}'><max>5</max><after>no-such-item</after></set>"
        assert errors(await items(a, sales, bad_after))[0] == "item-not-found"
        bad_max = f"<set xmlns='{NS_RSM}'><max>many</max></set>"
        assert errors(await items(a, sales, bad_max))[0] == "bad-request"
        # Another member's post is not Ben's to retract or overwrite; a department that does not exist.
        assert errors(await ps(b, f"<retract node='{sales}'><item id='mine'/></retract>"))[0] == "forbidden"
        assert errors(await post(b, sales, "mine", entry("Taken over")))[0] == "forbidden"
        assert (
            errors(await post(a, f"circles/dept/{company}/Nowhere", "x", entry("x")))[0] == "item-not-found"
        )
        # The service's nodes: nobody creates, configures or leaves them.
        assert errors(await ps(a, "<create node='circles/dept/Mine'/>"))[0] == "not-allowed"
        assert errors(await ps(a, f"<configure node='{sales}'/>", type_="get", ns=NS_OWNER))[0] == "forbidden"
        assert errors(await ps(a, f"<unsubscribe node='{sales}' jid='{a.bare}'/>"))[0] == "not-allowed"
        # Ann retracts her post: its comments and likes go with it, members hear of it.
        ok(await ps(a, f"<retract node='{sales}' notify='true'><item id='mine'/></retract>"))
        retracted = await b.expect(
            lambda e: event_of(sales)(e) and e.find(f"{EV}event/{EV}items/{EV}retract") is not None
        )
        assert inner(retracted, f"{EV}event/{EV}items/{EV}retract").get("id") == "mine"
        assert errors(await items(a, likes_node(sales, "mine")))[0] == "item-not-found"
        assert "mine" not in ids(await items(a, sales))


# ---- membership follows the source --------------------------------------------------------------


async def test_moving_a_person_changes_access_and_recipients(
    server: ServerProcess, peers: Peers, tmp_path: Path
) -> None:
    ann, eve = peers.accounts(2)
    company = import_org(server, tmp_path / "acme.csv", {ann: "Sales", eve: "R&D"})
    sales, rnd = feeds(company)
    with trio.fail_after(TIMEOUT):
        a, e = await peers.online(ann), await peers.online(eve)
        ok(await post(a, sales, "before", entry("Before the move")))
        assert errors(await items(e, sales)) == ("not-allowed", "closed-node")
        # Eve joins Sales, Ann leaves for R&D: no restart.
        import_org(server, tmp_path / "moved.csv", {ann: "R&D", eve: "Sales"}, company)
        assert ids(await items(e, sales)) == ["before"]
        assert errors(await items(a, sales)) == ("not-allowed", "closed-node")
        assert errors(await post(a, sales, "x", entry("x")))[0] == "forbidden"
        ok(await post(e, sales, "after", entry("After the move")))
        await e.expect(event_of(sales))
        await nothing_before_marker(e, a, event_of(sales, "after"))  # Ann is not told any more
        ok(await post(a, rnd, "rnd", entry("Hello R&amp;D")))
        await a.expect(event_of(rnd))
        listed = ok(await e.iq(f"<query xmlns='{NS_ITEMS}'/>", to=SERVICE))
        names = {i.get("node"): i.get("name") for i in listed.iter(f"{{{NS_ITEMS}}}item")}
        assert names.get(sales) == f"{company} / Sales"
        assert f"circles/dept/{company}" in names
        assert rnd not in names
        subs = ok(await ps(e, "<subscriptions/>", type_="get"))
        assert sales in {s.get("node") for s in subs.iter(f"{P}subscription")}


async def test_a_room_circle_follows_the_rooms_members(
    server: ServerProcess, peers: Peers, tmp_path: Path
) -> None:
    """A persistent members-only room's owners, admins and members have a circle; granting and
    revoking membership changes who reads and who is told, at once."""
    own, mia, nil = peers.accounts(3)
    import_org(server, tmp_path / "acme.csv", {})
    room_name = new_id("team").lower()
    room = f"{room_name}@conference.localhost"
    feed = f"circles/room/{room_name}"
    with trio.fail_after(TIMEOUT):
        o, m, n = await peers.online(own), await peers.online(mia), await peers.online(nil)
        await create_instant(o, room, "owner")
        assert errors(await post(o, feed, "x", entry("x")))[0] == "item-not-found"  # not a chat group yet
        ok(
            await configure(
                o, room, {"muc#roomconfig_persistentroom": "1", "muc#roomconfig_membersonly": "1"}
            )
        )
        ok(await admin(o, room, f"<item jid='{m.bare}' affiliation='member'/>"))
        ok(await post(m, feed, "hello", entry("Hello team")))
        told = await o.expect(event_of(feed))
        assert inner(told, f"{EV}event/{EV}items/{EV}item").get("publisher") == m.bare
        assert errors(await items(n, feed)) == ("not-allowed", "closed-node")
        assert errors(await post(n, feed, "x", entry("x")))[0] == "forbidden"
        ok(await admin(o, room, f"<item jid='{n.bare}' affiliation='member'/>"))
        ok(await admin(o, room, f"<item jid='{m.bare}' affiliation='none'/>"))
        assert ids(await items(n, feed)) == ["hello"]
        assert errors(await items(m, feed)) == ("not-allowed", "closed-node")
        ok(await post(n, feed, "second", entry("Glad to be here")))
        await n.expect(event_of(feed))
        # The notifications left from Nil's session before its answer: a marker from it comes after.
        await nothing_before_marker(n, m, event_of(feed, "second"))
