"""XEP-0357 Push Notifications, end to end over raw XML.

There are no components yet, so the "app server" is a session of a local account: a client
registers that full JID as its push service, and the notifications (IQ sets from the account's
bare JID) reach that session, which reads and answers them like an app server would.
"""

from __future__ import annotations

import pytest
import trio
from lxml import etree

from tests.integration.conftest import Accounts
from tests.support.peer import C, Element, Peer, Peers, bare, error_condition, new_id, presence, show
from tests.support.server import ServerProcess
from tests.support.timeouts import TIMEOUT


@pytest.fixture(scope="module")
def server(server_on_each_backend: ServerProcess) -> ServerProcess:
    """Push registrations are stored: these tests run on SQLite and on PostgreSQL."""
    return server_on_each_backend

NS_PUSH = "urn:xmpp:push:0"
NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_DATA = "jabber:x:data"
NS_SM = "urn:xmpp:sm:3"
NS_DISCO = "http://jabber.org/protocol/disco#info"
PUBLISH_OPTIONS = "http://jabber.org/protocol/pubsub#publish-options"
SECRET_FORM = (
    f"<x xmlns='{NS_DATA}' type='submit'><field var='FORM_TYPE'><value>{PUBLISH_OPTIONS}</value></field>"
    "<field var='secret'><value>s3cr3t</value></field></x>"
)


def is_push(element: Element) -> bool:
    return (
        element.tag == f"{C}iq"
        and element.get("type") == "set"
        and element.find(f"{{{NS_PUBSUB}}}pubsub") is not None
    )


class Notification:
    """One §7 notification as the app server received it."""

    def __init__(self, iq: Element) -> None:
        self.iq = iq
        publish = iq.find(f"{{{NS_PUBSUB}}}pubsub/{{{NS_PUBSUB}}}publish")
        assert publish is not None, show(iq)
        self.node = publish.get("node")
        form = publish.find(f"{{{NS_PUBSUB}}}item/{{{NS_PUSH}}}notification/{{{NS_DATA}}}x")
        assert form is not None, show(iq)
        self.fields = values(form)
        self.options = values(iq.find(f"{{{NS_PUBSUB}}}pubsub/{{{NS_PUBSUB}}}publish-options/{{{NS_DATA}}}x"))


def values(form: Element | None) -> dict[str, str]:
    if form is None:
        return {}
    fields = form.iter(f"{{{NS_DATA}}}field")
    return {f.get("var", ""): f.findtext(f"{{{NS_DATA}}}value") or "" for f in fields}


async def next_push(app: Peer) -> Notification:
    """The next notification the app server gets; it answers it (§7: the app server acks)."""
    iq = await app.expect(is_push)
    await app.send(f"<iq type='result' id='{iq.get('id')}' to='{iq.get('from')}'/>")
    return Notification(iq)


async def enable(peer: Peer, service: str, node: str, form: str = SECRET_FORM) -> Element:
    return await peer.iq(
        f"<enable xmlns='{NS_PUSH}' jid='{service}' node='{node}'>{form}</enable>", type_="set"
    )


async def chat(sender: Peer, to: str, body: str) -> str:
    message_id = new_id("m")
    await sender.send(f"<message to='{to}' id='{message_id}' type='chat'><body>{body}</body></message>")
    return message_id


async def test_push_is_advertised_on_the_account(
    server: ServerProcess, accounts: Accounts, peers: Peers
) -> None:
    (alice,) = accounts(1)
    with trio.fail_after(TIMEOUT):
        a = await peers.login(alice)
        reply = await a.iq(f"<query xmlns='{NS_DISCO}'/>", to=bare(alice))
        features = {f.get("var") for f in reply.iter(f"{{{NS_DISCO}}}feature")}
        assert NS_PUSH in features, show(reply)


async def test_messages_for_an_unavailable_account_are_notified(
    server: ServerProcess, accounts: Accounts, peers: Peers
) -> None:
    alice, bob, appserver = accounts(3)
    with trio.fail_after(TIMEOUT):
        app = await peers.login(appserver, "push")
        b = await peers.online(bob)
        a = await peers.login(alice, "phone")  # bound, never available: messages go offline
        reply = await enable(a, app.jid, "node-1")
        assert reply.get("type") == "result", show(reply)
        await chat(b, bare(alice), "Wherefore art thou?")
        first = await next_push(app)
        assert first.iq.get("from") == bare(alice), show(first.iq)
        assert first.node == "node-1"
        assert first.fields["FORM_TYPE"] == "urn:xmpp:push:summary"
        assert first.fields["message-count"] == "1"
        assert first.fields["last-message-sender"] == b.jid
        assert "last-message-body" not in first.fields  # the body stays private by default
        assert first.options == {"FORM_TYPE": PUBLISH_OPTIONS, "secret": "s3cr3t"}
        await chat(b, bare(alice), "second")
        assert (await next_push(app)).fields["message-count"] == "2"
        # Online: the offline messages arrive, and new messages raise no notification.
        await a.available()
        online_id = await chat(b, bare(alice), "you are here")
        await a.expect(lambda e: e.get("id") == online_id)
        # Unavailable again (still bound): notified again, counting from the last delivery.
        await a.send("<presence type='unavailable'/>")
        await a.expect(presence(from_=a.jid, type_="unavailable"))
        await chat(b, bare(alice), "gone again")
        again = await next_push(app)
        assert again.fields["message-count"] == "1", again.fields
        assert not any(is_push(e) for e in app.inbox), [show(e) for e in app.inbox]


async def test_a_detached_session_is_notified(
    server: ServerProcess, accounts: Accounts, peers: Peers
) -> None:
    alice, bob, appserver = accounts(3)
    with trio.fail_after(TIMEOUT):
        app = await peers.login(appserver, "push")
        b = await peers.online(bob)
        a = await peers.online(alice, "phone")
        await a.send(f"<enable xmlns='{NS_SM}' resume='true'/>")
        await a.expect(lambda e: e.tag == f"{{{NS_SM}}}enabled")
        assert (await enable(a, app.jid, "node-d")).get("type") == "result"
        await a.drop()  # no </stream:stream>: the session waits for a resumption
        # The session learns of the broken transport on its own time: send until it is detached
        # (messages before that reach the session and wait there, unnotified).
        while True:
            await chat(b, a.jid, "are you there?")
            with trio.move_on_after(1):
                notification = await next_push(app)
                break
        assert notification.node == "node-d"
        assert notification.fields["last-message-sender"] == b.jid


async def test_disable_stops_notifications(server: ServerProcess, accounts: Accounts, peers: Peers) -> None:
    alice, bob, appserver = accounts(3)
    with trio.fail_after(TIMEOUT):
        app = await peers.login(appserver, "push")
        b = await peers.online(bob)
        a = await peers.login(alice)
        for node in ("n1", "n2"):
            assert (await enable(a, app.jid, node, form="")).get("type") == "result"
        reply = await a.iq(f"<disable xmlns='{NS_PUSH}' jid='{app.jid}' node='n1'/>", type_="set")
        assert reply.get("type") == "result", show(reply)
        await chat(b, bare(alice), "one")
        got = await next_push(app)
        assert got.node == "n2"
        assert got.options == {}
        reply = await a.iq(f"<disable xmlns='{NS_PUSH}' jid='{app.jid}'/>", type_="set")  # every node
        assert reply.get("type") == "result", show(reply)
        await chat(b, bare(alice), "two")  # nobody to notify
        assert (await enable(a, app.jid, "n3", form="")).get("type") == "result"
        await chat(b, bare(alice), "three")
        # Had "two" been notified (to n2), that notification would come first: same path.
        got = await next_push(app)
        assert got.node == "n3", got.fields


async def test_bad_requests_are_refused(server: ServerProcess, accounts: Accounts, peers: Peers) -> None:
    alice, bob = accounts(2)
    with trio.fail_after(TIMEOUT):
        a = await peers.login(alice)
        b = await peers.login(bob)
        wrong_form = SECRET_FORM.replace(PUBLISH_OPTIONS, "urn:example:other")
        bogus_form = f"<x xmlns='{NS_DATA}' type='bogus'/>"
        cases = [
            (f"<enable xmlns='{NS_PUSH}' jid='push.example'/>", "bad-request"),  # no node
            (f"<enable xmlns='{NS_PUSH}' node='n'/>", "bad-request"),  # no jid
            (f"<enable xmlns='{NS_PUSH}' jid='@@bad' node='n'/>", "jid-malformed"),
            (f"<enable xmlns='{NS_PUSH}' jid='push.example' node='n'>{wrong_form}</enable>", "bad-request"),
            (f"<enable xmlns='{NS_PUSH}' jid='push.example' node='n'>{bogus_form}</enable>", "bad-request"),
            (f"<disable xmlns='{NS_PUSH}'/>", "bad-request"),
        ]  # fmt: skip
        for payload, condition in cases:
            reply = await a.iq(payload, type_="set")
            assert error_condition(reply) == condition, (payload, show(reply))
        reply = await b.iq(
            f"<enable xmlns='{NS_PUSH}' jid='push.example' node='n'/>", type_="set", to=bare(alice)
        )
        assert error_condition(reply) == "forbidden", show(reply)
        assert etree.QName(reply).localname == "iq"
