"""Where the processes of one node listen for ZeroMQ frames (ipc:// under the node's run dir).

The node supervisor creates a private run directory (mode 0700, short path: a unix socket path is
at most 107 bytes) and hands it to every worker. Each process binds one PULL socket there:

    <run_dir>/master.sock   the node supervisor: nothing is sent to it yet (reserved)
    <run_dir>/w<N>.sock     worker N: actor messages from its peers, membership from the master

The node supervisor signs its frames with `MASTER`, a worker index no worker can have.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

#: The `source` of frames the node supervisor sends (membership changes).
MASTER: Final = 0xFFFF_FFFF
#: In a cluster, a worker's number is its node's id × NODE_STRIDE + its index in the node, so
#: every worker of every node has its own (a single node is node 0: the number is the index).
NODE_STRIDE: Final = 1024


def worker_id(node_id: int, index: int) -> int:
    return node_id * NODE_STRIDE + index


def worker_endpoint(run_dir: Path, index: int) -> str:
    return f"ipc://{run_dir / f'w{index}.sock'}"


def master_endpoint(run_dir: Path) -> str:
    return f"ipc://{run_dir / 'master.sock'}"
