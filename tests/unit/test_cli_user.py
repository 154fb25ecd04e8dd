"""The ``imactor`` command line, run for real in a subprocess against a temporary config."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import trio

from imactor.storage import Storage
from imactor.xmpp.scram import verify_password

# Short commands: each subprocess gets this long at most.
TIMEOUT = 120


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "conf" / "imactor.toml"
    path.parent.mkdir()
    path.write_text('[server]\ndomain = "example.org"\ndata_dir = "../data"\n', encoding="utf-8")
    return path


def imactor(*args: str, stdin: str = "", cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "imactor", *args],
        input=stdin, capture_output=True, text=True, timeout=TIMEOUT, cwd=cwd, check=False,
    )  # fmt: skip


def assert_one_line_error(result: subprocess.CompletedProcess[str], text: str) -> None:
    assert result.returncode == 1, result
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("imactor: error: ")
    assert text in result.stderr
    assert "Traceback" not in result.stderr


async def check_password(config: Path, username: str, password: str) -> bool:
    url = f"sqlite:///{config.parent.parent / 'data' / 'imactor.sqlite3'}"
    async with await Storage.open(url) as storage:
        creds = await storage.accounts.get_credentials(username)
    assert creds is not None
    return await trio.to_thread.run_sync(
        lambda: verify_password(password, creds["SHA-256"]) and verify_password(password, creds["SHA-1"])
    )


async def test_add_list_passwd_del(config: Path) -> None:
    c = str(config)
    added = imactor("user", "add", "Alice", "--password", "s3cret", "--config", c)
    assert added.returncode == 0, added.stderr
    assert added.stdout == "created alice@example.org\n"
    assert (config.parent.parent / "data" / "imactor.sqlite3").is_file()  # data_dir relative to conf
    assert await check_password(config, "alice", "s3cret")

    # Password from standard input (not a terminal), config given before the command.
    assert imactor("--config", c, "user", "add", "bob", stdin="from stdin\n").returncode == 0
    assert await check_password(config, "bob", "from stdin")

    listed = imactor("user", "list", "--config", c)
    assert listed.returncode == 0
    assert listed.stdout == "alice\nbob\n"

    changed = imactor("user", "passwd", "alice", "--config", c, stdin="n3w pass\n")
    assert changed.returncode == 0, changed.stderr
    assert await check_password(config, "alice", "n3w pass")
    assert not await check_password(config, "alice", "s3cret")

    deleted = imactor("user", "del", "alice", "--config", c)
    assert deleted.returncode == 0
    assert deleted.stdout == "deleted alice@example.org\n"
    assert imactor("user", "list", "--config", c).stdout == "bob\n"


def test_errors_are_one_line_with_status_1(config: Path) -> None:
    c = str(config)
    assert imactor("user", "add", "alice", "--password", "pw", "--config", c).returncode == 0
    assert_one_line_error(
        imactor("user", "add", "alice", "--password", "x", "--config", c), "alice already exists"
    )
    assert_one_line_error(
        imactor("user", "add", "bad@name", "--password", "x", "--config", c), "invalid username"
    )
    assert_one_line_error(imactor("user", "del", "nobody", "--config", c), "no account nobody")
    assert_one_line_error(imactor("user", "passwd", "nobody", "--password", "x", "--config", c), "no account")
    assert_one_line_error(imactor("user", "add", "carol", "--config", c), "no password")  # empty stdin
    assert_one_line_error(imactor("user", "add", "--config", c), "give a USER or --file")


def test_email_digests_on_and_off(config: Path) -> None:
    """`imactor user notify` (docs/email.md): shown, turned off and on; an unknown account is an error."""
    c = str(config)
    assert imactor("user", "add", "alice", "--password", "pw", "--config", c).returncode == 0
    shown = imactor("user", "notify", "Alice", "--config", c)  # a prepared name
    assert shown.stdout == "email digests of alice@example.org: on\n"
    off = imactor("user", "notify", "alice", "off", "--config", c)
    assert (off.returncode, off.stdout) == (0, "email digests of alice@example.org: off\n")
    assert imactor("user", "notify", "alice", "--config", c).stdout.endswith(": off\n")
    assert imactor("user", "notify", "alice", "on", "--config", c).stdout.endswith(": on\n")
    assert_one_line_error(imactor("user", "notify", "nobody", "off", "--config", c), "no such account")
    assert imactor("user", "notify", "alice", "maybe", "--config", c).returncode == 2  # argparse


async def test_logout_everywhere_without_a_running_server_revokes_the_tokens(config: Path) -> None:
    """`imactor user logout-everywhere` (docs/operations.md): the tokens go from the database
    even when no server runs (the running server's sessions: tests/integration/test_sasl2.py)."""
    c = str(config)
    assert imactor("user", "add", "alice", "--password", "pw", "--config", c).returncode == 0
    url = f"sqlite:///{config.parent.parent / 'data' / 'imactor.sqlite3'}"
    async with await Storage.open(url) as storage:
        for client in ("phone", "laptop"):
            await storage.fast_tokens.issue(
                "alice", client, b"k" * 32, "HT-SHA-256-NONE", expires_at=2e9, now=1e9
            )
    result = await trio.to_thread.run_sync(
        lambda: imactor("user", "logout-everywhere", "Alice", "--config", c)
    )
    assert (result.returncode, result.stdout) == (
        0, "revoked 2 FAST token(s) of alice@example.org; the server is not running\n",
    )  # fmt: skip
    async with await Storage.open(url) as storage:
        assert await storage.fast_tokens.tokens("alice", "phone") == []
    nobody = await trio.to_thread.run_sync(
        lambda: imactor("user", "logout-everywhere", "nobody", "--config", c)
    )
    assert_one_line_error(nobody, "no such account")


def test_bad_or_missing_config(tmp_path: Path, config: Path) -> None:
    config.write_text('[limits]\nmax_stanza_size = "big"\n', encoding="utf-8")
    assert_one_line_error(
        imactor("user", "list", "--config", str(config)),
        f'{config}: limits.max_stanza_size: expected a positive integer, got "big"',
    )
    missing = tmp_path / "missing.toml"
    assert_one_line_error(imactor("user", "list", "--config", str(missing)), f"{missing}: cannot read")


def test_check_config(config: Path) -> None:
    ok = imactor("check-config", "--config", str(config))
    assert (ok.returncode, ok.stdout) == (0, f"ok: {config}\n")
    config.write_text("[server]\nnope = 1\n", encoding="utf-8")
    assert_one_line_error(imactor("check-config", "--config", str(config)), "server.nope: unknown key")


def test_config_defaults_to_conf_imactor_toml(config: Path) -> None:
    result = imactor("check-config", cwd=config.parent.parent)
    assert (result.returncode, result.stdout) == (0, "ok: conf/imactor.toml\n")


async def test_bulk_add_from_file(tmp_path: Path, config: Path) -> None:
    c = str(config)
    assert imactor("user", "add", "user0001", "--password", "old", "--config", c).returncode == 0
    lines = ["# generated accounts", ""]
    lines += [f"user{i:04d}:pass:{i}" if i % 2 else f"user{i:04d}\tpass {i}" for i in range(300)]
    lines.append("   ")
    accounts = tmp_path / "accounts.txt"
    accounts.write_text("\n".join(lines) + "\n", encoding="utf-8")

    result = imactor("user", "add", "--file", str(accounts), "--config", c)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "created 299 accounts, skipped 1 that already exist\n"
    listed = imactor("user", "list", "--config", c).stdout.split()
    assert listed == [f"user{i:04d}" for i in range(300)]
    assert await check_password(config, "user0003", "pass:3")  # split at the first colon only
    assert await check_password(config, "user0004", "pass 4")  # tab-separated, spaces kept
    assert await check_password(config, "user0001", "old")  # existing account untouched

    again = imactor("user", "add", "--file", "-", "--config", c, stdin="user0002:x\nnewone:y\n")
    assert again.stdout == "created 1 accounts, skipped 1 that already exist\n"


def test_bulk_add_reports_the_bad_line_and_creates_nothing(tmp_path: Path, config: Path) -> None:
    accounts = tmp_path / "accounts.txt"
    accounts.write_text("good:pw\n# comment\nno separator here\n", encoding="utf-8")
    assert_one_line_error(
        imactor("user", "add", "--file", str(accounts), "--config", str(config)),
        f"{accounts}:3: expected username:password",
    )
    accounts.write_text("good:pw\nbad user:pw\n", encoding="utf-8")
    assert_one_line_error(
        imactor("user", "add", "--file", str(accounts), "--config", str(config)),
        f"{accounts}:2: invalid username 'bad user'",
    )
    assert imactor("user", "list", "--config", str(config)).stdout == ""
    assert_one_line_error(
        imactor("user", "add", "--file", str(tmp_path / "none.txt"), "--config", str(config)), "none.txt"
    )


def test_usage_errors_exit_2() -> None:
    result = imactor("user", "frobnicate")
    assert result.returncode == 2
    assert "usage:" in result.stderr


def test_db_migrate_creates_the_schema(config: Path) -> None:
    # (PostgreSQL, several nodes at once, and "the schema is current": tests/unit/storage/test_postgres.py)
    from imactor.storage.schema import current_version

    database = config.parent.parent / "data" / "imactor.sqlite3"
    first = imactor("db", "migrate", "--config", str(config))
    assert (first.returncode, first.stdout) == (0, f"created the schema, version {current_version()} "
                                                   f"(sqlite:///{database})\n"), first.stderr  # fmt: skip


def test_db_migrate_of_an_unreachable_database_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "imactor.toml"
    # Port 1 on loopback: nothing listens there, the connection is refused at once.
    config.write_text('[storage]\nurl = "postgresql+psycopg://imactor:secret@127.0.0.1:1/imactor"\n')
    result = imactor("db", "migrate", "--config", str(config))
    assert_one_line_error(result, "the PostgreSQL server is unreachable or restarting")
    assert "secret" not in result.stderr
