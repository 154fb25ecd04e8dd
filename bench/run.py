"""Run one benchmark scenario and print (and optionally save) its JSON report.

    python -m bench.run --scenario login|idle|chat [--server imactor | --host H --port P]
                        [--transport starttls|tcp] [--processes N] [--duration S] [--json out.json]

With `--server imactor` (the default) the server is started here on a free port with a temp data
dir and the accounts added in bulk; with `--host/--port` the accounts bench0..benchN-1 (password
`--password`) must already exist there, and `--server-pid` names the process tree to measure.
See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import signal
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
    parser.add_argument("--json", type=Path, help="also write the report here")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> dict[str, Any]:
    options = Options(scenario=args.scenario, processes=args.processes, tls=args.transport == "starttls",
                      duration=args.duration, concurrency=args.concurrency, sessions=args.sessions,
                      pairs=args.pairs, rates=[float(r) for r in args.rates.split(",") if r],
                      p99_limit_ms=args.p99_limit_ms, drain=args.drain)  # fmt: skip
    users = account_names(options.accounts_needed(), args.password)
    with ExitStack() as stack:
        if args.port is None:
            if args.server != "imactor":
                raise SystemExit("only imactor can be started here; give --port for another server")
            directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="imactor-bench-")))
            target = stack.enter_context(running_imactor(directory, users, tls=options.tls,
                                                         workers=args.server_workers))  # fmt: skip
        else:
            target = Target(args.host, args.port, args.domain, args.server_pid)
        started = time.time()
        with Driver(options, target, users) as driver:
            result = driver.run()
    return {"scenario": args.scenario, "server": args.server, "transport": args.transport,
            "processes": args.processes, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "machine": machine(), "server_measured": target.pid is not None, "result": result}  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the server and the generator processes are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    report = run(args)
    text = json.dumps(report, indent=2)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
