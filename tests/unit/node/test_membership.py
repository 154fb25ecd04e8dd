"""The node supervisor's membership announcements reach the workers' PULL sockets.

Real ZeroMQ over ipc:// in a fresh run directory; the live set is a list the test changes. Every
test runs under `trio.fail_after`; waits are on the frames themselves.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trio.testing

from imactor.cluster.endpoints import MASTER, master_endpoint, worker_endpoint
from imactor.cluster.wire import Envelope, MembershipChanged, Message
from imactor.cluster.zmq_link import ZmqLink
from imactor.node.membership import MembershipAnnouncer
from imactor.node.rundir import create_run_dir, remove_run_dir

TIMEOUT = 30


@pytest.fixture
def run_dir() -> Iterator[Path]:
    path = create_run_dir()
    try:
        assert path.stat().st_mode & 0o777 == 0o700
        yield path
    finally:
        remove_run_dir(path)
    assert not path.exists()


async def next_membership(link: ZmqLink, epoch: int) -> Envelope:
    """The next announcement of `epoch` (a resend of an older one may come first on a slow run)."""
    while True:
        envelope = await link.receive_channel.receive()
        assert isinstance(envelope.message, MembershipChanged)
        assert envelope.message.epoch <= epoch
        if envelope.message.epoch == epoch:
            return envelope


async def test_changes_and_resends_reach_every_live_worker(run_dir: Path) -> None:
    live: list[int] = []
    workers = [ZmqLink(index, worker_endpoint(run_dir, index)) for index in (0, 1)]
    master = ZmqLink(MASTER, master_endpoint(run_dir), {i: worker_endpoint(run_dir, i) for i in (0, 1)})
    announcer = MembershipAnnouncer(master, lambda: live, poll_interval=0.01, resend_interval=0.2)
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            for link in (*workers, master):
                await nursery.start(link.run)
            nursery.start_soon(announcer.run)
            await trio.testing.wait_all_tasks_blocked()
            assert announcer.epoch == 0  # nothing live yet: nothing announced
            live[:] = [1, 0]
            for link in workers:
                envelope = await next_membership(link, 1)
                assert envelope.source == MASTER
                assert envelope.epoch == 1  # the frame is stamped with the epoch it announces
                assert envelope.message == MembershipChanged(1, (0, 1))
            live[:] = [1]  # worker 0 died: only the live are told (a successor would get it stale)
            assert (await next_membership(workers[1], 2)).message == MembershipChanged(2, (1,))
            # Unchanged, the membership is sent again, under the same epoch.
            assert (await next_membership(workers[1], 2)).message == MembershipChanged(2, (1,))
            live[:] = [0, 1]  # worker 0's successor is up: it hears of epoch 3, never of 2
            heard = []
            while not heard or heard[-1].epoch < 3:
                envelope = await workers[0].receive_channel.receive()
                assert isinstance(envelope.message, MembershipChanged)
                heard.append(envelope.message)
            assert heard[-1] == MembershipChanged(3, (0, 1))
            assert 2 not in {membership.epoch for membership in heard}
            assert announcer.sent_total >= 5
            nursery.cancel_scope.cancel()


class FullLink:
    """A link whose outboxes are full: a dead peer's."""

    def __init__(self) -> None:
        self.epochs: list[int] = []

    def set_epoch(self, epoch: int) -> None:
        self.epochs.append(epoch)

    def send_nowait(self, peer: int, message: Message) -> None:
        raise trio.WouldBlock


def test_a_full_outbox_is_counted_not_raised() -> None:
    link = FullLink()
    live = [0]
    announcer = MembershipAnnouncer(link, lambda: live)
    assert announcer.observe()
    assert not announcer.observe()  # unchanged
    announcer.announce()
    assert (link.epochs, announcer.sent_total, announcer.dropped_total) == ([1], 0, 1)
    live.append(1)
    assert announcer.observe()
    assert (announcer.epoch, announcer.live) == (2, (0, 1))
