"""Carbons and push on a two-worker node: copies, `FromResource` and the `Detached` fact cross
workers when the account's actor lives on one worker and its sessions on the other."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from functools import partial

import pytest
import trio

from imactor.cluster.placement import home
from tests.integration.conftest import PASSWORD
from tests.integration.test_carbons import copy_of, enable, send
from tests.integration.test_push import next_push
from tests.support.chaos import land_on
from tests.support.clients import raw_authenticated
from tests.support.peer import Peer, message
from tests.support.server import ServerProcess, running_server
from tests.support.timeouts import START_TIMEOUT
from tests.support.timeouts import WORKERS_TIMEOUT as TIMEOUT

SM = "{urn:xmpp:sm:3}"


def _homed_on(worker: int, prefix: str) -> str:
    return next(f"{prefix}{n}" for n in range(1000) if home("user", f"{prefix}{n}", (0, 1)) == worker)


ALICE = _homed_on(0, "alice")  # her actor on worker 0, her sessions on worker 1
BOB = _homed_on(1, "bob")
APP = _homed_on(0, "app")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    directory = tmp_path_factory.mktemp("xep-mesh")
    users = [(name, PASSWORD) for name in (ALICE, BOB, APP)]
    with running_server(directory, users=users, workers=2) as process:
        yield process


async def on(
    server: ServerProcess, worker: int, username: str, resource: str, *, online: bool = True
) -> Peer:
    opener = Peer.online if online else Peer.login
    open_ = partial(opener, server.c2s_port, username, PASSWORD, resource)
    return await land_on(server.status_socket, worker, open_, Peer.aclose)


def test_carbons_and_push_cross_workers(server: ServerProcess) -> None:
    async def scenario() -> None:
        with trio.fail_after(TIMEOUT):
            phone = await on(server, 1, ALICE, "phone")
            laptop = await on(server, 1, ALICE, "laptop")
            b = await on(server, 0, BOB, "pc")
            app = await on(server, 1, APP, "push", online=False)
            try:
                await enable(laptop)
                received = await send(b, phone.jid, "to the phone")
                await phone.expect(message(id_=received))
                await laptop.expect(copy_of("received", received))
                sent = await send(phone, f"{BOB}@localhost", "from the phone")
                await b.expect(message(id_=sent))
                await laptop.expect(copy_of("sent", sent))
                # Push for a detached session: its `Detached` fact goes to worker 0.
                await phone.send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
                await phone.expect(lambda e: e.tag == "{urn:xmpp:sm:3}enabled")
                reply = await phone.iq(
                    f"<enable xmlns='urn:xmpp:push:0' jid='{app.jid}' node='mesh'/>", type_="set"
                )
                assert reply.get("type") == "result"
                await laptop.aclose()  # only the phone is left, and it goes away without a word
                await phone.drop()
                # The session learns of the dropped socket on its own time: send until it is
                # detached (one try a second) and the push service is notified.
                while True:
                    await send(b, phone.jid, "still there?")
                    with trio.move_on_after(1):
                        notification = await next_push(app)
                        break
                assert notification.node == "mesh"
                assert notification.fields["last-message-sender"] == b.jid
            finally:
                for peer in (phone, laptop, b, app):
                    await peer.aclose()

    trio.run(scenario)


def resumed_elsewhere(server: ServerProcess) -> int:
    """How many sessions of another worker were resumed on worker 0 (the status socket)."""
    out = subprocess.run(
        [sys.executable, "-m", "imactor", "status", "--json", "--config", str(server.config_path)],
        capture_output=True, text=True, timeout=START_TIMEOUT, check=True,
    )  # fmt: skip
    workers = json.loads(out.stdout)["workers"]
    return sum(worker["mesh"]["resumed_here"] for worker in workers if worker["index"] == 0)


def test_carbons_survive_a_resumption_on_another_worker(server: ServerProcess) -> None:
    """The carbons flag lives in Alice's actor (worker 0); her laptop's session moves from worker 1
    to worker 0 (`MovedSession`, then `Rebind`) and keeps it."""

    async def scenario() -> None:
        with trio.fail_after(TIMEOUT):
            phone = await on(server, 1, ALICE, "phone2")
            laptop = await on(server, 1, ALICE, "laptop2")
            b = await on(server, 0, BOB, "pc2")
            opened = [phone, laptop, b]
            try:
                await laptop.send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
                enabled = await laptop.expect(lambda e: e.tag == "{urn:xmpp:sm:3}enabled")
                await enable(laptop)
                before = await trio.to_thread.run_sync(resumed_elsewhere, server)
                for _attempt in range(20):  # the kernel picks the worker: until it is worker 0
                    await laptop.drop()
                    raw = await raw_authenticated(server.c2s_port, ALICE, PASSWORD)
                    await raw.open_stream()
                    await raw.send(f"<resume xmlns='urn:xmpp:sm:3' previd='{enabled.get('id')}' h='0'/>")
                    laptop = Peer(raw, laptop.jid)
                    opened.append(laptop)
                    resumed = await laptop.expect(lambda e: e.tag in (f"{SM}resumed", f"{SM}failed"))
                    assert resumed.tag == f"{SM}resumed", resumed.tag
                    if await trio.to_thread.run_sync(resumed_elsewhere, server) > before:
                        break
                else:
                    raise AssertionError("no resumption landed on worker 0")
                received = await send(b, phone.jid, "after the move")
                await phone.expect(message(id_=received))
                await laptop.expect(copy_of("received", received))
            finally:
                for peer in opened:
                    await peer.aclose()

    trio.run(scenario)
