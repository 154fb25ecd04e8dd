"""Run one benchmark scenario and print (and optionally save) its JSON report.

    python -m bench.run --scenario login|idle|chat [--server imactor | --host H --port P]
                        [--transport starttls|tcp] [--processes N] [--duration S] [--json out.json]
    python -m bench.run --scenario chat --compare-workers 1,2 --repeat 3 [...]

With `--server imactor` (the default) the server is started here on a free port with a temp data
dir and the accounts added in bulk; with `--host/--port` the accounts bench0..benchN-1 (password
`--password`) must already exist there, and `--server-pid` names the process tree to measure.
`--compare-workers` runs the scenario against imactor started here once per worker count and
repetition (interleaved: 1, 2, 1, 2, ...), a fresh server each time, and reports the median of
each count's headline figure and the ratio of each median to the first count's (the speedup).
See bench/README.md.
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
from bench.loadgen.launcher import Target, running_imactor


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--scenario", choices=["login", "idle", "chat"], required=True)
    parser.add_argument("--server", default="imactor",
                        help="name in the report; 'imactor' without --port starts it here")  # fmt: skip
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
        help="chat: comma-separated steps, messages/s in total",
    )
    parser.add_argument("--p99-limit-ms", type=float, default=100.0)
    parser.add_argument("--drain", type=float, default=2.0, help="chat: wait for late messages (s)")
    parser.add_argument("--server-workers", type=int, default=1,
                        help="imactor started here: [server] workers")  # fmt: skip
    parser.add_argument("--server-modules", metavar="A,B,...",
                        help="imactor started here: [server] modules (default: its own list)")  # fmt: skip
    parser.add_argument("--compare-workers", metavar="N,M,...",
                        help="start imactor once per worker count (and --repeat) and compare")  # fmt: skip
    parser.add_argument("--repeat", type=int, default=1, help="with --compare-workers: runs per count")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args(argv)
    if args.compare_workers and (args.port is not None or args.server != "imactor"):
        parser.error("--compare-workers starts imactor itself: no --port, no other --server")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def headline(scenario: str, result: dict[str, Any]) -> float:
    """The figure a comparison ranks by: chat, the best passing rate (msg/s, 0 if none passed);
    login, logins per second; idle, KB per session (smaller is better)."""
    if scenario == "chat":
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


_FIGURES = {"chat": "best passing rate (msg/s)", "login": "logins/s", "idle": "KB per session"}


def _server_cpu(scenario: str, result: dict[str, Any]) -> float | None:
    """The server's CPU (cores) at the headline figure: chat's best step, login's whole run."""
    if scenario == "chat":
        step = result.get("best")
        cpu = step["cpu"]["server"] if step else None
    else:
        cpu = result.get("cpu", result.get("cpu_during_connect", {})).get("server")
    return None if not cpu else cpu.get("cpu_cores")


def run(args: argparse.Namespace, workers: int | None = None) -> dict[str, Any]:
    options = Options(scenario=args.scenario, processes=args.processes, tls=args.transport == "starttls",
                      duration=args.duration, concurrency=args.concurrency, sessions=args.sessions,
                      pairs=args.pairs, rates=[float(r) for r in args.rates.split(",") if r],
                      p99_limit_ms=args.p99_limit_ms, drain=args.drain)  # fmt: skip
    users = account_names(options.accounts_needed(), args.password)
    count = args.server_workers if workers is None else workers
    with ExitStack() as stack:
        if args.port is None:
            if args.server != "imactor":
                raise SystemExit("only imactor can be started here; give --port for another server")
            directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="imactor-bench-")))
            modules = None if args.server_modules is None else args.server_modules.split(",")
            target = stack.enter_context(running_imactor(directory, users, tls=options.tls,
                                                         workers=count, modules=modules))  # fmt: skip
        else:
            target = Target(args.host, args.port, args.domain, args.server_pid)
        started = time.time()
        with Driver(options, target, users) as driver:
            result = driver.run()
    return {"scenario": args.scenario, "server": args.server, "transport": args.transport,
            "processes": args.processes, "server_workers": count,
            "server_modules": args.server_modules,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "machine": machine(), "server_measured": target.pid is not None, "result": result}  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the server and the generator processes are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    report = compare(args) if args.compare_workers else run(args)
    text = json.dumps(report, indent=2)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
