"""Rooms and their archives in storage (imactor.storage.rooms)."""

from __future__ import annotations

import pytest

from imactor.storage import ArchiveFilter, ArchiveItemNotFound, Storage
from imactor.storage.rooms import RoomArchiveEntry, StoredRoom

ROOM_JID = "hall@conference.localhost"


def archived(n: int, room: str = "hall", nick: str = "ann") -> RoomArchiveEntry:
    stanza = f"<message><body>{n}</body></message>".encode()
    return RoomArchiveEntry(
        room, f"{room}@conference.localhost", f"id{n}", 1000.0 + n, nick, f"{nick}@localhost/r", stanza
    )


async def test_rooms_are_saved_replaced_listed_and_counted(storage: Storage) -> None:
    assert await storage.rooms.load("hall") is None
    await storage.rooms.save(StoredRoom("hall", {"config": {"name": "Hall"}}, True, False, "ann@localhost"))
    await storage.rooms.save(StoredRoom("attic", {"config": {}}, False, True, "ann@localhost"))
    await storage.rooms.save(
        StoredRoom("hall", {"config": {"name": "Great hall"}}, True, True, "ann@localhost")
    )
    hall = await storage.rooms.load("hall")
    assert hall == StoredRoom("hall", {"config": {"name": "Great hall"}}, True, True, "ann@localhost")
    assert [r.name for r in await storage.rooms.listing()] == ["attic", "hall"]
    assert [r.name for r in await storage.rooms.listing(public_only=True)] == ["hall"]
    assert await storage.rooms.count_created_by("ann@localhost") == 2
    assert await storage.rooms.count_created_by("bob@localhost") == 0


async def test_the_archive_pages_and_goes_with_the_room(storage: Storage) -> None:
    await storage.rooms.save(StoredRoom("hall", {}, True, True, "ann@localhost"))
    await storage.rooms.append([archived(n, nick="ann" if n % 2 else "bob") for n in range(5)])
    await storage.rooms.append([archived(9, room="other")])
    recent = await storage.rooms.recent("hall", 3)
    assert [e.stanza_id for e in recent] == ["id2", "id3", "id4"]
    assert recent[0].real_jid == "bob@localhost/r"
    page = await storage.rooms.query("hall", limit=2)
    assert [i.stanza_id for i in page.items] == ["id0", "id1"]
    assert page.count == 5
    assert not page.complete
    by_nick = await storage.rooms.query("hall", ArchiveFilter(with_jid=ROOM_JID, with_resource="ann"))
    assert [i.stanza_id for i in by_nick.items] == ["id1", "id3"]
    last = await storage.rooms.query("hall", backwards=True, limit=2, before="id4")
    assert [i.stanza_id for i in last.items] == ["id2", "id3"]
    with pytest.raises(ArchiveItemNotFound):
        await storage.rooms.query("hall", after="id9")  # another room's message
    assert await storage.rooms.delete("hall")
    assert await storage.rooms.recent("hall", 10) == []
    assert not await storage.rooms.delete("hall")
    assert [e.stanza_id for e in await storage.rooms.recent("other", 10)] == ["id9"]
