"""The shortest path through the server: two raw clients log in and exchange a message."""

from __future__ import annotations

from collections.abc import Callable

import trio
from lxml import etree

from tests.integration.conftest import PASSWORD
from tests.support.raw import RawClient
from tests.support.server import ServerProcess
from tests.support.timeouts import TIMEOUT


async def test_two_clients_chat(server: ServerProcess, accounts: Callable[..., list[str]]) -> None:
    alice, bob = accounts(2)
    with trio.fail_after(TIMEOUT):
        a = await RawClient.connect(server.c2s_port)
        b = await RawClient.connect(server.c2s_port)
        assert await a.login(alice, PASSWORD, "pc") == f"{alice}@localhost/pc"
        await b.login(bob, PASSWORD, "phone")
        await b.send("<presence/>")
        # Bob's own presence coming back proves his resource is available before Alice writes.
        await b.next_element(lambda e: e.tag == "{jabber:client}presence")
        await a.send(f"<message to='{bob}@localhost' type='chat' id='m1'><body>hi</body></message>")
        message = await b.next_element(lambda e: e.tag == "{jabber:client}message")
        assert message.get("from") == f"{alice}@localhost/pc"
        assert message.findtext("{jabber:client}body") == "hi"
        assert message.find("{urn:xmpp:delay}delay") is None, etree.tostring(message)
        await a.aclose()
        await b.aclose()
