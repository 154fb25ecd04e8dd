"""The sensitive-word filter's cost (issue 18): not a test, figures for docs/benchmarks.md.

    python -m bench.word_filter [--words 10000] [--messages 2000] [--json out.json]
    python -m bench.word_filter --throughput [--rates 200,400,600,800] [--duration 8] [--repeat 2]

Without `--throughput`: the matcher alone (`imactor.wordmatch`), in this process. `--words`
words (half Latin letters, half Chinese characters, seeded), in three lists; `--messages` chat
texts of 20 to 200 characters, mixed Latin and Chinese, one in ten with a listed word (some with
separators inserted). Reported: the time to build the automaton, and microseconds per message
to scan it (fold + Aho-Corasick + word edges) and to mask what was found, median of 5 passes.

With `--throughput`: imactor itself, once with the module `word_filter` and the `--words` words
in a mask list, once without it (interleaved, `--repeat` times, a fresh server each), under the
load generator's chat scenario (`python -m bench.run --scenario chat`, hot shape: 20 pairs,
the `--rates` steps): the best rate that passed (nothing lost, p99 under 100 ms) and the
server's CPU microseconds per message at each step. The generator's messages contain no listed
word, so every one is scanned in full and goes on: the filter's cost on ordinary traffic.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.loadgen.driver import account_names
from bench.loadgen.launcher import running_imactor
from bench.run import options_from, parse_args, run
from imactor.config import DEFAULT_MODULES
from imactor.wordmatch import Matcher, WordList, fold_word, mask

LATIN = "abcdefghijklmnopqrstuvwxyz"
#: Common Han characters (U+4E00 block), from which words and texts are drawn.
HAN = [chr(code) for code in range(0x4E00, 0x4E00 + 3000)]
SEPARATORS = [" ", ".", "\u200b", "\u3000", "-"]


def make_words(count: int, rng: random.Random) -> list[str]:
    words: set[str] = set()
    while len(words) < count:
        if len(words) % 2:
            words.add("".join(rng.choice(LATIN) for _ in range(rng.randint(5, 10))))
        else:
            words.add("".join(rng.choice(HAN) for _ in range(rng.randint(2, 4))))
    return sorted(words)


def make_message(words: Sequence[str], rng: random.Random) -> str:
    """A chat text of 20 to 200 characters; one in ten holds a listed word, maybe spelled apart."""
    parts: list[str] = []
    length = rng.randint(20, 200)
    while sum(len(part) + 1 for part in parts) < length:
        if rng.random() < 0.5:
            parts.append("".join(rng.choice(LATIN) for _ in range(rng.randint(2, 9))))
        else:
            parts.append("".join(rng.choice(HAN) for _ in range(rng.randint(1, 6))))
    if rng.random() < 0.1:
        word = rng.choice(words)
        if rng.random() < 0.5:
            word = rng.choice(SEPARATORS).join(word)
        parts.insert(rng.randrange(len(parts) + 1), word)
    return " ".join(parts)


def matcher_figures(word_count: int, message_count: int, seed: int = 18) -> dict[str, Any]:
    rng = random.Random(seed)
    words = make_words(word_count, rng)
    folded = [fold_word(word) for word in words]
    third = len(folded) // 3
    lists = [
        WordList("profanity", "server", "mask", tuple(folded[:third])),
        WordList("secrets", "server", "reject", tuple(folded[third : 2 * third])),
        WordList("watch", "domain:localhost", "alert", tuple(folded[2 * third :])),
    ]
    started = time.perf_counter()
    matcher = Matcher(lists, 1)
    build_ms = (time.perf_counter() - started) * 1000
    messages = [make_message(words, rng) for _ in range(message_count)]
    scopes = frozenset({"server", "domain:localhost"})
    scan_passes, mask_passes, hits = [], [], 0
    for _ in range(5):
        started = time.perf_counter()
        found = [matcher.find(text, scopes) for text in messages]
        scan_passes.append((time.perf_counter() - started) / len(messages) * 1e6)
        started = time.perf_counter()
        for text, text_hits in zip(messages, found, strict=True):
            if text_hits:
                mask(text, text_hits)
        mask_passes.append((time.perf_counter() - started) / len(messages) * 1e6)
        hits = sum(1 for text_hits in found if text_hits)
    return {
        "words": matcher.words,
        "build_ms": round(build_ms, 1),
        "messages": len(messages),
        "mean_message_chars": round(statistics.mean(len(text) for text in messages), 1),
        "messages_with_hits": hits,
        "scan_us_per_message": round(statistics.median(scan_passes), 1),
        "mask_us_per_message": round(statistics.median(mask_passes), 2),
    }


def throughput(args: argparse.Namespace) -> dict[str, Any]:
    """The chat scenario against imactor with the filter and without, interleaved."""
    bench_args = parse_args(["--scenario", "chat", "--rates", args.rates, "--duration", str(args.duration),
                             "--processes", "1"])  # fmt: skip
    users = account_names(options_from(bench_args).accounts_needed(), bench_args.password)
    words = make_words(args.words, random.Random(18))
    runs: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
    for _ in range(args.repeat):
        for mode in ("off", "on"):
            modules = [*DEFAULT_MODULES, "word_filter"] if mode == "on" else list(DEFAULT_MODULES)
            with tempfile.TemporaryDirectory(prefix=f"word-filter-{mode}-") as tmp:
                directory = Path(tmp)
                with running_imactor(directory, users, modules=modules) as target:
                    if mode == "on":
                        _import_words(directory / "imactor.toml", words)
                    bench_args.port, bench_args.server_pid = target.port, target.pid
                    result = run(bench_args)["result"]
            best = result.get("best")
            runs[mode].append({
                "best_rate": best["target_rate"] if best else 0,
                "steps": [{"rate": step.get("target_rate"), "passed": step.get("passed"),
                           "server_cpu_us_per_message": step.get("server_cpu_us_per_message")}
                          for step in result.get("steps", [])],
            })  # fmt: skip
            print(f"{mode}: best passing rate {runs[mode][-1]['best_rate']} msg/s", file=sys.stderr)
    medians = {mode: statistics.median(r["best_rate"] for r in runs[mode]) for mode in runs}
    return {"words": len(words), "rates": args.rates, "duration": args.duration, "runs": runs,
            "median_best_rate": medians}  # fmt: skip


def _import_words(config: Path, words: Sequence[str]) -> None:
    listing = config.parent / "words.txt"
    listing.write_text("\n".join(words) + "\n", encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "imactor", "filter", "import", "bench", str(listing), "--config", str(config)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"imactor filter import failed: {done.stderr}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.word_filter", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--words", type=int, default=10_000)
    parser.add_argument("--messages", type=int, default=2_000)
    parser.add_argument("--throughput", action="store_true", help="imactor with and without the filter")
    parser.add_argument("--rates", default="200,400,600,800", help="--throughput: chat steps, msg/s")
    parser.add_argument("--duration", type=float, default=8.0, help="--throughput: seconds per step")
    parser.add_argument("--repeat", type=int, default=2, help="--throughput: runs of each")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args(argv)
    report: dict[str, Any] = {"matcher": matcher_figures(args.words, args.messages)}
    if args.throughput:
        report["throughput"] = throughput(args)
    text = json.dumps(report, indent=2, ensure_ascii=False)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
