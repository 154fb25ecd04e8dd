"""What a session needs of a message-based transport (WebSocket, BOSH) besides a byte stream.

A `SessionActor` reads with ``receive_some`` (one whole message per call, ``b""`` at the end) and
writes through `send_frames` (one message per frame, in order). It knows nothing else of the
transport, so TCP, WebSocket and BOSH clients run the very same session.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

import trio


class FramedStream(trio.abc.Stream):
    """A `trio.abc.Stream` whose data comes and goes as whole messages (RFC 7395 framing)."""

    #: The transport is confidential (HTTPS, or plain HTTP from a loopback peer): PLAIN may be
    #: offered, and STARTTLS never is.
    secure: bool = False

    @abc.abstractmethod
    async def send_frames(self, frames: Sequence[bytes]) -> None:
        """Send each frame as one message.

        Raises:
            trio.BrokenResourceError: The peer is gone.
        """

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """One message holding `data` (which must be one element, as any frame)."""
        await self.send_frames([bytes(data)])

    async def wait_send_all_might_not_block(self) -> None:
        return
