"""The README's table of supported standards is generated from module metadata and kept current."""

from __future__ import annotations

import pytest

from imactor import xep_table
from imactor.config import DEFAULT_MODULES


def test_readme_table_is_up_to_date() -> None:
    assert xep_table.main(["--check"]) == 0, "README.md is out of date: run `python -m imactor.xep_table`"


def test_every_spec_has_a_title_and_says_how_it_is_announced() -> None:
    modules = xep_table.all_modules()
    numbers = {xep.number for module in modules for xep in module.xeps}
    numbers |= {core.spec[4:] for core in xep_table.CORE if core.spec.startswith("XEP-")}
    missing_titles = sorted(n for n in numbers if f"XEP-{n}" not in xep_table.TITLES)
    assert missing_titles == [], "add these to xep_table.TITLES"
    missing_features = sorted(n for n in numbers if n not in xep_table.FEATURES)
    assert missing_features == [], "say in xep_table.FEATURES which disco feature announces these (or None)"
    assert all(core.spec in xep_table.TITLES for core in xep_table.CORE)


def test_statuses_say_complete_or_partial() -> None:
    for row in xep_table.rows(xep_table.all_modules()):
        for status in row.status.split("; "):
            assert status.startswith(("complete", "partial")), row


def test_every_default_module_is_shipped() -> None:
    shipped = {module.name for module in xep_table.all_modules()}
    assert set(DEFAULT_MODULES) <= shipped


def test_rows_merge_a_xep_several_modules_implement_and_escape_markup() -> None:
    rows = {row.spec: row for row in xep_table.rows(xep_table.all_modules())}
    assert rows["XEP-0280"].where == "`carbons` module"
    table = xep_table.render([xep_table.Row("XEP-9999", "T", "1", "partial: no <x/> | y", "w")])
    assert "| partial: no &lt;x/&gt; \\| y |" in table
    specs = list(rows)
    assert specs[: len([c for c in xep_table.CORE if c.spec.startswith("RFC")])] == [
        c.spec for c in xep_table.CORE if c.spec.startswith("RFC")
    ]
    xeps = [spec for spec in specs if spec.startswith("XEP-")]
    assert xeps == sorted(xeps)


def test_update_needs_the_markers() -> None:
    with pytest.raises(ValueError, match="markers"):
        xep_table.updated("# README without a table\n", "| table |")
    text = f"before\n{xep_table.BEGIN}\nold\n{xep_table.END}\nafter\n"
    assert xep_table.updated(text, "new") == f"before\n{xep_table.BEGIN}\nnew\n{xep_table.END}\nafter\n"
