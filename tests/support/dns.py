"""A DNS server on loopback that answers from a fixed table: a peer server's resolver is pointed
at it so that federation tests need no real DNS (the peer finds the test's domains' records
here, and nothing else). ejabberd asks it for SRV records only: it looks the SRV target's
address up with the C library, which never asks this server (bench/peers/ejabberd.py)."""

from __future__ import annotations

import select
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

TTL = 60


class StaticDns:
    """Records by (name, type), e.g. ``("_xmpp-server._tcp.example.", "SRV") -> ["0 0 5269
    example."]``; they may be added while it runs (a port known only once a server started).
    Names not in the table get NXDOMAIN; a query that does not parse is ignored."""

    def __init__(self) -> None:
        self.records: dict[tuple[str, str], list[str]] = {}
        self.asked: list[tuple[str, str]] = []  #: (name, type) of each question, in order
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="static-dns", daemon=True)

    def add(self, name: str, rdtype: str, *rdata: str) -> None:
        self.records[(name.lower().rstrip(".") + ".", rdtype)] = list(rdata)

    def _serve(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self._sock], [], [], 0.2)
            if not ready:
                continue
            data, address = self._sock.recvfrom(4096)
            try:
                query = dns.message.from_wire(data)
            except dns.exception.DNSException:
                continue
            self._sock.sendto(self._answer(query).to_wire(), address)

    def _answer(self, query: dns.message.Message) -> dns.message.Message:
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        for question in query.question:
            name = question.name.to_text().lower()
            rdtype = dns.rdatatype.to_text(question.rdtype)
            self.asked.append((name, rdtype))
            found = self.records.get((name, rdtype))
            if found:
                response.answer.append(
                    dns.rrset.from_text_list(question.name, TTL, dns.rdataclass.IN, question.rdtype, found)
                )
            elif not any(known == name for known, _ in self.records):
                response.set_rcode(dns.rcode.NXDOMAIN)
        return response

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()


@contextmanager
def static_dns() -> Iterator[StaticDns]:
    server = StaticDns()
    server.start()
    try:
        yield server
    finally:
        server.stop()
