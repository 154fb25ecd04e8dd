"""What one worker tells the status socket (`imactor.node.status`): its `statistics()` records.

`worker_status` walks every session (O(sessions)), once per status request; `stanza_totals`,
sampled every second, reads two counters the sessions bump.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import TYPE_CHECKING

from imactor.node.status import WorkerStatus

if TYPE_CHECKING:
    from imactor.proxy65.relay import Proxy
    from imactor.server.services import Services


class WorkerStatusSource:
    """The `StatusSource` of the worker that owns `services`."""

    def __init__(self, services: Services, proxy65: Proxy | None = None) -> None:
        self._services = services
        self._proxy65 = proxy65  #: the XEP-0065 proxy's SOCKS5 side, on the worker that runs it

    def stanza_totals(self) -> tuple[int, int]:
        return self._services.stanzas_in_total, self._services.stanzas_out_total

    def worker_status(self) -> WorkerStatus:
        services = self._services
        sessions = [session.statistics() for session in services.sessions]
        depths = [stats.mailbox.size for stats in sessions]
        registry = services.registry.statistics()
        supervisors = (services.worker_supervisor, services.user_supervisor, services.session_supervisor)
        return WorkerStatus(
            index=services.worker_index,
            pid=os.getpid(),
            started_at=services.started_at,
            restarts=0,  # the worker runs in the supervisor's process: nothing restarts it yet
            state="running",
            sessions_by_state=dict(Counter(stats.state for stats in sessions)),
            users=registry.actors_by_kind.get("user", 0),
            rooms=registry.actors_by_kind.get("room", 0),
            mailbox_depth_max=max(depths, default=0),
            mailbox_depth_total=sum(depths),
            stanzas_in_total=services.stanzas_in_total,
            stanzas_out_total=services.stanzas_out_total,
            supervisors=tuple(s.statistics() for s in supervisors if s is not None),
            records=self._records(registry),
        )

    def _records(self, registry: object) -> dict[str, object]:
        services = self._services
        records: dict[str, object] = {"router": services.router.statistics(), "registry": registry}
        records["storage"] = services.storage.statistics()  # the group commit's batches
        records["latency"] = {
            "route_seconds": services.route_latency.snapshot(),
            "storage_commit_seconds": services.storage.commit_latency(),
        }
        if services.mesh is not None:
            records["mesh"] = services.mesh.statistics()
            records["link"] = services.mesh.link.statistics()
        if self._proxy65 is not None:
            records["proxy65"] = self._proxy65.statistics()
        for name, statistics in services.status_records.items():
            records[name] = statistics()
        return records
