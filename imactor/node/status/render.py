"""The status document as `imactor status` draws it (`--json` prints the document instead)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from imactor.humanize import duration, size


def format_status(document: Mapping[str, Any]) -> str:
    """The status document as a short readable tree: the node, its supervisor and workers, then
    the totals. A worker's own document (no ``supervisor`` entry) hangs its workers off the node."""
    node, totals = document["node"], document["totals"]
    lines = [
        f"node {node['domain']}  imactor {node['version']}  pid {node['pid']}  up {duration(node['uptime'])}"
    ]
    indent = ""
    supervisor = document.get("supervisor")
    if supervisor is not None:
        membership = supervisor.get("membership", {})
        live = ", ".join(map(str, membership.get("live_workers", []))) or "none"
        lines.append(
            f"└── {supervisor['title']}  pid {supervisor['pid']}  rss {size(supervisor['rss_bytes'])}"
            f"  restarts {supervisor['restarts_total']}"
            f"  membership epoch {membership.get('epoch', 0)}: live {live}"
        )
        indent = "    "
    workers = document["workers"]
    for number, worker in enumerate(workers, 1):
        branch = "└──" if number == len(workers) else "├──"
        pid = "-" if worker["pid"] is None else worker["pid"]
        lines.append(
            f"{indent}{branch} worker {worker['index']}  {worker['state']}  pid {pid}"
            f"  up {duration(worker['uptime'])}  restarts {worker['restarts']}"
            f"  rss {size(worker['rss_bytes'])}  sessions {worker['sessions']['count']}"
            f"  users {worker['users']}  rooms {worker['rooms']}"
        )
    if supervisor is not None:
        lines += _cluster_lines(supervisor.get("membership", {}))
    lines += _component_lines(workers)
    stanzas, mailboxes = totals["stanzas"], totals["mailboxes"]
    by_state: dict[str, int] = {}
    for worker in workers:
        for state, count in worker["sessions"]["by_state"].items():
            by_state[state] = by_state.get(state, 0) + count
    states = ", ".join(f"{state} {count}" for state, count in sorted(by_state.items()))
    routed = sum(worker.get("router", {}).get("routed_total", 0) for worker in workers)
    bounced = sum(worker.get("router", {}).get("bounced_total", 0) for worker in workers)
    lines += [
        f"totals: {totals['workers']} worker(s)  sessions {totals['sessions']}"
        + (f" ({states})" if states else "")
        + f"  users {totals['users']}  rooms {totals['rooms']}  rss {size(totals['rss_bytes'])}",
        f"  stanzas in {stanzas['in_total']} ({stanzas['in_per_second']:.1f}/s)"
        f"  out {stanzas['out_total']} ({stanzas['out_per_second']:.1f}/s)"
        f"  routed {routed}  bounced {bounced}",
        f"  mailboxes: largest {mailboxes['max']}, queued {mailboxes['total']}",
    ]
    for worker in workers:  # the XEP-0065 proxy, on the worker that runs it
        if proxy := worker.get("proxy65"):
            lines.append(
                f"  file transfer proxy (worker {worker['index']}): pending {proxy['pending']}"
                f"  active {proxy['active']}  streams {proxy['streams_total']}"
                f"  relayed {size(proxy['bytes_total'])}  refused {proxy['refused_total']}"
            )
    return "\n".join(lines)


def _cluster_lines(membership: Mapping[str, Any]) -> list[str]:
    """A cluster node's view of every node (docs/cluster.md); nothing for a single node."""
    nodes = membership.get("nodes")
    if not nodes:
        return []
    failures = membership.get("renewal_failures", 0)
    lines = [
        f"cluster: node {membership.get('node')} (id {membership.get('node_id')}), "
        f"{len(nodes)} live node(s), renewal failures {failures}"
    ]
    for node in nodes:
        workers = ",".join(map(str, node.get("live_workers", []))) or "-"
        lines.append(
            f"  node {node['name']} (id {node['id']})  workers {workers}  sessions {node['sessions']}"
            f"  lease age {node['lease_age']:.1f}s"
        )
    return lines


def _component_lines(workers: list[dict[str, Any]]) -> list[str]:
    """The external components (docs/components.md) and the worker holding each; nothing when
    none is configured."""
    held = {
        domain: worker["index"]
        for worker in workers
        for domain in worker.get("components", {}).get("here", [])
    }
    if not held and not any("components" in worker for worker in workers):
        return []
    listed = (
        ", ".join(f"{domain} (worker {index})" for domain, index in sorted(held.items())) or "none connected"
    )
    return [f"components: {listed}"]

