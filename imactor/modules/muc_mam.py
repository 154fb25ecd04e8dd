"""XEP-0313 Message Archive Management for chat rooms (XEP-0045), as Prosody's mod_muc_mam.

The room archive is a plugin of the rooms, with a room scope: the room core only says which
messages it keeps (`Outcome.archive`: bodies and subject changes of a room whose
`muc#roomconfig_enablelogging` is on, each with the room's XEP-0359 stanza id) and the room's
actor hands them to the room hooks. Here they are appended to the room's archive (`muc_archive`,
`storage/rooms.py`) before the room broadcasts them, and before the sender's XEP-0198 completion,
so a groupchat message counted in the sender's `h` is archived. A failed write is logged: the
message still goes out (the room's history is in its memory too).

Queries on the room's bare JID (ROOM scope, run in the room's actor): the form (§4.1.5) and the
query itself (§4), answered as for an account (`mam.answer_query`), with results sent from the
room's JID. Whoever may enter the room may read its archive (members-only: members and above);
others get `forbidden`, and a room that does not exist `item-not-found`. The page size is
`[muc] max_history`, at least 50. The rooms and the chat service announce `urn:xmpp:mam:2`.
"""

from __future__ import annotations

import logging

from imactor.modules import mam
from imactor.server.modules import IqContext, Module, RoomApi, RoomMessagesContext, Scope, Xep
from imactor.storage import ArchiveFilter, ArchivePage, StorageError
from imactor.storage.rooms import RoomArchiveEntry
from imactor.xmpp import stanza as st
from imactor.xmpp.errors import StanzaError

log = logging.getLogger("imactor.room")

#: The smallest page size of a room archive query, whatever `[muc] max_history` says.
MIN_PAGE = 50

module = Module(
    name="muc_mam", summary="Message Archive Management for chat rooms",
    xeps=(Xep("0313", "1.1.3", "partial: room archives, no 'ids' field"),),
    room_features=(mam.NS_MAM,), depends=("mam",),
)  # fmt: skip


@module.on_room_messages
async def archive(ctx: RoomMessagesContext) -> None:
    """Append what the room keeps to its archive, before it goes out (module docstring)."""
    room = ctx.room
    entries = [
        RoomArchiveEntry(room.name, str(room.jid), item.stanza_id, item.stamp, item.nick, str(item.real_jid),
                         st.serialize(item.element))
        for item in ctx.messages
    ]  # fmt: skip
    try:
        await ctx.storage.rooms.append(entries)
    except StorageError:
        log.exception("room %s: archive write failed", room.jid)


def _readable(ctx: IqContext) -> RoomApi:
    room = ctx.room
    assert room is not None
    if not room.exists or not room.may_read_archive(ctx.from_jid):
        raise StanzaError("forbidden" if room.exists else "item-not-found")
    return room


@module.iq("get", mam.NS_MAM, "query", scope=Scope.ROOM)
async def query_form(ctx: IqContext) -> st.Element:
    """§4.1.5: the form fields a query of the room's archive may use."""
    _readable(ctx)
    return mam.query_form_reply(ctx.stanza, ctx.from_jid)


@module.iq("set", mam.NS_MAM, "query", scope=Scope.ROOM)
async def query(ctx: IqContext) -> st.Element:
    """§4: one page of the room's archive, each result a message from the room."""
    room = _readable(ctx)
    rooms = ctx.storage.rooms

    async def fetch(where: ArchiveFilter, after: str | None, before: str | None, backwards: bool,
                    limit: int) -> ArchivePage:  # fmt: skip
        return await rooms.query(room.name, where, after=after, before=before, backwards=backwards,
                                 limit=limit)  # fmt: skip

    max_page = max(ctx.config.muc.max_history, MIN_PAGE)
    return await mam.answer_query(ctx.stanza, ctx.from_jid, room.jid, fetch, room.send, max_page)
