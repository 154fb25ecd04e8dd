"""The node's Prometheus metrics: its status document (`imactor.node.node_status`) in the text
exposition format, rendered by the official client library.

Why from the status document rather than the library's multiprocess mode (a memory-mapped file
per process that every process writes to): the node supervisor already gathers every worker's
counters, gauges and latency histograms once per status request, over the workers' status
sockets, and merges them; a scrape is one more such request. Nothing on the message path writes
to shared files, a restarted worker leaves no stale file behind, and `imactor status` and the
metrics can never disagree. Each worker's figures carry its label (``worker="0"``); counters are
the worker's since it started (a restart starts them again, which Prometheus' `rate()` handles as
a counter reset).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

#: (metric name, help, where in a worker's entry: the keys down to the number)
WORKER_GAUGES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("imactor_sessions", "Client sessions of the worker.", ("sessions", "count")),
    ("imactor_user_actors", "Account actors running in the worker.", ("users",)),
    ("imactor_room_actors", "Room actors running in the worker.", ("rooms",)),
    ("imactor_mailbox_depth_max", "The deepest session mailbox of the worker.", ("mailboxes", "max")),
    ("imactor_mailbox_depth", "Messages waiting in the worker's session mailboxes.", ("mailboxes", "total")),
    ("imactor_worker_resident_bytes", "Resident memory of the worker process.", ("rss_bytes",)),
)
WORKER_COUNTERS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("imactor_stanzas_received", "Stanzas received from clients.", ("stanzas", "in_total")),
    ("imactor_stanzas_sent", "Stanzas sent to clients.", ("stanzas", "out_total")),
    ("imactor_routed", "Stanzas the router delivered to an actor.", ("router", "routed_total")),
    ("imactor_bounced", "Stanzas the router bounced with an error.", ("router", "bounced_total")),
    ("imactor_worker_restarts", "Times the node supervisor restarted the worker.", ("restarts",)),
    ("imactor_mesh_frames_in", "Frames received from the node's other workers.", ("mesh", "frames_in")),
    ("imactor_mesh_frames_out", "Frames sent to other workers.", ("mesh", "frames_out")),
    ("imactor_mesh_dropped", "Frames the mesh could not deliver.", ("mesh", "dropped")),
    ("imactor_mesh_decode_errors", "Frames that did not decode.", ("mesh", "decode_errors")),
    ("imactor_activations", "Actors started on demand.", ("registry", "activations_total")),
    ("imactor_storage_transactions", "Write transactions run (group commits).", ("storage", "transactions")),
    ("imactor_storage_writes", "Writes run in those transactions.", ("storage", "writes")),
    ("imactor_storage_deferred_batches", "SQLite: write batches that found another process writing "
     "and waited for their turn in a thread.", ("storage", "deferred_batches")),
)
WORKER_HISTOGRAMS: tuple[tuple[str, str, str], ...] = (
    ("imactor_route_seconds", "Time a session takes to route a client's message to its recipient "
     "(its actor's mailbox, or the link to the worker holding it).", "route_seconds"),
    ("imactor_storage_commit_seconds", "Time one batch of writes takes to commit.", "storage_commit_seconds"),
)  # fmt: skip


Family = GaugeMetricFamily | CounterMetricFamily


def render(document: Mapping[str, Any]) -> bytes:
    """The metrics of a node status document, in Prometheus' text format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_DocumentCollector(document))
    return generate_latest(registry)


class _DocumentCollector:
    def __init__(self, document: Mapping[str, Any]) -> None:
        self._document = document

    def collect(self) -> Iterator[Metric]:
        workers: Sequence[Mapping[str, Any]] = self._document.get("workers", [])
        for name, text, path in WORKER_GAUGES:
            yield _per_worker(GaugeMetricFamily(name, text, labels=["worker"]), workers, path)
        up = GaugeMetricFamily("imactor_worker_up", "1 when the worker runs and answered the status request.",
                               labels=["worker"])  # fmt: skip
        for worker in workers:
            up.add_metric([str(worker["index"])], 1.0 if worker.get("state") == "running" else 0.0)
        yield up
        for name, text, path in WORKER_COUNTERS:
            yield _per_worker(CounterMetricFamily(name, text, labels=["worker"]), workers, path)
        for name, text, key in WORKER_HISTOGRAMS:
            histogram = HistogramMetricFamily(name, text, labels=["worker"])
            for worker in workers:
                snapshot = worker.get("latency", {}).get(key)
                if snapshot:
                    buckets = [(str(bound), float(count)) for bound, count in snapshot["buckets"]]
                    histogram.add_metric([str(worker["index"])], buckets, float(snapshot["sum"]))
            yield histogram
        yield from self._node()

    def _node(self) -> Iterator[Metric]:
        supervisor = self._document.get("supervisor", {})
        restarts = CounterMetricFamily("imactor_node_restarts", "Worker restarts by the node supervisor.")
        restarts.add_metric([], float(supervisor.get("restarts_total", 0)))
        yield restarts
        uptime = GaugeMetricFamily("imactor_node_uptime_seconds", "Seconds since the node started.")
        uptime.add_metric([], float(self._document.get("node", {}).get("uptime", 0.0)))
        yield uptime
        membership = supervisor.get("membership", {})
        epoch = GaugeMetricFamily("imactor_membership_epoch", "The membership epoch this node announced.")
        epoch.add_metric([], float(membership.get("epoch", 0)))
        yield epoch
        nodes = membership.get("nodes")
        if nodes is not None:  # a cluster node: the live nodes it sees, with their lease ages
            live = GaugeMetricFamily("imactor_cluster_nodes", "Live nodes of the cluster.")
            live.add_metric([], float(len(nodes)))
            yield live
            text = "Seconds since each live node renewed its lease."
            age = GaugeMetricFamily("imactor_cluster_lease_age_seconds", text, labels=["node"])
            for node in nodes:
                age.add_metric([str(node["name"])], float(node.get("lease_age", 0.0)))
            yield age


def _per_worker(family: Family, workers: Sequence[Mapping[str, Any]], path: tuple[str, ...]) -> Family:
    """`family` with a sample per worker whose entry has a number at `path`."""
    for worker in workers:
        value = _number(worker, path)
        if value is not None:
            family.add_metric([str(worker["index"])], value)
    return family


def _number(entry: Mapping[str, Any], path: tuple[str, ...]) -> float | None:
    value: Any = entry
    for key in path:
        if not isinstance(value, Mapping) or key not in value:
            return None
        value = value[key]
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
