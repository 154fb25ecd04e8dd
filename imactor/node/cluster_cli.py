"""``imactor cluster ...``: a node's key, and the nodes of the cluster (docs/cluster.md)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from imactor.config import load_config


class ClusterCommandError(Exception):
    """An expected failure of a cluster command (one line on stderr)."""


def add_cluster_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    actions = commands.add_parser("cluster", help="a node's key; the nodes of the cluster").add_subparsers(
        title="cluster commands", required=True, metavar="ACTION"
    )
    keygen = actions.add_parser("keygen", parents=[common], help="write a new CURVE key file for this node")
    keygen.add_argument("file", type=Path, nargs="?", help="where (default: cluster.key_file of the config)")
    keygen.set_defaults(handler=_keygen)
    nodes = actions.add_parser(
        "nodes", parents=[common], help="the cluster's nodes, their workers and leases"
    )
    nodes.add_argument("--json", action="store_true", help="one JSON object per node")
    nodes.set_defaults(handler=_nodes)


def _keygen(args: argparse.Namespace, config_path: Path) -> int:
    from imactor.cluster.keys import KeyFileError, write_key_file

    path: Path | None = args.file
    if path is None:
        path = load_config(config_path).cluster.key_file
        if path is None:
            raise ClusterCommandError(f"{config_path}: cluster.key_file: not set; name the file to write")
    try:
        keys = write_key_file(path)
    except KeyFileError as exc:
        raise ClusterCommandError(str(exc)) from None
    print(f"wrote {path} (mode 0600); this node's public key: {keys.public}")
    return 0


def _nodes(args: argparse.Namespace, config_path: Path) -> int:
    from imactor.storage.cluster import ClusterStore

    config = load_config(config_path)
    if not config.storage.url.startswith("postgresql"):
        raise ClusterCommandError(
            f"{config_path}: storage.url: a cluster lives in PostgreSQL; this is not one"
        )
    store = ClusterStore(config.storage_url)
    try:
        nodes, epoch = store.nodes()
    finally:
        store.close()
    if args.json:
        for node in nodes:
            print(json.dumps({
                "id": node.id, "name": node.name, "live": node.lease_left > 0,
                "live_workers": list(node.live_workers), "sessions": node.sessions,
                "lease_age": round(node.lease_age, 3), "lease_left": round(node.lease_left, 3),
                "endpoints": {str(i): e for i, e in node.endpoints.items()}, "clients": dict(node.clients),
                "public_key": node.public_key,
            }))  # fmt: skip
        return 0
    print(f"membership epoch {epoch}")
    print(f"{'id':>4}  {'name':<20} {'state':<6} {'workers':<12} {'sessions':>8}  {'lease age':>9}  key")
    for node in nodes:
        state = "live" if node.lease_left > 0 else "dead"
        workers = ",".join(map(str, node.live_workers)) or "-"
        print(f"{node.id:>4}  {node.name:<20} {state:<6} {workers:<12} {node.sessions:>8}  "
              f"{node.lease_age:>8.1f}s  {node.public_key}")  # fmt: skip
    return 0
