"""Soak test: mixed load against a real server for a long time, then the books (docs/hardening.md).

    .venv/bin/python -m bench.soak --minutes 60 --json soak.json
    .venv/bin/python -m bench.soak --seconds 40          # the bounded run of tests/bench/test_soak.py

It starts imactor (`tests.support.server.running_server`: `imactor supervise`, two workers, port
0, loopback) with short timeouts, so that what a vanished client leaves behind is cleaned within
the run ([limits] idle_timeout, ping_timeout, resume_timeout; [muc] idle_timeout), and runs:

- **chat**: `--pairs` pairs of XEP-0198 clients (`tests.support.chaos.SmClient`), each sender
  sending numbered messages to its partner's bare JID at `--rate` per second for the whole run.
  Every `--drop-every` seconds one client of a random pair loses its TCP connection without a
  word (`drop`) and resumes; receivers go offline cleanly now and then (their messages go to
  offline storage) and come back as a new session;
- **logins** over distinct accounts (`soak-login-N`, each used once until the pool wraps):
  STARTTLS, PLAIN, bind, a ping, `</stream:stream>`, at `--logins-per-second`;
- **rooms**: every `--room-every` seconds `--occupants` clients join a room, each sends a few
  groupchat messages, each checks that it received every message of the round, and they leave;
- **vanishing clients**: every `--vanish-every` seconds a client logs in, enables resumable
  XEP-0198, and then neither reads nor writes nor closes its socket (a laptop whose network went
  away). The server must ping it, time it out, wait out resumption and free everything.

Before the load, a warm-up round of each kind and a quiet period give the **baseline**: resident
memory (RSS) and open file descriptors of each worker process (from /proc, pids from the status
socket), with no session open. After the load every client is closed (the vanished ones too, once
the server gave up on them), and when the status socket shows no session and no room the same
figures are taken again. The run **passes** when:

- nothing acknowledged is lost: every message the server acked (an `h` covered it) reached its
  receiver live, delayed (offline storage, resumption) or in its archive (XEP-0313); the server
  never acked more than was sent;
- every worker's open file descriptors other than the database's are back to the baseline
  (within `--fd-slack`), those on the database's files within what its connection pool keeps, and its
  memory within `--rss-slack-mb` of it: its RSS less the resident pages of the database files it
  maps (`mapped_kb`: SQLite reads the database through a memory map, whose pages grow with the
  database, not with sessions; both figures are in the report);
- every login and every room round succeeded, and the server log has no traceback.

The report (stdout, `--json FILE`) has the figures: messages sent, acked, received by way; logins;
room rounds; drops and resumptions; vanished clients; per worker the baseline, peak and final RSS,
mapped database pages and memory (the difference)
and descriptors, and the peak sessions with the memory they cost (kB per session at the peak).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
from lxml import etree

from imactor.node.status import StatusUnavailable, request_status
from imactor.storage.db import READERS
from tests.support import server as server_support
from tests.support.chaos import Receipt, SmClient
from tests.support.raw import RawClient
from tests.support.server import ServerProcess, running_server

PASSWORD = "soak-password"
DOMAIN = "localhost"
MUC = f"conference.{DOMAIN}"
NS_MUC = "http://jabber.org/protocol/muc"
NS_SM = "urn:xmpp:sm:3"
#: Short enough that a vanished client is pinged, timed out and its resumption expired in the run.
SERVER_LIMITS = """
[limits]
idle_timeout = {idle}
ping_timeout = {ping}
resume_timeout = {resume}

[muc]
idle_timeout = 5
"""


@dataclass
class Options:
    seconds: float
    pairs: int = 8
    rate: float = 2.0
    drop_every: float = 5.0
    offline_every: float = 20.0
    logins_per_second: float = 1.0
    room_every: float = 15.0
    occupants: int = 5
    room_messages: int = 3
    vanish_every: float = 20.0
    workers: int = 2
    idle: float = 6.0
    ping: float = 4.0
    resume: float = 10.0
    warmup: float = 15.0
    fd_slack: int = 2
    rss_slack_mb: float = 16.0
    seed: int = 1
    #: Wait for the user actors to stop too before measuring (a minute more, twice).
    settle_users: bool = True
    keep: Path | None = None


@dataclass
class Tally:
    logins: int = 0
    login_failures: list[str] = field(default_factory=list)
    room_rounds: int = 0
    room_failures: list[str] = field(default_factory=list)
    room_messages: int = 0
    vanished: int = 0
    drops: int = 0
    offline_periods: int = 0


# ---- processes -----------------------------------------------------------------------------------


def worker_pids(document: dict[str, Any]) -> dict[int, int]:
    return {w["index"]: w["pid"] for w in document["workers"] if w.get("pid")}


def open_fds(pid: int, directory: Path) -> tuple[int, int]:
    """Open descriptors of `pid`: all of them, and those on files under `directory` (the
    database, its WAL and -shm: the storage layer's pooled connections)."""
    prefix = str(directory.resolve())
    total = inside = 0
    for name in os.listdir(f"/proc/{pid}/fd"):
        total += 1
        with contextlib.suppress(OSError):  # closed since the listing
            inside += os.readlink(f"/proc/{pid}/fd/{name}").startswith(prefix)
    return total, inside


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def mapped_kb(pid: int, directory: Path) -> int:
    """Resident pages of the files under `directory` that `pid` maps: the SQLite database, read
    through a memory map (`PRAGMA mmap_size`), and its WAL index (-shm). They count in RSS but are
    the kernel's page cache of those files (reclaimable, shared between the workers), and grow with
    the database, not with sessions: the soak judges the memory beside them."""
    total, inside = 0, False
    prefix = str(directory.resolve())
    with open(f"/proc/{pid}/smaps") as smaps:
        for line in smaps:
            first = line.split(None, 1)[0]
            if "-" in first and not first.endswith(":"):  # a mapping's header: its path comes last
                inside = line.rstrip().split(None, 5)[-1].startswith(prefix)
            elif inside and first == "Rss:":
                total += int(line.split()[1])
    return total


#: Most descriptors the storage layer keeps open on the database's files in one worker: its
#: writer and `READERS` pooled readers (opened on demand as reads run side by side, then kept),
#: each with the database, its WAL and the WAL index.
DB_FDS_BOUND = (READERS + 1) * 3


def worker_sample(pid: int, data_dir: Path) -> dict[str, int]:
    fds, db_fds = open_fds(pid, data_dir)
    return {
        "pid": pid, "rss_kb": rss_kb(pid), "db_kb": mapped_kb(pid, data_dir), "fds": fds, "db_fds": db_fds,
    }  # fmt: skip


async def status(server: ServerProcess) -> dict[str, Any]:
    return await trio.to_thread.run_sync(lambda: request_status(server.status_socket, timeout=10))


async def sample(server: ServerProcess) -> dict[str, Any]:
    document = await status(server)
    totals = document["totals"]
    return {
        "at": round(time.monotonic(), 1),
        "sessions": totals["sessions"],
        "users": totals["users"],
        "rooms": totals["rooms"],
        "workers": {
            str(index): worker_sample(pid, server.data_dir)
            for index, pid in sorted(worker_pids(document).items())
        },
    }


async def wait_quiet(server: ServerProcess, timeout: float, *, users: bool) -> dict[str, Any]:
    """Wait until no session and no room is left, and with `users` no user actor either (they
    stop 60 s after their last session: `UserActor.idle_timeout`); then settle 2 s."""
    with trio.move_on_after(timeout):
        while True:
            with contextlib.suppress(StatusUnavailable):
                now = await sample(server)
                if now["sessions"] == 0 and now["rooms"] == 0 and (now["users"] == 0 or not users):
                    break
            await trio.sleep(0.5)
    await trio.sleep(2)
    return await sample(server)


# ---- the kinds of load -----------------------------------------------------------------------------


@dataclass
class Pair:
    index: int
    sender: SmClient
    receivers: list[SmClient]  # every generation: the receiver goes offline and comes back

    @property
    def receiver(self) -> SmClient:
        return self.receivers[-1]


async def send_steadily(pair: Pair, rate: float, stop: trio.Event) -> None:
    interval = 1 / rate
    next_at = trio.current_time()
    for n in itertools.count(1):
        if stop.is_set():
            return
        await pair.sender.send_chat(pair.receiver.bare, pair.index, n)
        next_at = max(next_at + interval, trio.current_time())
        with trio.move_on_at(next_at):
            await stop.wait()


async def chaos_of_clients(pairs: list[Pair], nursery: trio.Nursery, options: Options, tally: Tally,
                           rng: random.Random, stop: trio.Event) -> None:  # fmt: skip
    """Drops (resumed) and offline periods (a clean close, then a new session), in turn."""
    next_drop = trio.current_time() + options.drop_every
    next_offline = trio.current_time() + options.offline_every
    while not stop.is_set():
        with trio.move_on_at(min(next_drop, next_offline)):
            await stop.wait()
        if stop.is_set():
            return
        pair = rng.choice(pairs)
        if trio.current_time() >= next_drop:
            next_drop += options.drop_every
            await rng.choice([pair.sender, pair.receiver]).drop()
            tally.drops += 1
        else:
            next_offline += options.offline_every
            old = pair.receiver
            if not old.ready:
                continue
            await old.aclose()
            tally.offline_periods += 1
            await trio.sleep(min(3.0, options.offline_every / 3))
            new = SmClient(old.username, PASSWORD, old.port, resource=f"back{len(pair.receivers)}")
            pair.receivers.append(new)
            await nursery.start(new.run)


async def distinct_logins(port: int, accounts: Sequence[str], options: Options, tally: Tally,
                          stop: trio.Event) -> None:  # fmt: skip
    interval = 1 / options.logins_per_second
    for username in itertools.cycle(accounts):
        if stop.is_set():
            return
        started = trio.current_time()
        try:
            with trio.fail_after(20):
                client = await RawClient.connect(port)
                try:
                    await client.login(username, PASSWORD, "login")
                    pong = await client.iq("<ping xmlns='urn:xmpp:ping'/>", to=DOMAIN)
                    if pong.get("type") != "result":
                        raise AssertionError(f"ping answered {pong.get('type')}")
                    await client.send("</stream:stream>")
                    await client.wait_closed()
                finally:
                    await client.aclose()
            tally.logins += 1
        except Exception as exc:  # every failure is counted and reported; the run goes on
            tally.login_failures.append(f"{username}: {type(exc).__name__}: {exc}"[:200])
        with trio.move_on_at(started + interval):
            await stop.wait()


async def room_round(port: int, names: Sequence[str], room: str, messages: int, tally: Tally) -> None:
    """Everyone joins `room`, sends `messages` groupchat messages, and must receive everyone's."""
    clients: list[RawClient] = []
    try:
        with trio.fail_after(60):
            for name in names:
                client = await RawClient.connect(port)
                clients.append(client)
                await client.login(name, PASSWORD, "room")
                await client.send(f"<presence to='{room}/{name}'><x xmlns='{NS_MUC}'>"
                                  "<history maxstanzas='0'/></x></presence>")  # fmt: skip
                own = f"{room}/{name}"
                joined = await client.next_element(
                    lambda e, own=own: e.tag == "{jabber:client}presence" and e.get("from") == own
                )
                if joined.get("type") == "error":
                    raise AssertionError(f"{name} could not join: {etree.tostring(joined)[:200]!r}")
                if joined.find(f".//{{{NS_MUC}#user}}status[@code='201']") is not None:
                    # A new room stays locked until its owner accepts the default configuration
                    # (XEP-0045 §10.1.2, an instant room).
                    answer = await client.iq(f"<query xmlns='{NS_MUC}#owner'><x xmlns='jabber:x:data' "
                                             "type='submit'/></query>", to=room, type_="set")  # fmt: skip
                    if answer.get("type") != "result":
                        raise AssertionError(f"instant room refused: {etree.tostring(answer)[:200]!r}")
            for client, name in zip(clients, names, strict=True):
                for k in range(messages):
                    await client.send(
                        f"<message to='{room}' type='groupchat'><body>{name} {k}</body></message>"
                    )
            expected = {f"{name} {k}" for name in names for k in range(messages)}
            for client in clients:
                seen: set[str] = set()
                while seen != expected:
                    message = await client.next_element(
                        lambda e: (
                            e.tag == "{jabber:client}message" and e.get("type") in ("groupchat", "error")
                        )
                    )
                    if message.get("type") == "error":
                        raise AssertionError(f"room error: {message.get('id')}")
                    body = message.findtext("{jabber:client}body")
                    if body in expected:
                        seen.add(body)
            for client, name in zip(clients, names, strict=True):
                await client.send(f"<presence to='{room}/{name}' type='unavailable'/>")
                await client.send("</stream:stream>")
        tally.room_rounds += 1
        tally.room_messages += len(names) * messages
    except Exception as exc:
        tally.room_failures.append(f"{room}: {type(exc).__name__}: {exc}"[:300])
    finally:
        for client in clients:
            await client.aclose()


async def rooms(port: int, accounts: Sequence[str], options: Options, tally: Tally, stop: trio.Event) -> None:
    for round_number in itertools.count():
        start = round_number * options.occupants % max(1, len(accounts) - options.occupants + 1)
        names = accounts[start : start + options.occupants]
        await room_round(port, names, f"soak{round_number % 3}@{MUC}", options.room_messages, tally)
        with trio.move_on_after(options.room_every):
            await stop.wait()
        if stop.is_set():
            return


async def vanishing(port: int, accounts: Sequence[str], options: Options, tally: Tally,
                    stop: trio.Event, silent: list[RawClient]) -> None:  # fmt: skip
    """Clients that log in, enable resumption and then say nothing, never read, never close."""
    for username in itertools.cycle(accounts):
        with contextlib.suppress(Exception):
            with trio.fail_after(20):
                client = await RawClient.connect(port)
                silent.append(client)
                await client.login(username, PASSWORD, "vanish")
                await client.send(f"<presence/><enable xmlns='{NS_SM}' resume='true'/>")
            tally.vanished += 1
        with trio.move_on_after(options.vanish_every):
            await stop.wait()
        if stop.is_set():
            return


# ---- the run -------------------------------------------------------------------------------------------


async def run_load(server: ServerProcess, options: Options, seconds: float, accounts: dict[str, list[str]],
                   tally: Tally, timeline: list[dict[str, Any]]) -> dict[str, Any]:  # fmt: skip
    """Every kind of load for `seconds`; then the chat drained and checked, every client closed."""
    rng = random.Random(options.seed)
    port = server.c2s_port
    silent: list[RawClient] = []
    stop = trio.Event()
    async with trio.open_nursery() as clients:
        pairs = []
        for index in range(options.pairs):
            sender = SmClient(f"soak-s{index}", PASSWORD, port, available=False)
            receiver = SmClient(f"soak-r{index}", PASSWORD, port)
            await clients.start(sender.run)
            await clients.start(receiver.run)
            pairs.append(Pair(index, sender, [receiver]))
        async with trio.open_nursery() as load:
            for pair in pairs:
                load.start_soon(send_steadily, pair, options.rate, stop)
            load.start_soon(chaos_of_clients, pairs, clients, options, tally, rng, stop)
            load.start_soon(distinct_logins, port, accounts["login"], options, tally, stop)
            load.start_soon(rooms, port, accounts["room"], options, tally, stop)
            load.start_soon(vanishing, port, accounts["vanish"], options, tally, stop, silent)
            deadline = trio.current_time() + seconds
            while trio.current_time() < deadline:
                timeline.append(await sample(server))
                await trio.sleep(min(10.0, max(0.0, deadline - trio.current_time())))
            timeline.append(await sample(server))
            stop.set()
        for pair in pairs:
            await pair.receiver.wait_ready()
        drained = all([await pair.sender.wait_all_acked(60) for pair in pairs])
        await trio.sleep(1)  # the last messages reach the receivers
        archives = [await pair.receiver.archive(pair.sender.bare) for pair in pairs]
        for pair in pairs:
            for client in [pair.sender, *pair.receivers]:
                await client.aclose()
        clients.cancel_scope.cancel()
    # The vanished clients' sockets are closed only now, once the server had to give up on them
    # itself (the chat's drain and the archive queries gave it the time; wait_quiet waits the rest).
    for client in silent:
        with contextlib.suppress(Exception):
            client.stream.transport_stream.socket.close()  # type: ignore[attr-defined]
    books = chat_books(pairs, archives)
    books["drained"] = drained
    return books


def chat_books(pairs: list[Pair], archives: list[list[Receipt]]) -> dict[str, Any]:
    totals: Counter[str] = Counter()
    missing: dict[int, list[int]] = {}
    problems: list[str] = []
    for pair, archive in zip(pairs, archives, strict=True):
        sent, acked = set(pair.sender.books.sent), pair.sender.books.acked
        receipts = [r for receiver in pair.receivers for r in receiver.books.receipts if r.pair == pair.index]
        live = {r.n for r in receipts if r.how == "live"}
        delayed = {r.n for r in receipts if r.how == "delayed"}
        archived = {r.n for r in archive if r.pair == pair.index}
        received = live | delayed | archived
        totals.update(sent=len(sent), acked=len(acked), live=len(live), delayed=len(delayed),
                      archived=len(archived), only_in_archive=len(acked - live - delayed),
                      resumed=sum(1 for c in [pair.sender, *pair.receivers]
                                  for conn in c.books.connections if conn.how == "resumed"),
                      relogins=sum(1 for c in [pair.sender, *pair.receivers]
                                   for conn in c.books.connections if conn.how == "relogin"))  # fmt: skip
        if acked - received:
            missing[pair.index] = sorted(acked - received)
        if pair.sender.books.over_acks:
            problems.append(f"pair {pair.index}: the server acked more than was sent")
        if received - sent:
            problems.append(
                f"pair {pair.index}: received what was never sent: {sorted(received - sent)[:10]}"
            )
    return {"totals": dict(totals), "missing": missing, "problems": problems}


def provision(options: Options) -> dict[str, list[str]]:
    logins = max(10, int(options.seconds * options.logins_per_second) + 10)
    return {
        "chat": [f"soak-{kind}{i}" for i in range(options.pairs) for kind in ("s", "r")],
        "login": [f"soak-login{i}" for i in range(min(logins, 5000))],
        "room": [f"soak-room{i}" for i in range(options.occupants * 2)],
        # A vanished account is used again only once the server has forgotten its session.
        "vanish": [
            f"soak-vanish{i}" for i in range(min(20, int(options.seconds / options.vanish_every) + 2))
        ],
        "warm": [f"soak-warm{i}" for i in range(options.occupants + 2)],
    }


def judge(report: dict[str, Any], options: Options) -> list[str]:
    failures: list[str] = []
    chat = report["chat"]
    if chat["missing"]:
        failures.append(f"acknowledged but never received (pair: numbers): {chat['missing']}")
    failures += chat["problems"]
    if not chat["drained"]:
        failures.append("some messages were never acknowledged after the load stopped")
    for index, worker in report["workers"].items():
        # The database's descriptors aside: the storage pool opens readers as reads overlap and
        # keeps them, up to its bound; every other descriptor (sockets above all) must be back.
        others_final = worker["fds_final"] - worker["db_fds_final"]
        others_baseline = worker["fds_baseline"] - worker["db_fds_baseline"]
        if others_final > others_baseline + options.fd_slack:
            failures.append(f"worker {index}: {others_final} open descriptors besides the database's, "
                            f"baseline {others_baseline}")  # fmt: skip
        if worker["db_fds_final"] > DB_FDS_BOUND:
            failures.append(f"worker {index}: {worker['db_fds_final']} descriptors on the database's files, "
                            f"more than its connection pool keeps ({DB_FDS_BOUND})")  # fmt: skip
        # The database's mapped pages aside (`mapped_kb`): they follow the database's size.
        if worker["memory_kb_final"] > worker["memory_kb_baseline"] + options.rss_slack_mb * 1024:
            failures.append(
                f"worker {index}: memory (RSS without the mapped database) {worker['memory_kb_final']} kB, "
                f"baseline {worker['memory_kb_baseline']}"
            )
    final = report["final"]
    if final["sessions"] or final["rooms"] or (options.settle_users and final["users"]):
        failures.append(f"left after the load: {final['sessions']} sessions, {final['rooms']} rooms, "
                        f"{final['users']} user actors")  # fmt: skip
    tally = report["tally"]
    if tally["login_failures"]:
        failures.append(f"{len(tally['login_failures'])} logins failed: {tally['login_failures'][:3]}")
    if tally["room_failures"]:
        failures.append(f"{len(tally['room_failures'])} room rounds failed: {tally['room_failures'][:3]}")
    if report["server_log"]["tracebacks"]:
        failures.append(f"{report['server_log']['tracebacks']} tracebacks in the server log")
    return failures


async def soak(directory: Path, options: Options) -> dict[str, Any]:
    accounts = provision(options)
    users = [(name, PASSWORD) for names in accounts.values() for name in names]
    limits = SERVER_LIMITS.format(idle=options.idle, ping=options.ping, resume=options.resume)
    quiet_timeout = max(options.idle + options.ping + options.resume, 60) + 30
    started = time.monotonic()
    # On a busy machine two workers can take longer than the tests' 30 s to come up.
    server_support.START_TIMEOUT = max(server_support.START_TIMEOUT, 180.0)
    with running_server(directory, users=users, workers=options.workers, extra=limits) as server:
        provisioned_s = time.monotonic() - started
        timeline: list[dict[str, Any]] = []
        # Warm-up: a little of everything, then quiet: the baseline.
        warm = Options(**{**options.__dict__, "pairs": 2, "seconds": options.warmup})
        warm_accounts = {**accounts, "room": accounts["warm"], "login": accounts["warm"]}
        await run_load(server, warm, options.warmup, warm_accounts, Tally(), [])
        baseline = await wait_quiet(server, quiet_timeout, users=options.settle_users)
        tally = Tally()
        chat = await run_load(server, options, options.seconds, accounts, tally, timeline)
        final = await wait_quiet(server, quiet_timeout, users=options.settle_users)
        assert server.proc.poll() is None, "the node supervisor exited"
    log = (directory / "server.log").read_text(errors="replace")
    peak = max(timeline, key=lambda s: s["sessions"])
    workers = {}
    for index, first in baseline["workers"].items():
        last = final["workers"].get(index, {"rss_kb": 0, "db_kb": 0, "fds": 0, "db_fds": 0, "pid": None})
        workers[index] = {
            "pid_baseline": first["pid"], "pid_final": last["pid"],
            "rss_kb_baseline": first["rss_kb"], "rss_kb_final": last["rss_kb"],
            "rss_kb_peak": max(s["workers"][index]["rss_kb"] for s in timeline),
            "db_kb_baseline": first["db_kb"], "db_kb_final": last["db_kb"],
            "memory_kb_baseline": first["rss_kb"] - first["db_kb"],
            "memory_kb_final": last["rss_kb"] - last["db_kb"],
            "memory_kb_peak": max(s["workers"][index]["rss_kb"] - s["workers"][index]["db_kb"]
                                  for s in timeline),
            "fds_baseline": first["fds"], "fds_final": last["fds"],
            "fds_peak": max(s["workers"][index]["fds"] for s in timeline),
            "db_fds_baseline": first["db_fds"], "db_fds_final": last["db_fds"],
        }  # fmt: skip
    peak_rss = sum(w["rss_kb"] for w in peak["workers"].values())
    base_rss = sum(w["rss_kb"] for w in baseline["workers"].values())
    return {
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in options.__dict__.items()},
        "seconds": round(time.monotonic() - started, 1),
        "provision_seconds": round(provisioned_s, 1),
        "accounts": {kind: len(names) for kind, names in accounts.items()},
        "chat": chat,
        "tally": tally.__dict__,
        "baseline": baseline,
        "final": final,
        "peak": {
            "sessions": peak["sessions"],
            "users": peak["users"],
            "rooms": peak["rooms"],
            "kb_per_session": round((peak_rss - base_rss) / max(1, peak["sessions"]), 1),
        },
        "workers": workers,
        "timeline": timeline,
        "server_log": {"tracebacks": log.count("Traceback"), "errors": log.count(" ERROR ")},
    }


def parse_args(argv: Sequence[str] | None) -> tuple[Options, Path | None]:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    length = parser.add_mutually_exclusive_group(required=True)
    length.add_argument("--minutes", type=float)
    length.add_argument("--seconds", type=float)
    defaults = Options(seconds=0)
    for name in ("pairs", "rate", "drop_every", "offline_every", "logins_per_second", "room_every",
                 "occupants", "room_messages", "vanish_every", "workers", "idle", "ping", "resume",
                 "warmup", "fd_slack", "rss_slack_mb", "seed"):  # fmt: skip
        value = getattr(defaults, name)
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    parser.add_argument(
        "--no-settle-users",
        dest="settle_users",
        action="store_false",
        help="measure once sessions and rooms are gone, without waiting for user actors",
    )
    parser.add_argument("--keep", type=Path, help="run in this directory and keep it (server.log)")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args(argv)
    seconds = args.seconds if args.seconds is not None else args.minutes * 60
    values = {k: v for k, v in vars(args).items() if k in defaults.__dict__ and k != "seconds"}
    return Options(seconds=seconds, **values), args.json


def main(argv: Sequence[str] | None = None) -> None:
    options, json_path = parse_args(argv)
    with contextlib.ExitStack() as stack:
        if options.keep is not None:
            options.keep.mkdir(parents=True, exist_ok=True)
            directory = options.keep
        else:
            directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="imactor-soak-")))
        report = trio.run(soak, directory, options)
    report["failures"] = judge(report, options)
    text = json.dumps(report, indent=2)
    if json_path is not None:
        json_path.write_text(text + "\n")
    summary = {k: v for k, v in report.items() if k not in ("timeline", "baseline", "final")}
    print(json.dumps(summary, indent=2))
    sys.exit(1 if report["failures"] else 0)


if __name__ == "__main__":
    main()
