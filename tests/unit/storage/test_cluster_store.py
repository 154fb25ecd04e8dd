"""The cluster tables on a real PostgreSQL server: registration, leases, the membership epoch,
and a node's own view of its lease (`imactor.node.lease`: fencing).

Each test gets a schema of its own (`db_url`'s PostgreSQL half); leases are a fraction of a
second where a test waits for one to run out.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import trio

from imactor.cluster.wire import ClusterView
from imactor.node.lease import ClusterMember, Fenced
from imactor.storage import Storage
from imactor.storage.cluster import ClusterStore, LeaseLost, NodeNameInUse, NodeRecord
from tests.support.postgres import PostgresServer

pytestmark = pytest.mark.postgres
TIMEOUT = 30


async def create_schema(url: str) -> None:
    async with await Storage.open(url):  # the schema, cluster tables included
        pass


@pytest.fixture
def url(postgres: PostgresServer) -> Iterator[str]:
    schema, url = postgres.schema_url()
    trio.run(create_schema, url)
    try:
        yield url
    finally:
        postgres.drop_schema(schema)


def record(name: str, incarnation: str = "i1", key: str = "k" * 40) -> NodeRecord:
    return NodeRecord(name, incarnation, key, {0: f"tcp://10.0.0.1:{7600}"}, {"host": "h", "c2s": 5222})


def test_nodes_register_and_one_epoch_numbers_each_change(url: str) -> None:
    store = ClusterStore(url)
    a = store.register(record("a"), lease=30)
    b = store.register(record("b", key="b" * 40), lease=30)
    assert a != b
    first = store.renew(a, "i1", [0], 0, 30)
    assert first.members == ((a, 0),)  # b has no live worker yet
    second = store.renew(b, "i1", [0, 1], 3, 30)
    assert second.epoch == first.epoch + 1
    assert second.members == ((a, 0), (b, 0), (b, 1))
    same = store.renew(a, "i1", [0], 0, 30)
    assert same.epoch == second.epoch  # nothing changed: no new epoch
    assert {n.name: n.sessions for n in same.nodes} == {"a": 0, "b": 3}
    assert store.is_registered("b" * 40)
    assert not store.is_registered("z" * 40)
    store.close()


def test_a_live_name_is_refused_and_an_expired_one_taken_over(url: str) -> None:
    store = ClusterStore(url)
    node = store.register(record("a", "first"), lease=0.3)
    with pytest.raises(NodeNameInUse):
        store.register(record("a", "second"), lease=0.3)
    left = store.lease_of("a")
    assert left is not None
    assert left[0] == "first"
    trio.run(trio.sleep, 0.4)  # the first incarnation's lease runs out (database clock)
    assert store.register(record("a", "second"), lease=30) == node
    with pytest.raises(LeaseLost, match="another process"):
        store.renew(node, "first", [0], 0, 30)  # the old incarnation lost its row
    store.close()


def test_a_lease_that_ran_out_is_not_renewed(url: str) -> None:
    """A node paused past its lease (the others may have taken its users) must not carry on."""
    store = ClusterStore(url)
    node = store.register(record("a"), lease=0.2)
    trio.run(trio.sleep, 0.3)
    with pytest.raises(LeaseLost, match="ran out"):
        store.renew(node, "i1", [0], 0, 30)
    store.close()


def test_a_retired_node_leaves_the_membership_at_once(url: str) -> None:
    store = ClusterStore(url)
    a, b = store.register(record("a"), lease=30), store.register(record("b"), lease=30)
    store.renew(a, "i1", [0], 0, 30)
    before = store.renew(b, "i1", [0], 0, 30)
    store.retire(b, "i1")
    after = store.renew(a, "i1", [0], 0, 30)
    assert after.members == ((a, 0),)
    assert after.epoch == before.epoch + 1
    nodes, epoch = store.nodes()
    assert epoch == after.epoch
    assert {n.name: n.lease_left > 0 for n in nodes} == {"a": True, "b": False}
    store.close()


class Link:
    """What a node supervisor's link receives: the views, by worker."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, object]] = []
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def send_nowait(self, peer: int, message: object) -> None:
        self.sent.append((peer, message))


async def test_a_node_that_cannot_renew_fences_itself_before_its_lease_ends(url: str) -> None:
    """The database becomes unreachable for this node alone: `run` raises `Fenced` once three quarters of
    the lease passed without a renewal, while the database still counts the node as live."""
    member = ClusterMember(
        ClusterStore(url), record("a"), lease=2.0, heartbeat=0.2,
        local_endpoints={0: "ipc:///tmp/w0"}, bind_endpoints={0: "tcp://10.0.0.1:7600"},
        live_local=lambda: [0],
    )  # fmt: skip
    link = Link()
    with trio.fail_after(TIMEOUT):
        node_id = await member.join()
        with trio.move_on_after(0.5):
            await member.run(link)  # a few beats: views announced to worker 0 of this node
        assert link.sent
        assert link.sent[-1][0] == node_id * 1024
        view = link.sent[-1][1]
        assert isinstance(view, ClusterView)
        assert view.live_workers == (node_id * 1024,)
        member._store = ClusterStore("postgresql+psycopg://postgres@127.0.0.1:1/none")  # cut off
        with pytest.raises(Fenced):
            await member.run(link)
        fenced_after = trio.current_time() - member.renewed_at  # since the last renewal asked
    assert 1.5 <= fenced_after < 2.0  # three quarters of the lease, before the lease itself ends
    assert ClusterStore(url).lease_of("a") is not None
