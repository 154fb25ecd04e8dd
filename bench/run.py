"""Run one benchmark scenario and print (and optionally save) its JSON report.

    python -m bench.run --scenario login|idle|chat|muc [--server imactor|ejabberd|prosody | --host H --port P]
                        [--transport starttls|tcp] [--processes N] [--duration S] [--json out.json]
    python -m bench.run --scenario chat --compare-workers 1,2 --repeat 3 [...]
    python -m bench.run --scenario chat --compare-servers imactor,ejabberd,prosody --repeat 3 [...]

Without `--port` the server named by `--server` (imactor, the default, or Debian's ejabberd or
Prosody: bench/peers/) is started here on free loopback ports with a temp data dir and the
accounts provisioned; with `--host/--port` the accounts bench0..benchN-1 (password `--password`)
must already exist there, and `--server-pid` names the process tree to measure.
`--compare-workers` runs the scenario against imactor started here once per worker count and
repetition (interleaved: 1, 2, 1, 2, ...), a fresh server each time, and reports the median of
each count's headline figure and the ratio of each median to the first count's (the speedup).
`--compare-servers` does the same over servers (interleaved: imactor, ejabberd, prosody, imactor,
...) and reports the ratios imactor / each other server. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench.loadgen.driver import Driver, Options, account_names, machine
from bench.loadgen.launcher import Target
from bench.peers import SERVERS, running_server


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--scenario", choices=["login", "idle", "chat", "muc"], required=True)
    parser.add_argument("--server", default="imactor",
                        help=f"without --port, one of {', '.join(SERVERS)}, started here")  # fmt: skip
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, help="target an already running server (c2s port)")
    parser.add_argument("--domain", default="localhost")
    parser.add_argument("--server-pid", type=int, help="with --port: root of the server's process tree")
    parser.add_argument("--password", default="bench-password")
    parser.add_argument("--transport", choices=["starttls", "tcp"], default="starttls")
    parser.add_argument("--processes", type=int, default=2, help="generator OS processes")
    parser.add_argument("--duration", type=float, default=10.0, help="login: run time; chat: per step (s)")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=8,
        help="login: login loops per process; idle/chat: simultaneous logins per process",
    )
    parser.add_argument("--sessions", type=int, default=1000, help="idle: sessions held")
    parser.add_argument("--pairs", type=int, default=20, help="chat: pairs of users")
    parser.add_argument(
        "--rates",
        default="100,200,400,800,1200,1600,2400,3200",
        help="chat, muc: comma-separated steps, messages/s in total",
    )
    parser.add_argument("--occupants", type=int, default=100, help="muc: occupants of the room")
    parser.add_argument("--senders", type=int, default=10, help="muc: occupants that send")
    parser.add_argument("--room", default="", help="muc: room JID (default bench-room@conference.<domain>)")
    parser.add_argument("--muc-reader", choices=["epoll", "trio"], default="epoll",
                        help="muc: occupants that do not send are read by one epoll thread per "
                        "generator process (cheaper), or each by a trio task")  # fmt: skip
    parser.add_argument("--p99-limit-ms", type=float, default=100.0)
    parser.add_argument("--warmup", type=float, default=0.0,
                        help="chat, muc: seconds at the first rate before the steps, not judged")  # fmt: skip
    parser.add_argument("--drain", type=float, default=2.0, help="chat, muc: wait for late messages (s)")
    parser.add_argument("--server-workers", type=int, default=1,
                        help="imactor started here: [server] workers")  # fmt: skip
    parser.add_argument("--server-modules", metavar="A,B,...",
                        help="imactor started here: [server] modules (default: its own list)")  # fmt: skip
    parser.add_argument("--compare-workers", metavar="N,M,...",
                        help="start imactor once per worker count (and --repeat) and compare")  # fmt: skip
    parser.add_argument("--peer-store", choices=["native", "sqlite"], default="native",
                        help="Prosody/ejabberd started here: their own default store (ejabberd: "
                        "Mnesia; Prosody: internal files), or SQLite like imactor")  # fmt: skip
    parser.add_argument("--compare-servers", metavar="A,B,...",
                        help=f"start each of {', '.join(SERVERS)} per --repeat and compare")  # fmt: skip
    parser.add_argument("--repeat", type=int, default=1, help="with --compare-*: runs per count or server")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args(argv)
    if args.compare_workers and (args.port is not None or args.server != "imactor"):
        parser.error("--compare-workers starts imactor itself: no --port, no other --server")
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
    return args


def headline(scenario: str, result: dict[str, Any]) -> float:
    """The figure a comparison ranks by: chat, the best passing rate (msg/s, 0 if none passed);
    login, logins per second; idle, KB per session (smaller is better); muc, the best passing
    message rate (msg/s; deliveries/s are that × occupants)."""
    if scenario in ("chat", "muc"):
        best = result.get("best")
        return float(best["target_rate"]) if best else 0.0
    if scenario == "login":
        return float(result["logins_per_second"])
    return float(result.get("kb_per_session") or 0.0)


def compare(args: argparse.Namespace) -> dict[str, Any]:
    """Run the scenario for each worker count `repeat` times, interleaved; medians and ratios."""
    counts = [int(count) for count in args.compare_workers.split(",") if count]
    runs: dict[int, list[dict[str, Any]]] = {count: [] for count in counts}
    for repetition in range(1, args.repeat + 1):
        for count in counts:
            print(f"run {repetition}/{args.repeat}, {count} worker(s)...", file=sys.stderr, flush=True)
            report = run(args, workers=count)
            figure = headline(args.scenario, report["result"])
            runs[count].append({"figure": figure, "result": report["result"]})
            print(f"  {figure:g}", file=sys.stderr, flush=True)
    medians = {count: statistics.median(r["figure"] for r in runs[count]) for count in counts}
    base = medians[counts[0]]
    summary = [
        {"workers": count, "figures": [r["figure"] for r in runs[count]], "median": medians[count],
         "ratio": round(medians[count] / base, 3) if base else None,
         "server_cpu_cores": [_server_cpu(args.scenario, r["result"]) for r in runs[count]]}
        for count in counts
    ]  # fmt: skip
    return {"scenario": args.scenario, "server": "imactor", "transport": args.transport,
            "processes": args.processes, "server_modules": args.server_modules,
            "compare_workers": counts, "repeat": args.repeat,
            "figure": _FIGURES[args.scenario], "machine": machine(), "summary": summary,
            "runs": {str(count): runs[count] for count in counts}}  # fmt: skip


_FIGURES = {"chat": "best passing rate (msg/s)", "login": "logins/s", "idle": "KB per session",
            "muc": "best passing rate (msg/s)"}  # fmt: skip


def _server_cpu(scenario: str, result: dict[str, Any]) -> float | None:
    """The server's CPU (cores) at the headline figure: chat's best step, login's whole run."""
    return _cpu(scenario, result, "server")


def _cpu(scenario: str, result: dict[str, Any], side: str) -> float | None:
    """One side's CPU (cores: "server" or "generator") at the headline figure: chat's and muc's
    best step, login's whole run, idle's logins."""
    if scenario in ("chat", "muc"):
        step = result.get("best")
        cpu = step["cpu"][side] if step else None
    else:
        cpu = result.get("cpu", result.get("cpu_during_connect", {})).get(side)
    return None if not cpu else cpu.get("cpu_cores")


def compare_servers(args: argparse.Namespace) -> dict[str, Any]:
    """Run the scenario against each server `repeat` times, interleaved (a, b, c, a, b, c, ...:
    a change in the machine's load hits all alike), a fresh server each time; the median of each
    server's headline figure and the ratio imactor / that server (for idle, KB per session,
    smaller is better: a ratio under 1 is imactor ahead)."""
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
            runs[name].append({"figure": figure, "result": result})
            print(f"  {figure}", file=sys.stderr, flush=True)
    medians = {name: _median([r["figure"] for r in runs[name]]) for name in servers}
    imactor = medians.get("imactor")
    summary = []
    for name in servers:
        median = medians[name]
        entry: dict[str, Any] = {
            "server": name, "figures": [r["figure"] for r in runs[name]], "median": median,
            "imactor_ratio": round(imactor / median, 3) if imactor is not None and median else None,
            "server_cpu_cores": [_cpu(args.scenario, r["result"], "server") if "result" in r else None
                                 for r in runs[name]],
            "generator_cpu_cores": [_cpu(args.scenario, r["result"], "generator") if "result" in r else None
                                    for r in runs[name]],
        }  # fmt: skip
        if args.scenario == "muc":
            entry["deliveries_per_second"] = None if medians[name] is None else medians[name] * args.occupants
        summary.append(entry)
    return {"scenario": args.scenario, "transport": args.transport, "processes": args.processes,
            "peer_store": args.peer_store,
            "compare_servers": servers, "repeat": args.repeat, "figure": _FIGURES[args.scenario],
            "machine": machine(), "summary": summary, "runs": runs}  # fmt: skip


def _median(figures: list[float | None]) -> float | None:
    """The median of the runs that produced a figure (None when none did)."""
    done = [f for f in figures if f is not None]
    return statistics.median(done) if done else None


def servers_table(report: dict[str, Any]) -> str:
    """The side-by-side table (Markdown) of a --compare-servers report."""

    def cores(values: list[float | None]) -> str:
        done = [v for v in values if v is not None]
        return f"{statistics.median(done):.2f}" if done else "–"

    def number(value: float | None) -> str:
        return "–" if value is None else f"{value:g}"

    muc = report["scenario"] == "muc"
    head = (f"| server | {report['figure']}: runs | median |" + (" deliveries/s |" if muc else "")
            + " imactor / server | server CPU (cores) | generator CPU (cores) |")  # fmt: skip
    lines = [f"{report['scenario']}, {report['transport']}, medians of {report['repeat']} run(s)", head,
             "|" + "---|" * (head.count("|") - 1)]  # fmt: skip
    for entry in report["summary"]:
        runs = ", ".join(number(f) for f in entry["figures"])
        cells = [entry["server"], runs, number(entry["median"])]
        if muc:
            cells.append(number(entry.get("deliveries_per_second")))
        cells += [number(entry["imactor_ratio"]), cores(entry["server_cpu_cores"]),
                  cores(entry["generator_cpu_cores"])]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run(args: argparse.Namespace, workers: int | None = None, server: str | None = None) -> dict[str, Any]:
    options = Options(scenario=args.scenario, processes=args.processes, tls=args.transport == "starttls",
                      duration=args.duration, concurrency=args.concurrency, sessions=args.sessions,
                      pairs=args.pairs, rates=[float(r) for r in args.rates.split(",") if r],
                      p99_limit_ms=args.p99_limit_ms, drain=args.drain, occupants=args.occupants,
                      senders=args.senders, room=args.room, warmup=args.warmup,
                      muc_reader=args.muc_reader)  # fmt: skip
    users = account_names(options.accounts_needed(), args.password)
    count = args.server_workers if workers is None else workers
    name = server or args.server
    with ExitStack() as stack:
        if args.port is None:
            directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f"{name}-bench-")))
            modules = None if args.server_modules is None else args.server_modules.split(",")
            target = stack.enter_context(running_server(name, directory, users, tls=options.tls,
                                                        domain=args.domain, workers=count,
                                                        modules=modules,
                                                        peer_store=args.peer_store))  # fmt: skip
        else:
            target = Target(args.host, args.port, args.domain, args.server_pid)
        started = time.time()
        with Driver(options, target, users) as driver:
            result = driver.run()
    return {"scenario": args.scenario, "server": name, "transport": args.transport,
            "processes": args.processes, "server_workers": count if name == "imactor" else None,
            "peer_store": None if name == "imactor" else args.peer_store,
            "server_modules": args.server_modules,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "machine": machine(), "server_measured": target.pid is not None, "result": result}  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the server and the generator processes are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.compare_servers:
        report = compare_servers(args)
        print(servers_table(report), file=sys.stderr)
    else:
        report = compare(args) if args.compare_workers else run(args)
    text = json.dumps(report, indent=2)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
