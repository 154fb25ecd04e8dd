"""The multi-process driver: split the accounts over `processes` spawned generator processes, send
them the scenario's commands, merge their answers, and sample CPU/RSS of both process trees."""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from bench.loadgen import procstat
from bench.loadgen.launcher import Target
from bench.loadgen.scenarios import worker_main

COMMAND_TIMEOUT = 300.0


class GeneratorError(RuntimeError):
    pass


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(math.ceil(q / 100 * len(ordered)), 1)
    return ordered[rank - 1]


def ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 2)


def latency_summary(values: Sequence[float]) -> dict[str, Any]:
    return {"p50_ms": ms(percentile(values, 50)), "p99_ms": ms(percentile(values, 99)),
            "max_ms": ms(max(values) if values else None)}  # fmt: skip


@dataclass
class Options:
    scenario: str
    processes: int = 1
    tls: bool = True
    duration: float = 10.0
    concurrency: int = 8  # login: loops per process; idle/chat: simultaneous logins per process
    sessions: int = 1000  # idle
    pairs: int = 20  # chat, in total
    rates: list[float] = field(default_factory=lambda: [200.0])  # chat steps, messages/s in total
    p99_limit_ms: float = 100.0  # chat: a step passes with p99 under this and nothing lost
    drain: float = 2.0  # chat: seconds to wait for the last messages of a step
    settle: float = 1.0  # idle: seconds between the last login and the RSS sample
    occupants: int = 100  # muc: accounts in the room
    senders: int = 10  # muc: how many of the occupants send (bench0..)
    room: str = ""  # muc: the room's bare JID ("" → bench-room@conference.<domain>)
    warmup: float = 0.0  # chat, muc, cpu: seconds at the first rate before the steps, not judged
    io: str = "epoll"  # chat, muc: "epoll" (one EpollLoop thread per process) or "trio" (tasks)
    sasl: str | None = None  # SCRAM-SHA-1 or SCRAM-SHA-256; None: the first the server offers
    logins: int = 0  # login: this many logins over distinct accounts (0: timed loops)
    login_concurrency: int = 50  # login with `logins`: simultaneous logins over all processes
    #: login with `logins`: the ways to log in, each a measured phase over the same accounts, in
    #: this order: scram (RFC 6120), sasl2 (XEP-0388 + Bind 2), fast (XEP-0484 token + Bind 2)
    login_methods: list[str] = field(default_factory=lambda: ["scram"])
    cpu_users: list[int] = field(default_factory=lambda: [1000, 20])  # cpu: users per phase
    cpu_user_rates: list[float] = field(default_factory=lambda: [0.5, 60.0])  # cpu: msg/s per user
    idle: float = 0.0  # chat: seconds measured with every user online and nothing sent, first

    def accounts_needed(self) -> int:
        """The accounts the scenario logs in (a subset of those provisioned)."""
        if self.scenario == "login":
            return self.logins or self.processes * self.concurrency
        if self.scenario == "idle":
            return self.sessions
        if self.scenario == "muc":
            return self.occupants
        if self.scenario == "cpu":
            return _even(max(self.cpu_users))
        return 2 * self.pairs


def _even(count: int) -> int:
    return count + count % 2


def account_names(count: int, password: str = "bench-password") -> list[tuple[str, str]]:
    return [(f"bench{i}", password) for i in range(count)]


def spread(accounts: Sequence[tuple[str, str]], count: int) -> list[tuple[str, str]]:
    """`count` of `accounts`, evenly spread over all of them (bench0, bench10, bench20, ... for
    1,000 of 10,000), so that the accounts a scenario uses are not just the first ones created."""
    total = len(accounts)
    if count > total:
        raise ValueError(f"the scenario needs {count} accounts, only {total} provisioned")
    return [accounts[i * total // count] for i in range(count)]


class Driver:
    def __init__(self, options: Options, target: Target, users: Sequence[tuple[str, str]]) -> None:
        self.options = options
        self.target = target
        self.users = list(users)
        self.room = options.room or f"bench-room@conference.{target.domain}"
        self.conns: list[Connection] = []
        self.procs: list[multiprocessing.process.BaseProcess] = []

    # ---- process management

    def _shares(self) -> list[list[tuple[str, str]]]:
        n = self.options.processes
        if self.options.scenario in ("chat", "cpu"):  # keep both members of a pair in one process
            pairs = [self.users[i : i + 2] for i in range(0, len(self.users) - 1, 2)]
            return [[u for pair in pairs[k::n] for u in pair] for k in range(n)]
        return [self.users[k::n] for k in range(n)]

    def start(self) -> None:
        context = multiprocessing.get_context("spawn")
        for k, share in enumerate(self._shares()):
            spec = {"scenario": "chat" if self.options.scenario == "cpu" else self.options.scenario,
                    "host": self.target.host, "port": self.target.port, "domain": self.target.domain,
                    "tls": self.options.tls, "users": share, "sasl": self.options.sasl,
                    "io": self.options.io,
                    "endpoints": self.target.endpoints or [(self.target.host, self.target.port)]}  # fmt: skip
            if self.options.scenario == "muc":  # _shares deals accounts round-robin: k, k + n, ...
                indices = list(range(k, len(self.users), self.options.processes))
                senders = list(range(min(self.options.senders, len(self.users))))
                spec |= {"room": self.room, "indices": indices, "senders": senders}
            parent, child = context.Pipe()
            proc = context.Process(target=worker_main, args=(child, spec), daemon=True)
            proc.start()
            child.close()
            self.conns.append(parent)
            self.procs.append(proc)
        for answer in self._collect():
            if not answer.get("ready"):
                raise GeneratorError(f"generator process failed to start: {answer}")

    def stop(self) -> None:
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.send(("exit", {}))
        for proc in self.procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
        for conn in self.conns:
            conn.close()

    def __enter__(self) -> Driver:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _collect(self) -> list[dict[str, Any]]:
        answers = []
        deadline = time.monotonic() + COMMAND_TIMEOUT
        for conn, proc in zip(self.conns, self.procs, strict=True):
            while not conn.poll(0.2):
                if not proc.is_alive():
                    raise GeneratorError(f"generator process {proc.pid} died (exit code {proc.exitcode})")
                if time.monotonic() > deadline:
                    raise GeneratorError(f"generator process {proc.pid} did not answer")
            answer = conn.recv()
            if "exception" in answer:
                raise GeneratorError(f"generator process {proc.pid}: {answer['exception']}")
            answers.append(answer)
        return answers

    def command(self, name: str, per_process: list[dict[str, Any]] | None = None,
                **kwargs: Any) -> list[dict[str, Any]]:  # fmt: skip
        for index, conn in enumerate(self.conns):
            conn.send((name, per_process[index] if per_process else kwargs))
        return self._collect()

    # ---- measurement

    def samples(self) -> tuple[procstat.Sample | None, procstat.Sample]:
        """The server's process trees (its own and its database's, if it has one) and the
        generator's processes."""
        now = time.monotonic()
        roots = self.target.roots
        pids = [pid for root in roots for pid in procstat.process_tree(root)]
        server = procstat.sample(pids, now) if roots else None
        generator = procstat.sample([p.pid for p in self.procs if p.pid is not None], now)
        return server, generator

    def _database_sample(self) -> procstat.Sample | None:
        pid = self.target.database_pid
        return procstat.tree_sample(pid, time.monotonic()) if pid else None

    def measured(self, command: str, per_process: list[dict[str, Any]] | None = None,
                 **kwargs: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:  # fmt: skip
        """Run a command; return the answers and the CPU use of both sides while it ran."""
        start = self.cpu_start()
        answers = self.command(command, per_process, **kwargs)
        return answers, self.cpu_since(start)

    def cpu_start(self) -> tuple[procstat.Sample | None, procstat.Sample, procstat.Sample | None]:
        return (*self.samples(), self._database_sample())

    def cpu_since(self, start: tuple[procstat.Sample | None, procstat.Sample,
                                     procstat.Sample | None]) -> dict[str, Any]:  # fmt: skip
        """Both sides' CPU since `start` (the server's including its database; the database's
        alone under "database" when the server has one)."""
        server0, gen0, db0 = start
        server1, gen1 = self.samples()
        db1 = self._database_sample()
        cpu: dict[str, Any] = {
            "generator": procstat.usage(gen0, gen1) | {"processes": gen1.processes},
            "server": None if server0 is None or server1 is None
            else procstat.usage(server0, server1) | {"processes": server1.processes},
        }  # fmt: skip
        if db0 is not None and db1 is not None:
            cpu["database"] = procstat.usage(db0, db1) | {"processes": db1.processes}
        return cpu

    # ---- scenarios

    def run(self) -> dict[str, Any]:
        return getattr(self, f"run_{self.options.scenario}")()  # type: ignore[no-any-return]

    def run_login(self) -> dict[str, Any]:
        if self.options.logins and self.options.login_methods != ["scram"]:
            return self._run_login_methods()
        if self.options.logins:
            return self._run_distinct_logins()
        started = time.monotonic()
        answers, cpu = self.measured("run", duration=self.options.duration)
        elapsed = time.monotonic() - started
        latencies = [x for a in answers for x in a["latencies"]]
        ok = sum(a["ok"] for a in answers)
        return {"logins": ok, "failed": sum(a["failed"] for a in answers),
                "seconds": round(elapsed, 3), "logins_per_second": round(ok / elapsed, 1),
                **latency_summary(latencies),
                "concurrency": self.options.concurrency * self.options.processes,
                "errors": [e for a in answers for e in a["errors"]][:10], "cpu": cpu}  # fmt: skip

    def _run_login_methods(self) -> dict[str, Any]:
        """One distinct-logins phase per login method over the same accounts, after a warm-up
        that logs each in once with SASL2 and fetches its FAST token (not measured; it also
        activates every account, so no phase meets colder users than another). The first
        method's figures are the run's; every method's are under "methods", with the others'
        logins/s and server CPU per login against the first's."""
        total, n = self.options.login_concurrency, len(self.conns)
        warm = self.command("fast_tokens", [{"concurrency": total // n + (k < total % n)} for k in range(n)])
        tokens = sum(a["tokens"] for a in warm)
        methods = {method: self._run_distinct_logins(method) for method in self.options.login_methods}
        first_name = self.options.login_methods[0]
        first = methods[first_name]
        ratios: dict[str, Any] = {}
        for name, result in methods.items():
            cpu, base_cpu = result.get("server_cpu_ms_per_login"), first.get("server_cpu_ms_per_login")
            ratios[name] = {
                "logins_per_second": round(result["logins_per_second"] / first["logins_per_second"], 2)
                if first["logins_per_second"] else None,
                "server_cpu_ms_per_login": round(cpu / base_cpu, 2) if cpu and base_cpu else None,
            }  # fmt: skip
        return {**first, "methods": methods, "against": first_name, "ratios": ratios, "warmup_tokens": tokens,
                "warmup_errors": [e for a in warm for e in a["errors"]][:10]}  # fmt: skip

    def _run_distinct_logins(self, method: str = "scram") -> dict[str, Any]:
        """Every account of the run logs in once (a cold user each time), `login_concurrency`
        logins at a time over all generator processes."""
        total, n = self.options.login_concurrency, len(self.conns)
        per_process = [{"concurrency": total // n + (k < total % n), "method": method} for k in range(n)]
        started = time.monotonic()
        answers, cpu = self.measured("distinct", per_process)
        elapsed = time.monotonic() - started
        latencies = [x for a in answers for x in a["latencies"]]
        ok = sum(a["ok"] for a in answers)
        server = cpu["server"]
        return {"distinct": True, "logins": ok, "failed": sum(a["failed"] for a in answers),
                "attempted": len(self.users), "seconds": round(elapsed, 3),
                "logins_per_second": round(ok / elapsed, 1), **latency_summary(latencies),
                "concurrency": total,
                "server_cpu_ms_per_login": None if not server or not ok
                else round(server["cpu_seconds"] / ok * 1000, 3),
                "generator_cpu_ms_per_login": round(cpu["generator"]["cpu_seconds"] / ok * 1000, 3)
                if ok else None,
                "errors": [e for a in answers for e in a["errors"]][:10], "cpu": cpu}  # fmt: skip

    def run_idle(self) -> dict[str, Any]:
        time.sleep(self.options.settle)
        baseline, _ = self.samples()
        database_baseline = self._database_sample()
        answers, cpu = self.measured("connect", concurrency=self.options.concurrency)
        connected = sum(a["connected"] for a in answers)
        time.sleep(self.options.settle)
        loaded, _ = self.samples()
        database_loaded = self._database_sample()
        alive = sum(a["alive"] for a in self.command("check"))
        result: dict[str, Any] = {
            "sessions": self.options.sessions, "connected": connected, "alive": alive,
            "failed": sum(a["failed"] for a in answers),
            "connect_seconds": round(max(a["seconds"] for a in answers), 3),
            "errors": [e for a in answers for e in a["errors"]][:10], "cpu_during_connect": cpu,
            "baseline_rss_kb": None, "loaded_rss_kb": None, "kb_per_session": None,
        }  # fmt: skip
        if baseline is not None and loaded is not None:
            result["baseline_rss_kb"] = baseline.rss // 1024
            result["loaded_rss_kb"] = loaded.rss // 1024
            result["server_processes"] = loaded.processes
            if connected:
                result["kb_per_session"] = round((loaded.rss - baseline.rss) / 1024 / connected, 1)
        if database_baseline is not None and database_loaded is not None:  # included above, and alone:
            result["database_baseline_rss_kb"] = database_baseline.rss // 1024
            result["database_loaded_rss_kb"] = database_loaded.rss // 1024
        self.command("close")
        return result

    def _stepped(self, one_step: Callable[[int, float, float], dict[str, Any]]) -> dict[str, Any]:
        """The steps of `--rates` (after the warm-up, if any) until the first failing one:
        `one_step(step_id, rate, duration)` runs one and returns it with its "passed"."""
        result: dict[str, Any] = {}
        if self.options.warmup > 0:  # not a step: first messages load per-user state everywhere
            result["warmup"] = one_step(0, self.options.rates[0], self.options.warmup)
        steps: list[dict[str, Any]] = []
        best = None
        for step_id, rate in enumerate(self.options.rates, start=1):
            step = one_step(step_id, rate, self.options.duration)
            steps.append(step)
            if not step["passed"]:
                break
            best = step
        return result | {"steps": steps, "best": best}

    def _connect_chat(self) -> list[int]:
        """Log every chat user in; the number logged in per process."""
        answers = self.command("connect", concurrency=self.options.concurrency)
        users_per_process = [a["connected"] for a in answers]
        if sum(users_per_process) != len(self.users):
            raise GeneratorError(f"only {sum(users_per_process)} of {len(self.users)} chat users logged in")
        return users_per_process

    def _chat_step(self, step_id: int, rate: float, duration: float, users_per_process: list[int],
                   active_users: int | None = None) -> dict[str, Any]:  # fmt: skip
        """One step of chat: `rate` msg/s in total for `duration` s over the first
        `active_users` users (in pairs; all by default), judged and measured."""
        active = self._active_per_process(users_per_process, active_users)
        total_active = sum(active)
        per_process = [{"step_id": step_id, "rate": rate * n / total_active if total_active else 0.0,
                        "duration": duration, "drain": self.options.drain, "active": n}
                       for n in active]  # fmt: skip
        before = self.counters()
        started = time.monotonic()
        answers, cpu = self.measured("step", per_process)
        elapsed = time.monotonic() - started
        after = self.counters()
        sent = sum(a["sent"] for a in answers)
        received = sum(a["received"] for a in answers)
        latencies = [x for a in answers for x in a["latencies"]]
        lossy = [p for a in answers for p in a["pairs"] if p["sent"] != p["received"]]
        step = {"step": step_id, "target_rate": rate, "users": total_active,
                "per_user_rate": round(rate / total_active, 4) if total_active else None,
                "achieved_rate": round(sent / duration, 1), "sent": sent,
                "received": received, "lost": sent - received, "lossy_pairs": lossy[:10],
                "duplicates": sum(a["duplicates"] for a in answers),
                "late": sum(a["late"] for a in answers), **latency_summary(latencies),
                "seconds": round(elapsed, 3), "cpu": cpu, **per_message(cpu, sent),
                **crossings(before, after, sent)}  # fmt: skip
        step["passed"] = bool(sent and sent == received and step["p99_ms"] is not None
                              and step["p99_ms"] < self.options.p99_limit_ms
                              and step["achieved_rate"] >= 0.95 * rate)  # fmt: skip
        return step

    def _active_per_process(self, users_per_process: list[int], active_users: int | None) -> list[int]:
        """How many of each process's users send when `active_users` do in total: whole pairs,
        dealt round-robin like the pairs themselves (see _shares), from each process's first."""
        if active_users is None:
            return list(users_per_process)
        n = len(users_per_process)
        pairs = _even(active_users) // 2
        return [min(2 * ((pairs - k + n - 1) // n), users) for k, users in enumerate(users_per_process)]

    def counters(self) -> dict[str, int] | None:
        """The server's own counters now (mesh frames, for several nodes), if it has any."""
        return None if self.target.counters is None else self.target.counters()

    def _idle(self) -> dict[str, Any]:
        """The server's CPU for `--idle` s with every user online and nothing sent: what being up
        costs per second, apart from the messages (e.g. a second node's own upkeep)."""
        before = self.counters()
        start = self.cpu_start()
        time.sleep(self.options.idle)
        cpu = self.cpu_since(start)
        return {"seconds": self.options.idle, "cpu": cpu, **crossings(before, self.counters(), 0)}

    def run_chat(self) -> dict[str, Any]:
        users_per_process = self._connect_chat()
        idle = {"idle": self._idle()} if self.options.idle > 0 else {}

        def one_step(step_id: int, rate: float, duration: float) -> dict[str, Any]:
            return self._chat_step(step_id, rate, duration, users_per_process)

        stepped = self._stepped(one_step)
        self.command("close")
        return {"pairs": len(self.users) // 2, "step_seconds": self.options.duration,
                "p99_limit_ms": self.options.p99_limit_ms, **idle, **stepped}  # fmt: skip

    def run_cpu(self) -> dict[str, Any]:
        """The server's CPU per message at each (users, msg/s per user) phase of the run, e.g.
        1,000 users at 0.5 msg/s (500 msg/s) and 20 users at 60 msg/s (1,200 msg/s): the same
        server, the same logged-in users (those not in a phase stay online, idle)."""
        users_per_process = self._connect_chat()
        phases = list(zip(self.options.cpu_users, self.options.cpu_user_rates, strict=True))
        result: dict[str, Any] = {"users": len(self.users), "phase_seconds": self.options.duration}
        if self.options.warmup > 0:  # every user's first messages, not measured
            users, per_user = phases[0]
            result["warmup"] = self._chat_step(0, users * per_user, self.options.warmup,
                                               users_per_process, users)  # fmt: skip
        measured = []
        for step_id, (users, per_user) in enumerate(phases, start=1):
            step = self._chat_step(step_id, users * per_user, self.options.duration, users_per_process, users)
            measured.append(step)
        result["phases"] = measured
        figures = [step["server_cpu_us_per_message"] for step in measured]
        result["server_cpu_us_per_message"] = figures
        first, last = figures[0], figures[-1]
        result["ratio_first_to_last"] = round(first / last, 2) if first and last else None
        self.command("close")
        return result

    def run_muc(self) -> dict[str, Any]:
        answers = self.command("connect", concurrency=self.options.concurrency)
        occupants = sum(a["connected"] for a in answers)
        if occupants != len(self.users):
            raise GeneratorError(f"only {occupants} of {len(self.users)} occupants logged in")
        # The creator (the first occupant, in process 0) alone first: it configures the new room.
        self.command("join", concurrency=1, only=[0])
        joined = sum(a["joined"] for a in self.command("join", concurrency=self.options.concurrency))
        if joined != occupants:
            raise GeneratorError(f"only {joined} of {occupants} occupants joined {self.room}")
        senders = min(self.options.senders, occupants)

        def one_step(step_id: int, rate: float, duration: float) -> dict[str, Any]:
            started = time.monotonic()
            start = self.cpu_start()
            sent_answers = self.command("send", step_id=step_id, per_sender_rate=rate / senders,
                                        duration=duration)  # fmt: skip
            sent = sum(n for a in sent_answers for n in a["sent"].values())
            answers = self.command("collect", expected=sent, drain=self.options.drain)
            cpu = self.cpu_since(start)
            elapsed = time.monotonic() - started
            received = sum(a["received"] for a in answers)
            latencies = [x for a in answers for x in a["latencies"]]
            short = [o for a in answers for o in a["occupants"] if o["received"] != sent]
            expected = sent * occupants
            step = {"step": step_id, "target_rate": rate, "target_deliveries_per_second": rate * occupants,
                    "achieved_rate": round(sent / duration, 1),
                    "deliveries_per_second": round(received / duration, 1),
                    "sent": sent, "expected_deliveries": expected, "received": received,
                    "lost": expected - received, "short_occupants": short[:10],
                    "duplicates": sum(a["duplicates"] for a in answers),
                    "late": sum(a["late"] for a in answers),
                    "message_errors": sum(a["message_errors"] for a in answers),
                    "errors": [e for a in answers for e in a["errors"]][:10],
                    **latency_summary(latencies), "seconds": round(elapsed, 3), "cpu": cpu,
                    **per_message(cpu, sent), **per_message(cpu, received, "delivery")}  # fmt: skip
            step["passed"] = bool(sent and received == expected and not step["message_errors"]
                                  and step["p99_ms"] is not None
                                  and step["p99_ms"] < self.options.p99_limit_ms
                                  and step["achieved_rate"] >= 0.95 * rate)  # fmt: skip
            return step

        stepped = self._stepped(one_step)
        self.command("close")
        return {"room": self.room, "occupants": occupants, "senders": senders,
                "step_seconds": self.options.duration, "p99_limit_ms": self.options.p99_limit_ms,
                **stepped}  # fmt: skip


def crossings(before: dict[str, int] | None, after: dict[str, int] | None, sent: int) -> dict[str, Any]:
    """The mesh frames sent between workers while a step ran (none without counters): with one
    worker per node, each is one node-to-node crossing; and how many per message sent."""
    if before is None or after is None:
        return {}
    frames = after["mesh_frames_out"] - before["mesh_frames_out"]
    return {"crossings": frames, "frames_in": after["mesh_frames_in"] - before["mesh_frames_in"],
            "crossings_per_message": round(frames / sent, 3) if sent else None}  # fmt: skip


def per_message(cpu: dict[str, Any], count: int, unit: str = "message") -> dict[str, float | None]:
    """Each side's CPU microseconds per message (or per delivery): CPU seconds / count."""
    figures: dict[str, float | None] = {}
    for side in ("server", "generator"):
        usage = cpu.get(side)
        figures[f"{side}_cpu_us_per_{unit}"] = (
            round(usage["cpu_seconds"] / count * 1e6, 1) if usage and count else None
        )
    return figures


def machine() -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu_model": model, "platform": platform.platform(),
            "python": platform.python_version()}  # fmt: skip
