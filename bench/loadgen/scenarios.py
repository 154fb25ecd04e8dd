"""The scenarios, as run inside one generator process.

A worker process serves commands from the driver over a pipe (`serve`): each scenario is a class
whose async methods are the commands; each returns a plain dict the driver merges with the other
processes' answers. Latencies are returned raw (seconds) so the driver computes percentiles over
all processes.
"""

from __future__ import annotations

import random
import ssl
import time
from collections.abc import Awaitable, Callable
from multiprocessing.connection import Connection
from typing import Any

import trio
from lxml import etree

from bench.loadgen.client import CLIENT_NS, LoadClient, LoginError, tls_context
from bench.loadgen.epollread import EpollLoop, Plan, Sender, run_plan

MESSAGE_TAG = f"{{{CLIENT_NS}}}message"
IQ_TAG = f"{{{CLIENT_NS}}}iq"
PING_TAG = "{urn:xmpp:ping}ping"
MAX_ERRORS = 10  # error texts kept per command


class Scenario:
    def __init__(self, spec: dict[str, Any], nursery: trio.Nursery) -> None:
        self.spec = spec
        self.nursery = nursery
        self.host: str = spec["host"]
        self.port: int = spec["port"]
        #: Several nodes: the user at index i of this process connects to endpoints[i % n] (a
        #: chat pair's two members, adjacent, to two different nodes).
        endpoints = spec.get("endpoints") or [(self.host, self.port)]
        self.endpoints: list[tuple[str, int]] = [(host, port) for host, port in endpoints]
        self.domain: str = spec["domain"]
        self.context: ssl.SSLContext | None = tls_context() if spec["tls"] else None
        self.users: list[tuple[str, str]] = [(u[0], u[1]) for u in spec["users"]]
        self.mechanism: str | None = spec.get("sasl")  # None: the first the server offers
        self.errors: list[str] = []
        self.clients: list[LoadClient] = []

    def error(self, exc: BaseException) -> None:
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(f"{type(exc).__name__}: {exc}"[:300])

    async def open(self, user: tuple[str, str], resource: str, index: int = 0) -> LoadClient:
        host, port = self.endpoints[index % len(self.endpoints)]
        client = await LoadClient.connect(host, port, self.domain)
        try:
            await client.login(user[0], user[1], resource, self.context, self.mechanism)
            await client.ping()
        except BaseException:
            await client.aclose(graceful=False)
            raise
        return client

    async def open_all(self, concurrency: int, resource: str) -> list[LoadClient]:
        """Every user logged in, `concurrency` at a time, each within 60 s, in `users` order."""
        limiter = trio.CapacityLimiter(concurrency)
        clients: list[LoadClient | None] = [None] * len(self.users)

        async def one(index: int, user: tuple[str, str]) -> None:
            async with limiter:
                with trio.fail_after(60):
                    clients[index] = await self.open(user, resource, index)

        async with trio.open_nursery() as nursery:
            for index, user in enumerate(self.users):
                nursery.start_soon(one, index, user)
        return [c for c in clients if c is not None]

    async def close(self) -> dict[str, Any]:
        async with trio.open_nursery() as nursery:
            for client in self.clients:
                nursery.start_soon(client.aclose)
        self.clients.clear()
        return {}


_LOGIN_FAILURES = (LoginError, OSError, ssl.SSLError, trio.TooSlowError, trio.BrokenResourceError,
                   trio.ClosedResourceError)  # fmt: skip


class Login(Scenario):
    """Full logins, each session closed after its ping. `run`: concurrent loops, each logging in
    again and again with its own account for a while; `distinct`: every account of this process
    logs in once (each login a user the server has not seen in this run: a cold user).

    `distinct`'s `method`: ``scram`` (RFC 6120 SASL, a stream restart, a bind IQ), ``sasl2``
    (SCRAM in XEP-0388 SASL2 with XEP-0386 Bind 2: no restart, no bind round trip) or ``fast``
    (a XEP-0484 token, HT-SHA-256-NONE, with Bind 2: one round trip, no SCRAM), with the tokens
    that `fast_tokens` fetched beforehand (a SASL2 login per account, not measured)."""

    def __init__(self, spec: dict[str, Any], nursery: trio.Nursery) -> None:
        super().__init__(spec, nursery)
        #: username → (user-agent id, FAST token, the last count used).
        self.tokens: dict[str, tuple[str, str, int]] = {}

    async def fast_tokens(self, concurrency: int) -> dict[str, Any]:
        """Log every account of this process in once with SASL2, asking for a FAST token."""
        limiter = trio.CapacityLimiter(max(concurrency, 1))
        failed = 0

        async def one(index: int, user: tuple[str, str]) -> None:
            nonlocal failed
            agent = f"bench-agent-{user[0]}"
            async with limiter:
                client = await LoadClient.connect(self.host, self.port, self.domain)
                try:
                    with trio.fail_after(30):
                        token = await client.login_sasl2(
                            user[0], user[1], f"warm{index}", self.context, self.mechanism, agent,
                            request_token=True,
                        )  # fmt: skip
                    if token is not None:
                        self.tokens[user[0]] = (agent, token, 0)
                except _LOGIN_FAILURES as exc:
                    self.error(exc)
                    failed += 1
                finally:
                    await client.aclose()

        async with trio.open_nursery() as nursery:
            for index, user in enumerate(self.users):
                nursery.start_soon(one, index, user)
        return {"tokens": len(self.tokens), "failed": failed, "errors": self.errors}

    async def run(self, duration: float) -> dict[str, Any]:
        latencies: list[float] = []
        failed = 0
        deadline = time.monotonic() + duration

        async def loop(index: int, user: tuple[str, str]) -> None:
            nonlocal failed
            attempt = 0
            while time.monotonic() < deadline:
                attempt += 1
                if not await self._timed_login(user, f"login{index}-{attempt}", latencies):
                    failed += 1

        async with trio.open_nursery() as nursery:
            for index, user in enumerate(self.users):
                nursery.start_soon(loop, index, user)
        return {"ok": len(latencies), "failed": failed, "latencies": latencies, "errors": self.errors}

    async def distinct(self, concurrency: int, method: str = "scram") -> dict[str, Any]:
        """Log every account of this process in once, `concurrency` logins at a time."""
        latencies: list[float] = []
        failed = 0
        limiter = trio.CapacityLimiter(max(concurrency, 1))
        started = time.monotonic()

        async def one(index: int, user: tuple[str, str]) -> None:
            nonlocal failed
            async with limiter:
                if not await self._timed_login(user, f"login{index}", latencies, method):
                    failed += 1

        async with trio.open_nursery() as nursery:
            for index, user in enumerate(self.users):
                nursery.start_soon(one, index, user)
        return {"ok": len(latencies), "failed": failed, "latencies": latencies, "errors": self.errors,
                "seconds": time.monotonic() - started}  # fmt: skip

    async def _timed_login(self, user: tuple[str, str], resource: str, latencies: list[float],
                           method: str = "scram") -> bool:  # fmt: skip
        """One login as `user`, its time appended to `latencies`; False (the error kept) if it failed."""
        start = time.perf_counter()
        try:
            with trio.fail_after(30):
                client = await (self.open(user, resource) if method == "scram"
                                else self._open_sasl2(user, resource, fast=method == "fast"))  # fmt: skip
            latencies.append(time.perf_counter() - start)
            await client.aclose()
        except (*_LOGIN_FAILURES, KeyError) as exc:
            self.error(exc)
            return False
        return True

    async def _open_sasl2(self, user: tuple[str, str], resource: str, *, fast: bool) -> LoadClient:
        """`open` with SASL2 and Bind 2, by password (SCRAM) or by FAST token."""
        client = await LoadClient.connect(self.host, self.port, self.domain)
        try:
            if fast:
                agent, token, count = self.tokens[user[0]]
                rotated = await client.login_fast(user[0], token, resource, self.context, agent, count + 1)
                self.tokens[user[0]] = (agent, rotated or token, 0 if rotated else count + 1)
            else:
                await client.login_sasl2(user[0], user[1], resource, self.context, self.mechanism,
                                         f"bench-agent-{user[0]}")  # fmt: skip
            await client.ping()
        except BaseException:
            await client.aclose(graceful=False)
            raise
        return client


async def _drain(client: LoadClient, on_message: Callable[[etree._Element], None] | None = None) -> None:
    """Read a held session: answer server pings, hand messages to `on_message`, drop the rest."""
    while await client._read():
        elements, client.elements = client.elements, []
        for element in elements:
            if element.tag == MESSAGE_TAG:
                if on_message is not None:
                    on_message(element)
            elif (
                element.tag == IQ_TAG and element.get("type") == "get" and element.find(PING_TAG) is not None
            ):
                reply = f"<iq type='result' id='{element.get('id')}' to='{element.get('from')}'/>"
                try:
                    await client.send(reply)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    return


class Idle(Scenario):
    """Log in and hold one session per account until told to close."""

    async def connect(self, concurrency: int) -> dict[str, Any]:
        limiter = trio.CapacityLimiter(concurrency)
        failed = 0
        start = time.monotonic()

        async def one(index: int, user: tuple[str, str]) -> None:
            nonlocal failed
            async with limiter:
                try:
                    with trio.fail_after(60):
                        client = await self.open(user, f"idle{index}")
                except _LOGIN_FAILURES as exc:
                    failed += 1
                    self.error(exc)
                    return
            self.clients.append(client)
            self.nursery.start_soon(_drain, client)

        async with trio.open_nursery() as nursery:
            for index, user in enumerate(self.users):
                nursery.start_soon(one, index, user)
        return {"connected": len(self.clients), "failed": failed, "seconds": time.monotonic() - start,
                "errors": self.errors}  # fmt: skip

    async def check(self) -> dict[str, Any]:
        """How many held sessions the server has not closed."""
        return {"alive": sum(1 for c in self.clients if not c.closed)}


class Chat(Scenario):
    """Users in pairs (consecutive accounts), each sending numbered, timestamped messages to the other.

    Body: "<step> <sender index> <seq> <send time, monotonic ns>". The receiver (same process, same
    clock) computes the latency; a message of another step than the current one is counted late.
    With io "epoll" (the default) one EpollLoop thread reads every connection and sends every
    message on one schedule; with "trio", each user has a reading task and a sending task.
    """

    def __init__(self, spec: dict[str, Any], nursery: trio.Nursery) -> None:
        super().__init__(spec, nursery)
        self.step_id = -1
        self.received: list[int] = []
        self.latencies: list[float] = []
        self.late = 0
        self.duplicates = 0
        self.last_seq: list[int] = []
        self.loop = EpollLoop() if spec.get("io", "epoll") == "epoll" else None

    def on_message(self, element: etree._Element) -> None:
        body = element.findtext(f"{{{CLIENT_NS}}}body")
        if not body:
            return
        now = time.monotonic_ns()
        try:
            step, sender, seq, sent_ns = (int(x) for x in body.split())
        except ValueError:
            return
        if step != self.step_id:
            self.late += 1
            return
        if seq <= self.last_seq[sender]:
            self.duplicates += 1
            return
        self.last_seq[sender] = seq
        self.received[sender] += 1
        self.latencies.append((now - sent_ns) / 1e9)

    async def connect(self, concurrency: int) -> dict[str, Any]:
        self.clients = await self.open_all(concurrency, "chat")
        self.received = [0] * len(self.clients)
        self.last_seq = [0] * len(self.clients)
        for client in self.clients:
            if self.loop is not None:
                self.loop.add(client, self.on_message)
            else:
                self.nursery.start_soon(_drain, client, self.on_message)
        return {"connected": len(self.clients)}

    async def step(self, step_id: int, rate: float, duration: float, drain: float,
                   active: int | None = None) -> dict[str, Any]:  # fmt: skip
        """Send for `duration` s at `rate` messages/s in total over the first `active` users of
        this process (all by default; pairs stay whole), then wait up to `drain` s for the last
        ones; return per-pair sent/received and the latencies."""
        count = len(self.clients)
        senders = count if active is None else min(active - active % 2, count)
        self.step_id = step_id
        self.received = [0] * count
        self.last_seq = [0] * count
        self.latencies = []
        self.late = self.duplicates = 0
        sent = [0] * count
        if senders and rate > 0:
            if self.loop is not None:
                await self._send_planned(step_id, rate, duration, senders, sent)
            else:
                await self._send_tasks(step_id, rate, duration, senders, sent)
        with trio.move_on_after(drain):
            while self.received != sent:  # noqa: ASYNC110 (polling a counter is enough here)
                await trio.sleep(0.02)
        received, latencies = list(self.received), self.latencies
        self.step_id = -1
        pairs = []
        for index in range(0, senders - 1, 2):
            pair_sent = sent[index] + sent[index + 1]
            pair_received = received[index] + received[index + 1]
            pairs.append({"users": [self.users[index][0], self.users[index + 1][0]],
                          "sent": pair_sent, "received": pair_received})  # fmt: skip
        return {"sent": sum(sent), "received": sum(received), "pairs": pairs, "latencies": latencies,
                "duplicates": self.duplicates, "late": self.late,
                "closed": sum(1 for c in self.clients if c.closed)}  # fmt: skip

    def _partner(self, index: int) -> str:
        return self.clients[index ^ 1].jid.split("/")[0]

    async def _send_planned(self, step_id: int, rate: float, duration: float, senders: int,
                            sent: list[int]) -> None:  # fmt: skip
        """One schedule for all: message j at start + j / rate from the j mod n-th user of a
        shuffled order (so the total rate is smooth and partners do not send back to back)."""
        assert self.loop is not None
        order = random.sample(range(senders), senders)
        plan = Plan(start=time.monotonic() + 0.05, rate=rate, count=int(rate * duration),
                    senders=[Sender(self.clients[i], self._partner(i), "chat", f"{step_id} {i} ")
                             for i in order])  # fmt: skip
        await run_plan(self.loop, plan)
        for index, sender in zip(order, plan.senders, strict=True):
            sent[index] = sender.sent

    async def _send_tasks(self, step_id: int, rate: float, duration: float, senders: int,
                          sent: list[int]) -> None:  # fmt: skip
        """A trio task per user, each sleeping until its next message (the former way)."""
        per_user = rate / senders
        start = trio.current_time() + 0.05  # trio's clock: sleep_until() uses it
        end = start + duration

        async def sender(index: int) -> None:
            client = self.clients[index]
            peer = self._partner(index)
            interval = 1.0 / per_user
            due = start + random.random() * interval
            seq = 0
            while due < end:
                await trio.sleep_until(due)
                seq += 1
                body = f"{step_id} {index} {seq} {time.monotonic_ns()}"
                try:
                    await client.send(
                        f"<message to='{peer}' type='chat' id='m{seq}'><body>{body}</body></message>"
                    )
                except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
                    return
                sent[index] = seq
                due += interval

        async with trio.open_nursery() as nursery:
            for index in range(senders):
                nursery.start_soon(sender, index)

    async def close(self) -> dict[str, Any]:
        if self.loop is not None:  # hand the connections back to trio for the close
            self.loop.stop()
            self.loop = None
        return await super().close()


MUC_NS = "http://jabber.org/protocol/muc"
MUC_USER_NS = f"{MUC_NS}#user"
MUC_OWNER_NS = f"{MUC_NS}#owner"
PRESENCE_TAG = f"{{{CLIENT_NS}}}presence"


class Muc(Scenario):
    """One room, every account of this process an occupant (nick = account name); the senders
    among them send numbered, timestamped groupchat messages; every occupant counts what the
    room delivers to it (a sender too: the room reflects its message, XEP-0045 §7.4).

    Body: "<step> <sender's global index> <seq> <send time, monotonic ns>". Latency crosses
    generator processes: CLOCK_MONOTONIC is one clock for the whole machine on Linux.
    Commands: connect, join (the room's creator first, alone), send, collect (the driver sums
    what every process sent, so each occupant knows how many deliveries to wait for).
    """

    def __init__(self, spec: dict[str, Any], nursery: trio.Nursery) -> None:
        super().__init__(spec, nursery)
        self.room: str = spec["room"]
        self.indices: list[int] = spec["indices"]  # global index of each account of this process
        self.senders: set[int] = set(spec["senders"])
        self.step_id = -1
        self.received: list[int] = []
        self.last_seq: list[dict[int, int]] = []
        self.latencies: list[float] = []
        self.late = self.duplicates = 0
        self.message_errors = 0
        self.joined = [False] * len(self.users)
        # "epoll": every occupant is read, and every message sent, by one EpollLoop thread
        # (epollread.py); "trio": each occupant has its own reading task, each sender a sending one.
        self.loop = EpollLoop() if spec.get("io", "epoll") == "epoll" else None

    def on_message(self, local: int, element: etree._Element) -> None:
        # Runs on the EpollLoop's thread, or on trio's (io "trio"): one thread either way.
        if element.get("type") == "error":
            self.message_errors += 1
            if len(self.errors) < MAX_ERRORS:
                self.errors.append(etree.tostring(element)[:300].decode(errors="replace"))
            return
        if not (element.get("from") or "").startswith(self.room + "/"):
            return
        body = element.findtext(f"{{{CLIENT_NS}}}body")
        if not body:  # the subject, sent on join
            return
        now = time.monotonic_ns()
        try:
            step, sender, seq, sent_ns = (int(x) for x in body.split())
        except ValueError:
            return
        if step != self.step_id:
            self.late += 1
            return
        if seq <= self.last_seq[local].get(sender, 0):
            self.duplicates += 1
            return
        self.last_seq[local][sender] = seq
        self.received[local] += 1
        self.latencies.append((now - sent_ns) / 1e9)

    async def connect(self, concurrency: int) -> dict[str, Any]:
        self.clients = await self.open_all(concurrency, "muc")
        self.received = [0] * len(self.clients)
        self.last_seq = [{} for _ in self.clients]
        return {"connected": len(self.clients)}

    async def _join(self, local: int) -> None:
        """Enter the room; when it was just created (status 201), make it an instant room
        (XEP-0045 §10.1.2: submit an empty form) so that it unlocks for the others."""
        client = self.clients[local]
        nick = f"{self.room}/{self.users[local][0]}"
        history = "<history maxstanzas='0'/>"  # no backlog: it would count as late deliveries
        await client.send(f"<presence to='{nick}'><x xmlns='{MUC_NS}'>{history}</x></presence>")

        def own_presence(element: etree._Element) -> bool:
            return element.tag == PRESENCE_TAG and element.get("from") == nick

        presence = await client.next_element(own_presence)
        if presence.get("type") == "error":
            raise LoginError(f"join {nick}: {etree.tostring(presence)[:300]!r}")
        codes = {s.get("code") for s in presence.iter(f"{{{MUC_USER_NS}}}status")}
        if "201" in codes:
            await client.send(f"<iq type='set' to='{self.room}' id='cfg1'><query xmlns='{MUC_OWNER_NS}'>"
                              "<x xmlns='jabber:x:data' type='submit'/></query></iq>")  # fmt: skip
            reply = await client.next_element(lambda e: e.tag == IQ_TAG and e.get("id") == "cfg1")
            if reply.get("type") != "result":
                raise LoginError(f"instant room: {etree.tostring(reply)[:300]!r}")
        self.joined[local] = True
        # From now on its reader runs (counting only messages of the current step).
        if self.loop is not None:
            self.loop.add(client, lambda e: self.on_message(local, e))
        else:
            self.nursery.start_soon(_drain, client, lambda e: self.on_message(local, e))

    async def join(self, concurrency: int, only: list[int] | None = None) -> dict[str, Any]:
        """Join the occupants not yet joined (or only those with a global index in `only`)."""
        limiter = trio.CapacityLimiter(concurrency)
        wanted = [local for local, index in enumerate(self.indices)
                  if not self.joined[local] and (only is None or index in only)]  # fmt: skip

        async def one(local: int) -> None:
            async with limiter:
                with trio.fail_after(60):
                    await self._join(local)

        async with trio.open_nursery() as nursery:
            for local in wanted:
                nursery.start_soon(one, local)
        return {"joined": sum(self.joined)}

    async def send(self, step_id: int, per_sender_rate: float, duration: float) -> dict[str, Any]:
        """Each local sender sends to the room at `per_sender_rate` for `duration` s."""
        self.step_id = step_id
        count = len(self.clients)
        self.received = [0] * count
        self.last_seq = [{} for _ in range(count)]
        self.latencies = []
        self.late = self.duplicates = self.message_errors = 0
        self.errors = []
        sent: dict[int, int] = {}
        local_senders = [local for local, index in enumerate(self.indices) if index in self.senders]
        if local_senders and per_sender_rate > 0:
            if self.loop is not None:
                await self._send_planned(step_id, per_sender_rate, duration, local_senders, sent)
            else:
                await self._send_tasks(step_id, per_sender_rate, duration, local_senders, sent)
        return {"sent": sent}

    async def _send_planned(self, step_id: int, per_sender_rate: float, duration: float,
                            local_senders: list[int], sent: dict[int, int]) -> None:  # fmt: skip
        """One schedule for this process's senders, in turn (see Chat._send_planned)."""
        assert self.loop is not None
        rate = per_sender_rate * len(local_senders)
        plan = Plan(start=time.monotonic() + 0.05, rate=rate, count=int(rate * duration),
                    senders=[Sender(self.clients[local], self.room, "groupchat",
                                    f"{step_id} {self.indices[local]} ")
                             for local in local_senders])  # fmt: skip
        await run_plan(self.loop, plan)
        for local, sender in zip(local_senders, plan.senders, strict=True):
            if sender.sent:
                sent[self.indices[local]] = sender.sent

    async def _send_tasks(self, step_id: int, per_sender_rate: float, duration: float,
                          local_senders: list[int], sent: dict[int, int]) -> None:  # fmt: skip
        """A trio task per sender, each sleeping until its next message (the former way)."""
        start = trio.current_time() + 0.05
        end = start + duration
        interval = 1.0 / per_sender_rate

        async def sender(local: int) -> None:
            client, index = self.clients[local], self.indices[local]
            due = start + random.random() * interval
            seq = 0
            while due < end:
                await trio.sleep_until(due)
                seq += 1
                body = f"{step_id} {index} {seq} {time.monotonic_ns()}"
                try:
                    await client.send(f"<message to='{self.room}' type='groupchat' id='g{seq}'>"
                                      f"<body>{body}</body></message>")  # fmt: skip
                except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
                    return
                sent[index] = seq
                due += interval

        async with trio.open_nursery() as nursery:
            for local in local_senders:
                nursery.start_soon(sender, local)

    async def collect(self, expected: int, drain: float) -> dict[str, Any]:
        """Wait up to `drain` s until every local occupant has `expected` deliveries; report."""
        with trio.move_on_after(drain):
            while any(r < expected for r in self.received):  # noqa: ASYNC110 (a counter poll)
                await trio.sleep(0.02)
        received, latencies = list(self.received), self.latencies
        self.step_id = -1
        occupants = [{"user": self.users[local][0], "received": count}
                     for local, count in enumerate(received)]  # fmt: skip
        return {"received": sum(received), "occupants": occupants, "latencies": latencies,
                "duplicates": self.duplicates, "late": self.late, "message_errors": self.message_errors,
                "errors": self.errors, "closed": sum(1 for c in self.clients if c.closed)}  # fmt: skip

    async def close(self) -> dict[str, Any]:
        if self.loop is not None:  # hand the connections back to trio for the close
            self.loop.stop()
            self.loop = None
        return await super().close()


SCENARIOS: dict[str, type[Scenario]] = {"login": Login, "idle": Idle, "chat": Chat, "muc": Muc}


async def serve(conn: Connection, spec: dict[str, Any]) -> None:
    """Answer the driver's commands until "exit": (name, kwargs) → dict (or {"exception": text})."""
    async with trio.open_nursery() as nursery:
        scenario = SCENARIOS[spec["scenario"]](spec, nursery)
        conn.send({"ready": True})
        while True:
            name, kwargs = await trio.to_thread.run_sync(conn.recv)
            if name == "exit":
                break
            method: Callable[..., Awaitable[dict[str, Any]]] = getattr(scenario, name)
            try:
                result = await method(**kwargs)
            except Exception as exc:  # reported to the driver, which fails the run
                result = {"exception": f"{type(exc).__name__}: {exc}"}
            conn.send(result)
        await scenario.close()
        nursery.cancel_scope.cancel()


def worker_main(conn: Connection, spec: dict[str, Any]) -> None:
    """Entry point of a generator process (multiprocessing, spawn)."""
    try:
        trio.run(serve, conn, spec)
    finally:
        conn.close()
