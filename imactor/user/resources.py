"""The account's bound sessions, by resource name, and the one way to reach them.

Delivery uses `send_nowait`: a session whose mailbox is full has a client that stopped reading,
and it is kicked rather than allowed to slow the account (or its senders) down.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from imactor import messages as m
from imactor.actors import ActorAddress, ActorGone, ActorRef
from imactor.xmpp import stanza as st
from imactor.xmpp.jid import JID, InvalidJID
from imactor.xmpp.stanza import Element, Stanza

if TYPE_CHECKING:
    from imactor.server.sessions import SessionTable

log = logging.getLogger("imactor.user")


@dataclass(slots=True)
class Resource:
    """One bound session of the account (one per session: slotted, nothing created unused)."""

    session: ActorRef[m.SessionMessage]
    available: bool = False
    priority: int = 0
    presence: Stanza | None = None  #: last broadcast presence
    interested: bool = False  #: requested the roster: gets roster pushes (RFC 6121 §2.1.6)
    #: Got directed presence (§4.6); None until the first one (an empty set is 216 bytes).
    directed: set[JID] | None = None
    epoch: int = 0  #: the membership epoch when it was bound (see `m.WorkersLost`)
    detached: bool = False  #: its session waits for a XEP-0198 resumption (`m.Detached`)
    state: dict[str, str] = field(default_factory=dict)  #: modules' per-resource state
    sent_wanted: bool = False  #: what its session was last told (`m.SentHooks`)


class Resources(dict[str, Resource]):
    """Resource name → `Resource`, with the sends to their sessions."""

    __slots__ = ("_jid", "_owner", "_sessions")

    def __init__(self, owner: ActorAddress, jid: JID, sessions: SessionTable[Any]) -> None:
        super().__init__()
        self._owner = owner  #: for the log
        self._jid = jid
        self._sessions = sessions

    def any_available(self) -> bool:
        return any(resource.available for resource in self.values())

    def available_names(self) -> list[str]:
        return [name for name, resource in self.items() if resource.available]

    def names(self, chosen: Sequence[Resource]) -> tuple[str, ...]:
        return tuple(name for name, resource in self.items() if any(resource is c for c in chosen))

    def deliver(self, resource: Resource, stanza: Stanza) -> None:
        self.send(resource, m.Deliver(stanza))

    def deliver_to_available(self, stanza: Stanza) -> None:
        for resource in self.values():
            if resource.available:
                self.deliver(resource, stanza)

    def send(self, resource: Resource, message: m.SessionMessage) -> None:
        try:
            resource.session.send_nowait(message)
        except trio.WouldBlock:
            # The client stopped reading; its session ends rather than stall this account.
            log.warning("%s: session mailbox full, disconnecting %s", self._owner, resource.session.address)
            with contextlib.suppress(trio.WouldBlock, ActorGone):
                resource.session.send_nowait(m.Kick("policy-violation", "not reading"))
            self._sessions.kill(resource.session)
        except ActorGone:
            pass

    def send_to_all(self, message: m.SessionMessage) -> None:
        for resource in self.values():
            self.send(resource, message)

    def push(self, element: Element, *, interested_only: bool = False) -> None:
        """A copy of `element` to each resource (RFC 6121 §2.1.6: `interested_only` for roster
        pushes), addressed to it and from the account unless it says otherwise."""
        for name, resource in list(self.items()):
            if interested_only and not resource.interested:
                continue
            copy = st.parse(st.serialize(element))
            copy.set("to", str(self._jid.with_resource(name)))
            if copy.get("from") is None:
                copy.set("from", str(self._jid))
            self.deliver(resource, Stanza.from_element(copy))

    # ---- across a hand-over to the account's next home -----------------------------------------

    def export(self) -> bytes:
        """The resources as JSON, for the account's next home (`m.AccountMoved`)."""
        return json.dumps([
            {
                "name": name, "session": [r.session.address.key, r.session.address.worker],
                "available": r.available, "priority": r.priority,
                "presence": None if r.presence is None else r.presence.data.decode(),
                "interested": r.interested, "directed": sorted(str(jid) for jid in r.directed or ()),
                "epoch": r.epoch, "detached": r.detached, "state": r.state,
            }
            for name, r in self.items()
        ]).encode()  # fmt: skip

    def adopt(self, snapshot: bytes, session_at: Callable[[str, int], ActorRef[m.SessionMessage]]) -> int:
        """Take the resources a previous home exported (those not bound here meanwhile); how many.

        Raises:
            ValueError: the snapshot is not what `export` writes.
        """
        taken = 0
        try:
            for entry in json.loads(snapshot):
                name = str(entry["name"])
                if name in self:
                    continue
                key, worker = entry["session"]
                presence = entry["presence"]
                self[name] = Resource(
                    session=session_at(str(key), int(worker)),
                    available=bool(entry["available"]),
                    priority=int(entry["priority"]),
                    presence=None if presence is None else Stanza.from_element(st.parse(presence.encode())),
                    interested=bool(entry["interested"]),
                    directed={JID.parse(jid) for jid in entry["directed"]} or None,
                    epoch=int(entry["epoch"]),
                    detached=bool(entry["detached"]),
                    state={str(k): str(v) for k, v in entry["state"].items()},
                )
                taken += 1
        except (KeyError, TypeError, AttributeError, InvalidJID) as exc:
            raise ValueError(f"not a resources snapshot: {exc!r}") from None
        return taken
