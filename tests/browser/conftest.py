"""What both browser test modules share: the slixmpp user their pages talk to."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.browser.desk import SlixmppThread, running_desk
from tests.support.server import ServerProcess


@pytest.fixture(scope="module")
def desk(server: ServerProcess) -> Iterator[SlixmppThread]:
    """The slixmpp user (`tests.browser.desk.DESK`) on the module's `server`, which has its account."""
    with running_desk(server) as client:
        yield client
