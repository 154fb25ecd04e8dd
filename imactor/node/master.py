"""`imactor supervise`: the node supervisor.

For now it runs a single worker in this process (the multi-worker process tree of DESIGN.md is
built on `supervisors.processes` in a following step). Exit code 0 after a clean shutdown.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

from imactor.log import setup_logging

if TYPE_CHECKING:
    from imactor.config import Config


def supervise(config: Config) -> int:
    setup_logging(config.log.level, config.log.format)
    try:
        import setproctitle

        setproctitle.setproctitle("imactor-supervisor")
    except ImportError:  # pragma: no cover - setproctitle is a dependency; titles are cosmetic
        pass
    from imactor.server.modules import ModuleConfigError
    from imactor.server.tree import run_worker

    try:
        trio.run(run_worker, config)
    except (OSError, ModuleConfigError) as exc:
        logging.getLogger("imactor").error("cannot start: %s", exc)
        return 1
    return 0
