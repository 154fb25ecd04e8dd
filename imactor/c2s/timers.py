"""The session timers of a worker: one task that ticks for every session.

Each client stream has deadlines: authenticate and bind within `[limits] handshake_timeout`, be
pinged after `idle_timeout` of silence and cut off `ping_timeout` after an unanswered ping, and
(XEP-0198) be asked for an ack once the stream goes quiet with stanzas unacknowledged. Arming a
trio deadline around every read and every quiet write costs each message a cancel scope and
often a timer expiry, and most messages arrive alone. Here one task wakes every `tick` seconds
and lets each session compare its own timestamps (`SessionActor.tick`): a few attribute reads
per session per tick, whatever the traffic.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from imactor.server.services import Services

#: Longest tick: XEP-0198's idle ack request goes out one to two ticks after the last stanza.
TICK = 1.0


def tick_for(*timeouts: float) -> float:
    """The tick: `TICK`, or a quarter of the shortest timeout (tests use timeouts of a second)."""
    return min(TICK, *(timeout / 4 for timeout in timeouts))


async def run_session_timers(
    services: Services, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    task_status.started()
    while True:
        limits = services.config.limits  # re-read: a reload may change them
        await trio.sleep(tick_for(limits.handshake_timeout, limits.idle_timeout, limits.ping_timeout))
        now = trio.current_time()
        for session in list(services.sessions):
            session.tick(now)
