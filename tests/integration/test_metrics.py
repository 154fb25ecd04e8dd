"""The node's Prometheus metrics (`[listen.metrics]`): a real node with two workers, scraped over
HTTP and read with the client library's own parser, as Prometheus would read them.

One server for the module; it allows only 127.0.0.1, so a request from another loopback address
(127.0.0.2) is a request from outside the allowed network.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from tests.support.peer import Peer, message
from tests.support.server import ServerProcess, running_server
from tests.support.timeouts import TIMEOUT

PASSWORD = "metrics-pw"
USERS = [f"m{n}" for n in range(6)]
MESSAGES = 10
METRICS = """
[listen.metrics]
enabled = true
host = "127.0.0.1"
port = 0
allow = ["127.0.0.1/32"]
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    directory: Path = tmp_path_factory.mktemp("metrics")
    with running_server(directory, users=[(u, PASSWORD) for u in USERS], workers=2, extra=METRICS) as process:
        yield process


def http(port: int, request: bytes, source: str = "127.0.0.1") -> tuple[int, dict[str, str], bytes]:
    """One raw HTTP/1.1 exchange (the server closes after each answer): status, headers, body."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT, source_address=(source, 0)) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


def scrape(server: ServerProcess) -> dict[str, list[Sample]]:
    status, headers, body = http(server.ports["metrics"], b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 200, body
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    return {family.name: family.samples for family in text_string_to_metric_families(body.decode())}


def total(samples: list[Sample], name: str) -> float:
    return sum(sample.value for sample in samples if sample.name == name)


async def test_a_scrape_shows_both_workers_sessions_stanzas_and_latencies(server: ServerProcess) -> None:
    with trio.fail_after(TIMEOUT):
        peers = [await Peer.online(server.c2s_port, user, PASSWORD) for user in USERS[:4]]
        for number in range(MESSAGES):
            sender, recipient = peers[number % 2], peers[2 + number % 2]
            chat = f"<message to='{recipient.jid}' type='chat' id='n{number}'><body>x</body></message>"
            await sender.send(chat)
            await recipient.expect(message(from_=sender.jid, id_=f"n{number}"))
        families = await trio.to_thread.run_sync(scrape, server)
        for peer in peers:
            await peer.aclose()
    sessions = families["imactor_sessions"]
    assert {sample.labels["worker"] for sample in sessions} == {"0", "1"}
    assert total(sessions, "imactor_sessions") == len(peers)
    assert total(families["imactor_worker_up"], "imactor_worker_up") == 2
    # Each peer sent a roster get and its presence, the senders the messages too.
    received = total(families["imactor_stanzas_received"], "imactor_stanzas_received_total")
    assert received >= MESSAGES + 2 * len(peers)
    assert total(families["imactor_stanzas_sent"], "imactor_stanzas_sent_total") >= MESSAGES
    routes = families["imactor_route_seconds"]
    assert total(routes, "imactor_route_seconds_count") == MESSAGES
    infinite = [s for s in routes if s.name == "imactor_route_seconds_bucket" and s.labels["le"] == "+Inf"]
    assert sum(s.value for s in infinite) == MESSAGES
    assert total(routes, "imactor_route_seconds_sum") > 0
    # Logins write (last activity, presence state...): some batches committed.
    assert total(families["imactor_storage_commit_seconds"], "imactor_storage_commit_seconds_count") > 0
    # Every message was archived (one write for both copies), in group commits of one or more.
    transactions = total(families["imactor_storage_transactions"], "imactor_storage_transactions_total")
    writes = total(families["imactor_storage_writes"], "imactor_storage_writes_total")
    assert 0 < transactions <= writes
    assert writes >= MESSAGES
    assert {s.labels["worker"] for s in families["imactor_storage_deferred_batches"]} == {"0", "1"}
    assert total(families["imactor_node_restarts"], "imactor_node_restarts_total") == 0
    assert total(families["imactor_membership_epoch"], "imactor_membership_epoch") == 1


def test_only_the_allowed_network_may_read(server: ServerProcess) -> None:
    status, _, body = http(server.ports["metrics"], b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", "127.0.0.2")
    assert status == 403
    assert b"imactor_" not in body


@pytest.mark.parametrize(
    ("request_bytes", "expected"),
    [
        (b"GET /other HTTP/1.1\r\nHost: x\r\n\r\n", 404),
        (b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 405),
        (b"GARBAGE\r\n\r\n", 400),
    ],
    ids=["unknown-path", "post", "not-http"],
)
def test_other_requests_get_their_status_and_the_listener_serves_on(
    server: ServerProcess, request_bytes: bytes, expected: int
) -> None:
    assert http(server.ports["metrics"], request_bytes)[0] == expected
    assert http(server.ports["metrics"], b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n")[0] == 200
