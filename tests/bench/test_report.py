"""The pure parts of bench.run and its driver: the side-by-side tables (built from report dicts),
the shapes' defaults, and which accounts and users a scenario takes."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

# bench/ is not an installed package (the smoke runs start it with `python -m` from the root).
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.loadgen.client import LoginError, choose_mechanism
from bench.loadgen.driver import Driver, account_names, crossings, spread
from bench.run import crossing_cost, nodes_table, parse_args, servers_table, steps_summary, steps_table


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


def test_table_adds_the_scenarios_other_figures_as_columns() -> None:
    report = _report("chat") | {"shape": "company"}
    report["summary"][0]["extra"] = {"server µs/msg": 812.5}
    report["summary"][1]["extra"] = {"server µs/msg": None}
    lines = servers_table(report).splitlines()
    assert lines[0] == "chat, starttls, company shape, medians of 3 run(s)"
    assert lines[1].endswith("| generator CPU (cores) | server µs/msg |")
    assert lines[3] == "| imactor | 700, 800, 700 | 700 | 1 | 0.95 | 0.35 | 812.5 |"
    assert lines[4].endswith("| 0.25 | – |")
    assert lines[5].endswith("| – | – |")  # a server without the figure


def test_steps_table_gives_cpu_per_message_per_rate_and_server() -> None:
    steps = {
        "imactor": {"100.0": {"server_cpu_us_per_message": 900.0, "passed": 3, "runs": 3},
                    "200.0": {"server_cpu_us_per_message": 600.0, "passed": 1, "runs": 3}},
        "ejabberd": {"100.0": {"server_cpu_us_per_message": 300.0, "passed": 3, "runs": 3}},
    }  # fmt: skip
    lines = steps_table({"steps": steps}).splitlines()
    assert lines[1] == "| msg/s | imactor µs/msg (passed/runs) | ejabberd µs/msg (passed/runs) |"
    assert lines[3] == "| 100 | 900 (3/3) | 300 (3/3) |"
    assert lines[4] == "| 200 | 600 (1/3) | – |"  # ejabberd never got to 200
    assert steps_table({"steps": {}}) == ""


def test_steps_summary_takes_medians_over_the_runs_that_reached_each_step() -> None:
    def run(*steps: tuple[float, float, bool]) -> dict[str, Any]:
        return {"result": {"steps": [{"target_rate": r, "server_cpu_us_per_message": us, "passed": ok}
                                     for r, us, ok in steps]}}  # fmt: skip

    runs = {"imactor": [run((100, 900, True), (200, 500, False)), run((100, 700, True), (200, 700, True)),
                        {"figure": None, "error": "boom"}]}  # fmt: skip
    summary = steps_summary("chat", runs)["imactor"]
    assert summary["100.0"] == {"server_cpu_us_per_message": 800.0, "passed": 2, "runs": 2}
    assert summary["200.0"] == {"server_cpu_us_per_message": 600.0, "passed": 1, "runs": 2}
    assert steps_summary("login", runs) == {}


def test_spread_takes_accounts_from_all_over_the_provisioned_ones() -> None:
    accounts = account_names(10_000)
    used = spread(accounts, 1000)
    assert len({name for name, _ in used}) == 1000
    assert [name for name, _ in used[:3]] == ["bench0", "bench10", "bench20"]
    assert used[-1][0] == "bench9990"
    assert spread(accounts[:40], 40) == accounts[:40]  # all of them: the hot shape's accounts
    assert [name for name, _ in spread(accounts, 4000)[:5]] == [
        "bench0",
        "bench2",
        "bench5",
        "bench7",
        "bench10",
    ]
    with pytest.raises(ValueError, match="needs 41 accounts, only 40"):
        spread(accounts[:40], 41)


def test_company_shape_fills_what_is_not_given_and_an_explicit_option_wins() -> None:
    args = parse_args(["--shape", "company", "--scenario", "chat"])
    assert (args.accounts, args.pairs, args.sasl, args.server_config) == (
        10_000,
        500,
        "SCRAM-SHA-1",
        "default",
    )
    assert args.rates == "100,200,300,500,700,1000,1500,2000,2500,3000,4000,5000"
    args = parse_args(
        ["--shape", "company", "--scenario", "login", "--sasl", "SCRAM-SHA-256", "--accounts", "5000"]
    )
    assert (args.logins, args.login_concurrency, args.sasl, args.accounts) == (
        4000,
        50,
        "SCRAM-SHA-256",
        5000,
    )
    args = parse_args(["--shape", "company", "--scenario", "muc"])
    assert (args.occupants, args.senders) == (100, 100)
    args = parse_args(["--shape", "company", "--scenario", "idle"])
    assert args.sessions == 10_000
    args = parse_args(["--scenario", "chat"])  # the hot shape: the former defaults
    assert (args.accounts, args.pairs, args.sasl, args.server_config, args.logins) == (
        None,
        20,
        None,
        "bench",
        0,
    )


def test_options_that_contradict_each_other_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    for argv, message in [
        (["--shape", "company", "--scenario", "login", "--accounts", "100"], "the scenario uses 4000"),
        (
            ["--scenario", "chat", "--server-config", "default", "--server-workers", "2"],
            "need --server-config bench",
        ),
        (["--scenario", "cpu", "--cpu-users", "10,2", "--cpu-user-rates", "1"], "as many values"),
        (["--scenario", "chat", "--compare-servers", "imactor,openfire"], "unknown openfire"),
        (["--scenario", "login", "--compare-nodes", "1,2"], "--compare-nodes measures the chat scenario"),
        (["--scenario", "chat", "--compare-nodes", "1,2", "--compare-workers", "2"], "no other --compare-*"),
    ]:
        with pytest.raises(SystemExit):
            parse_args(argv)
        assert message in capsys.readouterr().err


def test_active_users_are_whole_pairs_dealt_like_the_pairs() -> None:
    driver = Driver.__new__(Driver)  # the dealing is pure: no processes needed
    # 20 users in 2 processes hold pairs 0, 2, 4, ... and 1, 3, 5, ...: 10 users each
    assert driver._active_per_process([10, 10], None) == [10, 10]
    assert driver._active_per_process([10, 10], 4) == [2, 2]  # pairs 0 and 1
    assert driver._active_per_process([10, 10], 6) == [4, 2]  # pairs 0, 2 and 1
    assert driver._active_per_process([10, 10], 5) == [4, 2]  # an odd count: its partner too
    assert driver._active_per_process([10, 10], 40) == [10, 10]


def test_sasl_names_the_one_mechanism_every_login_uses() -> None:
    """--sasl is not a preference: a server that does not offer it fails the login (e.g.
    SCRAM-SHA-256 against Prosody 0.12), it never falls back to another mechanism."""
    features = etree.fromstring(
        "<features xmlns='http://etherx.jabber.org/streams'><mechanisms "
        "xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>SCRAM-SHA-1</mechanism>"
        "<mechanism>PLAIN</mechanism></mechanisms></features>"
    )
    assert choose_mechanism(features) == "SCRAM-SHA-1"  # without --sasl: the first SCRAM offered
    assert choose_mechanism(features, "SCRAM-SHA-1") == "SCRAM-SHA-1"
    with pytest.raises(LoginError, match=r"SCRAM-SHA-256 not offered: \['PLAIN', 'SCRAM-SHA-1'\]"):
        choose_mechanism(features, "SCRAM-SHA-256")


def _nodes_run(idle_cores: float | None, *steps: tuple[float, float, float, bool]) -> dict[str, Any]:
    """A chat run of --compare-nodes: (rate, server µs/msg, crossings/msg, passed) per step, each
    10 s long with 1,000 messages sent."""
    result: dict[str, Any] = {"steps": [
        {"target_rate": rate, "server_cpu_us_per_message": us, "crossings_per_message": per, "passed": ok,
         "seconds": 10.0, "sent": 1000}
        for rate, us, per, ok in steps]}  # fmt: skip
    if idle_cores is not None:
        server = {"cpu_seconds": idle_cores * 5, "cpu_cores": idle_cores}
        result["idle"] = {"seconds": 5.0, "cpu": {"server": server}}
    return {"figure": max((r for r, _, _, ok in steps if ok), default=0.0), "result": result}


def test_crossing_cost_pairs_the_runs_of_each_repetition_and_takes_medians() -> None:
    """(µs/msg on 2 nodes − on 1 node) / (crossings/msg on 2 − on 1), per repetition, then the
    median; net of idle subtracts each run's idle CPU rate × the step's seconds / messages."""
    runs = {
        1: [_nodes_run(0.02, (100, 1000, 0, True), (200, 800, 0, True), (300, 700, 0, False)),
            _nodes_run(0.02, (100, 1100, 0, True), (200, 900, 0, True))],
        2: [_nodes_run(0.03, (100, 1500, 1, True), (200, 1200, 1, True), (300, 1000, 1, True)),
            _nodes_run(0.03, (100, 1500, 1, True), (200, 1300, 1, True), (300, 1000, 1, False))],
    }  # fmt: skip
    report = crossing_cost([1, 2], runs)
    assert report["rate"] == 200  # 300 passed on 2 nodes only
    at_100 = report["per_rate"]["100.0"]
    assert at_100["server_cpu_us_per_message"] == {"1": 1050.0, "2": 1500.0}
    assert at_100["crossings_per_message"] == {"1": 0.0, "2": 1.0}
    assert at_100["passed"] == {"1": 2, "2": 2}
    assert at_100["cpu_us_per_crossing"] == {"2": 450.0}  # median of 500 and 400
    # idle: 0.02 and 0.03 cores × 10 s / 1,000 messages = 200 and 300 µs per message
    assert at_100["server_cpu_us_per_message_net_of_idle"] == {"1": 850.0, "2": 1200.0}
    assert at_100["cpu_us_per_crossing_net_of_idle"] == {"2": 350.0}
    at_300 = report["per_rate"]["300.0"]
    assert at_300["passed"] == {"1": 0, "2": 1}
    assert at_300["cpu_us_per_crossing"] == {"2": None}  # no pair of runs both passed it
    summary = [{"nodes": 1, "figures": [200.0, 200.0], "median": 200.0, "ratio": 1.0},
               {"nodes": 2, "figures": [300.0, 200.0], "median": 250.0, "ratio": 1.25}]  # fmt: skip
    lines = nodes_table({"scenario": "chat", "transport": "starttls", "shape": "company", "repeat": 2,
                         "figure": "best passing rate (msg/s)", "compare_nodes": [1, 2], "crossings": report,
                         "summary": summary})  # fmt: skip
    assert lines.splitlines()[3:5] == ["| 1 | 200, 200 | 200 | 1 |", "| 2 | 300, 200 | 250 | 1.25 |"]
    assert "| 100 | 1050 (2) | 0 | 1500 (2) | 1 | 450 (350) |" in lines.splitlines()
    assert "| 300 | – (0) | – | 1000 (1) | 1 | – (–) |" in lines.splitlines()
    assert lines.splitlines()[-1] == "highest rate every run passed: 200 msg/s"


def test_crossings_are_the_mesh_frames_sent_during_a_step() -> None:
    before = {"mesh_frames_out": 10, "mesh_frames_in": 30}
    after = {"mesh_frames_out": 2010, "mesh_frames_in": 2040}
    expected = {"crossings": 2000, "frames_in": 2010, "crossings_per_message": 2.0}
    assert crossings(before, after, 1000) == expected
    assert crossings(None, after, 1000) == {}  # a server without counters (one node, or a peer)
    assert crossings(before, before, 0)["crossings_per_message"] is None
