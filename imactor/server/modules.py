"""The module contract: one XMPP feature per file, declared as data (ejabberd gen_mod, Prosody).

A module file builds one `Module` with its XEP metadata, its `Options` class and its IQ handlers,
registered by decorator. Nothing is registered at import time in any global: the `ModuleHost`
collects the enabled modules' declarations when the worker starts.

Scopes (Prosody's iq/host vs iq/self|bare, mapped onto actor ownership):
- `HOST`: IQs to the server itself; they run in the sender's session, statelessly.
- `ACCOUNT`: IQs to a bare JID (or with no `to`) that the server answers for the account; they run
  in that account's `UserActor`, which serializes every change to the account.

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

Per-session hooks (`Module.session_filter`, `nonzas`, `stream_features`): a module may see every
stanza written to a client and hold some back (XEP-0352 client state indication), and handle
top-level elements (nonzas) of its namespace; its `SessionFilter` lives in the `SessionActor`.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import importlib
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from lxml import etree

from imactor.xmpp.jid import JID
from imactor.xmpp.stanza import Element, Stanza

if TYPE_CHECKING:
    from imactor.config import Config
    from imactor.storage import Storage


class Scope(enum.Enum):
    HOST = "host"
    ACCOUNT = "account"


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

    def wants_sent(self, predicate: Callable[[AccountApi], bool]) -> Callable[[AccountApi], bool]:
        """Register when an account needs the `on_sent` hooks: sessions hand their messages to
        the account's actor only then (a chat message would otherwise cost a second trip,
        across workers too)."""
        self.sent_wanted.append(predicate)
        return predicate


class ModuleConfigError(ValueError):
    pass


@dataclass(frozen=True)
class LoadedModule:
    module: Module
    options: Any


class ModuleHost:
    """The enabled modules of a worker, their validated options and the IQ dispatch table."""

    def __init__(
        self, names: Sequence[str], raw_options: Mapping[str, Mapping[str, object]], source: str
    ) -> None:
        self.started_at = time.time()
        self.loaded: dict[str, LoadedModule] = {}
        for name in names:
            self._load(name, raw_options.get(name, {}), source)
        for name in raw_options:
            if name not in self.loaded:
                raise ModuleConfigError(f"{source}: modules.{name}: module is not enabled in server.modules")
        self._iq: dict[tuple[str, str, str, Scope], tuple[IqHandler, Any]] = {}
        self.message_hooks: list[tuple[MessageHook, Any]] = []
        self.delivered_hooks: list[tuple[DeliveredHook, Any]] = []
        self.sent_hooks: list[tuple[MessageHook, Any]] = []
        self._sent_always = False
        self._sent_wanted: list[Callable[[AccountApi], bool]] = []
        self.presence_hooks: list[tuple[PresenceHook, Any]] = []
        self.nonzas: frozenset[str] = frozenset()
        self.stream_features: tuple[bytes, ...] = ()
        for loaded in sorted(self.loaded.values(), key=lambda loaded: loaded.module.hook_order):
            for dep in loaded.module.depends:
                if dep not in self.loaded:
                    raise ModuleConfigError(f"{source}: server.modules: {loaded.module.name} needs {dep!r}")
            for key, handler in loaded.module.iq_handlers.items():
                self._iq[key] = (handler, loaded.options)
            self.message_hooks.extend((hook, loaded.options) for hook in loaded.module.message_hooks)
            self.delivered_hooks.extend((hook, loaded.options) for hook in loaded.module.delivered_hooks)
            self.sent_hooks.extend((hook, loaded.options) for hook in loaded.module.sent_hooks)
            if loaded.module.sent_hooks:
                self._sent_always |= not loaded.module.sent_wanted
                self._sent_wanted.extend(loaded.module.sent_wanted)
            self.presence_hooks.extend((hook, loaded.options) for hook in loaded.module.presence_hooks)
            self.nonzas |= loaded.module.nonzas
            self.stream_features += loaded.module.stream_features

    def _load(self, name: str, raw: Mapping[str, object], source: str) -> None:
        try:
            python_module = importlib.import_module(f"imactor.modules.{name}")
        except ModuleNotFoundError as exc:
            raise ModuleConfigError(f"{source}: server.modules: no module named {name!r}") from exc
        module: Module = python_module.module
        self.loaded[name] = LoadedModule(module, _build_options(module, raw, source))

    def iq_handler(self, iq_type: str, payload: Element, scope: Scope) -> tuple[IqHandler, Any] | None:
        qn = etree.QName(payload)
        return self._iq.get((iq_type, qn.namespace or "", qn.localname, scope))

    def wants_sent(self, account: AccountApi) -> bool:
        """Whether `account`'s sessions must hand it the messages they send (`Module.wants_sent`)."""
        return self._sent_always or any(predicate(account) for predicate in self._sent_wanted)

    def session_filters(self) -> list[SessionFilter]:
        """A fresh filter of each module that has one, for a new session."""
        return [
            loaded.module.session_filter(loaded.options)
            for loaded in self.loaded.values()
            if loaded.module.session_filter is not None
        ]

    def options(self, name: str) -> Any:
        loaded = self.loaded.get(name)
        return None if loaded is None else loaded.options

    def features(self) -> list[str]:
        found: list[str] = []
        for loaded in self.loaded.values():
            found.extend(f for f in loaded.module.features if f not in found)
        return found


def _build_options(module: Module, raw: Mapping[str, object], source: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(module.options)}
    for key, value in raw.items():
        spec = fields.get(key)
        if spec is None:
            raise ModuleConfigError(f"{source}: modules.{module.name}.{key}: unknown key")
        expected = spec.type if isinstance(spec.type, type) else _TYPE_NAMES.get(str(spec.type))
        if expected is not None and not _type_ok(value, expected):
            raise ModuleConfigError(
                f"{source}: modules.{module.name}.{key}: expected {expected.__name__}, got {value!r}"
            )
    return module.options(**raw)


_TYPE_NAMES: dict[str, type] = {"int": int, "float": float, "str": str, "bool": bool}


def _type_ok(value: object, expected: type) -> bool:
    if expected is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, expected)
