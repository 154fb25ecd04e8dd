"""XEP-0215 External Service Discovery over the wire: a logged-in client asks its server for the
STUN and TURN servers to use for calls, and for fresh TURN credentials (raw XML, following the
XEP's examples: neither slixmpp nor aioxmpp has a client for it)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from imactor.config import DEFAULT_MODULES
from tests.integration.conftest import PASSWORD
from tests.support.raw import RawClient
from tests.support.server import ServerProcess, running_server
from tests.support.timeouts import TIMEOUT

NS = "urn:xmpp:extdisco:2"
SECRET = "a shared secret with the TURN server"
MODULES = ", ".join(f'"{name}"' for name in (*DEFAULT_MODULES, "extdisco"))
SERVICES = f"""
[modules.extdisco]
services = [
    {{ type = "stun", host = "stun.example.com" }},
    {{ type = "turn", host = "turn.example.com", port = 3478, secret = "{SECRET}", ttl = 3600, name = "R" }},
    {{ type = "turns", host = "turn.example.com", secret = "{SECRET}" }},
]
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(tmp_path_factory.mktemp("extdisco"), users=[("alice", PASSWORD), ("bob", PASSWORD)],
                        server_options=f"modules = [{MODULES}]", extra=SERVICES) as process:  # fmt: skip
        yield process


async def alice(server: ServerProcess) -> RawClient:
    return await logged_in(server, "alice", "phone")


async def logged_in(server: ServerProcess, name: str, resource: str) -> RawClient:
    client = await RawClient.connect(server.c2s_port)
    await client.login(name, PASSWORD, resource)
    return client


def turn_password(username: str) -> str:
    return base64.b64encode(hmac.new(SECRET.encode(), username.encode(), hashlib.sha1).digest()).decode()


async def test_the_services_with_credentials_a_turn_server_accepts(server: ServerProcess) -> None:
    with trio.fail_after(TIMEOUT):
        client = await alice(server)
        info = await client.iq("<query xmlns='http://jabber.org/protocol/disco#info'/>", to="localhost")
        features = {f.get("var") for f in info.iter("{http://jabber.org/protocol/disco#info}feature")}
        assert NS in features
        asked_at = time.time()
        reply = await client.iq(f"<services xmlns='{NS}'/>", to="localhost")
        assert reply.get("type") == "result"
        found = [dict(s.attrib) for s in reply.iter(f"{{{NS}}}service")]
        assert [(s["type"], s["host"], s["port"], s["transport"]) for s in found] == [
            ("stun", "stun.example.com", "3478", "udp"),
            ("turn", "turn.example.com", "3478", "udp"),
            ("turns", "turn.example.com", "5349", "tcp"),
        ]
        stun, turn, _ = found
        assert "username" not in stun
        assert "restricted" not in stun
        assert turn["restricted"] == "1"
        assert turn["name"] == "R"
        expiry, _, user = turn["username"].partition(":")
        assert user == "alice@localhost"
        assert asked_at + 3600 - 5 <= int(expiry) <= time.time() + 3600 + 1
        assert turn["password"] == turn_password(turn["username"])
        assert turn["expires"].endswith("Z")
        # One type only (§3.2).
        only = await client.iq(f"<services xmlns='{NS}' type='stun'/>", to="localhost")
        assert [s.get("type") for s in only.iter(f"{{{NS}}}service")] == ["stun"]
        await client.aclose()


async def test_fresh_credentials_for_one_service_and_errors(server: ServerProcess) -> None:
    with trio.fail_after(TIMEOUT):
        client = await alice(server)
        reply = await client.iq(
            f"<credentials xmlns='{NS}'><service type='turn' host='turn.example.com'/></credentials>",
            to="localhost",
        )
        (service,) = list(reply.iter(f"{{{NS}}}service"))
        assert service.get("password") == turn_password(service.get("username", ""))
        for payload, condition in (
            (f"<credentials xmlns='{NS}'><service type='turn' host='elsewhere.example'/></credentials>",
             "item-not-found"),
            (f"<credentials xmlns='{NS}'><service type='stun' host='stun.example.com'/></credentials>",
             "item-not-found"),  # an open STUN server has no credentials to give
            (f"<credentials xmlns='{NS}'><service type='turn'/></credentials>", "bad-request"),
        ):  # fmt: skip
            error = await client.iq(payload, to="localhost")
            assert error.get("type") == "error"
            assert error.find(f".//{{urn:ietf:params:xml:ns:xmpp-stanzas}}{condition}") is not None, payload
        await client.aclose()


def test_a_wrong_service_table_stops_the_start_with_the_key_named(tmp_path: Path) -> None:
    bad = "\n[modules.extdisco]\nservices = [ { type = \"turn\", host = \"t\", port = 99999 } ]\n"
    refused = pytest.raises(RuntimeError, match=r"modules\.extdisco\.services\[0\]\.port")
    with refused, running_server(tmp_path, server_options=f"modules = [{MODULES}]", extra=bad):
        pass


NS_JINGLE = "urn:xmpp:jingle:1"
RTP = "urn:xmpp:jingle:apps:rtp:1"
ICE = "urn:xmpp:jingle:transports:ice-udp:1"


def jingle(action: str, sid: str, *, initiator: str, candidate: str = "") -> str:
    """A Jingle audio session action (XEP-0166 §7, XEP-0167, XEP-0176), as a client writes it."""
    return (
        f"<jingle xmlns='{NS_JINGLE}' action='{action}' sid='{sid}' initiator='{initiator}'>"
        f"<content creator='initiator' name='voice'>"
        f"<description xmlns='{RTP}' media='audio'><payload-type id='111' name='opus' clockrate='48000'"
        f" channels='2'/></description>"
        f"<transport xmlns='{ICE}' pwd='asd88fgpdd777uzjYhagZg' ufrag='8hhy'>{candidate}</transport>"
        f"</content></jingle>"
    )


async def test_a_jingle_call_is_set_up_through_the_server(server: ServerProcess) -> None:
    """Jingle is end to end: the server routes the IQs between the two full JIDs, untouched
    (RFC 6121 §8.5.3.1), candidates from the TURN relay included."""
    caller, callee = "alice@localhost/phone", "bob@localhost/laptop"
    relay = (
        "<candidate component='1' foundation='2' generation='0' id='c1' ip='203.0.113.7'"
        " network='0' port='49152' priority='5000' protocol='udp' type='relay'"
        " rel-addr='10.0.0.2' rel-port='50000'/>"
    )
    with trio.fail_after(TIMEOUT):
        a = await logged_in(server, "alice", "phone")
        b = await logged_in(server, "bob", "laptop")
        for step, (sender, receiver, to, frm, action, candidate) in enumerate([
            (a, b, callee, caller, "session-initiate", relay),
            (b, a, caller, callee, "session-accept", relay.replace("c1", "c2")),
            (a, b, callee, caller, "session-terminate", ""),
        ]):  # fmt: skip
            iq_id = f"jingle{step}"
            payload = jingle(action, "call1", initiator=caller, candidate=candidate)
            await sender.send(f"<iq type='set' id='{iq_id}' to='{to}'>{payload}</iq>")
            got = await receiver.next_element(lambda e, i=iq_id: e.get("id") == i)  # type: ignore[misc]
            assert (got.get("type"), got.get("from"), got.get("to")) == ("set", frm, to)
            session = got.find(f"{{{NS_JINGLE}}}jingle")
            assert session is not None
            assert session.get("action") == action
            assert session.get("sid") == "call1"
            candidates = list(session.iter(f"{{{ICE}}}candidate"))
            assert [c.get("type") for c in candidates] == (["relay"] if candidate else [])
            await receiver.send(f"<iq type='result' id='{iq_id}' to='{frm}'/>")
            ack = await sender.next_element(lambda e, i=iq_id: e.get("id") == i)  # type: ignore[misc]
            assert (ack.get("type"), ack.get("from")) == ("result", to)
        await a.aclose()
        await b.aclose()
