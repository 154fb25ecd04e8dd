"""A latency histogram cheap enough for the message path: fixed buckets, counts and a sum.

The worker keeps a few (how long routing a client's message takes, how long a storage commit
takes); its status document carries their snapshots, and the node's metrics endpoint
(`imactor.node.metrics`) shows them as Prometheus histograms, per worker. One observation is a
bisection over 15 bounds and three additions: under a microsecond.
"""

from __future__ import annotations

from bisect import bisect_left

#: Upper bounds in seconds, from half a millisecond (a message handed to a local actor) to ten
#: seconds (a commit behind a stalled disk).
BOUNDS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


class LatencyHistogram:
    __slots__ = ("_counts", "count", "sum")

    def __init__(self) -> None:
        self._counts = [0] * (len(BOUNDS) + 1)  # the last one: above every bound
        self.count = 0
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self._counts[bisect_left(BOUNDS, seconds)] += 1
        self.count += 1
        self.sum += seconds

    def snapshot(self) -> dict[str, object]:
        """Cumulative counts per upper bound (Prometheus' `le`), the last one "+Inf"."""
        cumulative, buckets = 0, []
        for bound, count in zip((*BOUNDS, float("inf")), self._counts, strict=True):
            cumulative += count
            buckets.append(["+Inf" if bound == float("inf") else bound, cumulative])
        return {"buckets": buckets, "count": self.count, "sum": round(self.sum, 6)}
