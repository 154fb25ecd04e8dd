"""Federation with a real ejabberd (Debian's package, 23.01): imactor.test <-> ejabberd.test.

As with Prosody (test_federation.py), both servers start once per pair, on loopback: imactor
(two workers) reaches ejabberd through `[s2s] routes`; ejabberd, which has no static s2s route,
has the test's DNS server on a loopback port as its only nameserver (tests/support/dns.py),
holding the SRV records of imactor.test and conference.imactor.test. Their target is
`localhost.`: ejabberd looks the SRV target's address up with the C library, which reads
/etc/hosts and the machine's resolv.conf, not Erlang's resolver configuration
(bench/peers/ejabberd.py). No real DNS. The
first pair authenticates with Server Dialback over STARTTLS (self-signed certificates); the
second (`certified`) with certificates a test CA signed, SASL EXTERNAL both ways and no dialback
on either side. ejabberd is installed by `scripts/install-peers.sh ejabberd` when missing.

ejabberd's accounts are bench0, bench1, ... (the shared helper's naming).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from bench.peers.common import free_ports
from bench.peers.ejabberd import FederatedEjabberd, running_federated_ejabberd
from tests.support.ca import TestCA
from tests.support.dns import StaticDns, static_dns
from tests.support.muc import create_instant, heard, join, say
from tests.support.peer import Peer, message, nothing_before_marker, presence, subscribe
from tests.support.peer_install import ensure_peer
from tests.support.server import ServerProcess, running_server
from tests.support.timeouts import TIMEOUT

IMACTOR, EJABBERD = "imactor.test", "ejabberd.test"
#: The names ejabberd must find in DNS to reach imactor: its domain and the room service, whose
#: stanzas leave from their own domain (dialback checks each against its own server).
IMACTOR_NAMES = (IMACTOR, f"conference.{IMACTOR}")
PASSWORD = "federation password"
IMACTOR_USERS = ["alice", "amy", "anna", "abel", "erin"]
EJABBERD_USERS = [f"bench{i}" for i in range(6)]


@dataclass
class Federation:
    imactor: ServerProcess
    ejabberd: FederatedEjabberd
    #: ejabberd's only nameserver; `asked` shows it found imactor's names there.
    dns: StaticDns

    async def imactor_user(self, name: str) -> Peer:
        return await Peer.online(self.imactor.c2s_port, name, PASSWORD, domain=IMACTOR)

    async def ejabberd_user(self, name: str) -> Peer:
        return await Peer.online(self.ejabberd.c2s_port, name, PASSWORD, domain=EJABBERD)


def s2s_config(ejabberd_s2s: int, options: str = "") -> str:
    return f"""
[listen.s2s]
host = "127.0.0.1"
port = 0

[s2s]
enabled = true
connect_timeout = 10.0
handshake_timeout = 20.0
routes = {{ "{EJABBERD}" = "127.0.0.1:{ejabberd_s2s}" }}
{options}"""


def _pair(directory: Path, ca: TestCA | None) -> Iterator[Federation]:
    """imactor and ejabberd federating: dialback (no `ca`) or certificates `ca` signed."""
    ensure_peer("ejabberd")
    (ejabberd_s2s,) = free_ports(1)  # pinned in imactor's route before ejabberd binds it
    options, peer_ca = "", None
    if ca is not None:
        ours, theirs = ca.issue(IMACTOR), ca.issue(EJABBERD)
        options = (f'require_valid_certificates = true\nca_file = "{ca.path}"\n\n'
                   f'[tls]\ncertificate = "{ours.certificate}"\nkey = "{ours.key}"\n')  # fmt: skip
        peer_ca = (theirs.certificate, theirs.key, ca.path)
    home = directory / "imactor"
    home.mkdir()
    imactor_users = [(name, PASSWORD) for name in IMACTOR_USERS]
    with (
        static_dns() as dns,
        running_server(home, domain=IMACTOR, extra=s2s_config(ejabberd_s2s, options), users=imactor_users,
                       workers=2) as imactor,
    ):  # fmt: skip
        for name in IMACTOR_NAMES:
            dns.add(f"_xmpp-server._tcp.{name}", "SRV", f"0 0 {imactor.ports['s2s']} localhost.")
        with running_federated_ejabberd(directory, [(name, PASSWORD) for name in EJABBERD_USERS],
                                        domain=EJABBERD, s2s_port=ejabberd_s2s, dns_port=dns.port,
                                        ca=peer_ca) as ejabberd:  # fmt: skip
            yield Federation(imactor, ejabberd, dns)


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    yield from _pair(tmp_path_factory.mktemp("ejabberd-dialback"), None)


@pytest.fixture(scope="module")
def certified(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    directory = tmp_path_factory.mktemp("ejabberd-certified")
    (directory / "ca").mkdir()
    yield from _pair(directory, TestCA(directory / "ca"))


async def test_chat_both_ways_with_dialback(federation: Federation) -> None:
    with trio.fail_after(TIMEOUT):
        alice = await federation.imactor_user("alice")
        bench0 = await federation.ejabberd_user("bench0")
        await alice.send(f"<message to='{bench0.jid}' type='chat' id='e1'><body>hi ejabberd</body></message>")
        got = await bench0.expect(message(from_=alice.jid, id_="e1"))
        assert got.findtext("{jabber:client}body") == "hi ejabberd"
        await bench0.send(f"<message to='{alice.bare}' type='chat' id='e2'><body>hi imactor</body></message>")
        back = await alice.expect(message(from_=bench0.jid, id_="e2"))
        assert back.findtext("{jabber:client}body") == "hi imactor"
        assert (f"_xmpp-server._tcp.{IMACTOR}.", "SRV") in federation.dns.asked


async def test_presence_subscriptions_both_ways(federation: Federation) -> None:
    with trio.fail_after(TIMEOUT):
        anna = await federation.imactor_user("anna")
        bench1 = await federation.ejabberd_user("bench1")
        await subscribe(anna, bench1)
        await subscribe(bench1, anna)
        assert (await anna.roster_items())[bench1.bare].get("subscription") == "both"
        assert (await bench1.roster_items())[anna.bare].get("subscription") == "both"
        await anna.send("<presence><status>federated</status></presence>")
        seen = await bench1.expect(presence(from_=anna.jid))
        assert seen.findtext("{jabber:client}status") == "federated"
        await bench1.send("<presence><show>away</show></presence>")
        seen = await anna.expect(presence(from_=bench1.jid))
        assert seen.findtext("{jabber:client}show") == "away"


async def test_an_ejabberd_user_in_an_imactor_room(federation: Federation) -> None:
    """The room's stanzas leave from conference.imactor.test: ejabberd checks that domain by
    dialback too, against imactor's room service."""
    room = f"lobby@conference.{IMACTOR}"
    with trio.fail_after(TIMEOUT):
        erin = await federation.imactor_user("erin")
        await create_instant(erin, room, "erin")
        bench2 = await federation.ejabberd_user("bench2")
        joined = await join(bench2, room, "guest")
        assert joined.self_presence.get("from") == f"{room}/guest"
        await say(erin, room, "welcome from imactor")
        await heard(bench2, room, "welcome from imactor")
        await say(bench2, room, "thanks from ejabberd")
        await heard(erin, room, "thanks from ejabberd")
        assert (f"_xmpp-server._tcp.conference.{IMACTOR}.", "SRV") in federation.dns.asked


async def test_an_ejabberd_user_cannot_send_as_another_domain(federation: Federation) -> None:
    """ejabberd ends a client's stream whose stanza claims someone else's address (here an
    imactor user's), so the forgery never leaves it: nothing reaches imactor ahead of a message
    from another ejabberd user over the same server-to-server stream. (imactor's own refusal of
    a domain a stream did not authenticate is tested with a raw server in test_federation.py.)"""
    with trio.fail_after(TIMEOUT):
        abel = await federation.imactor_user("abel")
        forger = await federation.ejabberd_user("bench4")
        honest = await federation.ejabberd_user("bench5")
        forged = f"<message from='alice@{IMACTOR}' to='{abel.jid}' id='forged'><body>x</body></message>"
        await forger.send(forged)
        assert await forger.raw.stream_error() == "invalid-from"
        await nothing_before_marker(honest, abel, message(id_="forged"))


async def test_chat_both_ways_with_certificates(certified: Federation) -> None:
    with trio.fail_after(TIMEOUT):
        amy = await certified.imactor_user("amy")
        bench3 = await certified.ejabberd_user("bench3")
        await amy.send(f"<message to='{bench3.jid}' type='chat' id='c1'><body>signed out</body></message>")
        got = await bench3.expect(message(from_=amy.jid, id_="c1"))
        assert got.findtext("{jabber:client}body") == "signed out"
        await bench3.send(f"<message to='{amy.jid}' type='chat' id='c2'><body>signed in</body></message>")
        back = await amy.expect(message(from_=bench3.jid, id_="c2"))
        assert back.findtext("{jabber:client}body") == "signed in"
