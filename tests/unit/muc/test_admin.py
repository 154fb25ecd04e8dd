"""muc#admin (XEP-0045 §8, §9): roles, affiliations, lists, and the permission table of §5."""

from __future__ import annotations

from imactor.xmpp.jid import JID
from imactor.xmpp.namespaces import NS_MUC_ADMIN, qname
from tests.unit.muc.support import (
    ALICE,
    BOB,
    CAROL,
    DAVE,
    SERVER_ADMIN,
    Harness,
    codes,
    item,
    kind,
    only_error,
    received,
    state,
)

ITEM = qname(NS_MUC_ADMIN, "item")


def _room(**config: object) -> Harness:
    """alice owner, carol admin, dave member, bob none; all present."""
    room_state = state(**config)
    room_state.set_affiliation("carol@localhost", "admin")
    room_state.set_affiliation("dave@localhost", "member")
    h = Harness(room_state)
    for who, nick in ((ALICE, "alice"), (CAROL, "carol"), (DAVE, "dave"), (BOB, "bob")):
        h.join(who, nick)
    return h


def test_kick_removes_the_occupant_with_307_reason_and_actor() -> None:
    h = _room()
    outcome = h.admin(CAROL, "<item nick='bob' role='none'><reason>rude</reason></item>")
    (to_bob,) = received(outcome, BOB)
    assert kind(to_bob) == "presence/unavailable"
    assert codes(to_bob) == ["110", "307"]
    x_item = to_bob.find("{http://jabber.org/protocol/muc#user}x/{http://jabber.org/protocol/muc#user}item")
    assert x_item is not None
    assert x_item.get("role") == "none"
    assert x_item.findtext("{http://jabber.org/protocol/muc#user}reason") == "rude"
    assert x_item.find("{http://jabber.org/protocol/muc#user}actor").get("nick") == "carol"  # type: ignore[union-attr]
    presence, result = received(outcome, CAROL)
    assert codes(presence) == ["307"]
    assert kind(result) == "result"
    assert result.get("id") == "q1"
    assert [o.nick for o in h.room.occupants()] == ["alice", "carol", "dave"]
    # a kick is not a ban
    assert kind(received(h.join(BOB, "bob"), BOB)[-1]) == "message/groupchat"


def test_who_may_kick_whom() -> None:
    h = _room()
    # a participant is no moderator
    assert only_error(h.admin(BOB, "<item nick='dave' role='none'/>"), BOB) == "forbidden"
    # §8.2: nobody is kicked by a lower affiliation; equal is fine; kicking oneself too
    assert only_error(h.admin(CAROL, "<item nick='alice' role='none'/>"), CAROL) == "not-allowed"
    h.admin(CAROL, "<item nick='dave' role='moderator'/>")
    h.admin(ALICE, "<item jid='bob@localhost' affiliation='admin'/>")
    assert only_error(h.admin(DAVE, "<item nick='bob' role='none'/>"), DAVE) == "not-allowed"
    assert kind(received(h.admin(CAROL, "<item nick='bob' role='none'/>"), CAROL)[-1]) == "result"
    assert kind(received(h.admin(ALICE, "<item nick='carol' role='none'/>"), ALICE)[-1]) == "result"
    assert only_error(h.admin(ALICE, "<item nick='nobody' role='none'/>"), ALICE) == "item-not-found"
    assert kind(received(h.admin(DAVE, "<item nick='dave' role='none'/>"), DAVE)[-1]) == "result"
    assert [o.nick for o in h.room.occupants()] == ["alice"]


def test_voice_is_revoked_and_granted_in_a_moderated_room() -> None:
    h = _room(moderated=True)
    assert h.room.occupants()[3].role == "visitor"
    outcome = h.admin(CAROL, "<item nick='bob' role='participant'/>")
    (to_alice,) = received(outcome, ALICE)
    assert item(to_alice)["role"] == "participant"
    assert kind(to_alice) == "presence"
    assert len(h.say(BOB, "thanks").out) == 1
    h.admin(CAROL, "<item nick='bob' role='visitor'/>")
    assert only_error(h.say(BOB, "again?"), BOB) == "forbidden"
    # revoking voice from an admin or owner is not allowed, even for an owner
    assert only_error(h.admin(CAROL, "<item nick='alice' role='visitor'/>"), CAROL) == "not-allowed"
    assert only_error(h.admin(ALICE, "<item nick='carol' role='participant'/>"), ALICE) == "not-allowed"
    # a moderator who is a mere member may not silence someone of a higher affiliation
    h.admin(CAROL, "<item nick='dave' role='moderator'/>")
    h.admin(CAROL, "<item jid='bob@localhost' affiliation='member'/>")
    assert kind(received(h.admin(DAVE, "<item nick='bob' role='visitor'/>"), DAVE)[-1]) == "result"
    assert only_error(h.admin(DAVE, "<item nick='carol' role='visitor'/>"), DAVE) == "not-allowed"


def test_only_admins_and_owners_grant_moderation() -> None:
    h = _room()
    h.admin(CAROL, "<item nick='dave' role='moderator'/>")
    assert h.room.occupants()[2].role == "moderator"
    # dave moderates now but, a member, may not make bob a moderator
    assert only_error(h.admin(DAVE, "<item nick='bob' role='moderator'/>"), DAVE) == "forbidden"
    # ... yet may kick bob
    assert kind(received(h.admin(DAVE, "<item nick='bob' role='none'/>"), DAVE)[-1]) == "result"


def test_ban_removes_with_301_and_the_outcast_cannot_return() -> None:
    h = _room()
    outcome = h.admin(CAROL, "<item jid='bob@localhost' affiliation='outcast'><reason>spam</reason></item>")
    (to_bob,) = received(outcome, BOB)
    assert codes(to_bob) == ["110", "301"]
    assert item(to_bob)["affiliation"] == "outcast"
    assert outcome.state_changed
    assert only_error(h.join(BOB, "bob"), BOB) == "forbidden"
    listing = received(h.admin(CAROL, "<item affiliation='outcast'/>", "get"), CAROL)[0]
    (entry,) = listing.iter(ITEM)
    assert entry.get("jid") == "bob@localhost"
    assert entry.findtext(qname(NS_MUC_ADMIN, "reason")) == "spam"


def test_banning_oneself_is_a_conflict_and_a_ban_frees_the_reserved_nick() -> None:
    h = _room()
    assert (
        only_error(h.admin(CAROL, "<item jid='carol@localhost' affiliation='outcast'/>"), CAROL) == "conflict"
    )
    room_state = h.room.state
    assert room_state is not None
    room_state.affiliations["dave@localhost"].nick = "dave"
    h.admin(CAROL, "<item jid='dave@localhost' affiliation='outcast'/>")
    assert room_state.affiliations["dave@localhost"].nick == ""
    assert room_state.nick_owner("dave") is None


def test_granting_membership_with_a_nick_reserves_it() -> None:
    h = _room()
    outcome = h.admin(CAROL, "<item jid='eve@localhost' nick='evie' affiliation='member'/>")
    assert kind(received(outcome, CAROL)[-1]) == "result"
    room_state = h.room.state
    assert room_state is not None
    assert room_state.nick_owner("evie") == "eve@localhost"
    stranger = JID.parse("mallory@localhost/x")
    assert only_error(h.join(stranger, "evie"), stranger) == "conflict"
    taken = h.admin(CAROL, "<item jid='frank@localhost' nick='evie' affiliation='member'/>")
    assert only_error(taken, CAROL) == "conflict"


def test_affiliation_permissions() -> None:
    h = _room()
    # a member changes no affiliation
    assert only_error(h.admin(DAVE, "<item jid='bob@localhost' affiliation='member'/>"), DAVE) == "forbidden"
    # an admin does not touch owners or admins, nor grants admin
    assert (
        only_error(h.admin(CAROL, "<item jid='alice@localhost' affiliation='outcast'/>"), CAROL)
        == "not-allowed"
    )
    assert only_error(h.admin(CAROL, "<item jid='bob@localhost' affiliation='admin'/>"), CAROL) == "forbidden"
    # the last owner cannot step down
    assert (
        only_error(h.admin(ALICE, "<item jid='alice@localhost' affiliation='admin'/>"), ALICE) == "conflict"
    )
    # bad items
    assert (
        only_error(h.admin(ALICE, "<item jid='bob@localhost' affiliation='king'/>"), ALICE) == "bad-request"
    )
    assert only_error(h.admin(ALICE, "<item jid='@@' affiliation='member'/>"), ALICE) == "jid-malformed"
    assert only_error(h.admin(ALICE, ""), ALICE) == "bad-request"


def test_a_multi_item_set_is_all_or_nothing() -> None:
    h = _room()
    items = (
        "<item jid='bob@localhost' affiliation='member'/><item jid='alice@localhost' affiliation='outcast'/>"
    )
    assert only_error(h.admin(CAROL, items), CAROL) == "not-allowed"
    assert h.room.state is not None
    assert h.room.state.affiliation_of("bob@localhost") == "none"


def test_membership_changes_show_the_new_affiliation_and_role() -> None:
    h = _room(moderated=True)
    outcome = h.admin(CAROL, "<item jid='bob@localhost' affiliation='member'/>")
    (to_alice,) = received(outcome, ALICE)
    assert item(to_alice)["affiliation"] == "member"
    assert item(to_alice)["role"] == "participant"
    outcome = h.admin(ALICE, "<item jid='bob@localhost' affiliation='admin'/>")
    assert item(received(outcome, ALICE)[0])["role"] == "moderator"


def test_in_a_members_only_room_losing_membership_removes_with_321() -> None:
    h = _room(members_only=True)  # bob could not enter: he is not a member
    assert [o.nick for o in h.room.occupants()] == ["alice", "carol", "dave"]
    outcome = h.admin(CAROL, "<item jid='dave@localhost' affiliation='none'/>")
    (to_dave,) = received(outcome, DAVE)
    assert kind(to_dave) == "presence/unavailable"
    assert codes(to_dave) == ["110", "321"]


def test_lists_by_affiliation_and_role() -> None:
    h = _room()
    owners = received(h.admin(CAROL, "<item affiliation='owner'/>", "get"), CAROL)[0]
    assert [(e.get("jid"), e.get("affiliation")) for e in owners.iter(ITEM)] == [("alice@localhost", "owner")]
    assert owners.get("to") is None
    assert kind(owners) == "result"
    participants = received(h.admin(CAROL, "<item role='participant'/>", "get"), CAROL)[0]
    assert [(e.get("nick"), e.get("jid")) for e in participants.iter(ITEM)] == [
        ("dave", str(DAVE)),
        ("bob", str(BOB)),
    ]
    assert only_error(h.admin(BOB, "<item affiliation='member'/>", "get"), BOB) == "forbidden"
    assert only_error(h.admin(DAVE, "<item role='moderator'/>", "get"), DAVE) == "forbidden"
    assert only_error(h.admin(ALICE, "<item role='none'/>", "get"), ALICE) == "bad-request"


def test_a_server_admin_has_owner_rights_everywhere() -> None:
    h = _room()
    items = (
        "<item jid='bob@localhost' affiliation='owner'/><item jid='alice@localhost' affiliation='outcast'/>"
    )
    outcome = h.admin(SERVER_ADMIN, items)
    assert kind(received(outcome, SERVER_ADMIN)[-1]) == "result"
    assert codes(received(outcome, ALICE)[-1]) == ["110", "301"]
    room_state = h.room.state
    assert room_state is not None
    assert room_state.with_affiliation("owner") == ["bob@localhost"]
    # it may not leave a room without an owner either
    assert only_error(
        h.admin(SERVER_ADMIN, "<item jid='bob@localhost' affiliation='none'/>"), SERVER_ADMIN
    ) == ("conflict")
