"""Raw XEP-0045 steps for tests: join, configure, speak, with the exact stanzas kept for asserting."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tests.support.peer import C, Element, Peer, Peers, error_condition, new_id, show

NS_MUC = "http://jabber.org/protocol/muc"
NS_MUC_USER = f"{NS_MUC}#user"
NS_MUC_OWNER = f"{NS_MUC}#owner"
NS_MUC_ADMIN = f"{NS_MUC}#admin"
NS_SID = "urn:xmpp:sid:0"
NS_DELAY = "urn:xmpp:delay"
NS_MAM = "urn:xmpp:mam:2"
MUC_X = f"{{{NS_MUC_USER}}}x"


def status_codes(element: Element) -> set[str]:
    x = element.find(MUC_X)
    return set() if x is None else {s.get("code", "") for s in x.findall(f"{{{NS_MUC_USER}}}status")}


def muc_item(element: Element) -> Element:
    item = element.find(f"{MUC_X}/{{{NS_MUC_USER}}}item")
    assert item is not None, show(element)
    return item


def from_room(room: str, type_: str | None = None, kind: str = "message"):  # type: ignore[no-untyped-def]
    """Matches a stanza of `kind` from the room or one of its occupants."""

    def match(e: Element) -> bool:
        sender = e.get("from", "")
        return (e.tag == f"{C}{kind}" and (sender == room or sender.startswith(room + "/"))
                and (type_ is None or e.get("type") == type_))  # fmt: skip

    return match


@dataclass
class Joined:
    """What a join brought, in arrival order: the others' presence, the self-presence (110),
    the history messages, and the subject message."""

    presences: list[Element]
    self_presence: Element
    history: list[Element]
    subject: Element


async def join(peer: Peer, room: str, nick: str, *, password: str | None = None, history: str = "") -> Joined:
    """Enter `room` as `nick`; waits for the subject (the last stanza of a join, XEP-0045 §7.2.15).

    Raises:
        AssertionError: the room answered with an error presence (its condition is in the text).
    """
    secret = "" if password is None else f"<password>{password}</password>"
    await peer.send(f"<presence to='{room}/{nick}'><x xmlns='{NS_MUC}'>{secret}{history}</x></presence>")
    presences: list[Element] = []
    while True:
        element = await peer.expect(from_room(room, kind="presence"))
        if element.get("type") == "error":
            raise AssertionError(f"join refused: {error_condition(element)}: {show(element)}")
        presences.append(element)
        if "110" in status_codes(element):
            break
    self_presence = presences.pop()
    messages: list[Element] = []
    while True:
        element = await peer.expect(from_room(room, kind="message"))
        messages.append(element)
        if element.find(f"{C}subject") is not None and element.find(f"{C}body") is None:
            break
    return Joined(presences, self_presence, messages[:-1], messages[-1])


async def join_error(peer: Peer, room: str, nick: str, extra: str = "") -> str | None:
    """Try to enter; the condition of the error presence the room answers with."""
    await peer.send(f"<presence to='{room}/{nick}'><x xmlns='{NS_MUC}'>{extra}</x></presence>")
    element = await peer.expect(from_room(room, kind="presence"))
    assert element.get("type") == "error", show(element)
    return error_condition(element)


async def create_instant(peer: Peer, room: str, nick: str = "owner") -> Joined:
    """Create `room` and unlock it as an instant room (XEP-0045 §10.1.2)."""
    joined = await join(peer, room, nick)
    assert "201" in status_codes(joined.self_presence), show(joined.self_presence)
    reply = await peer.iq(f"<query xmlns='{NS_MUC_OWNER}'><x xmlns='jabber:x:data' type='submit'/></query>",
                          type_="set", to=room)  # fmt: skip
    assert reply.get("type") == "result", show(reply)
    return joined


async def room_with(peers: Peers, room: str, *nicks: str) -> list[Peer]:
    """A live instant room with one fresh online user per nick: the first creates `room` (its
    owner), the others then join in order; the occupants' `Peer`s, in the order of `nicks`.

    What each saw of the others' arrival stays in its inbox (the creator has every join).
    """
    occupants: list[Peer] = []
    for username, nick in zip(peers.accounts(len(nicks)), nicks, strict=True):
        peer = await peers.online(username)
        await (join(peer, room, nick) if occupants else create_instant(peer, room, nick))
        occupants.append(peer)
    return occupants


async def configure(peer: Peer, room: str, fields: dict[str, str | list[str]]) -> Element:
    """Submit the room configuration form with these fields; the IQ answer."""

    def field(var: str, value: str | list[str]) -> str:
        values = [value] if isinstance(value, str) else value
        return f"<field var='{var}'>" + "".join(f"<value>{v}</value>" for v in values) + "</field>"

    xml = "".join(field(var, value) for var, value in fields.items())
    form_type = f"<field var='FORM_TYPE'><value>{NS_MUC}#roomconfig</value></field>"
    form = f"<x xmlns='jabber:x:data' type='submit'>{form_type}{xml}</x>"
    return await peer.iq(f"<query xmlns='{NS_MUC_OWNER}'>{form}</query>", type_="set", to=room)


async def say(peer: Peer, room: str, body: str) -> str:
    message_id = new_id("g")
    await peer.send(f"<message to='{room}' type='groupchat' id='{message_id}'><body>{body}</body></message>")
    return message_id


async def heard(peer: Peer, room: str, body: str) -> Element:
    """The next groupchat message from the room with this body."""
    return await peer.expect(lambda e: from_room(room, "groupchat")(e) and e.findtext(f"{C}body") == body)


async def admin(peer: Peer, room: str, item: str) -> Element:
    return await peer.iq(f"<query xmlns='{NS_MUC_ADMIN}'>{item}</query>", type_="set", to=room)


#: The owner's empty submission that unlocks a new room as an instant room (XEP-0045 §10.1.2).
UNLOCK = f"<query xmlns='{NS_MUC_OWNER}'><x xmlns='jabber:x:data' type='submit'/></query>"


def answer_to(request_id: str) -> Callable[[Element], bool]:
    """Matches the answer to a request (or the room's echo of a groupchat message) by its id."""
    return lambda e: e.get("id") == request_id and e.get("type") in ("result", "error", "groupchat")


async def create_without_waiting(peer: Peer, room: str, nick: str, tag: str) -> None:
    """What aioxmpp's MUCClient does: send the join and, without waiting for its answer, the
    owner's configuration requests and a first message; each must succeed (RFC 6120 §10.1).

    Right before, a private XML storage write (XEP-0049, `busy<tag>`) keeps the account's actor
    busy with storage: a join that went through that actor would be overtaken by what follows.
    """
    note = f"<note xmlns='urn:example:busy'>{'n' * 4000}</note>"
    await peer.send(f"<iq type='set' id='busy{tag}'><query xmlns='jabber:iq:private'>{note}</query></iq>"
                    f"<presence to='{room}/{nick}'><x xmlns='{NS_MUC}'/></presence>"
                    f"<iq type='get' id='form{tag}' to='{room}'><query xmlns='{NS_MUC_OWNER}'/></iq>"
                    f"<iq type='set' id='unlock{tag}' to='{room}'>{UNLOCK}</iq>"
                    f"<message type='groupchat' id='first{tag}' to='{room}'><body>first</body></message>")
    for request in ("busy", "form", "unlock"):
        reply = await peer.expect(answer_to(request + tag))
        assert reply.get("type") == "result", show(reply)
    echo = await peer.expect(answer_to(f"first{tag}"))
    assert echo.get("type") == "groupchat", show(echo)
