"""The module contract: one XMPP feature per file, declared as data (ejabberd gen_mod, Prosody).

A module file builds one `Module` with its XEP metadata, its `Options` class and its IQ handlers,
registered by decorator. Nothing is registered at import time in any global: the `ModuleHost`
(`imactor.server.module_host`)
collects the enabled modules' declarations when the worker starts.

Scopes (Prosody's iq/host vs iq/self|bare, mapped onto actor ownership):
- `HOST`: IQs to the server itself; they run in the sender's session, statelessly, or (from
  other servers' users, from components) in the task that routes them (`imactor.server.host_iqs`).
  Only the handlers registered with `remote=True` answer senders of other domains (ping, disco,
  version, time...): an account's own features (XEP-0077 password change, XEP-0215 credentials,
  ad-hoc commands) stay with the accounts of this server.
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
- `Module.on_outgoing` runs in the sender's session for each message to another server's JID (or
  a component's), before it is routed: such a message reaches no actor of this server, so the
  sender's copy is kept here (XEP-0313's "out" row) and the policies are checked here. A hook
  may change the message (what it leaves in it is what leaves: the word filter's masks) or
  refuse it (`StanzaError`: the sender gets the error, later hooks do not run, nothing leaves).
  They run in `hook_order`, as message hooks: policy checks before the archive.

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

Shared roster hooks (`Module.shared_roster`) run in an account's `UserActor` when it starts and
when the server is told to reload: each gives contacts to add to the roster without storing them,
with subscription "both" (shared roster groups: the company directory). The account treats them
as subscribed both ways (presence, probes) and cannot cancel that subscription; after a reload
the actor pushes what changed (RFC 6121 §2.1.6) and sends its presence to the new contacts.

Node hooks (`Module.on_node`) follow the PEP nodes of an account (XEP-0163): the PEP module
announces each change of a node (`NodeEvent`) to the modules that named that node, in the
account's `UserActor`, so that a module mirroring a node elsewhere (avatars into the vCard,
bookmarks into private storage) needs no call from PEP, and PEP imports none of them.

Per-session hooks (`Module.session_filter`, `nonzas`, `stream_features`): a module may see every
stanza written to a client and hold some back (XEP-0352 client state indication), and handle
top-level elements (nonzas) of its namespace; its `SessionFilter` lives in the `SessionActor`.

Services, HTTP and background tasks (XEP-0363 HTTP upload is the first user of all three):
- `Module.service`: the module answers at a JID of its own, a subdomain of the server's domain
  (``upload.<domain>``), listed in the server's disco#items. Its IQ handlers are registered with
  `Scope.SERVICE` and run in the task of the sender's session, as HOST handlers do; disco#info of
  the service (its identities, `ServiceSpec.features` and XEP-0128 forms) is answered for it.
- `Module.http`: a handler for the requests whose path starts with a prefix, on the web listeners
  of `imactor.web` (the same ports as BOSH and WebSocket). It reads the body itself, as a stream
  (`HttpRequest.body`), so a large upload never sits in memory, and may answer before reading it.
- `Module.background`: a task that runs as long as the worker runs (clean-ups, the email digests'
  sender, reminders), in every worker; its `TaskContext` gives the worker's index, the node's id
  and the database; one that must run once per node returns at once unless `TaskContext.worker`
  is 0.
"""

from __future__ import annotations

# The types modules are given live in `module_api`; they are imported from here by every module.
__all__ = [
    "NODE_EVENTS", "AccountApi", "AccountItems", "BackgroundTask", "DeliveredContext", "DeliveredHook",
    "EnabledModule", "HostNodes", "HttpBody", "HttpBodyError", "HttpContext", "HttpHandler", "HttpReply",
    "HttpRequest", "IqContext", "IqHandler", "MessageContext", "MessageHook", "Module", "ModuleConfigError",
    "NoOptions", "NodeEvent", "NodeHook", "NodeInfo", "OutgoingContext", "OutgoingHook", "PresenceContext",
    "PresenceHook", "ReloadContext",
    "ReloadHook", "RoomApi", "RoomMessagesContext", "RoomMessagesHook", "RoomStanzaContext",
    "RoomStanzaHook", "Scope", "ServerApi", "ServiceSpec", "SessionFilter", "SharedRoster",
    "SharedRosterContext", "SharedRosterHook", "TaskContext", "Xep", "storage_failure",
]  # fmt: skip

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from imactor.server.module_api import (
    NODE_EVENTS,
    AccountApi,
    AccountItems,
    BackgroundTask,
    DeliveredContext,
    DeliveredHook,
    EnabledModule,
    HostNodes,
    HttpBody,
    HttpBodyError,
    HttpContext,
    HttpHandler,
    HttpReply,
    HttpRequest,
    IqContext,
    IqHandler,
    MessageContext,
    MessageHook,
    NodeEvent,
    NodeHook,
    NodeInfo,
    OutgoingContext,
    OutgoingHook,
    PresenceContext,
    PresenceHook,
    ReloadContext,
    ReloadHook,
    RoomApi,
    RoomMessagesContext,
    RoomMessagesHook,
    RoomStanzaContext,
    RoomStanzaHook,
    ServerApi,
    ServiceSpec,
    SessionFilter,
    SharedRoster,
    SharedRosterContext,
    SharedRosterHook,
    TaskContext,
)
from imactor.storage.errors import StorageError, StorageFull
from imactor.xmpp.errors import StanzaError


class Scope(enum.Enum):
    HOST = "host"
    ACCOUNT = "account"
    ROOM = "room"
    SERVICE = "service"  #: IQs to the module's own service JID (`Module.service`)


@dataclass(frozen=True, slots=True)
class Xep:
    number: str  #: "0199"
    version: str  #: the version of the XEP implemented
    status: str  #: "complete" or "partial: ..."


@dataclass(frozen=True)
class NoOptions:
    """For modules without options."""


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
    #: disco nodes of the server's own JID the module answers (XEP-0050's commands)
    host_nodes: HostNodes | None = None
    iq_handlers: dict[tuple[str, str, str, Scope], IqHandler] = field(default_factory=dict)
    #: The `HOST` handlers that answer senders of other domains too (`iq(..., remote=True)`).
    remote_iqs: set[tuple[str, str, str, Scope]] = field(default_factory=set)
    message_hooks: list[MessageHook] = field(default_factory=list)
    hook_order: int = 0  #: message hooks of lower order run first (policy checks: negative)
    delivered_hooks: list[DeliveredHook] = field(default_factory=list)
    sent_hooks: list[MessageHook] = field(default_factory=list)
    outgoing_hooks: list[OutgoingHook] = field(default_factory=list)
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
    shared_roster_hooks: list[SharedRosterHook] = field(default_factory=list)
    #: disco#info features of every chat room (and of the chat service), e.g. XEP-0313's
    room_features: tuple[str, ...] = ()
    service: ServiceSpec | None = None  #: answers at a JID of its own (module docstring)
    #: (path prefix from the options, handler): HTTP requests the module answers
    http_routes: list[tuple[Callable[[Any], str], HttpHandler]] = field(default_factory=list)
    background_tasks: list[BackgroundTask] = field(default_factory=list)

    def iq(
        self, iq_type: str, namespace: str, tag: str, *, scope: Scope = Scope.HOST, remote: bool = False
    ) -> Callable[[IqHandler], IqHandler]:
        """Register `handler` for `<iq type=iq_type><tag xmlns=namespace/></iq>` in `scope`.

        `remote` (HOST scope): other servers' users and components may ask it too; without it
        they get service-unavailable, as if the handler did not exist.
        """

        def register(handler: IqHandler) -> IqHandler:
            self.iq_handlers[(iq_type, namespace, tag, scope)] = handler
            if remote:
                self.remote_iqs.add((iq_type, namespace, tag, scope))
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

    def on_outgoing(self, hook: OutgoingHook) -> OutgoingHook:
        """Register `hook` to run in the sender's session for each message to another server."""
        self.outgoing_hooks.append(hook)
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

    def shared_roster(self, hook: SharedRosterHook) -> SharedRosterHook:
        """Register `hook` to add contacts to accounts' rosters without storing them (module docstring)."""
        self.shared_roster_hooks.append(hook)
        return hook

    def on_node(self, *nodes: str) -> Callable[[NodeHook], NodeHook]:
        """Register a hook for every `NodeEvent` of these PEP nodes (module docstring)."""

        def register(hook: NodeHook) -> NodeHook:
            self.node_hooks.extend((node, hook) for node in nodes)
            return hook

        return register

    def http(self, prefix: Callable[[Any], str]) -> Callable[[HttpHandler], HttpHandler]:
        """Register a handler for the HTTP requests whose path starts with `prefix(options)`."""

        def register(handler: HttpHandler) -> HttpHandler:
            self.http_routes.append((prefix, handler))
            return handler

        return register

    def background(self, task: BackgroundTask) -> BackgroundTask:
        """Register a task that runs while the worker runs (module docstring)."""
        self.background_tasks.append(task)
        return task

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
