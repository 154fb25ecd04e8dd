"""ejabberd (Debian's package, 23.01) for a benchmark run: loopback, its own config, spool and logs.

Started with Debian's `ejabberdctl foreground`, as the user running the bench (its ctl config
overrides the script's switch to the `ejabberd` system user), with `HOME` in the run's dir (the
Erlang cookie lands there) and the Erlang distribution on a fixed loopback port instead of epmd,
so no epmd daemon outlives the run. Accounts are registered through ejabberd's own
`ejabberd_auth:try_register/3`, called over the distribution port with Erlang's `erl_call`, with
SCRAM credentials derived here (PBKDF2 in Python threads, a random salt per account, 4096
iterations as ejabberd's own): one `ejabberdctl register` per account is an Erlang VM start,
and mod_http_api's `register` runs ejabberd's PBKDF2 in Erlang (about 20 ms per account).

Two configurations (bench/README.md, "Prosody and ejabberd side by side", lists both):

- "default": the configuration Debian ships (/etc/ejabberd/ejabberd.yml, ejabberd's own example
  config) with its module list, access rules, TLS options and `auth_password_format: scram`;
  only what a run must change is changed: loopback ports the OS picks, the domain, our
  certificate, log level warning, no c2s shaper (the packaged one caps a client at 3,000 B/s,
  which would pace the 60 msg/s-per-user phase), no listeners for what is not measured (s2s,
  HTTP, BOSH, MQTT, STUN, web admin) and without the modules that only serve those
  (mod_s2s_dialback, mod_http_api, mod_bosh, mod_mqtt, mod_stun_disco). The store is Mnesia
  and no archive (the package's mod_mam is commented out), or with `store="pgsql"` ejabberd's
  SQL guide: `sql_type: pgsql`, `default_db: sql`, `auth_method: sql`, and the package's
  commented mod_mam block enabled as its comment says once SQL is configured (`db_type: sql`,
  `assume_mam_usage: true`, `default: always`).
- "bench": the earlier minimal profile (disco, ping, roster, offline, mod_mam `default: always`,
  MUC with `mam: true` in every room), on Mnesia (`store="native"`), SQLite (`store="sqlite"`,
  lite.sql, WAL like imactor's) or PostgreSQL (`store="pgsql"`).

SCRAM: `auth_scram_hash` is `sha` for SCRAM-SHA-1 (ejabberd's default) or `sha256`.

For the federation tests, `running_federated_ejabberd` (FEDERATION_CONFIG): an ordinary s2s setup
(an `ejabberd_s2s_in` listener, STARTTLS required, dialback or certificates), pointed at a test
DNS server. ejabberd has no static s2s route; it finds a peer as its own xmpp_stream_out does
(p1_xmpp 1.6.1): the `_xmpps-server` and `_xmpp-server` SRV records through Erlang's resolver
(`inet_res`, which the node's inetrc points at the test's DNS server alone), then the SRV
target's address through the C library's getaddrinfo (`net:getaddrinfo`), which reads
/etc/hosts and /etc/resolv.conf and never the inetrc. So the test's SRV records name
`localhost.` as their target (the address the C library finds in /etc/hosts), not the peer's
domain: an A record for imactor.test in the test's DNS server would never be asked for, and the
C library's lookup of that name fails with `enoname` ("DNS lookup failed" in ejabberd's log).
That is the one deviation from a production setup, where the SRV target is a real host name.
"""

from __future__ import annotations

import base64
import contextlib
import os
import subprocess
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.loadgen.launcher import Target
from bench.peers.common import (
    START_TIMEOUT,
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
from imactor.xmpp.scram import ScramCredentials, derive_credentials

BENCH_CONFIG = """# written by bench/peers/ejabberd.py for one benchmark run ("bench" profile)
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
auth_password_format: scram
auth_scram_hash: {scram_hash}
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

# Debian's /etc/ejabberd/ejabberd.yml of ejabberd 23.01, in the order it has, with the changes
# the module's docstring names (each marked "bench:").
DEFAULT_CONFIG = """# written by bench/peers/ejabberd.py for one benchmark run ("default" profile):
# Debian's /etc/ejabberd/ejabberd.yml (ejabberd's example config); changes marked "bench:"
hosts: ["{domain}"]
loglevel: warning  # bench: the package says info
log_rotate_count: 0
certfiles: ["{cert}", "{key}"]  # bench: the run's certificate
define_macro:
  'TLS_CIPHERS': "HIGH:!aNULL:!eNULL:!3DES:@STRENGTH"
  'TLS_OPTIONS':
    - "no_sslv3"
    - "no_tlsv1"
    - "no_tlsv1_1"
    - "cipher_server_preference"
    - "no_compression"
c2s_ciphers: 'TLS_CIPHERS'
c2s_protocol_options: 'TLS_OPTIONS'
listen:
  - port: {port}  # bench: a free loopback port
    ip: "127.0.0.1"
    module: ejabberd_c2s
    max_stanza_size: 262144
    shaper: none  # bench: the package's c2s_shaper would pace 60 msg/s per user
    access: c2s
    starttls: true
    starttls_required: {require_tls}
    protocol_options: 'TLS_OPTIONS'
disable_sasl_mechanisms:
  - "digest-md5"
  - "X-OAUTH2"
auth_password_format: scram
auth_scram_hash: {scram_hash}  # bench: sha (ejabberd's default) or sha256, as --sasl asks
{storage}acl:
  admin:
     user:
       - ""
  local:
    user_regexp: ""
  loopback:
    ip:
      - 127.0.0.0/8
      - ::1/128
access_rules:
  local:
    allow: local
  c2s:
    deny: blocked
    allow: all
  announce:
    allow: admin
  configure:
    allow: admin
  muc_create:
    allow: local
  pubsub_createnode:
    allow: local
  trusted_network:
    allow: loopback
api_permissions:
  "console commands":
    from:
      - ejabberd_ctl
    who: all
    what: "*"
  "admin access":
    who:
      access:
        allow:
          - acl: loopback
          - acl: admin
      oauth:
        scope: "ejabberd:admin"
        access:
          allow:
            - acl: loopback
            - acl: admin
    what:
      - "*"
      - "!stop"
      - "!start"
  "public commands":
    who:
      ip: 127.0.0.1/8
    what:
      - status
      - connected_users_number
shaper:
  normal:
    rate: 3000
    burst_size: 20000
  fast: 200000
shaper_rules:
  max_user_sessions: 10
  max_user_offline_messages:
    5000: admin
    100: all
  c2s_shaper:
    none: admin
    normal: all
  s2s_shaper: fast
modules:
  mod_adhoc: {{}}
  mod_admin_extra: {{}}
  mod_announce:
    access: announce
  mod_avatar: {{}}
  mod_blocking: {{}}
  mod_caps: {{}}
  mod_carboncopy: {{}}
  mod_client_state: {{}}
  mod_configure: {{}}
  mod_disco: {{}}
  mod_fail2ban: {{}}
  mod_last: {{}}
{mam}  mod_muc:
    access:
      - allow
    access_admin:
      - allow: admin
    access_create: muc_create
    access_persistent: muc_create
    access_mam:
      - allow
    default_room_options:
      mam: true
  mod_muc_admin: {{}}
  mod_offline:
    access_max_user_messages: max_user_offline_messages
  mod_ping: {{}}
  mod_pres_counter:
    count: 5
    interval: 60
  mod_privacy: {{}}
  mod_private: {{}}
  mod_pubsub:
    access_createnode: pubsub_createnode
    plugins:
      - flat
      - pep
    force_node_config:
      "eu.siacs.conversations.axolotl.*":
        access_model: open
      storage:bookmarks:
        access_model: whitelist
  mod_push: {{}}
  mod_push_keepalive: {{}}
  mod_roster:
    versioning: true
  mod_shared_roster: {{}}
  mod_sic: {{}}
  mod_stream_mgmt:
    resend_on_timeout: if_offline
  mod_vcard:
    search: false
  mod_vcard_xupdate: {{}}
  mod_version: {{}}
"""

# For the federation tests (tests/integration/test_federation_ejabberd.py): c2s and s2s on
# loopback, Mnesia, Server Dialback unless `dialback` is empty (certificates only: SASL EXTERNAL
# with the CA file). ejabberd has no static s2s route: its SRV lookups go to the one nameserver
# the Erlang `inetrc` this module writes names, the caller's DNS server on a loopback port
# (tests/support/dns.py), whose SRV records point at localhost (the module docstring says why).
FEDERATION_CONFIG = """# written by bench/peers/ejabberd.py for the federation tests
hosts: ["{domain}"]
loglevel: info
certfiles: ["{cert}", "{key}"]
{ca_file}define_macro: {{}}
listen:
  - port: {port}
    ip: "127.0.0.1"
    module: ejabberd_c2s
    starttls: true
    starttls_required: true
  - port: {s2s_port}
    ip: "127.0.0.1"
    module: ejabberd_s2s_in
auth_password_format: scram
auth_scram_hash: sha256
auth_method: [mnesia]
default_db: mnesia
s2s_access: all
s2s_use_starttls: required
s2s_dns_timeout: 2
s2s_dns_retries: 1
outgoing_s2s_families: [ipv4]
outgoing_s2s_timeout: 20
s2s_timeout: 60
modules:
  mod_disco: {{}}
  mod_ping: {{}}
  mod_roster: {{}}
  mod_offline: {{}}
  mod_version: {{}}
{dialback}"""

# Empty resolv_conf: Erlang's resolver would otherwise re-read the machine's /etc/resolv.conf
# and put its nameservers back in place of this one. The hosts file stays first for the node's
# own names (ejabberdctl's control node reaches the node at "localhost").
FEDERATION_INETRC = """{{resolv_conf, ""}}.
{{lookup, [file, dns]}}.
{{nameserver, {{127,0,0,1}}, {dns_port}}}.
"""

# The package's mod_mam block, enabled as its comment says once SQL is configured.
DEFAULT_MAM = """  mod_mam:
    db_type: sql
    assume_mam_usage: true
    default: always
"""

CTL_CONFIG = """# sourced by ejabberdctl (bench/peers/ejabberd.py): run as the current user, no epmd
EXEC_CMD=as_current_user
ERL_DIST_PORT={dist_port}
ERL_EPMD_ADDRESS=127.0.0.1
ERLANG_NODE={node}
"""

DERIVE_THREADS = 4  # hashlib's PBKDF2 releases the GIL
REGISTER_CHUNK = 1000  # accounts per erl_call (one Erlang expression each)
REGISTER_PROCESSES = 4  # Erlang processes registering at once in each call
ERL_CALL_TIMEOUT = 300.0
STORES = ("native", "sqlite", "pgsql")  # native: ejabberd's default store (Mnesia, on disc)
SQLITE_STORAGE = """auth_method: [sql]
sql_type: sqlite
sql_database: "{database}"
default_db: sql
"""
PGSQL_STORAGE = """auth_method: [sql]
sql_type: pgsql
sql_server: "{db.host}"
sql_port: {db.port}
sql_database: "{db.name}"
sql_username: "{db.user}"
sql_password: "{db.password}"
default_db: sql
"""
NATIVE_STORAGE = """auth_method: [mnesia]
default_db: mnesia
"""
SQL_DIR = Path("/usr/share/ejabberd/sql")  # from Debian's ejabberd package
SQLITE_SCHEMA = SQL_DIR / "lite.sql"
# 23.01 makes no tables itself (update_sql_schema came in 23.10): its single-domain schema.
PGSQL_SCHEMA = SQL_DIR / "pg.sql"
SCRAM_HASHES = {"SCRAM-SHA-1": "sha", "SCRAM-SHA-256": "sha256", None: "sha256"}
HASH_NAMES = {"sha": "SHA-1", "sha256": "SHA-256"}  # ejabberd's name -> hashlib's (imactor.xmpp.scram)
SCRAM_ITERATIONS = 4096  # ejabberd's own count for new credentials (?SCRAM_DEFAULT_ITERATION_COUNT)


def _ctl_args(home: Path) -> list[str]:
    return [require("ejabberdctl"), "--config-dir", str(home), "--config", str(home / "ejabberd.yml"),
            "--ctl-config", str(home / "ejabberdctl.cfg"), "--spool", str(home / "spool"),
            "--logs", str(home / "logs")]  # fmt: skip


class ErlCall:
    """Erlang expressions evaluated in the running node, over its distribution port."""

    def __init__(self, home: Path, dist_port: int) -> None:
        self.home = home
        self.dist_port = dist_port

    def eval(self, expression: str, timeout: float = ERL_CALL_TIMEOUT) -> str:
        """The printed result of `expression` (ending in "."), or a PeerError."""
        cookie = (self.home / ".erlang.cookie").read_text().strip()
        command = [require("erl_call"), "-c", cookie, "-address", f"127.0.0.1:{self.dist_port}",
                   "-timeout", str(int(timeout)), "-e"]  # fmt: skip
        result = subprocess.run(command, input=expression + "\n", capture_output=True, text=True,
                                timeout=timeout + 10, check=False)  # fmt: skip
        if result.returncode != 0 or not result.stdout.startswith("{ok,"):
            raise PeerError(f"erl_call: {result.returncode} {result.stdout[-1000:]} {result.stderr[-1000:]}")
        return result.stdout


def wait_started(erl: ErlCall, proc: subprocess.Popen[bytes], log: Path,
                 timeout: float = START_TIMEOUT) -> None:  # fmt: skip
    """Until the ejabberd application has started (its listeners open before its modules and
    authentication tables are ready)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise PeerError(f"ejabberd exited with {proc.returncode}; log:\n{tail(log)}")
        with contextlib.suppress(PeerError, OSError, subprocess.TimeoutExpired):
            if "true" in erl.eval("lists:keymember(ejabberd, 1, application:which_applications()).", 10):
                return
        time.sleep(0.5)
    raise PeerError(f"ejabberd did not finish starting within {timeout:.0f} s; log:\n{tail(log)}")


def _erlang_binary(data: str | bytes) -> str:
    text = data if isinstance(data, str) else base64.b64encode(data).decode()
    return '<<"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"/utf8>>'


def add_users(erl: ErlCall, users: Sequence[tuple[str, str]], domain: str, scram_hash: str) -> None:
    """Register the accounts with `ejabberd_auth:try_register/3` and ready-made SCRAM credentials
    (ejabberd's #scram record: base64 StoredKey, ServerKey and salt, the hash, the iterations),
    which it stores as they are in whichever store `auth_method` names."""
    hash_name = HASH_NAMES[scram_hash]

    def derive(password: str) -> ScramCredentials:
        return derive_credentials(hash_name, password, iterations=SCRAM_ITERATIONS)

    with ThreadPoolExecutor(DERIVE_THREADS) as pool:
        credentials = list(pool.map(derive, [password for _, password in users], chunksize=64))

    def record(name: str, c: ScramCredentials) -> str:
        keys = f"{_erlang_binary(c.stored_key)},{_erlang_binary(c.server_key)},{_erlang_binary(c.salt)}"
        return f"{{{_erlang_binary(name)},{{scram,{keys},{scram_hash},{c.iterations}}}}}"

    records = [record(name, c) for (name, _), c in zip(users, credentials, strict=True)]
    for start in range(0, len(records), REGISTER_CHUNK):
        chunk = records[start : start + REGISTER_CHUNK]
        # a few processes at once: with an SQL store each account is a transaction of its own,
        # and concurrent ones share their commits' WAL flushes
        lists = ",".join(
            "[" + ",".join(chunk[k::REGISTER_PROCESSES]) + "]" for k in range(REGISTER_PROCESSES)
        )
        expression = (f"Host = {_erlang_binary(domain)}, Self = self(), "
                      "Register = fun(L) -> [{U, R} || {U, S} <- L, "
                      "(R = ejabberd_auth:try_register(U, Host, S)) /= ok] end, "
                      "Workers = [spawn(fun() -> Self ! {registered, Register(L)} end) "
                      f"|| L <- [{lists}]], "
                      "lists:append([receive {registered, F} -> F end || _ <- Workers]).")  # fmt: skip
        answer = erl.eval(expression)
        if answer.strip() != "{ok, []}":
            raise PeerError(f"ejabberd_auth:try_register failed: {answer[:1000]}")


def _storage(store: str, home: Path, database: Database | None) -> str:
    if store == "sqlite":
        path = home / "ejabberd.db"
        wal_database(path, SQLITE_SCHEMA.read_text())
        return SQLITE_STORAGE.format(database=path)
    if store == "pgsql":
        assert database is not None
        return PGSQL_STORAGE.format(db=database)
    if store == "native":
        return NATIVE_STORAGE
    raise PeerError(f"ejabberd profile: unknown store {store!r}: one of {', '.join(STORES)}")


def write_config(home: Path, *, profile: str, store: str, database: Database | None, domain: str,
                 port: int, tls: bool, sasl: str | None) -> str:  # fmt: skip
    """ejabberd.yml for `profile` ("default" or "bench") and `store` (module docstring)."""
    cert, key = write_certificate(home, domain)
    values = {"domain": domain, "cert": cert, "key": key, "port": port,
              "require_tls": str(tls).lower(), "scram_hash": SCRAM_HASHES[sasl],
              "storage": _storage(store, home, database)}  # fmt: skip
    if profile == "default":
        if store == "sqlite":
            raise PeerError("ejabberd default profile: Mnesia (native) or PostgreSQL (pgsql)")
        # the archive exactly when the store is SQL (the package's comment on mod_mam)
        config = DEFAULT_CONFIG.format(**values, mam=DEFAULT_MAM if store == "pgsql" else "")
    elif profile == "bench":
        config = BENCH_CONFIG.format(**values)
    else:
        raise PeerError(f"ejabberd: unknown profile {profile!r}: default or bench")
    (home / "ejabberd.yml").write_text(config)
    return config


@contextmanager
def running_ejabberd(directory: Path, users: Sequence[tuple[str, str]], *, tls: bool = True,
                     domain: str = "localhost", store: str = "native", profile: str = "bench",
                     sasl: str | None = None) -> Iterator[Target]:  # fmt: skip
    """ejabberd with `profile` on `store` (with "pgsql", on a throw-away PostgreSQL cluster
    started here, measured as part of the server); the accounts `users` registered."""
    home = _home(directory)
    port, dist_port = free_ports(2)
    (home / "inetrc").write_text("")  # ejabberdctl points ERL_INETRC here; empty: the defaults
    with ExitStack() as stack:
        database, database_pid = None, None
        if store == "pgsql":
            postgres = stack.enter_context(running_postgres(directory))
            database = postgres.create_database("ejabberd", PGSQL_SCHEMA)
            database_pid = postgres.pid
        write_config(home, profile=profile, store=store, database=database, domain=domain, port=port,
                     tls=tls, sasl=sasl)  # fmt: skip
        with _started(home, port, dist_port, users, domain, SCRAM_HASHES[sasl]) as pid:
            yield Target("127.0.0.1", port, domain, pid, database_pid)


@dataclass(frozen=True)
class FederatedEjabberd:
    c2s_port: int
    s2s_port: int
    domain: str
    home: Path
    pid: int


@contextmanager
def running_federated_ejabberd(directory: Path, users: Sequence[tuple[str, str]], *, domain: str,
                               s2s_port: int, dns_port: int, ca: tuple[Path, Path, Path] | None = None,
                               ) -> Iterator[FederatedEjabberd]:  # fmt: skip
    """ejabberd serving `domain`, federating on `s2s_port` (chosen by the caller, who pins it in
    the peer's configuration first); it finds its peers through the DNS server on loopback
    `dns_port` alone.

    Without `ca`, a self-signed certificate and Server Dialback (mod_s2s_dialback). With `ca`
    (certificate, key, CA file): that certificate, the CA to check peers' with, and no dialback,
    so that only SASL EXTERNAL with a certificate the CA signed authenticates a stream."""
    home = _home(directory)
    port, dist_port = free_ports(2)
    (home / "inetrc").write_text(FEDERATION_INETRC.format(dns_port=dns_port))
    cert, key = write_certificate(home, domain) if ca is None else ca[:2]
    config = FEDERATION_CONFIG.format(
        domain=domain, cert=cert, key=key, port=port, s2s_port=s2s_port,
        ca_file="" if ca is None else f'ca_file: "{ca[2]}"\n',
        dialback="  mod_s2s_dialback: {}\n" if ca is None else "",
    )  # fmt: skip
    (home / "ejabberd.yml").write_text(config)
    with _started(home, port, dist_port, users, domain, "sha256") as pid:
        wait_for_port(s2s_port, None, home / "logs" / "ejabberd.log")
        yield FederatedEjabberd(port, s2s_port, domain, home, pid)


def _home(directory: Path) -> Path:
    home = directory / "ejabberd"
    for sub in ("spool", "logs"):
        (home / sub).mkdir(parents=True)
    return home


@contextmanager
def _started(home: Path, port: int, dist_port: int, users: Sequence[tuple[str, str]], domain: str,
             scram_hash: str) -> Iterator[int]:  # fmt: skip
    """Run ejabberd from `home` (its ejabberd.yml written) until the block ends; the accounts
    `users` registered. Yields its pid."""
    node = f"bench{os.getpid()}-{dist_port}@localhost"
    (home / "ejabberdctl.cfg").write_text(CTL_CONFIG.format(dist_port=dist_port, node=node))
    env = dict(os.environ, HOME=str(home))
    log = home / "stdout.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([*_ctl_args(home), "foreground"], stdout=out, stderr=out,
                                stdin=subprocess.DEVNULL, cwd=home, env=env)  # fmt: skip
    try:
        wait_for_port(port, proc, log)
        erl = ErlCall(home, dist_port)
        wait_started(erl, proc, log)
        try:
            add_users(erl, users, domain, scram_hash)
        except (PeerError, OSError, subprocess.TimeoutExpired) as exc:
            raise PeerError(f"{exc}\nejabberd log:\n{tail(home / 'logs' / 'ejabberd.log')}") from exc
        yield proc.pid
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
