"""Overview: the node as ``imactor status`` shows it (the same status document, merged by the node
supervisor from every worker's own), plus the account counts. Read-only; reload for fresh figures."""

from __future__ import annotations

from typing import Any

from imactor.console import html
from imactor.console.html import esc
from imactor.console.pages.base import Context, Page, no_change
from imactor.humanize import duration, size


async def view(context: Context) -> str:
    document = await context.access.document()
    accounts = context.access.storage.accounts
    registered, disabled = await accounts.count(), await accounts.count(disabled=True)
    node, totals, supervisor = document["node"], document["totals"], document.get("supervisor", {})
    workers: list[dict[str, Any]] = document["workers"]
    stanzas = totals["stanzas"]
    running = sum(1 for worker in workers if worker["state"] == "running")
    stats = [
        (f"{totals['sessions']}", "sessions online"),
        (f"{running} / {len(workers)}", "workers running"),
        (f"{stanzas['in_per_second']:.1f} / {stanzas['out_per_second']:.1f}", "stanzas per second in / out"),
        (f"{registered}", f"accounts ({disabled} disabled)"),
        (f"{totals['users']} / {totals['rooms']}", "user and room actors"),
        (size(totals["rss_bytes"]), "memory (resident)"),
    ]
    cards = "".join(
        f'<div class="stat"><b>{esc(value)}</b><span>{esc(label)}</span></div>' for value, label in stats
    )
    membership = supervisor.get("membership", {})
    node_line = (
        f"{esc(node['domain'])} · imactor {esc(node['version'])} · pid {esc(node['pid'])} · "
        f"up {esc(duration(node['uptime']))} · restarts {esc(supervisor.get('restarts_total', 0))} · "
        f"membership epoch {esc(membership.get('epoch', 0))}"
    )
    rows = [
        [
            esc(worker["index"]),
            html.badge(worker["state"], "ok" if worker["state"] == "running" else "bad"),
            esc("-" if worker["pid"] is None else worker["pid"]),
            esc(duration(worker["uptime"])),
            esc(worker["restarts"]),
            esc(worker["sessions"]["count"]),
            esc(f"{worker['users']} / {worker['rooms']}"),
            esc(f"{worker['stanzas']['in_per_second']:.1f} / {worker['stanzas']['out_per_second']:.1f}"),
            esc(f"{worker['mailboxes']['max']}"),
            esc(size(worker["rss_bytes"])),
        ]
        for worker in workers
    ]
    body = f'<div class="grid">{cards}</div>'
    body += html.section("Node", f"<p>{node_line}</p>")
    body += html.section(
        "Workers",
        html.table(
            [
                "Worker",
                "State",
                "PID",
                "Up",
                "Restarts",
                "Sessions",
                "Users / rooms",
                "Stanzas/s in / out",
                "Largest mailbox",
                "Memory",
            ],
            rows,
        ),
    )
    nodes = membership.get("nodes")
    if nodes:
        cluster_rows = [
            [
                esc(n["name"]),
                esc(n["id"]),
                esc(",".join(map(str, n.get("live_workers", []))) or "-"),
                esc(n["sessions"]),
                esc(f"{n['lease_age']:.1f} s"),
            ]
            for n in nodes
        ]
        body += html.section(
            "Cluster", html.table(["Node", "Id", "Live workers", "Sessions", "Lease age"], cluster_rows)
        )
    return body


PAGE = Page("/", "Overview", view, no_change)
