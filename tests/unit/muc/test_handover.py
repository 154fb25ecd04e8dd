"""A room's occupants handed from one home to the next (`export_occupants` / `import_occupants`)."""

from __future__ import annotations

import json

from tests.unit.muc.support import ALICE, ALICE2, BOB, CAROL, ROOM, Harness, received


def test_occupants_move_with_their_presence_and_role() -> None:
    old = Harness()
    old.join(ALICE, "alice", "<status>on the phone</status>")
    old.send(f"<iq type='set' id='c' from='{ALICE}' to='{ROOM}'><query xmlns='http://jabber.org/protocol/muc#owner'>"
             "<x xmlns='jabber:x:data' type='submit'/></query></iq>")  # fmt: skip
    old.join(ALICE2, "alice", "<status>busy</status>")  # her latest session: the nick's presence
    old.join(BOB, "bob")
    state = old.room.state
    assert state is not None
    exported = json.loads(json.dumps(old.room.export_occupants()))  # it crosses as JSON

    new = Harness(state)
    new.room.import_occupants(exported)
    assert {(o.nick, o.real_jids, o.role) for o in new.room.occupants()} == {
        ("alice", (ALICE, ALICE2), "moderator"), ("bob", (BOB,), "participant")}  # fmt: skip
    # The moved occupants are in the room: Bob speaks and every session hears it.
    outcome = new.say(BOB, "still here")
    for who in (ALICE, ALICE2, BOB):
        assert [e.findtext("{jabber:client}body") for e in received(outcome, who)] == ["still here"]
    # A newcomer sees Alice's presence as she last sent it.
    joined = new.join(CAROL, "carol")
    alice = next(e for e in received(joined, CAROL) if e.get("from") == f"{ROOM}/alice")
    assert alice.findtext("{jabber:client}status") == "busy"


def test_a_nick_taken_here_meanwhile_stays() -> None:
    old = Harness()
    old.join(ALICE, "alice")
    old.send(f"<iq type='set' id='c' from='{ALICE}' to='{ROOM}'><query xmlns='http://jabber.org/protocol/muc#owner'>"
             "<x xmlns='jabber:x:data' type='submit'/></query></iq>")  # fmt: skip
    old.join(BOB, "nick")
    state = old.room.state
    assert state is not None
    new = Harness(state)
    new.join(CAROL, "nick")
    new.room.import_occupants(old.room.export_occupants())
    nick = next(o for o in new.room.occupants() if o.nick == "nick")
    assert nick.real_jids == (CAROL,)
    assert "alice" in {o.nick for o in new.room.occupants()}
