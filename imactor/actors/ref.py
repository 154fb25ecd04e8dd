"""Actor references: the only way to talk to an actor.

A reference hides where its actor lives. `LocalRef` wraps the send side of a mailbox in this
process; the cluster layer adds a reference that forwards frames to another worker, with the same
three verbs (Trio's naming): `send` (may wait: back-pressure), `send_nowait` (raises
`trio.WouldBlock` when the mailbox is full, and the caller chooses its policy) and `ask`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import trio

from imactor.actors.mailbox import Mailbox

M = TypeVar("M")
M_contra = TypeVar("M_contra", contravariant=True)
R = TypeVar("R")


class ActorGone(Exception):
    """The actor behind a reference has stopped; resolve the address again to reach its successor."""


class AskTimeout(Exception):
    """An `ask` got no reply in time."""


@dataclass(frozen=True, slots=True)
class ActorAddress:
    """Identity of an actor: what it is, its key, and the worker it lives on (printed `user:a@b@w0`)."""

    kind: str
    key: str
    worker: int = 0

    def __str__(self) -> str:
        return f"{self.kind}:{self.key}@w{self.worker}"


class ActorRef(Protocol[M_contra]):
    """What every reference offers, wherever its actor lives."""

    @property
    def address(self) -> ActorAddress: ...

    async def send(self, message: M_contra) -> None: ...

    def send_nowait(self, message: M_contra) -> None: ...


class MailboxSender(Protocol[M_contra]):
    """The send side of a mailbox (`imactor.actors.mailbox.Mailbox`, or a Trio memory channel)."""

    async def send(self, message: M_contra) -> None: ...

    def send_nowait(self, message: M_contra) -> None: ...


class LocalRef(Generic[M]):
    """A reference to an actor in this process."""

    __slots__ = ("_address", "_channel")

    def __init__(self, address: ActorAddress, channel: MailboxSender[M]) -> None:
        self._address = address
        self._channel = channel

    @property
    def address(self) -> ActorAddress:
        return self._address

    async def send(self, message: M) -> None:
        try:
            await self._channel.send(message)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise ActorGone(str(self._address)) from exc

    def send_nowait(self, message: M) -> None:
        """Raises: `trio.WouldBlock` when the mailbox is full; `ActorGone` when the actor stopped."""
        try:
            self._channel.send_nowait(message)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise ActorGone(str(self._address)) from exc

    def seal(self, last: M) -> None:
        """`last` is the actor's final message: every send after it raises `ActorGone`
        (`Mailbox.seal`; a plain channel just gets `last`)."""
        channel = self._channel
        try:
            if isinstance(channel, Mailbox):
                channel.seal(last)
            else:
                channel.send_nowait(last)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise ActorGone(str(self._address)) from exc

    def __repr__(self) -> str:
        return f"<LocalRef {self._address}>"


class Reply(Generic[R]):
    """A one-shot reply slot carried inside a request message (`ask`)."""

    __slots__ = ("_channel", "_done")

    def __init__(self, channel: trio.MemorySendChannel[tuple[bool, Any]]) -> None:
        self._channel = channel
        self._done = False

    def send(self, value: R) -> None:
        self._put((True, value))

    def fail(self, error: BaseException) -> None:
        """Make the asker's `ask()` raise `error`."""
        self._put((False, error))

    def _put(self, item: tuple[bool, Any]) -> None:
        if self._done:
            return
        self._done = True
        # The asker may have timed out and gone; a late reply is simply dropped.
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, trio.WouldBlock):
            self._channel.send_nowait(item)


async def ask(ref: ActorRef[M], make_request: Callable[[Reply[R]], M], timeout: float = 10.0) -> R:
    """Send `make_request(reply)` to `ref` and wait for the reply, at most `timeout` seconds.

    Raises:
        AskTimeout: no reply in time.
        ActorGone: the actor has stopped.
        Exception: whatever the actor passed to `Reply.fail`.
    """
    send_channel, receive_channel = trio.open_memory_channel[tuple[bool, Any]](1)
    reply: Reply[R] = Reply(send_channel)
    with receive_channel:
        with trio.move_on_after(timeout) as scope:
            await ref.send(make_request(reply))
            ok, value = await receive_channel.receive()
        if scope.cancelled_caught:
            raise AskTimeout(f"no reply from {ref.address} within {timeout}s")
    if ok:
        return value  # type: ignore[no-any-return]
    raise value
