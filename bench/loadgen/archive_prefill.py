"""An archive of a working company's size before a run (`bench.run --archive-prefill N`).

A server's archive is not empty on a working day: every account has months of messages in it,
and what an archived row costs grows with the archive (its index pages are no longer the few a
fresh archive has; docs/benchmarks.md). So imactor's SQLite archive can be filled before the
server starts: `per_account` chat messages in each account's archive, half received and half
sent, with peers among the accounts, spread over the last `days` days in time order. Rows go in
account by account (each account's index entries together), in large transactions, straight into
the server's `archive` table with the sqlite3 module: the server is not running yet.

The rows are each account's own: a message's other copy (in its peer's archive) is not written,
which changes nothing the server does with them (it reads one account's archive at a time).
"""

from __future__ import annotations

import random
import sqlite3
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

#: Rows per transaction.
CHUNK = 50_000

#: A row straight into the server's indexed `archive` table, with the server not running (also
#: what `bench.archive_write` times as the server's write before it had a journal).
INSERT_ARCHIVED = (
    "INSERT INTO archive (username, stanza_id, timestamp, peer, peer_resource, direction, stanza) "
    "VALUES (:username, :stanza_id, :timestamp, :peer, :peer_resource, :direction, :stanza) "
    "ON CONFLICT DO NOTHING"
)


def _rows(usernames: Sequence[str], domain: str, per_account: int, days: float,
          seed: int) -> Iterator[dict[str, object]]:  # fmt: skip
    rng = random.Random(seed)
    now = time.time()
    serial = 0
    for username in usernames:
        stamps = sorted(now - rng.uniform(3600.0, days * 86400.0) for _ in range(per_account))
        for stamp in stamps:
            serial += 1
            peer = rng.choice(usernames)
            while peer == username and len(usernames) > 1:
                peer = rng.choice(usernames)
            incoming = rng.random() < 0.5
            sender, recipient = (peer, username) if incoming else (username, peer)
            stanza = (
                f"<message xmlns='jabber:client' from='{sender}@{domain}/r' to='{recipient}@{domain}' "
                f"type='chat' id='p{serial:x}'><body>{'x' * 60}</body></message>"
            ).encode()
            yield {"username": username, "stanza_id": f"prefill-{serial:x}", "timestamp": round(stamp, 6),
                   "peer": f"{peer}@{domain}", "peer_resource": "r" if incoming else "",
                   "direction": "in" if incoming else "out", "stanza": stanza}  # fmt: skip


def prefill_archive(database: Path, usernames: Sequence[str], domain: str, per_account: int, *,
                    days: float = 90.0, seed: int = 14) -> int:  # fmt: skip
    """Write `per_account` archived messages into each of `usernames`' archives in the SQLite
    file `database` (its schema created, its accounts added, no server running); how many rows."""
    connection = sqlite3.connect(database, isolation_level=None)
    written = 0
    try:
        connection.execute("PRAGMA foreign_keys = ON")
        rows = _rows(usernames, domain, per_account, days, seed)
        while True:
            chunk = [row for _, row in zip(range(CHUNK), rows, strict=False)]
            if not chunk:
                break
            connection.execute("BEGIN IMMEDIATE")
            connection.executemany(INSERT_ARCHIVED, chunk)
            connection.execute("COMMIT")
            written += len(chunk)
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        connection.close()
    return written
