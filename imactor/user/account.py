"""The account as modules see it (`imactor.server.modules.AccountApi`): a narrow view of its
`UserActor`.

Modules get this view in their contexts, never the actor: what they may read and do is the
protocol's list, and the actor's other state (its resources' sessions, its services, its
mailbox) stays out of their reach.
"""

from __future__ import annotations

import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from imactor.server.modules import AccountApi
    from imactor.xmpp.jid import JID
    from imactor.xmpp.stanza import Element

__all__ = ["Account"]


class Account:
    """One account's `AccountApi`, backed by its actor: the actor has these methods among many
    others (it is typed by the protocol here, so this file does not import the actor)."""

    __slots__ = ("_actor",)

    def __init__(self, actor: AccountApi) -> None:
        # A weak proxy: the actor holds this view, and a strong reference back would make a
        # cycle that keeps an ended account for the cyclic collector (`imactor.worker.process.tune_gc`).
        self._actor = cast("AccountApi", weakref.proxy(actor))

    @property
    def username(self) -> str:
        return self._actor.username

    @property
    def jid(self) -> JID:
        return self._actor.jid

    @property
    def roster_version(self) -> int:
        return self._actor.roster_version

    def roster_items(self) -> Mapping[str, Any]:
        return self._actor.roster_items()

    async def set_roster_item(self, item: Any, jid: str) -> None:
        await self._actor.set_roster_item(item, jid)

    async def push_to_resources(self, element: Element, *, interested_only: bool = False) -> None:
        await self._actor.push_to_resources(element, interested_only=interested_only)

    async def route(self, element: Element) -> None:
        await self._actor.route(element)

    def set_blocklist(self, jids: frozenset[str]) -> None:
        self._actor.set_blocklist(jids)

    def blocklist(self) -> frozenset[str]:
        return self._actor.blocklist()

    def available_resources(self) -> Sequence[str]:
        return self._actor.available_resources()

    def send_to_resource(self, resource: str, element: Element) -> bool:
        return self._actor.send_to_resource(resource, element)

    def bound_resources(self) -> Sequence[str]:
        return self._actor.bound_resources()

    def resource_state(self, resource: str) -> Mapping[str, str] | None:
        return self._actor.resource_state(resource)

    def set_resource_state(self, resource: str, key: str, value: str | None) -> bool:
        return self._actor.set_resource_state(resource, key, value)

    def account_state(self) -> dict[str, Any]:
        return self._actor.account_state()

    async def request(self, element: Element, on_reply: Callable[[Element], Awaitable[None]]) -> None:
        await self._actor.request(element, on_reply)

    def is_detached(self, resource: str) -> bool:
        return self._actor.is_detached(resource)

    def is_shared_contact(self, jid: str) -> bool:
        return self._actor.is_shared_contact(jid)
