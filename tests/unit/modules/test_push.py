"""The XEP-0357 §7 notification the push module publishes to an app server."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

from imactor.modules import push
from imactor.storage.push import PushTarget
from imactor.xmpp.jid import JID
from imactor.xmpp.stanza import Element, parse, serialize

NS_PUBSUB = "{http://jabber.org/protocol/pubsub}"
NS_DATA = "{jabber:x:data}"
OPTIONS = (
    b"<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'>"
    b"<value>http://jabber.org/protocol/pubsub#publish-options</value></field>"
    b"<field var='secret'><value>s</value></field></x>"
)


def fields(iq: Element) -> dict[str, str]:
    form = iq.find(
        f"{NS_PUBSUB}pubsub/{NS_PUBSUB}publish/{NS_PUBSUB}item/{{urn:xmpp:push:0}}notification/{NS_DATA}x"
    )
    assert form is not None, serialize(iq)
    return {f.get("var", ""): f.findtext(f"{NS_DATA}value") or "" for f in form.iter(f"{NS_DATA}field")}


def notification(options: push.Options, target: PushTarget) -> Element:
    account = cast(Any, SimpleNamespace(jid=JID.parse("alice@x")))
    message = parse(
        b"<message xmlns='jabber:client' from='bob@x/pc' to='alice@x' type='chat'><body>hi</body></message>"
    )
    return push._notification(options, account, target, message, 3)


def test_summary_without_the_body_by_default() -> None:
    iq = notification(push.Options(), PushTarget("app.example", "node-1", OPTIONS))
    assert (iq.get("from"), iq.get("to"), iq.get("type")) == ("alice@x", "app.example", "set")
    publish = iq.find(f"{NS_PUBSUB}pubsub/{NS_PUBSUB}publish")
    assert publish is not None
    assert publish.get("node") == "node-1"
    assert fields(iq) == {
        "FORM_TYPE": "urn:xmpp:push:summary",
        "message-count": "3",
        "last-message-sender": "bob@x/pc",
    }
    secret = iq.find(f"{NS_PUBSUB}pubsub/{NS_PUBSUB}publish-options/{NS_DATA}x/{NS_DATA}field[@var='secret']")
    assert secret is not None


def test_body_and_sender_are_options() -> None:
    iq = notification(
        push.Options(include_body=True, include_sender=False), PushTarget("app.example", "n", b"")
    )
    assert fields(iq) == {
        "FORM_TYPE": "urn:xmpp:push:summary",
        "message-count": "3",
        "last-message-body": "hi",
    }
    assert iq.find(f"{NS_PUBSUB}pubsub/{NS_PUBSUB}publish-options") is None
