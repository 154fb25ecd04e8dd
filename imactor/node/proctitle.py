"""Process titles, so that ``ps`` and ``pstree`` show the node's tree (tractor's habit)."""

from __future__ import annotations

SUPERVISOR_TITLE = "imactor-supervisor"


def worker_title(index: int) -> str:
    return f"imactor-worker[{index}]"


def set_title(title: str) -> None:
    """Set this process's title (``/proc/<pid>/cmdline`` shows it); cosmetic, so never fails."""
    try:
        import setproctitle
    except ImportError:  # pragma: no cover - setproctitle is a dependency; titles are cosmetic
        return
    setproctitle.setproctitle(title)
