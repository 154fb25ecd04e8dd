"""`imactor status` against the real server: the numbers, the socket's mode, both output formats,
and a server that is gone."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.integration.conftest import PASSWORD
from tests.support.raw import RawClient
from tests.support.server import ServerProcess, imactor_cli, running_server
from tests.support.timeouts import TIMEOUT

MESSAGES = 5


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A server of the test's own: it counts every session and user actor on it."""
    with running_server(tmp_path, users=[("alice", PASSWORD), ("bob", PASSWORD)]) as process:
        yield process


@pytest.fixture(scope="module")
def idle_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server no client ever connects to: its status socket is all its tests use, so they
    share it (a server start is seconds of CPU)."""
    with running_server(tmp_path_factory.mktemp("idle")) as process:
        yield process


def parent_pid(pid: int) -> int:
    """The parent of `pid`, from /proc (the field after the parenthesised command name)."""
    stat_line = Path(f"/proc/{pid}/stat").read_text()
    return int(stat_line.rsplit(")", 1)[1].split()[1])


async def imactor_status(config: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    command = [sys.executable, "-m", "imactor", "status", *args, "--config", str(config)]
    return await trio.run_process(command, capture_stdout=True, capture_stderr=True, check=False)


async def status_json(server: ServerProcess) -> dict[str, Any]:
    result = await imactor_status(server.config_path, "--json")
    assert result.returncode == 0, result.stderr.decode()
    document: dict[str, Any] = json.loads(result.stdout)
    return document


async def test_status_counts_sessions_users_and_stanzas(fresh_server: ServerProcess) -> None:
    with trio.fail_after(TIMEOUT):
        alice = await RawClient.connect(fresh_server.c2s_port)
        bob = await RawClient.connect(fresh_server.c2s_port)
        await alice.login("alice", PASSWORD)
        bob_jid = await bob.login("bob", PASSWORD)
        for number in range(MESSAGES):
            await alice.send(f"<message to='{bob_jid}' id='m{number}' type='chat'><body>hi</body></message>")
        waiting = {f"m{number}" for number in range(MESSAGES)}
        while waiting:
            got = await bob.next_element(lambda e: e.get("id") in waiting)
            waiting.discard(got.get("id"))

        document = await status_json(fresh_server)
        node, (worker,), totals = document["node"], document["workers"], document["totals"]
        supervisor = document["supervisor"]
        assert node["domain"] == "localhost"
        assert node["pid"] == supervisor["pid"] == fresh_server.proc.pid
        assert supervisor["title"] == "imactor-supervisor"
        assert supervisor["rss_bytes"] > 0
        assert supervisor["membership"] == {"epoch": 1, "live_workers": [0]}
        # The worker is a process of its own, a child of the supervisor.
        assert worker["pid"] != fresh_server.proc.pid
        assert parent_pid(worker["pid"]) == fresh_server.proc.pid
        assert worker["title"] == "imactor-worker[0]"
        assert worker["index"] == 0
        assert worker["state"] == "running"
        assert worker["restarts"] == 0
        assert worker["rss_bytes"] > 0
        assert worker["uptime"] >= 0
        assert worker["sessions"] == {"count": 2, "by_state": {"established": 2}}
        assert worker["users"] == 2
        assert worker["rooms"] == 0
        assert worker["mailboxes"]["max"] >= 0
        assert worker["stanzas"]["in_total"] >= MESSAGES
        assert worker["stanzas"]["out_total"] >= MESSAGES
        assert worker["router"]["routed_total"] >= MESSAGES
        assert worker["router"]["bounced_total"] == 0
        supervisors = {record["name"]: record for record in worker["supervisors"]}
        assert set(supervisors) == {"worker", "users", "sessions"}
        children = supervisors["worker"]["children"]
        assert [child["id"] for child in children][-3:] == ["status", "archive-journal", "last-activity"]
        assert {child["state"] for child in children} == {"running"}
        assert supervisors["users"]["active"] == 2
        assert supervisors["sessions"]["active"] == 2
        assert (totals["sessions"], totals["users"], totals["workers"]) == (2, 2, 1)
        assert totals["rss_bytes"] == worker["rss_bytes"] + supervisor["rss_bytes"]

        # The per-second rates come from samples taken every second: poll until they show.
        while True:
            stanzas = (await status_json(fresh_server))["totals"]["stanzas"]
            if stanzas["in_per_second"] > 0 and stanzas["out_per_second"] > 0:
                break
            await trio.sleep(0.2)

        # The human format: the node line, the supervisor, its worker, the totals.
        result = await imactor_status(fresh_server.config_path)
        assert result.returncode == 0, result.stderr.decode()
        text = result.stdout.decode()
        supervisor_line = text.splitlines()[1]
        assert supervisor_line.startswith(f"└── imactor-supervisor  pid {fresh_server.proc.pid}  rss ")
        assert supervisor_line.endswith("membership epoch 1: live 0")
        worker_line = next(line for line in text.splitlines() if "worker 0" in line)
        assert worker_line.startswith(f"    └── worker 0  running  pid {worker['pid']}  up ")
        assert "restarts 0" in worker_line
        assert "sessions 2  users 2" in worker_line
        assert text.startswith("node localhost  imactor ")
        assert "sessions 2 (established 2)" in text

        await alice.aclose()
        await bob.aclose()


def test_the_socket_is_private(idle_server: ServerProcess) -> None:
    mode = os.stat(idle_server.data_dir / "imactor.sock").st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o600


async def test_status_survives_bad_clients(idle_server: ServerProcess) -> None:
    path = str(idle_server.data_dir / "imactor.sock")
    with trio.fail_after(TIMEOUT):
        async with await trio.open_unix_socket(path) as stream:
            await stream.send_all(b"shutdown\n")
            answer = b""
            while chunk := await stream.receive_some(4096):
                answer += chunk
        assert "unknown request" in json.loads(answer)["error"]
        silent = await trio.open_unix_socket(path)  # stays silent: must not block the others
        assert (await status_json(idle_server))["totals"]["sessions"] == 0
        await silent.aclose()


def test_status_of_a_stopped_server(tmp_path: Path) -> None:
    with running_server(tmp_path) as process:
        assert imactor_cli(process.config_path, "status", timeout=TIMEOUT).returncode == 0
        assert process.stop() == 0
        path = process.data_dir / "imactor.sock"
        assert not path.exists()  # removed at shutdown
        result = imactor_cli(process.config_path, "status", timeout=TIMEOUT)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        f"imactor: error: cannot reach {path}: No such file or directory — is the server running?\n"
    )


def test_status_of_a_killed_server(tmp_path: Path) -> None:
    with running_server(tmp_path) as process:
        process.proc.kill()  # SIGKILL: the socket file stays behind, and nothing answers on it
        process.proc.wait(TIMEOUT)
        path = process.data_dir / "imactor.sock"
        assert path.exists()
        result = imactor_cli(process.config_path, "status", "--json", timeout=TIMEOUT)
    assert result.returncode == 1
    assert result.stdout == ""
    assert (
        result.stderr == f"imactor: error: cannot reach {path}: Connection refused — is the server running?\n"
    )
