"""The receiving half that the server-to-server and component stream machines share.

Bytes go in (`receive_data`), come out of the XML parser as parser events, and each is handed to
the machine (`_on_parsed`), which turns it into protocol events (`next_event`) and bytes to send
(`data_to_send`). A machine may hold the pump while its shell decides something (`_held`): the
bytes already received wait, unparsed, as h11 waits for its caller. Sans-IO: no sockets, no
clock. The client stream machine (`imactor.xmpp.stream`) has its own pump, which also takes
whole frames (RFC 7395) and reuses parsers across streams.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Generic, TypeVar

from imactor.xmpp.errors import RemoteProtocolError
from imactor.xmpp.parser import ParserEvent, XMLStreamParser
from imactor.xmpp.stream import NEED_DATA, _NeedData

E = TypeVar("E")


class ParsingStream(ABC, Generic[E]):
    def __init__(self, max_stanza_size: int) -> None:
        self._parser = XMLStreamParser(max_stanza_size=max_stanza_size)
        self._pending: list[bytes] = []
        self._parsed: list[ParserEvent] = []
        self._events: list[E] = []
        self._out: list[bytes] = []

    @property
    @abstractmethod
    def closed(self) -> bool: ...

    @abstractmethod
    def _held(self) -> bool:
        """True while the shell must decide before more input is read."""

    @abstractmethod
    def _on_parsed(self, parsed: ParserEvent) -> None: ...

    @abstractmethod
    def _on_eof(self) -> None:
        """The peer closed its side without closing the stream."""

    @abstractmethod
    def close(self, condition: str | None = None, text: str = "") -> None:
        """Send the stream error `condition` (if any) and our closing tag; the stream is over."""

    def receive_data(self, data: bytes) -> None:
        """Bytes from the peer; `b""` when it closed its side."""
        if not self.closed:
            self._pending.append(data)

    def next_event(self) -> E | _NeedData:
        """The next event, or `NEED_DATA` when more bytes (or a shell decision) are needed. Bad
        input closes the stream with its stream error (an event, like any other end)."""
        while not self._events:
            if self.closed or self._held():
                return NEED_DATA
            try:
                if self._parsed:
                    self._on_parsed(self._parsed.pop())
                elif self._pending:
                    data = self._pending.pop(0)
                    if not data:
                        self._on_eof()
                    else:
                        parsed = self._parser.feed(data)
                        parsed.reverse()  # popped from the end, in document order
                        self._parsed = parsed
                else:
                    return NEED_DATA
            except RemoteProtocolError as exc:
                self.close(exc.stream_condition, exc.text)
        return self._events.pop(0)

    def data_to_send(self) -> bytes:
        data = b"".join(self._out)
        self._out.clear()
        return data
