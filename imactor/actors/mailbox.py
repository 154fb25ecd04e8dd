"""Bounded mailboxes: a Trio memory channel pair plus counters for `statistics()`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

import trio

M = TypeVar("M")


@dataclass(frozen=True, slots=True)
class MailboxStatistics:
    size: int  #: messages waiting now
    capacity: int
    received_total: int
    high_watermark: int


class Mailbox(Generic[M]):
    """A bounded queue owned by one actor. Senders block (or get `WouldBlock`) when it is full."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("a mailbox holds at least one message")
        self.capacity = capacity
        self.send_channel, self.receive_channel = trio.open_memory_channel[M](capacity)
        self._received_total = 0
        self._high_watermark = 0

    async def receive(self) -> M:
        self._note_depth()
        message = await self.receive_channel.receive()
        self._received_total += 1
        return message

    def receive_nowait(self) -> M:
        message = self.receive_channel.receive_nowait()
        self._received_total += 1
        return message

    def close(self) -> None:
        """Refuse further messages: senders get `trio.BrokenResourceError` (→ `ActorGone`)."""
        self.receive_channel.close()

    def _note_depth(self) -> None:
        depth = self.send_channel.statistics().current_buffer_used
        if depth > self._high_watermark:
            self._high_watermark = depth

    def statistics(self) -> MailboxStatistics:
        self._note_depth()
        return MailboxStatistics(
            size=self.send_channel.statistics().current_buffer_used,
            capacity=self.capacity,
            received_total=self._received_total,
            high_watermark=self._high_watermark,
        )
