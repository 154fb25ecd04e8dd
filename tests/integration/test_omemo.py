"""OMEMO (XEP-0384) through imactor: two real OMEMO clients (slixmpp + slixmpp-omemo) publish
their device lists and bundles on PEP and exchange encrypted messages, live and through offline
storage; then the database holds only ciphertext, never the plaintext."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from typing import Any

import omemo.storage
import pytest
import slixmpp
from omemo.types import DeviceInformation, JSONType
from slixmpp.plugins import register_plugin
from slixmpp_omemo import XEP_0384, TrustLevel

from tests.integration.conftest import PASSWORD, account_pool
from tests.support.clients import event_queue, make_slixmpp, run, wait_disconnected
from tests.support.peer import befriend
from tests.support.server import ServerProcess
from tests.support.timeouts import SLOW_TIMEOUT, TIMEOUT

SECRETS = ("the launch code is 0000 swordfish", "offline: meet at the old mill at dawn")


class MemoryStorage(omemo.storage.Storage):
    """OMEMO state of one test device, in memory (kept across its reconnections)."""

    def __init__(self) -> None:
        super().__init__()
        self.data: dict[str, JSONType] = {}

    async def _load(self, key: str) -> omemo.storage.Maybe[JSONType]:
        if key in self.data:
            return omemo.storage.Just(self.data[key])
        return omemo.storage.Nothing()

    async def _store(self, key: str, value: JSONType) -> None:
        self.data[key] = value

    async def _delete(self, key: str) -> None:
        self.data.pop(key, None)


class TestOmemo(XEP_0384):  # type: ignore[misc]
    """slixmpp-omemo with blind trust before verification and a per-client memory storage."""

    __test__ = False  # not a pytest class
    default_config = {"fallback_message": "This message is OMEMO encrypted.", "json_storage": None}

    @property
    def storage(self) -> omemo.storage.Storage:
        store = self.config.get("json_storage")
        assert isinstance(store, MemoryStorage)
        return store

    @property
    def _btbv_enabled(self) -> bool:
        return True

    async def _devices_blindly_trusted(self, blindly_trusted: frozenset[DeviceInformation],
                                       identifier: str | None) -> None:  # fmt: skip
        pass

    async def _prompt_manual_trust(self, manually_trusted: frozenset[DeviceInformation],
                                   identifier: str | None) -> None:  # fmt: skip
        session_manager = await self.get_session_manager()
        for device in manually_trusted:
            await session_manager.set_trust(device.bare_jid, device.identity_key, TrustLevel.TRUSTED.value)


register_plugin(TestOmemo)


@pytest.fixture(scope="module")
def pool(server: ServerProcess) -> Iterator[str]:
    return account_pool(server, "omemo", 4)


class OmemoClient:
    """One OMEMO device: a slixmpp client with XEP-0384, its decrypted messages in a queue."""

    def __init__(self, jid: str, storage: MemoryStorage) -> None:
        self.xmpp = make_slixmpp(jid, PASSWORD, plugins=("xep_0030", "xep_0060", "xep_0163", "xep_0115"))
        self.xmpp.register_plugin("xep_0384", pconfig={"json_storage": storage})
        self.plain: asyncio.Queue[str] = asyncio.Queue()
        self.encrypted_seen: list[str] = []
        self.errors: list[BaseException] = []
        self.xmpp.add_event_handler("message", self._on_message)

    @property
    def omemo(self) -> Any:
        return self.xmpp.plugin["xep_0384"]

    async def _on_message(self, stanza: slixmpp.Message) -> None:
        if stanza["type"] not in ("chat", "normal") or not self.omemo.is_encrypted(stanza):
            return
        self.encrypted_seen.append(str(stanza))
        try:
            decrypted, _device = await self.omemo.decrypt_message(stanza)
        except Exception as error:
            self.errors.append(error)
            return
        self.plain.put_nowait(decrypted["body"])

    async def start(self, port: int) -> None:
        started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def on_start(_: Any) -> None:
            self.xmpp.send_presence()
            self.xmpp.get_roster()
            if not started.done():
                started.set_result(None)

        def on_omemo(_: Any) -> None:
            if not ready.done():
                ready.set_result(None)

        self.xmpp.add_event_handler("session_start", on_start)
        self.xmpp.add_event_handler("omemo_initialized", on_omemo)
        self.xmpp.connect("127.0.0.1", port)
        await asyncio.wait_for(started, TIMEOUT)
        await asyncio.wait_for(ready, SLOW_TIMEOUT)  # device list and bundles published on PEP

    async def send_encrypted(self, to: str, body: str) -> None:
        message = self.xmpp.make_message(mto=to, mtype="chat")
        message["body"] = body
        encrypted, errors = await self.omemo.encrypt_message(message, slixmpp.JID(to))
        assert encrypted is not None, errors
        encrypted.send()

    async def stop(self) -> None:
        self.xmpp.disconnect()
        await wait_disconnected(self.xmpp)


def db_rows(server: ServerProcess) -> dict[str, list[bytes]]:
    """Every stanza the server stored: archive, offline store, PEP items (read-only)."""
    path = server.data_dir / "imactor.sqlite3"
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {
            table: [bytes(row[0]) for row in conn.execute(f"SELECT {column} FROM {table}")]
            for table, column in (
                ("archive", "stanza"),
                ("offline_message", "stanza"),
                ("pep_item", "payload"),
            )
        }
    finally:
        conn.close()


def test_omemo_end_to_end_and_only_ciphertext_stored(server: ServerProcess, pool: Iterator[str]) -> None:
    alice_name, bob_name = next(pool), next(pool)
    befriend(server.c2s_port, [(alice_name, bob_name, "both")], PASSWORD)
    alice_jid, bob_jid = f"{alice_name}@localhost", f"{bob_name}@localhost"
    alice_store, bob_store = MemoryStorage(), MemoryStorage()

    async def scenario() -> None:
        alice = OmemoClient(f"{alice_jid}/phone", alice_store)
        bob = OmemoClient(f"{bob_jid}/laptop", bob_store)
        await alice.start(server.c2s_port)
        await bob.start(server.c2s_port)
        # Live: Alice → Bob, and Bob answers.
        await alice.send_encrypted(bob_jid, SECRETS[0])
        assert await asyncio.wait_for(bob.plain.get(), TIMEOUT) == SECRETS[0]
        await bob.send_encrypted(alice_jid, "ack " + SECRETS[0])
        assert await asyncio.wait_for(alice.plain.get(), TIMEOUT) == "ack " + SECRETS[0]
        # Offline: Bob leaves (Alice sees him go); her message waits in the offline store.
        gone = event_queue(alice.xmpp, "presence_unavailable")
        await bob.stop()
        while str((await asyncio.wait_for(gone.get(), TIMEOUT))["from"]) != f"{bob_jid}/laptop":
            pass
        await alice.send_encrypted(bob_jid, SECRETS[1])
        # No event tells a client that a message was stored offline: poll the database (bounded).
        for _ in range(200):
            if db_rows(server)["offline_message"]:
                break
            await asyncio.sleep(0.05)
        offline = b"".join(db_rows(server)["offline_message"])
        assert b"<encrypted" in offline, "the message went to offline storage, encrypted"
        assert SECRETS[1].encode() not in offline
        bob = OmemoClient(f"{bob_jid}/laptop", bob_store)
        await bob.start(server.c2s_port)
        assert await asyncio.wait_for(bob.plain.get(), TIMEOUT) == SECRETS[1]
        assert not alice.errors, alice.errors
        assert not bob.errors, bob.errors
        await alice.stop()
        await bob.stop()

    run(scenario(), timeout=SLOW_TIMEOUT)
    stored = db_rows(server)
    # The server kept the conversation (archive) and the device lists and bundles (PEP) ...
    archived = b"".join(stored["archive"])
    assert archived.count(b"<encrypted") >= 3, "the three encrypted messages are archived"
    assert b"urn:xmpp:omemo:2" in b"".join(stored["pep_item"])
    # ... and nowhere a plaintext.
    everything = b"".join(b"".join(rows) for rows in stored.values())
    # The raw database files too (with the write-ahead log): no table or page holds it.
    for path in server.data_dir.glob("imactor.sqlite3*"):
        everything += path.read_bytes()
    for secret in SECRETS:
        assert secret.encode() not in everything
        assert b"swordfish" not in everything
        assert b"old mill" not in everything
