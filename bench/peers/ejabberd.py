"""ejabberd (Debian's package) for a benchmark run: loopback, its own config, spool and logs.

Started with Debian's `ejabberdctl foreground`, as the user running the bench (its ctl config
overrides the script's switch to the `ejabberd` system user), with `HOME` in the run's dir (the
Erlang cookie lands there) and the Erlang distribution on a fixed loopback port instead of epmd,
so no epmd daemon outlives the run.

Fairness settings (bench/README.md lists them): STARTTLS with the same kind of self-signed
certificate imactor uses (required for `--transport starttls`, not for `tcp`); SCRAM-SHA-256
credentials (as imactor); ejabberd's own default store (Mnesia on disc) or, with store="sqlite",
SQLite (imactor's store, WAL mode like imactor's, ejabberd's lite.sql schema) for accounts,
rosters, offline messages and the archive; mod_mam on with `default: always` (every chat message
archived, as imactor does); MUC on conference.<domain> with `mam: true` in every room; offline
storage on; no shaper on c2s (ejabberd's sample config caps clients at 1,000 bytes/s), so no
rate limit caps the generator. Accounts are registered over mod_http_api's `register` command on
a loopback HTTP port (one ejabberdctl process per account would take seconds each).
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from bench.loadgen.launcher import Target
from bench.peers.common import (
    PeerError,
    free_ports,
    require,
    stop_tree,
    tail,
    wait_for_port,
    wal_database,
    write_certificate,
)

CONFIG = """# written by bench/peers/ejabberd.py for one benchmark run
hosts: ["{domain}"]
loglevel: warning
certfiles: ["{cert}", "{key}"]
define_macro: {{}}
listen:
  - port: {port}
    ip: "127.0.0.1"
    module: ejabberd_c2s
    starttls: true
    starttls_required: {require_tls}
    max_stanza_size: 262144
    shaper: none
  - port: {http_port}
    ip: "127.0.0.1"
    module: ejabberd_http
    request_handlers:
      /api: mod_http_api
acl:
  loopback:
    ip: ["127.0.0.0/8"]
api_permissions:
  "bench provisioning":
    from: [mod_http_api]
    who:
      acl: loopback
    what: ["register"]
auth_password_format: scram
auth_scram_hash: sha256
{storage}s2s_access: none
modules:
  mod_disco: {{}}
  mod_ping: {{}}
  mod_roster: {{}}
  mod_offline: {{}}
  mod_mam:
    default: always
  mod_muc:
    access_create: all
    access_persistent: all
    default_room_options:
      mam: true
"""

CTL_CONFIG = """# sourced by ejabberdctl (bench/peers/ejabberd.py): run as the current user, no epmd
EXEC_CMD=as_current_user
ERL_DIST_PORT={dist_port}
ERL_EPMD_ADDRESS=127.0.0.1
ERLANG_NODE={node}
"""

REGISTER_THREADS = 4
STORES = ("native", "sqlite")  # native: ejabberd's default store (Mnesia, on disc)
SQLITE_STORAGE = """auth_method: [sql]
sql_type: sqlite
sql_database: "{database}"
default_db: sql
"""
NATIVE_STORAGE = """auth_method: [internal]
default_db: mnesia
"""
SQLITE_SCHEMA = Path("/usr/share/ejabberd/sql/lite.sql")  # from Debian's ejabberd package


def _ctl_args(home: Path) -> list[str]:
    return [require("ejabberdctl"), "--config-dir", str(home), "--config", str(home / "ejabberd.yml"),
            "--ctl-config", str(home / "ejabberdctl.cfg"), "--spool", str(home / "spool"),
            "--logs", str(home / "logs")]  # fmt: skip


def add_users(http_port: int, users: Sequence[tuple[str, str]], domain: str) -> None:
    """Register the accounts through the instance's HTTP API (loopback, a few kept-alive
    connections in parallel)."""

    def register(share: Sequence[tuple[str, str]]) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", http_port, timeout=60)
        try:
            for name, password in share:
                body = json.dumps({"user": name, "host": domain, "password": password})
                conn.request("POST", "/api/register", body, {"Content-Type": "application/json"})
                response = conn.getresponse()
                text = response.read().decode(errors="replace")
                if response.status != 200:
                    raise PeerError(f"ejabberd register {name}: HTTP {response.status} {text[:300]}")
        finally:
            conn.close()

    with ThreadPoolExecutor(REGISTER_THREADS) as pool:
        for future in [pool.submit(register, users[k::REGISTER_THREADS]) for k in range(REGISTER_THREADS)]:
            future.result()


@contextmanager
def running_ejabberd(directory: Path, users: Sequence[tuple[str, str]], *, tls: bool = True,
                     domain: str = "localhost", store: str = "native") -> Iterator[Target]:  # fmt: skip
    home = directory / "ejabberd"
    for sub in ("spool", "logs"):
        (home / sub).mkdir(parents=True)
    cert, key = write_certificate(home, domain)
    port, http_port, dist_port = free_ports(3)
    (home / "inetrc").write_text("")  # ejabberdctl points ERL_INETRC here; empty: the defaults
    if store == "sqlite":
        database = home / "ejabberd.db"
        wal_database(database, SQLITE_SCHEMA.read_text())
        storage = SQLITE_STORAGE.format(database=database)
    elif store == "native":
        storage = NATIVE_STORAGE
    else:
        raise PeerError(f"ejabberd profile: unknown store {store!r}: one of {', '.join(STORES)}")
    config = CONFIG.format(domain=domain, cert=cert, key=key, port=port, http_port=http_port,
                           storage=storage, require_tls=str(tls).lower())  # fmt: skip
    (home / "ejabberd.yml").write_text(config)
    node = f"bench{os.getpid()}@localhost"
    (home / "ejabberdctl.cfg").write_text(CTL_CONFIG.format(dist_port=dist_port, node=node))
    env = dict(os.environ, HOME=str(home))
    log = home / "stdout.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([*_ctl_args(home), "foreground"], stdout=out, stderr=out,
                                stdin=subprocess.DEVNULL, cwd=home, env=env)  # fmt: skip
    try:
        wait_for_port(http_port, proc, log)
        wait_for_port(port, proc, log)
        try:
            add_users(http_port, users, domain)
        except (PeerError, OSError) as exc:
            raise PeerError(f"{exc}\nejabberd log:\n{tail(home / 'logs' / 'ejabberd.log')}") from exc
        yield Target("127.0.0.1", port, domain, proc.pid)
    finally:
        # `ejabberdctl stop` lets the node close Mnesia cleanly; stop_tree ends what is left.
        if proc.poll() is None:
            try:
                subprocess.run([*_ctl_args(home), "stop"], env=env, capture_output=True, timeout=30,
                               check=False)  # fmt: skip
                proc.wait(30)
            except subprocess.TimeoutExpired:
                pass
        stop_tree(proc)
