"""Run one fuzz target under atheris (libFuzzer, coverage of imactor and h11).

    python -m tests.fuzz TARGET --seconds 600          # the long run (docs/hardening.md)
    python -m tests.fuzz TARGET --runs 2000            # a bounded run (what tests/fuzz/test_fuzz.py does)
    python -m tests.fuzz TARGET --replay FILE...       # run inputs once each (a crash, a corpus)
    python -m tests.fuzz --list

Seeds come from tests/fuzz/corpus/TARGET/ (read only); inputs that reach new coverage go to the
working corpus, `--work DIR` (default fuzz-work/TARGET/, not committed), and a crashing input to
`--work`/crashes/. The exit status is libFuzzer's: 0 when nothing crashed, hung (`--timeout`
seconds per input) or outgrew `--rss-mb`.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections.abc import Callable
from pathlib import Path

import atheris

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

#: Coverage is measured in the parsers and what reads their results, not in the rest of imactor
#: that they import (instrumenting it all makes every run start seconds later).
INSTRUMENTED = [
    "imactor.xmpp", "imactor.web", "imactor.mesh.codec", "imactor.cluster.wire", "imactor.muc",
    "h11",
]  # fmt: skip

with atheris.instrument_imports(include=INSTRUMENTED):
    from tests.fuzz.targets import TARGETS


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("target", nargs="?", choices=sorted(TARGETS))
    parser.add_argument("--seconds", type=int, default=0, help="stop after this long (0: no limit)")
    parser.add_argument("--runs", type=int, default=-1, help="stop after this many inputs (-1: no limit)")
    parser.add_argument("--timeout", type=int, default=5, help="seconds one input may take: a hang")
    parser.add_argument("--rss-mb", type=int, default=1024, help="memory limit of the process")
    parser.add_argument("--seed", type=int, default=0, help="libFuzzer's random seed (0: random)")
    parser.add_argument("--work", type=Path, help="working corpus and crashes (default fuzz-work/TARGET)")
    parser.add_argument("--replay", nargs="+", type=Path, help="run these inputs once each")
    parser.add_argument("--list", action="store_true", help="list the targets")
    args, extra = parser.parse_known_args(argv)
    if args.list or args.target is None:
        for name, target in sorted(TARGETS.items()):
            print(f"{name:12} {target.doc}")
        return
    target = TARGETS[args.target]
    work = args.work or ROOT / "fuzz-work" / target.name
    corpus = work / "corpus"
    crashes = work / "crashes"
    corpus.mkdir(parents=True, exist_ok=True)
    crashes.mkdir(parents=True, exist_ok=True)
    seeds = HERE / "corpus" / target.name
    libfuzzer = [
        sys.argv[0],
        f"-max_len={target.max_len}",
        f"-timeout={args.timeout}",
        f"-rss_limit_mb={args.rss_mb}",
        f"-seed={args.seed}",
        f"-artifact_prefix={crashes}/",
        "-print_final_stats=1",
        f"-dict={HERE / 'xmpp.dict'}",
    ]
    if args.replay:
        libfuzzer += [str(path) for path in args.replay]
    else:
        if args.seconds:
            libfuzzer.append(f"-max_total_time={args.seconds}")
        libfuzzer.append(f"-runs={args.runs}")
        libfuzzer += [str(corpus)] + ([str(seeds)] if seeds.is_dir() else [])
    libfuzzer += extra
    print(f"fuzz {target.name}: {' '.join(libfuzzer[1:])}", file=sys.stderr, flush=True)
    atheris.Setup(libfuzzer, _keeping_input(target.run, crashes))
    atheris.Fuzz()


def _keeping_input(run: Callable[[bytes], None], crashes: Path) -> Callable[[bytes], None]:
    """`run`, which first saves an input that raises to `crashes`/exception-SHA1: libFuzzer's own
    crash file is written by its signal handler, which did not always get to run after atheris
    reported an uncaught exception (a long xml_parser run ended with the traceback and no file)."""

    def guarded(data: bytes) -> None:
        try:
            run(data)
        except BaseException:
            (crashes / f"exception-{hashlib.sha1(data).hexdigest()}").write_bytes(data)
            raise

    return guarded


if __name__ == "__main__":
    main()
