"""Smoke runs of the load generator (bench/) against imactor: a few seconds, nothing may be lost.

Each test runs `python -m bench.run` as a subprocess, which starts imactor itself (temp data dir,
port 0, accounts added in bulk) and stops it and its generator processes when it ends. These are
not benchmarks: the figures are not checked, only that everything sent arrived and every login
succeeded.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

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
