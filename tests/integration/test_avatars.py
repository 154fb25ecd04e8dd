"""XEP-0084 avatars on PEP, published by a real client (slixmpp), with XEP-0398 conversion: the
image becomes the vCard PHOTO and its hash rides in the account's presence (XEP-0153); an avatar
over the limit is refused with payload-too-big."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from slixmpp.exceptions import IqError

from tests.integration.conftest import PASSWORD, account_pool
from tests.support.clients import Clients, run, slixmpp_client
from tests.support.peer import C, Peer, error_condition, presence, show, subscribe
from tests.support.server import ServerProcess, running_server
from tests.support.timeouts import TIMEOUT

pytestmark = pytest.mark.usefixtures("server_alive")

NS_VCARD = "vcard-temp"
NS_UPDATE = "vcard-temp:x:update"
NS_ERRORS = "http://jabber.org/protocol/pubsub#errors"
MAX_AVATAR = 2048
IMAGE = bytes(range(256)) * 6  # 1536 bytes: under the limit
IMAGE_ID = hashlib.sha1(IMAGE).hexdigest()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    directory: Path = tmp_path_factory.mktemp("avatars")
    with running_server(directory, extra=f"\n[modules.pep]\nmax_avatar_bytes = {MAX_AVATAR}\n") as process:
        yield process


@pytest.fixture(scope="module")
def pool(server: ServerProcess) -> Iterator[str]:
    return account_pool(server, "avatar", 10)


def publish_with_slixmpp(server: ServerProcess, user: str, image: bytes) -> str | None:
    """Publish data then metadata as slixmpp's XEP-0084 plugin does; the error condition, if any."""

    async def scenario() -> str | None:
        plugins = ("xep_0030", "xep_0060", "xep_0163", "xep_0084")
        async with slixmpp_client(
            f"{user}@localhost/pub", PASSWORD, server.c2s_port, plugins=plugins
        ) as xmpp:
            avatars = xmpp.plugin["xep_0084"]
            try:
                await avatars.publish_avatar(image)
            except IqError as error:
                return str(error.iq["error"]["condition"])
            image_id = hashlib.sha1(image).hexdigest()
            await avatars.publish_avatar_metadata(
                [{"id": image_id, "type": "image/png", "bytes": len(image)}]
            )
            return None

    return run(scenario())


async def vcard(peer: Peer, of: str) -> object:
    reply = await peer.iq(f"<vCard xmlns='{NS_VCARD}'/>", to=of)
    assert reply.get("type") == "result", show(reply)
    return reply.find(f"{{{NS_VCARD}}}vCard")


def test_avatar_becomes_vcard_photo_and_presence_hash(server: ServerProcess, pool: Iterator[str]) -> None:
    alice_name, bob_name = next(pool), next(pool)
    assert publish_with_slixmpp(server, alice_name, IMAGE) is None

    async def check() -> None:
        with trio.fail_after(TIMEOUT):
            alice = await Peer.online(server.c2s_port, alice_name, PASSWORD, "phone")
            bob = await Peer.online(server.c2s_port, bob_name, PASSWORD, "laptop")
            try:
                # XEP-0398: the vCard (what vCard-only clients read) carries the same image.
                card = await vcard(bob, f"{alice_name}@localhost")
                assert card is not None
                binval = card.findtext(f"{{{NS_VCARD}}}PHOTO/{{{NS_VCARD}}}BINVAL")  # type: ignore[attr-defined]
                assert binval is not None
                assert base64.b64decode(binval) == IMAGE
                assert card.findtext(f"{{{NS_VCARD}}}PHOTO/{{{NS_VCARD}}}TYPE") == "image/png"  # type: ignore[attr-defined]
                # XEP-0153: the avatar's hash in presence, as contacts see it.
                await subscribe(bob, alice)
                await alice.send("<presence><status>back</status></presence>")
                seen = await bob.expect(presence(from_=alice.jid))
                assert seen.findtext(f"{{{NS_UPDATE}}}x/{{{NS_UPDATE}}}photo") == IMAGE_ID, show(seen)
                # Disabling the avatar (empty metadata) removes the PHOTO and the hash.
                disable = (
                    "<pubsub xmlns='http://jabber.org/protocol/pubsub'>"
                    "<publish node='urn:xmpp:avatar:metadata'><item id='none'>"
                    "<metadata xmlns='urn:xmpp:avatar:metadata'/></item></publish></pubsub>"
                )
                reply = await alice.iq(disable, type_="set")
                assert reply.get("type") == "result", show(reply)
                card = await vcard(bob, f"{alice_name}@localhost")
                assert card is not None
                assert card.find(f"{{{NS_VCARD}}}PHOTO") is None  # type: ignore[attr-defined]
                await alice.send("<presence><status>plain</status></presence>")
                seen = await bob.expect(presence(from_=alice.jid))
                assert seen.find(f"{{{NS_UPDATE}}}x") is None, show(seen)
            finally:
                await alice.aclose()
                await bob.aclose()

    trio.run(check)


def test_client_hash_in_presence_is_left_alone(server: ServerProcess, pool: Iterator[str]) -> None:
    alice_name = next(pool)
    assert publish_with_slixmpp(server, alice_name, IMAGE) is None

    async def check() -> None:
        with trio.fail_after(TIMEOUT):
            alice = await Peer.login(server.c2s_port, alice_name, PASSWORD, "phone")
            try:
                await alice.send(f"<presence><x xmlns='{NS_UPDATE}'><photo>abc</photo></x></presence>")
                echo = await alice.expect(presence(from_=alice.jid))
                assert [p.text for p in echo.iter(f"{{{NS_UPDATE}}}photo")] == ["abc"]
            finally:
                await alice.aclose()

    trio.run(check)


def test_avatar_too_large_is_refused(server: ServerProcess, pool: Iterator[str]) -> None:
    alice_name = next(pool)
    assert publish_with_slixmpp(server, alice_name, b"\x89PNG" + bytes(MAX_AVATAR)) == "not-acceptable"

    async def check() -> None:
        with trio.fail_after(TIMEOUT):
            alice = await Peer.login(server.c2s_port, alice_name, PASSWORD, "phone")
            try:
                big = base64.b64encode(bytes(MAX_AVATAR + 1)).decode()
                reply = await alice.iq(
                    "<pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='urn:xmpp:avatar:data'>"
                    f"<item id='x'><data xmlns='urn:xmpp:avatar:data'>{big}</data></item></publish></pubsub>",
                    type_="set",
                )
                assert error_condition(reply) == "not-acceptable"
                assert reply.find(f"{C}error/{{{NS_ERRORS}}}payload-too-big") is not None, show(reply)
                not_base64 = await alice.iq(
                    "<pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='urn:xmpp:avatar:data'>"
                    "<item id='x'><data xmlns='urn:xmpp:avatar:data'>!!!</data></item></publish></pubsub>",
                    type_="set",
                )
                assert error_condition(not_base64) == "bad-request"
                card = await vcard(alice, f"{alice_name}@localhost")
                assert card is not None
                assert card.find(f"{{{NS_VCARD}}}PHOTO") is None  # type: ignore[attr-defined]
            finally:
                await alice.aclose()

    trio.run(check)


def test_avatar_notification_reaches_contacts(
    server: ServerProcess, clients: Clients, pool: Iterator[str]
) -> None:
    """A contact whose client asks for avatar metadata (+notify, slixmpp's XEP-0084 plugin with
    caps) gets the metadata when it is published."""
    alice_name, bob_name = next(pool), next(pool)

    async def befriend() -> None:
        with trio.fail_after(TIMEOUT):
            alice = await Peer.online(server.c2s_port, alice_name, PASSWORD, "setup")
            bob = await Peer.online(server.c2s_port, bob_name, PASSWORD, "setup")
            await subscribe(bob, alice)
            await subscribe(alice, bob)
            await alice.aclose()
            await bob.aclose()

    trio.run(befriend)

    async def scenario() -> None:
        plugins = ("xep_0030", "xep_0060", "xep_0115", "xep_0163", "xep_0084")
        async with clients.slixmpp(bob_name, "watch", plugins=plugins) as bob:
            bob.plugin["xep_0163"].add_interest("urn:xmpp:avatar:metadata")
            events: asyncio.Queue[object] = asyncio.Queue()
            bob.add_event_handler("avatar_metadata_publish", events.put_nowait)
            bob.send_presence()
            # Whether alice's service learns bob's caps before or after the publish, bob gets the
            # metadata: as a notification, or as the last item once his caps are known.
            async with clients.slixmpp(alice_name, "pub", plugins=plugins, send_presence=True) as alice:
                avatars = alice.plugin["xep_0084"]
                await avatars.publish_avatar(IMAGE)
                await avatars.publish_avatar_metadata(
                    [{"id": IMAGE_ID, "type": "image/png", "bytes": len(IMAGE)}]
                )
                message = await asyncio.wait_for(events.get(), TIMEOUT)
                assert IMAGE_ID in str(message)

    run(scenario())


def test_vcard_photo_becomes_pep_avatar(server: ServerProcess, pool: Iterator[str]) -> None:
    """XEP-0398 §4: a vCard-only client sets a PHOTO; PEP clients find it as a XEP-0084 avatar."""
    alice_name = next(pool)
    image = b"\x89PNG vcard-only " * 20
    image_id = hashlib.sha1(image).hexdigest()
    pubsub = "http://jabber.org/protocol/pubsub"

    async def check() -> None:
        with trio.fail_after(TIMEOUT):
            alice = await Peer.login(server.c2s_port, alice_name, PASSWORD, "old")
            try:
                binval = base64.b64encode(image).decode()
                photo = f"<PHOTO><TYPE>image/png</TYPE><BINVAL>{binval}</BINVAL></PHOTO>"
                reply = await alice.iq(
                    f"<vCard xmlns='{NS_VCARD}'><FN>Alice</FN>{photo}</vCard>", type_="set"
                )
                assert reply.get("type") == "result", show(reply)
                meta = await alice.iq(
                    f"<pubsub xmlns='{pubsub}'><items node='urn:xmpp:avatar:metadata'/></pubsub>"
                )
                info = meta.find(".//{urn:xmpp:avatar:metadata}info")
                assert info is not None, show(meta)
                assert (info.get("id"), info.get("type"), info.get("bytes")) == (
                    image_id,
                    "image/png",
                    str(len(image)),
                )
                data = await alice.iq(
                    f"<pubsub xmlns='{pubsub}'><items node='urn:xmpp:avatar:data'>"
                    f"<item id='{image_id}'/></items></pubsub>"
                )
                assert base64.b64decode(data.findtext(".//{urn:xmpp:avatar:data}data") or "") == image
                await alice.send("<presence/>")
                echo = await alice.expect(presence(from_=alice.jid))
                assert echo.findtext(f"{{{NS_UPDATE}}}x/{{{NS_UPDATE}}}photo") == image_id, show(echo)
                # A vCard without PHOTO disables the avatar.
                ok = await alice.iq(f"<vCard xmlns='{NS_VCARD}'><FN>Alice</FN></vCard>", type_="set")
                assert ok.get("type") == "result", show(ok)
                meta = await alice.iq(
                    f"<pubsub xmlns='{pubsub}'><items node='urn:xmpp:avatar:metadata'/></pubsub>"
                )
                assert meta.find(".//{urn:xmpp:avatar:metadata}metadata") is not None, show(meta)
                assert meta.find(".//{urn:xmpp:avatar:metadata}info") is None, show(meta)
            finally:
                await alice.aclose()

    trio.run(check)
