"""Rendezvous placement: the same home everywhere, balanced, and minimal movement on change."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import pytest

from imactor.cluster.placement import Membership, home

KEYS = [f"user{i}" for i in range(4000)]


def test_one_live_worker_is_everyones_home() -> None:
    assert {home("user", key, (3,)) for key in KEYS} == {3}


def test_keys_spread_evenly_over_the_live_workers() -> None:
    counts = Counter(home("user", key, (0, 1, 2, 3)) for key in KEYS)
    assert set(counts) == {0, 1, 2, 3}
    assert all(800 <= count <= 1200 for count in counts.values()), counts


def test_only_the_dead_workers_keys_move_and_they_come_back() -> None:
    before = {key: home("user", key, (0, 1, 2)) for key in KEYS}
    after = {key: home("user", key, (0, 2)) for key in KEYS}
    moved = {key for key in KEYS if before[key] != after[key]}
    assert moved == {key for key in KEYS if before[key] == 1}
    assert {key: home("user", key, (0, 1, 2)) for key in KEYS} == before


def test_kind_is_part_of_the_key() -> None:
    assert any(home("user", key, (0, 1)) != home("room", key, (0, 1)) for key in KEYS[:50])


def test_every_process_computes_the_same_home() -> None:
    # str hashing is salted per process; the placement must not depend on it.
    script = (
        "from imactor.cluster.placement import home; "
        "print([home('user', f'user{i}', (0, 1, 2)) for i in range(50)])"
    )
    other = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=30
    )
    assert other.stdout.strip() == str([home("user", key, (0, 1, 2)) for key in KEYS[:50]])


def test_membership_needs_a_live_worker_and_delegates_home() -> None:
    with pytest.raises(ValueError, match="at least one live worker"):
        Membership(1, ())
    membership = Membership(7, (0, 1))
    assert membership.home("user", "alice") == home("user", "alice", (0, 1))
