"""Bounded mailboxes: one actor reads, any task sends, with counters for `statistics()`.

Semantics are those of a Trio memory channel with one receiver (`trio.open_memory_channel`):
`send` waits while the mailbox is full, `send_nowait` raises `trio.WouldBlock` then; once the
owner has closed it, senders get `trio.BrokenResourceError` (which `LocalRef` turns into
`ActorGone`) and the owner gets `trio.ClosedResourceError`. `receive` is a Trio checkpoint;
`send` is one only when it waits (see there).

Why not a memory channel itself: every session and every account has a mailbox that is empty
nearly all the time, and a channel pair (its state, a deque of 64 slots, two ordered dicts of
waiting tasks, two channel objects each with a set) costs about 1.7 KB even when empty. Here an
empty, idle mailbox is one small object: the queue exists only while messages wait, and the
waiting senders only while the mailbox is full.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import outcome
import trio

M = TypeVar("M")


@dataclass(frozen=True, slots=True)
class MailboxStatistics:
    size: int  #: messages waiting now
    capacity: int
    received_total: int
    high_watermark: int


class Mailbox(Generic[M]):
    """A bounded queue owned by one actor. Senders block (or get `WouldBlock`) when it is full.

    Only one task may wait in `receive` at a time (the actor's own): a second one gets
    `trio.BusyResourceError`.
    """

    __slots__ = (
        "_closed", "_high_watermark", "_queue", "_received_total", "_receiver", "_sealed", "_senders",
        "capacity", "on_queued",
    )  # fmt: skip

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("a mailbox holds at least one message")
        self.capacity = capacity
        #: Waiting messages; None while there are none (see the module docstring).
        self._queue: deque[M] | None = None
        #: Senders waiting for room, in arrival order, with their message; None while none wait.
        self._senders: OrderedDict[trio.lowlevel.Task, M] | None = None
        #: The task waiting in `receive`, if any.
        self._receiver: trio.lowlevel.Task | None = None
        self._closed = False
        self._sealed = False  #: `seal`: the owner reads what is queued, nobody may add to it
        #: Called when a message is queued into an empty mailbox with no task waiting in `receive`:
        #: an owner that reads only while there is work starts its reader here.
        self.on_queued: Callable[[], object] | None = None
        self._received_total = 0
        self._high_watermark = 0

    @property
    def send_channel(self) -> Mailbox[M]:
        """The send side, for `LocalRef` (the mailbox itself: `send` and `send_nowait`)."""
        return self

    # ---- sending -----------------------------------------------------------------------------

    def send_nowait(self, message: M) -> None:
        """Queue `message`, or hand it to the waiting receiver.

        Raises:
            trio.WouldBlock: The mailbox is full.
            trio.BrokenResourceError: The owner closed (or sealed) the mailbox.
        """
        if self._closed or self._sealed:
            raise trio.BrokenResourceError
        receiver = self._receiver
        if receiver is not None:
            # Only an empty mailbox has a waiting receiver: the message goes straight to it.
            self._receiver = None
            self._received_total += 1
            trio.lowlevel.reschedule(receiver, outcome.Value(message))
            return
        queue = self._queue
        if queue is None:
            self._queue = deque((message,))
            if self.on_queued is not None:
                self.on_queued()
        elif len(queue) < self.capacity:
            queue.append(message)
        else:
            raise trio.WouldBlock
        self._note_depth()

    async def send(self, message: M) -> None:
        """Queue `message`, waiting for room while the mailbox is full.

        A cancellation point always; a schedule point only when it waits. A send that finds room
        does not yield: the receiver runs at the sender's next wait, as it would have after the
        yield, and a message that arrives alone costs one scheduler round less. Every sender
        (a session's reader, an actor's loop) waits for its own input between sends anyway.

        Raises:
            trio.BrokenResourceError: The owner closed the mailbox (also while this waited).
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            self.send_nowait(message)
        except trio.WouldBlock:
            pass
        else:
            return
        task = trio.lowlevel.current_task()
        senders = self._senders
        if senders is None:
            senders = self._senders = OrderedDict()
        senders[task] = message

        def abort(_: trio.lowlevel.RaiseCancelT) -> trio.lowlevel.Abort:
            waiting = self._senders
            if waiting is not None:
                waiting.pop(task, None)
                if not waiting:
                    self._senders = None
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    # ---- receiving ---------------------------------------------------------------------------

    def peek_nowait(self) -> M | None:
        """The oldest message, left in the mailbox; None when there is none (or it is closed)."""
        queue = self._queue
        return None if queue is None or self._closed else queue[0]

    def receive_nowait(self) -> M:
        """The oldest message.

        Raises:
            trio.WouldBlock: The mailbox is empty.
            trio.ClosedResourceError: The mailbox was closed.
        """
        if self._closed:
            raise trio.ClosedResourceError
        queue = self._queue
        if queue is None:
            raise trio.WouldBlock
        message = queue.popleft()
        senders = self._senders
        if senders is not None:
            # Room now: the longest-waiting sender's message moves in, and that sender goes on.
            task, waiting = senders.popitem(last=False)
            if not senders:
                self._senders = None
            queue.append(waiting)
            trio.lowlevel.reschedule(task)
        elif not queue:
            self._queue = None
        self._received_total += 1
        return message

    async def receive(self) -> M:
        """The oldest message, waiting for one while the mailbox is empty.

        Raises:
            trio.ClosedResourceError: The mailbox was closed (also while this waited).
            trio.BusyResourceError: Another task is already waiting in `receive`.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            message = self.receive_nowait()
        except trio.WouldBlock:
            pass
        else:
            await trio.lowlevel.cancel_shielded_checkpoint()
            return message
        if self._receiver is not None:
            raise trio.BusyResourceError("another task is already receiving from this mailbox")
        self._receiver = trio.lowlevel.current_task()
        # `send_nowait` counts the message in `_received_total` when it hands it over. A bound
        # method, not a closure: an idle actor holds its abort function for as long as it waits.
        return await trio.lowlevel.wait_task_rescheduled(self._abort_receive)  # type: ignore[no-any-return]

    def _abort_receive(self, _: trio.lowlevel.RaiseCancelT) -> trio.lowlevel.Abort:
        # Called only while the receiver still waits: whoever hands it a message or closes the
        # mailbox clears `_receiver` before rescheduling it, and no second task can wait meanwhile.
        self._receiver = None
        return trio.lowlevel.Abort.SUCCEEDED

    def seal(self, last: M) -> None:
        """Queue `last` (even when full) as the final message, and refuse every message after it:
        senders, also those waiting for room, get `trio.BrokenResourceError` (→ `ActorGone`) and
        look for the actor anew. The owner still reads what is queued, `last` at the end.

        For an actor whose home moved (`m.HandOff`): what was queued before the move is handled
        here, what comes after goes to the new home, and nothing is in between.

        Raises:
            trio.BrokenResourceError: The mailbox was closed or sealed already.
        """
        try:
            self.send_nowait(last)
        except trio.WouldBlock:
            assert self._queue is not None  # full: the last message goes in all the same
            self._queue.append(last)
            self._note_depth()
        self._sealed = True
        senders, self._senders = self._senders, None
        if senders is not None:
            for task in senders:
                trio.lowlevel.reschedule(task, outcome.Error(trio.BrokenResourceError()))

    def close(self) -> None:
        """Refuse further messages: senders get `trio.BrokenResourceError` (→ `ActorGone`).

        What was still queued is dropped, as when a memory channel's last receiver closes.
        """
        if self._closed:
            return
        self._closed = True
        self._queue = None
        # Usually a bound method of the owner, which holds the mailbox: a reference cycle that
        # would keep an ended actor for the cyclic collector instead of freeing it now.
        self.on_queued = None
        senders, self._senders = self._senders, None
        if senders is not None:
            for task in senders:
                trio.lowlevel.reschedule(task, outcome.Error(trio.BrokenResourceError()))
        receiver, self._receiver = self._receiver, None
        if receiver is not None:
            trio.lowlevel.reschedule(receiver, outcome.Error(trio.ClosedResourceError()))

    @property
    def pending(self) -> int:
        """Messages waiting now."""
        return self._size()

    # ---- statistics --------------------------------------------------------------------------

    def _size(self) -> int:
        queue = self._queue
        return 0 if queue is None else len(queue)

    def _note_depth(self) -> None:
        depth = self._size()
        if depth > self._high_watermark:
            self._high_watermark = depth

    def statistics(self) -> MailboxStatistics:
        return MailboxStatistics(
            size=self._size(),
            capacity=self.capacity,
            received_total=self._received_total,
            high_watermark=self._high_watermark,
        )
