"""The package boundaries of STYLE §12 rule 2 and ARCHITECTURE.md, enforced on the import graph.

Every ``.py`` file of the product packages (``imactor/``, ``supervisors/``) is parsed with `ast`;
every import counts wherever it sits (module level, inside a function, under ``TYPE_CHECKING``),
relative imports are resolved, and ``importlib.import_module("...")`` / ``__import__("...")`` with a
literal name count too. The rules:

1. ``imactor/xmpp/**`` is the pure protocol core: no I/O, no event loop, no clock, no randomness.
   It imports none of `CORE_FORBIDDEN`, and no ``imactor`` package but ``imactor.xmpp``.
   Randomness comes from injected factories; the two defaults are the only exceptions
   (`CORE_EXCEPTIONS`), each limited to the exact attributes it uses:
   ``sasl.py`` uses ``secrets.token_urlsafe`` (default SCRAM nonce factory) and
   ``secrets.token_bytes`` (per-process fallback for the fake-salt secret), and ``scram.py`` uses
   ``os.urandom`` (default salt of `derive_credentials`, called by the account store).
2. Only ``imactor/storage/**`` imports sqlmodel or sqlalchemy.
3. Only ``imactor/cluster/zmq_link.py`` imports zmq (so, while it does not exist, nothing does).
4. ``supervisors/**`` never imports ``imactor``.
5. ``imactor/actors/**`` never imports ``imactor.server``, ``imactor.modules`` or ``imactor.xmpp``.
6. ``imactor/modules/**`` reaches the server only through the module API, ``imactor.server.modules``
   (STYLE §12 rule 4): no other ``imactor.server`` module, no ``imactor.cluster`` or ``imactor.node``.
7. ``imactor/muc/**`` (the sans-IO multi-user chat room) keeps the core's rules: none of
   `CORE_FORBIDDEN`, no ``imactor`` package but ``imactor.xmpp`` and ``imactor.muc``, and no
   third-party package but lxml.
8. Only ``imactor/web/**`` (the HTTP shell: WebSocket, BOSH, host-meta) imports h11 and
   trio_websocket, and it reaches storage, the cluster and the node only through the server
   (no ``imactor.storage``, ``imactor.cluster``, ``imactor.node``, ``imactor.modules``).

9. Floors (`FLOORS`, ARCHITECTURE.md): each package stands on a floor and imports only packages
   on the floors below it, or its own package: no upward import, and no sideways import between
   two packages of one floor. The worker's assembly is at the top, the protocol core and the
   supervisors at the bottom.
10. No import circles between files, anywhere in the product (`circles`): a circle is a knot
    that no floor can untie, and the next feature would tighten it.

Tests, benchmarks and scripts are not product code and are not checked.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PRODUCT_PACKAGES = ("imactor", "supervisors")

#: Top-level modules the pure core must not import: event loops and sockets (I/O), databases,
#: message queues, processes and threads, the clock, and randomness.
CORE_FORBIDDEN = frozenset(
    {
        "trio", "anyio", "asyncio", "socket", "ssl", "select", "selectors", "subprocess",
        "threading", "multiprocessing", "zmq", "sqlmodel", "sqlalchemy",
        "time", "random", "secrets", "os", "uuid",
    }
)  # fmt: skip

#: (file, module) → the only attributes that file may use of that forbidden module.
CORE_EXCEPTIONS: dict[tuple[str, str], frozenset[str]] = {
    # Default nonce factory and fallback fake-salt secret; shells inject their own.
    ("imactor/xmpp/sasl.py", "secrets"): frozenset({"token_urlsafe", "token_bytes"}),
    # Default salt when the account store derives new SCRAM credentials.
    ("imactor/xmpp/scram.py", "os"): frozenset({"urandom"}),
}

#: The sans-IO multi-user chat room (imactor/muc) follows the core's rules, and may use itself.
MUC_MAY_IMPORT = ("imactor.xmpp", "imactor.muc")
HTTP_LIBRARIES = frozenset({"h11", "trio_websocket", "wsproto"})
WEB_MAY_NOT_IMPORT = ("imactor.storage", "imactor.cluster", "imactor.node", "imactor.modules")

#: What the modules reach only through the module API (`imactor.server.modules`).
MODULES_MAY_NOT_IMPORT = (
    "imactor.server", "imactor.cluster", "imactor.node", "imactor.mesh", "imactor.c2s", "imactor.user",
    "imactor.rooms", "imactor.web", "imactor.worker",
)  # fmt: skip
#: The floors, top first: a package imports only its own package and those on lower floors.
FLOORS: tuple[tuple[str, ...], ...] = (
    ("imactor.__main__",),
    ("imactor.cli",),  # the command line
    ("imactor.xep_table",),  # the README's table of standards, from the modules
    ("imactor.migration",),  # imactor export / import (XEP-0227), over storage; asks the node's status socket
    ("imactor.worker",),  # a worker's composition root: capabilities wired to the wings
    ("imactor.node",),  # the node supervisor, its status server and start-up checks
    ("imactor.console",),  # the web admin console the node supervisor serves, over storage and modules
    ("imactor.web",),  # HTTP: WebSocket and BOSH transports for client sessions
    # federation, the XEP-0065 proxy, external components (all use the c2s accept loop)
    ("imactor.s2s", "imactor.proxy65", "imactor.components"),
    ("imactor.c2s",),  # the client sessions' wing
    ("imactor.user", "imactor.rooms"),  # the account and room actors' wings
    ("imactor.modules",),  # the features, on the module API
    ("imactor.server",),  # the worker's capabilities: router, sessions table, module API, throttles
    ("imactor.mesh",),  # transport between workers: frames, epochs, remote references, hand-off
    ("imactor.messages",),  # the vocabulary of messages between actors
    ("imactor.muc", "imactor.storage", "imactor.cluster", "imactor.tls"),
    ("imactor.hosts",),  # the served domains ([[hosts]]) and account keys (pure, over the core)
    ("imactor.directory",),  # the company directory and its import files (pure, over the core)
    # the core; `imactor.wordmatch`: the word filter's matcher (pure, like the protocol core);
    # `imactor.histogram`: the latency histograms the status carries; `imactor.humanize`: figures
    # in words for the status command and the console
    ("imactor.xmpp", "imactor.actors", "imactor.config", "imactor.ids", "imactor.log", "imactor.wordmatch",
     "imactor.histogram", "imactor.humanize", "imactor"),
    ("supervisors",),
)

STORAGE_ONLY = frozenset({"sqlmodel", "sqlalchemy"})
ZMQ_LINK = "imactor/cluster/zmq_link.py"


@dataclass(frozen=True, slots=True)
class Import:
    """One imported module, by its absolute dotted name, and where."""

    module: str
    line: int

    @property
    def top(self) -> str:
        return self.module.split(".", 1)[0]


def module_name(relpath: str) -> str:
    """``imactor/xmpp/stream.py`` → ``imactor.xmpp.stream``; a package's ``__init__`` → the package."""
    parts = relpath.removesuffix(".py").split("/")
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(source: str, relpath: str) -> list[Import]:
    """Every module `source` imports, absolute. ``from a import b`` counts as ``a`` and ``a.b``."""
    tree = ast.parse(source, filename=relpath)
    is_package = relpath.endswith("__init__.py")
    package = module_name(relpath) if is_package else module_name(relpath).rpartition(".")[0]
    found: list[Import] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend(Import(alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                if node.level - 1 >= len(parts):
                    raise AssertionError(f"{relpath}:{node.lineno}: relative import beyond the top package")
                base = ".".join(parts[: len(parts) - (node.level - 1)])
                target = f"{base}.{node.module}" if node.module else base
            else:
                assert node.module is not None
                target = node.module
            found.append(Import(target, node.lineno))
            found.extend(
                Import(f"{target}.{alias.name}", node.lineno) for alias in node.names if alias.name != "*"
            )
        elif (
            isinstance(node, ast.Call)
            and _called_name(node.func) in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append(Import(node.args[0].value, node.lineno))
    return found


def _called_name(func: ast.expr) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def attribute_uses(source: str, module: str) -> tuple[set[str], list[int]]:
    """Attributes used on `module` (``import module`` only), and lines where it is used otherwise.

    A bare use (passing the module around, ``getattr``) or ``from module import name`` could reach
    anything, so those are reported as lines for the caller to reject.
    """
    tree = ast.parse(source)
    aliases = {
        alias.asname or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
        if alias.name == module
    }
    used: set[str] = set()
    attribute_values: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            used.add(node.attr)
            attribute_values.add(id(node.value))
    other: list[int] = [
        node.lineno
        for node in ast.walk(tree)
        if (isinstance(node, ast.Name) and node.id in aliases and id(node) not in attribute_values)
        or (isinstance(node, ast.ImportFrom) and node.level == 0 and node.module == module)
    ]
    return used, other


def product_files(root: Path = ROOT) -> dict[str, str]:
    """relative path → source of every .py file of the product packages."""
    files: dict[str, str] = {}
    for package in PRODUCT_PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            files[path.relative_to(root).as_posix()] = path.read_text(encoding="utf-8")
    return files


def _under(relpath: str, folder: str) -> bool:
    return relpath.startswith(folder.rstrip("/") + "/")


def _is(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def violations(files: Mapping[str, str]) -> list[str]:
    """Every broken rule in `files` (relative path → source), as readable lines."""
    found: list[str] = []
    for relpath, source in files.items():
        imports = imports_of(source, relpath)
        found.extend(_check_file(relpath, source, imports))
    return found


def _check_file(relpath: str, source: str, imports: Iterable[Import]) -> list[str]:
    found: dict[tuple[int, str], str] = {}  # one report per line and rule: "from a import b" is a and a.b

    def report(imp: Import, reason: str) -> None:
        found.setdefault((imp.line, reason), f"{relpath}:{imp.line} imports {imp.module}: {reason}")

    in_core = _under(relpath, "imactor/xmpp")
    in_muc = _under(relpath, "imactor/muc")
    excepted: set[str] = set()
    for imp in imports:
        if in_core and imp.top in CORE_FORBIDDEN:
            if (relpath, imp.top) in CORE_EXCEPTIONS:
                excepted.add(imp.top)
            else:
                report(imp, "the protocol core does no I/O, reads no clock, draws no random")
        if in_core and imp.top == "imactor" and not _is(imp.module, "imactor.xmpp"):
            report(imp, "the protocol core imports only imactor.xmpp")
        if in_muc and imp.top in CORE_FORBIDDEN:
            report(imp, "the room core (imactor/muc) does no I/O, reads no clock, draws no random")
        if in_muc and imp.top == "imactor" and not any(_is(imp.module, p) for p in MUC_MAY_IMPORT):
            report(imp, "the room core imports only imactor.xmpp and imactor.muc")
        if in_muc and imp.top not in {*sys.stdlib_module_names, *CORE_FORBIDDEN, "lxml", "imactor"}:
            report(imp, "the room core imports only lxml and the standard library")
        if imp.top in STORAGE_ONLY and not _under(relpath, "imactor/storage"):
            report(imp, "only imactor/storage imports sqlmodel/sqlalchemy")
        if imp.top == "zmq" and relpath != ZMQ_LINK:
            report(imp, f"only {ZMQ_LINK} imports zmq")
        if imp.top in HTTP_LIBRARIES and not _under(relpath, "imactor/web"):
            report(imp, "only imactor/web speaks HTTP")
        if _under(relpath, "imactor/web") and any(_is(imp.module, p) for p in WEB_MAY_NOT_IMPORT):
            report(imp, "imactor/web reaches storage, cluster and node through the server only")
        if _under(relpath, "supervisors") and imp.top == "imactor":
            report(imp, "supervisors never import imactor")
        if _under(relpath, "imactor/actors") and any(
            _is(imp.module, banned) for banned in ("imactor.server", "imactor.modules", "imactor.xmpp")
        ):
            report(imp, "the actor runtime knows nothing of server, modules or xmpp")
        if (
            _under(relpath, "imactor/modules")
            and any(_is(imp.module, inner) for inner in MODULES_MAY_NOT_IMPORT)
            and not _is(imp.module, "imactor.server.modules")
        ):
            report(imp, "modules use the module API (imactor.server.modules) only")
    problems = list(found.values())
    for module in sorted(excepted):
        allowed = CORE_EXCEPTIONS[(relpath, module)]
        used, other = attribute_uses(source, module)
        problems.extend(
            f"{relpath}: uses {module}.{attr}, allowed only {sorted(allowed)}"
            for attr in sorted(used - allowed)
        )
        problems.extend(f"{relpath}:{line}: {module} used other than as {sorted(allowed)}" for line in other)
    return problems


def package_of(module: str) -> str | None:
    """The floor package `module` belongs to (the longest match in `FLOORS`), or None (outside).
    ``imactor`` itself is only the top package's ``__init__`` (its version), not all below it."""
    best: str | None = None
    for floor in FLOORS:
        for package in floor:
            matches = module == package if package == "imactor" else _is(module, package)
            if matches and (best is None or len(package) > len(best)):
                best = package
    return best


def floor_of(package: str) -> int:
    return next(number for number, floor in enumerate(FLOORS) if package in floor)


def floor_violations(files: Mapping[str, str]) -> list[str]:
    """Imports that go up a floor, or sideways to another package of the same floor."""
    found: dict[tuple[str, int], str] = {}
    for relpath, source in files.items():
        mine = package_of(module_name(relpath))
        if mine is None:
            found[(relpath, 0)] = f"{relpath}: stands on no floor: add its package to FLOORS"
            continue
        for imp in imports_of(source, relpath):
            theirs = package_of(imp.module)
            if theirs is None or theirs == mine:
                continue
            if floor_of(theirs) < floor_of(mine):
                reason = f"imports {imp.module}: {theirs} stands above {mine}"
            elif floor_of(theirs) == floor_of(mine):
                reason = f"imports {imp.module}: {theirs} and {mine} share a floor"
            else:
                continue
            found.setdefault((relpath, imp.line), f"{relpath}:{imp.line} {reason}")
    return list(found.values())


def import_graph(files: Mapping[str, str]) -> dict[str, set[str]]:
    """file → the product files it imports (a package import counts as its __init__.py)."""
    by_module = {module_name(relpath): relpath for relpath in files}
    graph: dict[str, set[str]] = {relpath: set() for relpath in files}
    for relpath, source in files.items():
        imports = imports_of(source, relpath)
        # ``from package import submodule`` imports the submodule, not the package's other names.
        submodule_lines = {
            (imp.line, imp.module.rpartition(".")[0]) for imp in imports if imp.module in by_module
        }
        for imp in imports:
            target = by_module.get(imp.module)
            if target is None or target == relpath:
                continue
            if target.endswith("__init__.py") and (imp.line, imp.module) in submodule_lines:
                continue
            graph[relpath].add(target)
    return graph


def circles(files: Mapping[str, str]) -> list[list[str]]:
    """The import circles between files: strongly connected sets of more than one file."""
    graph = import_graph(files)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's algorithm; the graph is a few hundred files deep at most
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph[node]):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


# ---- the real tree -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def files() -> dict[str, str]:
    return product_files()


def test_the_product_packages_keep_their_boundaries(files: dict[str, str]) -> None:
    assert violations(files) == []


def test_every_import_goes_down_a_floor(files: dict[str, str]) -> None:
    assert floor_violations(files) == []


def test_no_import_circles(files: dict[str, str]) -> None:
    assert circles(files) == []


def test_the_core_exceptions_are_still_needed(files: dict[str, str]) -> None:
    """An exception that is no longer used must go, so it cannot cover a later regression."""
    for (relpath, module), allowed in CORE_EXCEPTIONS.items():
        assert relpath in files, f"{relpath} is gone: drop its exception"
        assert module in {imp.top for imp in imports_of(files[relpath], relpath)}, (relpath, module)
        used, _ = attribute_uses(files[relpath], module)
        assert used == allowed, (relpath, module, used)


# ---- the walker is not vacuous -----------------------------------------------------------------


def test_the_walker_finds_the_files_and_their_imports(files: dict[str, str]) -> None:
    core = [path for path in files if _under(path, "imactor/xmpp")]
    assert {"imactor/xmpp/stream.py", "imactor/xmpp/parser.py", "imactor/xmpp/sasl.py"} <= set(core)
    assert len(core) >= 10
    assert any(_under(path, "imactor/storage") for path in files)
    assert {"imactor/muc/room.py", "imactor/muc/state.py"} <= set(files)
    assert any(_under(path, "imactor/actors") for path in files)
    assert any(_under(path, "supervisors") for path in files)

    graph = {path: {imp.module for imp in imports_of(source, path)} for path, source in files.items()}
    assert {"lxml", "lxml.etree", "imactor.xmpp.parser", "imactor.xmpp.events"} <= graph[
        "imactor/xmpp/stream.py"
    ]
    assert "secrets" in graph["imactor/xmpp/sasl.py"]
    assert any("trio" in modules for path, modules in graph.items() if _under(path, "imactor/actors"))
    assert any("trio" in modules for path, modules in graph.items() if _under(path, "supervisors"))
    assert any(
        "sqlmodel" in modules or "sqlalchemy" in modules
        for path, modules in graph.items()
        if _under(path, "imactor/storage")
    )
    # The server really is wired to everything: the walker sees cross-package imports.
    server = set().union(*(modules for path, modules in graph.items() if _under(path, "imactor/server")))
    assert any(_is(module, "imactor.xmpp") for module in server)
    assert any(_is(module, "imactor.actors") for module in server)


def test_imports_of_resolves_every_form() -> None:
    source = (
        "import trio, os.path as p\n"
        "from . import events\n"
        "from .parser import XMLStreamParser\n"
        "from .. import storage\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from zmq import Socket\n"
        "def f():\n"
        "    import sqlmodel\n"
        "    importlib.import_module('imactor.c2s.session')\n"
        "    __import__('random')\n"
    )
    modules = {imp.module for imp in imports_of(source, "imactor/xmpp/stream.py")}
    assert {
        "trio", "os.path", "imactor.xmpp", "imactor.xmpp.events", "imactor.xmpp.parser",
        "imactor.xmpp.parser.XMLStreamParser", "imactor", "imactor.storage", "typing", "zmq",
        "zmq.Socket", "sqlmodel", "imactor.c2s.session", "random",
    } <= modules  # fmt: skip
    # In a package's __init__, "." is the package itself.
    init = {imp.module for imp in imports_of("from .jid import JID\n", "imactor/xmpp/__init__.py")}
    assert "imactor.xmpp.jid" in init


@pytest.mark.parametrize(
    ("relpath", "source", "expected"),
    [
        ("imactor/xmpp/stream.py", "import trio\n", "no I/O"),
        ("imactor/xmpp/stream.py", "from time import monotonic\n", "no clock"),
        ("imactor/xmpp/stream.py", "import random\n", "no random"),
        ("imactor/xmpp/jid.py", "import secrets\n", "no random"),
        ("imactor/xmpp/stream.py", "import socket\n", "no I/O"),
        ("imactor/xmpp/stream.py", "import ssl\n", "no I/O"),
        ("imactor/xmpp/stanza.py", "from imactor.server import router\n", "imports only imactor.xmpp"),
        ("imactor/xmpp/stanza.py", "from .. import config\n", "imports only imactor.xmpp"),
        ("imactor/xmpp/stanza.py", "import imactor\n", "imports only imactor.xmpp"),
        ("imactor/user/actor.py", "from sqlalchemy import select\n", "only imactor/storage"),
        ("imactor/modules/roster.py", "import sqlmodel\n", "only imactor/storage"),
        ("imactor/worker/tree.py", "import zmq\n", "imports zmq"),
        ("imactor/c2s/session.py", "import h11\n", "only imactor/web speaks HTTP"),
        ("imactor/c2s/listener.py", "from trio_websocket import serve_websocket\n", "speaks HTTP"),
        ("imactor/web/bosh.py", "from imactor.storage import Storage\n", "through the server only"),
        ("imactor/cluster/other.py", "import zmq.asyncio\n", "imports zmq"),
        ("supervisors/dynamic.py", "from imactor.actors import Mailbox\n", "never import imactor"),
        ("imactor/actors/actor.py", "from imactor.xmpp.jid import JID\n", "knows nothing"),
        ("imactor/actors/registry.py", "import imactor.server.router\n", "knows nothing"),
        ("imactor/actors/ref.py", "from ..modules import roster\n", "knows nothing"),
        ("imactor/modules/roster.py", "from imactor.user.actor import UserActor\n", "module API"),
        ("imactor/modules/disco.py", "from ..server import router\n", "module API"),
        ("imactor/modules/ping.py", "import imactor.node.master\n", "module API"),
        # The exceptions are exact: another attribute, a bare use or a from-import is refused.
        ("imactor/xmpp/sasl.py", "import secrets\nsecrets.randbelow(3)\n", "allowed only"),
        ("imactor/xmpp/sasl.py", "import secrets\nrng = secrets\n", "used other than"),
        ("imactor/xmpp/sasl.py", "import secrets\nfrom secrets import choice\n", "used other than"),
        ("imactor/xmpp/scram.py", "import os\nos.getenv('X')\n", "allowed only"),
        ("imactor/xmpp/scram.py", "import random\n", "no random"),
        ("imactor/muc/room.py", "import trio\n", "room core (imactor/muc) does no I/O"),
        ("imactor/muc/room.py", "from time import time\n", "room core (imactor/muc) does no I/O"),
        ("imactor/muc/state.py", "from imactor.server import router\n", "imports only imactor.xmpp and"),
        ("imactor/muc/room.py", "import attrs\n", "only lxml and the standard library"),
    ],
)
def test_each_rule_catches_a_violation(relpath: str, source: str, expected: str) -> None:
    (found,) = violations({relpath: source})
    assert expected in found
    assert found.startswith(relpath)


@pytest.mark.parametrize(
    ("relpath", "source"),
    [
        ("imactor/xmpp/stream.py", "from lxml import etree\nfrom imactor.xmpp import events\n"),
        ("imactor/xmpp/sasl.py", "import secrets\nsecrets.token_urlsafe(18)\nsecrets.token_bytes(32)\n"),
        ("imactor/xmpp/scram.py", "import os\nos.urandom(16)\n"),
        (
            "imactor/muc/room.py",
            "from datetime import UTC\nfrom lxml import etree\nfrom imactor.xmpp.jid import JID\n"
            "from imactor.muc.state import RoomState\n",
        ),
        ("imactor/storage/db.py", "from sqlalchemy import create_engine\nimport sqlmodel\n"),
        (ZMQ_LINK, "import zmq\n"),
        (
            "imactor/c2s/session.py",
            "import trio\nimport ssl\nfrom imactor.xmpp.stream import ServerStream\n",
        ),
        ("imactor/actors/actor.py", "import trio\nfrom imactor.actors.mailbox import Mailbox\n"),
        ("supervisors/tasks.py", "import trio\nfrom supervisors.spec import ChildSpec\n"),
        (
            "imactor/modules/roster.py",
            "from imactor.server.modules import Module\nfrom imactor.xmpp import stanza\n",
        ),
    ],
)
def test_allowed_imports_pass(relpath: str, source: str) -> None:
    assert violations({relpath: source}) == []


# ---- the floor and circle checkers catch a deliberate violation ---------------------------------


def test_an_upward_import_is_caught() -> None:
    files = {
        "imactor/server/router.py": "from imactor.c2s.session import SessionActor\n",
        "imactor/c2s/session.py": "from imactor.server.router import Router\n",
    }
    (found,) = floor_violations(files)
    assert found.startswith("imactor/server/router.py:1 ")
    assert "imactor.c2s stands above imactor.server" in found


def test_a_sideways_import_is_caught() -> None:
    (found,) = floor_violations({"imactor/user/actor.py": "from imactor.rooms import fanout\n"})
    assert "share a floor" in found


def test_a_file_outside_every_floor_is_caught() -> None:
    (found,) = floor_violations({"imactor/newthing/x.py": "import trio\n"})
    assert "stands on no floor" in found


def test_a_circle_is_caught_even_inside_one_package() -> None:
    files = {
        "imactor/muc/room.py": "from imactor.muc.admin import admin_iq\n",
        "imactor/muc/admin.py": "from imactor.muc import history\n",
        "imactor/muc/history.py": "from imactor.muc.room import Room\n",
        "imactor/muc/state.py": "from imactor.muc.room import Room\n",  # leans on it, outside the knot
        "imactor/muc/__init__.py": "",
    }
    assert circles(files) == [["imactor/muc/admin.py", "imactor/muc/history.py", "imactor/muc/room.py"]]
    del files["imactor/muc/history.py"]
    assert circles(files) == []


def test_a_circle_through_type_checking_imports_counts() -> None:
    files = {
        "imactor/mesh/mesh.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
        "    from imactor.mesh.refs import RemoteRef\n",
        "imactor/mesh/refs.py": "from imactor.mesh.mesh import Mesh\n",
    }
    assert circles(files) == [["imactor/mesh/mesh.py", "imactor/mesh/refs.py"]]
