"""The pending email digests (`imactor.storage.email`) on both backends, and schema version 10."""

from __future__ import annotations

import time

from imactor.storage import Storage, schema
from tests.unit.storage.conftest import FAST_ITERATIONS, execute

QUIET = 600.0


async def test_messages_join_one_digest_due_a_quiet_period_later(storage: Storage, alice: str) -> None:
    before = time.time()
    await storage.email.add(alice, "bob@example.org", "", quiet_period=QUIET)
    await storage.email.add(alice, "carol@example.org", "hi", quiet_period=QUIET)
    await storage.email.add("nobody", "bob@example.org", "", quiet_period=QUIET)  # no such account: nothing
    assert await storage.email.pending() == [(alice, 2)]
    assert await storage.email.due(before + QUIET - 1) == []
    assert await storage.email.due(time.time() + QUIET) == [alice]
    assert await storage.email.claim(alice, before + QUIET - 1, lease=60) is None  # not due yet
    digest = await storage.email.claim(alice, time.time() + QUIET, lease=60)
    assert digest is not None
    entries = [(e.sender, e.text) for e in digest.entries]
    assert entries == [("bob@example.org", ""), ("carol@example.org", "hi")]
    assert digest.attempts == 0


async def test_a_claimed_digest_has_one_sender_until_its_lease_ends(storage: Storage, alice: str) -> None:
    await storage.email.add(alice, "bob@example.org", "", quiet_period=0.0)
    now = time.time() + 1
    assert await storage.email.claim(alice, now, lease=60) is not None
    assert await storage.email.claim(alice, now, lease=60) is None  # another sender
    assert await storage.email.due(now) == []
    assert await storage.email.claim(alice, now + 61, lease=60) is not None  # the first one died


async def test_finish_keeps_what_came_during_the_send_for_the_next(storage: Storage, alice: str) -> None:
    await storage.email.add(alice, "bob@example.org", "", quiet_period=0.0)
    digest = await storage.email.claim(alice, time.time() + 1, lease=60)
    assert digest is not None
    await storage.email.add(alice, "carol@example.org", "", quiet_period=0.0)  # while sending
    await storage.email.finish(digest, quiet_period=QUIET)
    assert await storage.email.pending() == [(alice, 1)]
    assert await storage.email.due(time.time() + 1) == []  # a new quiet period
    following = await storage.email.claim(alice, time.time() + QUIET + 1, lease=60)
    assert following is not None
    assert following.digest_id != digest.digest_id
    assert [e.sender for e in following.entries] == ["carol@example.org"]
    await storage.email.finish(following, quiet_period=QUIET)
    assert await storage.email.pending() == []
    assert await storage.email.due(time.time() + 2 * QUIET) == []


async def test_a_failed_send_is_counted_and_due_again_later(storage: Storage, alice: str) -> None:
    await storage.email.add(alice, "bob@example.org", "", quiet_period=0.0)
    now = time.time() + 1
    digest = await storage.email.claim(alice, now, lease=60)
    assert digest is not None
    await storage.email.retry(alice, now + 30)
    assert await storage.email.due(now + 29) == []
    again = await storage.email.claim(alice, now + 30, lease=60)
    assert again is not None
    assert (again.attempts, again.digest_id) == (1, digest.digest_id)  # the same mail, resent


async def test_coming_online_drops_a_digest_unless_it_is_being_sent(storage: Storage, alice: str) -> None:
    await storage.email.add(alice, "bob@example.org", "", quiet_period=QUIET)
    await storage.email.seen(alice)
    assert await storage.email.pending() == []
    assert await storage.email.due(time.time() + 2 * QUIET) == []
    await storage.email.add(alice, "bob@example.org", "", quiet_period=0.0)
    assert await storage.email.claim(alice, time.time() + 1, lease=60) is not None
    await storage.email.seen(alice)  # too late: the sender has it
    assert await storage.email.pending() == [(alice, 1)]


async def test_the_accounts_choice(storage: Storage, alice: str) -> None:
    assert await storage.email.enabled(alice)
    assert await storage.email.set_enabled(alice, False)
    assert not await storage.email.enabled(alice)
    assert await storage.email.set_enabled(alice, True)
    assert await storage.email.enabled(alice)
    assert not await storage.email.set_enabled("nobody", False)
    await storage.email.set_enabled(alice, False)
    await storage.accounts.delete(alice)  # its rows go with it
    assert await storage.email.enabled(alice)


async def test_a_version_9_database_gets_the_digest_tables(db_url: str) -> None:
    async with await Storage.open(db_url) as storage:
        await storage.accounts.create("alice", "secret", iterations=FAST_ITERATIONS)
    for table in ("email_digest_entry", "email_digest", "email_notify"):
        execute(db_url, f"DROP TABLE {table}")
    execute(db_url, "UPDATE schema_version SET version = 9")
    async with await Storage.open(db_url) as storage:
        await storage.email.add("alice", "bob@example.org", "", quiet_period=QUIET)
        assert await storage.email.pending() == [("alice", 1)]
        assert await storage.email.set_enabled("alice", False)
    assert execute(db_url, "SELECT version FROM schema_version") == [(schema.current_version(),)]


async def test_the_address_is_the_directorys_else_the_vcards(storage: Storage, alice: str) -> None:
    from imactor.directory.org import Department, Org, Person
    from imactor.modules.email_digest import recipient

    assert await recipient(storage, alice) == ("", "")
    await storage.vcards.set(alice, (
        b"<vCard xmlns='vcard-temp'><FN>Alice A.</FN><EMAIL><USERID>not an address</USERID></EMAIL>"
        b"<EMAIL><INTERNET/><USERID>alice@home.example</USERID></EMAIL></vCard>"
    ))  # fmt: skip
    assert await recipient(storage, alice) == ("alice@home.example", "Alice A.")
    acme = Department("acme", "Acme", None)
    await storage.org.replace(Org((acme,), (Person(alice, "爱丽丝", "acme", email="alice@corp.example"),)))
    assert await recipient(storage, alice) == ("alice@corp.example", "爱丽丝")
    # A directory value that could name a second recipient counts as none: the vCard's is used.
    two = Person(alice, "爱丽丝", "acme", email="a@x.example,b@y.example")
    await storage.org.replace(Org((acme,), (two,)))
    assert await recipient(storage, alice) == ("alice@home.example", "爱丽丝")
