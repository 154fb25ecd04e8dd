"""Smoke runs of the load generator (bench/) against imactor: a few seconds, nothing may be lost.

Each test runs `python -m bench.run` as a subprocess, which starts imactor itself (temp data dir,
port 0, accounts added in bulk) and stops it and its generator processes when it ends. These are
not benchmarks: the figures are not checked, only that everything sent arrived and every login
succeeded.
"""

from __future__ import annotations

import importlib.util
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 60.0


def run_bench(tmp_path: Path, *args: str) -> dict[str, Any]:
    report = tmp_path / "report.json"
    command = [sys.executable, "-m", "bench.run", *args, "--json", str(report)]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _, stderr = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # bench.run stops its server and generator processes
        try:
            proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
        raise
    assert proc.returncode == 0, stderr.decode(errors="replace")
    report_data: dict[str, Any] = json.loads(report.read_text())
    return report_data


def test_chat_smoke_loses_nothing(tmp_path: Path) -> None:
    report = run_bench(
        tmp_path, "--scenario", "chat", "--processes", "2", "--pairs", "4",
        "--rates", "40", "--duration", "3", "--drain", "10",
    )  # fmt: skip
    assert {"scenario", "server", "transport", "processes", "machine", "result"} <= report.keys()
    assert report["scenario"] == "chat"
    assert report["processes"] == 2
    assert report["server_measured"] is True
    result = report["result"]
    assert {"pairs", "steps", "best", "p99_limit_ms"} <= result.keys()
    assert result["pairs"] == 4
    [step] = result["steps"]
    expected = {
        "target_rate",
        "achieved_rate",
        "sent",
        "received",
        "lost",
        "p50_ms",
        "p99_ms",
        "cpu",
        "passed",
    }
    assert expected <= step.keys()
    assert step["sent"] > 0
    assert step["received"] == step["sent"], step
    assert step["lost"] == 0
    assert step["lossy_pairs"] == []
    assert step["duplicates"] == 0
    assert step["cpu"]["generator"]["processes"] == 2
    assert step["cpu"]["server"]["cpu_seconds"] > 0


def test_login_smoke_all_succeed(tmp_path: Path) -> None:
    report = run_bench(
        tmp_path, "--scenario", "login", "--processes", "2", "--concurrency", "2", "--duration", "2",
    )  # fmt: skip
    result = report["result"]
    assert {"logins", "failed", "logins_per_second", "p50_ms", "p99_ms", "cpu"} <= result.keys()
    assert result["failed"] == 0, result["errors"]
    assert result["logins"] >= 24
    assert result["cpu"]["server"]["cpu_seconds"] > 0


def test_compare_workers_smoke(tmp_path: Path) -> None:
    report = run_bench(
        tmp_path, "--scenario", "chat", "--processes", "1", "--pairs", "2", "--rates", "20",
        "--duration", "1", "--drain", "5", "--compare-workers", "1,2", "--repeat", "1",
    )  # fmt: skip
    assert report["compare_workers"] == [1, 2]
    assert report["figure"] == "best passing rate (msg/s)"
    one, two = report["summary"]
    assert (one["workers"], two["workers"]) == (1, 2)
    assert one["ratio"] in (1.0, None)  # None: no step passed (a busy machine's p99), not checked here
    for entry in (one, two):
        [run] = report["runs"][str(entry["workers"])]
        [step] = run["result"]["steps"]
        assert step["sent"] > 0
        assert step["lost"] == 0, step


def test_compare_servers_smoke(tmp_path: Path) -> None:
    """The side-by-side mode with imactor alone (CI has no Prosody or ejabberd): one summary row
    whose ratio to itself is 1, the generator's CPU beside the server's, and the table on stderr."""
    report = run_bench(
        tmp_path, "--scenario", "login", "--processes", "1", "--concurrency", "2", "--duration", "1",
        "--compare-servers", "imactor", "--repeat", "1",
    )  # fmt: skip
    assert report["compare_servers"] == ["imactor"]
    assert report["figure"] == "logins/s"
    [entry] = report["summary"]
    assert entry["server"] == "imactor"
    [figure] = entry["figures"]
    assert figure is not None
    assert figure > 0
    assert entry["median"] == figure
    assert entry["imactor_ratio"] == 1.0
    assert entry["server_cpu_cores"][0] > 0
    assert entry["generator_cpu_cores"][0] > 0
    [run] = report["runs"]["imactor"]
    assert run["result"]["failed"] == 0, run["result"]["errors"]


def _imactor_has_muc() -> bool:
    # imactor's conference.<domain> service (imactor/server/muc_service.py) landed beside this
    # test; without it the room cannot exist and this smoke run has nothing to measure.
    return importlib.util.find_spec("imactor.server.muc_service") is not None


@pytest.mark.skipif(not _imactor_has_muc(), reason="imactor has no MUC service yet")
@pytest.mark.parametrize("transport", ["starttls", "tcp"])
def test_muc_smoke_loses_nothing(tmp_path: Path, transport: str) -> None:
    """Both of the occupants' readers run: the 4 that do not send are read by the epoll thread
    (TLS decrypted there, or plain), the 2 senders by trio tasks."""
    report = run_bench(
        tmp_path, "--scenario", "muc", "--processes", "2", "--occupants", "6", "--senders", "2",
        "--rates", "10", "--duration", "2", "--drain", "10", "--warmup", "1", "--transport", transport,
    )  # fmt: skip
    assert report["transport"] == transport
    result = report["result"]
    warmup = result["warmup"]  # not judged, but nothing may be lost there either
    assert warmup["sent"] > 0
    assert warmup["received"] == warmup["expected_deliveries"] == warmup["sent"] * 6
    assert result["room"] == "bench-room@conference.localhost"
    assert (result["occupants"], result["senders"]) == (6, 2)
    [step] = result["steps"]
    assert step["sent"] > 0
    assert step["expected_deliveries"] == step["sent"] * 6
    assert step["received"] == step["expected_deliveries"], step
    assert step["lost"] == 0
    assert step["short_occupants"] == []
    assert step["duplicates"] == 0
    assert step["message_errors"] == 0, step["errors"]
    assert step["cpu"]["generator"]["processes"] == 2
