"""BOSH (XEP-0124/XEP-0206) against the real server: session creation, login, chat, restarts,
holds and waits, repeated rids, pause and terminate.

The BOSH side is `tests.support.web_clients.BoshClient` (raw HTTP/1.1, one request per
connection); the TCP side a raw `Peer`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import trio

from tests.integration.conftest import PASSWORD, account_pool
from tests.support.peer import Peer, message
from tests.support.server import ServerProcess
from tests.support.timeouts import TIMEOUT
from tests.support.web_clients import HTTPBIND, SM, XBOSH, BoshClient, show, tag

pytestmark = pytest.mark.usefixtures("server_alive")


@pytest.fixture(scope="module")
def pool(server: ServerProcess) -> Iterator[str]:
    return account_pool(server, "bosh", 40)


async def test_session_creation_answers_parameters_and_features(server: ServerProcess) -> None:
    with trio.fail_after(TIMEOUT):
        client = BoshClient(server.https_port, tls=True)
        answer = await client.create(wait=10, hold=1)
        assert answer.tag == tag(HTTPBIND, "body")
        assert answer.get("sid")
        assert answer.get("wait") == "10"
        assert answer.get("hold") == "1"
        assert answer.get("requests") == "2"
        assert answer.get("inactivity")
        assert answer.get("polling")
        assert answer.get(tag(XBOSH, "version")) == "1.0"
        assert answer.get(tag(XBOSH, "restartlogic")) == "true"
        features = await client.features()
        assert features.find(tag("urn:ietf:params:xml:ns:xmpp-tls", "starttls")) is None
        await client.post(type="terminate")


async def test_login_and_chat_with_a_tcp_client(server: ServerProcess, user: str) -> None:
    with trio.fail_after(TIMEOUT):
        client = BoshClient(server.https_port, tls=True)
        jid = await client.login(user, PASSWORD, "bosh")
        assert jid == f"{user}@localhost/bosh"
        tcp = await Peer.login(server.c2s_port, user, PASSWORD, "desk")
        try:
            await client.post(f"<message xmlns='jabber:client' to='{tcp.jid}' id='b1' type='chat'>"
                              "<body>from bosh</body></message>")  # fmt: skip
            got = await tcp.expect(message(id_="b1"))
            assert got.get("from") == jid
            await tcp.send(f"<message to='{jid}' id='t1' type='chat'><body>from tcp</body></message>")
            back = await client.expect(lambda e: e.get("id") == "t1")
            assert back.findtext("{jabber:client}body") == "from tcp"
            answer = await client.post(type="terminate")
            assert answer.get("type") == "terminate"
        finally:
            await tcp.aclose()


async def test_held_request_is_answered_when_a_message_arrives(server: ServerProcess, user: str) -> None:
    """§7: an empty request waits (up to 'wait') and carries the first data that comes."""
    with trio.fail_after(TIMEOUT):
        client = BoshClient(server.http_port)
        jid = await client.login(user, PASSWORD)
        tcp = await Peer.login(server.c2s_port, user, PASSWORD, "desk")
        try:
            answers: list[object] = []
            async with trio.open_nursery() as nursery:

                async def poll() -> None:
                    answers.append(await client.send_body(client.body()))

                nursery.start_soon(poll)
                await trio.sleep(0.5)  # the request is held by now (nothing to wait on from outside)
                assert not answers
                await tcp.send(f"<message to='{jid}' id='h1' type='chat'><body>wake up</body></message>")
            (answer,) = answers
            assert [e.get("id") for e in answer] == ["h1"], show(answer)  # type: ignore[union-attr, arg-type]
        finally:
            await tcp.aclose()


async def test_empty_request_is_answered_empty_after_wait(server: ServerProcess) -> None:
    with trio.fail_after(TIMEOUT):
        client = BoshClient(server.http_port)
        await client.create(wait=1, hold=1)
        await client.features()
        start = trio.current_time()
        answer = await client.post()
        assert len(answer) == 0
        assert answer.get("type") is None
        assert trio.current_time() - start >= 0.9


async def test_repeated_rid_gets_the_same_answer(server: ServerProcess, user: str) -> None:
    """§14.3: a client that lost a response asks again with the same rid and gets it again."""
    with trio.fail_after(TIMEOUT):
        client = BoshClient(server.http_port)
        await client.login(user, PASSWORD)
        data = client.body("<iq xmlns='jabber:client' type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>")
        first = await client.send_body(data)
        again = await client.send_body(data)
        assert [e.get("id") for e in first] == ["p1"]
        assert [show(e) for e in again] == [show(e) for e in first]


async def test_a_request_sent_again_while_held_gets_the_same_answer(server: ServerProcess, user: str) -> None:
    """§14.3: a client whose connection broke while its request was held sends it again; both
    copies get the answer (here: the message that wakes the held request)."""
    with trio.fail_after(TIMEOUT):
        client = BoshClient(server.http_port)
        jid = await client.login(user, PASSWORD)
        tcp = await Peer.login(server.c2s_port, user, PASSWORD, "desk")
        try:
            data = client.body()
            answers: list[list[str | None]] = []
            async with trio.open_nursery() as nursery:

                async def post() -> None:
                    answer = await client.send_body(data)
                    answers.append([e.get("id") for e in answer])

                nursery.start_soon(post)
                await trio.sleep(0.3)  # the first copy is held
                nursery.start_soon(post)
                await trio.sleep(0.3)  # and so is the second
                await tcp.send(f"<message to='{jid}' id='again1' type='chat'><body>x</body></message>")
            assert answers == [["again1"], ["again1"]]
        finally:
            await tcp.aclose()


async def test_restart_and_stream_management(server: ServerProcess, user: str) -> None:
    """XEP-0206 restart then XEP-0198 over BOSH: <enable/> is answered, <r/> gets an <a/>."""
    with trio.fail_after(TIMEOUT):
        client = BoshClient(server.http_port)
        await client.login(user, PASSWORD)
        await client.post(f"<enable xmlns='{SM}' resume='true'/>")
        enabled = await client.expect(lambda e: e.tag == tag(SM, "enabled"))
        assert enabled.get("id")
        await client.post(f"<r xmlns='{SM}'/>")
        ack = await client.expect(lambda e: e.tag == tag(SM, "a"))
        assert ack.get("h") == "0"


async def test_pause_answers_held_requests(server: ServerProcess) -> None:
    """§10: a pause request is answered at once, and so is the request held before it."""
    with trio.fail_after(TIMEOUT):
        client = BoshClient(server.http_port)
        await client.create(wait=20, hold=1)
        await client.features()
        answers: list[object] = []
        start = trio.current_time()
        async with trio.open_nursery() as nursery:

            async def held() -> None:
                answers.append(await client.send_body(client.body()))

            nursery.start_soon(held)
            await trio.sleep(0.5)
            paused = await client.post(pause="5")
            assert paused.get("type") is None
        assert len(answers) == 1
        assert trio.current_time() - start < 10  # far less than the 20 s wait


async def test_terminate_ends_the_session(server: ServerProcess, user: str) -> None:
    with trio.fail_after(TIMEOUT):
        client = BoshClient(server.http_port)
        await client.login(user, PASSWORD)
        answer = await client.post("<presence xmlns='jabber:client' type='unavailable'/>", type="terminate")
        assert answer.get("type") == "terminate"
        assert answer.get("condition") is None
        after = await client.post()
        assert after.get("type") == "terminate"
        assert after.get("condition") == "item-not-found"
