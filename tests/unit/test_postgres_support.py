"""The throw-away PostgreSQL server of the tests (tests/support/postgres.py): without its
programs, a test that needs it is skipped on a developer's machine and fails under CI=true."""

from __future__ import annotations

import pytest

from tests.support import postgres


def test_without_postgresql_the_tests_skip_or_fail_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(postgres, "BIN_GLOB", "/nonexistent/postgresql/*/bin")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no PostgreSQL server programs"):
        postgres.server_or_fail()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true: the PostgreSQL tests must run"):
        postgres.server_or_fail()
