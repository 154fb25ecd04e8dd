"""The soak test (bench/soak.py) against the real server: a bounded run here, the long one on demand.

The bounded run (about a minute and a half, most of it the server's start, the warm-up and the
waits for vanished clients to be timed out) puts every kind of load on a two-worker node for
20 s, and passes when `bench.soak` judged the run clean: nothing acknowledged lost, descriptors
and memory of the workers back to their baseline, every login and room round good, no traceback.

    IMACTOR_SOAK_MINUTES=60 .venv/bin/pytest tests/bench/test_soak.py -s -k long
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
LONG_MINUTES = float(os.environ.get("IMACTOR_SOAK_MINUTES", "0"))


def run_soak(tmp_path: Path, *args: str, timeout: float) -> dict[str, Any]:
    report = tmp_path / "soak.json"
    command = [
        sys.executable,
        "-m",
        "bench.soak",
        *args,
        "--keep",
        str(tmp_path / "run"),
        "--json",
        str(report),
    ]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)  # the server is stopped by running_server's cleanup
        proc.communicate(timeout=30)
        raise
    assert report.exists(), stderr.decode(errors="replace")[-4000:]
    result: dict[str, Any] = json.loads(report.read_text())
    assert result["failures"] == [], json.dumps({k: result[k] for k in ("failures", "workers", "chat")})
    assert proc.returncode == 0, stderr.decode(errors="replace")[-4000:]
    return result


def check_every_kind_ran(result: dict[str, Any]) -> None:
    chat, tally = result["chat"]["totals"], result["tally"]
    assert chat["acked"] == chat["sent"] > 0
    assert chat["resumed"] > 0, "no client resumed after a drop"
    assert tally["drops"] > 0
    assert tally["logins"] > 0
    assert tally["room_rounds"] > 0
    assert tally["vanished"] > 0
    assert result["peak"]["sessions"] > result["final"]["sessions"] == 0
    for worker in result["workers"].values():
        assert worker["pid_final"] == worker["pid_baseline"], "a worker was restarted"
        assert worker["fds_peak"] > worker["fds_baseline"], "the load opened no descriptor"


def test_soak_bounded(tmp_path: Path) -> None:
    result = run_soak(
        tmp_path, "--seconds", "20", "--warmup", "5", "--no-settle-users", "--drop-every", "3",
        "--offline-every", "8", "--room-every", "6", "--vanish-every", "8", "--pairs", "4",
        timeout=300,
    )  # fmt: skip
    check_every_kind_ran(result)


@pytest.mark.slow
@pytest.mark.skipif(not LONG_MINUTES, reason="long soak: set IMACTOR_SOAK_MINUTES=60")
def test_soak_long(tmp_path: Path) -> None:
    result = run_soak(tmp_path, "--minutes", str(LONG_MINUTES), timeout=LONG_MINUTES * 60 + 900)
    check_every_kind_ran(result)
    print(
        json.dumps({k: v for k, v in result.items() if k not in ("timeline", "baseline", "final")}, indent=2)
    )
