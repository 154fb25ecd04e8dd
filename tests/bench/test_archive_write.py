"""bench.archive_write runs end to end on a tiny load and reports every layout's figure (the
figures themselves are for docs/benchmarks.md, not judged here)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

# bench/ is not an installed package (the smoke runs start it with `python -m` from the root).
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.archive_write import main


def test_reports_every_layout_at_every_batch_size(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    assert main(["--messages", "24", "--users", "10", "--batches", "1,4", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    for layout in ("append_wanted", "move_journal", "indexed_rows", "journal"):
        assert set(report[layout]) == {"1", "4"}, report[layout]  # JSON keys
        assert all(value > 0 for value in report[layout].values()), report[layout]
    assert report["bulk_sorted"] > 0
    assert {"indexed_rows_checkpoint", "journal_checkpoint", "bulk_sorted_checkpoint"} <= set(report)


def test_refuses_batches_larger_than_the_run() -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--messages", "4", "--batches", "1,8"])
    assert exit_info.value.code == 2
