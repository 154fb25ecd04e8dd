"""Exceptions raised by supervisors.

`RestartBudgetExceeded` is the escalation signal: it leaves ``run()`` so the
parent (another supervisor, or the process entry point) decides what to do,
exactly as an OTP supervisor that exceeds its intensity exits and lets its
own supervisor react.
"""

from __future__ import annotations

import signal

__all__ = ["ChildFailedToStart", "ProcessExited", "RestartBudgetExceeded", "SupervisorError"]


class SupervisorError(Exception):
    """Base class of every error raised by this package."""


class RestartBudgetExceeded(SupervisorError):
    """A supervisor restarted its children too often and gave up.

    The failure of the last child is chained as ``__cause__`` so tracebacks
    show the root cause. ``last_error`` is None when the last exit was a
    normal return of a PERMANENT child (which is restarted, and charged, too).

    Args:
        supervisor_name: The supervisor that gave up.
        child_id: The child whose exit exhausted the budget.
        last_error: That child's exception, if it raised.
    """

    def __init__(self, supervisor_name: str, child_id: str, last_error: BaseException | None) -> None:
        super().__init__(
            f"supervisor {supervisor_name!r} exceeded its restart budget; last exit was child {child_id!r}"
        )
        self.supervisor_name = supervisor_name
        self.child_id = child_id
        self.last_error = last_error
        self.__cause__ = last_error

    def __reduce__(self) -> tuple[type[RestartBudgetExceeded], tuple[str, str, BaseException | None]]:
        # Keep the exception picklable (it may cross a process boundary).
        return (type(self), (self.supervisor_name, self.child_id, self.last_error))


class ChildFailedToStart(SupervisorError):
    """A child raised (or returned) before calling ``task_status.started()``.

    Raised out of `TaskSupervisor.run` when a child fails during the initial
    start, and out of `DynamicSupervisor.start_child` to its caller. The
    child's exception is chained as ``__cause__``.

    Args:
        supervisor_name: The supervisor that tried to start the child.
        child_id: The child that failed.
        error: The child's exception.
    """

    def __init__(self, supervisor_name: str, child_id: str, error: BaseException | None) -> None:
        super().__init__(f"supervisor {supervisor_name!r} failed to start child {child_id!r}: {error!r}")
        self.supervisor_name = supervisor_name
        self.child_id = child_id
        self.error = error
        self.__cause__ = error

    def __reduce__(self) -> tuple[type[ChildFailedToStart], tuple[str, str, BaseException | None]]:
        return (type(self), (self.supervisor_name, self.child_id, self.error))


class ProcessExited(SupervisorError):
    """A child process of a `ProcessSupervisor` ended abnormally (or before it was ready).

    Args:
        child_id: The child's ``ProcessSpec.id``.
        pid: The process that ended.
        returncode: Its status as `trio.Process.returncode` gives it: the
            exit status, or minus the number of the signal that killed it.
        reason: Why the supervisor killed it or gave up on its start, if it
            did (``"unresponsive"``, ``"not ready within 30s"``...).
    """

    def __init__(self, child_id: str, pid: int, returncode: int, reason: str | None = None) -> None:
        if returncode < 0:
            how = f"was killed by {signal.Signals(-returncode).name}"
        else:
            how = f"exited with status {returncode}"
        super().__init__(f"child {child_id!r} (pid {pid}) {how}" + (f": {reason}" if reason else ""))
        self.child_id = child_id
        self.pid = pid
        self.returncode = returncode
        self.reason = reason

    @property
    def exit_code(self) -> int | None:
        """The exit status, or None if a signal killed the process."""
        return self.returncode if self.returncode >= 0 else None

    @property
    def exit_signal(self) -> int | None:
        """The number of the signal that killed the process, or None."""
        return -self.returncode if self.returncode < 0 else None

    def __reduce__(self) -> tuple[type[ProcessExited], tuple[str, int, int, str | None]]:
        return (type(self), (self.child_id, self.pid, self.returncode, self.reason))
