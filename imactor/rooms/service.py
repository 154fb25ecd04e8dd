"""The multi-user chat service (XEP-0045) at `<[muc] subdomain>.<domain>`: its rooms and itself.

Each room is a `RoomActor` (`imactor.rooms.actor`) placed like a user actor: its home is
`Membership.home("room", name)`, it is activated on demand from storage, and it stops when it
has been empty for `[muc] idle_timeout`. Stanzas to the service's own JID (no localpart) are
answered here, statelessly, in the task that routes them: disco#info (the service identity and
features) and disco#items (the public rooms, from storage).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from imactor.hosts import account_key, split_account_key
from imactor.muc.values import ServiceInfo
from imactor.xmpp import stanza as st
from imactor.xmpp.errors import StanzaError
from imactor.xmpp.jid import JID
from imactor.xmpp.namespaces import NS_DISCO_INFO, NS_DISCO_ITEMS
from imactor.xmpp.stanza import Stanza

if TYPE_CHECKING:
    from imactor.server.services import Services

NS_MUC = "http://jabber.org/protocol/muc"
#: disco#info features of the service itself (XEP-0045 §6.1); the modules' room features
#: (XEP-0313 for room archives) come after NS_MUC.
SERVICE_FEATURES = (NS_DISCO_INFO, NS_DISCO_ITEMS, NS_MUC, "urn:xmpp:sid:0", "jabber:x:conference")


class MucService:
    """The chat service of one served domain: ``conference.<host>`` for each [[hosts]] host too.

    A room's key (its actor's, its rows') is its name on the primary domain's service, and its
    bare JID on a host's (`key`), as account keys are (`imactor.hosts`).
    """

    def __init__(self, services: Services, host: str | None = None) -> None:
        config = services.config.muc
        self._services = services
        #: The served domain whose service this is (its accounts may create rooms).
        self.host = host or services.domain
        self.domain = f"{config.subdomain}.{self.host}"
        self.jid = JID.make(None, self.domain)
        self._primary = f"{config.subdomain}.{services.domain}"
        self.admins = frozenset(services.config.server.admins)
        #: disco#info features the enabled modules add to rooms (and to the service)
        self.room_features = tuple(services.view(self.host).modules.room_features())
        # XEP-0421 occupant ids: derived from the TLS key, so every worker (and every restart)
        # gives one account the same id in a room, and no client can compute another's.
        self._occupant_id_key = hashlib.sha256(b"imactor-occupant-id\0" + services.tls_key_bytes).digest()

    def key(self, name: str) -> str:
        """The key of the room `name` of this service."""
        return account_key(name, self.domain, self._primary)

    def room_jid(self, key: str) -> JID:
        """The bare JID of the room whose key is `key`."""
        return JID.make(split_account_key(key, self._primary)[0], self.domain)

    def holds(self, key: str) -> bool:
        """Whether the room key `key` is one of this service's."""
        return split_account_key(key, self._primary)[1] == self.domain

    def service_info(self, may_create: Callable[[JID], bool]) -> ServiceInfo:
        """What a room needs to know of its service; `may_create` answers for its creator."""
        return ServiceInfo(
            jid=self.jid, admins=self.admins, max_occupants=self._services.config.muc.max_occupants,
            may_create=may_create, room_features=self.room_features, occupant_id_key=self._occupant_id_key,
        )  # fmt: skip

    async def creation_allowed(self, creator: JID) -> bool:
        """May this account create one more room ([muc] create_rooms, max_rooms_per_user)?"""
        config = self._services.config.muc
        bare = str(creator.bare)
        if bare in self.admins:
            return True
        if config.create_rooms == "admins" or creator.domainpart != self.host:
            return False
        return await self._services.storage.rooms.count_created_by(bare) < config.max_rooms_per_user

    async def handle_service_stanza(self, stanza: Stanza) -> None:
        """A stanza to the service's own JID: disco IQs are answered, other IQs refused."""
        if stanza.kind != "iq" or stanza.type not in ("get", "set"):
            return
        request = stanza.element()
        router = self._services.router
        payload = request[0] if len(request) else None
        try:
            if payload is None or stanza.type != "get" or payload.get("node"):
                raise StanzaError("service-unavailable")
            if payload.tag == f"{{{NS_DISCO_INFO}}}query":
                reply = self._info(request)
            elif payload.tag == f"{{{NS_DISCO_ITEMS}}}query":
                reply = await self._items(request)
            else:
                raise StanzaError("service-unavailable")
        except StanzaError as error:
            await router.bounce(stanza, error)
            return
        await router.route(Stanza.from_element(reply), wait=False)

    def _info(self, request: st.Element) -> st.Element:
        reply = st.iq_result(request)
        query = st.child(reply, NS_DISCO_INFO, "query")
        st.disco_identity(query, "conference", "text", "Chat rooms")
        features = (*SERVICE_FEATURES[:3], *self.room_features, *SERVICE_FEATURES[3:])
        for feature in features:
            st.child(query, NS_DISCO_INFO, "feature").set("var", feature)
        return reply

    async def _items(self, request: st.Element) -> st.Element:
        reply = st.iq_result(request)
        query = st.child(reply, NS_DISCO_ITEMS, "query")
        for room in await self._services.storage.rooms.listing(public_only=True):
            if not self.holds(room.name):
                continue  # another host's service's
            jid = self.room_jid(room.name)
            item = st.child(query, NS_DISCO_ITEMS, "item")
            item.set("jid", str(jid))
            config = room.state.get("config")
            name = config.get("name") if isinstance(config, dict) else None
            item.set("name", name if isinstance(name, str) and name else jid.localpart or "")
        return reply
