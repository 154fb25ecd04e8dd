"""The web admin console (``[listen.console]``, imactor/console) over real HTTP, against a real node.

One node for the module (two workers; `boss` and `chief` administrators; the word filter and the
directory with ``check_interval`` an hour, so that a change reaches the workers only through the
console's ``reload-modules``, as the CLI's does). The console's client is aiohttp (the test
extra's HTTP library), with a cookie jar as a browser keeps, driven from its own event loop in a
thread (`ConsoleClient`); the XMPP side is raw `Peer`s, which must see what the console did:
sessions ended, words masked, announcements and reminders delivered.
"""

from __future__ import annotations

import asyncio
import re
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import pytest
import trio

from imactor.config import DEFAULT_MODULES, load_config
from imactor.directory.org import Org
from imactor.storage import Storage
from tests.integration.conftest import PASSWORD
from tests.support.peer import C, Element, Peer, Peers, message, roster_push
from tests.support.server import ServerProcess, running_server
from tests.support.timeouts import TIMEOUT

T = TypeVar("T")

BOSS, CHIEF = "boss", "chief"
PLAIN = "plainuser"  #: an account that is not an administrator
ADMIN_PASSWORD = "console admin password"
MODULES = (
    "modules = [" + ", ".join(f'"{name}"' for name in (*DEFAULT_MODULES, "word_filter", "directory")) + "]\n"
)
SETTINGS = """
[listen.console]
enabled = true
host = "127.0.0.1"
port = 0

[limits]
login_failures = 3

[modules.word_filter]
check_interval = 3600.0

[modules.directory]
check_interval = 3600.0

[[hosts]]
domain = "other.test"
"""
pytestmark = pytest.mark.usefixtures("server_alive")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    admins = f'admins = ["{BOSS}@localhost", "{CHIEF}@localhost"]\n'
    with running_server(
        tmp_path_factory.mktemp("console"),
        users=[(BOSS, ADMIN_PASSWORD), (CHIEF, ADMIN_PASSWORD), (PLAIN, PASSWORD)],
        server_options=admins + MODULES,
        extra=SETTINGS,
        workers=2,
    ) as process:
        yield process


@dataclass
class Reply:
    status: int
    headers: Mapping[str, str]
    cookies: list[str]  #: the Set-Cookie headers
    text: str
    location: str  #: where a redirect (3xx) points, or the URL finally reached


class ConsoleClient:
    """A browser's view of the console: aiohttp with a cookie jar, on an asyncio loop in a thread
    of its own (the tests are Trio's); every call blocks until the answer is whole."""

    def __init__(self, port: int, source: str = "127.0.0.1") -> None:
        self.base = f"http://127.0.0.1:{port}"
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

        async def open_session() -> aiohttp.ClientSession:
            connector = aiohttp.TCPConnector(local_addr=(source, 0), force_close=True)
            return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True), connector=connector)

        self._session = self._run(open_session())

    def _run(self, work: Awaitable[T]) -> T:
        return asyncio.run_coroutine_threadsafe(work, self._loop).result(TIMEOUT)  # type: ignore[arg-type]

    def request(
        self,
        method: str,
        path: str,
        data: Mapping[str, str] | None = None,
        *,
        follow: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        async def send() -> Reply:
            async with self._session.request(
                method, self.base + path, data=data, allow_redirects=follow, headers=headers
            ) as response:
                text = await response.text()
                location = response.headers.get("Location", str(response.url))
                return Reply(
                    response.status,
                    dict(response.headers),
                    response.headers.getall("Set-Cookie", []),
                    text,
                    location,
                )

        return self._run(send())

    def get(self, path: str, *, follow: bool = False) -> Reply:
        return self.request("GET", path, follow=follow)

    def post(
        self,
        path: str,
        data: Mapping[str, str],
        *,
        follow: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        return self.request("POST", path, data, follow=follow, headers=headers)

    def login(self, jid: str = f"{BOSS}@localhost", password: str = ADMIN_PASSWORD) -> Reply:
        token = csrf(self.get("/login").text)
        return self.post("/login", {"csrf": token, "action": "login", "jid": jid, "password": password})

    def act(self, path: str, action: str, **fields: str) -> Reply:
        """Submit one of `path`'s forms as the page gives it (with its CSRF token); follows the
        redirect to the page, which shows what was done."""
        token = csrf(self.get(path).text)
        return self.post(path, {"csrf": token, "action": action, **fields}, follow=True)

    def has_session(self) -> bool:
        return any(cookie.key == "imactor_console" for cookie in self._session.cookie_jar)

    def close(self) -> None:
        self._run(self._session.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


def body_is(text: str) -> Callable[[Element], bool]:
    return lambda e: e.tag == f"{C}message" and e.findtext(f"{C}body") == text


def csrf(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found is not None, page
    return found.group(1)


@pytest.fixture
def console(server: ServerProcess) -> Iterator[ConsoleClient]:
    """A browser logged in as `boss`."""
    client = ConsoleClient(server.ports["console"])
    try:
        assert client.login().status == 303
        yield client
    finally:
        client.close()


@pytest.fixture
def stranger(server: ServerProcess) -> Iterator[ConsoleClient]:
    """A browser with no session."""
    client = ConsoleClient(server.ports["console"])
    try:
        yield client
    finally:
        client.close()


async def in_thread(work: Callable[[], T]) -> T:
    return await trio.to_thread.run_sync(work)


def read_org(server: ServerProcess) -> Org:
    async def load() -> Org:
        config = load_config(server.config_path)
        async with await Storage.open(config.storage_url) as storage:
            return (await storage.org.load())[1]

    return trio.run(load)


def account_state(server: ServerProcess, username: str) -> tuple[bool, bool]:
    """(exists, disabled)."""

    async def load() -> tuple[bool, bool]:
        config = load_config(server.config_path)
        async with await Storage.open(config.storage_url) as storage:
            return await storage.accounts.exists(username), await storage.accounts.is_disabled(username)

    return trio.run(load)


def raw_http(port: int, request: bytes) -> tuple[int, bytes]:
    """One raw exchange (the console closes after each answer): the status and the body."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


# ---- logging in and out ---------------------------------------------------------------------------


def test_an_admin_logs_in_with_a_safe_cookie_and_sees_the_node(
    server: ServerProcess, stranger: ConsoleClient
) -> None:
    first = stranger.get("/")
    assert (first.status, first.location) == (303, "/login")
    reply = stranger.login()
    assert (reply.status, reply.location) == (303, "/")
    (cookie,) = [c for c in reply.cookies if c.startswith("imactor_console=")]
    attributes = [part.strip() for part in cookie.split(";")]
    assert {"HttpOnly", "SameSite=Strict", "Path=/"} <= set(attributes)
    assert "Secure" not in attributes  # plain HTTP on loopback; over TLS it is (test below)
    overview = stranger.get("/")
    assert overview.status == 200
    assert "2 / 2" in overview.text
    assert "workers running" in overview.text
    assert overview.text.count("badge ok") == 2  # both workers running
    assert "boss@localhost" in overview.text
    assert "default-src 'none'" in overview.headers["Content-Security-Policy"]
    assert stranger.get("/console.css").headers["Content-Type"].startswith("text/css")


def test_logout_ends_the_session(server: ServerProcess, console: ConsoleClient) -> None:
    token = csrf(console.get("/").text)
    reply = console.post("/logout", {"csrf": token, "action": "logout"})
    assert (reply.status, reply.location) == (303, "/login")
    assert not console.has_session()
    assert console.get("/accounts").location == "/login"


@pytest.mark.parametrize(
    ("jid", "password"),
    [
        (f"{BOSS}@localhost", "not the password"),
        (f"{PLAIN}@localhost", PASSWORD),  # an account with the right password, but not an admin
        ("nobody@localhost", ADMIN_PASSWORD),
        ("not a jid@@", ADMIN_PASSWORD),
        (f"{BOSS}@otherdomain", ADMIN_PASSWORD),
    ],
    ids=["wrong-password", "not-an-admin", "no-account", "malformed-jid", "other-domain"],
)
def test_a_login_that_is_not_an_admins_is_refused(server: ServerProcess, jid: str, password: str) -> None:
    client = ConsoleClient(server.ports["console"], source="127.0.0.3")
    try:
        reply = client.login(jid, password)
        assert reply.status == 401
        assert "wrong JID or password, or not an administrator" in reply.text
        assert not client.has_session()
        assert client.get("/").location == "/login"
    finally:
        client.close()


def test_failed_logins_are_throttled_even_with_the_right_password(server: ServerProcess) -> None:
    client = ConsoleClient(server.ports["console"], source="127.0.0.2")
    try:
        for _ in range(3):  # [limits] login_failures
            assert client.login(f"{CHIEF}@localhost", "guess").status == 401
        reply = client.login(f"{CHIEF}@localhost", ADMIN_PASSWORD)
        assert reply.status == 429
        assert "too many failed logins" in reply.text
        assert not client.has_session()
    finally:
        client.close()


# ---- requests that must change nothing -----------------------------------------------------------


def test_without_a_session_pages_redirect_and_changes_are_refused(
    server: ServerProcess, stranger: ConsoleClient
) -> None:
    for path in ("/", "/accounts", "/departments", "/words", "/announcements", "/reminders"):
        assert (stranger.get(path).status, stranger.get(path).location) == (303, "/login")
    reply = stranger.post(
        "/accounts", {"csrf": "x", "action": "add", "username": "intruder", "password": "p", "password2": "p"}
    )
    assert reply.status == 401
    assert account_state(server, "intruder") == (False, False)


@pytest.mark.parametrize("token", [None, "", "forged-token"], ids=["missing", "empty", "forged"])
def test_a_bad_csrf_token_is_403_and_changes_nothing(
    server: ServerProcess, console: ConsoleClient, token: str | None
) -> None:
    form = {"action": "add", "username": "csrfvictim", "password": "p", "password2": "p"}
    if token is not None:
        form["csrf"] = token
    assert console.post("/accounts", form).status == 403
    assert account_state(server, "csrfvictim") == (False, False)


def test_a_post_from_another_origin_is_refused(server: ServerProcess, console: ConsoleClient) -> None:
    token = csrf(console.get("/accounts").text)
    form = {"csrf": token, "action": "add", "username": "crosssite", "password": "p", "password2": "p"}
    assert console.post("/accounts", form, headers={"Origin": "http://evil.example"}).status == 403
    assert console.post("/accounts", form, headers={"Sec-Fetch-Site": "cross-site"}).status == 403
    assert account_state(server, "crosssite") == (False, False)


@pytest.mark.parametrize(
    ("path", "action", "fields", "said"),
    [
        (
            "/accounts",
            "add",
            {"username": "bad user@", "password": "p", "password2": "p"},
            "invalid username",
        ),
        (
            "/accounts",
            "add",
            {"username": "mismatch", "password": "p", "password2": "q"},
            "the two passwords differ",
        ),
        ("/accounts", "delete", {"username": BOSS}, "your own account"),
        ("/accounts", "explode", {"username": "x"}, "unknown action"),
        ("/departments", "add", {"name": "", "parent": ""}, "department name: empty"),
        ("/departments", "add", {"name": "A/B", "parent": ""}, "a &#x27;/&#x27; separates"),
        ("/departments", "rename", {"key": "Nowhere", "name": "X"}, "no department"),
        ("/words", "add", {"name": "Bad Name!", "words": "x"}, "invalid list name"),
        ("/words", "add", {"name": "emptyword", "lines": " \n\u200b\n"}, ""),
        ("/words", "add", {"name": "huge", "words": "x" * 300}, ""),
        ("/words", "add", {"name": "badscope", "words": "x", "scope": "planet:mars"}, "expected"),
        ("/reminders", "schedule", {"when": "someday", "text": "hi", "recipients": "all"}, "is not a time"),
        ("/reminders", "schedule", {"when": "2001-01-01T00:00:00Z", "text": "hi"}, "in the past"),
        (
            "/reminders",
            "schedule",
            {"when": "in 5 minutes", "text": "hi", "recipients": "accounts", "accounts": "x@elsewhere"},
            "not an account of localhost",
        ),
        ("/announcements", "online", {"body": "  "}, "the announcement is empty"),
    ],
    ids=[
        "username",
        "passwords",
        "own-account",
        "unknown-action",
        "empty-department",
        "slash",
        "no-department",
        "list-name",
        "empty-word",
        "enormous-word",
        "scope",
        "when",
        "past",
        "foreign-jid",
        "empty-announcement",
    ],
)
def test_a_malformed_value_is_explained_on_the_page_and_changes_nothing(
    server: ServerProcess, console: ConsoleClient, path: str, action: str, fields: dict[str, str], said: str
) -> None:
    before_org = read_org(server)
    page = console.get(path).text
    reply = console.post(path, {"csrf": csrf(page), "action": action, **fields})
    assert reply.status == 400
    assert 'class="notice error"' in reply.text
    assert said in reply.text
    assert read_org(server) == before_org
    words = console.get("/words").text
    for name in ("emptyword", "huge", "badscope"):
        assert f"{name}:" not in words
    assert account_state(server, "mismatch") == (False, False)
    assert "hi</td>" not in console.get("/reminders").text


@pytest.mark.parametrize(
    ("request_bytes", "expected"),
    [
        (b"GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n", 404),
        (b"GET /%2e%2e/%2e%2e/etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n", 404),
        (b"GET /accounts/../../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n", 404),
        (b"GET //etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n", 404),
        (b"PUT /accounts HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 405),
        (b"POST /accounts HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n", 413),
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n", 431),
    ],
    ids=[
        "traversal",
        "encoded-traversal",
        "nested-traversal",
        "double-slash",
        "put",
        "oversized-body",
        "not-http",
        "huge-header",
    ],
)
def test_odd_requests_get_their_status_and_nothing_else(
    server: ServerProcess, request_bytes: bytes, expected: int
) -> None:
    status, body = raw_http(server.ports["console"], request_bytes)
    assert status == expected
    assert b"root:" not in body
    assert raw_http(server.ports["console"], b"GET /login HTTP/1.1\r\nHost: x\r\n\r\n")[0] == 200


def test_an_oversized_form_is_refused_while_it_streams(server: ServerProcess, console: ConsoleClient) -> None:
    token = csrf(console.get("/accounts").text)
    reply = console.post(
        "/accounts",
        {"csrf": token, "action": "add", "username": "big", "password": "x" * 400_000, "password2": "x"},
    )
    assert reply.status == 413
    assert account_state(server, "big") == (False, False)


# ---- the pages' changes reach the running server ---------------------------------------------


async def test_accounts_add_disable_enable_password_delete(
    server: ServerProcess, console: ConsoleClient, peers: Peers
) -> None:
    with trio.fail_after(TIMEOUT):
        added = await in_thread(
            lambda: console.act(
                "/accounts", "add", username="Carol", password="first pw", password2="first pw"
            )
        )
        assert "Created carol@localhost" in added.text
        listed = await in_thread(lambda: console.get("/accounts?q=caro").text)
        assert "carol@localhost" in listed
        assert "1 accounts" in listed
        carol = await Peer.online(server.c2s_port, "carol", "first pw")
        done = await in_thread(lambda: console.act("/accounts", "disable", username="carol"))
        assert "Disabled carol@localhost" in done.text
        assert await carol.raw.stream_error() == "not-authorized"
        with pytest.raises(PermissionError):
            await Peer.login(server.c2s_port, "carol", "first pw")
        await in_thread(lambda: console.act("/accounts", "enable", username="carol"))
        await in_thread(lambda: console.act("/accounts", "password", username="carol", password="second pw"))
        with pytest.raises(PermissionError):
            await Peer.login(server.c2s_port, "carol", "first pw")
        carol = await Peer.online(server.c2s_port, "carol", "second pw")
        asked = await in_thread(lambda: console.act("/accounts", "delete", username="carol"))
        assert "Delete carol@localhost and everything stored for it" in asked.text
        assert await in_thread(lambda: account_state(server, "carol")) == (True, False)  # not yet
        confirm = re.search(
            r'<form method="post" action="/accounts" class="inline danger">.*?</form>', asked.text
        )
        assert confirm is not None
        assert 'name="confirm" value="yes"' in confirm.group(0)
        deleted = await in_thread(lambda: console.act("/accounts", "delete", username="carol", confirm="yes"))
        assert "Deleted carol@localhost" in deleted.text
        await carol.raw.wait_closed()
        assert await in_thread(lambda: account_state(server, "carol")) == (False, False)


async def test_accounts_of_another_served_domain(server: ServerProcess, console: ConsoleClient) -> None:
    """A [[hosts]] domain's account is named in full; it is another person than the primary
    domain's account of the same name."""
    with trio.fail_after(TIMEOUT):
        added = await in_thread(
            lambda: console.act("/accounts", "add", username="Dora@Other.Test", password="pw", password2="pw")
        )
        assert "Created dora@other.test" in added.text
        assert "dora@other.test" in await in_thread(lambda: console.get("/accounts?q=dora").text)
        assert await in_thread(lambda: account_state(server, "dora")) == (False, False)
        dora = await Peer.online(server.c2s_port, "dora", "pw", domain="other.test")
        assert dora.jid.startswith("dora@other.test/")
        done = await in_thread(lambda: console.act("/accounts", "disable", username="dora@other.test"))
        assert "Disabled dora@other.test" in done.text
        assert await dora.raw.stream_error() == "not-authorized"
        refused = await in_thread(
            lambda: console.act("/accounts", "add", username="eve@nowhere.test", password="p", password2="p")
        )
        assert "is not a domain of this server" in refused.text


async def test_departments_tree_people_and_the_rosters_of_people_online(
    server: ServerProcess, console: ConsoleClient, peers: Peers
) -> None:
    alice, bob = peers.accounts(2)
    with trio.fail_after(TIMEOUT):
        await in_thread(lambda: console.act("/departments", "add", name="Sales", parent=""))
        await in_thread(lambda: console.act("/departments", "add", name="EMEA", parent="Sales"))
        await in_thread(lambda: console.act("/departments", "add", name="Support", parent=""))
        alice_peer = await peers.online(alice)
        for user, name in ((alice, "Alice A"), (bob, "Bob B")):
            await in_thread(
                lambda u=user, n=name: console.act(
                    "/departments", "person", username=u, person_name=n, department="Sales/EMEA", title="Rep"
                )
            )  # type: ignore[misc]
        # Alice is online: the directory reached the workers at once (check_interval is an hour).
        await alice_peer.expect(
            lambda e: (
                roster_push(e)
                and any(item.get("jid") == f"{bob}@localhost" for item in e.iter("{jabber:iq:roster}item"))
            )
        )
        cycle = await in_thread(
            lambda: console.post(
                "/departments",
                {
                    "csrf": csrf(console.get("/departments").text),
                    "action": "move",
                    "key": "Sales",
                    "parent": "Sales/EMEA",
                },
            )
        )
        assert cycle.status == 400
        assert "its own ancestor" in cycle.text
        busy = await in_thread(
            lambda: console.post(
                "/departments",
                {"csrf": csrf(console.get("/departments").text), "action": "delete", "key": "Sales/EMEA"},
            )
        )
        assert busy.status == 400
        assert "has people in it" in busy.text
        await in_thread(lambda: console.act("/departments", "rename", key="Sales/EMEA", name="Europe"))
        await in_thread(lambda: console.act("/departments", "move", key="Sales/EMEA", parent="Support"))
        await in_thread(lambda: console.act("/departments", "remove-person", username=bob))
        org = await in_thread(lambda: read_org(server))
        emea = next(d for d in org.departments if d.key == "Sales/EMEA")
        assert (emea.name, emea.parent) == ("Europe", "Support")
        assert [p.username for p in org.people if p.department == "Sales/EMEA"] == [alice]
        page = await in_thread(lambda: console.get("/departments").text)
        assert "Europe" in page
        assert "Alice A" in page
        assert "Bob B" not in page
        await in_thread(lambda: console.act("/departments", "remove-person", username=alice))
        await in_thread(lambda: console.act("/departments", "delete", key="Sales/EMEA"))
        assert "Sales/EMEA" not in {d.key for d in (await in_thread(lambda: read_org(server))).departments}


async def test_a_word_added_in_the_console_is_masked_in_the_next_message(
    server: ServerProcess, console: ConsoleClient, peers: Peers
) -> None:
    sender, recipient = await peers.online_users(2)
    with trio.fail_after(TIMEOUT):
        page = await in_thread(
            lambda: console.act(
                "/words", "add", name="console", lines="绝密\nfrobnicate", list_action="mask", scope="server"
            )
        )
        assert "console: added 2 words" in page.text
        chat = f"<message to='{recipient.jid}' type='chat' id='%s'><body>%s</body></message>"
        await sender.send(chat % ("w1", "frobnicate 绝 密!"))
        got = await recipient.expect(message(id_="w1"))
        assert got.findtext(f"{C}body") == "********** ***!"
        await in_thread(lambda: console.act("/words", "remove", name="console", word="frobnicate"))
        await in_thread(
            lambda: console.act("/words", "set", name="console", list_action="reject", scope="server")
        )
        await sender.send(chat % ("w2", "frobnicate"))
        assert (await recipient.expect(message(id_="w2"))).findtext(f"{C}body") == "frobnicate"
        await sender.send(chat % ("w3", "绝密"))
        bounced = await sender.expect(message(id_="w3", type_="error"))
        assert bounced.find(f"{C}error") is not None
        await in_thread(lambda: console.act("/words", "drop", name="console", confirm="yes"))
        assert "console:" not in (await in_thread(lambda: console.get("/words").text))


async def test_announcements_online_to_everyone_and_the_message_of_the_day(
    server: ServerProcess, console: ConsoleClient, peers: Peers
) -> None:
    online_one, online_two = await peers.online_users(2)
    (offline,) = peers.accounts(1)
    with trio.fail_after(TIMEOUT):
        await in_thread(
            lambda: console.act(
                "/announcements", "online", subject="Lunch", body="Pizza at noon", type="headline"
            )
        )
        for peer in (online_one, online_two):
            got = await peer.expect(message(from_="localhost", type_="headline"))
            assert (got.findtext(f"{C}subject"), got.findtext(f"{C}body")) == ("Lunch", "Pizza at noon")
        await in_thread(lambda: console.act("/announcements", "all", text="The office closes at six"))
        got = await online_one.expect(body_is("The office closes at six"))
        assert got.get("type") == "headline"
        later = await peers.online(offline)  # stored for them, delivered at login
        await later.expect(body_is("The office closes at six"))
        await in_thread(lambda: console.act("/announcements", "motd", motd="Welcome back"))
        got = await online_two.expect(body_is("Welcome back"))
        assert got.findtext(f"{C}subject") == "Message of the day"
        page = await in_thread(lambda: console.act("/announcements", "motd-delete"))
        assert "The message of the day is deleted" in page.text
        again = await in_thread(
            lambda: console.post(
                "/announcements", {"csrf": csrf(console.get("/announcements").text), "action": "motd-delete"}
            )
        )
        assert again.status == 400
        assert "no message of the day was set" in again.text


async def test_reminders_scheduled_listed_delivered_and_cancelled(
    server: ServerProcess, console: ConsoleClient, peers: Peers
) -> None:
    user = await peers.online_user()
    with trio.fail_after(TIMEOUT):
        page = await in_thread(
            lambda: console.act(
                "/reminders",
                "schedule",
                when="in 1 second",
                repeat="none",
                recipients="accounts",
                accounts=user.jid.split("/")[0],
                text="Stand-up now",
            )
        )
        assert "is set for" in page.text
        got = await user.expect(body_is("Stand-up now"))
        assert got.get("type") == "headline"
        page = await in_thread(
            lambda: console.act(
                "/reminders",
                "schedule",
                when="in 3 days",
                repeat="weekly",
                recipients="all",
                text="Weekly report",
            )
        )
        reminder_id = re.search(r"Reminder (\d+) is set", page.text)
        assert reminder_id is not None
        assert "Weekly report" in page.text
        assert "every user" in page.text
        cancelled = await in_thread(lambda: console.act("/reminders", "cancel", id=reminder_id.group(1)))
        assert f"Reminder {reminder_id.group(1)} is cancelled" in cancelled.text
        assert "Weekly report" not in cancelled.text


def test_a_console_beyond_loopback_without_tls_is_a_config_error(tmp_path: Any) -> None:
    from imactor.config import ConfigError

    config = tmp_path / "imactor.toml"
    config.write_text('[listen.console]\nenabled = true\nhost = "0.0.0.0"\n')
    with pytest.raises(ConfigError, match=r"imactor.toml: listen.console.host: 0.0.0.0 is not a loopback"):
        load_config(config)
    config.write_text('[listen.console]\nenabled = true\nhost = "0.0.0.0"\ntls = true\n')
    assert load_config(config).listen.console.tls
    config.write_text("[listen.console]\nsession_timout = 5\n")
    with pytest.raises(ConfigError, match=r"imactor.toml: listen.console.session_timout: unknown key"):
        load_config(config)


def test_over_tls_the_cookie_is_secure(tmp_path_factory: pytest.TempPathFactory) -> None:
    import ssl
    import urllib.request

    extra = '\n[listen.console]\nenabled = true\nhost = "127.0.0.1"\nport = 0\ntls = true\n'
    directory = tmp_path_factory.mktemp("console-tls")
    with running_server(
        directory,
        users=[(BOSS, ADMIN_PASSWORD)],
        server_options=f'admins = ["{BOSS}@localhost"]\n',
        extra=extra,
    ) as process:
        context = ssl.create_default_context(cafile=str(process.data_dir / "tls" / "localhost.crt"))
        context.check_hostname = False
        base = f"https://127.0.0.1:{process.ports['console']}"
        with urllib.request.urlopen(base + "/login", context=context, timeout=TIMEOUT) as page:
            login_cookie = page.headers["Set-Cookie"]
            token = csrf(page.read().decode())
        assert "Secure" in login_cookie
        form = f"csrf={token}&action=login&jid={BOSS}%40localhost&password={ADMIN_PASSWORD.replace(' ', '+')}"
        request = urllib.request.Request(
            base + "/login",
            data=form.encode(),
            method="POST",
            headers={
                "Cookie": login_cookie.split(";")[0],
                "Content-Type": "application/x-www-form-urlencoded",
            },
        )

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args: Any) -> None:
                return None

        opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context), NoRedirect)
        with pytest.raises(urllib.error.HTTPError) as answer:
            opener.open(request, timeout=TIMEOUT)
        assert answer.value.code == 303
        cookies = answer.value.headers.get_all("Set-Cookie")
        session = next(c for c in cookies if c.startswith("imactor_console="))
        assert "; Secure" in session
        assert "HttpOnly" in session
