"""Three nodes on one PostgreSQL database: one membership, chat across nodes, a node killed.

Each node is a real `imactor supervise` (its supervisor and one worker) with its own data dir,
its own CURVE key (`imactor cluster keygen`) and its mesh on its own loopback address
(127.0.0.2, .3, .4); clients connect to each node's c2s port. The leases are short (3 s, renewed
every 0.5 s) so that a killed node's users move within seconds. The helpers that start, kill and
restart nodes are in tests/support/cluster.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from imactor.cluster.endpoints import worker_id
from tests.support.cluster import LEASE, NODES, Cluster, cluster_options, keygen, node_of, wait_for_members
from tests.support.peer import Peer, message, presence, subscribe
from tests.support.postgres import PostgresServer
from tests.support.server import imactor_cli, write_config
from tests.support.timeouts import START_TIMEOUT, TIMEOUT

pytestmark = pytest.mark.postgres

PASSWORD = "secret-pw"
USERS = [f"u{n}" for n in range(40)]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, postgres: PostgresServer) -> Iterator[Cluster]:
    with contextlib.ExitStack() as stack:
        nodes = Cluster(stack, postgres.database_url("cluster"))
        for number, name in enumerate(NODES):
            directory = tmp_path_factory.mktemp(name)
            keygen(directory)
            nodes.append(nodes.start(directory, name, [(u, PASSWORD) for u in USERS] if number == 0 else []))
        wait_for_members(nodes, len(NODES))
        yield nodes


async def test_one_membership_over_three_nodes(cluster: Cluster) -> None:
    ids = [int(node.membership()["node_id"]) for node in cluster]  # type: ignore[call-overload]
    assert len(set(ids)) == 3
    for node in cluster:
        assert sorted(node.membership()["members"]) == sorted(worker_id(i, 0) for i in ids)  # type: ignore[arg-type]
    listed = imactor_cli(cluster[0].server.config_path, "cluster", "nodes", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert {row["name"] for row in rows if row["live"]} == set(NODES)
    assert all(row["lease_age"] < LEASE for row in rows)


async def test_chat_and_presence_between_users_on_three_nodes(cluster: Cluster) -> None:
    a, b, c = (node.server.c2s_port for node in cluster)
    with trio.fail_after(TIMEOUT):
        alice = await Peer.online(a, "u1", PASSWORD)
        bob = await Peer.online(b, "u2", PASSWORD)
        carol = await Peer.online(c, "u3", PASSWORD)
        await subscribe(alice, bob)
        await subscribe(bob, alice)
        await subscribe(carol, alice)
        for sender, recipient in ((alice, bob), (bob, carol), (carol, alice), (alice, carol)):
            await sender.send(f"<message to='{recipient.bare}' type='chat' id='x-{sender.username}'>"
                              f"<body>from {sender.username}</body></message>")  # fmt: skip
            got = await recipient.expect(message(from_=sender.jid, id_=f"x-{sender.username}"))
            assert got.findtext("{jabber:client}body") == f"from {sender.username}"
        await bob.send("<presence><show>away</show></presence>")
        away = await alice.expect(presence(from_=bob.jid))
        assert away.findtext("{jabber:client}show") == "away"
        for peer in (alice, bob, carol):
            await peer.aclose()


async def test_a_killed_node_s_users_move_and_their_contacts_see_them_go(cluster: Cluster) -> None:
    """node-c is killed whole: its user is re-homed on the survivors, alice (on node-a) sees her
    go unavailable, and a message sent to her while she is away is stored on her new home and
    reaches her at her next login, on node-b. Then node-c starts again (taking over its name once
    the dead incarnation's lease ran out) and the three nodes are one membership again."""
    node_a, node_b, node_c = cluster
    victim = next(u for u in USERS[10:] if node_of(cluster, u, cluster) is node_c)
    friend = next(u for u in USERS[10:] if node_of(cluster, u, cluster) is node_a)
    with trio.fail_after(TIMEOUT):
        alice = await Peer.online(node_a.server.c2s_port, friend, PASSWORD)
        carol = await Peer.online(node_c.server.c2s_port, victim, PASSWORD)
        await subscribe(alice, carol)
        await subscribe(carol, alice)
        pids = node_c.pids()
        for pid in pids:  # the whole node at once: its supervisor and every worker
            os.kill(pid, signal.SIGKILL)
        gone = await alice.expect(presence(from_=carol.jid, type_="unavailable"))
        assert gone.get("type") == "unavailable"
    epoch = wait_for_members([node_a, node_b], 2)
    assert node_of(cluster, victim, [node_a, node_b]) in (node_a, node_b)
    with trio.fail_after(TIMEOUT):
        await alice.send(f"<message to='{carol.bare}' type='chat' id='while-away'><body>hi</body></message>")
        await alice.sync()
        back = await Peer.online(node_b.server.c2s_port, victim, PASSWORD, resource="again")
        stored = await back.expect(message(from_=alice.jid, id_="while-away"))
        assert stored.findtext("{jabber:client}body") == "hi"
        await alice.aclose()
        await back.aclose()
        await carol.drop()
    assert epoch > 1
    cluster.restart(node_c)
    assert wait_for_members(cluster, len(NODES)) > epoch


def test_a_second_node_with_a_taken_name_refuses_to_start(cluster: Cluster, tmp_path: Path) -> None:
    """Two nodes configured with the same name: the second one exits at once, saying so."""
    node_a = cluster[0]
    keygen(tmp_path)
    config = write_config(
        tmp_path, extra=cluster_options(tmp_path, node_a.name, "127.0.0.5", cluster.database)
    )
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "imactor", "supervise", "--config", str(config)],
        capture_output=True, text=True, timeout=START_TIMEOUT, check=False,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "another live node uses this name" in result.stderr
    assert time.monotonic() - started < START_TIMEOUT
