"""One HTTP connection's failure ends that connection only, and the shared listener outlives
its accept loop (a restarted listener child accepts on the same socket)."""

from __future__ import annotations

from typing import Any, cast

import trio
import trio.testing

from imactor.web import http_server


class Failing:
    def __init__(self, error: BaseException) -> None:
        self.error = error

    async def run(self) -> None:
        raise self.error


async def test_a_transport_gone_inside_a_group_or_a_bug_ends_only_the_connection() -> None:
    for error in (
        trio.ClosedResourceError(),
        ExceptionGroup("websocket", [trio.ClosedResourceError(), trio.BrokenResourceError()]),
        ValueError("a bug in one connection"),
    ):
        await http_server._run_guarded(cast(Any, Failing(error)), "127.0.0.1")


async def test_the_listener_stays_open_when_the_accept_loop_ends() -> None:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: http_server.serve_http(
            cast(Any, None), listener, tls=False, task_status=task_status))  # fmt: skip
        nursery.cancel_scope.cancel()
    assert listener.socket.fileno() != -1
    await listener.aclose()
