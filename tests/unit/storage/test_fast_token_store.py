"""XEP-0484 FAST tokens (`FastTokenStore`) on each backend: stored hashed, two slots per client,
rotation, the replay guard of `use`, revocation, and schema version 14."""

from __future__ import annotations

import hashlib

from imactor.storage import Storage, schema
from imactor.xmpp import fast
from tests.unit.storage.conftest import FAST_ITERATIONS, execute

NOW = 1_800_000_000.0
PHONE, LAPTOP = "2c2b8d4e-phone", "9a1f3e77-laptop"


def token(seed: int) -> tuple[str, bytes]:
    return fast.new_token(bytes([seed]) * fast.TOKEN_BYTES)


async def test_only_the_hash_is_stored(storage: Storage, alice: str, db_url: str) -> None:
    value, key = token(1)
    await storage.fast_tokens.issue(alice, PHONE, key, "HT-SHA-256-NONE", expires_at=NOW + 60, now=NOW)
    rows = execute(db_url, "SELECT token_hash, slot FROM fast_token")
    assert rows == [(hashlib.sha256(value.encode()).hexdigest(), fast.NEW)]
    assert value not in repr(execute(db_url, "SELECT * FROM fast_token"))
    (stored,) = await storage.fast_tokens.tokens(alice, PHONE)
    assert (stored.key, stored.mechanism, stored.expires_at, stored.last_count) == (
        key, "HT-SHA-256-NONE", NOW + 60, -1,
    )  # fmt: skip


async def test_rotation_keeps_the_old_token_until_the_new_one_is_used(storage: Storage, alice: str) -> None:
    store = storage.fast_tokens
    _, first = token(1)
    await store.issue(alice, PHONE, first, "HT-SHA-256-NONE", expires_at=NOW + 60, now=NOW)
    assert await store.use(alice, PHONE, fast.NEW, None)  # first becomes current
    _, second = token(2)
    await store.issue(alice, PHONE, second, "HT-SHA-256-NONE", expires_at=NOW + 120, now=NOW)
    slots = {t.slot: t.key for t in await store.tokens(alice, PHONE)}
    assert slots == {fast.CURRENT: first, fast.NEW: second}  # both valid meanwhile
    assert await store.use(alice, PHONE, fast.NEW, None)
    assert {t.slot: t.key for t in await store.tokens(alice, PHONE)} == {fast.CURRENT: second}


async def test_an_unused_new_token_is_replaced(storage: Storage, alice: str) -> None:
    store = storage.fast_tokens
    await store.issue(alice, PHONE, token(1)[1], "HT-SHA-256-NONE", expires_at=NOW + 60, now=NOW)
    await store.issue(alice, PHONE, token(2)[1], "HT-SHA-256-NONE", expires_at=NOW + 60, now=NOW)
    assert [t.key for t in await store.tokens(alice, PHONE)] == [token(2)[1]]


async def test_a_count_is_used_once(storage: Storage, alice: str) -> None:
    store = storage.fast_tokens
    await store.issue(alice, PHONE, token(1)[1], "HT-SHA-256-NONE", expires_at=NOW + 60, now=NOW)
    assert await store.use(alice, PHONE, fast.NEW, 5)
    assert not await store.use(alice, PHONE, fast.CURRENT, 5)  # the same count again: a replay
    assert not await store.use(alice, PHONE, fast.CURRENT, 4)
    assert await store.use(alice, PHONE, fast.CURRENT, 6)
    assert [t.last_count for t in await store.tokens(alice, PHONE)] == [6]


async def test_clients_are_apart_and_revocation_takes_them_all(storage: Storage, alice: str) -> None:
    store = storage.fast_tokens
    await storage.accounts.create("bob", "secret", iterations=FAST_ITERATIONS)
    for client in (PHONE, LAPTOP):
        await store.issue(alice, client, token(1)[1], "HT-SHA-256-NONE", expires_at=NOW + 60, now=NOW)
    await store.issue("bob", PHONE, token(3)[1], "HT-SHA-256-NONE", expires_at=NOW + 60, now=NOW)
    await store.invalidate(alice, LAPTOP, fast.NEW)
    assert await store.tokens(alice, LAPTOP) == []
    assert len(await store.tokens(alice, PHONE)) == 1
    assert await store.revoke_all(alice) == 1
    assert await store.tokens(alice, PHONE) == []
    assert len(await store.tokens("bob", PHONE)) == 1  # another account's are untouched


async def test_tokens_go_with_their_account(storage: Storage, alice: str) -> None:
    await storage.fast_tokens.issue(
        alice, PHONE, token(1)[1], "HT-SHA-256-NONE", expires_at=NOW + 60, now=NOW
    )
    await storage.accounts.delete(alice)
    assert await storage.fast_tokens.tokens(alice, PHONE) == []


async def test_a_version_13_database_gets_the_table(db_url: str) -> None:
    async with await Storage.open(db_url) as storage:
        await storage.accounts.create("alice", "secret", iterations=FAST_ITERATIONS)
    execute(db_url, "DROP TABLE fast_token")
    execute(db_url, "UPDATE schema_version SET version = 13")
    async with await Storage.open(db_url) as storage:
        await storage.fast_tokens.issue(
            "alice", PHONE, token(1)[1], "HT-SHA-256-NONE", expires_at=NOW, now=NOW
        )
        assert len(await storage.fast_tokens.tokens("alice", PHONE)) == 1
    assert execute(db_url, "SELECT version FROM schema_version") == [(schema.current_version(),)]


async def test_a_login_read_says_whether_the_account_is_disabled(storage: Storage, alice: str) -> None:
    store = storage.fast_tokens
    await store.issue(alice, PHONE, token(1)[1], "HT-SHA-256-NONE", expires_at=NOW + 60, now=NOW)
    tokens, disabled = await store.login(alice, PHONE)
    assert (len(tokens), disabled) == (1, False)
    await storage.accounts.set_disabled(alice, True)
    assert (await store.login(alice, PHONE))[1] is True
    assert await store.login("nobody", PHONE) == ([], False)


async def test_a_new_password_revokes_every_token(storage: Storage, alice: str) -> None:
    """A token stands for the password it was issued under: changing the password (the CLI, the
    console, XEP-0077, the XEP-0133 command all come here) locks out whoever held one."""
    store = storage.fast_tokens
    await store.issue(alice, PHONE, token(1)[1], "HT-SHA-256-NONE", expires_at=NOW + 60, now=NOW)
    await store.issue(alice, LAPTOP, token(2)[1], "HT-SHA-256-NONE", expires_at=NOW + 60, now=NOW)
    await storage.accounts.set_password(alice, "a new password", iterations=FAST_ITERATIONS)
    assert await store.tokens(alice, PHONE) == []
    assert await store.tokens(alice, LAPTOP) == []
