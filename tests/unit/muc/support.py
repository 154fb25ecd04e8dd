"""Drive a sans-IO room with real stanza elements and read what it sends, per recipient."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable

from lxml import etree

from imactor.muc.room import Room
from imactor.muc.state import RoomConfig, RoomState
from imactor.muc.values import ArchiveItem, Outcome, ServiceInfo
from imactor.xmpp.jid import JID
from imactor.xmpp.namespaces import NS_DATA_FORMS, NS_MUC_USER, NS_STANZA_ERRORS, qname
from imactor.xmpp.stanza import Element

ROOM = JID.parse("room@conference.localhost")
SERVICE_JID = JID.parse("conference.localhost")
ALICE = JID.parse("alice@localhost/phone")
ALICE2 = JID.parse("alice@localhost/laptop")
BOB = JID.parse("bob@localhost/desk")
CAROL = JID.parse("carol@localhost/home")
DAVE = JID.parse("dave@localhost/work")
SERVER_ADMIN = JID.parse("root@localhost/console")
NO_CREATE = JID.parse("guest@localhost/web")
T0 = 1_750_000_000.0

MUC_USER_ITEM = qname(NS_MUC_USER, "item")


def service(max_occupants: int = 100) -> ServiceInfo:
    return ServiceInfo(
        jid=SERVICE_JID,
        admins=frozenset({"root@localhost"}),
        max_occupants=max_occupants,
        may_create=lambda jid: jid.localpart != "guest",
        room_features=("urn:xmpp:mam:2",),  # the muc_mam module, enabled by default
        occupant_id_key=b"the service's occupant id key",
    )


def xml(text: str) -> Element:
    """A stanza from XML text; jabber:client is the default namespace."""
    element = etree.fromstring(text.encode())
    if etree.QName(element).namespace is None:
        element = etree.fromstring(re.sub(r"^<(\w+)", r"<\1 xmlns='jabber:client'", text).encode())
    return element


class Harness:
    """One room, a clock that the test moves, and sequential stanza ids."""

    def __init__(self, state: RoomState | None = None, *, max_occupants: int = 100,
                 history: Iterable[ArchiveItem] = ()) -> None:  # fmt: skip
        counter = itertools.count(1)
        self.room = Room(
            ROOM, state, service(max_occupants), history=history, new_id=lambda: f"sid-{next(counter)}"
        )
        self.now = T0

    def send(self, text: str) -> Outcome:
        return self.room.handle(xml(text), self.now)

    def join(self, who: JID, nick: str, payload: str = "", *, muc: str = "") -> Outcome:
        return self.send(
            f"<presence from='{who}' to='{ROOM}/{nick}'>{payload}"
            f"<x xmlns='http://jabber.org/protocol/muc'>{muc}</x></presence>"
        )

    def leave(self, who: JID, nick: str, status: str = "") -> Outcome:
        body = f"<status>{status}</status>" if status else ""
        return self.send(f"<presence type='unavailable' from='{who}' to='{ROOM}/{nick}'>{body}</presence>")

    def say(self, who: JID, body: str, extra: str = "") -> Outcome:
        return self.send(
            f"<message type='groupchat' id='m1' from='{who}' to='{ROOM}'><body>{body}</body>{extra}</message>"
        )

    def iq(self, who: JID, kind: str, payload: str, *, to: str | None = None, id_: str = "q1") -> Outcome:
        return self.send(f"<iq type='{kind}' id='{id_}' from='{who}' to='{to or ROOM}'>{payload}</iq>")

    def admin(self, who: JID, items: str, kind: str = "set") -> Outcome:
        return self.iq(who, kind, f"<query xmlns='http://jabber.org/protocol/muc#admin'>{items}</query>")

    def owner(self, who: JID, inner: str = "", kind: str = "set") -> Outcome:
        return self.iq(who, kind, f"<query xmlns='http://jabber.org/protocol/muc#owner'>{inner}</query>")

    def configure(self, who: JID, **fields: str) -> Outcome:
        return self.owner(who, submit_form("http://jabber.org/protocol/muc#roomconfig", **fields))

    def create(self, owner: JID = ALICE, nick: str = "alice", **fields: str) -> None:
        """A room created by `owner` and configured with `fields` (an instant room when none)."""
        self.join(owner, nick)
        outcome = self.configure(owner, **fields)
        assert [kind(e) for e in received(outcome, owner)][-1] == "result", dump(outcome)


def submit_form(form_type: str, **fields: str) -> str:
    """A submitted form; field names use "__" for "#" and "_" stays "_" (roomconfig_x → roomconfig_x)."""
    parts = [f"<field var='FORM_TYPE'><value>{form_type}</value></field>"]
    for name, value in fields.items():
        var = name.replace("__", "#")
        values = value.split("\n") if value else [""]
        parts.append(f"<field var='{var}'>" + "".join(f"<value>{v}</value>" for v in values) + "</field>")
    return f"<x xmlns='{NS_DATA_FORMS}' type='submit'>{''.join(parts)}</x>"


def received(outcome: Outcome, who: JID) -> list[Element]:
    """What `who` gets, in order."""
    return [item.element for item in outcome.out if who in item.recipients]


def kind(element: Element) -> str:
    """`presence`, `message`, `iq` with its type: `presence/unavailable`, `result`, `error` ..."""
    name = etree.QName(element).localname
    if element.get("type") in ("result", "error") and name == "iq":
        return element.get("type", "")
    return f"{name}/{element.get('type')}" if element.get("type") else name


def codes(element: Element) -> list[str]:
    return [status.get("code", "") for status in element.iter(qname(NS_MUC_USER, "status"))]


def item(element: Element) -> dict[str, str]:
    found = element.find(f"{{{NS_MUC_USER}}}x/{MUC_USER_ITEM}")
    assert found is not None, etree.tostring(element)
    return attributes(found)


def attributes(element: Element) -> dict[str, str]:
    return {str(key): str(value) for key, value in element.attrib.items()}


def condition(element: Element) -> str:
    """The stanza error condition of an error reply."""
    assert element.get("type") == "error", etree.tostring(element)
    err = element.find(qname("jabber:client", "error"))
    assert err is not None
    return next(etree.QName(c).localname for c in err if etree.QName(c).namespace == NS_STANZA_ERRORS)


def only_error(outcome: Outcome, who: JID) -> str:
    """The one stanza of the outcome is an error to `who`: its condition."""
    assert len(outcome.out) == 1, dump(outcome)
    assert outcome.out[0].recipients == (who,)
    assert outcome.out[0].element.get("to") is None
    return condition(outcome.out[0].element)


def dump(outcome: Outcome) -> str:
    return "\n".join(
        f"{[str(r) for r in o.recipients]}: {etree.tostring(o.element).decode()}" for o in outcome.out
    )


def state(**config: object) -> RoomState:
    """An unlocked room owned by alice, with `config`."""
    room_state = RoomState(config=RoomConfig(**config), created=T0 - 100)  # type: ignore[arg-type]
    room_state.set_affiliation("alice@localhost", "owner")
    return room_state
