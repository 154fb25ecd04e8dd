"""The server's disco#info (and an account's) lists the feature of every XEP it implements.

`imactor.xep_table.FEATURES` says which feature announces each XEP; for every XEP of the modules
enabled by default, that feature must be among the server's or the account's disco#info features.
"""

from __future__ import annotations

import trio

from imactor import xep_table
from imactor.config import DEFAULT_MODULES
from tests.integration.conftest import Accounts
from tests.support.peer import Peers, bare, show
from tests.support.server import ServerProcess
from tests.support.timeouts import TIMEOUT

NS_DISCO = "http://jabber.org/protocol/disco#info"


async def test_disco_lists_every_implemented_xep(
    server: ServerProcess, accounts: Accounts, peers: Peers
) -> None:
    (alice,) = accounts(1)
    with trio.fail_after(TIMEOUT):
        a = await peers.login(alice)
        server_info = await a.iq(f"<query xmlns='{NS_DISCO}'/>", to="localhost")
        account_info = await a.iq(f"<query xmlns='{NS_DISCO}'/>", to=bare(alice))
    announced = {
        feature.get("var")
        for reply in (server_info, account_info)
        for feature in reply.iter(f"{{{NS_DISCO}}}feature")
    }
    enabled = [module for module in xep_table.all_modules() if module.name in DEFAULT_MODULES]
    expected = {
        f"XEP-{xep.number}": xep_table.FEATURES[xep.number]
        for module in enabled
        for xep in module.xeps
        if xep_table.FEATURES.get(xep.number)
    }
    missing = {spec: feature for spec, feature in expected.items() if feature not in announced}
    assert missing == {}, (missing, show(server_info), show(account_info))
    assert len(expected) >= 20  # the check covers the modules, not an empty list
