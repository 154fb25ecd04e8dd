"""The room core's layout (issue 15, point 7): one file per concern, no import circle among them,
and none so long that it hides several concerns."""

from __future__ import annotations

from tests.unit.modules.test_module_graph import circle, module_graph
from tests.unit.test_layering import product_files

#: Longer files must say why at their top (none does today).
MAX_LINES = 450


def test_the_room_core_imports_itself_without_a_circle() -> None:
    graph = module_graph(product_files(), "imactor/muc/")
    assert {"imactor.muc.occupancy", "imactor.muc.conversation", "imactor.muc.core"} <= graph[
        "imactor.muc.room"
    ]
    assert circle(graph) is None


def test_the_parts_of_a_room_do_not_know_the_room() -> None:
    graph = module_graph(product_files(), "imactor/muc/")
    users = sorted(name for name, imported in graph.items() if "imactor.muc.room" in imported)
    assert users == ["imactor.muc"]  # the package's own re-export, nothing else


def test_the_status_package_imports_itself_without_a_circle() -> None:
    graph = module_graph(product_files(), "imactor/node/status/")
    assert "imactor.node.status.wire" in graph["imactor.node.status.server"]
    assert circle(graph) is None


def test_no_file_of_the_room_core_or_the_node_is_too_long() -> None:
    files = product_files()
    long = [
        path
        for path, source in files.items()
        if path.startswith(("imactor/muc/", "imactor/node/")) and source.count("\n") > MAX_LINES
    ]
    assert long == []
