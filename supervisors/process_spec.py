"""`ProcessSpec`: how a `ProcessSupervisor` starts, checks, restarts and stops one child process.

Its own module so that the supervisor (`supervisors.processes`) and the task that runs a child's
processes (`supervisors._process`) both depend on it, not on each other.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from supervisors.spec import Restart, check_restart_and_shutdown

__all__ = ["ProcessSpec"]


def _check_seconds(spec_id: str, name: str, value: float, *, allow_inf: bool) -> None:
    if math.isnan(value) or value <= 0 or (math.isinf(value) and not allow_inf):
        raise ValueError(f"ProcessSpec {spec_id!r}: {name} must be > 0 seconds, got {value!r}")


@dataclass(frozen=True, slots=True)
class ProcessSpec:
    """How to start, check, restart and stop one child process.

    Attributes:
        id: Name of the child, unique within its supervisor.
        argv: The program and its arguments (no shell).
        env: The child's whole environment; None inherits the supervisor's.
            ``SUPERVISOR_HEALTH_FD`` is set (or removed) by the supervisor.
        restart: When the child is restarted after it exits.
        shutdown: Seconds between SIGTERM and SIGKILL when the child is
            stopped; 0 kills at once (OTP's ``brutal_kill``), ``math.inf``
            never sends SIGKILL.
        health_interval: Seconds between pings; None turns the health
            protocol off (no channel, no ``ready``, no pings).
        health_timeout: Seconds a ping may wait for its pong.
        ready_timeout: Seconds the child may take to write ``ready``.
        pass_fds: File descriptors of the supervisor that the child inherits,
            under the same numbers (listening sockets bound once by the
            supervisor, say). The supervisor neither opens nor closes them:
            they must stay open for as long as it may (re)start the child.

    Raises:
        ValueError: If ``id`` or ``argv`` is empty or a duration is out of
            range.
        TypeError: If ``restart`` is not a `Restart` or ``argv`` is a string.
    """

    id: str
    argv: Sequence[str]
    env: Mapping[str, str] | None = field(default=None, hash=False)
    restart: Restart = Restart.PERMANENT
    shutdown: float = 10.0
    health_interval: float | None = 1.0
    health_timeout: float = 5.0
    ready_timeout: float = 30.0
    pass_fds: Sequence[int] = ()

    def __post_init__(self) -> None:
        if not self.id:
            raise ValueError("ProcessSpec.id must be a non-empty string")
        if isinstance(self.argv, str):
            raise TypeError(f"ProcessSpec {self.id!r}: argv must be a sequence of strings, not a string")
        if not self.argv:
            raise ValueError(f"ProcessSpec {self.id!r}: argv must not be empty")
        check_restart_and_shutdown("ProcessSpec", self.id, self.restart, self.shutdown)
        if self.health_interval is not None:
            _check_seconds(self.id, "health_interval", self.health_interval, allow_inf=False)
        _check_seconds(self.id, "health_timeout", self.health_timeout, allow_inf=False)
        _check_seconds(self.id, "ready_timeout", self.ready_timeout, allow_inf=True)
        # Frozen copies: the spec must not change under the supervisor's feet.
        object.__setattr__(self, "argv", tuple(self.argv))
        if any(type(fd) is not int or fd < 0 for fd in self.pass_fds):
            raise ValueError(f"ProcessSpec {self.id!r}: pass_fds must be file descriptor numbers")
        object.__setattr__(self, "pass_fds", tuple(self.pass_fds))
        if self.env is not None:
            object.__setattr__(self, "env", MappingProxyType(dict(self.env)))
