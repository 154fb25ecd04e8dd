"""Which worker holds which component's stream: one worker's view, pure (no I/O, no clock).

Each worker keeps its own components' connections (`local`) and what the others announced
(`remote`, domain → worker). The wing feeds it the connections' handshakes and ends, the other
workers' `ComponentAt` news and membership changes, and sends the announcements it asks for.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from typing import Generic, Protocol, TypeVar

from imactor import messages as m


class Connection(Protocol):
    @property
    def closed(self) -> bool: ...


C = TypeVar("C", bound=Connection)


class ComponentTable(Generic[C]):
    def __init__(self, index: int) -> None:
        self.index = index  #: this worker's number
        self.local: dict[str, C] = {}
        self.remote: dict[str, int] = {}

    def connected(self) -> Iterator[str]:
        """Every domain whose component is connected to some worker, as this one knows."""
        yield from self.local
        yield from (domain for domain in self.remote if domain not in self.local)

    def where(self, domain: str) -> C | int | None:
        """The connection here, the worker that holds it, or None: not connected."""
        local = self.local.get(domain)
        return local if local is not None else self.remote.get(domain)

    def claim(self, domain: str, connection: C, live: Collection[int]) -> bool:
        """May `connection` hold `domain` now? No while another connection here or a live
        worker holds it (XEP-0114 <conflict/>). Yes: announce it (`ComponentAt` connected)."""
        held = self.local.get(domain)
        if held is not None and held is not connection and not held.closed:
            return False
        worker = self.remote.get(domain)
        if worker is not None and worker != self.index and worker in live:
            return False
        self.local[domain] = connection
        self.remote.pop(domain, None)
        return True

    def release(self, domain: str, connection: C) -> bool:
        """`connection` ended; True when it held `domain` (announce it disconnected)."""
        if self.local.get(domain) is connection:
            del self.local[domain]
            return True
        return False

    def heard(self, news: m.ComponentAt) -> C | None:
        """Another worker's news. Returns the connection here to close with <conflict/>, when
        both workers let a handshake for one domain through at once: the lower number keeps it
        (each side decides the same on the other's announcement)."""
        if news.worker == self.index:
            return None
        if not news.connected:
            if self.remote.get(news.domain) == news.worker:
                del self.remote[news.domain]
            return None
        local = self.local.get(news.domain)
        if local is not None and not local.closed:
            if news.worker > self.index:
                return None  # ours stays; that worker closes its own on our announcement
            del self.local[news.domain]
            self.remote[news.domain] = news.worker
            return local
        self.remote[news.domain] = news.worker
        return None

    def membership(self, live: Collection[int]) -> None:
        """Forget what workers that left held: their streams ended with them."""
        for domain, worker in list(self.remote.items()):
            if worker not in live:
                del self.remote[domain]
