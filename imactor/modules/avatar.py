"""XEP-0084 User Avatar on PEP, with XEP-0398 conversion to vCard avatars (XEP-0153 hashes).

Clients publish the image to the `urn:xmpp:avatar:data` node (item id: the SHA-1 of the image)
and its description to `urn:xmpp:avatar:metadata`; the PEP module stores and notifies them like
any other node and announces their changes, which this module follows (`Module.on_node`): it
refuses an image larger than `[modules.pep] max_avatar_bytes` (decoded) with `not-acceptable` +
`payload-too-big`, and adds what XEP-0398 asks of the server:

- when new metadata is published, the image becomes the account's vCard PHOTO (XEP-0054), so
  that vCard-only clients see it, and an empty <metadata/> (avatar disabled) removes it;
- the account's available presence carries `<x xmlns='vcard-temp:x:update'><photo>` with the
  avatar's hash (XEP-0153 §3.2: the SHA-1 of the image, which is the XEP-0084 item id), unless the
  client put one there itself.

- when a vCard-only client stores a vCard whose PHOTO differs from the current avatar, the image
  is published to both nodes (and contacts that asked for it are notified); a vCard without PHOTO
  disables the avatar (XEP-0398 §4).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable
from typing import TYPE_CHECKING

from lxml import etree

from imactor.modules import pep
from imactor.server.modules import AccountApi, EnabledModule, Module, NodeEvent, PresenceContext, Xep
from imactor.xmpp import pubsub as ps
from imactor.xmpp import stanza as st
from imactor.xmpp.namespaces import (
    NS_AVATAR_DATA,
    NS_AVATAR_METADATA,
    NS_VCARD,
    NS_VCARD_UPDATE,
    qname,
)

if TYPE_CHECKING:
    from imactor.storage import Storage

NS_CONVERSION = "urn:xmpp:pep-vcard-conversion:0"

module = Module(
    name="avatar", summary="User avatars (PEP, converted to vCard avatars)",
    xeps=(Xep("0084", "1.1.4", "complete"),
          Xep("0398", "0.2.1", "complete"),
          Xep("0153", "1.1", "complete: hashes in presence")),
    features=(NS_CONVERSION,), account_features=(NS_CONVERSION,), depends=("pep", "vcard"),
)  # fmt: skip

_STATE = "avatar"  #: account_state() key: the current avatar hash ("" none, absent: unknown)


def check_data(payload: st.Element, max_bytes: int) -> None:
    """A `urn:xmpp:avatar:data` payload: base64 of an image no larger than `max_bytes`.

    Raises:
        StanzaError: `bad-request` + `invalid-payload`, or `not-acceptable` + `payload-too-big`.
    """
    if payload.tag != qname(NS_AVATAR_DATA, "data"):
        raise ps.pubsub_error(
            "bad-request", "invalid-payload", "expected <data xmlns='urn:xmpp:avatar:data'/>"
        )
    text = "".join((payload.text or "").split())
    if len(text) * 3 // 4 > max_bytes + 2:
        raise ps.pubsub_error(
            "not-acceptable", "payload-too-big", f"avatars are limited to {max_bytes} bytes"
        )
    try:
        image = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ps.pubsub_error("bad-request", "invalid-payload", "the avatar is not base64") from None
    if len(image) > max_bytes:
        raise ps.pubsub_error(
            "not-acceptable", "payload-too-big", f"avatars are limited to {max_bytes} bytes"
        )


def enabled(modules: Iterable[EnabledModule]) -> bool:
    return any(m.name == module.name for m in modules)


@module.on_node(NS_AVATAR_DATA, NS_AVATAR_METADATA)
async def node_event(event: NodeEvent) -> None:
    """The image is checked before PEP stores it; new metadata updates the vCard."""
    if event.kind == "publishing" and event.node == NS_AVATAR_DATA:
        assert event.payload is not None
        check_data(event.payload, event.service_options.max_avatar_bytes)
    elif event.kind == "published" and event.node == NS_AVATAR_METADATA:
        assert event.payload is not None
        await metadata_published(event.account, event.storage, event.payload)


async def metadata_published(account: AccountApi, storage: Storage, metadata: st.Element) -> None:
    """XEP-0398 §3: new metadata makes the vCard PHOTO follow (or go, for an empty <metadata/>)."""
    info = metadata.find(qname(NS_AVATAR_METADATA, "info"))
    if info is None or not info.get("id"):
        account.account_state()[_STATE] = ""
        await _set_photo(account, storage, None, None)
        return
    avatar_id = info.get("id", "")
    found = await storage.pep.items(account.username, NS_AVATAR_DATA, limit=1, item_ids=[avatar_id])
    if not found:
        return  # the image lives elsewhere (an <info url=…/>): nothing to convert
    data = etree.fromstring(found[0].payload)
    image = base64.b64decode("".join((data.text or "").split()))
    if hashlib.sha1(image).hexdigest() != avatar_id.lower():
        return  # XEP-0084 §4.2: the id must be the image's SHA-1; do not spread a wrong hash
    account.account_state()[_STATE] = avatar_id
    await _set_photo(account, storage, info.get("type", "image/png"), image)


async def _set_photo(account: AccountApi, storage: Storage, mime: str | None, image: bytes | None) -> None:
    stored = await storage.vcards.get(account.username)
    vcard = (
        etree.fromstring(stored)
        if stored is not None
        else etree.Element(qname(NS_VCARD, "vCard"), nsmap=st.default_ns(NS_VCARD))
    )
    for old in vcard.findall(qname(NS_VCARD, "PHOTO")):
        vcard.remove(old)
    if image is not None and mime is not None:
        photo = st.child(vcard, NS_VCARD, "PHOTO")
        st.child(photo, NS_VCARD, "TYPE", mime)
        st.child(photo, NS_VCARD, "BINVAL", base64.b64encode(image).decode("ascii"))
    elif stored is None:
        return
    await storage.vcards.set(account.username, st.serialize(vcard))


async def _current_hash(account: AccountApi, storage: Storage) -> str:
    known = account.account_state().get(_STATE)
    if isinstance(known, str):
        return known
    found = await storage.pep.items(account.username, NS_AVATAR_METADATA, limit=1)
    avatar_id = ""
    if found:
        info = etree.fromstring(found[0].payload).find(qname(NS_AVATAR_METADATA, "info"))
        avatar_id = "" if info is None else info.get("id", "")
    account.account_state()[_STATE] = avatar_id
    return avatar_id


@module.on_presence
async def add_photo_hash(ctx: PresenceContext) -> None:
    """XEP-0398 §3 / XEP-0153 §3.2: the avatar's hash in the account's available presence."""
    presence = ctx.stanza
    if not ctx.own or presence.get("type") not in (None, ""):
        return
    if presence.find(qname(NS_VCARD_UPDATE, "x")) is not None:
        return  # the client said it itself
    avatar_id = await _current_hash(ctx.account, ctx.storage)
    if avatar_id:
        update = st.child(presence, NS_VCARD_UPDATE, "x")
        st.child(update, NS_VCARD_UPDATE, "photo", avatar_id)


async def vcard_stored(account: AccountApi, storage: Storage, vcard: st.Element) -> None:
    """XEP-0398 §4: a vCard stored by a vCard-only client; its PHOTO becomes the PEP avatar.

    Nodes this creates get PEP's default configuration and `max_items` 1 (the vCard handler does
    not see the PEP module's options)."""
    binval = vcard.findtext(f"{qname(NS_VCARD, 'PHOTO')}/{qname(NS_VCARD, 'BINVAL')}")
    image = None
    if binval is not None:
        try:
            image = base64.b64decode("".join(binval.split()), validate=True)
        except (binascii.Error, ValueError):
            return  # not an image we can hash: leave the PEP avatar alone
    avatar_id = "" if not image else hashlib.sha1(image).hexdigest()
    if avatar_id == await _current_hash(account, storage):
        return  # unchanged (or the vCard we wrote ourselves from the PEP avatar)
    metadata = etree.Element(qname(NS_AVATAR_METADATA, "metadata"), nsmap=st.default_ns(NS_AVATAR_METADATA))
    if image:
        data = etree.Element(qname(NS_AVATAR_DATA, "data"), nsmap=st.default_ns(NS_AVATAR_DATA))
        data.text = base64.b64encode(image).decode("ascii")
        await pep.publish_item(account, storage, NS_AVATAR_DATA, avatar_id, data)
        info = st.child(metadata, NS_AVATAR_METADATA, "info")
        info.set("id", avatar_id)
        info.set("bytes", str(len(image)))
        info.set(
            "type", vcard.findtext(f"{qname(NS_VCARD, 'PHOTO')}/{qname(NS_VCARD, 'TYPE')}") or "image/png"
        )
    await pep.publish_item(account, storage, NS_AVATAR_METADATA, avatar_id or "none", metadata)
    account.account_state()[_STATE] = avatar_id
