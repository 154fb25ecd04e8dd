"""The enabled modules of one worker (`ModuleHost`): loaded by name, their options validated,
their IQ handlers in one dispatch table and their hooks in order (`Module.hook_order`).

The module API itself (what a module file declares and gets) is `imactor.server.modules`; this
is the worker's side of it, which no module imports.
"""

from __future__ import annotations

import dataclasses
import importlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lxml import etree

from imactor.server.modules import (
    AccountApi,
    BackgroundTask,
    DeliveredHook,
    HttpHandler,
    IqHandler,
    MessageHook,
    Module,
    ModuleConfigError,
    OutgoingHook,
    PresenceHook,
    ReloadHook,
    RoomMessagesHook,
    RoomStanzaHook,
    Scope,
    ServiceSpec,
    SessionFilter,
    SharedRosterHook,
)
from imactor.xmpp.stanza import Element

__all__ = ["HttpRoute", "LoadedModule", "ModuleHost", "ModuleService"]


@dataclass(frozen=True)
class LoadedModule:
    module: Module
    options: Any


@dataclass(frozen=True)
class ModuleService:
    """A module's own service JID (`Module.service`), resolved against the server's domain."""

    domain: str  #: "upload.example.com"
    spec: ServiceSpec
    options: Any


@dataclass(frozen=True)
class HttpRoute:
    prefix: str  #: requests whose path starts with it go to `handler`
    handler: HttpHandler
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
        self.http_routes: list[HttpRoute] = []
        self.background_tasks: list[tuple[BackgroundTask, Any]] = []
        for name in raw_options:
            if name not in self.loaded:
                raise ModuleConfigError(f"{source}: modules.{name}: module is not enabled in server.modules")
        self._iq: dict[tuple[str, str, str, Scope], tuple[IqHandler, Any]] = {}
        self._remote_iq: set[tuple[str, str, str, Scope]] = set()
        self.message_hooks: list[tuple[MessageHook, Any]] = []
        self.delivered_hooks: list[tuple[DeliveredHook, Any]] = []
        self.sent_hooks: list[tuple[MessageHook, Any]] = []
        self.outgoing_hooks: list[tuple[OutgoingHook, Any]] = []
        self._sent_always = False
        self._sent_wanted: list[Callable[[AccountApi], bool]] = []
        self.presence_hooks: list[tuple[PresenceHook, Any]] = []
        self.room_hooks: list[tuple[RoomMessagesHook, Any]] = []
        self.room_stanza_hooks: list[tuple[RoomStanzaHook, Any]] = []
        self.reload_hooks: list[tuple[ReloadHook, Any]] = []
        self.shared_roster_hooks: list[tuple[SharedRosterHook, Any]] = []
        self.nonzas: frozenset[str] = frozenset()
        self.stream_features: tuple[bytes, ...] = ()
        for loaded in sorted(self.loaded.values(), key=lambda loaded: loaded.module.hook_order):
            for dep in loaded.module.depends:
                if dep not in self.loaded:
                    raise ModuleConfigError(f"{source}: server.modules: {loaded.module.name} needs {dep!r}")
            for key, handler in loaded.module.iq_handlers.items():
                self._iq[key] = (handler, loaded.options)
            self._remote_iq |= loaded.module.remote_iqs
            self.message_hooks.extend((hook, loaded.options) for hook in loaded.module.message_hooks)
            self.delivered_hooks.extend((hook, loaded.options) for hook in loaded.module.delivered_hooks)
            self.sent_hooks.extend((hook, loaded.options) for hook in loaded.module.sent_hooks)
            self.outgoing_hooks.extend((hook, loaded.options) for hook in loaded.module.outgoing_hooks)
            if loaded.module.sent_hooks:
                self._sent_always |= not loaded.module.sent_wanted
                self._sent_wanted.extend(loaded.module.sent_wanted)
            self.presence_hooks.extend((hook, loaded.options) for hook in loaded.module.presence_hooks)
            self.room_hooks.extend((hook, loaded.options) for hook in loaded.module.room_hooks)
            self.room_stanza_hooks.extend((hook, loaded.options) for hook in loaded.module.room_stanza_hooks)
            self.reload_hooks.extend((hook, loaded.options) for hook in loaded.module.reload_hooks)
            self.shared_roster_hooks.extend(
                (hook, loaded.options) for hook in loaded.module.shared_roster_hooks
            )
            self.nonzas |= loaded.module.nonzas
            self.stream_features += loaded.module.stream_features
            for prefix, http_handler in loaded.module.http_routes:
                self.http_routes.append(HttpRoute(prefix(loaded.options), http_handler, loaded.options))
            self.background_tasks.extend((task, loaded.options) for task in loaded.module.background_tasks)

    def _load(self, name: str, raw: Mapping[str, object], source: str) -> None:
        try:
            python_module = importlib.import_module(f"imactor.modules.{name}")
        except ModuleNotFoundError as exc:
            raise ModuleConfigError(f"{source}: server.modules: no module named {name!r}") from exc
        module: Module = python_module.module
        self.loaded[name] = LoadedModule(module, _build_options(module, raw, source))

    def services(self, domain: str) -> list[ModuleService]:
        """The service JIDs of the enabled modules under the server's `domain`."""
        return [
            ModuleService(f"{spec.subdomain(loaded.options)}.{domain}", spec, loaded.options)
            for loaded in self.loaded.values()
            if (spec := loaded.module.service) is not None
        ]

    def http_route(self, path: str) -> HttpRoute | None:
        """The module route whose prefix `path` starts with, if any."""
        for route in self.http_routes:
            if path.startswith(route.prefix):
                return route
        return None

    def iq_handler(
        self, iq_type: str, payload: Element, scope: Scope, *, remote: bool = False
    ) -> tuple[IqHandler, Any] | None:
        """The handler of this IQ in `scope`; with `remote` (a sender of another domain), only
        one its module opened to them (`Module.iq(..., remote=True)`)."""
        qn = etree.QName(payload)
        key = (iq_type, qn.namespace or "", qn.localname, scope)
        if remote and key not in self._remote_iq:
            return None
        return self._iq.get(key)

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

    def room_features(self) -> list[str]:
        """The disco#info features that the enabled modules add to chat rooms."""
        found: list[str] = []
        for loaded in self.loaded.values():
            found.extend(f for f in loaded.module.room_features if f not in found)
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
    try:
        return module.options(**raw)
    except ModuleConfigError as exc:  # the module's own checks name the key; add the file
        message = str(exc)
        raise ModuleConfigError(message if message.startswith(source) else f"{source}: {message}") from None


_TYPE_NAMES: dict[str, type] = {"int": int, "float": float, "str": str, "bool": bool}


def _type_ok(value: object, expected: type) -> bool:
    if expected is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, expected)
