"""What the node supervisor's own HTTP listeners share (the metrics endpoint, the admin console):
who may connect, and serving a handler on every listener until cancelled."""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, Iterable, Sequence

import trio

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def networks_of(allow: Iterable[str]) -> list[Network]:
    """The `allow` list of a listener's config (addresses or networks, checked by the config)."""
    return [ipaddress.ip_network(network) for network in allow]


def allowed(remote: str, networks: Sequence[Network]) -> bool:
    """Whether the peer address `remote` is in `networks`; an IPv4-mapped IPv6 address counts as
    its IPv4 address, and an IPv6 zone is ignored."""
    address = ipaddress.ip_address(remote.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks)


async def serve_until_cancelled(
    handle: Callable[[trio.SocketStream], Awaitable[None]],
    listeners: Sequence[trio.SocketListener],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept on every listener, a task per connection, until cancelled; then close them."""
    try:
        async with trio.open_nursery() as nursery:
            for listener in listeners:
                nursery.start_soon(trio.serve_listeners, handle, [listener])
            task_status.started()
    finally:
        with trio.CancelScope(shield=True):
            for listener in listeners:
                await listener.aclose()
