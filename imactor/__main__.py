"""``python -m imactor``: the same command line as the ``imactor`` script."""

from __future__ import annotations

import sys

from imactor.cli import main

# The guard matters beyond style: bulk account creation starts worker processes with the "spawn"
# method, which re-imports this module in each worker.
if __name__ == "__main__":
    sys.exit(main())
