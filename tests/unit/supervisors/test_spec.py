"""ChildSpec validation, restart-type decisions, errors, and the layering rule."""

from __future__ import annotations

import ast
import dataclasses
import math
import pickle
from pathlib import Path

import pytest

import supervisors
from supervisors import ChildFailedToStart, ChildSpec, Restart, RestartBudgetExceeded, SupervisorError


async def _noop(*, task_status: object) -> None:
    return None


@pytest.mark.parametrize(
    ("restart", "failed", "expected"),
    [
        (Restart.PERMANENT, False, True),
        (Restart.PERMANENT, True, True),
        (Restart.TRANSIENT, False, False),
        (Restart.TRANSIENT, True, True),
        (Restart.TEMPORARY, False, False),
        (Restart.TEMPORARY, True, False),
    ],
)
def test_restart_types(restart: Restart, failed: bool, expected: bool) -> None:
    assert restart.wants_restart(failed=failed) is expected


def test_child_spec_defaults_and_immutability() -> None:
    spec = ChildSpec("a", _noop)
    assert (spec.restart, spec.shutdown) == (Restart.PERMANENT, 5.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.id = "b"  # type: ignore[misc]


@pytest.mark.parametrize("shutdown", [-1.0, math.nan])
def test_child_spec_rejects_bad_shutdown(shutdown: float) -> None:
    with pytest.raises(ValueError, match="shutdown must be >= 0"):
        ChildSpec("a", _noop, shutdown=shutdown)


def test_child_spec_accepts_infinite_shutdown() -> None:
    assert ChildSpec("sup", _noop, shutdown=math.inf).shutdown == math.inf


def test_child_spec_rejects_empty_id_and_bad_types() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        ChildSpec("", _noop)
    with pytest.raises(TypeError, match="callable"):
        ChildSpec("a", "not a function")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Restart"):
        ChildSpec("a", _noop, restart="permanent")  # type: ignore[arg-type]


def test_restart_budget_exceeded_chains_the_cause_and_pickles() -> None:
    cause = ValueError("disk full")
    error = RestartBudgetExceeded("root", "storage", cause)
    assert isinstance(error, SupervisorError)
    assert error.__cause__ is cause
    assert "root" in str(error)
    assert "storage" in str(error)
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.supervisor_name, copy.child_id, str(copy.last_error)) == ("root", "storage", "disk full")


def test_child_failed_to_start_chains_the_cause_and_pickles() -> None:
    cause = OSError("port in use")
    error = ChildFailedToStart("root", "listener", cause)
    assert isinstance(error, SupervisorError)
    assert error.__cause__ is cause
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.supervisor_name, copy.child_id, str(copy.error)) == ("root", "listener", "port in use")


def test_supervisors_never_imports_imactor() -> None:
    package = Path(supervisors.__file__).parent
    offenders = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] == "imactor"]
    assert len(list(package.glob("*.py"))) >= 5  # the walk really saw the package
    assert offenders == []
