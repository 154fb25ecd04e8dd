"""The hand-over gate (`imactor.mesh.handoff.HandOffGate`): at an actor's new home, what arrives
before the previous home handed the actor over waits, and goes in order right after it."""

from __future__ import annotations

from imactor import messages as m
from imactor.cluster.placement import Membership, home
from imactor.mesh.handoff import HandOffGate

ONE, BOTH = Membership(1, (0,)), Membership(2, (0, 1))


def moving_to(worker: int, count: int = 2) -> list[str]:
    """Account names whose home is worker 0 while only 0 lives, and `worker` once 0 and 1 do."""
    names = (f"u{n}" for n in range(10_000))
    return [n for n in names if home("user", n, (0, 1)) == worker][:count]


def gate_on_1_after_a_restart() -> HandOffGate:
    """Worker 1 started again (it never saw a membership) and hears the one with both."""
    gate = HandOffGate(1, closed=True)
    assert gate.reset(Membership(0, (0, 1)), BOTH) == []
    return gate


def test_a_restarted_worker_holds_everything_until_its_previous_homes_say() -> None:
    gate = HandOffGate(1, closed=True)
    (name,) = moving_to(1, 1)
    assert gate.holds("user", name)
    gate.park("user", name, "early")
    # What reached it before its first membership waits on for the previous home's list.
    assert gate.reset(Membership(0, (0, 1)), BOTH) == []
    assert gate.handoffs(0, m.HandOffs(BOTH.epoch, ())) == [(("user", name), "early")]


def test_keys_that_moved_here_wait_for_the_previous_home_and_their_state() -> None:
    gate = gate_on_1_after_a_restart()
    listed, unlisted = moving_to(1)
    for n, name in enumerate((listed, unlisted)):
        assert gate.holds("user", name)
        gate.park("user", name, f"m{n}")
    released = gate.handoffs(0, m.HandOffs(BOTH.epoch, (("user", listed),)))
    assert released == [(("user", unlisted), "m1")]  # no actor there: nothing to wait for
    assert gate.holds("user", listed)
    gate.park("user", listed, "m2")
    assert gate.moved("user", listed) == [(("user", listed), "m0"), (("user", listed), "m2")]
    assert not gate.holds("user", listed)
    assert gate.holding == 0


def test_at_a_first_start_the_others_empty_lists_open_the_gate() -> None:
    """A worker cannot tell a first start from a restart: it waits for every other worker's
    list, which at a first start is empty."""
    gate = HandOffGate(0, closed=True)
    gate.reset(Membership(0, (0, 1)), BOTH)
    (name,) = moving_to(0, 1)
    assert gate.holds("user", name)
    gate.park("user", name, "first")
    assert gate.handoffs(1, m.HandOffs(BOTH.epoch, ())) == [(("user", name), "first")]
    assert not gate.holds("user", name)


def test_a_worker_that_only_loses_keys_holds_nothing() -> None:
    gate = HandOffGate(0, closed=False)
    gate.reset(ONE, BOTH)  # worker 1 came back: keys move from 0 to 1 only
    assert not any(gate.holds("user", name) for name in moving_to(0) + moving_to(1))


def test_patience_ends_the_wait_for_a_previous_home_that_never_says() -> None:
    gate = gate_on_1_after_a_restart()
    (name,) = moving_to(1, 1)
    gate.park("user", name, "held")
    assert gate.expire(BOTH.epoch - 1) == []  # the timer of an older membership
    assert gate.expire(BOTH.epoch) == [(("user", name), "held")]
    assert not gate.holds("user", name)


def test_a_hand_over_list_that_overtakes_the_announcement_is_kept_for_it() -> None:
    gate = HandOffGate(1, closed=True)
    listed, unlisted = moving_to(1)
    assert gate.handoffs(0, m.HandOffs(BOTH.epoch, (("user", listed),))) == []
    gate.reset(Membership(0, (0, 1)), BOTH)
    assert gate.holds("user", listed)
    assert not gate.holds("user", unlisted)


def test_a_state_that_overtakes_the_announcement_is_not_awaited_again() -> None:
    gate = HandOffGate(1, closed=True)
    (name,) = moving_to(1, 1)
    gate.handoffs(0, m.HandOffs(BOTH.epoch, (("user", name),)))
    assert gate.moved("user", name) == []
    gate.reset(Membership(0, (0, 1)), BOTH)
    assert not gate.holds("user", name)


def test_a_list_from_an_older_membership_changes_nothing() -> None:
    gate = gate_on_1_after_a_restart()
    (name,) = moving_to(1, 1)
    assert gate.handoffs(0, m.HandOffs(BOTH.epoch - 1, ())) == []
    assert gate.holds("user", name)


def test_a_node_of_one_worker_never_holds() -> None:
    gate = HandOffGate(0, closed=False)
    assert not gate.holds("user", "anyone")
