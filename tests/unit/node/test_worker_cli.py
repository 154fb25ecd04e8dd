"""The internal `imactor worker` command line: hidden from the help, strict about its arguments."""

from __future__ import annotations

import pytest

from imactor.cli import _parser, main
from imactor.worker.process import parse_listen


def test_worker_is_not_in_the_help_listing(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    listing = capsys.readouterr().out
    assert "supervise" in listing
    assert "worker" not in listing


def test_worker_arguments() -> None:
    argv = ["worker", "--config", "c.toml", "--index", "1", "--workers", "2", "--run-dir", "/tmp/r"]
    args = _parser().parse_args([*argv, "--listen", "c2s=3,4", "--listen", "c2s_tls=5"])
    assert (args.index, args.workers, str(args.run_dir)) == (1, 2, "/tmp/r")
    assert parse_listen(args.listen) == {"c2s": (3, 4), "c2s_tls": (5,)}


@pytest.mark.parametrize("value", ["c2s", "c2s=", "=3", "c2s=x", "c2s=-1", "c2s=3,"])
def test_parse_listen_rejects(value: str) -> None:
    with pytest.raises(ValueError, match="expected NAME=FD"):
        parse_listen([value])


def test_parse_listen_rejects_a_name_twice() -> None:
    with pytest.raises(ValueError, match="each name once"):
        parse_listen(["c2s=3", "c2s=4"])


def test_an_index_outside_the_node_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["worker", "--config", "c.toml", "--index", "2", "--workers", "2", "--run-dir", "/tmp/r"]
    assert main(argv) == 1
    assert "--index 2: a node of 2 workers numbers them from 0" in capsys.readouterr().err
