"""`imactor export` and `imactor import`, run for real in a subprocess against a temporary config."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "xep0227"
TIMEOUT = 120


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "imactor.toml"
    path.write_text('[server]\ndomain = "localhost"\ndata_dir = "data"\n', encoding="utf-8")
    return path


def imactor(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "imactor", *args, "--config", str(config)],
                          capture_output=True, text=True, timeout=TIMEOUT, check=False)  # fmt: skip


def test_malformed_file_is_one_line_naming_the_element_and_nothing_is_imported(
    tmp_path: Path, config: Path
) -> None:
    bad = tmp_path / "bad.xml"
    bad.write_text("<server-data xmlns='urn:xmpp:pie:0'>\n<host jid='localhost'>\n<user name='ok'/>\n"
                   "<user name='a'><query xmlns='jabber:iq:roster'>\n"
                   "<item jid='b@localhost' subscription='x'/></query></user>"
                   "</host></server-data>")  # fmt: skip
    result = imactor(config, "import", str(SAMPLES / "prosody" / "alice@localhost.xml"), str(bad))
    assert result.returncode == 1, result
    problem = "<item>: subscription 'x' is not one of none, to, from, both; nothing imported"
    assert result.stderr == f"imactor: error: {bad}:5: {problem}\n"
    assert imactor(config, "user", "list").stdout == ""  # not even the first, well-formed file


def test_dry_run_import_export_file_mode(tmp_path: Path, config: Path) -> None:
    files = [str(p) for p in sorted((SAMPLES / "prosody").glob("*.xml"))]
    dry = imactor(config, "import", "--dry-run", *files)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines()[-1] == "would change 3 of 3 accounts"
    assert "server is running" not in dry.stdout
    assert imactor(config, "user", "list").stdout == ""

    assert imactor(config, "import", *files).stdout.splitlines()[-1] == "changed 3 of 3 accounts"
    assert imactor(config, "import", *files).stdout.splitlines()[-1] == "changed 0 of 3 accounts"
    out = tmp_path / "export.xml"
    result = imactor(config, "export", str(out))
    assert result.stdout == f"exported 3 accounts of localhost to {out}\n", result.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600  # XEP-0227 §6: it holds credentials
    assert out.read_bytes().startswith(b"<?xml version='1.0' encoding='UTF-8'?>\n<server-data")


def test_each_hosts_accounts_are_exported_under_their_host_and_imported_back(tmp_path: Path) -> None:
    text = '[server]\ndomain = "localhost"\ndata_dir = "{}"\n[[hosts]]\ndomain = "other.example"\n'
    config, copy = tmp_path / "imactor.toml", tmp_path / "copy.toml"
    config.write_text(text.format("data"), encoding="utf-8")
    copy.write_text(text.format("copy-data"), encoding="utf-8")
    for user in ("alice", "alice@other.example"):
        assert imactor(config, "user", "add", user, "--password", "pw").returncode == 0
    out = tmp_path / "export.xml"
    result = imactor(config, "export", str(out))
    assert result.stdout.splitlines() == [
        f"exported 2 accounts (1 of localhost, 1 of other.example) to {out}",
    ], result.stderr
    assert b'<host jid="other.example">' in out.read_bytes()
    imported = imactor(copy, "import", str(out))
    assert imported.stdout.splitlines()[-1] == "changed 2 of 2 accounts", imported.stderr
    assert sorted(imactor(copy, "user", "list").stdout.split()) == ["alice", "alice@other.example"]
