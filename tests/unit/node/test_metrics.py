"""The node's status document as Prometheus metrics (`imactor.node.metrics`), read back with
the client library's parser."""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from imactor.histogram import BOUNDS, LatencyHistogram
from imactor.node.metrics import render


def worker(index: int, *, state: str = "running", routes: tuple[float, ...] = ()) -> dict[str, Any]:
    histogram = LatencyHistogram()
    for seconds in routes:
        histogram.observe(seconds)
    return {
        "index": index, "state": state, "restarts": 1, "rss_bytes": 1000 + index,
        "sessions": {"count": 3 + index}, "users": 2, "rooms": 1, "mailboxes": {"max": 4, "total": 7},
        "stanzas": {"in_total": 10, "out_total": 20}, "router": {"routed_total": 5, "bounced_total": 1},
        "latency": {"route_seconds": histogram.snapshot()},
    }  # fmt: skip


def parse(document: dict[str, Any]) -> dict[str, list[Any]]:
    text = render(document).decode()
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def test_each_worker_has_its_label_and_a_worker_that_is_down_reports_what_it_has() -> None:
    down = {"index": 1, "state": "unresponsive", "rss_bytes": 5, "restarts": 2}
    families = parse({"workers": [worker(0), down], "supervisor": {"restarts_total": 2}})
    assert {(s.labels["worker"], s.value) for s in families["imactor_sessions"]} == {("0", 3.0)}
    assert {(s.labels["worker"], s.value) for s in families["imactor_worker_up"]} == {("0", 1.0), ("1", 0.0)}
    assert {(s.labels["worker"], s.value) for s in families["imactor_worker_resident_bytes"]} == {
        ("0", 1000.0), ("1", 5.0)
    }
    restarts = families["imactor_worker_restarts"]
    assert sorted(s.value for s in restarts if s.name == "imactor_worker_restarts_total") == [1.0, 2.0]
    assert families["imactor_node_restarts"][0].value == 2.0


def test_latency_buckets_are_cumulative_up_to_inf() -> None:
    routes = (0.0001, 0.003, 0.003, 20.0)
    samples = parse({"workers": [worker(0, routes=routes)]})["imactor_route_seconds"]
    buckets = {s.labels["le"]: s.value for s in samples if s.name == "imactor_route_seconds_bucket"}
    assert len(buckets) == len(BOUNDS) + 1
    assert buckets["0.0005"] == 1.0
    assert buckets["0.005"] == 3.0
    assert buckets["10.0"] == 3.0
    assert buckets["+Inf"] == 4.0
    count = next(s for s in samples if s.name == "imactor_route_seconds_count")
    assert count.value == 4.0


def test_a_cluster_node_reports_the_nodes_it_sees_and_their_lease_ages() -> None:
    membership = {"epoch": 7, "nodes": [{"name": "im1", "lease_age": 0.4}, {"name": "im2", "lease_age": 1.5}]}
    families = parse({"workers": [worker(0)], "supervisor": {"membership": membership}})
    assert families["imactor_membership_epoch"][0].value == 7.0
    assert families["imactor_cluster_nodes"][0].value == 2.0
    ages = {s.labels["node"]: s.value for s in families["imactor_cluster_lease_age_seconds"]}
    assert ages == {"im1": 0.4, "im2": 1.5}
