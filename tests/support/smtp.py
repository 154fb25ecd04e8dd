"""A real SMTP server for tests (aiosmtpd), on a loopback port the OS chooses (or a given one).

It runs aiosmtpd's protocol on an asyncio loop in a thread of its own (the tests run under
Trio) and keeps every mail it accepts; a test waits for the mail to an address with
`wait_for` (under a bound: an event, not a sleep).
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import socket
import ssl
import threading
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

import trio
from aiosmtpd.smtp import SMTP, Envelope, Session


@dataclass(frozen=True)
class Mail:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    message: EmailMessage
    data: bytes


class _Handler:
    def __init__(self, relay: SmtpRelay) -> None:
        self._relay = relay

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          options: list[str]) -> str:  # fmt: skip
        if address in self._relay.refused:
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        data = envelope.original_content or b""
        message = email.message_from_bytes(data, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self._relay.received(Mail(str(envelope.mail_from), tuple(envelope.rcpt_tos), message, data))
        return "250 OK"


class SmtpRelay:
    """Accepts every mail; `stop()` closes the port (a relay that is down). With `tls` (a server
    context): STARTTLS, required before a mail (or, `implicit`, TLS from the first byte)."""

    def __init__(self, port: int = 0, *, tls: ssl.SSLContext | None = None, implicit: bool = False) -> None:
        self._tls, self._implicit = tls, implicit
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", port))
        self.port: int = self._sock.getsockname()[1]
        self.mails: list[Mail] = []
        self.refused: set[str] = set()  #: recipients answered with 550
        self._changed = threading.Condition()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.AbstractServer | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="smtp-relay", daemon=True)

    def start(self) -> SmtpRelay:
        self._thread.start()
        handler = _Handler(self)

        def protocol() -> SMTP:
            if self._tls is None or self._implicit:
                return SMTP(handler)
            return SMTP(handler, tls_context=self._tls, require_starttls=True)

        async def serve() -> None:
            ssl_context = self._tls if self._implicit else None
            self._server = await self._loop.create_server(protocol, sock=self._sock, ssl=ssl_context)

        asyncio.run_coroutine_threadsafe(serve(), self._loop).result(10)
        return self

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
                await self._server.wait_closed()

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._sock.close()

    def __enter__(self) -> SmtpRelay:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def received(self, mail: Mail) -> None:
        with self._changed:
            self.mails.append(mail)
            self._changed.notify_all()

    def to(self, address: str) -> list[Mail]:
        with self._changed:
            return [m for m in self.mails if address in m.rcpt_tos]

    def _wait(self, address: str, count: int, timeout: float) -> list[Mail]:
        with self._changed:
            self._changed.wait_for(lambda: len(self.to_unlocked(address)) >= count, timeout)
            return self.to_unlocked(address)

    def to_unlocked(self, address: str) -> list[Mail]:
        return [m for m in self.mails if address in m.rcpt_tos]

    async def wait_for(self, address: str, timeout: float, count: int = 1) -> list[Mail]:
        """The mails to `address` once there are `count` of them, or after `timeout` seconds
        those there are (fewer: the caller's assertion says what was missing)."""
        return await trio.to_thread.run_sync(self._wait, address, count, timeout, abandon_on_cancel=True)


async def serve_dropping(attempts: trio.MemorySendChannel[int], port: int = 0, *,
                         task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:  # fmt: skip
    """A relay that is down behind its address: it takes each connection and closes it before
    any greeting (the client sees the server disconnect). Each connection is counted on
    `attempts`. Started with the port it listens on (`port`; 0: the OS chooses); cancel it to
    close the port."""
    listener = (await trio.open_tcp_listeners(port, host="127.0.0.1"))[0]
    assert isinstance(listener, trio.SocketListener)
    task_status.started(listener.socket.getsockname()[1])
    count = 0
    async with listener:
        while True:
            stream = await listener.accept()
            count += 1
            await stream.aclose()
            attempts.send_nowait(count)
