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

import pytest

from tests.support.timeouts import WORKERS_TIMEOUT as TIMEOUT

ROOT = Path(__file__).resolve().parents[2]


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


@pytest.mark.parametrize("io", ["epoll", "trio"])
def test_chat_smoke_loses_nothing(tmp_path: Path, io: str) -> None:
    """The hot shape, with both ways of sending and reading (one epoll loop per generator
    process, or a trio task per connection and per sender)."""
    report = run_bench(
        tmp_path, "--scenario", "chat", "--processes", "2", "--pairs", "4",
        "--rates", "40", "--duration", "3", "--drain", "10", "--io", io,
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
    assert set(entry["extra"]) == {"p50 ms", "p99 ms", "failed", "server ms/login"}
    assert entry["extra"]["failed"] == 0
    [run] = report["runs"]["imactor"]
    assert run["result"]["failed"] == 0, run["result"]["errors"]


@pytest.mark.parametrize("transport", ["starttls", "tcp"])
def test_muc_smoke_loses_nothing(tmp_path: Path, transport: str) -> None:
    """Every occupant is read by the generator's epoll loop (TLS decrypted there, or plain),
    which also sends the 2 senders' messages on its schedule."""
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


# ---- the company shapes, small: many accounts provisioned, a spread subset used, SCRAM-SHA-1,
# imactor on its default configuration


def test_company_chat_smoke_uses_spread_accounts_and_loses_nothing(tmp_path: Path) -> None:
    report = run_bench(
        tmp_path, "--shape", "company", "--scenario", "chat", "--accounts", "40", "--pairs", "10",
        "--rates", "20,40", "--duration", "2", "--warmup", "1", "--drain", "10",
    )  # fmt: skip
    assert (report["shape"], report["server_config"], report["sasl"]) == ("company", "default", "SCRAM-SHA-1")
    assert (report["accounts"], report["users"]) == (40, 20)
    # every other account of bench0..bench39, not bench0..bench19
    assert report["user_sample"] == ["bench0", "bench2", "bench4", "bench38"]
    result = report["result"]
    assert result["pairs"] == 10
    steps = [(result["warmup"], 1), *((step, 2) for step in result["steps"])]
    for step, seconds in steps:
        # one schedule per generator process: exactly rate × duration messages in all
        assert step["sent"] == step["target_rate"] * seconds, step
        assert step["received"] == step["sent"], step
        assert step["lost"] == 0
        assert step["users"] == 20
        # A step of 20 messages may fall within one clock tick of CPU time (10 ms): zero is a
        # measurement there, a negative figure never is.
        assert step["server_cpu_us_per_message"] >= 0
        assert step["generator_cpu_us_per_message"] >= 0
    # Over the whole run both sides are seen working.
    assert sum(step["cpu"]["server"]["cpu_seconds"] for step, _ in steps) > 0
    assert sum(step["cpu"]["generator"]["cpu_seconds"] for step, _ in steps) > 0


@pytest.mark.parametrize("transport", ["starttls", "tcp"])
def test_company_logins_over_distinct_accounts_all_succeed(tmp_path: Path, transport: str) -> None:
    report = run_bench(
        tmp_path, "--shape", "company", "--scenario", "login", "--accounts", "40", "--logins", "20",
        "--login-concurrency", "3", "--transport", transport,
    )  # fmt: skip
    result = report["result"]
    assert result["distinct"] is True
    assert result["failed"] == 0, result["errors"]
    assert result["logins"] == result["attempted"] == 20
    assert result["concurrency"] == 3
    assert result["server_cpu_ms_per_login"] > 0
    assert result["cpu"]["generator"]["processes"] == 2


def test_logins_with_sasl2_and_fast_tokens_against_scram(tmp_path: Path) -> None:
    report = run_bench(
        tmp_path, "--shape", "company", "--scenario", "login", "--accounts", "20", "--logins", "20",
        "--login-concurrency", "4", "--login-methods", "scram,sasl2,fast",
    )  # fmt: skip
    result = report["result"]
    assert result["warmup_tokens"] == 20, result["warmup_errors"]
    assert list(result["methods"]) == ["scram", "sasl2", "fast"]
    for method, figures in result["methods"].items():
        assert figures["failed"] == 0, (method, figures["errors"])
        assert figures["logins"] == 20
        assert figures["server_cpu_ms_per_login"] > 0
    assert result["against"] == "scram"
    assert result["ratios"]["scram"] == {"logins_per_second": 1.0, "server_cpu_ms_per_login": 1.0}
    assert result["ratios"]["fast"]["server_cpu_ms_per_login"] > 0


def test_cpu_per_message_reports_both_phases_and_their_ratio(tmp_path: Path) -> None:
    report = run_bench(
        tmp_path, "--shape", "company", "--scenario", "cpu", "--accounts", "40", "--cpu-users", "20,4",
        "--cpu-user-rates", "0.5,10", "--duration", "2", "--warmup", "1", "--drain", "10",
    )  # fmt: skip
    result = report["result"]
    low, high = result["phases"]
    assert (low["users"], low["per_user_rate"], low["target_rate"]) == (20, 0.5, 10.0)
    assert (high["users"], high["per_user_rate"], high["target_rate"]) == (4, 10.0, 40.0)
    for phase in (low, high):
        assert phase["sent"] > 0
        assert phase["received"] == phase["sent"], phase
    assert result["server_cpu_us_per_message"] == [low["server_cpu_us_per_message"],
                                                   high["server_cpu_us_per_message"]]  # fmt: skip
    assert result["ratio_first_to_last"] == round(
        low["server_cpu_us_per_message"] / high["server_cpu_us_per_message"], 2
    )


def test_company_muc_every_occupant_sends_and_nothing_is_lost(tmp_path: Path) -> None:
    report = run_bench(
        tmp_path, "--shape", "company", "--scenario", "muc", "--accounts", "40", "--occupants", "6",
        "--rates", "12", "--duration", "2", "--warmup", "0", "--drain", "10",
    )  # fmt: skip
    result = report["result"]
    assert (result["occupants"], result["senders"]) == (6, 6)
    [step] = result["steps"]
    assert step["sent"] == 24  # 12 msg/s for 2 s, each occupant in turn
    assert step["received"] == step["expected_deliveries"] == 24 * 6, step
    assert step["short_occupants"] == []
    assert step["message_errors"] == 0, step["errors"]
    assert step["server_cpu_us_per_delivery"] > 0
