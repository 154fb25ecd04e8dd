"""Prosody (Debian's package) for a benchmark run: loopback, its own config and data dirs.

Fairness settings (bench/README.md lists them): STARTTLS with the same kind of self-signed
certificate imactor uses (required for `--transport starttls`, not for `tcp`); Prosody's own
default store (`internal`: files under data_path) or, with store="sqlite", SQLite (imactor's
store, in WAL mode like imactor's) for accounts, rosters, offline messages and the archive; mod_mam on, every
message archived (imactor archives every chat message); MUC on conference.<domain> with
mod_muc_mam archiving every room; offline storage on (Prosody loads mod_offline itself); no
mod_limits, so no rate limit caps the generator; no s2s, no HTTP. Logging at warning.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator, Sequence
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

PROVISION_TIMEOUT = 1800.0
STORES = ("native", "sqlite")  # native: Prosody's default store (internal: files in data_path)
SQLITE_STORAGE = """storage = "sql"
sql = {{ driver = "SQLite3", database = "prosody.sqlite" }}
"""

CONFIG = """-- written by bench/peers/prosody.py for one benchmark run
pidfile = "{dir}/prosody.pid"
data_path = "{dir}/data"
admin_socket = "{dir}/data/prosody.sock"
run_as_root = {run_as_root}
certificates = "{dir}/certs"
log = {{ warn = "{dir}/prosody.log" }}
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {port} }}
c2s_interfaces = {{ "127.0.0.1" }}
c2s_direct_tls_ports = {{ }}
s2s_ports = {{ }}
http_ports = {{ }}
https_ports = {{ }}
modules_disabled = {{ "s2s" }}
modules_enabled = {{
    "roster"; "saslauth"; "tls"; "disco"; "ping"; "mam"; "admin_shell";
}}
c2s_require_encryption = {require_tls}
allow_registration = false
authentication = "internal_hashed"
{storage}default_archive_policy = true
archive_expires_after = "1w"
ssl = {{ certificate = "{cert}"; key = "{key}"; }}

VirtualHost "{domain}"

Component "conference.{domain}" "muc"
    modules_enabled = {{ "muc_mam" }}
    restrict_room_creation = false
    muc_log_by_default = true
    muc_log_all_rooms = true
"""


def _ctl(config: Path, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([require("prosodyctl"), "--config", str(config), *args],
                          capture_output=True, text=True, timeout=timeout, check=False)  # fmt: skip


def add_users(config: Path, users: Sequence[tuple[str, str]], domain: str) -> None:
    """Create the accounts through the running instance's admin shell (prosodyctl shell): one
    Lua loop inside the server instead of one prosodyctl process per account."""
    if not users:
        return
    passwords = {password for _, password in users}
    names = [name for name, _ in users]
    if len(passwords) != 1 or names != [f"bench{i}" for i in range(len(users))]:
        raise PeerError("prosody profile: accounts must be bench0..benchN-1 with one password")
    (password,) = passwords
    code = (
        f'>local um = require "core.usermanager"; local n = 0; '
        f"for i = 0, {len(users) - 1} do "
        f'if um.create_user("bench" .. i, {_lua_string(password)}, {_lua_string(domain)}) then n = n + 1 end '
        f"end; return n"
    )
    result = _ctl(config, "shell", code, timeout=PROVISION_TIMEOUT)
    created = result.stdout.strip().splitlines()[-1:] if result.stdout else []
    if result.returncode != 0 or created != [f"Result: {len(users)}"]:
        raise PeerError(f"prosodyctl shell: created {created}, rc {result.returncode}:\n"
                        f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}")  # fmt: skip


def _lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@contextmanager
def running_prosody(directory: Path, users: Sequence[tuple[str, str]], *, tls: bool = True,
                    domain: str = "localhost", store: str = "native") -> Iterator[Target]:  # fmt: skip
    prosody = require("prosody")
    home = directory / "prosody"
    for sub in ("data", "certs"):  # certs: Prosody indexes it even when `ssl` names the files
        (home / sub).mkdir(parents=True)
    cert, key = write_certificate(home, domain)
    (port,) = free_ports(1)
    config = home / "prosody.cfg.lua"
    storage = ""
    if store == "sqlite":
        storage = SQLITE_STORAGE.format()
        wal_database(home / "data" / "prosody.sqlite")  # Prosody creates its tables in it
    elif store != "native":
        raise PeerError(f"prosody profile: unknown store {store!r}: one of {', '.join(STORES)}")
    config.write_text(CONFIG.format(dir=home, port=port, domain=domain, cert=cert, key=key, storage=storage,
                                    require_tls=str(tls).lower(),
                                    run_as_root=str(os.geteuid() == 0).lower()))  # fmt: skip
    log = home / "stderr.log"
    with log.open("wb") as err:
        proc = subprocess.Popen([prosody, "--config", str(config), "-F"], stdout=err, stderr=err,
                                stdin=subprocess.DEVNULL, cwd=home)  # fmt: skip
    try:
        wait_for_port(port, proc, log)
        try:
            add_users(config, users, domain)
        except PeerError as exc:
            raise PeerError(f"{exc}\nprosody log:\n{tail(home / 'prosody.log')}") from exc
        yield Target("127.0.0.1", port, domain, proc.pid)
    finally:
        stop_tree(proc)
