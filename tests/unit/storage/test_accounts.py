"""AccountStore: SCRAM verifiers only, PRECIS names, bulk creation, cascading deletion."""

from __future__ import annotations

import concurrent.futures
from pathlib import Path

import pytest
import trio

from imactor.storage import HASH_NAMES, AccountExists, AccountNotFound, RosterItem, Storage
from imactor.xmpp.scram import ScramCredentials, verify_password
from tests.unit.storage.conftest import execute, table_names

#: Fewer PBKDF2 rounds than production keep these tests fast (the value is still checked).
FAST_ITERATIONS = 512


async def test_create_stores_verifiers_for_both_hashes(storage: Storage) -> None:
    await storage.accounts.create("bob", "hunter2", iterations=FAST_ITERATIONS)
    creds = await storage.accounts.get_credentials("bob")
    assert creds is not None
    assert set(creds) == {"SHA-1", "SHA-256"} == set(HASH_NAMES)
    for name, c in creds.items():
        assert c.hash_name == name
        assert c.iterations == FAST_ITERATIONS
        assert len(c.salt) >= 16
        assert verify_password("hunter2", c)
        assert not verify_password("hunter3", c)
    assert creds["SHA-1"].salt != creds["SHA-256"].salt  # independent salts


async def test_password_is_never_stored(storage: Storage, db_url: str) -> None:
    await storage.accounts.create("bob", "a-very-recognisable-password", iterations=FAST_ITERATIONS)
    await storage.aclose()
    if db_url.startswith("sqlite"):
        db_file = Path(db_url.removeprefix("sqlite:///"))
        raw = b"".join(p.read_bytes() for p in db_file.parent.iterdir())  # the file, its WAL and SHM
    else:  # PostgreSQL: every row of every table of the schema, as text
        raw = repr(
            [execute(db_url, f"SELECT * FROM {name}") for name in sorted(table_names(db_url))]
        ).encode()
    assert b"bob" in raw
    assert b"a-very-recognisable-password" not in raw


async def test_usernames_are_prepared(storage: Storage) -> None:
    await storage.accounts.create("Bob", "pw", iterations=FAST_ITERATIONS)
    assert await storage.accounts.exists("bob")
    assert await storage.accounts.exists("BOB")
    assert await storage.accounts.list_usernames() == ["bob"]
    with pytest.raises(AccountExists):
        await storage.accounts.create("bob", "other", iterations=FAST_ITERATIONS)


@pytest.mark.parametrize("name", ["bad name", "@name", "bad@", "bad@name@twice"])
async def test_invalid_username_is_rejected_and_unknown_everywhere(storage: Storage, name: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        await storage.accounts.create(name, "pw", iterations=FAST_ITERATIONS)
    assert await storage.accounts.get_credentials(name) is None
    assert not await storage.accounts.exists(name)
    with pytest.raises(AccountNotFound):
        await storage.accounts.delete(name)
    assert await storage.accounts.list_usernames() == []


async def test_accounts_of_two_domains_share_a_localpart(storage: Storage) -> None:
    """A [[hosts]] host's account is keyed by its bare JID (imactor.hosts): no schema change, and
    each has its own verifiers and its own rows, on SQLite and PostgreSQL alike."""
    await storage.accounts.create("alice", "primary pw", iterations=FAST_ITERATIONS)
    await storage.accounts.create("Alice@Other.Example", "host pw", iterations=FAST_ITERATIONS)
    assert await storage.accounts.list_usernames() == ["alice", "alice@other.example"]
    primary = await storage.accounts.get_credentials("alice")
    host = await storage.accounts.get_credentials("alice@other.example")
    assert primary is not None
    assert host is not None
    assert verify_password("primary pw", primary["SHA-256"])
    assert not verify_password("host pw", primary["SHA-256"])
    assert verify_password("host pw", host["SHA-256"])
    await storage.roster.put("alice@other.example", RosterItem("bob@example.com", name="Bob"))
    assert (await storage.roster.get("alice"))[1] == []
    assert [item.jid for item in (await storage.roster.get("alice@other.example"))[1]] == ["bob@example.com"]
    await storage.accounts.delete("alice@other.example")
    assert await storage.accounts.list_usernames() == ["alice"]


async def test_unknown_account(storage: Storage) -> None:
    assert await storage.accounts.get_credentials("nobody") is None
    assert not await storage.accounts.exists("nobody")
    with pytest.raises(AccountNotFound):
        await storage.accounts.set_password("nobody", "pw", iterations=FAST_ITERATIONS)
    with pytest.raises(AccountNotFound):
        await storage.accounts.delete("nobody")


async def test_set_password_replaces_verifiers(storage: Storage, alice: str) -> None:
    before = await storage.accounts.get_credentials(alice)
    await storage.accounts.set_password(alice, "new secret", iterations=FAST_ITERATIONS * 2)
    after = await storage.accounts.get_credentials(alice)
    assert before is not None
    assert after is not None
    for name in HASH_NAMES:
        assert verify_password("new secret", after[name])
        assert not verify_password("secret", after[name])
        assert after[name].salt != before[name].salt
        assert after[name].iterations == FAST_ITERATIONS * 2


async def test_list_usernames_is_sorted(storage: Storage) -> None:
    for name in ("carol", "alice", "bob"):
        await storage.accounts.create(name, "pw", iterations=FAST_ITERATIONS)
    assert await storage.accounts.list_usernames() == ["alice", "bob", "carol"]


async def test_delete_removes_the_account_and_all_its_data(storage: Storage, alice: str) -> None:
    await storage.accounts.create("bob", "pw", iterations=FAST_ITERATIONS)
    for user in (alice, "bob"):
        await storage.roster.put(user, RosterItem("carol@localhost", groups=("friends",)))
        await storage.offline.store(user, b"<message/>")
        await storage.private.set(user, "{ns}q", b"<q/>")
        await storage.vcards.set(user, b"<vCard/>")
        await storage.blocking.add(user, ["spam@example.org"])
        await storage.last_activity.set(user, 1000.0, "gone")

    await storage.accounts.delete(alice)

    assert not await storage.accounts.exists(alice)
    assert await storage.accounts.get_credentials(alice) is None
    assert await storage.roster.get(alice) == (0, [])
    assert await storage.offline.count(alice) == 0
    assert await storage.private.get(alice, "{ns}q") is None
    assert await storage.vcards.get(alice) is None
    assert await storage.blocking.get(alice) == []
    assert await storage.last_activity.get(alice) is None
    # Bob's data is untouched.
    assert (await storage.roster.get("bob"))[0] == 1
    assert await storage.offline.count("bob") == 1
    assert await storage.vcards.get("bob") == b"<vCard/>"
    # A new account with the same name starts empty.
    await storage.accounts.create(alice, "pw", iterations=FAST_ITERATIONS)
    assert await storage.roster.get(alice) == (0, [])


async def test_create_many_skips_existing_and_duplicates(storage: Storage, alice: str) -> None:
    accounts = [("bob", "b1"), ("Alice", "not-used"), ("carol", "c1"), ("BOB", "b2")]
    created = await storage.accounts.create_many(accounts, iterations=FAST_ITERATIONS)
    assert created == 2
    assert await storage.accounts.list_usernames() == ["alice", "bob", "carol"]
    creds = await storage.accounts.get_credentials("bob")
    assert creds is not None
    assert verify_password("b1", creds["SHA-256"])
    alice_creds = await storage.accounts.get_credentials("alice")
    assert alice_creds is not None
    assert verify_password("secret", alice_creds["SHA-1"])
    assert await storage.accounts.create_many(accounts, iterations=FAST_ITERATIONS) == 0


async def test_create_many_with_an_invalid_name_creates_nothing(storage: Storage) -> None:
    with pytest.raises(ValueError, match=r"."):
        await storage.accounts.create_many([("ok", "pw"), ("not ok@x", "pw")], iterations=FAST_ITERATIONS)
    assert await storage.accounts.list_usernames() == []


async def test_create_many_two_thousand_accounts(storage: Storage) -> None:
    accounts = [(f"user{i:04d}", f"password {i}") for i in range(2000)]
    assert await storage.accounts.create_many(accounts, iterations=FAST_ITERATIONS) == 2000
    names = await storage.accounts.list_usernames()
    assert names == sorted(name for name, _ in accounts)

    creds = [await storage.accounts.get_credentials(name) for name, _ in accounts]

    def verify_all() -> list[bool]:
        def check(args: tuple[str, dict[str, ScramCredentials] | None]) -> bool:
            password, by_hash = args
            assert by_hash is not None
            return all(verify_password(password, by_hash[h]) for h in HASH_NAMES)

        # PBKDF2 releases the GIL, so threads verify on all cores.
        with concurrent.futures.ThreadPoolExecutor() as pool:
            return list(pool.map(check, zip((p for _, p in accounts), creds, strict=True)))

    assert all(await trio.to_thread.run_sync(verify_all))


async def test_search_pages_through_a_literal_part_of_the_username(storage: Storage) -> None:
    names = ["ann", "anna_b", "annaxb", "bob", "joanna", "zed"]
    await storage.accounts.create_many([(name, "pw") for name in names], iterations=FAST_ITERATIONS)
    await storage.accounts.set_disabled("joanna", True)
    assert await storage.accounts.search() == (6, [(name, name == "joanna") for name in sorted(names)])
    page = await storage.accounts.search("ANN", offset=1, limit=2)
    assert page == (4, [("anna_b", False), ("annaxb", False)])
    assert await storage.accounts.search("a_b") == (1, [("anna_b", False)])  # "_" is no wildcard
    assert await storage.accounts.search("%") == (0, [])
    assert await storage.accounts.search("nobody") == (0, [])
