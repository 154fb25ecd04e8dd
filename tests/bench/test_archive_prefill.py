"""bench.loadgen.archive_prefill fills the server's own archive table, which the server then
reads as its own: each account's messages in time order, pages and counts as MAM gives them."""

from __future__ import annotations

import sys
from pathlib import Path

import trio

# bench/ is not an installed package (the smoke runs start it with `python -m` from the root).
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.loadgen.archive_prefill import prefill_archive
from imactor.storage import Storage

NAMES = ["bench0", "bench1", "bench2"]


async def test_the_server_reads_a_prefilled_archive_as_its_own(tmp_path: Path) -> None:
    database = tmp_path / "imactor.sqlite3"
    with trio.fail_after(60):
        async with await Storage.open(f"sqlite:///{database}") as storage:
            await storage.accounts.create_many([(name, "pw") for name in NAMES], iterations=1)
        assert prefill_archive(database, NAMES, "localhost", 40) == 120
        async with await Storage.open(f"sqlite:///{database}") as storage:
            for name in NAMES:
                assert await storage.archive.count(name) == 40
                page = await storage.archive.query(name, limit=100)
                stamps = [item.timestamp for item in page.items]
                assert stamps == sorted(stamps)
                assert {item.direction for item in page.items} == {"in", "out"}
                assert all(item.peer != f"{name}@localhost" for item in page.items)
                assert page.items[0].stanza.startswith(b"<message xmlns='jabber:client'")
