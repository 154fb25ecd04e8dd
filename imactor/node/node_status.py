"""The node supervisor's status document: its workers' own documents, merged, plus itself.

Each worker serves its own status socket in the run directory (`rundir.worker_status_path`); the
supervisor serves the configured ``[status] socket``. On each request it asks every live worker
at once (`fetch_status`, a short timeout), takes the worker's entry from each answer and
overwrites what the supervisor knows better: pid, state, restarts, start time and uptime. A
worker that does not answer in time is listed as ``unresponsive`` with its pid and resident
memory; one that is starting, restarting or stopping is listed in that state. Totals are
recomputed over the merged entries, and the supervisor adds its own entry (``supervisor``).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import trio

import imactor
from imactor.node.proctitle import SUPERVISOR_TITLE, worker_title
from imactor.node.rundir import worker_status_path
from imactor.node.status.client import StatusUnavailable, fetch_command, fetch_status
from imactor.node.status.document import empty_worker_entry, rss_bytes, sum_workers
from imactor.node.status.server import CommandHandler
from supervisors import ChildState, ProcessChildStatistics, ProcessSupervisor


class NodeMembership(Protocol):
    """What the status needs of the membership: a single node's announcer, or a cluster member."""

    @property
    def live(self) -> tuple[int, ...]:
        """The indices of this node's live workers."""
        ...

    def local_home(self, kind: str, key: str) -> int | None: ...

    def document(self) -> dict[str, object]: ...


#: Seconds a worker has to answer the supervisor's status request.
WORKER_TIMEOUT = 2.0


class NodeStatus:
    """Builds the node's status document (see the module doc); `document` is the provider that
    the supervisor's `StatusServer` calls once per request.

    Args:
        domain: The XMPP domain, for the ``node`` entry.
        supervisor: The process supervisor of the workers.
        workers: Child id → worker index.
        run_dir: The node's run directory (the workers' status sockets).
        membership: The announcer, for the epoch and the live workers it announced.
    """

    def __init__(
        self,
        *,
        domain: str,
        supervisor: ProcessSupervisor,
        workers: Mapping[str, int],
        run_dir: Path,
        membership: NodeMembership,
        worker_timeout: float = WORKER_TIMEOUT,
    ) -> None:
        self.domain = domain
        self.started_at = time.time()
        self._supervisor = supervisor
        self._workers = dict(workers)
        self._run_dir = run_dir
        self._membership = membership
        self._worker_timeout = worker_timeout

    def commands(self) -> dict[str, CommandHandler]:
        """Administrative commands, forwarded to the worker that owns their object: a room's
        commands to the room's home worker under the announced membership; ``reload-modules``
        to every live worker (their answers in a list); ``announce`` and ``end-sessions`` to
        one live worker, which reaches the others; ``wake-reminders`` to worker 0."""

        async def to_room_home(arguments: Mapping[str, Any]) -> Mapping[str, Any]:
            room = arguments.get("room")
            if not isinstance(room, str) or not room:
                return {"error": "a room command needs a room name"}
            index = self._membership.local_home("room", room)
            if index is None:
                return {
                    "error": "no worker of this node hosts the room (it runs on another node, or none runs)"
                }
            try:
                return await fetch_command(worker_status_path(self._run_dir, index), arguments)
            except StatusUnavailable as exc:
                return {"error": str(exc)}

        async def to_every_worker(arguments: Mapping[str, Any]) -> Mapping[str, Any]:
            answers: list[Mapping[str, Any]] = []

            async def ask(index: int) -> None:
                try:
                    answers.append(await fetch_command(worker_status_path(self._run_dir, index), arguments))
                except StatusUnavailable as exc:
                    answers.append({"worker": index, "error": str(exc)})

            async with trio.open_nursery() as nursery:
                for index in self._membership.live:
                    nursery.start_soon(ask, index)
            return {"workers": sorted(answers, key=lambda answer: int(answer.get("worker", -1)))}

        async def to_one_worker(arguments: Mapping[str, Any]) -> Mapping[str, Any]:
            # Any worker reaches every worker's sessions (its admin wing): the first live one.
            live = sorted(self._membership.live)
            return await to_worker(live[0] if live else None, arguments)

        async def to_first_worker(arguments: Mapping[str, Any]) -> Mapping[str, Any]:
            # The node's background tasks (reminders) run on its worker 0.
            return await to_worker(0 if 0 in self._membership.live else None, arguments)

        async def to_worker(index: int | None, arguments: Mapping[str, Any]) -> Mapping[str, Any]:
            if index is None:
                return {"error": "no worker of this node is running"}
            try:
                return await fetch_command(worker_status_path(self._run_dir, index), arguments)
            except StatusUnavailable as exc:
                return {"error": str(exc)}

        return {"destroy-room": to_room_home, "reload-modules": to_every_worker, "announce": to_one_worker,
                "end-sessions": to_one_worker, "wake-reminders": to_first_worker,
                "logout-user": to_every_worker}  # fmt: skip

    async def document(self) -> dict[str, Any]:
        stats = self._supervisor.statistics()
        children = [child for child in stats.children if child.id in self._workers]
        answers: dict[str, dict[str, Any]] = {}

        async def ask(child: ProcessChildStatistics) -> None:
            path = worker_status_path(self._run_dir, self._workers[child.id])
            with contextlib.suppress(StatusUnavailable):  # then it is listed as unresponsive
                answers[child.id] = await fetch_status(path, self._worker_timeout)

        async with trio.open_nursery() as nursery:
            for child in children:
                if child.state is ChildState.RUNNING:
                    nursery.start_soon(ask, child)
        now, clock = time.time(), trio.current_time()
        workers = [self._entry(child, answers.get(child.id), now, clock) for child in children]
        pid = os.getpid()
        supervisor = {
            "title": SUPERVISOR_TITLE,
            "pid": pid,
            "rss_bytes": rss_bytes(pid),
            "strategy": stats.strategy.value,
            "restarts_total": stats.restarts_total,
            "membership": self._membership.document(),
        }
        totals = sum_workers(workers)
        totals["rss_bytes"] += supervisor["rss_bytes"]
        node = {
            "domain": self.domain,
            "version": imactor.__version__,
            "pid": pid,
            "started_at": self.started_at,
            "uptime": round(max(0.0, now - self.started_at), 3),
        }
        return {"node": node, "supervisor": supervisor, "workers": workers, "totals": totals}

    def _entry(
        self, child: ProcessChildStatistics, answer: dict[str, Any] | None, now: float, clock: float
    ) -> dict[str, Any]:
        index = self._workers[child.id]
        reported = answer.get("workers") if answer is not None else None
        if isinstance(reported, list) and reported and isinstance(reported[0], dict):
            entry = dict(reported[0])
            state = child.state.value
        else:
            state = "unresponsive" if child.state is ChildState.RUNNING else child.state.value
            entry = empty_worker_entry(index, child.pid, state)
        # The supervisor's clock is monotonic; the document speaks Unix time.
        uptime = max(0.0, clock - child.started_at) if child.started_at is not None else 0.0
        entry.update(
            index=index,
            title=worker_title(index),
            pid=child.pid,
            state=state,
            restarts=child.restarts,
            started_at=None if child.started_at is None else round(now - uptime, 3),
            uptime=round(uptime, 3),
            last_exit_code=child.last_exit_code,
            last_exit_signal=child.last_exit_signal,
        )
        return entry
