"""RosterStore: items, upserts, and one version per account bumped on every change."""

from __future__ import annotations

import pytest

from imactor.storage import AccountNotFound, RosterItem, Storage


async def test_empty_roster_of_new_and_unknown_accounts(storage: Storage, alice: str) -> None:
    assert await storage.roster.get(alice) == (0, [])
    assert await storage.roster.get("nobody") == (0, [])
    assert await storage.roster.get_item(alice, "bob@localhost") is None


async def test_put_get_roundtrip_and_versions(storage: Storage, alice: str) -> None:
    bob = RosterItem(
        "bob@localhost", name="Bob", subscription="both", ask=True, pending_in=True, approved=True,
        groups=("Friends", "Work"),
    )  # fmt: skip
    assert await storage.roster.put(alice, bob) == 1
    assert await storage.roster.put(alice, RosterItem("carol@localhost")) == 2
    assert await storage.roster.get_item(alice, "bob@localhost") == bob
    version, items = await storage.roster.get(alice)
    assert version == 2
    assert items == [bob, RosterItem("carol@localhost")]  # ordered by JID


async def test_put_replaces_the_whole_item(storage: Storage, alice: str) -> None:
    await storage.roster.put(alice, RosterItem("bob@localhost", name="Bob", ask=True, groups=("a",)))
    changed = RosterItem("bob@localhost", subscription="to")
    assert await storage.roster.put(alice, changed) == 2
    assert await storage.roster.get(alice) == (2, [changed])


async def test_remove(storage: Storage, alice: str) -> None:
    await storage.roster.put(alice, RosterItem("bob@localhost"))
    await storage.roster.put(alice, RosterItem("carol@localhost"))
    assert await storage.roster.remove(alice, "bob@localhost") == 3
    assert await storage.roster.get(alice) == (3, [RosterItem("carol@localhost")])
    # Removing a JID that is not there changes nothing, so the version stays.
    assert await storage.roster.remove(alice, "bob@localhost") == 3


async def test_rosters_are_per_account(storage: Storage, alice: str) -> None:
    await storage.accounts.create("bob", "pw", iterations=512)
    await storage.roster.put(alice, RosterItem("carol@localhost"))
    assert await storage.roster.get("bob") == (0, [])
    assert await storage.roster.put("bob", RosterItem("carol@localhost", subscription="from")) == 1
    assert (await storage.roster.get_item(alice, "carol@localhost")) == RosterItem("carol@localhost")


async def test_invalid_subscription(storage: Storage, alice: str) -> None:
    with pytest.raises(ValueError, match="subscription"):
        await storage.roster.put(alice, RosterItem("bob@localhost", subscription="sometimes"))
    assert await storage.roster.get(alice) == (0, [])


async def test_writes_for_unknown_account(storage: Storage) -> None:
    with pytest.raises(AccountNotFound):
        await storage.roster.put("nobody", RosterItem("bob@localhost"))
    with pytest.raises(AccountNotFound):
        await storage.roster.remove("nobody", "bob@localhost")
