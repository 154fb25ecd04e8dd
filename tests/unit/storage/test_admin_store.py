"""What XEP-0133 administration stores: the accounts' disabled flag (read with a login's verifiers)
and the message of the day; and schema version 9, which adds both to an older database."""

from __future__ import annotations

import pytest

from imactor.storage import AccountNotFound, Storage, schema
from imactor.xmpp.scram import verify_password
from tests.unit.storage.conftest import FAST_ITERATIONS, execute


async def test_a_login_reads_the_verifiers_and_the_disabled_flag(storage: Storage, alice: str) -> None:
    credentials, disabled = await storage.accounts.get_login("Alice")  # a prepared name
    assert credentials is not None
    assert verify_password("secret", credentials["SHA-256"])
    assert disabled is False
    assert await storage.accounts.get_login("nobody") == (None, False)
    assert await storage.accounts.get_login("@bad@") == (None, False)

    await storage.accounts.set_disabled(alice, True)
    credentials, disabled = await storage.accounts.get_login(alice)
    assert credentials is not None  # still an account with its verifiers and data
    assert disabled is True
    assert await storage.accounts.is_disabled(alice)
    assert await storage.accounts.exists(alice)

    await storage.accounts.set_disabled(alice, False)
    assert await storage.accounts.get_login(alice) == (credentials, False)
    assert not await storage.accounts.is_disabled(alice)


async def test_unknown_accounts_cannot_be_disabled(storage: Storage) -> None:
    for name in ("nobody", "@bad@"):
        with pytest.raises(AccountNotFound):
            await storage.accounts.set_disabled(name, True)
    assert not await storage.accounts.is_disabled("nobody")


async def test_counts_and_lists_of_all_and_of_disabled_accounts(storage: Storage, alice: str) -> None:
    assert await storage.accounts.count() == 1
    assert await storage.accounts.count(disabled=True) == 0
    assert await storage.accounts.list_page(disabled=True) == []
    await storage.accounts.create_many(
        [("dave", "x"), ("bob", "x"), ("carol", "y")], iterations=FAST_ITERATIONS
    )
    await storage.accounts.set_disabled("dave", True)
    await storage.accounts.set_disabled("bob", True)
    assert await storage.accounts.count() == 4
    assert await storage.accounts.count(disabled=True) == 2
    assert await storage.accounts.list_page() == ["alice", "bob", "carol", "dave"]
    assert await storage.accounts.list_page(limit=2) == ["alice", "bob"]
    assert await storage.accounts.list_page(disabled=True) == ["bob", "dave"]
    assert await storage.accounts.list_page(limit=1, disabled=True) == ["bob"]
    await storage.accounts.delete("bob")
    assert (await storage.accounts.count(), await storage.accounts.count(disabled=True)) == (3, 1)


async def test_the_message_of_the_day_is_set_replaced_and_deleted(storage: Storage) -> None:
    assert await storage.motd.get() is None
    assert await storage.motd.delete() is False
    await storage.motd.set("Welcome ☃\nsecond line")
    assert await storage.motd.get() == "Welcome ☃\nsecond line"
    await storage.motd.set("replaced")
    assert await storage.motd.get() == "replaced"
    assert await storage.motd.delete() is True
    assert await storage.motd.get() is None


async def test_a_version_8_database_gets_the_flag_and_the_motd(db_url: str) -> None:
    """Schema version 9 adds both to a database written before it, on either backend."""
    async with await Storage.open(db_url) as storage:
        await storage.accounts.create("alice", "secret", iterations=FAST_ITERATIONS)
    # What version 8 had: no flag, no motd table.
    execute(db_url, "DROP TABLE motd")
    execute(db_url, "ALTER TABLE account DROP COLUMN disabled")
    execute(db_url, "UPDATE schema_version SET version = 8")
    async with await Storage.open(db_url) as storage:
        assert await storage.accounts.get_login("alice") != (None, False)
        assert not await storage.accounts.is_disabled("alice")  # existing accounts stay enabled
        await storage.accounts.set_disabled("alice", True)
        assert await storage.accounts.is_disabled("alice")
        await storage.motd.set("hello")
        assert await storage.motd.get() == "hello"
    assert execute(db_url, "SELECT version FROM schema_version") == [(schema.current_version(),)]
