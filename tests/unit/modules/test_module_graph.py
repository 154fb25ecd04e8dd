"""The feature modules depend on each other one way only: no import circle among them.

PEP announces the changes of its nodes (`Module.on_node`) instead of calling the modules that
follow them, so avatar and bookmarks import PEP and PEP imports neither (issue 15, point 6).
"""

from __future__ import annotations

from tests.unit.test_layering import imports_of, module_name, product_files


def module_graph(files: dict[str, str], folder: str = "imactor/modules/") -> dict[str, set[str]]:
    """For the files under `folder`: module → the modules of that folder it imports (anywhere in
    the file, under TYPE_CHECKING too)."""
    names = {path: module_name(path) for path in files if path.startswith(folder)}
    known = set(names.values())
    return {
        name: {
            imp.module for imp in imports_of(files[path], path) if imp.module in known and imp.module != name
        }
        for path, name in names.items()
    }


def circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of `graph`, as the modules along it, or None."""
    done: set[str] = set()

    def walk(node: str, path: list[str]) -> list[str] | None:
        if node in path:
            return [*path[path.index(node) :], node]
        if node in done:
            return None
        for target in sorted(graph.get(node, ())):
            found = walk(target, [*path, node])
            if found is not None:
                return found
        done.add(node)
        return None

    for start in sorted(graph):
        found = walk(start, [])
        if found is not None:
            return found
    return None


def test_no_module_imports_another_in_a_circle() -> None:
    graph = module_graph(product_files())
    assert "imactor.modules.pep" in graph["imactor.modules.avatar"]  # the walker sees real edges
    assert circle(graph) is None


def test_pep_knows_none_of_the_modules_that_follow_its_nodes() -> None:
    graph = module_graph(product_files())
    assert graph["imactor.modules.pep"] == set()


def test_the_circle_finder_finds_one_in_a_function_level_import() -> None:
    files = {
        "imactor/modules/a.py": "from imactor.modules import b\n",
        "imactor/modules/b.py": "def f():\n    from imactor.modules import a\n",
        "imactor/modules/c.py": "from imactor.modules import a\n",
    }
    assert circle(module_graph(files)) == ["imactor.modules.a", "imactor.modules.b", "imactor.modules.a"]
