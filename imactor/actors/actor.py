"""The actor base class: one Trio task that owns its state and reads one bounded mailbox."""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Generic, TypeVar

import trio

from imactor.actors.mailbox import Mailbox, MailboxStatistics
from imactor.actors.ref import ActorAddress, LocalRef

M = TypeVar("M")

log = logging.getLogger("imactor.actors")


@dataclass(frozen=True, slots=True)
class ActorStatistics:
    address: str
    mailbox: MailboxStatistics
    handled_total: int


class Actor(ABC, Generic[M]):
    """Subclasses implement `handle`; optionally `on_start`, `on_stop`, `is_idle` and `idle_timeout`.

    Life cycle: `on_start()` runs before the actor reports itself started, so no message arrives
    before its state is loaded. The loop then handles one message at a time. When the mailbox
    stays empty for `idle_timeout` seconds and `is_idle()` agrees, or `stop()` is called, the
    actor runs `before_stop()` (unregister here, so no new sender finds it), drains what is
    already queued, closes its mailbox, runs `on_stop()` and, last, `after_stop()`.

    `is_idle()` is asked before each wait for a message, and again when that wait times out: an
    actor that is not idle then waits without a timer, so its idleness may change only while it
    handles a message (as it does for accounts and rooms, whose sessions and occupants come and
    go by messages).

    Error handling: an exception from `handle` ends the actor; its supervisor decides about a
    restart. Senders holding the old reference then get `ActorGone` and resolve the address anew.
    """

    idle_timeout: float = math.inf

    def __init__(self, address: ActorAddress, mailbox_capacity: int = 1024) -> None:
        self.address = address
        self._mailbox: Mailbox[M] = Mailbox(mailbox_capacity)
        self.ref: LocalRef[M] = LocalRef(address, self._mailbox.send_channel)
        self._handled_total = 0
        self._stopping = False

    @abstractmethod
    async def handle(self, message: M) -> None: ...

    async def on_start(self) -> None:
        """Load state; runs before `task_status.started()`."""

    def before_stop(self) -> None:
        """Synchronous hook run when the actor decides to stop, before draining its mailbox."""

    async def on_stop(self) -> None:
        """Release resources after the last message."""

    def after_stop(self) -> None:
        """Synchronous hook run last, however the actor ended (tell the registry it is gone)."""

    def is_idle(self) -> bool:
        return True

    def stop(self) -> None:
        """Ask the actor to stop after the message it is handling now."""
        self._stopping = True

    async def run(self, *, task_status: trio.TaskStatus[LocalRef[M]] = trio.TASK_STATUS_IGNORED) -> None:
        await self.on_start()
        task_status.started(self.ref)
        try:
            await self._loop()
            self.before_stop()
            # Whatever was queued before the mailbox closes is still handled: nothing is dropped
            # between the decision to stop and the close.
            while True:
                try:
                    message = self._mailbox.receive_nowait()
                except trio.WouldBlock:
                    break
                await self._dispatch(message)
        finally:
            self._mailbox.close()
            try:
                with trio.CancelScope(shield=True):
                    await self.on_stop()
            finally:
                self.after_stop()

    async def _loop(self) -> None:
        while not self._stopping:
            if self.idle_timeout == math.inf or not self.is_idle():
                # An actor that could not stop anyway waits without a timer: a cancel scope held
                # by every busy account (one with sessions bound) costs memory for nothing.
                message = await self._mailbox.receive()
            else:
                with trio.move_on_after(self.idle_timeout) as scope:
                    message = await self._mailbox.receive()
                if scope.cancelled_caught:
                    # A message may have landed after the timer fired (it no longer found us
                    # waiting): an actor that stops now would handle it unregistered, going away.
                    if self.is_idle() and not self._mailbox.pending:
                        return
                    continue
            await self._dispatch(message)

    async def _dispatch(self, message: M) -> None:
        await self.handle(message)
        self._handled_total += 1

    def statistics(self) -> ActorStatistics:
        return ActorStatistics(
            address=str(self.address),
            mailbox=self._mailbox.statistics(),
            handled_total=self._handled_total,
        )
