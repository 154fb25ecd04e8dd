"""The values a room and its actor exchange: what the room knows of its service, and the outcome
of one stanza (the stanzas to send, the messages to archive, whether the state changed)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from imactor.xmpp.jid import JID
from imactor.xmpp.stanza import Element


@dataclass(frozen=True)
class ServiceInfo:
    """What a room knows of the service that hosts it."""

    jid: JID  #: the service, e.g. conference.localhost
    admins: frozenset[str]  #: bare JIDs of server admins: owner rights in every room
    max_occupants: int  #: a hard limit above any room's max_users
    may_create: Callable[[JID], bool]  #: may this real bare JID create a new room
    #: disco#info features that the server's modules add to every room (XEP-0313: `muc_mam`)
    room_features: tuple[str, ...] = ()
    #: Key of the XEP-0421 occupant ids: the same in every worker and across restarts, and
    #: unknown to clients, so an id can neither be forged nor traced back to its JID.
    occupant_id_key: bytes = b""


@dataclass(frozen=True)
class Outgoing:
    element: Element  #: a stanza with `from` set and no `to`; it belongs to the actor
    #: The actor sends one copy to each (to=recipient): occupants' real full JIDs, except for
    #: invitations and declines (the JID the client named, often bare) and vCard requests
    #: forwarded to an occupant's bare JID.
    recipients: tuple[JID, ...]


@dataclass(frozen=True)
class ArchiveItem:
    """A groupchat message (or subject change) as the room broadcast it (with its <stanza-id/>)."""

    stanza_id: str
    stamp: float
    nick: str
    real_jid: JID
    element: Element


@dataclass
class Outcome:
    out: list[Outgoing] = field(default_factory=list)
    archive: list[ArchiveItem] = field(default_factory=list)  #: only when config.enable_logging
    state_changed: bool = False  #: the RoomState changed: the actor persists it
    #: The room is gone: the actor deletes it from storage. A later presence may create a new
    #: room of that name, which starts from nothing (no configuration, affiliations or history).
    destroyed: bool = False
