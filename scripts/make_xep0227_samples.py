"""Regenerate tests/data/xep0227/: XEP-0227 exports written by a real Prosody and a real ejabberd.

    sh scripts/install-peers.sh                     # once, as root: Debian's prosody and ejabberd
    .venv/bin/python scripts/make_xep0227_samples.py

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
data_path = "{home}/data"
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


def prosody_samples(work: Path) -> list[Path]:
    home = work / "prosody"
    for sub in ("data", "certs", "export"):
        (home / sub).mkdir(parents=True)
    (port,) = free_ports(1)
    cert, key = write_certificate(home, DOMAIN)
    config = home / "prosody.cfg.lua"
    config.write_text(PROSODY_CONFIG.format(home=home, port=port, cert=cert, key=key, domain=DOMAIN))
    ctl = [require("prosodyctl"), "--config", str(config)]
    for name, password in PASSWORDS.items():
        subprocess.run(
            [*ctl, "register", name, DOMAIN, password], check=True, capture_output=True, timeout=60
        )
    log = home / "stderr.log"
    with log.open("wb") as err:
        proc = subprocess.Popen([require("prosody"), "--config", str(config), "-F"], stdout=err, stderr=err,
                                stdin=subprocess.DEVNULL, cwd=home)  # fmt: skip
    try:
        wait_for_port(port, proc, log)
        run_scenario(port)
    except BaseException:
        print(tail(home / "prosody.log"), file=sys.stderr)
        raise
    finally:
        stop_tree(proc)
    # The packaged migrator's data path is /var/lib/prosody: a copy with ours in its place.
    script = Path(require("prosody-migrator")).read_text()
    migrator = home / "prosody-migrator"
    migrator.write_text(script.replace("CFG_DATADIR='/var/lib/prosody'", f"CFG_DATADIR='{home / 'export'}'"))
    (home / "migrator.cfg.lua").write_text(
        MIGRATOR_CONFIG.format(home=home, domain=DOMAIN, out=home / "export")
    )
    settings = str(home / "migrator.cfg.lua")
    command = ["lua5.4", str(migrator), "--root", "--config", settings, "input", "output"]
    subprocess.run(command, check=True, timeout=120, cwd=home)
    target = OUT / "prosody"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    files = []
    for path in sorted((home / "export").glob("*.xml")):
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


def ejabberd_samples(work: Path) -> list[Path]:
    home = work / "ejabberd"
    for sub in ("spool", "logs", "export"):
        (home / sub).mkdir(parents=True)
    port, dist_port = free_ports(2)
    (home / "inetrc").write_text("")
    cert, key = write_certificate(home, DOMAIN)
    (home / "ejabberd.yml").write_text(EJABBERD_CONFIG.format(domain=DOMAIN, cert=cert, key=key, port=port))
    (home / "ejabberdctl.cfg").write_text(
        CTL_CONFIG.format(dist_port=dist_port, node=f"samples{os.getpid()}@localhost")
    )
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
        for name, password in PASSWORDS.items():
            command = [*ctl, "register", name, DOMAIN, password]
            subprocess.run(command, env=env, check=True, capture_output=True, timeout=60)
        run_scenario(port)
        export = home / "export"
        subprocess.run(
            [*ctl, "export_piefxis", str(export)], env=env, check=True, capture_output=True, timeout=120
        )
    except BaseException:
        print(tail(home / "logs" / "ejabberd.log"), file=sys.stderr)
        raise
    finally:
        if proc.poll() is None:
            subprocess.run([*ctl, "stop"], env=env, capture_output=True, timeout=60, check=False)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(30)
        stop_tree(proc)
    target = OUT / "ejabberd"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(home / "export", target)
    return sorted(p for p in target.rglob("*.xml"))


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
    return 0


if __name__ == "__main__":
    sys.exit(main())
