"""A network namespace of the test's own, linked to the host by a veth pair (root only).

    host side  10.<n>.0.1/30  ──veth──  10.<n>.0.2/30  inside the namespace

A process started with `prefix` (``ip netns exec NAME``) runs inside; `cut` takes the host side
of the link down (nothing crosses either way: no reset, packets just vanish, as when a cable or
a switch fails) and `heal` brings it back. Removing the namespace removes its end of the pair,
and with it the host's.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


class NetnsUnavailable(RuntimeError):
    """Not root, or no `ip` command: no namespace for this test."""


@dataclass(frozen=True)
class Namespace:
    name: str
    host_link: str
    host_address: str  #: the host side's address (reachable from inside)
    address: str  #: the namespace side's address (reachable from the host)
    network: str  #: the /30 both are in

    @property
    def prefix(self) -> tuple[str, ...]:
        return ("ip", "netns", "exec", self.name)

    def cut(self) -> None:
        _ip("link", "set", self.host_link, "down")

    def heal(self) -> None:
        _ip("link", "set", self.host_link, "up")


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")


@contextmanager
def namespace(label: str, octet: int) -> Iterator[Namespace]:
    """A namespace named after `label` and this process, on 10.`octet`.0.0/30.

    Raises:
        NetnsUnavailable: not root (namespaces need CAP_SYS_ADMIN and CAP_NET_ADMIN).
    """
    if os.geteuid() != 0:
        raise NetnsUnavailable("network namespaces need root")
    tag = f"{label}{os.getpid() % 100000}"
    ns = Namespace(f"imx-{tag}", f"vh{tag}"[:15], f"10.{octet}.0.1", f"10.{octet}.0.2", f"10.{octet}.0.0/30")
    inner = f"vn{tag}"[:15]
    _ip("netns", "add", ns.name)
    try:
        _ip("link", "add", ns.host_link, "type", "veth", "peer", "name", inner)
        _ip("link", "set", inner, "netns", ns.name)
        _ip("addr", "add", f"{ns.host_address}/30", "dev", ns.host_link)
        _ip("link", "set", ns.host_link, "up")
        _ip("-n", ns.name, "addr", "add", f"{ns.address}/30", "dev", inner)
        _ip("-n", ns.name, "link", "set", inner, "up")
        _ip("-n", ns.name, "link", "set", "lo", "up")
        yield ns
    finally:
        subprocess.run(["ip", "netns", "del", ns.name], capture_output=True, timeout=30, check=False)
        subprocess.run(["ip", "link", "del", ns.host_link], capture_output=True, timeout=30, check=False)
