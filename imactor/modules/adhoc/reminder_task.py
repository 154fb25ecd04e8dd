"""Delivering scheduled reminders: a background task on the first worker of each node.

The task sleeps until the earliest due time, woken early when a reminder is scheduled on its
own worker (`poke`) and at least every ``reminder_recheck`` seconds, for reminders scheduled on
other workers or nodes. It never polls faster than that while nothing is due.

Once, and only once, per occurrence:

1. **Claim.** One conditional UPDATE (`ReminderStore.claim`) records the occurrence as pending,
   names the claimer (node, process id) and advances the reminder to its next time (or marks it
   done). It matches only while the row still has the due time the task read, so when two nodes
   of a cluster read the same due reminder, one claims it and the other changes nothing. An
   occurrence is never claimed twice.
2. **Deliver.** A headline message goes to each recipient through the router, and the task
   waits until the recipient's actor has handled it durably (`ServerApi.deliver`): handed to
   its sessions, or, with no session available, stored offline (the server keeps its own
   headlines, `imactor.user.delivery`). If the recipient's worker dies first, it is routed again.
3. **Record.** `ReminderStore.sent` clears the pending occurrence. If the database refuses
   that write, the task records it again at its next look, and does not send it again.

While one occurrence goes to many recipients (every account), the claim is renewed every
`RENEW_EVERY` seconds, so that no other node takes it for an orphan.

A crash between 1 and 3 leaves the occurrence pending under a claimer that no longer runs; the
next incarnation of the node's first worker takes it over at once (a claimer of its own node
with another process id), and any node after ``ORPHAN_AFTER`` seconds (a node that is gone), and
delivers it again. So no occurrence is lost (at least once), and the one window that can repeat
it is a crash after a recipient's actor handled the message and before step 3 committed: one
database write. The repeat carries the same stanza id, ``reminder-<id>-<due time in ms>``,
derived from the occurrence, so a client can tell it is the same message. Headlines are not
archived (XEP-0313 keeps chat and normal messages), so nothing dedupes them server-side; this
is the "exactly once" this server gives: exactly one claim per occurrence, and a redelivery only
when a crash hides whether the first one was made.
"""

from __future__ import annotations

import logging
import os
import time

import trio
from lxml import etree

from imactor.modules.adhoc.schedule import following
from imactor.server.modules import TaskContext
from imactor.storage import Storage
from imactor.storage.errors import StorageError
from imactor.storage.reminders import ALL_USERS, Reminder
from imactor.xmpp import stanza as st
from imactor.xmpp.namespaces import NS_CLIENT, NS_NICK, NS_VCARD

__all__ = ["ORPHAN_AFTER", "deliver_reminders", "poke", "reminder_message", "stanza_id"]

log = logging.getLogger("imactor.modules.adhoc.reminders")

#: Seconds after which a pending occurrence claimed by another node is delivered by this one.
ORPHAN_AFTER = 120.0
#: Seconds between renewals of a claim while its occurrence is delivered (to many recipients).
RENEW_EVERY = ORPHAN_AFTER / 4
#: Seconds to wait for a recipient's actor to handle a reminder before going on without knowing.
DELIVERY_PATIENCE = 30.0
#: Times a message is routed again when the recipient's worker died before handling it.
REROUTES = 3

#: Set by `poke`: the task of this worker wakes early (None where no task runs).
_wake: trio.Event | None = None


def poke() -> None:
    """A reminder was scheduled: the task, if it runs in this worker, looks again now."""
    if _wake is not None:
        _wake.set()


def stanza_id(reminder_id: int, occurrence: float) -> str:
    """The id of every copy of one occurrence's message, however often it is sent."""
    return f"reminder-{reminder_id}-{round(occurrence * 1000)}"


def reminder_message(domain: str, to: str, reminder: Reminder, occurrence: float, name: str) -> st.Element:
    """The headline a recipient gets: from the server, with the owner's name in the subject and
    as a XEP-0172 nick."""
    message = st.make("message", from_=domain, to=to, type_="headline",
                      id_=stanza_id(reminder.id, occurrence))  # fmt: skip
    st.child(message, NS_CLIENT, "subject", f"Reminder from {name}")
    st.child(message, NS_CLIENT, "body", reminder.text)
    st.child(message, NS_NICK, "nick", name)
    return message


async def deliver_reminders(ctx: TaskContext) -> None:
    """The task (`Module.background`): on each node's first worker only."""
    global _wake
    if ctx.worker != 0 or ctx.storage is None:
        return
    storage = ctx.storage
    prefix = f"node{ctx.node}:"
    me = f"{prefix}{os.getpid()}"
    #: Occurrences delivered whose record failed (the database): recorded again, not resent.
    unrecorded: list[tuple[int, float]] = []
    while True:
        wake = _wake = trio.Event()  # before looking: a poke while we look is not lost
        recheck = float(ctx.options.reminder_recheck)
        try:
            while unrecorded:
                await storage.reminders.sent(*unrecorded[0], me)
                del unrecorded[0]
            await _deliver_due(ctx, storage, me, prefix, unrecorded)
            next_at = await storage.reminders.next_due()
        except StorageError as exc:
            log.warning("reminders: the database failed, trying again in %.0f s: %s", recheck, exc)
            next_at = None
        delay = recheck if next_at is None else min(recheck, max(0.0, next_at - time.time()))
        with trio.move_on_after(delay):
            await wake.wait()


async def _deliver_due(
    ctx: TaskContext, storage: Storage, me: str, prefix: str, unrecorded: list[tuple[int, float]]
) -> None:
    store = storage.reminders
    now = time.time()
    for orphan in await store.orphans(me, prefix, now - ORPHAN_AFTER):
        assert orphan.pending_at is not None
        if await store.reclaim(orphan, me, now):
            log.info("reminders: delivering reminder %d again (its claimer %s stopped)", orphan.id,
                     orphan.claimed_by)  # fmt: skip
            await _send(ctx, storage, orphan, orphan.pending_at, me)
            await _record(storage, orphan.id, orphan.pending_at, me, unrecorded)
    for reminder in await store.due(now):
        if await store.claim(reminder, following(reminder.next_at, reminder.repeat, now), me, now):
            await _send(ctx, storage, reminder, reminder.next_at, me)
            await _record(storage, reminder.id, reminder.next_at, me, unrecorded)


async def _record(storage: Storage, reminder_id: int, occurrence: float, me: str,
                  unrecorded: list[tuple[int, float]]) -> None:  # fmt: skip
    try:
        await storage.reminders.sent(reminder_id, occurrence, me)
    except StorageError:
        unrecorded.append((reminder_id, occurrence))
        raise


async def _send(ctx: TaskContext, storage: Storage, reminder: Reminder, occurrence: float, me: str) -> None:
    domain = ctx.server.domain
    if reminder.recipients == (ALL_USERS,):
        recipients = [str(ctx.server.account_jid(name)) for name in await storage.accounts.list_usernames()]
    else:
        recipients = list(reminder.recipients)
    name = await _display_name(storage, reminder.owner)
    renewed = time.monotonic()
    for to in recipients:
        if time.monotonic() - renewed > RENEW_EVERY:  # other nodes must not take it over meanwhile
            await storage.reminders.renew(reminder.id, occurrence, me, time.time())
            renewed = time.monotonic()
        message = reminder_message(domain, to, reminder, occurrence, name)
        key = stanza_id(reminder.id, occurrence)
        for _ in range(REROUTES):
            with trio.move_on_after(DELIVERY_PATIENCE) as waited:
                if await ctx.server.deliver(message, key=key):
                    break
                continue
            if waited.cancelled_caught:
                log.warning("reminders: %s did not confirm reminder %d in time", to, reminder.id)
                break


async def _display_name(storage: Storage, username: str) -> str:
    """The owner's name as their vCard gives it (FN, else NICKNAME), else the account name."""
    try:
        data = await storage.vcards.get(username)
    except StorageError:
        data = None
    if data:
        try:
            vcard = st.parse(data)
        except (etree.XMLSyntaxError, ValueError):
            vcard = None
        if vcard is not None:
            for tag in ("FN", "NICKNAME"):
                found = vcard.find(f"{{{NS_VCARD}}}{tag}")
                if found is not None and found.text and found.text.strip():
                    return found.text.strip()
    return username
