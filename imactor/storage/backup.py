"""Online backup and restore of the SQLite database (`imactor backup`, `imactor restore`).

A backup is taken with SQLite's online backup API in one step: it reads the database as one
read transaction sees it, so the copy is consistent (every committed transaction or none of it)
while the server goes on writing; in WAL mode readers never block the writers, so the server
does not pause. The copy is written to a temporary file created 0600 (it holds every account's
SCRAM verifiers and the archive), switched to a single-file journal, checked with
``PRAGMA quick_check`` and only then renamed into place, so a backup that exists is complete.

A restore copies a backup the same way into the configured database's place. It must not run
under a server (the caller checks the status socket first): the old database file and its WAL
are kept beside it as ``<name>.before-restore-<time>`` (a WAL left by a crash must never be
replayed onto the restored file, so it moves with its own database).

PostgreSQL is backed up with its own tools (pg_dump / pg_restore, docs/operations.md).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from imactor.storage.db import sqlite_path
from imactor.storage.errors import StorageError
from imactor.storage.files import PRIVATE_FILE_MODE, private_directory, sqlite_files

#: Tables counted in a backup's summary: what an administrator checks first. The newest archived
#: messages are in the archive's journal until a worker moves them (`imactor.storage.archive`).
_SUMMARY_TABLES = ("account", "archive", "archive_journal", "offline_message", "muc_room")


@dataclass(frozen=True, slots=True)
class BackupSummary:
    """What a backup or restore wrote."""

    path: Path
    size: int  #: bytes
    rows: dict[str, int]  #: rows per table of `_SUMMARY_TABLES`

    def describe(self) -> str:
        counts = ", ".join(f"{table} {count}" for table, count in self.rows.items())
        return f"{self.path} ({self.size} bytes; rows: {counts})"


def backup(url: str, destination: Path) -> BackupSummary:
    """Copy the SQLite database at `url` to `destination` (a file, or a directory to put a
    time-stamped file in), consistently, while the server may be writing.

    Raises:
        StorageError: Not a SQLite URL, no database there, or the copy failed.
        OSError: The destination cannot be written.
    """
    source = _sqlite_file(url)
    if not source.is_file():
        raise StorageError(f"no database at {source}")
    destination = destination.absolute()
    if destination.is_dir():
        destination = destination / f"imactor-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.sqlite3"
    _copy(source, destination)
    return _summary(destination)


def restore(source: Path, url: str) -> tuple[BackupSummary, Path | None]:
    """Replace the SQLite database at `url` with the backup `source`; returns what was restored
    and where the previous database was kept (None: there was none). No server may run on it.

    Raises:
        StorageError: Not a SQLite URL, or `source` is not a sound imactor database.
        OSError: A file cannot be read or written.
    """
    target = _sqlite_file(url)
    source = source.absolute()
    if not source.is_file():
        raise StorageError(f"no backup at {source}")
    _check_backup(source)
    private_directory(target.parent)
    staged = target.with_name(f".{target.name}.restore-{os.getpid()}")
    _copy(source, staged)
    kept = None
    if target.exists():
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        kept = target.with_name(f"{target.name}.before-restore-{stamp}")
        for path in sqlite_files(target):  # the database with its own WAL, never apart
            if path.exists():
                path.rename(Path(f"{kept}{path.name.removeprefix(target.name)}"))
    staged.rename(target)
    return _summary(target), kept


def _sqlite_file(url: str) -> Path:
    path = sqlite_path(url)
    if path is None:
        raise StorageError(
            "backup and restore here are for SQLite; back up PostgreSQL with pg_dump and restore it "
            "with pg_restore (docs/operations.md)"
        )
    return path.absolute()


def _copy(source: Path, destination: Path) -> None:
    """SQLite's backup API from `source` into a new private file, renamed to `destination`."""
    partial = destination.with_name(f".{destination.name}.partial-{os.getpid()}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, PRIVATE_FILE_MODE)
    os.close(fd)
    try:
        reader = sqlite3.connect(f"{source.as_uri()}?mode=ro", uri=True)
        try:
            writer = sqlite3.connect(partial, isolation_level=None)
            try:
                # pages=-1: the whole database in one step, hence from one read snapshot. Steps
                # would restart whenever the server commits in between, forever under load.
                reader.backup(writer, pages=-1)
                writer.execute("PRAGMA journal_mode = DELETE")  # one self-contained file
                _quick_check(writer, destination)
            finally:
                writer.close()
        finally:
            reader.close()
        with open(partial, "rb") as f:
            os.fsync(f.fileno())
        partial.rename(destination)
    except sqlite3.Error as exc:
        raise StorageError(f"backup of {source} failed: {exc}") from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        with contextlib.suppress(FileNotFoundError):
            Path(f"{partial}-journal").unlink()


def _check_backup(source: Path) -> None:
    """A backup to restore must be a sound database with imactor's schema."""
    try:
        connection = sqlite3.connect(f"{source.as_uri()}?mode=ro", uri=True)
        try:
            _quick_check(connection, source)
            connection.execute("SELECT version FROM schema_version").fetchone()
        finally:
            connection.close()
    except sqlite3.Error as exc:
        raise StorageError(f"{source} is not an imactor database: {exc}") from exc


def _quick_check(connection: sqlite3.Connection, name: Path) -> None:
    verdict = connection.execute("PRAGMA quick_check").fetchall()
    if verdict != [("ok",)]:
        raise StorageError(f"{name}: the database is damaged: {verdict[:3]}")


def _summary(path: Path) -> BackupSummary:
    connection = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    try:
        rows = {}
        for table in _SUMMARY_TABLES:
            with contextlib.suppress(sqlite3.OperationalError):  # an older schema may lack one
                rows[table] = connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    finally:
        connection.close()
    return BackupSummary(path, path.stat().st_size, rows)
