"""XEP-0421 (1.0.1) occupant ids: every presence and message a room sends for an occupant carries the
room's id of the occupant's real bare JID: the same for all its sessions and every time it joins,
another for another account or in another room, and never the one a client wrote itself."""

from __future__ import annotations

from imactor.muc.stanzas import NS_OCCUPANT_ID, OCCUPANT_ID, occupant_id
from imactor.muc.values import Outcome
from imactor.xmpp.jid import JID
from imactor.xmpp.namespaces import NS_DISCO_INFO
from imactor.xmpp.stanza import Element
from tests.unit.muc.support import ALICE, ALICE2, BOB, ROOM, Harness, received, state


def ids(element: Element) -> list[str | None]:
    return [claimed.get("id") for claimed in element.findall(OCCUPANT_ID)]


def presence_of(outcome: Outcome, viewer: JID, nick: str) -> Element:
    """The last presence of `nick` that `viewer` was sent."""
    found = [
        e for e in received(outcome, viewer)
        if e.tag == "{jabber:client}presence" and e.get("from") == f"{ROOM}/{nick}"
    ]  # fmt: skip
    assert found, [e.get("from") for e in received(outcome, viewer)]
    return found[-1]


def test_presence_and_messages_carry_one_id_per_account() -> None:
    h = Harness(state())
    (alice_id,) = ids(presence_of(h.join(ALICE, "alice"), ALICE, "alice"))
    assert ids(presence_of(h.join(ALICE2, "alice"), ALICE2, "alice")) == [alice_id]  # her other session
    bob_join = h.join(BOB, "bob")
    (bob_id,) = ids(presence_of(bob_join, ALICE, "bob"))
    assert bob_id != alice_id
    assert ids(presence_of(bob_join, BOB, "alice")) == [alice_id]  # Bob sees hers
    (message,) = h.say(BOB, "hi").out
    assert ids(message.element) == [bob_id]


def test_a_forged_id_is_replaced_and_the_id_survives_a_rejoin() -> None:
    h = Harness(state())
    h.join(ALICE, "alice")
    (first,) = ids(presence_of(h.join(BOB, "bob"), BOB, "bob"))
    forged = f"<occupant-id xmlns='{NS_OCCUPANT_ID}' id='i-am-alice'/>"
    (message,) = h.say(BOB, "hi", forged).out
    assert ids(message.element) == [first]
    h.leave(BOB, "bob")
    (again,) = ids(presence_of(h.join(BOB, "robert"), BOB, "robert"))
    assert again == first  # the account's id, not the nick's


def test_ids_differ_between_rooms_and_keys() -> None:
    key = b"k"
    assert occupant_id(key, "a@conference.localhost", "bob@localhost") != occupant_id(
        key, "b@conference.localhost", "bob@localhost"
    )
    assert occupant_id(key, "a@conference.localhost", "bob@localhost") != occupant_id(
        b"other", "a@conference.localhost", "bob@localhost"
    )


def test_private_messages_carry_the_senders_id_and_the_room_says_it_does() -> None:
    h = Harness(state())
    h.join(ALICE, "alice")
    (bob_id,) = ids(presence_of(h.join(BOB, "bob"), BOB, "bob"))
    outcome = h.send(f"<message type='chat' from='{BOB}' to='{ROOM}/alice'><body>psst</body></message>")
    (private,) = outcome.out
    assert ids(private.element) == [bob_id]
    info = received(h.iq(BOB, "get", f"<query xmlns='{NS_DISCO_INFO}'/>"), BOB)[-1]
    assert NS_OCCUPANT_ID in {f.get("var") for f in info.iter(f"{{{NS_DISCO_INFO}}}feature")}
