"""The bounded fuzz run of the test suite: every target, a few thousand inputs each under atheris.

Each target runs as `python -m tests.fuzz TARGET --runs N` (libFuzzer in its own process, fixed
seed, its seeds from tests/fuzz/corpus/ first, then mutations guided by coverage of imactor). It
passes when libFuzzer ran all N inputs and exited 0: no exception other than the parser's own
errors, no input over the per-input time limit, no broken invariant (tests/fuzz/targets.py). The
long run is `make fuzz` (docs/hardening.md), or on demand through pytest (marked `slow`, like the
long soak and chaos runs):

    IMACTOR_FUZZ_SECONDS=600 .venv/bin/pytest tests/fuzz -s -k long             # every target
    IMACTOR_FUZZ_SECONDS=600 .venv/bin/pytest tests/fuzz -s -k "long and xml_parser"
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fuzz.targets import TARGETS

ROOT = Path(__file__).resolve().parents[2]
CORPUS = Path(__file__).resolve().parent / "corpus"

#: Inputs per target: one to two seconds of CPU each, start included (all eleven: about 25 s).
RUNS = {
    "xml_parser": 2000,
    "stream": 1000,
    "sasl": 2000,
    "jid": 5000,
    "data_forms": 1500,
    "bosh": 5000,
    "http": 2000,
    "mesh": 5000,
    "socks5": 5000,
    "component": 1500,
    "s2s_inbound": 1000,
}
#: A run that takes longer than this has hung somewhere libFuzzer's per-input limit does not see.
TIMEOUT = 60
#: Seconds per target of the long run (0: skipped).
LONG_SECONDS = int(os.environ.get("IMACTOR_FUZZ_SECONDS", "0"))


def test_every_target_has_a_bounded_run_and_seeds() -> None:
    assert set(RUNS) == set(TARGETS)
    for name in TARGETS:
        assert len(list((CORPUS / name).iterdir())) >= 3, f"{name} has too few seeds"


@pytest.mark.parametrize("name", sorted(RUNS))
def test_seeds_run_clean(name: str) -> None:
    """Every committed seed goes through its target without a crash (no atheris: plain calls)."""
    for seed in sorted((CORPUS / name).iterdir()):
        TARGETS[name].run(seed.read_bytes())


def run_fuzzer(name: str, work: Path, *limits: str, timeout: float) -> str:
    """Run one target under libFuzzer; its output, once it ended without a crash."""
    command = [sys.executable, "-m", "tests.fuzz", name, *limits, "--timeout", "5", "--work", str(work)]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)
    output = proc.stderr
    crashes = list((work / "crashes").iterdir())
    assert not crashes, f"{name} crashed: {crashes}\n{output[-4000:]}"
    assert proc.returncode == 0, output[-4000:]
    return output


@pytest.mark.parametrize("name", sorted(RUNS))
def test_bounded_fuzz_run(name: str, tmp_path: Path) -> None:
    runs = RUNS[name]
    output = run_fuzzer(name, tmp_path, "--runs", str(runs), "--seed", "1", timeout=TIMEOUT)
    done = re.search(r"^Done (\d+) runs in", output, re.MULTILINE)
    assert done is not None, output[-2000:]
    assert int(done.group(1)) == runs
    executed = re.search(r"^stat::number_of_executed_units: (\d+)", output, re.MULTILINE)
    assert executed is not None
    assert int(executed.group(1)) >= runs
    # Coverage guidance is on: libFuzzer saw instrumented edges of imactor.
    coverage = re.findall(r" cov: (\d+) ", output)
    assert coverage, output[-2000:]
    # (The SOCKS5 handshake is one small function: about 40 edges are all there is.)
    assert int(coverage[-1]) > (30 if name == "socks5" else 50), output[-2000:]


@pytest.mark.slow
@pytest.mark.skipif(not LONG_SECONDS, reason="long fuzz run: set IMACTOR_FUZZ_SECONDS=600")
@pytest.mark.parametrize("name", sorted(RUNS))
def test_long_fuzz_run(name: str, tmp_path: Path) -> None:
    """`IMACTOR_FUZZ_SECONDS` of one target (random seed); prints libFuzzer's final figures. A
    crash leaves its input in the test's tmp dir (`crashes/`), named in the failure."""
    output = run_fuzzer(name, tmp_path, "--seconds", str(LONG_SECONDS), timeout=LONG_SECONDS + 120)
    executed = re.search(r"^stat::number_of_executed_units: (\d+)", output, re.MULTILINE)
    assert executed is not None, output[-2000:]
    coverage = re.findall(r" cov: (\d+) ft: (\d+) ", output)
    reached = coverage[-1] if coverage else "?"
    print(f"{name}: {int(executed.group(1)):,} inputs in {LONG_SECONDS} s, cov/ft {reached}")
