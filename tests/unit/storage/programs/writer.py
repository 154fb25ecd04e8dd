"""A second process writing to the same SQLite file: ``writer.py URL NAME COUNT``.

It opens `Storage` (the schema check takes the write lock too), then stores COUNT offline messages
for ``alice`` from COUNT concurrent tasks, reading the count meanwhile, and prints ``done NAME``.
Its busy timeout is 1 ms, so a lock held by another process surfaces at once as SQLite's "database
is locked", and only the storage layer's retries stand between that and a failed write.
"""

from __future__ import annotations

import logging
import sys

import trio

from imactor.storage import Storage, db


async def main(url: str, name: str, count: int) -> None:
    db.BUSY_TIMEOUT_MS = 1
    async with await Storage.open(url) as storage, trio.open_nursery() as nursery:
        for number in range(count):
            stanza = f"<message id='{name}-{number}'/>".encode()
            nursery.start_soon(storage.offline.store, "alice", stanza)
            nursery.start_soon(storage.offline.count, "alice")
    print(f"done {name}", flush=True)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    trio.run(main, sys.argv[1], sys.argv[2], int(sys.argv[3]))
