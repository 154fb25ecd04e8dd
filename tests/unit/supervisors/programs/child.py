"""A child program for the `ProcessSupervisor` tests: ``child.py NAME LOG [options]``.

It speaks the health protocol through `supervisors.health.serve_health` and
appends one line per event to the file LOG, as ``NAME EVENT PID``: ``spawn``
when it starts, ``ready`` just before it reports ready, ``term`` when it
receives SIGTERM. Signals drive it from the test:

- SIGTERM: records ``term`` and exits with status 0 (unless ``--ignore-term``);
- SIGUSR1: blocks its event loop (``time.sleep``), so it stops answering pings;
- SIGUSR2: exits with the status given by ``--usr2-exit`` (default 0).

``--write-fd FD`` writes ``NAME`` to the inherited file descriptor FD at start (``pass_fds``).
"""

from __future__ import annotations

import argparse
import os
import signal
import time

import trio
import trio.testing

from supervisors.health import serve_health


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("name")
    parser.add_argument("log")
    parser.add_argument("--ready-delay", type=float, default=0.0)
    parser.add_argument("--never-ready", action="store_true")
    parser.add_argument("--exit-before-ready", type=int, default=None)
    parser.add_argument("--exit-after-ready", type=int, default=None)
    parser.add_argument("--ignore-term", action="store_true")
    parser.add_argument("--usr2-exit", type=int, default=0)
    parser.add_argument("--write-fd", type=int, default=None)
    return parser.parse_args()


def record(args: argparse.Namespace, event: str) -> None:
    with open(args.log, "a", encoding="ascii") as log:
        log.write(f"{args.name} {event} {os.getpid()}\n")


async def main(args: argparse.Namespace) -> None:
    record(args, "spawn")
    if args.write_fd is not None:
        os.write(args.write_fd, args.name.encode("ascii"))
        os.close(args.write_fd)
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2) as signals:
        async with trio.open_nursery() as nursery:
            health = await nursery.start(serve_health)
            if args.exit_before_ready is not None:
                os._exit(args.exit_before_ready)
            if args.ready_delay:
                await trio.sleep(args.ready_delay)
            if not args.never_ready:
                record(args, "ready")
                health.ready()
            if args.exit_after_ready is not None:
                # Let serve_health write "ready" first.
                await trio.testing.wait_all_tasks_blocked()
                os._exit(args.exit_after_ready)
            async for signum in signals:
                if signum == signal.SIGTERM:
                    record(args, "term")
                    if not args.ignore_term:
                        nursery.cancel_scope.cancel()
                        return
                elif signum == signal.SIGUSR1:
                    time.sleep(60)  # noqa: ASYNC251 - on purpose: a hung event loop answers no pings
                else:
                    os._exit(args.usr2_exit)


if __name__ == "__main__":
    trio.run(main, parse())
