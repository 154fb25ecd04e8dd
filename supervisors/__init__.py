"""Generic OTP-style supervision for Trio tasks.

Vocabulary follows Erlang/OTP's supervisor principles: a supervisor starts
its children in order (`ChildSpec`), restarts them per `Restart` type and
`Strategy`, gives up when a `RestartBudget` is exceeded (raising
`RestartBudgetExceeded` to its parent), and stops children in reverse
order. `DynamicSupervisor` is OTP's simple_one_for_one for many short-lived
children. `ProcessSupervisor` does the same for OS processes, which speak
the health protocol of `supervisors.health` (`serve_health` on their side).

This package knows nothing of XMPP and must never import ``imactor``.
"""

from __future__ import annotations

from supervisors.budget import RestartBudget, RestartBudgetStatistics
from supervisors.dynamic import DynamicSupervisor
from supervisors.errors import ChildFailedToStart, RestartBudgetExceeded, SupervisorError
from supervisors.health import HealthChannel, SupervisorLost, serve_health
from supervisors.processes import (
    ProcessChildStatistics,
    ProcessExited,
    ProcessSpec,
    ProcessSupervisor,
    ProcessSupervisorStatistics,
)
from supervisors.spec import ChildSpec, Restart, Strategy
from supervisors.statistics import (
    ChildState,
    ChildStatistics,
    DynamicSupervisorStatistics,
    SupervisorStatistics,
)
from supervisors.tasks import TaskSupervisor

__all__ = [
    "ChildFailedToStart",
    "ChildSpec",
    "ChildState",
    "ChildStatistics",
    "DynamicSupervisor",
    "DynamicSupervisorStatistics",
    "HealthChannel",
    "ProcessChildStatistics",
    "ProcessExited",
    "ProcessSpec",
    "ProcessSupervisor",
    "ProcessSupervisorStatistics",
    "Restart",
    "RestartBudget",
    "RestartBudgetExceeded",
    "RestartBudgetStatistics",
    "Strategy",
    "SupervisorError",
    "SupervisorLost",
    "SupervisorStatistics",
    "TaskSupervisor",
    "serve_health",
]
