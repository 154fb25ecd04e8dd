"""What modules are given: the views of the server, an account and a room, the contexts of IQ
handlers and hooks, and the types of services, HTTP handlers and background tasks.

The declarations themselves (`Module`, its scopes and options) and the description of when each
hook runs are in `imactor.server.modules`, which re-exports everything here: a module file
imports from there.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from imactor.xmpp.jid import JID
from imactor.xmpp.stanza import Element, Stanza

if TYPE_CHECKING:
    from imactor.config import Config
    from imactor.muc.values import ArchiveItem
    from imactor.storage import Storage


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

    def is_shared_contact(self, jid: str) -> bool:
        """The bare JID `jid` is in the roster because a module shares it (`Module.shared_roster`):
        its subscription is the module's to decide, not the account's."""
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
    #: The same for every route of one message when its sender's session routes it again (its
    #: recipient's worker died before confirming it): a hook that stores it stores it once, under
    #: one id. "" when the message has none (no XEP-0198 on the sender's stream).
    message_key: str = ""


MessageHook = Callable[[MessageContext], Awaitable[None]]


@dataclass
class OutgoingContext:
    """A message an account's session is about to route to another server (or a component):
    its recipient has no actor here, so what the sender's side keeps of it is kept now."""

    stanza: Element  #: the message; what the hooks leave in it is what leaves (word filter masks)
    sender: JID  #: the full JID of the sending session
    options: Any
    storage: Storage
    config: Config
    server: ServerApi


OutgoingHook = Callable[[OutgoingContext], Awaitable[None]]


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
    """A message or presence from a user to a room, before the room handles it (`on_room_stanza`)."""

    stanza: Element  #: the room's copy; what the hooks leave in it is what the room handles
    room: RoomApi
    options: Any
    storage: Storage
    config: Config
    server: ServerApi


RoomStanzaHook = Callable[[RoomStanzaContext], Awaitable[None]]


@dataclass
class ReloadContext:
    """The server was told to reload (`Module.on_reload`): re-read what the module caches."""

    options: Any
    storage: Storage
    config: Config
    server: ServerApi


ReloadHook = Callable[[ReloadContext], Awaitable[None]]


@dataclass
class SharedRosterContext:
    """An account's actor asks a module which contacts it adds to the roster (`Module.shared_roster`)."""

    username: str
    options: Any
    storage: Storage
    config: Config
    server: ServerApi


@dataclass(frozen=True)
class SharedRoster:
    """Contacts a module adds to an account's roster without storing them (shared roster groups)."""

    #: Changes whenever what any account gets may have changed: added to the stored roster
    #: version, so the version a client caches changes with it (RFC 6121 §2.6).
    revision: int
    #: bare JID -> `imactor.xmpp.roster.RosterItem` (subscription "both", a name, groups)
    items: Mapping[str, Any]


SharedRosterHook = Callable[[SharedRosterContext], Awaitable[SharedRoster]]


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


@dataclass(frozen=True)
class NodeInfo:
    """disco#info of a node of the server that a module answers (`Module.host_nodes`)."""

    identities: tuple[tuple[str, str, str], ...]  #: (category, type, name)
    features: tuple[str, ...]


class HostNodes(Protocol):
    """Service discovery nodes of the server's own JID that a module answers (XEP-0030 §3.2,
    §4.2): XEP-0050's commands node and one node per command. Both take the request, for who
    asks, and return None for a node that is not the module's."""

    async def items(self, ctx: IqContext, node: str) -> list[tuple[str, str | None, str | None]] | None:
        """(jid, node, name) items of `node`."""
        ...

    async def info(self, ctx: IqContext, node: str) -> NodeInfo | None: ...


class EnabledModule(Protocol):
    """What a module may read of the other enabled modules (`ServerApi.modules`): the parts of
    their declarations (`imactor.server.modules.Module`) that describe an account."""

    name: str
    account_features: tuple[str, ...]
    account_identities: tuple[tuple[str, str, str], ...]
    account_items: AccountItems | None
    node_hooks: list[tuple[str, NodeHook]]
    host_nodes: HostNodes | None


class ServerApi(Protocol):
    """Server-wide verbs handed to handlers (implemented in the worker)."""

    domain: str
    started_at: float

    async def route(self, element: Element) -> None: ...

    def account_of(self, jid: JID) -> str | None:
        """The account key (the username of the storage's rows) of `jid`'s account, when `jid`
        names one of a served domain: ``alice``, or ``alice@other.example`` on a [[hosts]] one."""
        ...

    def account_jid(self, username: str) -> JID:
        """The bare JID of the account key `username` (the inverse of `account_of`)."""
        ...

    async def deliver(self, element: Element, *, key: str = "") -> bool:
        """Route `element` (a message from the server to a local account) and wait until the
        recipient's actor handled it durably: handed it to sessions or stored it offline, or
        decided to drop it. False when the recipient's worker died first: nothing is known of
        it, route it again. `key` names the message across such repeats (`Completion.key`)."""
        ...

    def features(self) -> Sequence[str]: ...

    def identities(self) -> Sequence[tuple[str, str, str]]: ...

    def modules(self) -> Sequence[EnabledModule]: ...

    def registration_allowed(self, address: str) -> bool: ...

    def caps_nodes(self) -> Sequence[str]: ...

    def service_items(self) -> Sequence[str]:
        """JIDs of the server's own services (disco#items of the server: the MUC service)."""
        ...

    async def account_removed(self, username: str) -> None: ...

    async def online_sessions(self) -> Sequence[JID]:
        """The full JIDs of the bound client sessions of every live worker (of every node): a
        worker that does not answer in time is left out, and logged."""
        ...

    async def announce(self, element: Element) -> None:
        """Deliver a copy of `element` (a message without `to`) to every bound client session
        of every live worker, each addressed to its full JID; it waits for no recipient."""
        ...

    async def end_sessions(self, username: str, resource: str | None = None, *, condition: str,
                           text: str = "") -> None:  # fmt: skip
        """End the client sessions of an account (only `resource`'s, if given) on every live
        worker, with the stream error `condition`; it waits for none to end."""
        ...

    def https_url(self) -> str | None:
        """``https://<domain>:<port>`` of this node's HTTPS listener (None: no HTTPS listener)."""
        ...


@dataclass(frozen=True)
class ServiceSpec:
    """A module that answers at a JID of its own (see the module docstring)."""

    subdomain: Callable[[Any], str]  #: from the module's options: "upload" for upload.<domain>
    identities: tuple[tuple[str, str, str], ...]  #: disco#info (category, type, name)
    features: tuple[str, ...] = ()  #: disco#info features of the service (not of the server)
    #: XEP-0128 extended information (data forms) of its disco#info, from the module's options
    forms: Callable[[Any], Sequence[Element]] = lambda options: ()
    #: disco#items of the service (node None) or of one of its nodes (XEP-0030 §4, XEP-0060
    #: §5.2, §5.5): (jid, node, name) items, or None for a node it does not have. Without it the
    #: service lists nothing.
    items: AccountItems | None = None
    #: disco#info of one of the service's nodes (XEP-0060 §5.3): the whole <query/> reply
    #: payload, or None for a node it does not have.
    node_info: Callable[[IqContext, str], Awaitable[Element | None]] | None = None


class HttpBody(Protocol):
    """The body of an HTTP request, read as it arrives."""

    async def receive(self) -> bytes:
        """The next piece of the body; b"" once it is complete. Raises `HttpBodyError` when the
        client stops sending before the end (or too slowly)."""
        ...


class HttpBodyError(Exception):
    """The body of a request did not arrive whole (the connection closed, or timed out)."""


@dataclass(frozen=True)
class HttpRequest:
    method: str
    path: str  #: as sent, without the query; still percent-encoded
    query: str  #: after "?", still percent-encoded ("" without one)
    headers: Mapping[str, str]  #: names lower-cased, a repeated header's values joined
    body: HttpBody
    remote: str  #: the client's address
    tls: bool  #: it came over HTTPS


@dataclass
class HttpReply:
    """The answer to an `HttpRequest`. The web listener adds Content-Length (of `body`, or
    `length` with `stream`); a HEAD request gets the headers alone."""

    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    #: A body too large for memory (a stored file): `length` bytes, from the iterator it returns.
    stream: Callable[[], AsyncIterator[bytes]] | None = None
    length: int = 0


@dataclass
class HttpContext:
    request: HttpRequest
    options: Any
    config: Config
    server: ServerApi


HttpHandler = Callable[[HttpContext], Awaitable[HttpReply]]


@dataclass
class TaskContext:
    """What a background task gets (`Module.background`)."""

    options: Any
    config: Config
    server: ServerApi
    worker: int  #: the worker's index in its node
    storage: Storage  #: the worker's database (email digests, reminders)
    node: int = 0  #: the node's id in the cluster (0 without one)


BackgroundTask = Callable[[TaskContext], Awaitable[None]]
