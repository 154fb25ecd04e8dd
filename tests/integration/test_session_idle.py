"""An idle session keeps no writer task (`SessionActor._mailbox_task` runs only while there is
something to deliver) and no lxml parser (released after `PARSER_LINGER` of quiet): both come
back at once when work arrives, with nothing lost, out of order or mangled."""

from __future__ import annotations

import trio

from imactor.c2s.session import WRITER_LINGER
from tests.integration.test_messaging import send_message
from tests.support.peer import C, Peers, message
from tests.support.timeouts import TIMEOUT


async def test_deliveries_after_idle_pauses_arrive_in_order(peers: Peers) -> None:
    with trio.fail_after(TIMEOUT):
        a, b = await peers.online_users(2)
        for round_ in range(3):
            sent = [await send_message(a, b.bare, body=f"r{round_} #{n}") for n in range(5)]
            for message_id in sent:
                got = await b.expect(message(id_=message_id))
                assert got.findtext(f"{C}body") is not None
            # Longer than the writer lingers: the next delivery starts a new writer task, and the
            # next stanza from either client is parsed by a fresh lxml parser.
            await trio.sleep(WRITER_LINGER * 3)
        # Namespaced payloads still parse right after an idle pause (fresh parser, same bindings).
        await trio.sleep(WRITER_LINGER * 3)
        await a.send(
            f"<message to='{b.bare}' id='ns1' type='chat'><body>x</body>"
            "<active xmlns='http://jabber.org/protocol/chatstates'/></message>"
        )
        got = await b.expect(message(id_="ns1"))
        assert got.find("{http://jabber.org/protocol/chatstates}active") is not None
        assert got.findtext(f"{C}body") == "x"
