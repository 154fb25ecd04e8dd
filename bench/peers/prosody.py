"""Prosody (Debian's package, 0.12) for a benchmark run: loopback, its own config and data dirs.

Two configurations (bench/README.md, "Prosody and ejabberd side by side", lists both):

- "default": the configuration Debian ships (/etc/prosody/prosody.cfg.lua, Prosody's example
  config): its `modules_enabled` list, `internal_hashed` authentication, `archive_expires_after =
  "1w"`; only what a run must change is changed: loopback ports the OS picks, the domain, our
  certificate, log level warn, and three modules left out: dialback (no s2s here), posix
  (daemonising and syslog; the bench runs it in the foreground) and limits (its 10 kB/s per
  client would pace the 60 msg/s-per-user phase). The store is the default, `internal` (files),
  without mod_mam (commented out in the package), or with `store="pgsql"` the package's own
  commented lines for it: `storage = "sql"` with the PostgreSQL driver (lua-dbi-postgresql),
  "mam" enabled and the MUC component's `modules_enabled = { "muc_mam" }`. Prosody creates its
  tables itself.
- "bench": the earlier minimal profile (roster, saslauth, tls, disco, ping, mam, every room
  archived, no mod_limits), on the internal store (`store="native"`), SQLite (`store="sqlite"`,
  WAL like imactor's) or PostgreSQL (`store="pgsql"`).

Prosody 0.12's hashed store keeps SCRAM-SHA-1 credentials only: it offers no SCRAM-SHA-256.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
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
from bench.peers.postgres import Database, running_postgres

PROVISION_TIMEOUT = 1800.0
STORES = ("native", "sqlite", "pgsql")  # native: Prosody's default store (internal: files in data_path)
SQLITE_STORAGE = """storage = "sql"
sql = {{ driver = "SQLite3", database = "prosody.sqlite" }}
"""
PGSQL_STORAGE = """storage = "sql"
sql = {{ driver = "PostgreSQL", database = "{db.name}", username = "{db.user}",
        password = "{db.password}", host = "{db.host}", port = {db.port} }}
"""

COMMON = """pidfile = "{dir}/prosody.pid"
data_path = "{dir}/data"
admin_socket = "{dir}/data/prosody.sock"
run_as_root = {run_as_root}
certificates = "{dir}/certs"
log = {{ warn = "{dir}/prosody.log" }}
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {port} }}
c2s_interfaces = {{ "127.0.0.1" }}
c2s_direct_tls_ports = {{ }}
s2s_ports = {{ {s2s_port} }}
http_ports = {{ }}
https_ports = {{ }}
c2s_require_encryption = {require_tls}
ssl = {{ certificate = "{cert}"; key = "{key}";{cafile} }}
"""

BENCH_CONFIG = """-- written by bench/peers/prosody.py for one benchmark run ("bench" profile)
{common}modules_disabled = {{ "s2s" }}
modules_enabled = {{
    "roster"; "saslauth"; "tls"; "disco"; "ping"; "mam"; "admin_shell";
}}
allow_registration = false
authentication = "internal_hashed"
{storage}default_archive_policy = true
archive_expires_after = "1w"

VirtualHost "{domain}"

Component "conference.{domain}" "muc"
    modules_enabled = {{ "muc_mam" }}
    restrict_room_creation = false
    muc_log_by_default = true
    muc_log_all_rooms = true
"""

# Debian's /etc/prosody/prosody.cfg.lua of Prosody 0.12, with the changes the module's
# docstring names (each marked "bench:").
DEFAULT_CONFIG = """-- written by bench/peers/prosody.py for one benchmark run ("default" profile):
-- Debian's /etc/prosody/prosody.cfg.lua (Prosody's example config); changes marked "bench:"
-- bench: pid, data, socket, certificates, log and listeners in the run's dir, on loopback
{common}admins = {{ }}
modules_enabled = {{
    "disco"; "roster"; "saslauth"; "tls"; "blocklist"; "bookmarks"; "carbons";
    -- bench: no "dialback" (no s2s here)
    -- bench: no "limits" (10 kB/s per client would pace 60 msg/s per user)
    "pep"; "private"; "smacks"; "vcard4"; "vcard_legacy"; "csi_simple";
    "invites"; "invites_adhoc"; "invites_register"; "ping"; "register"; "time"; "uptime";
    "version"; "admin_adhoc"; "admin_shell";
    -- bench: no "posix" (the bench runs Prosody in the foreground)
{mam}}}
modules_disabled = {{ "s2s" }}  -- bench: no s2s
authentication = "internal_hashed"
archive_expires_after = "1w"
{storage}
VirtualHost "{domain}"

Component "conference.{domain}" "muc"
{muc_mam}"""


# The federation tests' profile (tests/integration/test_federation.py): s2s on a loopback port,
# dialback, and the peer's domain pinned to its loopback port through Prosody's own resolver:
# Prosody 0.12 has no static s2s route, but its libunbound resolver takes unbound options, so
# a "redirect" local zone answers every name under the peer's domain (its _xmpp-server SRV
# record, and those of its subdomains such as conference.<domain>) with one SRV record: the
# peer's port on localhost.
FEDERATION_CONFIG = """-- written by bench/peers/prosody.py for the federation tests
{common}s2s_interfaces = {{ "127.0.0.1" }}
modules_enabled = {{
    "roster"; "saslauth"; "tls"; "dialback"; "disco"; "ping"; "pep"; "admin_shell";
}}
authentication = "internal_hashed"
s2s_require_encryption = true
s2s_secure_auth = {secure_auth}
s2s_timeout = 20
unbound = {{
    resolvconf = false; hoststxt = false;
    options = {{
        ["local-zone:"] = "{peer}. redirect";
        ["local-data:"] = "{peer}. 60 IN SRV 0 0 {peer_port} localhost.";
    }};
}}


VirtualHost "{domain}"
"""


def _common(home: Path, port: int, cert: Path, key: Path, *, tls: bool, s2s_port: int | None = None,
            cafile: Path | None = None) -> str:  # fmt: skip
    return COMMON.format(dir=home, port=port, cert=cert, key=key, require_tls=str(tls).lower(),
                         run_as_root=str(os.geteuid() == 0).lower(),
                         s2s_port="" if s2s_port is None else s2s_port,
                         cafile="" if cafile is None else f' cafile = "{cafile}";')  # fmt: skip


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


def _storage(store: str, home: Path, database: Database | None) -> str:
    if store == "sqlite":
        wal_database(home / "data" / "prosody.sqlite")  # Prosody creates its tables in it
        return SQLITE_STORAGE.format()
    if store == "pgsql":
        assert database is not None
        return PGSQL_STORAGE.format(db=database)
    if store == "native":
        return ""
    raise PeerError(f"prosody profile: unknown store {store!r}: one of {', '.join(STORES)}")


def write_config(home: Path, *, profile: str, store: str, database: Database | None, domain: str,
                 port: int, tls: bool) -> Path:  # fmt: skip
    """prosody.cfg.lua for `profile` ("default" or "bench") and `store` (module docstring)."""
    cert, key = write_certificate(home, domain)
    common = _common(home, port, cert, key, tls=tls)
    storage = _storage(store, home, database)
    if profile == "default":
        if store == "sqlite":
            raise PeerError("prosody default profile: internal (native) or PostgreSQL (pgsql)")
        archive = store == "pgsql"  # the package's commented lines, enabled with the SQL store
        mam = '    "mam";\n' if archive else ""
        muc_mam = '    modules_enabled = { "muc_mam" }\n' if archive else ""
        text = DEFAULT_CONFIG.format(common=common, domain=domain, storage=storage, mam=mam, muc_mam=muc_mam)
    elif profile == "bench":
        text = BENCH_CONFIG.format(common=common, domain=domain, storage=storage)
    else:
        raise PeerError(f"prosody: unknown profile {profile!r}: default or bench")
    config = home / "prosody.cfg.lua"
    config.write_text(text)
    return config


@contextmanager
def running_prosody(directory: Path, users: Sequence[tuple[str, str]], *, tls: bool = True,
                    domain: str = "localhost", store: str = "native",
                    profile: str = "bench") -> Iterator[Target]:  # fmt: skip
    """Prosody with `profile` on `store` (with "pgsql", on a throw-away PostgreSQL cluster
    started here, measured as part of the server); the accounts `users` created."""
    prosody = require("prosody")
    home = directory / "prosody"
    for sub in ("data", "certs"):  # certs: Prosody indexes it even when `ssl` names the files
        (home / sub).mkdir(parents=True)
    (port,) = free_ports(1)
    with ExitStack() as stack:
        database, database_pid = None, None
        if store == "pgsql":
            postgres = stack.enter_context(running_postgres(directory))
            database = postgres.create_database("prosody")  # Prosody creates its tables
            database_pid = postgres.pid
        config = write_config(home, profile=profile, store=store, database=database, domain=domain,
                              port=port, tls=tls)  # fmt: skip
        with _started(prosody, home, config, port, users, domain) as pid:
            yield Target("127.0.0.1", port, domain, pid, database_pid)


@contextmanager
def _started(prosody: str, home: Path, config: Path, port: int, users: Sequence[tuple[str, str]],
             domain: str) -> Iterator[int]:  # fmt: skip
    """Prosody running on `config` in the foreground, listening on `port`, `users` created; its pid."""
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
        yield proc.pid
    finally:
        stop_tree(proc)


@dataclass(frozen=True)
class FederatedProsody:
    c2s_port: int
    s2s_port: int
    domain: str
    home: Path
    pid: int


@contextmanager
def running_federated_prosody(directory: Path, users: Sequence[tuple[str, str]], *, domain: str,
                              s2s_port: int, peer: str, peer_port: int,
                              ca: tuple[Path, Path, Path] | None = None,
                              ) -> Iterator[FederatedProsody]:  # fmt: skip
    """Prosody serving `domain`, federating on `s2s_port` (chosen by the caller, who pins it in
    the peer's configuration first) with `peer`, whose server listens on loopback `peer_port`.

    Without `ca`, a self-signed certificate and dialback (`s2s_secure_auth = false`). With `ca`
    (certificate, key, CA file): that certificate, and only peers whose certificates that CA
    signed for their domain (`s2s_secure_auth = true`: SASL EXTERNAL, XEP-0178)."""
    prosody = require("prosody")
    home = directory / "prosody"
    for sub in ("data", "certs"):
        (home / sub).mkdir(parents=True)
    (port,) = free_ports(1)
    cert, key = write_certificate(home, domain) if ca is None else ca[:2]
    common = _common(home, port, cert, key, tls=True, s2s_port=s2s_port, cafile=ca and ca[2])
    config = home / "prosody.cfg.lua"
    config.write_text(FEDERATION_CONFIG.format(common=common, domain=domain, peer=peer, peer_port=peer_port,
                                               secure_auth=str(ca is not None).lower()))  # fmt: skip
    with _started(prosody, home, config, port, users, domain) as pid:
        wait_for_port(s2s_port, None, home / "prosody.log")
        yield FederatedProsody(port, s2s_port, domain, home, pid)
