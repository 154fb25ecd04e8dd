"""A configuration file written from text, for the tests of how it is read."""

from __future__ import annotations

from pathlib import Path


def config_file(tmp_path: Path, text: str) -> Path:
    """`text` as ``conf/imactor.toml`` under `tmp_path`: the shipped layout, against which the
    file's relative paths (data dir, certificates) resolve."""
    path = tmp_path / "conf" / "imactor.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
