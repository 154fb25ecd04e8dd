"""The servers the generator can start for a run: imactor, and Debian's Prosody and ejabberd.

Each profile is a context manager that starts its server on loopback (free ports), with its own
config and data directories under the run's temp dir, as the user running the bench, provisions
the accounts bench0..benchN-1, yields a `Target` (where to connect, which process trees to
measure) and stops the server (by the pid it started) when the block ends. Prosody and ejabberd
come from `scripts/install-peers.sh`; the `-pg` variants run on a throw-away PostgreSQL cluster
(bench/peers/postgres.py) whose processes count as the server's. See bench/README.md for the
configurations and the settings that keep the comparison fair.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path

from bench.loadgen.launcher import Target, running_imactor
from bench.peers.ejabberd import running_ejabberd
from bench.peers.prosody import running_prosody

SERVERS = ("imactor", "ejabberd", "ejabberd-pg", "prosody", "prosody-pg")
CONFIGS = ("default", "bench")


def running_server(name: str, directory: Path, users: Sequence[tuple[str, str]], *, tls: bool,
                   domain: str = "localhost", workers: int = 1,
                   modules: Sequence[str] | None = None, peer_store: str = "native",
                   config: str = "bench", sasl: str | None = None,
                   archive_prefill: int = 0) -> AbstractContextManager[Target]:  # fmt: skip
    """Start the server `name` (one of SERVERS) in its configuration `config`:

    - "default": each server as its own defaults have it (imactor: conf/imactor.toml's defaults;
      ejabberd and Prosody: the configuration their package ships, without an archive on their
      default store, or with the archive on PostgreSQL for the `-pg` names);
    - "bench": imactor with `workers` and `modules` (None: its default list); ejabberd and
      Prosody in the minimal profile with the archive on, on `peer_store` ("native": Mnesia,
      internal files; "sqlite") or, for the `-pg` names, on PostgreSQL.

    `sasl` (SCRAM-SHA-1, SCRAM-SHA-256 or None) picks ejabberd's stored SCRAM hash;
    `archive_prefill` (imactor only): archived messages per account before the start."""
    if config not in CONFIGS:
        raise ValueError(f"unknown configuration {config!r}: one of {', '.join(CONFIGS)}")
    if name == "imactor":
        return running_imactor(directory, users, tls=tls, domain=domain, workers=workers, modules=modules,
                               config_name=config, archive_prefill=archive_prefill)  # fmt: skip
    if archive_prefill:
        raise ValueError("archive_prefill: imactor only")
    base, _, variant = name.partition("-")
    if variant not in ("", "pg") or base not in ("ejabberd", "prosody"):
        raise ValueError(f"unknown server {name!r}: one of {', '.join(SERVERS)}")
    store = "pgsql" if variant == "pg" else ("native" if config == "default" else peer_store)
    if base == "ejabberd":
        return running_ejabberd(directory, users, tls=tls, domain=domain, store=store, profile=config,
                                sasl=sasl)  # fmt: skip
    return running_prosody(directory, users, tls=tls, domain=domain, store=store, profile=config)
