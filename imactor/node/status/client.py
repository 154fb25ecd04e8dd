"""Clients of the status socket: the CLI (blocking) and the node supervisor (Trio).

Errors are `StatusUnavailable` (no document: the message says why), or `ServerNotRunning` when
nothing listens on the socket.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import trio

from imactor.node.status.wire import COMMAND_TIMEOUT, MAX_COMMAND, REQUEST, addressable


class StatusUnavailable(Exception):
    """`request_status` got no document: no server, or a broken answer. The message says which."""


class ServerNotRunning(StatusUnavailable):
    """Nothing listens on the socket: the server is not running (or uses another path)."""


def request_status(path: Path, timeout: float = 10.0) -> dict[str, Any]:
    """Ask the server listening at `path` for its status document (blocking; for the CLI).

    Raises:
        StatusUnavailable: Nothing answers at `path`, or the answer is not a status document.
    """
    return _exchange(path, REQUEST, timeout)


def _exchange(path: Path, line: bytes, timeout: float) -> dict[str, Any]:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            try:
                with addressable(path) as address:
                    sock.connect(address)
            except OSError as exc:
                reason = exc.strerror or str(exc) or type(exc).__name__
                raise ServerNotRunning(f"cannot reach {path}: {reason} — is the server running?") from None
            sock.sendall(line + b"\n")
            answer = b"".join(iter(lambda: sock.recv(65536), b""))
    except TimeoutError:
        raise StatusUnavailable(f"{path}: no answer within {timeout:g} s") from None
    except OSError as exc:
        raise StatusUnavailable(f"{path}: {exc.strerror or exc}") from None
    return _parse_answer(path, answer)


def request_command(path: Path, command: Mapping[str, Any], timeout: float = 15.0) -> dict[str, Any]:
    """Send one administrative command (see the module doc) and return the answer (blocking).

    Raises:
        StatusUnavailable: Nothing answers at `path`, or the answer is not a JSON object.
    """
    line = json.dumps(command, separators=(",", ":")).encode()
    if len(line) > MAX_COMMAND:
        raise ValueError("command too long")
    return _exchange(path, line, timeout)


async def fetch_command(
    path: Path, command: Mapping[str, Any], timeout: float = COMMAND_TIMEOUT + 2
) -> dict[str, Any]:
    """`request_command` for a Trio program (the node supervisor forwarding to a worker)."""
    return await trio.to_thread.run_sync(request_command, path, command, timeout)


async def fetch_status(path: Path, timeout: float = 2.0) -> dict[str, Any]:
    """`request_status` for a Trio program (the node supervisor asking its workers).

    Raises:
        StatusUnavailable: Nothing answers at `path` within `timeout`, or the answer is not a
            status document.
    """
    with trio.move_on_after(timeout):
        try:
            with addressable(path) as address:
                stream = await trio.open_unix_socket(address)
        except OSError as exc:
            raise StatusUnavailable(f"cannot reach {path}: {exc.strerror or exc}") from None
        async with stream:
            try:
                await stream.send_all(REQUEST + b"\n")
                chunks = []
                while chunk := await stream.receive_some(65536):
                    chunks.append(chunk)
            except (trio.BrokenResourceError, OSError) as exc:
                raise StatusUnavailable(f"{path}: {exc}") from None
        return _parse_answer(path, b"".join(chunks))
    raise StatusUnavailable(f"{path}: no answer within {timeout:g} s")


def _parse_answer(path: Path, answer: bytes) -> dict[str, Any]:
    try:
        document = json.loads(answer)
    except ValueError:
        raise StatusUnavailable(f"{path}: the answer is not JSON ({len(answer)} bytes)") from None
    if not isinstance(document, dict):
        raise StatusUnavailable(f"{path}: the answer is not a JSON object")
    if "error" in document:
        raise StatusUnavailable(f"{path}: the server answered: {document['error']}")
    return document
