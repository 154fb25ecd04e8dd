"""One worker's table of which worker holds which component (`imactor.components.table`)."""

from __future__ import annotations

from dataclasses import dataclass

from imactor import messages as m
from imactor.components.table import ComponentTable

GW = "gateway.example"


@dataclass(eq=False)
class Conn:
    closed: bool = False


def test_a_domain_is_held_by_one_connection_here() -> None:
    table: ComponentTable[Conn] = ComponentTable(0)
    first, second = Conn(), Conn()
    assert table.claim(GW, first, live=(0, 1))
    assert not table.claim(GW, second, live=(0, 1))  # <conflict/>
    assert table.where(GW) is first
    assert list(table.connected()) == [GW]


def test_a_closed_connection_does_not_hold_its_domain() -> None:
    table: ComponentTable[Conn] = ComponentTable(0)
    first = Conn()
    table.claim(GW, first, live=(0,))
    first.closed = True  # its stream ended; its task has not released it yet
    second = Conn()
    assert table.claim(GW, second, live=(0,))
    assert not table.release(GW, first)  # the late release of the old one changes nothing
    assert table.where(GW) is second


def test_a_live_worker_holding_the_domain_refuses_it_here_a_dead_one_does_not() -> None:
    table: ComponentTable[Conn] = ComponentTable(0)
    assert table.heard(m.ComponentAt(GW, 1, True)) is None
    assert table.where(GW) == 1
    assert not table.claim(GW, Conn(), live=(0, 1))
    assert table.claim(GW, Conn(), live=(0,))  # w1 is gone, and its stream with it


def test_news_of_a_disconnection_forgets_only_that_workers_entry() -> None:
    table: ComponentTable[Conn] = ComponentTable(0)
    table.heard(m.ComponentAt(GW, 2, True))
    table.heard(m.ComponentAt(GW, 1, False))  # stale news from a worker that no longer has it
    assert table.where(GW) == 2
    table.heard(m.ComponentAt(GW, 2, False))
    assert table.where(GW) is None
    assert list(table.connected()) == []


def test_a_race_between_two_workers_is_won_by_the_lower_number() -> None:
    low: ComponentTable[Conn] = ComponentTable(0)
    high: ComponentTable[Conn] = ComponentTable(1)
    at_low, at_high = Conn(), Conn()
    # Both handshakes pass before either announcement arrives.
    assert low.claim(GW, at_low, live=(0, 1))
    assert high.claim(GW, at_high, live=(0, 1))
    # Each hears the other: the higher closes its own, the lower keeps its own.
    assert high.heard(m.ComponentAt(GW, 0, True)) is at_high
    assert low.heard(m.ComponentAt(GW, 1, True)) is None
    assert low.where(GW) is at_low
    assert high.where(GW) == 0
    # The loser's late release must not make the winner's worker forget it.
    assert not high.release(GW, at_high)


def test_membership_drops_the_entries_of_workers_that_left() -> None:
    table: ComponentTable[Conn] = ComponentTable(0)
    table.heard(m.ComponentAt(GW, 1, True))
    table.heard(m.ComponentAt("bot.example", 2, True))
    table.membership(live=(0, 2))
    assert table.where(GW) is None
    assert table.where("bot.example") == 2


def test_own_news_is_ignored() -> None:
    table: ComponentTable[Conn] = ComponentTable(3)
    here = Conn()
    table.claim(GW, here, live=(3,))
    assert table.heard(m.ComponentAt(GW, 3, True)) is None
    assert table.heard(m.ComponentAt(GW, 3, False)) is None
    assert table.where(GW) is here
