"""The status socket server on a real unix socket, fed by a fake worker. Deterministic where it waits
(autojump clock); the blocking CLI client runs in a thread under the real clock."""

from __future__ import annotations

import contextlib
import enum
import errno
import json
import logging
import os
import socket
import stat
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from imactor import humanize
from imactor.node.status import (
    MAX_CLIENTS,
    REQUEST_TIMEOUT,
    SAMPLE_INTERVAL,
    RateMeter,
    StatusServer,
    StatusUnavailable,
    WorkerStatus,
    empty_worker_entry,
    fetch_status,
    format_status,
    plain,
    request_status,
    rss_bytes,
    sum_workers,
)

TIMEOUT = 10


class Mode(enum.Enum):
    FAST = "fast"


@dataclass(frozen=True, slots=True)
class FakeRecord:
    name: str
    mode: Mode
    period: float
    children: tuple[tuple[str, int], ...]


class FakeWorker:
    """A `StatusSource` whose counters the test moves."""

    def __init__(self) -> None:
        self.stanzas_in = 0
        self.stanzas_out = 0
        self.fail: Exception | None = None

    def stanza_totals(self) -> tuple[int, int]:
        return self.stanzas_in, self.stanzas_out

    def worker_status(self) -> WorkerStatus:
        if self.fail is not None:
            raise self.fail
        return WorkerStatus(
            index=0,
            pid=os.getpid(),
            started_at=1000.0,
            restarts=1,
            state="running",
            sessions_by_state={"established": 2, "wait-for-sasl": 1},
            users=2,
            rooms=0,
            mailbox_depth_max=3,
            mailbox_depth_total=4,
            stanzas_in_total=self.stanzas_in,
            stanzas_out_total=self.stanzas_out,
            supervisors=(FakeRecord("worker", Mode.FAST, float("inf"), (("c2s", 0),)),),
            records={"router": {"routed_total": 7, "bounced_total": 1}, "users": "never shadows a field"},
        )


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "imactor.sock"


@asynccontextmanager
async def serving(server: StatusServer) -> AsyncIterator[StatusServer]:
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        yield server
        nursery.cancel_scope.cancel()


async def ask(path: Path, request: bytes = b"status\n") -> bytes:
    """Send `request`, read until the server closes."""
    async with await trio.open_unix_socket(str(path)) as stream:
        if request:
            await stream.send_all(request)
        data = b""
        while chunk := await stream.receive_some(65536):
            data += chunk
        return data


def new_server(path: Path, worker: FakeWorker | None = None) -> StatusServer:
    return StatusServer(path, [worker or FakeWorker()], domain="example.org", started_at=900.0)


async def test_one_request_one_document(path: Path, autojump_clock: trio.testing.MockClock) -> None:
    worker = FakeWorker()
    worker.stanzas_in, worker.stanzas_out = 5, 6
    async with serving(new_server(path, worker)):
        answer = await ask(path)
    assert answer.endswith(b"\n")
    document = json.loads(answer)
    assert document["node"]["domain"] == "example.org"
    assert document["node"]["pid"] == os.getpid()
    assert document["node"]["started_at"] == 900.0
    assert document["node"]["uptime"] > 0
    (entry,) = document["workers"]
    assert entry["pid"] == os.getpid()
    assert entry["restarts"] == 1
    assert entry["rss_bytes"] > 0
    assert entry["sessions"] == {"count": 3, "by_state": {"established": 2, "wait-for-sasl": 1}}
    assert entry["users"] == 2
    assert entry["mailboxes"] == {"max": 3, "total": 4}
    assert entry["stanzas"]["in_total"] == 5
    assert entry["stanzas"]["out_total"] == 6
    assert entry["router"] == {"routed_total": 7, "bounced_total": 1}
    assert entry["users"] == 2  # a record named like a field does not replace it
    # Records become plain JSON: enums by value, tuples as lists, no Infinity.
    assert entry["supervisors"] == [
        {"name": "worker", "mode": "fast", "period": None, "children": [["c2s", 0]]}
    ]
    totals = document["totals"]
    assert totals["workers"] == 1
    assert totals["sessions"] == 3
    assert totals["users"] == 2
    assert totals["rss_bytes"] == entry["rss_bytes"]
    assert totals["stanzas"]["in_total"] == 5


async def test_socket_is_private_and_removed_at_shutdown(
    path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with serving(new_server(path)):
        mode = os.stat(path).st_mode
        assert stat.S_ISSOCK(mode)
        assert stat.S_IMODE(mode) == 0o600
    assert not await trio.Path(path).exists()


async def test_rates_come_from_the_samples(path: Path, autojump_clock: trio.testing.MockClock) -> None:
    worker = FakeWorker()
    async with serving(new_server(path, worker)):
        assert json.loads(await ask(path))["workers"][0]["stanzas"]["in_per_second"] == 0
        for _ in range(20):  # 10 stanzas in and 5 out per second, for 20 s
            await trio.sleep(SAMPLE_INTERVAL)
            worker.stanzas_in += 10
            worker.stanzas_out += 5
        await trio.sleep(SAMPLE_INTERVAL)
        stanzas = json.loads(await ask(path))["totals"]["stanzas"]
    assert stanzas["in_per_second"] == pytest.approx(10, rel=0.15)
    assert stanzas["out_per_second"] == pytest.approx(5, rel=0.15)


def test_rate_meter() -> None:
    meter = RateMeter(window=4)
    assert meter.rates() == (0.0, 0.0)
    meter.add(0.0, 0, 0)
    assert meter.rates() == (0.0, 0.0)
    for second in range(1, 10):
        meter.add(float(second), second * 4, second * 2)
    assert meter.rates() == (4.0, 2.0)
    meter.add(10.0, 3, 3)  # the counters restarted: the old samples mean nothing now
    assert meter.rates() == (0.0, 0.0)
    meter.add(12.0, 7, 3)
    assert meter.rates() == (2.0, 0.0)


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        (b"bogus\n", "unknown request 'bogus'"),
        (b"STATUS\n", "unknown request 'STATUS'"),
        (b"x" * 60 + b"\n", "unknown request 'xxxx"),
        (b"\xff\xfe\n", "unknown request"),
    ],
)
async def test_a_bad_request_gets_an_error_and_the_server_lives_on(
    path: Path, autojump_clock: trio.testing.MockClock, request_: bytes, expected: str
) -> None:
    async with serving(new_server(path)):
        answer = json.loads(await ask(path, request_))
        assert expected in answer["error"]
        assert "workers" in json.loads(await ask(path))


async def test_a_request_without_newline_counts_at_eof(
    path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with serving(new_server(path)), await trio.open_unix_socket(str(path)) as stream:
        await stream.send_all(b"status")
        await stream.send_eof()
        data = b""
        while chunk := await stream.receive_some(65536):
            data += chunk
    assert "workers" in json.loads(data)


async def test_a_silent_client_is_closed_after_the_timeout(
    path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with serving(new_server(path)):
        started = trio.current_time()
        assert await ask(path, b"") == b""
        assert trio.current_time() - started == pytest.approx(REQUEST_TIMEOUT, abs=0.5)
        assert "workers" in json.loads(await ask(path))


async def test_an_endless_line_is_cut_off(path: Path, autojump_clock: trio.testing.MockClock) -> None:
    async with serving(new_server(path)):
        with contextlib.suppress(trio.BrokenResourceError):  # closed with unread bytes: a reset
            await ask(path, b"x" * 10_000)
        assert "workers" in json.loads(await ask(path))


async def test_a_client_that_sends_half_a_line_is_closed(
    path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with serving(new_server(path)), await trio.open_unix_socket(str(path)) as stream:
        await stream.send_all(b"sta")
        assert await stream.receive_some(100) == b""


async def test_extra_clients_are_turned_away(path: Path, autojump_clock: trio.testing.MockClock) -> None:
    async with serving(new_server(path)):
        silent = [await trio.open_unix_socket(str(path)) for _ in range(MAX_CLIENTS)]
        await trio.testing.wait_all_tasks_blocked()
        started = trio.current_time()
        assert await ask(path, b"") == b""  # closed at once, not after the timeout
        assert trio.current_time() == started
        for stream in silent:
            await stream.aclose()
        await trio.testing.wait_all_tasks_blocked()
        assert "workers" in json.loads(await ask(path))


async def test_a_failing_snapshot_is_an_error_answer(
    path: Path, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="imactor.status")
    worker = FakeWorker()
    async with serving(new_server(path, worker)):
        worker.fail = RuntimeError("a bug")
        assert json.loads(await ask(path)) == {"error": "internal error (see the server log)"}
        worker.fail = None
        assert "workers" in json.loads(await ask(path))
    assert "status snapshot failed" in caplog.text


async def test_a_stale_socket_file_is_replaced(path: Path, autojump_clock: trio.testing.MockClock) -> None:
    path.parent.mkdir()
    with socket.socket(socket.AF_UNIX) as left_behind:  # bound, never listening: a crashed server's
        left_behind.bind(str(path))
    async with serving(new_server(path)):
        assert "workers" in json.loads(await ask(path))


async def test_a_live_server_is_not_replaced(path: Path, autojump_clock: trio.testing.MockClock) -> None:
    async with serving(new_server(path)):
        second = new_server(path)
        with pytest.raises(OSError, match="another server answers") as caught:
            await second.bind()
        assert caught.value.errno == errno.EADDRINUSE
        assert "workers" in json.loads(await ask(path))


async def test_a_file_that_is_not_a_socket_is_left_alone(path: Path) -> None:
    path.parent.mkdir()
    await trio.Path(path).write_text("precious")
    with pytest.raises(OSError, match="not a socket"):
        await new_server(path).bind()
    assert await trio.Path(path).read_text() == "precious"


async def test_the_file_of_a_successor_is_not_removed(
    path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    first = new_server(path)
    await first.bind()
    first_listener = first._listener
    assert first_listener is not None
    first_listener.socket.close()  # as if it hung: the successor takes over the stale path
    second = new_server(path)
    async with serving(second):
        first.close()
        assert await trio.Path(path).exists()
        assert "workers" in json.loads(await ask(path))


async def test_a_restarted_child_binds_again(path: Path, autojump_clock: trio.testing.MockClock) -> None:
    server = new_server(path)
    async with serving(server):
        pass
    assert not await trio.Path(path).exists()
    async with serving(server):
        assert "workers" in json.loads(await ask(path))


# ---- the client (blocking, as the CLI uses it) -------------------------------------------------


async def in_thread(fn: Callable[[], Any]) -> Any:
    return await trio.to_thread.run_sync(fn)


async def test_request_status_reads_the_document(path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with serving(new_server(path)):
            document = await in_thread(lambda: request_status(path))
    assert document["workers"][0]["users"] == 2


async def test_request_status_works_on_a_deep_path(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60) / "imactor.sock"
    assert len(os.fsencode(deep)) > 108
    with trio.fail_after(TIMEOUT):
        async with serving(new_server(deep)):
            assert stat.S_IMODE(os.stat(deep).st_mode) == 0o600
            document = await in_thread(lambda: request_status(deep))
            assert document["node"]["domain"] == "example.org"
    assert not await trio.Path(deep).exists()


async def test_fetch_status_reads_the_document_from_trio(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60) / "imactor.sock"
    with trio.fail_after(TIMEOUT):
        async with serving(new_server(deep)):
            document = await fetch_status(deep)
        assert document["workers"][0]["users"] == 2
        with pytest.raises(StatusUnavailable, match="cannot reach"):
            await fetch_status(deep)


async def test_fetch_status_gives_up_on_a_silent_server(path: Path) -> None:
    path.parent.mkdir(parents=True)
    with trio.fail_after(TIMEOUT), socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as silent:
        silent.bind(str(path))
        silent.listen(1)  # accepts (in the backlog) and never answers: a stopped process
        with pytest.raises(StatusUnavailable, match=r"no answer within 0\.2 s"):
            await fetch_status(path, timeout=0.2)


async def test_a_document_provider_answers_instead_of_the_sources(path: Path) -> None:
    async def document() -> dict[str, Any]:
        await trio.lowlevel.checkpoint()
        return {"node": {"merged": True}}

    server = StatusServer(path, [], domain="example.org", document=document)
    with trio.fail_after(TIMEOUT):
        async with serving(server):
            assert json.loads(await ask(path)) == {"node": {"merged": True}}


def test_request_status_without_a_server(path: Path) -> None:
    with pytest.raises(StatusUnavailable) as caught:
        request_status(path)
    assert str(caught.value) == (f"cannot reach {path}: No such file or directory — is the server running?")


def test_request_status_on_a_stale_socket(path: Path) -> None:
    path.parent.mkdir()
    with socket.socket(socket.AF_UNIX) as left_behind:
        left_behind.bind(str(path))
    with pytest.raises(StatusUnavailable, match=r"Connection refused — is the server running\?"):
        request_status(path)


async def test_request_status_reports_an_error_answer(path: Path) -> None:
    worker = FakeWorker()
    worker.fail = RuntimeError("a bug")
    with trio.fail_after(TIMEOUT):
        async with serving(new_server(path, worker)):
            with pytest.raises(StatusUnavailable, match="the server answered: internal error"):
                await in_thread(lambda: request_status(path))


# ---- presentation ------------------------------------------------------------------------------


def test_format_status_draws_the_tree() -> None:
    server = new_server(Path("unused"))
    text = format_status(server.snapshot())
    lines = text.splitlines()
    assert lines[0].startswith("node example.org  imactor ")
    assert lines[1].startswith(f"└── worker 0  running  pid {os.getpid()}  up ")
    assert "restarts 1" in lines[1]
    assert "sessions 3  users 2  rooms 0" in lines[1]
    assert "sessions 3 (established 2, wait-for-sasl 1)" in text
    assert "routed 7  bounced 1" in text
    assert "mailboxes: largest 3, queued 4" in text


def test_format_status_draws_the_supervisor_above_its_workers() -> None:
    document = new_server(Path("unused")).snapshot()
    down = empty_worker_entry(1, None, "restarting")
    document["workers"].append(down)
    document["supervisor"] = {
        "title": "imactor-supervisor",
        "pid": 4242,
        "rss_bytes": 3 * 2**20,
        "restarts_total": 2,
        "membership": {"epoch": 3, "live_workers": [0]},
    }
    document["totals"] = sum_workers(document["workers"])
    lines = format_status(document).splitlines()
    assert lines[1] == "└── imactor-supervisor  pid 4242  rss 3.0 MiB  restarts 2  membership epoch 3: live 0"
    assert lines[2].startswith(f"    ├── worker 0  running  pid {os.getpid()}  up ")
    assert lines[3].startswith("    └── worker 1  restarting  pid -  up 0s  restarts 0  rss 0 B  sessions 0")
    assert lines[4].startswith("totals: 2 worker(s)  sessions 3")


def test_format_status_names_the_connected_components_and_their_workers() -> None:
    document = new_server(Path("unused")).snapshot()
    assert "components:" not in format_status(document)  # none configured
    document["workers"][0]["components"] = {"here": [], "elsewhere": []}
    assert "components: none connected" in format_status(document)
    document["workers"][0]["components"] = {"here": ["irc.example", "bot.example"], "elsewhere": []}
    assert "components: bot.example (worker 0), irc.example (worker 0)" in format_status(document)


def test_format_status_lists_the_nodes_of_a_cluster() -> None:
    document = new_server(Path("unused")).snapshot()
    nodes = [
        {"id": 1, "name": "im1", "live_workers": [0, 1], "sessions": 40, "lease_age": 0.25},
        {"id": 2, "name": "im2", "live_workers": [], "sessions": 0, "lease_age": 1.5},
    ]
    document["supervisor"] = {
        "title": "imactor-supervisor", "pid": 4242, "rss_bytes": 0, "restarts_total": 0,
        "membership": {"epoch": 9, "live_workers": [0, 1], "node": "im1", "node_id": 1, "nodes": nodes,
                       "renewal_failures": 2},
    }  # fmt: skip
    text = format_status(document)
    assert "cluster: node im1 (id 1), 2 live node(s), renewal failures 2" in text
    assert "  node im1 (id 1)  workers 0,1  sessions 40  lease age 0.2s" in text
    assert "  node im2 (id 2)  workers -  sessions 0  lease age 1.5s" in text


def test_plain_and_rss() -> None:
    assert plain({"a": (1, Mode.FAST), 2: float("nan")}) == {"a": [1, "fast"], "2": None}
    assert rss_bytes(os.getpid()) > 0
    assert rss_bytes(2**22 + 12345) == 0  # no such process
    assert humanize.size(5) == "5 B"
    assert humanize.size(50 * 2**20) == "50.0 MiB"
    assert humanize.duration(3725) == "1h 2m"


def test_format_status_shows_the_file_transfer_proxy() -> None:
    document = new_server(Path("unused")).snapshot()
    assert "file transfer proxy" not in format_status(document)
    document["workers"][0]["proxy65"] = {"pending": 2, "active": 1, "streams_total": 5,
                                         "bytes_total": 3 * 2**20, "refused_total": 4}  # fmt: skip
    text = format_status(document)
    line = "file transfer proxy (worker 0): pending 2  active 1  streams 5  relayed 3.0 MiB  refused 4"
    assert line in text
