"""A room's broadcast: one serialization, one frame per worker, one copy per occupant.

A room actor hands each stanza it broadcasts here once, without a `to`, with the occupants it is
for and the worker where each one's session lives (learnt from the `origin` of its presence).
Recipients on this worker get their copy straight from here; for every other worker one
`Fanout` frame carries the bytes and the list of recipients, and that worker makes the copies
(`deliver_here`). The `to` attribute is spliced into the serialized bytes, so no copy is parsed
or serialized again.

A recipient whose session is not where the room thought (it ended, or resumed on another worker)
gets its copy through the normal route instead, by its account: delivered to wherever the
resource is bound now, or, for a resource that is gone, bounced back to the room as an error,
which removes the occupant (XEP-0045 §9.x, status 333).
"""

from __future__ import annotations

import contextlib
import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING
from xml.sax.saxutils import quoteattr

import trio

from imactor import messages as m
from imactor.actors import ActorAddress, ActorGone
from imactor.mesh.codec import BodyError
from imactor.xmpp.jid import JID
from imactor.xmpp.stanza import Stanza

if TYPE_CHECKING:
    from imactor.server.services import Services

log = logging.getLogger("imactor.fanout")


def addressed(template: Stanza, to: JID) -> Stanza:
    """`template` (serialized without a `to`) with `to` set, by splicing the attribute into its
    bytes right after the tag name."""
    data = template.data
    cut = len(template.kind) + 1  # after "<message", "<presence" or "<iq"
    attribute = b" to=" + quoteattr(str(to)).encode()
    return Stanza(template.kind, template.type, template.from_jid, to, template.id,
                  data[:cut] + attribute + data[cut:])  # fmt: skip


async def broadcast(
    services: Services, template: Stanza, recipients: Iterable[tuple[JID, int | None]]
) -> None:
    """Send `template` to each (real JID, worker of its session or None when unknown)."""
    by_worker: Mapping[int | None, list[JID]] = _group(recipients)
    here = services.worker_index
    mesh = services.mesh
    for worker, jids in by_worker.items():
        if worker is None or worker == here or mesh is None:
            for stanza in deliver_here(services, template, jids):
                await by_account(services, stanza)
            continue
        try:
            address = ActorAddress("fanout", template.to_jid.localpart or "", worker)
            mesh.send_nowait(address, m.Fanout(template, tuple(jids)))
        except ActorGone:
            # That worker is gone: its sessions are gone too; the accounts know where the
            # resources went (if they resumed elsewhere) or bounce the copies.
            for jid in jids:
                await by_account(services, addressed(template, jid))


def deliver_here(services: Services, template: Stanza, recipients: Iterable[JID]) -> list[Stanza]:
    """Hand copies to the sessions of this worker, at once and in order (the end of a `Fanout`
    frame, too). Returns the copies whose session is not here: for `by_account`."""
    elsewhere: list[Stanza] = []
    for jid in recipients:
        stanza = addressed(template, jid)
        session = services.sessions.by_jid(jid)
        if session is None:
            elsewhere.append(stanza)
            continue
        try:
            session.ref.send_nowait(m.Deliver(stanza))
        except trio.WouldBlock:
            session.kick("policy-violation", "not reading")
        except ActorGone:
            elsewhere.append(stanza)
    return elsewhere


async def by_account(services: Services, stanza: Stanza) -> None:
    """The normal route, through the recipient's account (see the module docstring)."""
    with contextlib.suppress(ActorGone):
        await services.router.route(stanza, wait=False)


def install(services: Services) -> None:
    """Take the mesh's ``fanout`` frames: another worker's room broadcasting to sessions here."""
    mesh = services.mesh
    assert mesh is not None

    def on_frame(_room: str, message: object) -> None:
        if not isinstance(message, m.Fanout):
            raise BodyError(f"a {type(message).__name__} for a room broadcast")
        # At once, in frame order: a room's broadcasts reach each session in the room's order.
        for stanza in deliver_here(services, message.stanza, message.recipients):
            mesh.spawn(by_account, services, stanza)

    mesh.handle("fanout", on_frame)


def _group(recipients: Iterable[tuple[JID, int | None]]) -> dict[int | None, list[JID]]:
    grouped: dict[int | None, list[JID]] = defaultdict(list)
    for jid, worker in recipients:
        grouped[worker].append(jid)
    return grouped
