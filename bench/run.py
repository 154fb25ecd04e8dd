"""Run one benchmark scenario and print (and optionally save) its JSON report.

    python -m bench.run --scenario login|idle|chat|muc|cpu [--shape hot|company]
                        [--server imactor|ejabberd|ejabberd-pg|prosody|prosody-pg | --host H --port P]
                        [--transport starttls|tcp] [--processes N] [--duration S] [--json out.json]
    python -m bench.run --scenario chat --compare-workers 1,2 --repeat 3 [...]
    python -m bench.run --shape company --scenario chat --compare-nodes 1,2 --repeat 3 --idle 5
    python -m bench.run --shape company --scenario chat \\
                        --compare-servers imactor,ejabberd,ejabberd-pg,prosody,prosody-pg --repeat 3

`--shape hot` (the default) is the former set of defaults: few users at high rates; `--shape
company` a company's working day: 10,000 accounts of which the scenario uses a spread subset,
human rates, logins of cold users, SCRAM-SHA-1, every server on its default configuration.
Any option given explicitly overrides the shape's value.

Without `--port` the server named by `--server` is started here on free loopback ports with a
temp data dir and `--accounts` accounts provisioned; with `--host/--port` the accounts
bench0..benchN-1 (password `--password`) must already exist there, and `--server-pid` names the
process tree to measure. `--compare-workers` runs the scenario against imactor started here once
per worker count and repetition (interleaved: 1, 2, 1, 2, ...), a fresh server each time, and
reports the median of each count's headline figure and the ratio of each median to the first
count's (the speedup). `--compare-nodes` does the same over imactor clusters of 1, 2, ...
nodes on one PostgreSQL (clients spread over the nodes' c2s ports) and adds the CPU per
node-to-node crossing. `--compare-servers` does the same over servers (interleaved) and prints a
summary table per scenario with the ratios imactor / each other server. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from bench.loadgen.client import MECHANISMS
from bench.loadgen.driver import Driver, Options, account_names, machine, spread
from bench.loadgen.launcher import Target
from bench.peers import CONFIGS, SERVERS, running_server
from bench.peers.imactor_cluster import ClusterDatabase, running_cluster_database

SCENARIOS = ("login", "idle", "chat", "muc", "cpu")

# Each shape's defaults: (scenario or "*" for all) -> option -> value. An option given on the
# command line wins. "accounts": None provisions exactly the accounts the scenario uses.
SHAPES: dict[str, dict[str, dict[str, Any]]] = {
    "hot": {
        "*": {
            "accounts": None,
            "sasl": None,
            "server_config": "bench",
            "duration": 10.0,
            "concurrency": 8,
            "warmup": 0.0,
            "drain": 2.0,
        },
        "idle": {"sessions": 1000},
        "chat": {"pairs": 20, "rates": "100,200,400,800,1200,1600,2400,3200"},
        "muc": {"occupants": 100, "senders": 10, "rates": "100,200,400,800,1200,1600,2400,3200"},
        "login": {"logins": 0, "login_concurrency": 50},
        "cpu": {
            "cpu_users": "1000,20",
            "cpu_user_rates": "0.5,60",
            "duration": 20.0,
            "warmup": 10.0,
            "concurrency": 16,
            "drain": 5.0,
        },
    },
    "company": {
        "*": {
            "accounts": 10000,
            "sasl": "SCRAM-SHA-1",
            "server_config": "default",
            "duration": 10.0,
            "concurrency": 16,
            "warmup": 0.0,
            "drain": 5.0,
        },
        "idle": {"sessions": 10000, "concurrency": 32},
        # 1,000 users in 500 pairs; per user 0.1 to 5 msg/s
        "chat": {
            "pairs": 500,
            "rates": "100,200,300,500,700,1000,1500,2000,2500,3000,4000,5000",
            "warmup": 10.0,
        },
        # 100 occupants, every one a sender; 500 to 50,000 deliveries/s
        "muc": {
            "occupants": 100,
            "senders": 100,
            "rates": "5,10,20,30,50,70,100,150,200,300,400,500",
            "warmup": 10.0,
        },
        # 4,000 cold users, 50 logins at a time over all generator processes
        "login": {"logins": 4000, "login_concurrency": 50},
        # 1,000 users at 0.5 msg/s (500 msg/s), then 20 users at 60 msg/s (1,200 msg/s)
        "cpu": {"cpu_users": "1000,20", "cpu_user_rates": "0.5,60", "duration": 20.0, "warmup": 10.0},
    },
}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--scenario", choices=SCENARIOS, required=True)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="hot",
                        help="the defaults: hot (few users, high rates) or company")  # fmt: skip
    parser.add_argument("--server", default="imactor",
                        help=f"without --port, one of {', '.join(SERVERS)}, started here")  # fmt: skip
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, help="target an already running server (c2s port)")
    parser.add_argument("--domain", default="localhost")
    parser.add_argument("--server-pid", type=int, help="with --port: root of the server's process tree")
    parser.add_argument("--password", default="bench-password")
    parser.add_argument("--transport", choices=["starttls", "tcp"], default="starttls")
    parser.add_argument("--sasl", choices=list(MECHANISMS),
                        help="the SCRAM mechanism every login uses (company: SCRAM-SHA-1; hot: the "
                        "first the server offers of SCRAM-SHA-256, SCRAM-SHA-1)")  # fmt: skip
    parser.add_argument("--accounts", type=int,
                        help="accounts provisioned (bench0..N-1); the scenario uses a subset spread "
                        "over them (company: 10000; hot: just those it uses)")  # fmt: skip
    parser.add_argument("--archive-prefill", type=int, default=0, metavar="N",
                        help="imactor started here: N archived messages in each account's archive "
                        "before the start (a working company's archive is not empty)")  # fmt: skip
    parser.add_argument("--processes", type=int, default=2, help="generator OS processes")
    parser.add_argument("--duration", type=float,
                        help="login: run time; chat, muc: per step; cpu: per phase (s)")  # fmt: skip
    parser.add_argument("--concurrency", type=int,
                        help="login (timed): login loops per process; idle/chat/muc/cpu: "
                        "simultaneous logins per process while connecting")  # fmt: skip
    parser.add_argument("--logins", type=int,
                        help="login: this many logins, each with an account not used before in the "
                        "run (a cold user), instead of timed loops (company: 4000)")  # fmt: skip
    parser.add_argument("--login-methods", default="scram", metavar="M,N,...",
                        help="login with --logins: scram, sasl2 (XEP-0388 SASL2 + Bind 2) and/or fast "
                        "(XEP-0484 tokens, fetched in an unmeasured warm-up), one measured phase "
                        "each over the same accounts, compared with the first (imactor)")  # fmt: skip
    parser.add_argument("--login-concurrency", type=int,
                        help="login with --logins: simultaneous logins over all generator "
                        "processes (50)")  # fmt: skip
    parser.add_argument("--sessions", type=int, help="idle: sessions held")
    parser.add_argument("--pairs", type=int, help="chat: pairs of users")
    parser.add_argument("--rates", help="chat, muc: comma-separated steps, messages/s in total")
    parser.add_argument("--occupants", type=int, help="muc: occupants of the room")
    parser.add_argument("--senders", type=int, help="muc: occupants that send")
    parser.add_argument("--room", default="", help="muc: room JID (default bench-room@conference.<domain>)")
    parser.add_argument("--cpu-users", metavar="N,M,...",
                        help="cpu: users sending in each phase (default 1000,20)")  # fmt: skip
    parser.add_argument("--cpu-user-rates", metavar="R,S,...",
                        help="cpu: msg/s per user in each phase (default 0.5,60)")  # fmt: skip
    parser.add_argument("--io", "--muc-reader", dest="io", choices=["epoll", "trio"], default="epoll",
                        help="chat, muc: one epoll thread per generator process reads every "
                        "connection and sends every message on one schedule (cheaper), or a trio "
                        "task per connection and per sender")  # fmt: skip
    parser.add_argument("--p99-limit-ms", type=float, default=100.0)
    parser.add_argument("--warmup", type=float,
                        help="chat, muc, cpu: seconds at the first rate before the steps, "
                        "not judged")  # fmt: skip
    parser.add_argument("--drain", type=float, help="chat, muc: wait for late messages (s)")
    parser.add_argument("--server-config", choices=CONFIGS,
                        help="default: every server on its own defaults (imactor: conf/imactor.toml's; "
                        "the peers: their packaged configuration); bench: imactor with "
                        "--server-workers/--server-modules, the peers' minimal profile "
                        "(company: default; hot: bench)")  # fmt: skip
    parser.add_argument("--server-workers", type=int, default=1,
                        help="imactor started here with --server-config bench: [server] workers")  # fmt: skip
    parser.add_argument("--server-modules", metavar="A,B,...",
                        help="imactor with --server-config bench: [server] modules "
                        "(default: its own list)")  # fmt: skip
    parser.add_argument("--compare-workers", metavar="N,M,...",
                        help="start imactor once per worker count (and --repeat) and compare")  # fmt: skip
    parser.add_argument("--compare-nodes", metavar="N,M,...",
                        help="chat: imactor as a cluster of N nodes (then M, ...) on one PostgreSQL, "
                        "clients spread over the nodes, per --repeat; CPU per message and per "
                        "node-to-node crossing")  # fmt: skip
    parser.add_argument("--idle", type=float, default=0.0,
                        help="chat: seconds measured with every user online and nothing sent, "
                        "before the warm-up (the server's upkeep apart from messages)")  # fmt: skip
    parser.add_argument("--peer-store", choices=["native", "sqlite"], default="native",
                        help="ejabberd/prosody with --server-config bench: their own default store "
                        "(ejabberd: Mnesia; Prosody: internal files), or SQLite like imactor")  # fmt: skip
    parser.add_argument("--compare-servers", metavar="A,B,...",
                        help=f"start each of {', '.join(SERVERS)} per --repeat and compare")  # fmt: skip
    parser.add_argument("--repeat", type=int, default=1, help="with --compare-*: runs per count or server")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args(argv)
    apply_shape(args)
    check_args(parser, args)
    return args


def apply_shape(args: argparse.Namespace) -> None:
    """Fill every option not given on the command line from the shape's defaults."""
    shape = SHAPES[args.shape]
    defaults = dict(SHAPES["hot"]["*"]) | SHAPES["hot"][args.scenario] | shape["*"] | shape[args.scenario]
    for name in ("logins", "login_concurrency", "sessions", "pairs", "rates", "occupants", "senders",
                 "cpu_users", "cpu_user_rates"):  # fmt: skip
        defaults.setdefault(name, _any_default(name))
    for name, value in defaults.items():
        if getattr(args, name, None) is None:
            setattr(args, name, value)


def _any_default(name: str) -> Any:
    """An option that the scenario does not use still needs a value: the first shape's."""
    for per_scenario in SHAPES["hot"].values():
        if name in per_scenario:
            return per_scenario[name]
    raise KeyError(name)


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.server_config == "default" and (args.server_workers != 1 or args.server_modules):
        parser.error("--server-workers/--server-modules need --server-config bench")
    if args.archive_prefill < 0:
        parser.error("--archive-prefill: expected a count, 0 or more")
    if args.archive_prefill and (args.port is not None or args.compare_nodes):
        parser.error("--archive-prefill fills the SQLite file of an imactor started here: no --port, "
                     "no --compare-nodes")  # fmt: skip
    if args.compare_workers and (args.port is not None or args.server != "imactor"):
        parser.error("--compare-workers starts imactor itself: no --port, no other --server")
    if args.compare_workers and args.server_config != "bench":
        parser.error("--compare-workers sets [server] workers: use --server-config bench")
    if args.compare_nodes:
        if args.compare_workers or args.compare_servers or args.port is not None or args.server != "imactor":
            parser.error("--compare-nodes starts imactor's nodes itself: no --port, no other --server, "
                         "no other --compare-*")  # fmt: skip
        if args.scenario != "chat":
            parser.error("--compare-nodes measures the chat scenario")
    if args.compare_servers:
        if args.compare_workers or args.port is not None:
            parser.error("--compare-servers starts each server itself: no --port, no --compare-workers")
        known = ", ".join(SERVERS)
        unknown = set(args.compare_servers.split(",")) - set(SERVERS) - {""}
        if unknown:
            parser.error(f"--compare-servers: unknown {', '.join(sorted(unknown))} (known: {known})")
    if args.port is None and args.server not in SERVERS:
        parser.error(f"--server {args.server}: give --port (started here: {', '.join(SERVERS)})")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if len(_numbers(args.cpu_users, int)) != len(_numbers(args.cpu_user_rates, float)):
        parser.error("--cpu-users and --cpu-user-rates need as many values each")
    needed = options_from(args).accounts_needed()
    if args.accounts is not None and args.accounts < needed:
        parser.error(f"--accounts {args.accounts}: the scenario uses {needed}")


def _login_methods(text: str) -> list[str]:
    methods = [m for m in str(text).split(",") if m]
    unknown = set(methods) - {"scram", "sasl2", "fast"}
    if unknown or not methods:
        raise SystemExit(f"--login-methods: expected scram, sasl2 or fast, got {text!r}")
    return methods


def _numbers(text: str, kind: Callable[[str], Any]) -> list[Any]:
    return [kind(value) for value in str(text).split(",") if value]


def options_from(args: argparse.Namespace) -> Options:
    return Options(scenario=args.scenario, processes=args.processes, tls=args.transport == "starttls",
                   duration=args.duration, concurrency=args.concurrency, sessions=args.sessions,
                   pairs=args.pairs, rates=_numbers(args.rates, float), p99_limit_ms=args.p99_limit_ms,
                   drain=args.drain, occupants=args.occupants, senders=args.senders, room=args.room,
                   warmup=args.warmup, io=args.io, sasl=args.sasl, logins=args.logins,
                   login_concurrency=args.login_concurrency, idle=args.idle,
                   login_methods=_login_methods(args.login_methods),
                   cpu_users=_numbers(args.cpu_users, int),
                   cpu_user_rates=_numbers(args.cpu_user_rates, float))  # fmt: skip


# ---- figures: what a comparison reports per run, and ranks by (the first of each scenario)

_FIGURES = {"chat": "best passing rate (msg/s)", "login": "logins/s", "idle": "KB per session",
            "muc": "best passing rate (msg/s)", "cpu": "server CPU µs/msg, first phase"}  # fmt: skip


def headline(scenario: str, result: dict[str, Any]) -> float:
    """The figure a comparison ranks by: chat, the best passing rate (msg/s, 0 if none passed);
    login, logins per second; idle, KB per session (smaller is better); muc, the best passing
    message rate (msg/s; deliveries/s are that × occupants); cpu, the server's CPU µs per
    message in the first phase (smaller is better)."""
    if scenario in ("chat", "muc"):
        best = result.get("best")
        return float(best["target_rate"]) if best else 0.0
    if scenario == "login":
        return float(result["logins_per_second"])
    if scenario == "cpu":
        return float(result["server_cpu_us_per_message"][0] or 0.0)
    return float(result.get("kb_per_session") or 0.0)


def extra_figures(scenario: str, result: dict[str, Any]) -> dict[str, float | None]:
    """The figures beside the headline in a summary table (each a median over the runs)."""
    figures: dict[str, float | None] = {}
    if scenario in ("chat", "muc"):
        best = result.get("best") or {}
        figures["server µs/msg"] = best.get("server_cpu_us_per_message")
        if scenario == "muc":
            figures["server µs/delivery"] = best.get("server_cpu_us_per_delivery")
        return figures
    if scenario == "login":
        return {"p50 ms": result.get("p50_ms"), "p99 ms": result.get("p99_ms"),
                "failed": result.get("failed"),
                "server ms/login": result.get("server_cpu_ms_per_login")}  # fmt: skip
    if scenario == "cpu":
        for phase in result["phases"]:
            label = f"{phase['users']}×{phase['per_user_rate']:g}/s"
            figures[f"server µs/msg {label}"] = phase["server_cpu_us_per_message"]
            figures[f"lost {label}"] = phase["lost"]
        figures["first / last"] = result.get("ratio_first_to_last")
        return figures
    return {}


def _cpu(scenario: str, result: dict[str, Any], side: str) -> float | None:
    """One side's CPU (cores: "server" or "generator") at the headline figure: chat's and muc's
    best step, cpu's first phase, login's whole run, idle's logins."""
    if scenario in ("chat", "muc"):
        step = result.get("best")
        cpu = step["cpu"][side] if step else None
    elif scenario == "cpu":
        cpu = result["phases"][0]["cpu"][side]
    else:
        cpu = result.get("cpu", result.get("cpu_during_connect", {})).get(side)
    return None if not cpu else cpu.get("cpu_cores")


def compare(args: argparse.Namespace) -> dict[str, Any]:
    """Run the scenario for each worker count (`--compare-workers`) or node count
    (`--compare-nodes`) `repeat` times, interleaved (1, 2, 1, 2, ...: a change in the machine's
    load hits both alike), a fresh server each time; medians and ratios to the first count.
    Nodes run on one PostgreSQL started and provisioned once (bench/peers/imactor_cluster.py),
    each run on a fresh copy of its database; their report adds the cost per crossing."""
    dimension = "nodes" if args.compare_nodes else "workers"
    counts = [int(count) for count in (args.compare_nodes or args.compare_workers).split(",") if count]
    runs: dict[int, list[dict[str, Any]]] = {count: [] for count in counts}
    extra: dict[str, Any] = {}
    with ExitStack() as stack:
        cluster = None
        if dimension == "nodes":
            started = time.monotonic()
            cluster = stack.enter_context(cluster_database(args))
            extra["provision_seconds"] = round(time.monotonic() - started, 1)
        for repetition in range(1, args.repeat + 1):
            for count in counts:
                print(f"run {repetition}/{args.repeat}, {count} {dimension}...", file=sys.stderr, flush=True)
                started = time.monotonic()
                if cluster is None:
                    report = run(args, workers=count)
                else:
                    report = run(args, nodes=count, cluster=cluster)
                figure = headline(args.scenario, report["result"])
                runs[count].append({"figure": figure, "started": report["started"],
                                    "start_seconds": report["start_and_provision_seconds"],
                                    "seconds": round(time.monotonic() - started, 1),
                                    "result": report["result"]})  # fmt: skip
                line = run_line(args.scenario, report["result"])
                print(f"  {figure:g}  {line}", file=sys.stderr, flush=True)
    medians = {count: statistics.median(r["figure"] for r in runs[count]) for count in counts}
    base = medians[counts[0]]
    summary = [
        {dimension: count, "figures": [r["figure"] for r in runs[count]], "median": medians[count],
         "ratio": round(medians[count] / base, 3) if base else None,
         "server_cpu_cores": [_cpu(args.scenario, r["result"], "server") for r in runs[count]]}
        for count in counts
    ]  # fmt: skip
    if dimension == "nodes":
        extra["crossings"] = crossing_cost(counts, runs)
    return {"scenario": args.scenario, "shape": args.shape, "server": "imactor", "transport": args.transport,
            "processes": args.processes, "server_config": args.server_config, "sasl": args.sasl,
            "accounts": args.accounts, "server_modules": args.server_modules,
            f"compare_{dimension}": counts, "repeat": args.repeat,
            "figure": _FIGURES[args.scenario], "machine": machine(), "summary": summary, **extra,
            "runs": {str(count): runs[count] for count in counts}}  # fmt: skip


@contextmanager
def cluster_database(args: argparse.Namespace) -> Iterator[ClusterDatabase]:
    """PostgreSQL with imactor's database provisioned, for the runs of `--compare-nodes`."""
    options = options_from(args)
    provisioned = account_names(args.accounts or options.accounts_needed(), args.password)
    modules = None if args.server_modules is None else args.server_modules.split(",")
    with ExitStack() as stack:
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="imactor-nodes-bench-")))
        yield stack.enter_context(running_cluster_database(
            directory, provisioned, tls=options.tls, domain=args.domain, workers=args.server_workers,
            modules=modules, config_name=args.server_config))  # fmt: skip


def _step_figures(result: dict[str, Any]) -> dict[float, dict[str, float]]:
    """A chat run's passed steps by rate: server µs/msg, crossings/msg, and µs/msg net of the
    server's idle upkeep (its `--idle` CPU rate over the step's seconds), when measured."""
    idle = result.get("idle")
    idle_cores = (idle["cpu"].get("server") or {}).get("cpu_cores") if idle else None
    figures: dict[float, dict[str, float]] = {}
    for step in result.get("steps", []):
        us = step.get("server_cpu_us_per_message")
        if not step["passed"] or us is None or step.get("crossings_per_message") is None:
            continue
        entry = {"us": float(us), "crossings": float(step["crossings_per_message"])}
        if idle_cores is not None:
            entry["net_us"] = us - idle_cores * step["seconds"] / step["sent"] * 1e6
        figures[float(step["target_rate"])] = entry
    return figures


def crossing_cost(counts: list[int], runs: dict[int, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per rate passed by both runs of a repetition: each node count's server µs/msg and
    crossings/msg, and the CPU per crossing = (µs/msg of the count − µs/msg of the first count)
    / (crossings/msg of the count − of the first), paired within each repetition (the runs next
    to each other in time), then medians over the repetitions. Also net of idle upkeep, where
    `--idle` measured it. `rate`: the highest rate every run passed."""
    first = counts[0]
    paired: dict[int, dict[float, list[dict[str, float]]]] = {count: {} for count in counts[1:]}
    reached: dict[int, dict[float, list[dict[str, float]]]] = {count: {} for count in counts}
    for repetition in range(len(runs[first])):
        base = _step_figures(runs[first][repetition]["result"])
        for count in counts:
            other = _step_figures(runs[count][repetition]["result"])
            for rate, entry in other.items():
                reached[count].setdefault(rate, []).append(entry)
                if count == first or rate not in base:
                    continue
                crossings = entry["crossings"] - base[rate]["crossings"]
                if crossings <= 0:
                    continue
                cost = {"us": (entry["us"] - base[rate]["us"]) / crossings}
                if "net_us" in entry and "net_us" in base[rate]:
                    cost["net_us"] = (entry["net_us"] - base[rate]["net_us"]) / crossings
                paired[count].setdefault(rate, []).append(cost)
    repetitions = len(runs[first])
    common = [rate for rate in sorted(reached[first])
              if all(len(reached[count].get(rate, [])) == repetitions for count in counts)]  # fmt: skip

    def medians(entries: list[dict[str, float]], key: str) -> float | None:
        found = _median([e.get(key) for e in entries])
        return None if found is None else round(found, 1 if key != "crossings" else 3)

    per_rate = {
        str(rate): {
            "server_cpu_us_per_message": {str(c): medians(reached[c].get(rate, []), "us") for c in counts},
            "server_cpu_us_per_message_net_of_idle": {str(c): medians(reached[c].get(rate, []), "net_us")
                                                      for c in counts},
            "crossings_per_message": {str(c): medians(reached[c].get(rate, []), "crossings") for c in counts},
            "passed": {str(c): len(reached[c].get(rate, [])) for c in counts},
            "cpu_us_per_crossing": {str(c): medians(paired[c].get(rate, []), "us") for c in counts[1:]},
            "cpu_us_per_crossing_net_of_idle": {str(c): medians(paired[c].get(rate, []), "net_us")
                                                for c in counts[1:]},
        }
        for rate in sorted(set().union(*(reached[c] for c in counts)))
    }  # fmt: skip
    return {"rate": common[-1] if common else None, "per_rate": per_rate}


def compare_servers(args: argparse.Namespace) -> dict[str, Any]:
    """Run the scenario against each server `repeat` times, interleaved (a, b, c, a, b, c, ...:
    a change in the machine's load hits all alike), a fresh server each time; the median of each
    server's headline figure and the ratio imactor / that server (for idle and cpu, smaller is
    better: a ratio under 1 is imactor ahead), and the medians of the scenario's other figures."""
    servers = [name for name in args.compare_servers.split(",") if name]
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in servers}
    for repetition in range(1, args.repeat + 1):
        for name in servers:
            print(f"run {repetition}/{args.repeat}, {name}...", file=sys.stderr, flush=True)
            try:
                report = run(args, server=name)
            except Exception as exc:  # one server failing (e.g. a missing feature) spoils no other
                print(f"  failed: {type(exc).__name__}: {str(exc)[:2000]}", file=sys.stderr, flush=True)
                runs[name].append({"figure": None, "error": f"{type(exc).__name__}: {exc}"[:4000]})
                continue
            result = report["result"]
            # idle without a memory figure (no session logged in) has none, not "0 KB"
            missing = args.scenario == "idle" and result.get("kb_per_session") is None
            figure = None if missing else headline(args.scenario, result)
            runs[name].append({"figure": figure, "extra": extra_figures(args.scenario, result),
                               "result": result})  # fmt: skip
            print(f"  {figure}  {run_line(args.scenario, result)}", file=sys.stderr, flush=True)
    medians = {name: _median([r["figure"] for r in runs[name]]) for name in servers}
    imactor = medians.get("imactor")
    summary = []
    for name in servers:
        median = medians[name]
        done = [r for r in runs[name] if "result" in r]
        extra_names = list(done[0]["extra"]) if done else []
        entry: dict[str, Any] = {
            "server": name, "figures": [r["figure"] for r in runs[name]], "median": median,
            "imactor_ratio": round(imactor / median, 3) if imactor is not None and median else None,
            "server_cpu_cores": [_cpu(args.scenario, r["result"], "server") if "result" in r else None
                                 for r in runs[name]],
            "generator_cpu_cores": [_cpu(args.scenario, r["result"], "generator") if "result" in r else None
                                    for r in runs[name]],
            "extra": {key: _median([r["extra"].get(key) for r in done]) for key in extra_names},
        }  # fmt: skip
        if args.scenario == "muc":
            entry["deliveries_per_second"] = None if medians[name] is None else medians[name] * args.occupants
        summary.append(entry)
    return {"scenario": args.scenario, "shape": args.shape, "transport": args.transport,
            "processes": args.processes, "server_config": args.server_config, "sasl": args.sasl,
            "accounts": args.accounts, "peer_store": args.peer_store,
            "compare_servers": servers, "repeat": args.repeat, "figure": _FIGURES[args.scenario],
            "machine": machine(), "summary": summary, "steps": steps_summary(args.scenario, runs),
            "runs": runs}  # fmt: skip


def run_line(scenario: str, result: dict[str, Any]) -> str:
    """One line on stderr after each run: the figures of each step (chat, muc) or the others."""
    if scenario in ("chat", "muc"):
        key = "server_cpu_us_per_message"
        return "; ".join(f"{s['target_rate']:g}{'' if s['passed'] else '✗'} p99 {s['p99_ms']} ms "
                         f"{s.get(key)} µs/msg" for s in result["steps"])  # fmt: skip
    return ", ".join(f"{k} {v}" for k, v in extra_figures(scenario, result).items())


def steps_summary(scenario: str, runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """chat, muc: per server and target rate, the median server CPU µs per message over the runs
    that reached that step, and how many of them passed it."""
    if scenario not in ("chat", "muc"):
        return {}
    summary: dict[str, Any] = {}
    for name, server_runs in runs.items():
        per_rate: dict[float, dict[str, Any]] = {}
        for run_ in server_runs:
            for step in run_.get("result", {}).get("steps", []):
                entry = per_rate.setdefault(float(step["target_rate"]), {"us": [], "passed": 0, "runs": 0})
                entry["us"].append(step.get("server_cpu_us_per_message"))
                entry["passed"] += bool(step["passed"])
                entry["runs"] += 1
        summary[name] = {str(rate): {"server_cpu_us_per_message": _median(e["us"]), "passed": e["passed"],
                                     "runs": e["runs"]} for rate, e in sorted(per_rate.items())}  # fmt: skip
    return summary


def _median(figures: Sequence[float | None]) -> float | None:
    """The median of the runs that produced a figure (None when none did)."""
    done = [f for f in figures if f is not None]
    return statistics.median(done) if done else None


def _number(value: float | None) -> str:
    return "–" if value is None else f"{value:g}"


def servers_table(report: dict[str, Any]) -> str:
    """The side-by-side table (Markdown) of a --compare-servers report."""

    def cores(values: list[float | None]) -> str:
        done = [v for v in values if v is not None]
        return f"{statistics.median(done):.2f}" if done else "–"

    muc = report["scenario"] == "muc"
    extra_names: list[str] = []
    for entry in report["summary"]:
        extra_names += [k for k in entry.get("extra", {}) if k not in extra_names]
    head = (f"| server | {report['figure']}: runs | median |" + (" deliveries/s |" if muc else "")
            + " imactor / server | server CPU (cores) | generator CPU (cores) |"
            + "".join(f" {name} |" for name in extra_names))  # fmt: skip
    shape = f", {report['shape']} shape" if report.get("shape") else ""
    title = f"{report['scenario']}, {report['transport']}{shape}, medians of {report['repeat']} run(s)"
    lines = [title, head, "|" + "---|" * (head.count("|") - 1)]
    for entry in report["summary"]:
        runs = ", ".join(_number(f) for f in entry["figures"])
        cells = [entry["server"], runs, _number(entry["median"])]
        if muc:
            cells.append(_number(entry.get("deliveries_per_second")))
        cells += [_number(entry["imactor_ratio"]), cores(entry["server_cpu_cores"]),
                  cores(entry["generator_cpu_cores"])]  # fmt: skip
        cells += [_number(entry.get("extra", {}).get(name)) for name in extra_names]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def steps_table(report: dict[str, Any]) -> str:
    """chat, muc: the server's CPU µs per message at each step (median over the runs that got
    there), with passed/runs; empty for the other scenarios."""
    steps = report.get("steps") or {}
    if not steps:
        return ""
    servers = list(steps)
    rates = sorted({float(rate) for per_rate in steps.values() for rate in per_rate})
    head = "| msg/s | " + " | ".join(f"{name} µs/msg (passed/runs)" for name in servers) + " |"
    lines = ["server CPU per message at each step", head, "|" + "---|" * (len(servers) + 1)]
    for rate in rates:
        cells = [f"{rate:g}"]
        for name in servers:
            entry = steps[name].get(str(rate))
            cells.append("–" if entry is None else f"{_number(entry['server_cpu_us_per_message'])} "
                         f"({entry['passed']}/{entry['runs']})")  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def nodes_table(report: dict[str, Any]) -> str:
    """The tables (Markdown) of a --compare-nodes report: a row per node count (its best rate
    per run, their median and the ratio to the first count's), then per step rate every
    count's server CPU per message and crossings per message, and the CPU per crossing."""
    counts = report["compare_nodes"]
    crossing = report["crossings"]
    title = (f"{report['scenario']}, {report['transport']}, {report.get('shape')} shape, "
             f"medians of {report['repeat']} run(s)")  # fmt: skip
    lines = [title, f"| nodes | {report['figure']}: runs | median | ratio to {counts[0]} |",
             "|---|---|---|---|"]  # fmt: skip
    for entry in report["summary"]:
        runs = ", ".join(_number(f) for f in entry["figures"])
        median, ratio = _number(entry["median"]), _number(entry["ratio"])
        lines.append(f"| {entry['nodes']} | {runs} | {median} | {ratio} |")
    head = ("| msg/s | " + " | ".join(f"{c} node(s) µs/msg (passed) | crossings/msg" for c in counts)
            + "".join(f" | µs per crossing, {c} nodes (net of idle)" for c in counts[1:]) + " |")  # fmt: skip
    lines += ["", "server CPU per message and per node crossing at each step", head,
              "|" + "---|" * (head.count("|") - 1)]  # fmt: skip
    for rate, entry in crossing["per_rate"].items():
        cells = [f"{float(rate):g}"]
        for c in counts:
            us, crossings = entry["server_cpu_us_per_message"][str(c)], entry["crossings_per_message"][str(c)]
            cells += [f"{_number(us)} ({entry['passed'][str(c)]})", _number(crossings)]
        for c in counts[1:]:
            cells.append(f"{_number(entry['cpu_us_per_crossing'][str(c)])} "
                         f"({_number(entry['cpu_us_per_crossing_net_of_idle'][str(c)])})")  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    lines.append(f"highest rate every run passed: {_number(crossing['rate'])} msg/s")
    return "\n".join(lines)


def run(args: argparse.Namespace, workers: int | None = None, server: str | None = None,
        nodes: int | None = None, cluster: ClusterDatabase | None = None) -> dict[str, Any]:  # fmt: skip
    """One run against a fresh server (or `nodes` nodes on `cluster`'s database) or --port."""
    options = options_from(args)
    provisioned = account_names(args.accounts or options.accounts_needed(), args.password)
    users = spread(provisioned, options.accounts_needed())
    count = args.server_workers if workers is None else workers
    name = server or args.server
    prefill = args.archive_prefill if name == "imactor" else 0  # the peers' archives: as they start
    with ExitStack() as stack:
        if cluster is not None and nodes is not None:
            node_start = time.monotonic()
            target = stack.enter_context(cluster.nodes(nodes))
            start_seconds: float | None = round(time.monotonic() - node_start, 1)
        elif args.port is None:
            directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f"{name}-bench-")))
            modules = None if args.server_modules is None else args.server_modules.split(",")
            provision_started = time.monotonic()
            target = stack.enter_context(running_server(name, directory, provisioned, tls=options.tls,
                                                        domain=args.domain, workers=count,
                                                        modules=modules, peer_store=args.peer_store,
                                                        config=args.server_config,
                                                        sasl=args.sasl,
                                                        archive_prefill=prefill))  # fmt: skip
            start_seconds = round(time.monotonic() - provision_started, 1)
        else:
            target = Target(args.host, args.port, args.domain, args.server_pid)
            start_seconds = None
        started = time.time()
        with Driver(options, target, users) as driver:
            result = driver.run()
    return {"scenario": args.scenario, "shape": args.shape, "server": name, "transport": args.transport,
            "sasl": args.sasl, "processes": args.processes, "server_config": args.server_config,
            "server_workers": count if name == "imactor" and args.server_config == "bench" else None,
            "peer_store": None if name == "imactor" or args.server_config == "default" else args.peer_store,
            "server_modules": args.server_modules, "nodes": nodes,
            "archive_prefill": prefill if name == "imactor" else None,
            "accounts": len(provisioned), "users": len(users),
            "user_sample": [name for name, _ in users[:3] + users[-1:]],
            "start_and_provision_seconds": start_seconds,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "machine": machine(), "server_measured": target.pid is not None, "result": result}  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the server and the generator processes are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.compare_servers:
        report = compare_servers(args)
        print(servers_table(report), file=sys.stderr)
        if steps := steps_table(report):
            print("\n" + steps, file=sys.stderr)
    else:
        report = compare(args) if args.compare_workers or args.compare_nodes else run(args)
        if args.compare_nodes:
            print(nodes_table(report), file=sys.stderr)
    text = json.dumps(report, indent=2)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
