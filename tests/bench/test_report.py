"""The side-by-side table of `bench.run --compare-servers` (pure: built from a report dict)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

# bench/ is not an installed package (the smoke runs start it with `python -m` from the root).
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.run import servers_table


def _report(scenario: str) -> dict[str, Any]:
    return {
        "scenario": scenario, "transport": "starttls", "repeat": 3,
        "figure": "best passing rate (msg/s)",
        "summary": [
            {"server": "imactor", "figures": [700.0, 800.0, 700.0], "median": 700.0, "imactor_ratio": 1.0,
             "server_cpu_cores": [0.9, 1.0, 0.95], "generator_cpu_cores": [0.3, 0.4, 0.35],
             "deliveries_per_second": 70000.0},
            {"server": "ejabberd", "figures": [350.0, None, 350.0], "median": 350.0, "imactor_ratio": 2.0,
             "server_cpu_cores": [0.8, None, 0.7], "generator_cpu_cores": [0.2, None, 0.3],
             "deliveries_per_second": 35000.0},
            {"server": "prosody", "figures": [None], "median": None, "imactor_ratio": None,
             "server_cpu_cores": [None], "generator_cpu_cores": [None], "deliveries_per_second": None},
        ],
    }  # fmt: skip


def test_table_has_a_row_per_server_with_ratio_and_both_cpus() -> None:
    lines = servers_table(_report("chat")).splitlines()
    assert lines[0] == "chat, starttls, medians of 3 run(s)"
    assert lines[1].startswith("| server | best passing rate (msg/s): runs | median | imactor / server |")
    assert "deliveries/s" not in lines[1]
    assert lines[3] == "| imactor | 700, 800, 700 | 700 | 1 | 0.95 | 0.35 |"
    assert lines[4] == "| ejabberd | 350, –, 350 | 350 | 2 | 0.75 | 0.25 |"  # a failed run shows as –
    assert lines[5] == "| prosody | – | – | – | – | – |"


def test_muc_table_adds_deliveries_per_second() -> None:
    lines = servers_table(_report("muc")).splitlines()
    assert "| median | deliveries/s | imactor / server |" in lines[1]
    assert lines[3] == "| imactor | 700, 800, 700 | 700 | 70000 | 1 | 0.95 | 0.35 |"
    assert lines[2].count("---") == lines[1].count("|") - 1
