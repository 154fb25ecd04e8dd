"""The file store of XEP-0363 uploads: one directory, shared by every worker of the node.

Layout (every directory 0700, every file 0600; nothing a client sends becomes a path)::

    <path>/secret                     the key of the PUT URLs (tokens.py)
    <path>/<slot id>/meta.json        the slot: owner, file name, size, content type, times
    <path>/<slot id>/data             the file, once uploaded whole
    <path>/<slot id>/data.part        an upload in progress (created O_EXCL: one PUT at a time)
    <path>/owners/<owner key>/<slot id>   an empty mark: the owner's slots, for the quota

A slot id is 128 random bits in base64url (22 characters, `SLOT_ID`); a request naming anything
else is refused before any file is touched, so ``..``, encoded separators and the like never
reach the file system. The owner key is a SHA-256 of the bare JID, so the directory names no
account.

Every function here does blocking file I/O: callers run them in a thread (`trio.to_thread`).
Several workers (or nodes on a shared file system) may use the store at once: a slot is written
by the one request that created it, an upload is made visible with ``link`` (atomic, and it
fails if the data is already there), and the clean-up tolerates files that vanish under it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

SLOT_ID = re.compile(r"[A-Za-z0-9_-]{22}")
OWNERS = "owners"
DATA, PART, META = "data", "data.part", "meta.json"


def new_slot_id() -> str:
    return secrets.token_urlsafe(16)


def owner_key(bare_jid: str) -> str:
    return hashlib.sha256(bare_jid.encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Slot:
    slot_id: str
    owner: str  #: the uploader's bare JID
    filename: str
    size: int
    content_type: str
    created: float  #: Unix time of the slot request
    put_expires: int  #: the PUT URL is valid until then (Unix seconds)


@dataclass(frozen=True, slots=True)
class Usage:
    used: int  #: bytes of the owner's stored files and of its slots still open for a PUT
    frees_at: float | None  #: when the first of those stops counting (a file expires, a slot closes)


class UploadStore:
    def __init__(self, root: Path, *, max_age: float | None) -> None:
        self.root = root
        self.max_age = max_age  #: seconds a file is kept; None: for ever

    # ---- slots ---------------------------------------------------------------------------------

    def reserve(self, slot: Slot) -> None:
        """Record a new slot (its size counts towards the owner's quota from now on)."""
        directory = self.root / slot.slot_id
        _mkdir(self.root)
        directory.mkdir(mode=0o700)  # a fresh random id: an existing one would be a bug
        _write_private(directory / META, json.dumps(asdict(slot)).encode())
        marks = self.root / OWNERS / owner_key(slot.owner)
        _mkdir(marks)
        _write_private(marks / slot.slot_id, b"")

    def slot(self, slot_id: str) -> Slot | None:
        """The slot of a well-formed id, if it exists."""
        if not SLOT_ID.fullmatch(slot_id):
            return None
        try:
            raw = json.loads((self.root / slot_id / META).read_bytes())
            return Slot(**raw)
        except (OSError, ValueError, TypeError):
            return None

    def usage(self, owner: str, now: float) -> Usage:
        """What counts towards `owner`'s quota now: stored files not expired, and slots whose
        PUT URL is still valid (a client may be uploading)."""
        used, frees_at = 0, None
        for slot_id in _names(self.root / OWNERS / owner_key(owner)):
            slot = self.slot(slot_id)
            if slot is None:
                continue
            ends = self._counts_until(slot)
            if ends is not None and ends <= now:
                continue
            used += slot.size
            if ends is not None:
                frees_at = ends if frees_at is None else min(frees_at, ends)
        return Usage(used, frees_at)

    def _counts_until(self, slot: Slot) -> float | None:
        if self.is_stored(slot.slot_id):
            return None if self.max_age is None else slot.created + self.max_age
        return float(slot.put_expires)

    def expired(self, slot: Slot, now: float) -> bool:
        return self.max_age is not None and slot.created + self.max_age <= now

    # ---- files ---------------------------------------------------------------------------------

    def data_path(self, slot_id: str) -> Path:
        return self.root / slot_id / DATA

    def is_stored(self, slot_id: str) -> bool:
        return self.data_path(slot_id).is_file()

    def open_part(self, slot_id: str) -> int:
        """A descriptor to write the upload to; FileExistsError: another PUT is writing it."""
        return os.open(self.root / slot_id / PART, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)

    def commit(self, slot_id: str) -> bool:
        """Make the written part the slot's file; False: the file was already there."""
        directory = self.root / slot_id
        try:
            os.link(directory / PART, directory / DATA)
        except FileExistsError:
            return False
        finally:
            (directory / PART).unlink(missing_ok=True)
        return True

    def discard_part(self, slot_id: str) -> None:
        (self.root / slot_id / PART).unlink(missing_ok=True)

    # ---- clean-up ------------------------------------------------------------------------------

    def sweep(self, now: float, *, abandoned_after: float) -> int:
        """Remove expired files, and slots never uploaded `abandoned_after` seconds after their
        PUT URL expired; returns how many slots went."""
        removed = 0
        for slot_id in list(_names(self.root)):  # removing while the directory is read
            if not SLOT_ID.fullmatch(slot_id):
                continue
            slot = self.slot(slot_id)
            if slot is None:
                continue  # being created (no meta yet), or not ours
            if self.is_stored(slot_id):
                gone = self.expired(slot, now)
            else:
                gone = slot.put_expires + abandoned_after <= now
            if gone:
                self._remove(slot)
                removed += 1
        return removed

    def _remove(self, slot: Slot) -> None:
        (self.root / OWNERS / owner_key(slot.owner) / slot.slot_id).unlink(missing_ok=True)
        shutil.rmtree(self.root / slot.slot_id, ignore_errors=True)


def _names(directory: Path) -> Iterator[str]:
    with contextlib.suppress(FileNotFoundError, NotADirectoryError), os.scandir(directory) as entries:
        for entry in entries:
            yield entry.name


def _mkdir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
