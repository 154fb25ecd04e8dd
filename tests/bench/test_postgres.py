"""The throw-away PostgreSQL cluster of the peers' -pg variants (bench/peers/postgres.py):
initdb, start on a free loopback port, a role and database with a schema, stop, in seconds."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# bench/ is not an installed package (the smoke runs start it with `python -m` from the root).
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.peers.common import PeerError
from bench.peers.postgres import BIN_DIR, running_postgres

pytestmark = pytest.mark.skipif(
    not (BIN_DIR / "initdb").exists(), reason="PostgreSQL 15 not installed (scripts/install-peers.sh)"
)


@pytest.fixture
def run_dir() -> Iterator[Path]:
    # Not pytest's tmp_path: as root, the cluster runs as `postgres`, which must reach the
    # directory, and pytest's base dir is closed to others (a run's temp dir is under /tmp).
    with tempfile.TemporaryDirectory(prefix="bench-pg-test-") as name:
        yield Path(name)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_cluster_starts_serves_a_database_with_its_schema_and_stops(run_dir: Path) -> None:
    schema = run_dir / "schema.sql"
    schema.write_text(
        "CREATE TABLE users (username text PRIMARY KEY);\nINSERT INTO users VALUES ('bench0');\n"
    )
    with running_postgres(run_dir) as postgres:
        pid = postgres.pid
        assert pid is not None
        assert _alive(pid)
        database = postgres.create_database("peer", schema)
        assert (database.host, database.port, database.name, database.user) == (
            "127.0.0.1",
            postgres.port,
            "peer",
            "peer",
        )
        # the schema's tables belong to the peer's role, which logs in with its own password
        owner = postgres.psql(
            "peer", "-At", "-c", "SELECT tableowner FROM pg_tables WHERE tablename = 'users'"
        )
        assert owner.strip() == "peer"
        rows = postgres.psql("peer", "-At", "-c", "SELECT username FROM users", user="peer",
                             password=database.password)  # fmt: skip
        assert rows.strip() == "bench0"
        with pytest.raises(PeerError, match="password authentication failed"):
            postgres.psql("peer", "-c", "SELECT 1", user="peer", password="wrong")
    assert not _alive(pid)
    assert not (run_dir / "postgres" / "data" / "postmaster.pid").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs the cluster as another user")
def test_a_directory_the_postgres_user_cannot_reach_is_refused_with_a_reason(run_dir: Path) -> None:
    closed = run_dir / "closed"
    closed.mkdir(mode=0o700)
    inner = closed / "run"
    inner.mkdir()
    with pytest.raises(PeerError, match="cannot reach"), running_postgres(inner):
        pass
