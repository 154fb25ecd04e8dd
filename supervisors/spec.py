"""Declarative child specifications, in OTP vocabulary.

A supervisor is configured with data, not code: an ordered list of
`ChildSpec` records plus a `Strategy`. This mirrors OTP's child
specification (``#{id, start, restart, shutdown}``) so that the supervision
docs can be shared with Erlang/OTP material.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

__all__ = ["ChildSpec", "Restart", "Strategy"]


class Restart(enum.Enum):
    """When a child that has exited is started again.

    Attributes:
        PERMANENT: Always restarted, whether it returned or raised.
        TRANSIENT: Restarted only after an abnormal exit (it raised).
        TEMPORARY: Never restarted; its exit is only recorded.
    """

    PERMANENT = "permanent"
    TRANSIENT = "transient"
    TEMPORARY = "temporary"

    def wants_restart(self, *, failed: bool) -> bool:
        """Whether a child with this restart type is restarted after an exit.

        Args:
            failed: True when the child raised, False when it returned.

        Returns:
            True if the supervisor should start the child again.
        """
        if self is Restart.PERMANENT:
            return True
        if self is Restart.TRANSIENT:
            return failed
        return False


class Strategy(enum.Enum):
    """Which children are restarted when one of them must be restarted.

    Attributes:
        ONE_FOR_ONE: Only the child that exited.
        ONE_FOR_ALL: Every child: the others are stopped in reverse start
            order, then all are started again in order.
        REST_FOR_ONE: The child that exited and every child started after
            it (those depend on it), stopped in reverse and restarted in order.
    """

    ONE_FOR_ONE = "one_for_one"
    ONE_FOR_ALL = "one_for_all"
    REST_FOR_ONE = "rest_for_one"


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """How to start, restart and stop one child.

    Attributes:
        id: Name of the child, unique within its supervisor. Used in logs,
            statistics, `lookup` and escalation errors.
        start: Async function called as ``await start(task_status=status)``
            (Trio's ``nursery.start`` idiom). It calls
            ``status.started(value)`` once it is ready; ``value`` (typically a
            reference to the child) is what ``lookup`` returns. Returning
            normally is a normal exit; raising an ``Exception`` is an
            abnormal exit. Bind extra arguments with ``functools.partial``.
        restart: When the child is restarted after it exits.
        shutdown: Seconds the supervisor waits for the child to finish after
            cancelling it. Trio cancellation is delivered at the child's next
            checkpoint, so this only matters for a child that shields its
            cleanup. When the deadline passes the supervisor logs a warning
            and stops *waiting* (it moves on to the next child); the child is
            never abandoned, because the supervisor's nursery still waits for
            it before ``run()`` returns. ``math.inf`` waits forever (OTP's
            ``infinity``, the usual choice for a nested supervisor).

    Raises:
        ValueError: If ``id`` is empty or ``shutdown`` is negative or NaN.
        TypeError: If ``start`` is not callable or ``restart`` is not a
            `Restart`.
    """

    id: str
    start: Callable[..., Awaitable[object]]
    restart: Restart = Restart.PERMANENT
    shutdown: float = 5.0

    def __post_init__(self) -> None:
        if not self.id:
            raise ValueError("ChildSpec.id must be a non-empty string")
        if not callable(self.start):
            raise TypeError(f"ChildSpec {self.id!r}: start must be an async callable, got {self.start!r}")
        check_restart_and_shutdown("ChildSpec", self.id, self.restart, self.shutdown)


def check_restart_and_shutdown(kind: str, child_id: str, restart: Restart, shutdown: float) -> None:
    """The checks every child spec shares; the errors name the spec class ``kind``.

    Raises:
        TypeError: If ``restart`` is not a `Restart`.
        ValueError: If ``shutdown`` is negative or NaN.
    """
    if not isinstance(restart, Restart):
        raise TypeError(f"{kind} {child_id!r}: restart must be a Restart, got {restart!r}")
    # NaN compares false with everything, so test it explicitly.
    if math.isnan(shutdown) or shutdown < 0:
        raise ValueError(f"{kind} {child_id!r}: shutdown must be >= 0 seconds, got {shutdown!r}")
