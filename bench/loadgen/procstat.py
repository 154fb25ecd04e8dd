"""CPU time and resident memory of process trees, read from /proc (Linux; no psutil)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode()
    except OSError:
        return None
    # comm (field 2) may hold spaces and parentheses: split after the last ")".
    return data[data.rindex(")") + 2 :].split()


def children_map() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            fields = _stat_fields(int(name))
            if fields is not None:
                tree.setdefault(int(fields[1]), []).append(int(name))
    return tree


def process_tree(root: int) -> list[int]:
    """`root` and all its descendants alive now."""
    tree = children_map()
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(tree.get(pid, ()))
    return found


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (its reaped children excluded), in seconds."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14, 15 of proc(5)


def rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE_SIZE
    except OSError:
        return 0


@dataclass(frozen=True)
class Sample:
    wall: float
    cpu: float  # seconds, summed over the processes
    rss: int  # bytes, summed over the processes
    processes: int


def sample(pids: Iterable[int], wall: float) -> Sample:
    pids = list(pids)
    return Sample(wall, sum(cpu_seconds(p) for p in pids), sum(rss_bytes(p) for p in pids), len(pids))


def tree_sample(root: int, wall: float) -> Sample:
    return sample(process_tree(root), wall)


def usage(before: Sample, after: Sample) -> dict[str, float]:
    """CPU seconds used between two samples, and as a share of one core (1.0 = one core busy)."""
    seconds = max(after.cpu - before.cpu, 0.0)
    elapsed = max(after.wall - before.wall, 1e-9)
    return {"cpu_seconds": round(seconds, 3), "cpu_cores": round(seconds / elapsed, 3)}
