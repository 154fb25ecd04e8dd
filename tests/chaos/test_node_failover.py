"""Chaos: whole nodes of a cluster killed with SIGKILL under chat load; nothing acknowledged is lost.

Issue 16, "Failover of a whole node". Three nodes (tests/support/cluster.py: each a real `imactor
supervise` with one worker, on one PostgreSQL database, leases of 3 s renewed every 0.5 s). K
pairs of accounts, senders and receivers spread over the nodes; each sender sends numbered chat
messages to its receiver at a steady rate through a resumable XEP-0198 session
(`tests.support.chaos.SmClient`, which books exactly which messages an `h` from the server
covered). A client whose node dies tries the next node's port, as a client would the next
address of its DNS SRV lookup (RFC 6120 §3.2.1), and resumes there or logs in again, sending
again what no `h` covered.

Meanwhile the test kills the node that holds the most client sessions, whole: its supervisor and
its worker, SIGKILL, at once. Right after the kill a prober logged in on a surviving node sends
one message to an account whose home (`Membership.home`) was on the dead node. Recovery is
measured from the kill until both (a) the survivors' membership no longer lists the dead node's
worker and (b) that message is acknowledged (counted in the prober's `h`: stored by the account's
new home). Then the dead node is started again (same name, key and data dir) and rejoins; once
every client is connected and every sender has more messages acked, the next kill comes.

At the end the senders wait (bounded) until everything is acked, each receiver (and each
probe's recipient, logging in now: its offline messages) reads its archive (XEP-0313), and the
test asserts (`tests.support.chaos.check_books`): every acknowledged message reached its
recipient live, offline at the next login, or in the archive; the copies of a message the client
sent once all carry one stanza-id (the server stored it once); nothing arrived that was not sent.
The summary (kills with their recovery times, totals, per pair and per client) is printed and
written to ``chaos-summary.json`` in the test's tmp dir.

The short variant runs in `make test` (two kills, under a minute). ``IMACTOR_CHAOS_LONG=1`` runs
the long one (more pairs, more kills, some while clients are still reconnecting); docs/testing.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio

from imactor.cluster.endpoints import NODE_STRIDE
from imactor.cluster.placement import home
from tests.support.chaos import (
    SmClient,
    check_books,
    client_report,
    log_signs,
    pair_report,
    send_steadily,
    totals,
    wait_clients_back,
    wait_progress,
    write_summary,
)
from tests.support.cluster import NODES, Cluster, Node, keygen, wait_for_members
from tests.support.postgres import PostgresServer

pytestmark = [pytest.mark.postgres, pytest.mark.cluster]

PASSWORD = "chaos password"
LONG = os.environ.get("IMACTOR_CHAOS_LONG", "") not in ("", "0")
#: The nodes' log level ("info" or "debug" to read a failure in their server.log files).
LOG_LEVEL = os.environ.get("IMACTOR_CHAOS_LOG_LEVEL", "warning")
#: Probes' pair numbers start here (the senders' pairs are 0 … K-1).
PROBE_PAIRS = 1000
#: Accounts a probe may send from (one homed on a survivor): a few, since each costs a SCRAM
#: derivation at the start.
PROBERS = 6
#: Seconds a kill's recovery may take (the lease is 3 s; a bound, not the measure).
RECOVERY_TIMEOUT = 30.0


@dataclass(frozen=True)
class Plan:
    pairs: int
    kills: int
    rate: float  #: messages per second per sender
    warmup_acks: int  #: messages each sender gets acked before the first kill
    acks_between: int  #: messages each sender gets acked after a recovery, before the next kill
    quick_every: int  #: every n-th kill comes as soon as the previous node rejoined (0: never)
    drain: float  #: seconds the senders have at the end to get everything acked
    timeout: float  #: the whole run, once the nodes run
    seed: int


SEED = int(os.environ.get("IMACTOR_CHAOS_SEED", "0") or "0") or random.randrange(1, 2**31)
SHORT_PLAN = Plan(pairs=6, kills=2, rate=10, warmup_acks=10, acks_between=10, quick_every=0,
                  drain=25, timeout=120, seed=SEED)  # fmt: skip
LONG_PLAN = Plan(pairs=int(os.environ.get("IMACTOR_CHAOS_PAIRS", "12")),
                 kills=int(os.environ.get("IMACTOR_CHAOS_KILLS", "10")),
                 rate=10, warmup_acks=30, acks_between=40, quick_every=3, drain=40, timeout=900,
                 seed=SEED)  # fmt: skip


@dataclass
class NodeKill:
    """One node killed whole, and how long the cluster and the clients took to recover."""

    number: int
    node: str
    node_id: int
    pids: list[int]
    sessions: int  #: client sessions the node held just before
    at: float  #: trio.current_time() of the kill
    probe_to: str = ""  #: the account homed on the dead node that the probe went to
    membership_dropped_after: float | None = None  #: until no survivor lists the dead worker
    probe_acked_after: float | None = None  #: until the probe was acked (stored at its new home)
    restarted_after: float | None = None  #: until the node listened again
    rejoined_after: float | None = None  #: until the three nodes shared one membership again
    clients_back_after: float | None = None
    clients_dropped: int = 0

    @property
    def recovery(self) -> float | None:
        """Until the survivors dropped the node and a message to its users was accepted again."""
        if self.membership_dropped_after is None or self.probe_acked_after is None:
            return None
        return max(self.membership_dropped_after, self.probe_acked_after)

    def summary(self) -> dict[str, Any]:
        rounded = {key: None if value is None else round(value, 3) for key, value in (
            ("membership_dropped_after_s", self.membership_dropped_after),
            ("probe_acked_after_s", self.probe_acked_after), ("recovery_s", self.recovery),
            ("restarted_after_s", self.restarted_after), ("rejoined_after_s", self.rejoined_after),
            ("clients_back_after_s", self.clients_back_after))}  # fmt: skip
        return {"number": self.number, "node": self.node, "node_id": self.node_id, "pids": self.pids,
                "sessions": self.sessions, "clients_dropped": self.clients_dropped,
                "probe_to": self.probe_to, **rounded}  # fmt: skip


@dataclass
class Probe:
    """The message of one kill's probe: from `sender` to `receiver` (homed on the dead node)."""

    pair: int
    sender: SmClient
    receiver: str
    received: SmClient | None = None  #: the receiver's login at the end
    archive: list[Any] = field(default_factory=list)


# ---- the cluster ---------------------------------------------------------------------------------


def accounts(plan: Plan) -> tuple[list[str], list[str], list[str], list[str]]:
    """Senders, receivers, probe targets (a kill's probe writes to an unused one homed on the
    victim: a third of them are, so 3 per kill and a margin), probers."""
    pairs, targets = range(plan.pairs), range(3 * plan.kills + 6)
    return ([f"sender{i}" for i in pairs], [f"receiver{i}" for i in pairs],
            [f"away{i}" for i in targets], [f"prober{i}" for i in range(PROBERS)])  # fmt: skip


@contextlib.contextmanager
def three_nodes(directory: Path, database: str, users: list[str]) -> Iterator[Cluster]:
    with contextlib.ExitStack() as stack:
        nodes = Cluster(stack, database, log_level=LOG_LEVEL)
        for number, name in enumerate(NODES):
            node_dir = directory / name
            keygen(node_dir)
            nodes.append(nodes.start(node_dir, name, [(u, PASSWORD) for u in users] if number == 0 else []))
        wait_for_members(nodes, len(NODES))
        yield nodes


async def status(node: Node) -> dict[str, Any]:
    return await trio.to_thread.run_sync(node.server.status)


async def sessions_of(node: Node) -> int:
    return sum(int(w["sessions"]["count"]) for w in (await status(node))["workers"])


async def membership(node: Node) -> dict[str, Any]:
    document: dict[str, Any] = (await status(node))["supervisor"]["membership"]
    return document


async def wait_dropped(survivors: list[Node], node_id: int) -> None:
    """Until no survivor's membership lists a worker of node `node_id`."""
    while True:
        views = [await membership(node) for node in survivors]
        if all(all(w // NODE_STRIDE != node_id for w in view["members"]) for view in views):
            return
        await trio.sleep(0.05)


# ---- one kill ------------------------------------------------------------------------------------


class Killer:
    """The kills of a plan, with a probe at each (module doc)."""

    def __init__(self, cluster: Cluster, plan: Plan, names: tuple[list[str], list[str]]) -> None:
        self.cluster, self.plan = cluster, plan
        self.targets, self.probers = names
        self.used: set[str] = set()
        self.rng = random.Random(plan.seed)
        self.kills: list[NodeKill] = []
        self.probes: list[Probe] = []

    async def victim(self) -> Node:
        """The node with the most client sessions (ties: a seeded choice)."""
        counts = [(await sessions_of(node), self.rng.random(), node) for node in self.cluster]
        return max(counts, key=lambda entry: entry[:2])[2]

    def probe_accounts(self, members: tuple[int, ...], victim_id: int) -> tuple[str, str]:
        """An unused account homed on the victim, and a prober homed elsewhere."""
        target = next((a for a in self.targets if a not in self.used
                       and home("user", a, members) // NODE_STRIDE == victim_id), None)  # fmt: skip
        prober = next(a for a in self.probers if home("user", a, members) // NODE_STRIDE != victim_id)
        assert target is not None, f"no unused account of {len(self.targets)} homed on node {victim_id}"
        self.used.add(target)
        return target, prober

    async def kill(self, number: int, everyone: list[SmClient]) -> NodeKill:
        """Kill a node, probe, restart it; returns once it rejoined."""
        victim = await self.victim()
        view = await membership(victim)
        members, victim_id = tuple(view["members"]), int(view["node_id"])
        survivors = [node for node in self.cluster if node is not victim]
        target, prober_name = self.probe_accounts(members, victim_id)
        prober = SmClient(prober_name, PASSWORD, survivors[0].server.c2s_port, available=False,
                          resource=f"probe{number}")  # fmt: skip
        probe = Probe(PROBE_PAIRS + number, prober, f"{target}@localhost")
        self.probes.append(probe)
        async with trio.open_nursery() as nursery:
            await nursery.start(prober.run)
            sessions = await sessions_of(victim)
            at = trio.current_time()  # before: its clients may see their streams end before it returns
            pids = await trio.to_thread.run_sync(victim.kill)
            kill = NodeKill(number, victim.name, victim_id, pids, sessions, at, target)
            self.kills.append(kill)
            print(f"kill {number}: {victim.name} (node {victim_id}, pids {pids}, {sessions} sessions) "
                  f"killed at {time.strftime('%H:%M:%S')}")  # fmt: skip
            nursery.start_soon(self._measure_drop, kill, survivors)
            await self._probe(kill, probe, survivors)
            await prober.aclose()
        print(f"kill {number}: membership without {victim.name} after {kill.membership_dropped_after:.2f} s, "
              f"probe to {target} acked after {kill.probe_acked_after:.2f} s")  # fmt: skip
        await self._restart(kill, victim, everyone)
        return kill

    async def _probe(self, kill: NodeKill, probe: Probe, survivors: list[Node]) -> None:
        """One message to an account homed on the dead node, from a survivor: acked once the
        account's new home stored it."""
        await probe.sender.send_chat(probe.receiver, probe.pair, 1)
        with trio.move_on_after(RECOVERY_TIMEOUT):
            await probe.sender.wait_acked(1)
            kill.probe_acked_after = trio.current_time() - kill.at
            return
        views = [await membership(node) for node in survivors]
        raise AssertionError(
            f"kill {kill.number} of {kill.node}: the probe to {probe.receiver} (homed there) not acked "
            f"within {RECOVERY_TIMEOUT} s; prober connections "
            f"{[c.how for c in probe.sender.books.connections]}, survivors' membership {views}"
        )

    async def _measure_drop(self, kill: NodeKill, survivors: list[Node]) -> None:
        with trio.fail_after(RECOVERY_TIMEOUT):
            await wait_dropped(survivors, kill.node_id)
        kill.membership_dropped_after = trio.current_time() - kill.at

    async def _restart(self, kill: NodeKill, victim: Node, everyone: list[SmClient]) -> None:
        """The same node again; meanwhile the clients of the dead one come back on the others."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait_clients_back, everyone, kill)
            await trio.to_thread.run_sync(self.cluster.restart, victim)
            kill.restarted_after = trio.current_time() - kill.at
            await trio.to_thread.run_sync(wait_for_members, self.cluster, len(NODES))
            kill.rejoined_after = trio.current_time() - kill.at
        print(f"kill {kill.number}: {victim.name} listening again after {kill.restarted_after:.2f} s, "
              f"rejoined after {kill.rejoined_after:.2f} s; {kill.clients_dropped} clients back "
              f"after {kill.clients_back_after or 0:.2f} s")  # fmt: skip

    async def run(self, senders: list[SmClient], everyone: list[SmClient]) -> None:
        """Every kill of the plan; between two, more messages acked (traffic flows again)."""
        plan = self.plan
        for number in range(1, plan.kills + 1):
            await trio.sleep(self.rng.uniform(0, 2 / plan.rate))  # kills fall anywhere in a message's life
            await self.kill(number, everyone)
            if plan.quick_every and number % plan.quick_every == 0 and number < plan.kills:
                continue  # the next kill falls while clients may still be moving
            await wait_progress(senders, [len(s.books.acked) + plan.acks_between for s in senders])


# ---- the run -------------------------------------------------------------------------------------


async def run_chaos(cluster: Cluster, plan: Plan, directory: Path) -> dict[str, Any]:
    sender_names, receiver_names, targets, probers = accounts(plan)
    started = trio.current_time()
    ports = cluster.ports()
    # Spread: pair i's sender starts on node i, its receiver on the next one.
    senders = [SmClient(name, PASSWORD, ports[i % len(ports)], available=False, failover=cluster.ports)
               for i, name in enumerate(sender_names)]  # fmt: skip
    receivers = [SmClient(name, PASSWORD, ports[(i + 1) % len(ports)], failover=cluster.ports)
                 for i, name in enumerate(receiver_names)]  # fmt: skip
    everyone = senders + receivers
    killer = Killer(cluster, plan, (targets, probers))
    try:
        with trio.fail_after(plan.timeout):
            async with trio.open_nursery() as clients:
                for client in everyone:
                    await clients.start(client.run)
                print(f"{len(everyone)} clients logged in after {trio.current_time() - started:.1f} s")
                stop = trio.Event()
                async with trio.open_nursery() as traffic:
                    for pair, (sender, receiver) in enumerate(zip(senders, receivers, strict=True)):
                        traffic.start_soon(send_steadily, sender, receiver.bare, pair, plan.rate, stop)
                    await wait_progress(senders, [plan.warmup_acks] * len(senders))
                    print(f"traffic flows after {trio.current_time() - started:.1f} s")
                    await killer.run(senders, everyone)
                    stop.set()
                drained = [await sender.wait_all_acked(plan.drain) for sender in senders]
                archives = [await r.archive(s.bare) for s, r in zip(senders, receivers, strict=True)]
                for probe in killer.probes:
                    await read_probe(probe, clients, cluster.ports())
                for client in everyone:
                    await client.aclose()
                clients.cancel_scope.cancel()
    except BaseException:
        write_unfinished(directory, killer, everyone)
        raise
    for node in cluster:
        assert node.server.proc.poll() is None, f"{node.name}'s supervisor exited"
    pairs = [pair_report(i, senders[i], receivers[i], archives[i]) for i in range(plan.pairs)]
    probes = [pair_report(p.pair, p.sender, p.received, p.archive) for p in killer.probes if p.received]
    recovered = [k.recovery for k in killer.kills if k.recovery is not None]
    logs = [path for node in cluster for path in node.directory.glob("server.log*")]
    return {
        "plan": asdict(plan),
        "seconds": round(trio.current_time() - started, 1),
        "kills": [k.summary() for k in killer.kills],
        "recovery_s": {
            "max": round(max(recovered), 3) if recovered else None,
            "mean": round(sum(recovered) / len(recovered), 3) if recovered else None,
        },
        "totals": totals(pairs),
        "drained": drained,
        "server_log": log_signs(logs),
        "pairs": pairs,
        "probes": probes,
        "clients": [client_report(c) for c in everyone],
    }


def write_unfinished(directory: Path, killer: Killer, everyone: list[SmClient]) -> None:
    """A run that failed half-way: what the kills and the clients had seen, in
    ``chaos-unfinished.json`` (beside the nodes' logs), to tell why."""
    clients = [{**client_report(c), "sent": len(c.books.sent), "unacked": c.unacked[:50], "ready": c.ready}
               for c in everyone]  # fmt: skip
    document = {"kills": [k.summary() for k in killer.kills], "clients": clients}
    (directory / "chaos-unfinished.json").write_text(json.dumps(document, indent=2) + "\n")
    print(f"unfinished run: {directory / 'chaos-unfinished.json'}")


async def read_probe(probe: Probe, nursery: trio.Nursery, ports: list[int]) -> None:
    """The probe's recipient logs in (its offline messages come) and reads its archive."""
    receiver = SmClient(probe.receiver.split("@")[0], PASSWORD, ports[0], resource="after")
    await nursery.start(receiver.run)
    probe.received = receiver
    probe.archive = await receiver.archive(probe.sender.bare)
    await receiver.aclose()


def check(summary: dict[str, Any], directory: Path) -> None:
    write_summary(summary, directory, ("seconds", "kills", "recovery_s", "totals", "drained", "server_log"))
    kills = summary["kills"]
    assert len(kills) == summary["plan"]["kills"]
    assert all(k["sessions"] > 0 for k in kills), "a kill hit a node without sessions"
    assert all(k["recovery_s"] is not None for k in kills), "a kill without a measured recovery"
    assert len(summary["probes"]) == len(kills)
    check_books(summary["pairs"] + summary["probes"], summary["drained"])


@pytest.fixture
def cluster(tmp_path: Path, postgres: PostgresServer, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    plan: Plan = request.param
    users = [name for group in accounts(plan) for name in group]
    with three_nodes(tmp_path, postgres.database_url("nodechaos"), users) as nodes:
        yield nodes


@pytest.mark.parametrize("cluster", [SHORT_PLAN], indirect=True, ids=["short"])
async def test_acknowledged_messages_survive_node_kills(cluster: Cluster, tmp_path: Path) -> None:
    check(await run_chaos(cluster, SHORT_PLAN, tmp_path), tmp_path)


@pytest.mark.slow
@pytest.mark.skipif(not LONG, reason="long chaos run: set IMACTOR_CHAOS_LONG=1")
@pytest.mark.parametrize("cluster", [LONG_PLAN], indirect=True, ids=["long"])
async def test_acknowledged_messages_survive_node_kills_long(cluster: Cluster, tmp_path: Path) -> None:
    check(await run_chaos(cluster, LONG_PLAN, tmp_path), tmp_path)
