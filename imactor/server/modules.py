"""The module contract: one XMPP feature per file, declared as data (ejabberd gen_mod, Prosody).

A module file builds one `Module` with its XEP metadata, its `Options` class and its IQ handlers,
registered by decorator. Nothing is registered at import time in any global: the `ModuleHost`
(`imactor.server.module_host`)
collects the enabled modules' declarations when the worker starts.

Scopes (Prosody's iq/host vs iq/self|bare, mapped onto actor ownership):
- `HOST`: IQs to the server itself; they run in the sender's session, statelessly.
- `ACCOUNT`: IQs to a bare JID (or with no `to`) that the server answers for the account; they run
  in that account's `UserActor`, which serializes every change to the account.
- `ROOM`: IQs to a chat room's bare JID that a module answers for the room (XEP-0313 on the
  room's archive); they run in the room's `RoomActor` (`IqContext.room`), in order with its other
  stanzas. IQs a module does not claim go to the room itself (XEP-0045).

Message hooks (`Module.on_message`) run in the recipient's `UserActor` for every message it is
about to deliver or store offline; a hook may change the message (the changed copy is delivered)
or refuse it by raising `StanzaError` (the sender gets the error). The archive (XEP-0313) is one.
They run in ascending `Module.hook_order` (policy checks before the archive), then in load order.

More hooks, for features that follow a message around (carbons, push):
- `Module.on_delivered` runs in the recipient's `UserActor` once a message was handed to its
  sessions (`DeliveredContext.delivered_to`) or stored offline (`delivered_to == ()`).
- `Module.on_sent` runs in the sender's `UserActor` for each message one of its resources sent
  (after the message was routed); the session hands it over only when some module has such a hook.
  A sent hook that raises `StanzaError` stops the later ones (in `hook_order`); it bounces nothing.

Presence hooks (`Module.on_presence`) run in an account's `UserActor` for the available and
unavailable presence of its own resources (`own`, before it is broadcast: a hook may change it)
and for the presence of contacts' resources that reaches the account (PEP: +notify filtering,
last items on presence, XEP-0153 avatar hashes).

Room hooks (`Module.on_room_messages`) run in a `RoomActor` for the messages the room is about to
broadcast that it keeps (`RoomMessagesContext.messages`: bodies and subject changes of a logged
room, with the room's stanza ids), before they are sent and before the sender's XEP-0198
completion: the room archive (Prosody's mod_muc_mam) is one. A room hook refuses nothing.

Room stanza hooks (`Module.on_room_stanza`) run in a `RoomActor` for each message and presence
that reaches the room from a user (groupchat messages, subject changes, private messages between
occupants, presence with the nick in `to` and a status), before the room sees it: a hook may change
it (the room handles the changed copy) or refuse it by raising `StanzaError` (the sender gets the
error; the room never sees it, so nothing is broadcast, kept in history or archived). The word
filter is one.

Reload hooks (`Module.on_reload`) run in each worker when the server is told to reload (SIGHUP, or
the status socket's ``reload-modules`` command): for modules that cache what storage holds.

Node hooks (`Module.on_node`) follow the PEP nodes of an account (XEP-0163): the PEP module
announces each change of a node (`NodeEvent`) to the modules that named that node, in the
account's `UserActor`, so that a module mirroring a node elsewhere (avatars into the vCard,
bookmarks into private storage) needs no call from PEP, and PEP imports none of them.

Per-session hooks (`Module.session_filter`, `nonzas`, `stream_features`): a module may see every
stanza written to a client and hold some back (XEP-0352 client state indication), and handle
top-level elements (nonzas) of its namespace; its `SessionFilter` lives in the `SessionActor`.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from imactor.storage.errors import StorageError, StorageFull
from imactor.xmpp.errors import StanzaError
from imactor.xmpp.jid import JID
from imactor.xmpp.stanza import Element, Stanza

if TYPE_CHECKING:
    from imactor.config import Config
    from imactor.muc.values import ArchiveItem
    from imactor.storage import Storage


class Scope(enum.Enum):
    HOST = "host"
    ACCOUNT = "account"
    ROOM = "room"


@dataclass(frozen=True, slots=True)
class Xep:
    number: str  #: "0199"
    version: str  #: the version of the XEP implemented
    status: str  #: "complete" or "partial: ..."


@dataclass(frozen=True)
class NoOptions:
    """For modules without options."""


class AccountApi(Protocol):
    """What a module may do with the account it runs for: a narrow view of its `UserActor`
    (`imactor.user.account.Account`), never the actor itself. Contexts carry it; they are built
    in one place, `imactor.server.contexts.Contexts`."""

    @property
    def username(self) -> str: ...

    @property
    def jid(self) -> JID: ...

    @property
    def roster_version(self) -> int: ...

    def roster_items(self) -> Mapping[str, Any]: ...

    async def set_roster_item(self, item: Any, jid: str) -> None: ...

    async def push_to_resources(self, element: Element, *, interested_only: bool = False) -> None: ...

    async def route(self, element: Element) -> None: ...

    def set_blocklist(self, jids: frozenset[str]) -> None: ...

    def blocklist(self) -> frozenset[str]: ...

    def available_resources(self) -> Sequence[str]: ...

    def send_to_resource(self, resource: str, element: Element) -> bool:
        """Deliver `element` to one bound resource now (False: no such resource)."""
        ...

    def bound_resources(self) -> Sequence[str]:
        """Every bound resource, available or not."""
        ...

    def resource_state(self, resource: str) -> Mapping[str, str] | None:
        """Module state kept with one bound resource (forgotten when it unbinds); None: unbound."""
        ...

    def set_resource_state(self, resource: str, key: str, value: str | None) -> bool:
        """Set (None: clear) one key of a resource's module state; False: no such resource.
        The session keeps a copy, so the state follows it to the account's next home (a worker
        change, a resumption elsewhere). Modules prefix their keys with their name."""
        ...

    def account_state(self) -> dict[str, Any]:
        """Module state kept while the account's actor runs (a cache: storage holds the truth)."""
        ...

    async def request(self, element: Element, on_reply: Callable[[Element], Awaitable[None]]) -> None:
        """Send an IQ get/set from the account's bare JID; `on_reply` runs in the account's actor
        with the result or error, if one comes while the actor runs (no waiting: the actor goes on)."""
        ...

    def is_detached(self, resource: str) -> bool:
        """The resource's session lost its transport and waits for a XEP-0198 resumption."""
        ...


class RoomApi(Protocol):
    """What a ROOM-scope handler or a room hook may do with the room it runs for (its RoomActor)."""

    name: str  #: the room's name (the localpart of its JID)
    jid: JID  #: the room's bare JID

    @property
    def exists(self) -> bool: ...

    def may_read_archive(self, requester: JID) -> bool:
        """Whether `requester` may read the room's history (XEP-0313 on a room: whoever may enter)."""
        ...

    async def send(self, element: Element) -> None:
        """Route a stanza from the room (it waits for no recipient)."""
        ...


@dataclass
class IqContext:
    """Everything a handler gets: the request, who sent it, options, storage and the server's verbs."""

    stanza: Element
    from_jid: JID
    to_jid: JID | None
    options: Any
    storage: Storage
    config: Config
    server: ServerApi
    account: AccountApi | None = None  #: set for ACCOUNT-scope handlers
    room: RoomApi | None = None  #: set for ROOM-scope handlers
    remote_address: str | None = None  #: the client's IP address, for HOST-scope handlers

    @property
    def payload(self) -> Element:
        return self.stanza[0]

    @property
    def is_self(self) -> bool:
        """The account's own resource asked (as opposed to another entity asking about it)."""
        return self.account is not None and self.from_jid.bare == self.account.jid


IqHandler = Callable[[IqContext], Awaitable[Element | None]]

#: disco#items of an account's bare JID, per module: given the request and its `node` (None: the
#: top level), the (jid, node, name) items the module lists, or None when the node is not its own.
AccountItems = Callable[[IqContext, str | None], Awaitable[list[tuple[str, str | None, str | None]] | None]]


@dataclass
class MessageContext:
    """A message the recipient's `UserActor` is about to deliver or store offline."""

    stanza: Element  #: a private copy; what the hooks leave in it is what gets delivered
    account: AccountApi  #: the recipient
    options: Any
    storage: Storage
    config: Config
    server: ServerApi


MessageHook = Callable[[MessageContext], Awaitable[None]]


@dataclass
class DeliveredContext:
    """A message the recipient's `UserActor` has just delivered or stored offline."""

    message: Stanza  #: as delivered
    account: AccountApi  #: the recipient
    options: Any
    storage: Storage
    config: Config
    server: ServerApi
    delivered_to: tuple[str, ...] = ()  #: resources that got it (empty: stored offline or dropped)
    offline: bool = False  #: it went to offline storage

    @functools.cached_property
    def stanza(self) -> Element:
        """A private copy, parsed on first use: this runs for every delivered message, and most
        hooks decide from the account's state alone that they have nothing to do."""
        return self.message.element()


DeliveredHook = Callable[[DeliveredContext], Awaitable[None]]


@dataclass
class PresenceContext:
    """Presence seen by an account's `UserActor` (module docstring, presence hooks)."""

    stanza: Element  #: a private copy; for `own` presence, what the hooks leave is broadcast
    account: AccountApi
    own: bool  #: from one of the account's resources (else from a contact's resource)
    options: Any
    storage: Storage
    config: Config
    server: ServerApi


PresenceHook = Callable[[PresenceContext], Awaitable[None]]


@dataclass
class RoomMessagesContext:
    """Messages a room keeps, about to be broadcast (module docstring, room hooks)."""

    room: RoomApi
    messages: Sequence[ArchiveItem]  #: oldest first; the elements are the room's, not to be changed
    options: Any
    storage: Storage
    config: Config
    server: ServerApi


RoomMessagesHook = Callable[[RoomMessagesContext], Awaitable[None]]


@dataclass
class RoomStanzaContext:
    """A message or presence from a user to a room, before the room handles it (module docstring)."""

    stanza: Element  #: the room's copy; what the hooks leave in it is what the room handles
    room: RoomApi
    options: Any
    storage: Storage
    config: Config
    server: ServerApi


RoomStanzaHook = Callable[[RoomStanzaContext], Awaitable[None]]


@dataclass
class ReloadContext:
    """The server was told to reload (module docstring): re-read what the module caches."""

    options: Any
    storage: Storage
    config: Config
    server: ServerApi


ReloadHook = Callable[[ReloadContext], Awaitable[None]]


@dataclass
class NodeEvent:
    """A change of one of an account's PEP nodes, announced by the PEP module (`Module.on_node`).

    `kind` is one of `NODE_EVENTS`: "publishing" comes before an item is stored, and a hook may
    refuse the item by raising `StanzaError` (the publisher gets that error); the others come
    after the change: "published" (`item_id`, `payload`), "retracted" (`item_ids`), and
    "configured", "deleted", "purged" of the whole node.
    """

    kind: str
    node: str
    account: AccountApi  #: the node's owner
    storage: Storage
    #: the node's configuration (`imactor.xmpp.pubsub.NodeConfig`) before the change; None for
    #: "publishing" (the node may not exist yet)
    config: Any
    service_options: Any  #: the PEP module's options (limits such as the avatar size)
    item_id: str | None = None
    payload: Element | None = None
    item_ids: tuple[str, ...] = ()


#: The kinds of `NodeEvent`, in the order one publication sees them.
NODE_EVENTS = ("publishing", "published", "retracted", "configured", "deleted", "purged")

NodeHook = Callable[[NodeEvent], Awaitable[None]]


class SessionFilter(Protocol):
    """One session's view of what it writes (see the module docstring); it never blocks.

    Every method returns the serialized stanzas to write now, in order."""

    def outbound(self, stanza: Stanza) -> list[bytes]:
        """A stanza about to be written: pass it (``[stanza.data]``), hold it (``[]``), or
        release held ones before it."""
        ...

    def nonza(self, element: Element) -> list[bytes]:
        """A top-level element of the module's `nonzas` from the client."""
        ...

    def release(self) -> list[bytes]:
        """The session changes transport (resumption) or ends: give back everything held."""
        ...


class ServerApi(Protocol):
    """Server-wide verbs handed to handlers (implemented in the worker)."""

    domain: str
    started_at: float

    async def route(self, element: Element) -> None: ...

    def features(self) -> Sequence[str]: ...

    def identities(self) -> Sequence[tuple[str, str, str]]: ...

    def modules(self) -> Sequence[Module]: ...

    def registration_allowed(self, address: str) -> bool: ...

    def caps_nodes(self) -> Sequence[str]: ...

    def service_items(self) -> Sequence[str]:
        """JIDs of the server's own services (disco#items of the server: the MUC service)."""
        ...

    async def account_removed(self, username: str) -> None: ...


@dataclass
class Module:
    name: str
    summary: str
    xeps: tuple[Xep, ...] = ()
    features: tuple[str, ...] = ()
    options: type = NoOptions
    depends: tuple[str, ...] = ()
    account_features: tuple[str, ...] = ()  #: disco#info features of an account's bare JID
    #: disco#info identities (category, type, name) of an account's bare JID, e.g. pubsub/pep
    account_identities: tuple[tuple[str, str, str], ...] = ()
    account_items: AccountItems | None = None  #: disco#items of an account's bare JID (e.g. PEP nodes)
    iq_handlers: dict[tuple[str, str, str, Scope], IqHandler] = field(default_factory=dict)
    message_hooks: list[MessageHook] = field(default_factory=list)
    hook_order: int = 0  #: message hooks of lower order run first (policy checks: negative)
    delivered_hooks: list[DeliveredHook] = field(default_factory=list)
    sent_hooks: list[MessageHook] = field(default_factory=list)
    #: When the account wants its sent messages (`wants_sent`); none: always, if `sent_hooks`.
    sent_wanted: list[Callable[[AccountApi], bool]] = field(default_factory=list)
    presence_hooks: list[PresenceHook] = field(default_factory=list)
    #: Builds the per-session filter from the module's options (module docstring).
    session_filter: Callable[[Any], SessionFilter] | None = None
    nonzas: frozenset[str] = frozenset()  #: Clark names of the nonzas `session_filter` handles
    stream_features: tuple[bytes, ...] = ()  #: offered to bound clients
    #: (PEP node, hook): the changes of that node the module follows (`on_node`)
    node_hooks: list[tuple[str, NodeHook]] = field(default_factory=list)
    room_hooks: list[RoomMessagesHook] = field(default_factory=list)
    room_stanza_hooks: list[RoomStanzaHook] = field(default_factory=list)
    reload_hooks: list[ReloadHook] = field(default_factory=list)
    #: disco#info features of every chat room (and of the chat service), e.g. XEP-0313's
    room_features: tuple[str, ...] = ()

    def iq(
        self, iq_type: str, namespace: str, tag: str, *, scope: Scope = Scope.HOST
    ) -> Callable[[IqHandler], IqHandler]:
        """Register `handler` for `<iq type=iq_type><tag xmlns=namespace/></iq>` in `scope`."""

        def register(handler: IqHandler) -> IqHandler:
            self.iq_handlers[(iq_type, namespace, tag, scope)] = handler
            return handler

        return register

    def on_message(self, hook: MessageHook) -> MessageHook:
        """Register `hook` to run on each inbound message before delivery (module docstring)."""
        self.message_hooks.append(hook)
        return hook

    def on_delivered(self, hook: DeliveredHook) -> DeliveredHook:
        """Register `hook` to run after a message was delivered or stored offline."""
        self.delivered_hooks.append(hook)
        return hook

    def on_presence(self, hook: PresenceHook) -> PresenceHook:
        """Register `hook` to see the account's and its contacts' presence (module docstring)."""
        self.presence_hooks.append(hook)
        return hook

    def on_sent(self, hook: MessageHook) -> MessageHook:
        """Register `hook` to run in the sender's actor for each message its resources send."""
        self.sent_hooks.append(hook)
        return hook

    def on_room_messages(self, hook: RoomMessagesHook) -> RoomMessagesHook:
        """Register `hook` to see the messages a room keeps, before they go out (module docstring)."""
        self.room_hooks.append(hook)
        return hook

    def on_room_stanza(self, hook: RoomStanzaHook) -> RoomStanzaHook:
        """Register `hook` to see (change or refuse) what users send to rooms (module docstring)."""
        self.room_stanza_hooks.append(hook)
        return hook

    def on_reload(self, hook: ReloadHook) -> ReloadHook:
        """Register `hook` to run in each worker when the server is told to reload."""
        self.reload_hooks.append(hook)
        return hook

    def on_node(self, *nodes: str) -> Callable[[NodeHook], NodeHook]:
        """Register a hook for every `NodeEvent` of these PEP nodes (module docstring)."""

        def register(hook: NodeHook) -> NodeHook:
            self.node_hooks.extend((node, hook) for node in nodes)
            return hook

        return register

    def wants_sent(self, predicate: Callable[[AccountApi], bool]) -> Callable[[AccountApi], bool]:
        """Register when an account needs the `on_sent` hooks: sessions hand their messages to
        the account's actor only then (a chat message would otherwise cost a second trip,
        across workers too)."""
        self.sent_wanted.append(predicate)
        return predicate


class ModuleConfigError(ValueError):
    pass


def storage_failure(exc: StorageError, what: str) -> StanzaError:
    """The error for a stanza whose write could not be stored (`what`: "the message"...).

    RFC 6120 §8.3.3.18 ``resource-constraint`` (type wait: the sender may retry later) when the
    disk is full, which frees up without a restart; §8.3.3.6 ``internal-server-error`` for any
    other failure of the database (a read-only file, an I/O error), which needs an administrator.
    The database layer logs the cause (rate limited), so the text names no path or error.
    """
    if isinstance(exc, StorageFull):
        return StanzaError("resource-constraint", f"{what} could not be stored: the server's disk is full")
    return StanzaError("internal-server-error", f"{what} could not be stored")
