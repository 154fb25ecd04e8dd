"""The status document's shape: what a worker reports (`WorkerStatus`) and the JSON built from it.

The document::

    node     domain, version, pid, started_at (Unix time), uptime (seconds)
    workers  one object per worker: index, pid, state, started_at, uptime, restarts, rss_bytes,
             sessions {count, by_state}, users, rooms, mailboxes {max, total} (queued messages),
             stanzas {in_total, out_total, in_per_second, out_per_second}, supervisors [...],
             and the worker's named records (router, registry): each a `statistics()` record
    totals   sums over the workers (the largest mailbox for mailboxes.max)

The node supervisor adds ``supervisor`` (`imactor.node.node_status`). Each entry is built here
(`node_entry`, `worker_entry`, `empty_worker_entry`, `sum_workers`), so that a worker's own
document and the supervisor's merged one have one shape.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import os
import resource
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import imactor


@dataclass(frozen=True, slots=True)
class WorkerStatus:
    """What one worker reports about itself.

    Attributes:
        index: The worker's number, from 0.
        pid: Its process id.
        started_at: When it started (Unix time).
        restarts: How many times its supervisor restarted it.
        state: ``running``, ``stopping``, ...
        sessions_by_state: Open client sessions, counted by state.
        users: Live user actors.
        rooms: Live room actors.
        mailbox_depth_max: Messages queued in the fullest session mailbox.
        mailbox_depth_total: Messages queued in all session mailboxes.
        stanzas_in_total: Stanzas read from clients since the worker started.
        stanzas_out_total: Stanzas written to clients since the worker started.
        supervisors: The `statistics()` records of the worker's supervisors.
        records: Other `statistics()` records, by name (``router``, ``registry``).
    """

    index: int
    pid: int
    started_at: float
    restarts: int
    state: str
    sessions_by_state: Mapping[str, int]
    users: int
    rooms: int
    mailbox_depth_max: int
    mailbox_depth_total: int
    stanzas_in_total: int
    stanzas_out_total: int
    supervisors: Sequence[object] = ()
    records: Mapping[str, object] = field(default_factory=dict)


class StatusSource(Protocol):
    """A worker, as the status server sees it."""

    def stanza_totals(self) -> tuple[int, int]:
        """Stanzas in and out since the worker started; sampled every `SAMPLE_INTERVAL` seconds."""
        ...

    def worker_status(self) -> WorkerStatus:
        """The worker's snapshot; taken once per status request."""
        ...


def node_entry(domain: str, started_at: float, now: float) -> dict[str, Any]:
    """The ``node`` entry: this process, its version and uptime."""
    return {
        "domain": domain,
        "version": imactor.__version__,
        "pid": os.getpid(),
        "started_at": started_at,
        "uptime": round(max(0.0, now - started_at), 3),
    }


def rss_bytes(pid: int) -> int:
    """Resident memory of process `pid` (Linux ``/proc``); elsewhere this process's peak, or 0."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        pass
    if pid != os.getpid():
        return 0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB elsewhere


def plain(value: object) -> Any:
    """A `statistics()` record (dataclasses, enums, mappings, sequences) as JSON-ready values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return plain(value.value)
    if isinstance(value, Mapping):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [plain(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None  # strict JSON has no infinity (an unlimited period, say)
    return value


def worker_entry(status: WorkerStatus, rates: tuple[float, float], now: float) -> dict[str, Any]:
    in_rate, out_rate = rates
    entry: dict[str, Any] = {
        "index": status.index,
        "pid": status.pid,
        "state": status.state,
        "started_at": status.started_at,
        "uptime": round(max(0.0, now - status.started_at), 3),
        "restarts": status.restarts,
        "rss_bytes": rss_bytes(status.pid),
        "sessions": {
            "count": sum(status.sessions_by_state.values()),
            "by_state": dict(status.sessions_by_state),
        },
        "users": status.users,
        "rooms": status.rooms,
        "mailboxes": {"max": status.mailbox_depth_max, "total": status.mailbox_depth_total},
        "stanzas": {
            "in_total": status.stanzas_in_total,
            "out_total": status.stanzas_out_total,
            "in_per_second": round(in_rate, 3),
            "out_per_second": round(out_rate, 3),
        },
        "supervisors": [plain(record) for record in status.supervisors],
    }
    for name, record in status.records.items():
        entry.setdefault(name, plain(record))  # a record never hides a field above
    return entry


def empty_worker_entry(index: int, pid: int | None, state: str) -> dict[str, Any]:
    """The entry of a worker that gave no document (down, starting or unresponsive): what the OS
    knows of its process (resident memory), zeros for the rest, in the shape of a full entry."""
    return {
        "index": index,
        "pid": pid,
        "state": state,
        "started_at": None,
        "uptime": 0.0,
        "restarts": 0,
        "rss_bytes": 0 if pid is None else rss_bytes(pid),
        "sessions": {"count": 0, "by_state": {}},
        "users": 0,
        "rooms": 0,
        "mailboxes": {"max": 0, "total": 0},
        "stanzas": {"in_total": 0, "out_total": 0, "in_per_second": 0.0, "out_per_second": 0.0},
        "supervisors": [],
    }


def sum_workers(workers: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The ``totals`` of a document over its worker entries."""
    stanza_keys = ("in_total", "out_total", "in_per_second", "out_per_second")
    return {
        "workers": len(workers),
        "sessions": sum(w["sessions"]["count"] for w in workers),
        "users": sum(w["users"] for w in workers),
        "rooms": sum(w["rooms"] for w in workers),
        "rss_bytes": sum(w["rss_bytes"] for w in workers),
        "mailboxes": {
            "max": max((w["mailboxes"]["max"] for w in workers), default=0),
            "total": sum(w["mailboxes"]["total"] for w in workers),
        },
        "stanzas": {key: round(sum(w["stanzas"][key] for w in workers), 3) for key in stanza_keys},
    }
