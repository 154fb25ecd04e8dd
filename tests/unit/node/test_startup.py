"""The node supervisor's start-up work (`imactor.node.startup`): private files, mode warnings."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from imactor.config import Config, load_config
from imactor.node.startup import prepare_node


@pytest.fixture
def config(tmp_path: Path) -> Iterator[Config]:
    """A node configured from nothing, under the usual umask 022 (SQLite alone makes 0644 files)."""
    source = tmp_path / "imactor.toml"
    source.write_text('[server]\ndata_dir = "data"\n')
    previous = os.umask(0o022)
    try:
        yield load_config(source)
    finally:
        os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_a_new_node_creates_its_data_private(config: Config, caplog: pytest.LogCaptureFixture) -> None:
    data = config.server.data_dir
    await prepare_node(config)
    assert _mode(data) == 0o700
    assert _mode(data / "imactor.sqlite3") == 0o600
    assert _mode(config.tls_key) == 0o600
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_loosened_modes_are_named_in_a_warning_and_the_node_starts(
    config: Config, caplog: pytest.LogCaptureFixture
) -> None:
    data = config.server.data_dir
    await prepare_node(config)
    database = data / "imactor.sqlite3"
    database.chmod(0o644)
    data.chmod(0o750)  # group read: allowed (an administrators' group, a backup agent)
    config.tls_key.chmod(0o604)
    with caplog.at_level(logging.WARNING, logger="imactor.node"):
        await prepare_node(config)  # warns, does not refuse
    warnings = sorted(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert len(warnings) == 2, warnings
    assert warnings[0].startswith(f"file {database} has mode 0644: other local users can read it")
    assert "chmod it to 0600 (0640 at most)" in warnings[0]
    assert warnings[1].startswith(f"file {config.tls_key} has mode 0604")
    assert "TLS private key" in warnings[1]


async def test_a_components_secret_file_readable_by_others_is_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret = tmp_path / "gateway.secret"
    secret.write_text("s3cret\n")
    secret.chmod(0o644)
    source = tmp_path / "imactor.toml"
    source.write_text(
        '[server]\ndata_dir = "data"\n[components."gateway.example"]\nsecret_file = "gateway.secret"\n'
    )
    with caplog.at_level(logging.WARNING, logger="imactor.node"):
        await prepare_node(load_config(source))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith(f"file {secret} has mode 0644")
    assert "component gateway.example" in warnings[0]
