"""`imactor.ids.random_id`: random ids from a block of kernel randomness."""

from __future__ import annotations

import base64

from imactor import ids


def test_ids_are_urlsafe_of_the_asked_size_and_distinct_across_blocks() -> None:
    seen = {ids.random_id(12) for _ in range(3 * ids._BLOCK // 12)}  # spans several blocks
    assert len(seen) == 3 * ids._BLOCK // 12
    sample = next(iter(seen))
    assert len(base64.urlsafe_b64decode(sample + "=" * (-len(sample) % 4))) == 12
    assert set("".join(seen)) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_bigger_than_a_block() -> None:
    assert len(base64.urlsafe_b64decode(ids.random_id(5000) + "==")) == 5000
