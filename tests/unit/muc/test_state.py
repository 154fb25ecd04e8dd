"""The stored form of a room: RoomState ↔ JSON."""

from __future__ import annotations

import json

import pytest

from imactor.muc.state import Affiliation, RoomConfig, RoomState
from tests.unit.muc.support import ALICE, BOB, Harness, state


def test_json_round_trip_keeps_everything() -> None:
    original = RoomState(
        config=RoomConfig(
            name="Lounge",
            description="d",
            lang="en",
            persistent=True,
            public=False,
            members_only=True,
            moderated=True,
            password="pw",
            whois="anyone",
            max_users=30,
            history_length=7,
            allow_invites=True,
            change_subject=True,
            allow_pm="moderators",
            enable_logging=False,
            allow_voice_requests=False,
        ),
        affiliations={
            "alice@localhost": Affiliation("owner"),
            "bob@localhost": Affiliation("outcast", "spam"),
            "carol@localhost": Affiliation("member", "", "caz"),
        },
        subject="Today",
        subject_by="alice",
        subject_stamp=12.5,
        locked=True,
        created=10.0,
        creator="alice@localhost",
    )
    stored = json.loads(json.dumps(original.to_json()))  # what the database gives back
    assert RoomState.from_json(stored) == original


def test_older_documents_take_defaults_and_unknown_keys_are_ignored() -> None:
    loaded = RoomState.from_json({"config": {"name": "Old", "future_option": 1}, "some_new_key": True})
    assert loaded.config == RoomConfig(name="Old")
    assert loaded.affiliations == {}
    assert not loaded.locked


@pytest.mark.parametrize(
    "document",
    [
        {"config": {"persistent": "yes"}},
        {"config": {"max_users": "10"}},
        {"config": []},
        {"affiliations": {"x@y": {"affiliation": "king"}}},
    ],
)
def test_damaged_documents_are_refused(document: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"."):
        RoomState.from_json(document)


def test_a_room_restored_from_json_behaves_like_the_original() -> None:
    h = Harness(state(members_only=True))
    h.join(ALICE, "alice")
    h.admin(ALICE, "<item jid='bob@localhost' affiliation='member'/>")
    assert h.room.state is not None
    restored = Harness(RoomState.from_json(json.loads(json.dumps(h.room.state.to_json()))))
    outcome = restored.join(BOB, "bob")
    assert outcome.out[-1].element.get("type") == "groupchat"
    assert restored.room.may_read_archive(BOB)
    assert not restored.room.may_read_archive(ALICE.__class__.parse("eve@localhost"))
