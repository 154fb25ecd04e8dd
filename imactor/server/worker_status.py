"""What one worker tells the status socket (`imactor.node.status`): its `statistics()` records.

The walk over the sessions is O(sessions); the stanza counters are walked once per
`imactor.node.status.SAMPLE_INTERVAL`, the rest once per status request.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import TYPE_CHECKING

from imactor.node.status import WorkerStatus

if TYPE_CHECKING:
    from imactor.server.worker_services import Services


class WorkerStatusSource:
    """The `StatusSource` of the worker that owns `services`."""

    def __init__(self, services: Services) -> None:
        self._services = services

    def stanza_totals(self) -> tuple[int, int]:
        services = self._services
        stanzas_in, stanzas_out = services.closed_stanzas_in, services.closed_stanzas_out
        for session in services.sessions:
            stats = session.statistics()
            stanzas_in += stats.stanzas_in
            stanzas_out += stats.stanzas_out
        return stanzas_in, stanzas_out

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
            stanzas_in_total=services.closed_stanzas_in + sum(stats.stanzas_in for stats in sessions),
            stanzas_out_total=services.closed_stanzas_out + sum(stats.stanzas_out for stats in sessions),
            supervisors=tuple(s.statistics() for s in supervisors if s is not None),
            records={"router": services.router.statistics(), "registry": registry},
        )
