"""A node cut off from the network, not killed: it fences itself, and rejoins when the link is back;
the database restarted under the nodes: they serve on.

node-a runs on the host; node-b in a network namespace of the test's own (`tests/support/netns.py`),
reaching the PostgreSQL server and node-a only through a veth pair, and reached by its clients
the same way. Taking the link down cuts node-b from the database and from node-a at once, with no
reset: packets vanish, as when a cable or switch fails.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Iterator

import pytest
import trio

from imactor.cluster.placement import home
from tests.integration.test_cluster import PASSWORD, USERS
from tests.support.cluster import Node, cluster_options, keygen, wait_for_members
from tests.support.netns import Namespace, NetnsUnavailable, namespace
from tests.support.peer import Peer, message, presence, subscribe
from tests.support.postgres import PostgresServer
from tests.support.server import running_server
from tests.support.timeouts import TIMEOUT

pytestmark = pytest.mark.postgres

#: Longer than in test_cluster: a database restart on a loaded machine must fit in the three
#: quarters of it that a node serves without a renewal.
LEASE = 8.0


@pytest.fixture(scope="module")
def net() -> Iterator[Namespace]:
    try:
        with namespace("part", 213) as ns:
            yield ns
    except NetnsUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def database(net: Namespace) -> Iterator[PostgresServer]:
    """This module's own server (the test restarts it), reachable from the namespace too."""
    server = PostgresServer.start(listen=("127.0.0.1", net.host_address), trust=(net.network,))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def nodes(
    net: Namespace, database: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[Node]]:
    """node-a on the host, node-b in the namespace, one PostgreSQL server both reach."""
    url = database.database_url("partition")
    with contextlib.ExitStack() as stack:
        a_dir, b_dir = tmp_path_factory.mktemp("node-a"), tmp_path_factory.mktemp("node-b")
        for directory in (a_dir, b_dir):
            keygen(directory)
        a = stack.enter_context(running_server(
            a_dir, users=[(u, PASSWORD) for u in USERS],
            extra=cluster_options(a_dir, "node-a", net.host_address, url, LEASE),
        ))  # fmt: skip
        from_inside = url.replace("@127.0.0.1:", f"@{net.host_address}:")
        b = stack.enter_context(running_server(
            b_dir, extra=cluster_options(b_dir, "node-b", net.address, from_inside, LEASE),
            c2s_host=net.address, prefix=net.prefix,
        ))  # fmt: skip
        pair = [Node("node-a", a_dir, a), Node("node-b", b_dir, b)]
        wait_for_members(pair, 2)
        yield pair


def chat(to: str, stanza_id: str, body: str) -> str:
    return f"<message to='{to}' type='chat' id='{stanza_id}'><body>{body}</body></message>"


def fenced(node: Node) -> bool:
    return "fenced:" in log_text(node)


async def test_a_node_cut_off_fences_itself_and_rejoins_when_the_link_is_back(
    nodes: list[Node], net: Namespace
) -> None:
    node_a, node_b = nodes
    view = tuple(node_a.membership()["members"])
    homes = {u: home("user", u, view) for u in USERS}
    b_worker = max(view)  # node-b registered second: the higher node id
    victim = next(u for u in USERS if homes[u] == b_worker)
    friend = next(u for u in USERS if homes[u] != b_worker)
    with trio.fail_after(TIMEOUT):
        alice = await Peer.online(node_a.server.c2s_port, friend, PASSWORD)
        carol = await Peer.online(node_b.server.c2s_port, victim, PASSWORD, host=net.address)
        await subscribe(alice, carol)
        await subscribe(carol, alice)
        net.cut()
        cut_at = trio.current_time()
        # node-a's view loses node-b's worker once its lease ran out: carol goes unavailable, and
        # her account is home on node-a now.
        gone = await alice.expect(presence(from_=carol.jid, type_="unavailable"))
        assert gone.get("type") == "unavailable"
        assert trio.current_time() - cut_at >= LEASE / 2
        await alice.send(
            f"<message to='{carol.bare}' type='chat' id='cut'><body>while cut off</body></message>"
        )
        await alice.sync()
    assert fenced(node_b), "node-b went on serving without its lease"
    net.heal()
    wait_for_members(nodes, 2)  # node-b joined again
    with trio.fail_after(TIMEOUT):
        back = await Peer.online(node_b.server.c2s_port, victim, PASSWORD, resource="back", host=net.address)
        stored = await back.expect(message(from_=alice.jid, id_="cut"))
        assert stored.findtext("{jabber:client}body") == "while cut off"
        await alice.send(
            f"<message to='{carol.bare}' type='chat' id='healed'><body>welcome back</body></message>"
        )
        live = await back.expect(message(from_=alice.jid, id_="healed"))
        assert live.findtext("{jabber:client}body") == "welcome back"
        for peer in (alice, back):
            await peer.aclose()
        await carol.drop()


async def test_a_database_restart_costs_the_nodes_no_client(nodes: list[Node], net: Namespace,
                                                            database: PostgresServer) -> None:  # fmt: skip
    """PostgreSQL stops and starts again under both nodes: neither fences itself (its lease
    outlives the restart, and nobody can take its users meanwhile), the membership stays, and
    the clients' streams carry messages again once the database is back."""
    node_a, node_b = nodes
    view = tuple(node_a.membership()["members"])
    epoch = node_a.membership()["epoch"]
    logs = {node.name: len(log_text(node)) for node in nodes}
    on_b = next(u for u in USERS[20:] if home("user", u, view) == max(view))
    on_a = next(u for u in USERS[20:] if home("user", u, view) != max(view))
    with trio.fail_after(TIMEOUT):
        alice = await Peer.online(node_a.server.c2s_port, on_a, PASSWORD)
        bob = await Peer.online(node_b.server.c2s_port, on_b, PASSWORD, host=net.address)
        started = trio.current_time()
        await trio.to_thread.run_sync(database.halt)
        await trio.to_thread.run_sync(database.resume)
        down_for = trio.current_time() - started
        assert down_for < LEASE * 0.75, (
            f"the restart took {down_for:.1f} s: longer than a node serves unrenewed"
        )
        await alice.send(chat(bob.bare, "after-restart", "still here"))
        got = await bob.expect(message(from_=alice.jid, id_="after-restart"))
        assert got.findtext("{jabber:client}body") == "still here"
        await bob.send(chat(alice.bare, "reply", "me too"))
        await alice.expect(message(from_=bob.jid, id_="reply"))
        for peer in (alice, bob):
            await peer.aclose()
    for node in nodes:
        assert "fenced:" not in log_text(node)[logs[node.name] :], node.name
    assert node_a.membership()["epoch"] == epoch


def test_a_fenced_node_stops_at_once_on_sigterm(nodes: list[Node], net: Namespace) -> None:
    """Cut off again and fenced, node-b waits for its database; SIGTERM then stops it at once,
    with status 0, rather than when the network is back (or at systemd's SIGKILL). Last in the
    module: node-b does not come back."""
    node_b = nodes[1]
    already = log_text(node_b).count("fenced:")
    net.cut()
    try:
        deadline = time.monotonic() + TIMEOUT
        while log_text(node_b).count("fenced:") == already:  # fencing is logged, not announced
            assert time.monotonic() < deadline, "node-b did not fence itself"
            time.sleep(0.1)
        node_b.server.proc.send_signal(signal.SIGTERM)
        assert node_b.server.proc.wait(LEASE) == 0
    finally:
        net.heal()


def log_text(node: Node) -> str:
    return (node.directory / "server.log").read_text(errors="replace")
