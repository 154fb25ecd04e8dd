"""What a chat message's archive write costs, and what the layouts around it cost (issue 14):
not a test, figures for docs/benchmarks.md.

    python -m bench.archive_write [--messages 6000] [--users 1000] [--batches 1,8] [--json out.json]

Everything runs in this process on a fresh SQLite file (WAL, ``synchronous = NORMAL``, the
server's settings), `--users` accounts, and chat messages between random pairs of them, each
archived twice (the recipient's copy and the sender's), as `imactor.modules.mam` does. CPU
microseconds per message (`time.process_time`) for each group-commit batch size of `--batches`:

- ``append_wanted``: the server's own call (`ArchiveStore.append_wanted` through `Storage`: the
  group commit, both accounts' preferences, the INSERT of two rows into the archive's journal,
  COMMIT on the loop's thread), each batch's messages written by concurrent tasks, as the user
  actors write them;
- ``move_journal``: the server's own move of those rows into the indexed archive, afterwards, in
  one call (a worker moves the journal every quarter of a second);
- ``indexed rows``: the same two rows per message straight into the indexed archive with the
  sqlite3 module alone (BEGIN IMMEDIATE, one executemany, COMMIT): what SQLite alone spent when
  the server wrote there, before it had a journal;
- ``journal``: one row per message into a table without a secondary index (the sqlite3 module
  alone; the server's journal takes two, one per archive);
- ``bulk sorted``: `--messages` messages' two rows into the indexed table in one transaction,
  sorted by account (the sqlite3 module alone, what a move does inside SQLite): each index leaf
  is touched once per account instead of once per row;
- the WAL checkpoint of each layout, per message, measured apart (`PRAGMA wal_checkpoint`);
  the server's own checkpoints run in its checkpoint thread, in this process, and are in its
  figures.
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import trio

from bench.loadgen.archive_prefill import INSERT_ARCHIVED
from imactor.storage import Storage
from imactor.storage.archive import ArchiveEntry

# The server's row values, so that "indexed rows" binds what the server binds.
from imactor.storage.archive import _values as archive_row

#: A chat message's stanza as stored (about the size of the load generator's).
STANZA = (
    b"<message xmlns='jabber:client' from='bench1@localhost/r' to='bench2@localhost' type='chat'"
    b" id='a1b2c3d4e5f6'><body>" + b"x" * 60 + b"</body></message>"
)
_JOURNAL = (
    "CREATE TABLE journal (id INTEGER PRIMARY KEY, sender TEXT NOT NULL, recipient TEXT NOT NULL, "
    "stanza_id TEXT NOT NULL, timestamp REAL NOT NULL, stanza BLOB NOT NULL)"
)
_INSERT_JOURNAL = (
    "INSERT INTO journal (sender, recipient, stanza_id, timestamp, stanza) VALUES (?, ?, ?, ?, ?)"
)


class Messages:
    """Chat messages between random pairs of `users` accounts; every call gives new stanza ids."""

    def __init__(self, users: int, seed: int = 14) -> None:
        self.names = [f"bench{i}" for i in range(users)]
        self._rng = random.Random(seed)
        self._next = 0

    def pair(self) -> tuple[str, str, str]:
        """(sender, recipient, stanza id) of the next message."""
        sender, recipient = self._rng.sample(self.names, 2)
        self._next += 1
        return sender, recipient, f"m{self._next:09d}"

    def entries(self) -> list[ArchiveEntry]:
        """The next message's two archive entries: the recipient's copy, then the sender's."""
        sender, recipient, stanza_id = self.pair()
        return [
            ArchiveEntry(recipient, stanza_id, f"{sender}@localhost", "in", STANZA, "r"),
            ArchiveEntry(sender, stanza_id, f"{recipient}@localhost", "out", STANZA, ""),
        ]

    def rows(self) -> list[dict[str, Any]]:
        """The next message's two rows of the archive table, as the server binds them."""
        return [archive_row(entry) for entry in self.entries()]


def cpu_per_message(work: Callable[[], None], messages: int) -> float:
    """CPU microseconds per message that `work` spends writing `messages` messages."""
    started = time.process_time()
    work()
    return round(1e6 * (time.process_time() - started) / messages, 1)


async def through_storage(
    path: Path, users: int, messages: int, batches: Sequence[int]
) -> tuple[dict[int, float], dict[int, float]]:
    """`append_wanted` per message at each batch size (the server's code, its group commit), and
    `move_journal` of those messages afterwards, in one move (a worker moves every quarter of a
    second, so a few hundred to a few thousand rows at a time)."""
    storage = await Storage.open(f"sqlite:///{path}")
    try:
        source = Messages(users)
        # One PBKDF2 round: the accounts only have to exist.
        await storage.accounts.create_many([(name, "password") for name in source.names], iterations=1)
        appends: dict[int, float] = {}
        moves: dict[int, float] = {}
        for batch in batches:
            written = messages // batch * batch
            started = time.process_time()
            for _ in range(messages // batch):
                async with trio.open_nursery() as nursery:
                    for _ in range(batch):
                        nursery.start_soon(storage.archive.append_wanted, source.entries(), "always")
            appends[batch] = round(1e6 * (time.process_time() - started) / written, 1)
            started = time.process_time()
            await storage.archive.move_journal()
            moves[batch] = round(1e6 * (time.process_time() - started) / written, 1)
        return appends, moves
    finally:
        await storage.aclose()


def connect(path: Path) -> sqlite3.Connection:
    """The server's settings for its inline writer: WAL, NORMAL, checkpoints taken apart."""
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("PRAGMA synchronous = NORMAL")
    connection.execute("PRAGMA wal_autocheckpoint = 0")
    return connection


def checkpoint(connection: sqlite3.Connection, messages: int) -> float:
    """CPU microseconds per message of copying the WAL into the database (as the server's
    checkpoint thread does, but to the end)."""
    return cpu_per_message(lambda: connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").close(), messages)


def indexed_rows(connection: sqlite3.Connection, users: int, messages: int, batch: int) -> float:
    source = Messages(users, seed=batch)
    cursor = connection.cursor()

    def work() -> None:
        for _ in range(messages // batch):
            cursor.execute("BEGIN IMMEDIATE")
            cursor.executemany(INSERT_ARCHIVED, [row for _ in range(batch) for row in source.rows()])
            cursor.execute("COMMIT")

    return cpu_per_message(work, messages // batch * batch)


def journal(connection: sqlite3.Connection, users: int, messages: int, batch: int) -> float:
    source = Messages(users, seed=100 + batch)
    cursor = connection.cursor()

    def work() -> None:
        for _ in range(messages // batch):
            cursor.execute("BEGIN IMMEDIATE")
            now = time.time()
            cursor.executemany(_INSERT_JOURNAL, [(*source.pair(), now, STANZA) for _ in range(batch)])
            cursor.execute("COMMIT")

    return cpu_per_message(work, messages // batch * batch)


def bulk_sorted(connection: sqlite3.Connection, users: int, messages: int) -> float:
    source = Messages(users, seed=999)
    rows = sorted((row for _ in range(messages) for row in source.rows()), key=lambda row: row["username"])
    cursor = connection.cursor()

    def work() -> None:
        cursor.execute("BEGIN IMMEDIATE")
        cursor.executemany(INSERT_ARCHIVED, rows)
        cursor.execute("COMMIT")

    return cpu_per_message(work, messages)


def measure(directory: Path, users: int, messages: int, batches: Sequence[int]) -> dict[str, Any]:
    database = directory / "archive.sqlite3"
    report: dict[str, Any] = {"users": users, "messages": messages, "batches": list(batches)}
    appends, moves = trio.run(through_storage, database, users, messages, batches)
    report["append_wanted"], report["move_journal"] = appends, moves
    connection = connect(database)
    try:
        # The server's checkpoint thread ran in this process: its CPU is in append_wanted's figures.
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").close()
        report["indexed_rows"] = {batch: indexed_rows(connection, users, messages, batch)
                                  for batch in batches}  # fmt: skip
        report["indexed_rows_checkpoint"] = checkpoint(connection, messages * len(batches))
        connection.execute(_JOURNAL)
        report["journal"] = {batch: journal(connection, users, messages, batch) for batch in batches}
        report["journal_checkpoint"] = checkpoint(connection, messages * len(batches))
        report["bulk_sorted"] = bulk_sorted(connection, users, messages)
        report["bulk_sorted_checkpoint"] = checkpoint(connection, messages)
    finally:
        connection.close()
    return report


def table(report: dict[str, Any]) -> str:
    lines = [
        f"archive write, CPU µs per chat message (two archive rows), {report['users']} accounts, "
        f"{report['messages']} messages per figure",
        "| layout | " + " | ".join(f"batch of {batch}" for batch in report["batches"]) + " | checkpoint |",
        "|---|" + "---|" * (len(report["batches"]) + 1),
    ]
    layouts = (
        ("append_wanted", "the server's append_wanted (two rows into the journal)"),
        ("move_journal", "the server's move_journal (those rows into the archive, one move)"),
        ("indexed_rows", "before the journal: two rows into the indexed archive (sqlite3 alone)"),
        ("journal", "one row into a journal (sqlite3 alone)"),
    )
    for key, name in layouts:
        cells = " | ".join(str(report[key][batch]) for batch in report["batches"])
        lines.append(f"| {name} | {cells} | {report.get(key + '_checkpoint', 'included')} |")
    blanks = " | ".join("" for _ in report["batches"][1:])
    lines.append(f"| a bulk sorted move (sqlite3 alone, all at once) | {report['bulk_sorted']} | {blanks} | "
                 f"{report['bulk_sorted_checkpoint']} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    summary = (__doc__ or "").split("\n\n")[0]
    parser = argparse.ArgumentParser(prog="python -m bench.archive_write", description=summary)
    parser.add_argument("--messages", type=int, default=6000, help="messages per figure")
    parser.add_argument("--users", type=int, default=1000, help="accounts the messages are spread over")
    parser.add_argument("--batches", default="1,8", help="group-commit batch sizes, comma-separated")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args(argv)
    batches = [int(value) for value in args.batches.split(",")]
    if args.messages < max(batches) or args.users < 2 or min(batches) < 1:
        parser.error("--messages must be at least the largest batch, --users at least 2, batches positive")
    with tempfile.TemporaryDirectory(prefix="imactor-archive-write-") as directory:
        report = measure(Path(directory), args.users, args.messages, batches)
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2))
    print(table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
