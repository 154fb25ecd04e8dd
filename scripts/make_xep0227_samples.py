"""Regenerate tests/data/xep0227/: XEP-0227 exports written by a real Prosody and a real ejabberd.

    sh scripts/install-peers.sh                     # once, as root: Debian's prosody and ejabberd
    .venv/bin/python scripts/make_xep0227_samples.py            # both peers' samples
    .venv/bin/python scripts/make_xep0227_samples.py prosody    # or one of them
    .venv/bin/python scripts/make_xep0227_samples.py back       # and back: see below

Each peer runs as the current user, on loopback ports the OS picks, with its config, data and
logs in a temp dir (the system services and their files are never touched; the processes this
script starts are stopped by their pid). Three accounts play the same scenario on each peer,
through raw XML clients (tests/support/peer.py) over STARTTLS with SASL PLAIN:

- alice and bob: each has the other in the roster with a name and groups, subscription both;
- carol asked alice for a subscription that alice never answered (alice: pending inbound;
  carol: ask="subscribe");
- alice has a vCard (vcard-temp), a XEP-0049 private element (XEP-0145 roster notes) and a PEP
  node (XEP-0172 nick);
- alice and bob chatted while both were online (the message archive, where the peer keeps one);
- alice wrote to bob while bob was offline (an offline message).

Then the peer is stopped and its own exporter writes the XEP-0227 files:

- Prosody: `prosody-migrator` from its internal store to its `xep0227` store (one file per
  user). The migrator takes its data path from the packaged script (/var/lib/prosody), so this
  runs a copy of the script with the temp dir in its place.
- ejabberd: `ejabberdctl export_piefxis DIR` (XInclude: a main file, a file per host, a file
  per user).

`back` checks the other direction (nothing is written to the repository): the Prosody samples
and an account of imactor's own go into a temporary imactor, `imactor export --for ejabberd` and
`--for prosody` write them out, `ejabberdctl import_piefxis` and `prosody-migrator` (from its
xep0227 store to its internal one) read them in, and the users log in to each peer with their
old passwords over SCRAM-SHA-1 and find their rosters.

The samples in the repository were produced with Debian 12's prosody 0.12.3-1+deb12u1 and
ejabberd 23.01-1 (Erlang/OTP 25). The script prints the versions it finds.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.peers.common import free_ports, require, stop_tree, tail, wait_for_port, write_certificate  # noqa: E402
from tests.support.peer import Peer, presence  # noqa: E402

OUT = ROOT / "tests" / "data" / "xep0227"
DOMAIN = "localhost"
PASSWORDS = {"alice": "Wonderland-1865", "bob": "builder!Bob", "carol": "c@rol's secret"}
TIMEOUT = 30.0

VCARD = (
    "<vCard xmlns='vcard-temp'><FN>Alice Liddell</FN><NICKNAME>alice</NICKNAME>"
    "<EMAIL><INTERNET/><USERID>alice@example.com</USERID></EMAIL></vCard>"
)
PRIVATE = (
    "<query xmlns='jabber:iq:private'><storage xmlns='storage:rosternotes'>"
    "<note jid='bob@localhost'>Met at the tea party</note></storage></query>"
)
NICK = (
    "<pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='http://jabber.org/protocol/nick'>"
    "<item id='current'><nick xmlns='http://jabber.org/protocol/nick'>Alice L.</nick></item>"
    "</publish></pubsub>"
)


def jid(name: str) -> str:
    return f"{name}@{DOMAIN}"


async def roster_settled(peer: Peer, contact: str, subscription: str, ask: bool) -> None:
    """Until the peer's roster shows `contact` in the given state (the subscription handshake
    crosses both servers' user sessions: pushes may come in either order)."""
    with trio.fail_after(TIMEOUT):
        while True:
            item = (await peer.roster_items()).get(contact)
            if (
                item is not None
                and item.get("subscription") == subscription
                and (item.get("ask") == "subscribe") == ask
            ):
                return
            await trio.sleep(0.1)


def _ok(reply: object, what: str) -> None:
    from lxml import etree

    assert isinstance(reply, etree._Element)
    if reply.get("type") != "result":
        raise RuntimeError(f"{what}: {etree.tostring(reply).decode()}")


async def play_scenario(port: int) -> None:
    """The scenario of the module docstring, on the peer listening on `port`."""
    alice = await Peer.online(port, "alice", PASSWORDS["alice"], "laptop")
    bob = await Peer.online(port, "bob", PASSWORDS["bob"], "phone")
    carol = await Peer.online(port, "carol", PASSWORDS["carol"], "desk")

    _ok(
        await alice.roster_set(
            f"<item jid='{jid('bob')}' name='Bob'><group>Friends</group><group>Work</group></item>"
        ),
        "roster set",
    )
    _ok(
        await bob.roster_set(f"<item jid='{jid('alice')}' name='Alice'><group>Friends</group></item>"),
        "roster set",
    )
    await alice.send(f"<presence to='{jid('bob')}' type='subscribe'/>")
    await bob.expect(presence(from_=jid("alice"), type_="subscribe"))
    await bob.send(f"<presence to='{jid('alice')}' type='subscribed'/>")
    await bob.send(f"<presence to='{jid('alice')}' type='subscribe'/>")
    await alice.expect(presence(from_=jid("bob"), type_="subscribe"))
    await alice.send(f"<presence to='{jid('bob')}' type='subscribed'/>")
    await roster_settled(alice, jid("bob"), "both", False)
    await roster_settled(bob, jid("alice"), "both", False)

    _ok(
        await carol.roster_set(f"<item jid='{jid('alice')}' name='Alice'><group>Colleagues</group></item>"),
        "roster set",
    )
    await carol.send(f"<presence to='{jid('alice')}' type='subscribe'/>")
    await alice.expect(presence(from_=jid("carol"), type_="subscribe"))  # never answered
    await roster_settled(carol, jid("alice"), "none", True)

    _ok(await alice.iq(VCARD, type_="set"), "vCard set")
    _ok(await alice.iq(PRIVATE, type_="set"), "private set")
    _ok(await alice.iq(NICK, type_="set"), "PEP publish")

    await alice.send(f"<message to='{jid('bob')}' type='chat' id='m1'><body>Hello Bob</body></message>")
    await bob.expect(
        lambda e: e.tag == "{jabber:client}message" and e.findtext("{jabber:client}body") == "Hello Bob"
    )
    await bob.send(f"<message to='{jid('alice')}' type='chat' id='m2'><body>Hi Alice!</body></message>")
    await alice.expect(
        lambda e: e.tag == "{jabber:client}message" and e.findtext("{jabber:client}body") == "Hi Alice!"
    )

    await bob.aclose()
    await alice.expect(presence(from_=bob.jid, type_="unavailable"))
    await alice.send(
        f"<message to='{jid('bob')}' type='chat' id='m3'><body>Are you there, Bob?</body></message>"
    )
    await alice.sync()  # a round trip after the message: the peer has stored it
    await alice.aclose()
    await carol.aclose()


def run_scenario(port: int) -> None:
    async def main() -> None:
        with trio.fail_after(4 * TIMEOUT):
            await play_scenario(port)

    trio.run(main)


# ---- Prosody --------------------------------------------------------------------------------

PROSODY_CONFIG = """-- written by scripts/make_xep0227_samples.py
pidfile = "{home}/prosody.pid"
data_path = "{data}"
run_as_root = true
certificates = "{home}/certs"
log = {{ info = "{home}/prosody.log" }}
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {port} }}
c2s_direct_tls_ports = {{ }}
s2s_ports = {{ }}
http_ports = {{ }}
https_ports = {{ }}
ssl = {{ certificate = "{cert}"; key = "{key}"; }}
authentication = "internal_hashed"
modules_enabled = {{
    "roster"; "saslauth"; "tls"; "disco"; "ping"; "private"; "vcard"; "pep"; "mam";
}}
modules_disabled = {{ "s2s" }}
default_archive_policy = true

VirtualHost "{domain}"
"""

MIGRATOR_CONFIG = """-- written by scripts/make_xep0227_samples.py
input {{
    type = "internal";
    path = "{home}/data";
    hosts = {{ ["{domain}"] = {{
        "accounts", "roster", "vcard", "private", "archive-archive", "pep-pubsub",
    }} }};
}}
output {{
    type = "xep0227";
    path = "{out}";
}}
"""


@contextlib.contextmanager
def running_prosody(home: Path, data: Path) -> Iterator[int]:
    """Prosody on a free loopback port with its store in `data`; yields the port."""
    (home / "certs").mkdir(parents=True, exist_ok=True)
    data.mkdir(parents=True, exist_ok=True)
    (port,) = free_ports(1)
    cert, key = write_certificate(home, DOMAIN)
    config = home / "prosody.cfg.lua"
    config.write_text(
        PROSODY_CONFIG.format(home=home, data=data, port=port, cert=cert, key=key, domain=DOMAIN)
    )
    ctl = [require("prosodyctl"), "--config", str(config)]
    if not any(data.iterdir()):
        for name, password in PASSWORDS.items():
            command = [*ctl, "register", name, DOMAIN, password]
            subprocess.run(command, check=True, capture_output=True, timeout=60)
    log = home / "stderr.log"
    with log.open("wb") as err:
        proc = subprocess.Popen([require("prosody"), "--config", str(config), "-F"], stdout=err, stderr=err,
                                stdin=subprocess.DEVNULL, cwd=home)  # fmt: skip
    try:
        wait_for_port(port, proc, log)
        yield port
    except BaseException:
        print(tail(home / "prosody.log"), file=sys.stderr)
        raise
    finally:
        stop_tree(proc)


def prosody_migrate(home: Path, settings: str, xep0227_dir: Path, *options: str) -> None:
    """Run prosody-migrator with `settings` (its input and output stores). The packaged script's
    data path, where the xep0227 store keeps its files, is /var/lib/prosody: a copy with
    `xep0227_dir` in its place."""
    script = Path(require("prosody-migrator")).read_text()
    migrator = home / "prosody-migrator"
    migrator.write_text(script.replace("CFG_DATADIR='/var/lib/prosody'", f"CFG_DATADIR='{xep0227_dir}'"))
    (home / "migrator.cfg.lua").write_text(settings)
    settings_file = str(home / "migrator.cfg.lua")
    command = ["lua5.4", str(migrator), "--root", *options, "--config", settings_file, "input", "output"]
    subprocess.run(command, check=True, timeout=120, cwd=home)


def prosody_samples(work: Path) -> list[Path]:
    home = work / "prosody"
    with running_prosody(home, home / "data") as port:
        run_scenario(port)
    export = home / "export"
    export.mkdir()
    prosody_migrate(home, MIGRATOR_CONFIG.format(home=home, domain=DOMAIN, out=export), export)
    target = OUT / "prosody"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    files = []
    for path in sorted(export.glob("*.xml")):
        shutil.copy(path, target / path.name)
        files.append(target / path.name)
    return files


# ---- ejabberd -------------------------------------------------------------------------------

EJABBERD_CONFIG = """# written by scripts/make_xep0227_samples.py
hosts: ["{domain}"]
loglevel: info
certfiles: ["{cert}", "{key}"]
listen:
  - port: {port}
    ip: "127.0.0.1"
    module: ejabberd_c2s
    starttls: true
    starttls_required: true
# As Debian's /etc/ejabberd/ejabberd.yml: SCRAM verifiers, not passwords (SHA-1, ejabberd's default hash)
auth_password_format: scram
auth_method: [mnesia]
default_db: mnesia
s2s_access: none
acl:
  local:
    user_regexp: ""
access_rules:
  local:
    allow: local
api_permissions:
  "console commands":
    from:
      - ejabberd_ctl
    who: all
    what: "*"
modules:
  mod_disco: {{}}
  mod_ping: {{}}
  mod_roster: {{}}
  mod_offline: {{}}
  mod_private: {{}}
  mod_vcard:
    search: false
  mod_caps: {{}}
  mod_pubsub:
    plugins:
      - flat
      - pep
  mod_mam:
    default: always
"""

CTL_CONFIG = """# sourced by ejabberdctl: run as the current user, no epmd
EXEC_CMD=as_current_user
ERL_DIST_PORT={dist_port}
ERL_EPMD_ADDRESS=127.0.0.1
ERLANG_NODE={node}
"""


@contextlib.contextmanager
def running_ejabberd(home: Path) -> Iterator[tuple[int, list[str], dict[str, str]]]:
    """ejabberd on a free loopback port (Mnesia in `home`); yields the port and how to run
    ejabberdctl against it (command and environment)."""
    for sub in ("spool", "logs"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    port, dist_port = free_ports(2)
    (home / "inetrc").write_text("")
    cert, key = write_certificate(home, DOMAIN)
    (home / "ejabberd.yml").write_text(EJABBERD_CONFIG.format(domain=DOMAIN, cert=cert, key=key, port=port))
    node = f"samples{os.getpid()}@localhost"
    (home / "ejabberdctl.cfg").write_text(CTL_CONFIG.format(dist_port=dist_port, node=node))
    ctl = [require("ejabberdctl"), "--config-dir", str(home), "--config", str(home / "ejabberd.yml"),
           "--ctl-config", str(home / "ejabberdctl.cfg"), "--spool", str(home / "spool"),
           "--logs", str(home / "logs")]  # fmt: skip
    env = dict(os.environ, HOME=str(home))
    log = home / "stdout.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([*ctl, "foreground"], stdout=out, stderr=out, stdin=subprocess.DEVNULL,
                                cwd=home, env=env)  # fmt: skip
    try:
        wait_for_port(port, proc, log)
        subprocess.run([*ctl, "started"], env=env, check=True, capture_output=True, timeout=120)
        yield port, ctl, env
    except BaseException:
        print(tail(home / "logs" / "ejabberd.log"), file=sys.stderr)
        raise
    finally:
        if proc.poll() is None:
            subprocess.run([*ctl, "stop"], env=env, capture_output=True, timeout=60, check=False)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(30)
        stop_tree(proc)


def ejabberd_samples(work: Path) -> list[Path]:
    home = work / "ejabberd"
    export = home / "export"
    with running_ejabberd(home) as (port, ctl, env):
        for name, password in PASSWORDS.items():
            command = [*ctl, "register", name, DOMAIN, password]
            subprocess.run(command, env=env, check=True, capture_output=True, timeout=60)
        run_scenario(port)
        export.mkdir()
        command = [*ctl, "export_piefxis", str(export)]
        subprocess.run(command, env=env, check=True, capture_output=True, timeout=120)
    target = OUT / "ejabberd"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(export, target)
    return sorted(p for p in target.rglob("*.xml"))


# ---- and back: imactor's exports into the peers ------------------------------------------------

BACK_MIGRATOR_CONFIG = """-- written by scripts/make_xep0227_samples.py (back)
input {{
    type = "xep0227";
    hosts = {{ ["{domain}"] = {{
        "accounts", "roster", "vcard", "private", "archive-archive", "pep-pubsub",
    }} }};
}}
output {{
    type = "internal";
    path = "{data}";
}}
"""
DAVE = ("dave", "an imactor account")


def imactor_exports(work: Path) -> tuple[Path, Path]:
    """imactor with the Prosody samples imported and one account of its own (both verifiers),
    exported for ejabberd (one file) and for Prosody (a directory of per-user files)."""
    home = work / "imactor"
    home.mkdir()
    config = home / "imactor.toml"
    config.write_text(f'[server]\ndomain = "{DOMAIN}"\ndata_dir = "data"\n')
    imactor = [sys.executable, "-m", "imactor"]
    steps = [
        ["import", *map(str, sorted((OUT / "prosody").glob("*.xml")))],
        ["user", "add", DAVE[0], "--password", DAVE[1]],
        ["export", "--for", "ejabberd", str(home / "for-ejabberd.xml")],
        ["export", "--for", "prosody", str(home / "for-prosody")],
    ]
    for step in steps:
        subprocess.run([*imactor, *step, "--config", str(config)], check=True, timeout=120, cwd=ROOT)
    return home / "for-ejabberd.xml", home / "for-prosody"


async def logins(port: int) -> None:
    """Old passwords over SCRAM-SHA-1 (both peers keep SHA-1 here), and alice's roster."""
    from tests.support.clients import SASL_NS, ScramClient, raw_scram, raw_tls_stream

    for name, password in (("alice", PASSWORDS["alice"]), DAVE):
        client, _ = await raw_tls_stream(port)
        result, server_first = await raw_scram(
            client, ScramClient("SCRAM-SHA-1", name, password), "SCRAM-SHA-1"
        )
        await client.aclose()
        if result.tag != f"{{{SASL_NS}}}success":
            raise RuntimeError(f"{name}: SCRAM-SHA-1 failed")
        print(f"  {name}: SCRAM-SHA-1 with the old password: ok ({(server_first or b'').decode()})")
    alice = await Peer.login(port, "alice", PASSWORDS["alice"], "back")
    items = await alice.roster_items()
    await alice.aclose()
    if items.get(jid("bob")) is None or items[jid("bob")].get("subscription") != "both":
        raise RuntimeError(f"alice's roster: {sorted(items)}")
    print(f"  alice's roster: {sorted(items)}")


def back(work: Path) -> None:
    for_ejabberd, for_prosody = imactor_exports(work)
    print(f"ejabberd: ejabberdctl import_piefxis {for_ejabberd.name}")
    with running_ejabberd(work / "ejabberd-back") as (port, ctl, env):
        command = [*ctl, "import_piefxis", str(for_ejabberd)]
        subprocess.run(command, env=env, check=True, capture_output=True, timeout=120)
        trio.run(logins, port)
    print(f"prosody: prosody-migrator from its xep0227 store ({for_prosody.name}/) to its internal store")
    home = work / "prosody-back"
    home.mkdir()
    # --keep-going: Prosody 0.12.3's xep0227 store fails the host-wide archive read that the
    # migrator makes before the users' ("no 227 user element found"); the users' archives follow.
    settings = BACK_MIGRATOR_CONFIG.format(domain=DOMAIN, data=home / "data")
    prosody_migrate(home, settings, for_prosody, "--keep-going")
    with running_prosody(home, home / "data") as port:
        trio.run(logins, port)


def versions() -> str:
    prosody = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "prosody"], capture_output=True, text=True)
    ejabberd = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", "ejabberd"], capture_output=True, text=True
    )
    return f"prosody {prosody.stdout}, ejabberd {ejabberd.stdout}"


def main() -> int:
    print(f"peers: {versions()}")
    with tempfile.TemporaryDirectory(prefix="xep0227-samples-") as tmp:
        work = Path(tmp)
        which = sys.argv[1:] or ["prosody", "ejabberd"]
        if "prosody" in which:
            for path in prosody_samples(work):
                print(f"wrote {path.relative_to(ROOT)}")
        if "ejabberd" in which:
            for path in ejabberd_samples(work):
                print(f"wrote {path.relative_to(ROOT)}")
        if "back" in which:
            back(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
