"""The servers the generator can start for a run: imactor, and Debian's Prosody and ejabberd.

Each profile is a context manager that starts its server on loopback (free ports), with its own
config and data directories under the run's temp dir, as the user running the bench, provisions
the accounts bench0..benchN-1, yields a `Target` (where to connect, which process tree to
measure) and stops the server (by the pid it started) when the block ends. Prosody and ejabberd
come from `scripts/install-peers.sh`; see bench/README.md for the settings that keep the
comparison fair.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path

from bench.loadgen.launcher import Target, running_imactor
from bench.peers.ejabberd import running_ejabberd
from bench.peers.prosody import running_prosody

SERVERS = ("imactor", "ejabberd", "prosody")


def running_server(name: str, directory: Path, users: Sequence[tuple[str, str]], *, tls: bool,
                   domain: str = "localhost", workers: int = 1,
                   modules: Sequence[str] | None = None,
                   peer_store: str = "native") -> AbstractContextManager[Target]:  # fmt: skip
    """Start the server `name` (one of SERVERS); `workers` and `modules` are imactor's only,
    `peer_store` Prosody's and ejabberd's: "native" (their own default store: ejabberd's Mnesia
    on disc, Prosody's internal files) or "sqlite" (imactor's store)."""
    if name == "imactor":
        return running_imactor(directory, users, tls=tls, domain=domain, workers=workers, modules=modules)
    if name == "ejabberd":
        return running_ejabberd(directory, users, tls=tls, domain=domain, store=peer_store)
    if name == "prosody":
        return running_prosody(directory, users, tls=tls, domain=domain, store=peer_store)
    raise ValueError(f"unknown server {name!r}: one of {', '.join(SERVERS)}")
