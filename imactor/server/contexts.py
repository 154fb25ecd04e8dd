"""The one place where the contexts handed to modules are built (`Contexts`), for the account
actors, the sessions and the room actors alike. The context types themselves are the module API's
(`imactor.server.modules`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from imactor.server.modules import (
    AccountApi,
    DeliveredContext,
    IqContext,
    MessageContext,
    OutgoingContext,
    PresenceContext,
    ReloadContext,
    RoomApi,
    RoomMessagesContext,
    RoomStanzaContext,
    ServerApi,
    SharedRosterContext,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from imactor.config import Config
    from imactor.muc.values import ArchiveItem
    from imactor.storage import Storage
    from imactor.xmpp.jid import JID
    from imactor.xmpp.stanza import Element, Stanza

__all__ = ["ContextSource", "Contexts"]


class ContextSource(Protocol):
    """Where contexts take what every handler gets (the worker's `Services`; read per call, since
    a reload replaces the config)."""

    @property
    def storage(self) -> Storage: ...

    @property
    def config(self) -> Config: ...

    @property
    def server(self) -> ServerApi: ...


class Contexts:
    """The one place where the contexts handed to modules are built, for the account actors and
    the sessions alike: what every context carries comes from `source`."""

    __slots__ = ("_source",)

    def __init__(self, source: ContextSource) -> None:
        self._source = source

    def iq(
        self, stanza: Element, from_jid: JID, to_jid: JID | None, options: Any, *,
        account: AccountApi | None = None, remote_address: str | None = None, room: RoomApi | None = None,
    ) -> IqContext:  # fmt: skip
        source = self._source
        return IqContext(
            stanza=stanza, from_jid=from_jid, to_jid=to_jid, options=options, storage=source.storage,
            config=source.config, server=source.server, account=account, remote_address=remote_address,
            room=room,
        )  # fmt: skip

    def message(self, stanza: Element, account: AccountApi, options: Any, key: str = "") -> MessageContext:
        source = self._source
        return MessageContext(
            stanza=stanza, account=account, options=options, storage=source.storage,
            config=source.config, server=source.server, message_key=key,
        )  # fmt: skip

    def outgoing(self, stanza: Element, sender: JID, options: Any) -> OutgoingContext:
        source = self._source
        return OutgoingContext(
            stanza=stanza, sender=sender, options=options, storage=source.storage, config=source.config,
            server=source.server,
        )  # fmt: skip

    def delivered(
        self, message: Stanza, account: AccountApi, options: Any, *, delivered_to: tuple[str, ...],
        offline: bool,
    ) -> DeliveredContext:  # fmt: skip
        source = self._source
        return DeliveredContext(
            message=message, account=account, options=options, storage=source.storage,
            config=source.config, server=source.server, delivered_to=delivered_to, offline=offline,
        )  # fmt: skip

    def presence(self, stanza: Element, account: AccountApi, options: Any, *, own: bool) -> PresenceContext:
        source = self._source
        return PresenceContext(
            stanza=stanza, account=account, own=own, options=options, storage=source.storage,
            config=source.config, server=source.server,
        )  # fmt: skip

    def room_messages(
        self, room: RoomApi, messages: Sequence[ArchiveItem], options: Any
    ) -> RoomMessagesContext:
        source = self._source
        return RoomMessagesContext(
            room=room, messages=messages, options=options, storage=source.storage, config=source.config,
            server=source.server,
        )  # fmt: skip

    def room_stanza(self, stanza: Element, room: RoomApi, options: Any) -> RoomStanzaContext:
        source = self._source
        return RoomStanzaContext(
            stanza=stanza, room=room, options=options, storage=source.storage, config=source.config,
            server=source.server,
        )  # fmt: skip

    def reload(self, options: Any) -> ReloadContext:
        source = self._source
        return ReloadContext(
            options=options, storage=source.storage, config=source.config, server=source.server
        )

    def shared_roster(self, username: str, options: Any) -> SharedRosterContext:
        source = self._source
        return SharedRosterContext(
            username=username, options=options, storage=source.storage, config=source.config,
            server=source.server,
        )  # fmt: skip
