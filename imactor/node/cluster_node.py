"""Builds this node's `ClusterMember` from the configuration ([cluster], docs/cluster.md)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import TYPE_CHECKING

from imactor.cluster.endpoints import worker_endpoint
from imactor.cluster.keys import read_key_file
from imactor.node.lease import ClusterMember
from imactor.storage.cluster import ClusterStore, NodeRecord

if TYPE_CHECKING:
    from imactor.config import Config


def cluster_member(config: Config, run_dir: Path) -> ClusterMember:
    """This node's member, not joined yet.

    Raises:
        KeyFileError: the node's key file is missing or bad.
        OSError: no free port for a worker's mesh socket (mesh_port = 0).
    """
    cluster = config.cluster
    assert cluster.key_file is not None  # the config's check
    keys = read_key_file(cluster.key_file)
    count = config.server.worker_count
    ports = _mesh_ports(cluster.mesh_host, cluster.mesh_port, count)
    advertised = cluster.advertise or cluster.mesh_host
    node = NodeRecord(
        name=cluster.node,
        incarnation=ClusterMember.new_incarnation(),
        public_key=keys.public,
        endpoints={index: f"tcp://{_bracketed(advertised)}:{port}" for index, port in enumerate(ports)},
        clients={},
    )
    return ClusterMember(
        ClusterStore(config.storage_url),
        node,
        lease=cluster.lease,
        heartbeat=cluster.heartbeat,
        local_endpoints={index: worker_endpoint(run_dir, index) for index in range(count)},
        bind_endpoints={
            index: f"tcp://{_bracketed(cluster.mesh_host)}:{port}" for index, port in enumerate(ports)
        },
        live_local=list,
        redirect_margin=cluster.redirect_margin if cluster.redirect == "least-loaded" else None,
    )


def _mesh_ports(host: str, base: int, count: int) -> list[int]:
    """Worker N's port: base + N; with base 0, ports the OS reports free now (each worker binds
    its own later, and binds the same one again when it restarts)."""
    if base:
        return [base + index for index in range(count)]
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    probes = [socket.socket(family, socket.SOCK_STREAM) for _ in range(count)]
    try:  # all held open at once, so that the OS gives each a different port
        for probe in probes:
            probe.bind((host, 0))
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host
