"""External components (XEP-0114) against the real server of two workers.

slixmpp's `ComponentXMPP` is the component and slixmpp clients are the users: messages both ways,
an IQ the component answers, presence from the component, a message stored offline, the bounce
while a component is away, and disco#items. Each user is placed on a chosen worker (the session
counts of the status socket say which one took it), so that both the worker that holds the
component's stream and the other one are exercised. Raw XML over TCP for the refusals, which are
about bytes: a wrong secret, an unknown domain, a forged `from`, a late handshake, a second
connection for a domain.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import slixmpp
import trio
from slixmpp.componentxmpp import ComponentXMPP
from slixmpp.exceptions import IqError

from tests.integration.conftest import PASSWORD, Accounts
from tests.support.chaos import kill_worker
from tests.support.clients import HOST, event_queue, run, slixmpp_client
from tests.support.muc import NS_MUC, from_room, heard, room_with
from tests.support.peer import Peer, Peers, message, stanza_error
from tests.support.server import ServerProcess, running_server
from tests.support.timeouts import TIMEOUT, WORKERS_TIMEOUT

GATEWAY, GATEWAY_SECRET = "gateway.example", "gateway's shared secret"
FILES, FILES_SECRET = "files.example", "secret from a file"
#: The components' handshake timeout in this module's config: short, for the timeout test.
HANDSHAKE_TIMEOUT = 2.0
HEADER = (
    "<stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams'"
    " to='{to}'>"
)
DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
HOST_DOMAIN = "localhost"  #: the server's own domain (running_server's default)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    directory = tmp_path_factory.mktemp("components")
    (directory / "files.secret").write_text(FILES_SECRET + "\n")
    extra = f"""
[listen.component]
host = "127.0.0.1"
port = 0
handshake_timeout = {HANDSHAKE_TIMEOUT}

[components."{GATEWAY}"]
secret = "{GATEWAY_SECRET}"

[components."{FILES}"]
secret_file = "files.secret"
"""
    with running_server(directory, workers=2, extra=extra) as process:
        yield process


# ---- helpers -----------------------------------------------------------------------------------


async def worker_status(server: ServerProcess) -> list[dict[str, Any]]:
    status = await asyncio.to_thread(server.status)
    return sorted(status["workers"], key=lambda worker: worker["index"])


async def component_worker(server: ServerProcess, domain: str) -> int:
    """The worker that holds `domain`'s stream, once every other worker knows it is there."""
    while True:
        workers = await worker_status(server)
        holders = [w["index"] for w in workers if domain in w.get("components", {}).get("here", [])]
        others_know = all(
            domain in w.get("components", {}).get("elsewhere", [])
            for w in workers
            if w["index"] not in holders
        )
        if len(holders) == 1 and others_know:
            return holders[0]
        await asyncio.sleep(0.05)


async def session_counts(server: ServerProcess) -> dict[int, int]:
    return {w["index"]: w["sessions"]["count"] for w in await worker_status(server)}


@contextlib.asynccontextmanager
async def user_on(
    server: ServerProcess, worker: int, username: str, *plugins: str
) -> AsyncIterator[slixmpp.ClientXMPP]:
    """A slixmpp client of `username` whose session `worker` holds (the kernel picks the worker
    of each connection: connect, see whose session count grew, try again if it is the other)."""
    for attempt in range(30):
        before = await session_counts(server)
        stack = contextlib.AsyncExitStack()
        xmpp = await stack.enter_async_context(
            slixmpp_client(
                f"{username}@localhost/r{attempt}",
                PASSWORD,
                server.c2s_port,
                plugins=plugins,
                send_presence=True,
            )
        )
        while (after := await session_counts(server)) == before:  # noqa: ASYNC110 - the server's process
            await asyncio.sleep(0.02)
        if after.get(worker, 0) > before.get(worker, 0):
            async with stack:
                yield xmpp
            return
        await stack.aclose()
        while await session_counts(server) != before:  # noqa: ASYNC110 - the server's process
            await asyncio.sleep(0.02)
    raise AssertionError(f"30 connections, none on worker {worker}")


@contextlib.asynccontextmanager
async def component(server: ServerProcess, *plugins: str) -> AsyncIterator[ComponentXMPP]:
    """slixmpp's component for gateway.example, connected and known to every worker."""
    xmpp = ComponentXMPP(GATEWAY, GATEWAY_SECRET, HOST, server.ports["component"])
    for plugin in plugins:
        xmpp.register_plugin(plugin)
    started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    xmpp.add_event_handler("session_start", lambda _: started.done() or started.set_result(None))
    xmpp.connect()
    try:
        await asyncio.wait_for(started, TIMEOUT)
        await component_worker(server, GATEWAY)
        yield xmpp
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(xmpp.disconnect(wait=2.0), 5)
        xmpp.abort()
        # Gone from every worker's table before the next test connects it again.
        while await _known_anywhere(server, GATEWAY):  # noqa: ASYNC110 - the server's process
            await asyncio.sleep(0.05)


async def _known_anywhere(server: ServerProcess, domain: str) -> bool:
    workers = await worker_status(server)
    return any(domain in w["components"]["here"] + w["components"]["elsewhere"] for w in workers)


# ---- with slixmpp ------------------------------------------------------------------------------


def test_messages_both_ways_from_users_on_each_worker(server: ServerProcess, accounts: Accounts) -> None:
    names = accounts(2)

    async def scenario() -> None:
        async with component(server) as gateway:
            holder = await component_worker(server, GATEWAY)
            received = event_queue(gateway, "message")
            for worker, name in zip((holder, 1 - holder), names, strict=True):
                async with user_on(server, worker, name) as user:
                    inbox = event_queue(user, "message")
                    user.send_message(mto=f"bot@{GATEWAY}", mbody=f"hello from w{worker}", mtype="chat")
                    message = await asyncio.wait_for(received.get(), TIMEOUT)
                    assert message["body"] == f"hello from w{worker}"
                    assert message["from"] == user.boundjid
                    assert message["to"] == f"bot@{GATEWAY}"
                    gateway.send_message(mto=message["from"], mfrom=f"bot@{GATEWAY}/gw",
                                         mbody=f"hi {name}", mtype="chat")  # fmt: skip
                    reply = await asyncio.wait_for(inbox.get(), TIMEOUT)
                    assert reply["body"] == f"hi {name}"
                    assert reply["from"] == f"bot@{GATEWAY}/gw"

    run(scenario())


def test_the_component_answers_a_users_disco_info(server: ServerProcess, accounts: Accounts) -> None:
    (name,) = accounts(1)

    async def scenario() -> None:
        async with component(server, "xep_0030") as gateway:
            gateway.plugin["xep_0030"].add_identity(category="gateway", itype="irc", name="IRC gateway")
            gateway.plugin["xep_0030"].add_feature("jabber:iq:gateway")
            holder = await component_worker(server, GATEWAY)
            async with user_on(server, 1 - holder, name, "xep_0030") as user:
                info = await user.plugin["xep_0030"].get_info(jid=GATEWAY, timeout=TIMEOUT)
                assert ("gateway", "irc", None, "IRC gateway") in info["disco_info"]["identities"]
                assert "jabber:iq:gateway" in info["disco_info"]["features"]

    run(scenario())


def test_the_component_asks_the_server_itself(server: ServerProcess) -> None:
    """IQs from a component to the server's domain reach the server's own handlers (ping, disco,
    version); those that act for the sender's account do not (the raw test below)."""

    async def scenario() -> None:
        async with component(server, "xep_0030", "xep_0199", "xep_0092") as gateway:
            await gateway.plugin["xep_0199"].ping(jid=HOST_DOMAIN, ifrom=GATEWAY, timeout=TIMEOUT)
            info = await gateway.plugin["xep_0030"].get_info(jid=HOST_DOMAIN, ifrom=GATEWAY, timeout=TIMEOUT)
            assert ("server", "im", None, "imactor") in info["disco_info"]["identities"]
            assert "urn:xmpp:ping" in info["disco_info"]["features"]
            version = await gateway.plugin["xep_0092"].get_version(HOST_DOMAIN, ifrom=GATEWAY)
            assert version["software_version"]["name"] == "imactor"

    run(scenario())


def test_presence_from_the_component_reaches_the_user(server: ServerProcess, accounts: Accounts) -> None:
    (name,) = accounts(1)

    async def scenario() -> None:
        async with component(server) as gateway:
            holder = await component_worker(server, GATEWAY)
            async with user_on(server, 1 - holder, name) as user:
                presences = event_queue(user, "presence")
                gateway.send_presence(pto=user.boundjid, pfrom=f"bot@{GATEWAY}/gw", pstatus="online",
                                      pshow="chat")  # fmt: skip
                while (presence := await asyncio.wait_for(presences.get(), TIMEOUT))["from"] == user.boundjid:
                    pass  # the echo of the user's own initial presence
                assert presence["from"] == f"bot@{GATEWAY}/gw"
                assert presence["type"] == "chat"  # slixmpp's name for <show>chat</show>
                assert presence["status"] == "online"

    run(scenario())


def test_a_message_to_an_offline_user_waits_in_offline_storage(
    server: ServerProcess, accounts: Accounts
) -> None:
    (name,) = accounts(1)

    async def scenario() -> None:
        async with component(server, "xep_0030") as gateway:
            gateway.send_message(mto=f"{name}@localhost", mfrom=f"bot@{GATEWAY}", mbody="while you were out",
                                 mtype="chat")  # fmt: skip
            # The account's actor takes its stanzas in order: once it answered a disco#info sent
            # after the message, the message is stored (not delivered live to the login below).
            # A stranger gets service-unavailable (no presence subscription): an answer all the same.
            with pytest.raises(IqError):
                await gateway.plugin["xep_0030"].get_info(jid=f"{name}@localhost", ifrom=f"bot@{GATEWAY}",
                                                          timeout=TIMEOUT)  # fmt: skip
            async with slixmpp_client(f"{name}@localhost/later", PASSWORD, server.c2s_port,
                                      plugins=("xep_0203",)) as user:  # fmt: skip
                inbox = event_queue(user, "message")
                user.send_presence()
                message = await asyncio.wait_for(inbox.get(), TIMEOUT)
                assert message["body"] == "while you were out"
                assert message["from"] == f"bot@{GATEWAY}"
                assert message["delay"]["stamp"] is not None  # XEP-0203: it was stored

    run(scenario())


def test_stanzas_to_a_component_that_is_not_connected_bounce(
    server: ServerProcess, accounts: Accounts
) -> None:
    (name,) = accounts(1)

    async def scenario() -> None:
        async with slixmpp_client(
            f"{name}@localhost/r", PASSWORD, server.c2s_port, plugins=("xep_0030",)
        ) as user:
            errors = event_queue(user, "message_error")
            user.send_message(mto=f"bot@{FILES}", mbody="anyone?")
            error = await asyncio.wait_for(errors.get(), TIMEOUT)
            assert error["error"]["condition"] == "service-unavailable"
            assert error["error"]["type"] == "wait"
            assert error["from"] == f"bot@{FILES}"
            with pytest.raises(IqError) as info:
                await user.plugin["xep_0030"].get_info(jid=FILES, timeout=TIMEOUT)
            assert info.value.condition == "service-unavailable"

    run(scenario())


def test_disco_items_lists_connected_components(server: ServerProcess, accounts: Accounts) -> None:
    (name,) = accounts(1)

    async def items(user: slixmpp.ClientXMPP) -> set[str]:
        found = await user.plugin["xep_0030"].get_items(jid="localhost", timeout=TIMEOUT)
        return {str(jid) for jid, _node, _name in found["disco_items"]["items"]}

    async def scenario() -> None:
        async with slixmpp_client(
            f"{name}@localhost/r", PASSWORD, server.c2s_port, plugins=("xep_0030",)
        ) as user:
            assert GATEWAY not in await items(user)
            async with component(server):
                listed = await items(user)
                assert GATEWAY in listed
                assert FILES not in listed  # configured, not connected

    run(scenario())


# ---- raw XML -----------------------------------------------------------------------------------


class RawComponent:
    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.received = b""

    @classmethod
    async def connect(cls, server: ServerProcess) -> RawComponent:
        return cls(await trio.open_tcp_stream(HOST, server.ports["component"]))

    async def send(self, text: str) -> None:
        await self.stream.send_all(text.encode())

    async def read_until(self, marker: bytes) -> bytes:
        while marker not in self.received:
            chunk = await self.stream.receive_some(65536)
            if not chunk:
                raise AssertionError(f"closed before {marker!r}: {self.received!r}")
            self.received += chunk
        return self.received

    async def read_to_end(self) -> bytes:
        """Everything until the server closes the connection."""
        while chunk := await self.stream.receive_some(65536):
            self.received += chunk
        return self.received

    async def open(self, domain: str) -> str:
        await self.send(HEADER.format(to=domain))
        header = await self.read_until(b">")
        match = re.search(rb"\sid='([^']+)'", header)
        assert match is not None, header
        return match.group(1).decode()

    async def authenticate(self, domain: str, secret: str) -> None:
        stream_id = await self.open(domain)
        digest = hashlib.sha1((stream_id + secret).encode()).hexdigest()
        await self.send(f"<handshake>{digest}</handshake>")


def stream_error(data: bytes) -> str:
    match = re.search(rb"<stream:error[^>]*><([a-z-]+) xmlns=\"urn:ietf:params:xml:ns:xmpp-streams\"", data)
    assert match is not None, data
    return match.group(1).decode()


async def test_a_wrong_secret_is_not_authorized(server: ServerProcess) -> None:
    with trio.fail_after(TIMEOUT):
        raw = await RawComponent.connect(server)
        await raw.authenticate(GATEWAY, "not the secret")
        data = await raw.read_to_end()
        assert stream_error(data) == "not-authorized"
        assert b"<handshake/>" not in data


async def test_account_iqs_of_a_component_to_the_server_are_refused(server: ServerProcess) -> None:
    """XEP-0077 on the server acts for the sender's own account: not for a component's JIDs."""
    with trio.fail_after(TIMEOUT):
        raw = await RawComponent.connect(server)
        await raw.authenticate(FILES, FILES_SECRET)
        await raw.read_until(b"<handshake/>")
        await raw.send(f"<iq type='get' id='r1' from='{FILES}' to='{HOST_DOMAIN}'>"
                       "<query xmlns='jabber:iq:register'/></iq>")  # fmt: skip
        reply = (await raw.read_until(b"</iq>")).split(b"<handshake/>", 1)[1]
        assert b'type="error"' in reply
        assert b"<service-unavailable" in reply
        await raw.stream.aclose()
        while True:  # gone from every worker's table: the next tests connect it again
            workers = (await trio.to_thread.run_sync(server.status))["workers"]
            if not any(FILES in w["components"]["here"] + w["components"]["elsewhere"] for w in workers):
                break
            await trio.sleep(0.05)


async def test_a_namespace_name_that_is_not_a_uri_is_not_well_formed(server: ServerProcess) -> None:
    """Found by fuzzing: such a name (``urn:a]]>b``) once reached the translation to
    jabber:client, where lxml's ValueError crashed the components' wing. It is refused as the
    parser reads it now (a client's too: test_bad_input.py), and the wing goes on."""
    with trio.fail_after(TIMEOUT):
        raw = await RawComponent.connect(server)
        await raw.authenticate(FILES, FILES_SECRET)
        await raw.read_until(b"<handshake/>")
        await raw.send(f"<message from='bot@{FILES}' to='someone@localhost'><x xmlns='urn:a]]>b'/></message>")
        assert stream_error(await raw.read_to_end()) == "not-well-formed"
        await trio.to_thread.run_sync(_wait_forgotten, server, FILES)
        again = await RawComponent.connect(server)
        await again.authenticate(FILES, FILES_SECRET)
        await again.read_until(b"<handshake/>")
        await again.stream.aclose()
        await trio.to_thread.run_sync(_wait_forgotten, server, FILES)


async def test_an_unknown_domain_is_host_unknown(server: ServerProcess) -> None:
    with trio.fail_after(TIMEOUT):
        raw = await RawComponent.connect(server)
        await raw.send(HEADER.format(to="nobody.example"))
        data = await raw.read_to_end()
        assert stream_error(data) == "host-unknown"
        assert data.endswith(b"</stream:stream>")


async def test_a_forged_from_ends_the_stream_with_invalid_from(server: ServerProcess) -> None:
    with trio.fail_after(TIMEOUT):
        raw = await RawComponent.connect(server)
        await raw.authenticate(FILES, FILES_SECRET)
        await raw.read_until(b"<handshake/>")
        await raw.send(
            "<message from='admin@localhost' to='someone@localhost'><body>trust me</body></message>"
        )
        data = await raw.read_to_end()
        assert stream_error(data) == "invalid-from"


async def test_no_handshake_in_time_is_connection_timeout(server: ServerProcess) -> None:
    with trio.fail_after(TIMEOUT):
        raw = await RawComponent.connect(server)
        await raw.open(GATEWAY)
        started = trio.current_time()
        data = await raw.read_to_end()
        assert stream_error(data) == "connection-timeout"
        assert trio.current_time() - started >= HANDSHAKE_TIMEOUT * 0.9


async def test_a_second_connection_for_a_domain_is_a_conflict(server: ServerProcess) -> None:
    with trio.fail_after(TIMEOUT):
        first = await RawComponent.connect(server)
        await first.authenticate(FILES, FILES_SECRET)
        await first.read_until(b"<handshake/>")
        await trio.to_thread.run_sync(_wait_known, server, FILES)
        # Whichever worker the kernel gives it, the second one is refused.
        for _ in range(4):
            second = await RawComponent.connect(server)
            await second.authenticate(FILES, FILES_SECRET)
            data = await second.read_to_end()
            assert stream_error(data) == "conflict"
            assert b"<handshake/>" not in data
        # The first one still works: an IQ to an unknown account is answered by the server.
        await first.send(f"<iq from='{FILES}' to='nobody@localhost' type='get' id='q1'>"
                         "<query xmlns='jabber:iq:version'/></iq>")  # fmt: skip
        answer = await first.read_until(b"q1")
        assert re.search(rb"<iq [^>]*type=.error.", answer), answer
        await first.send("</stream:stream>")
        await first.read_to_end()


def _wait_known(server: ServerProcess, domain: str) -> int:
    """Until every worker knows where `domain`'s component is (polled, as the status socket is);
    the worker that holds it."""
    while True:
        workers = server.status()["workers"]
        if all(domain in w["components"]["here"] + w["components"]["elsewhere"] for w in workers):
            return next(w["index"] for w in workers if domain in w["components"]["here"])
        time.sleep(0.05)


def _wait_forgotten(server: ServerProcess, domain: str) -> None:
    """Until no worker thinks `domain`'s component is connected."""
    while True:
        workers = server.status()["workers"]
        known = [w.get("components", {}) for w in workers]
        if all(domain not in c.get("here", []) + c.get("elsewhere", []) for c in known):
            return
        time.sleep(0.05)


async def test_a_stopping_server_says_system_shutdown(tmp_path: Path) -> None:
    extra = f'[listen.component]\nhost = "127.0.0.1"\nport = 0\n[components."{GATEWAY}"]\nsecret = "s"\n'
    with running_server(tmp_path, extra=extra) as node, trio.fail_after(TIMEOUT):
        raw = await RawComponent.connect(node)
        await raw.authenticate(GATEWAY, "s")
        await raw.read_until(b"<handshake/>")
        await trio.to_thread.run_sync(node.stop)
        assert node.proc.returncode == 0
        data = await raw.read_to_end()
        assert stream_error(data) == "system-shutdown"


async def test_a_component_joins_a_room_and_speaks_in_it(server: ServerProcess, peers: Peers) -> None:
    """Rooms treat a component's JIDs as those of another server's users: it may enter an
    existing room (creating one is for local accounts, `[muc] create_rooms`) and talk there."""
    room = "gatewayroom@conference.localhost"
    with trio.fail_after(TIMEOUT):
        (owner,) = await room_with(peers, room, "owner")
        raw = await RawComponent.connect(server)
        await raw.authenticate(FILES, FILES_SECRET)
        await raw.read_until(b"<handshake/>")
        await raw.send(f"<presence from='bob@{FILES}/irc' to='{room}/bob'><x xmlns='{NS_MUC}'/></presence>")
        await raw.read_until(b"110")  # its self-presence
        arrival = await owner.expect(from_room(room, kind="presence"))
        assert arrival.get("from") == f"{room}/bob"
        await raw.send(
            f"<message from='bob@{FILES}/irc' to='{room}' type='groupchat'><body>from irc</body></message>"
        )
        message = await heard(owner, room, "from irc")
        assert message.get("from") == f"{room}/bob"
        await raw.read_until(b"from irc")  # the room's echo to the component's occupant
        await raw.send("</stream:stream>")
        await raw.read_to_end()


async def test_the_component_of_a_dead_worker_reconnects_to_the_other(tmp_path: Path) -> None:
    """Its worker is killed: stanzas for it bounce (service-unavailable, wait), nothing holds
    its domain any more, and the component's next connection, on either worker, works."""
    extra = f'[listen.component]\nhost = "127.0.0.1"\nport = 0\n[components."{GATEWAY}"]\nsecret = "s"\n'
    with running_server(tmp_path, extra=extra, workers=2, users=[("alice", PASSWORD)]) as node:
        with trio.fail_after(WORKERS_TIMEOUT):
            first = await RawComponent.connect(node)
            await first.authenticate(GATEWAY, "s")
            await first.read_until(b"<handshake/>")
            holder = await trio.to_thread.run_sync(_wait_known, node, GATEWAY)
            await kill_worker(node.status_socket, 2, index=holder)
            await first.read_to_end()  # the killed worker's socket is gone
            await trio.to_thread.run_sync(_wait_forgotten, node, GATEWAY)
            alice = await Peer.online(node.c2s_port, "alice", PASSWORD)
            await alice.send(f"<message to='bot@{GATEWAY}' id='m1'><body>anyone?</body></message>")
            bounce = await alice.expect(message(id_="m1"))
            assert stanza_error(bounce) == ("wait", "service-unavailable")
            again = await RawComponent.connect(node)
            await again.authenticate(GATEWAY, "s")
            await again.read_until(b"<handshake/>")
            await trio.to_thread.run_sync(_wait_known, node, GATEWAY)
            await alice.send(f"<message to='bot@{GATEWAY}' id='m2'><body>back?</body></message>")
            await again.read_until(b"back?")
            await alice.aclose()
