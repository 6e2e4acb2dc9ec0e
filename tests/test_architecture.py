"""The three floors hold: core, server layer, backends.

``smtp_proto`` (the sans-IO core) imports only the standard library and
nothing that does I/O; ``smtp_server`` (the backend-neutral layer) imports
the core and neither backend nor anyio; ``smtp_anyio`` and ``smtp_sync``
import the two floors below and never each other. Imports flow one way: no
package module imports, even for type checking only, a module that imports
it back. Checked twice: statically over the source (every ``import``,
``TYPE_CHECKING`` blocks included) and by what a fresh interpreter loads.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("smtp_proto", "smtp_server", "smtp_anyio", "smtp_sync")
FLOOR = {"smtp_proto": 0, "smtp_server": 1, "smtp_anyio": 2, "smtp_sync": 2}
MAX_LINES = 600

# What the core must never import: I/O, clocks, threads, randomness.
CORE_FORBIDDEN = {
    "ssl", "socket", "asyncio", "threading", "select", "selectors", "time", "random",
    "secrets", "anyio", "trio", "sniffio", "logging", "os", "subprocess",
}
# The one exception: the loader, which runs once at import to choose between
# the compiled modules and their sources, reads SMTP_PROTO_PURE from the
# environment. It takes no part in the protocol.
LOADER_ALLOWED = {"smtp_proto._loader": {"os"}}
# What the layer must never import: either backend's I/O world.
LAYER_FORBIDDEN = {"asyncio", "anyio", "trio", "sniffio", "uvloop", "smtp_anyio", "smtp_sync"}


def _modules() -> Iterator[tuple[str, Path]]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).glob("*.py")):
            name = package if path.stem == "__init__" else f"{package}.{path.stem}"
            yield name, path


def _imports(name: str, path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports (relative imports
    resolved; ``from pkg import name`` counts as ``pkg.name`` when that is a
    module of ours, else ``pkg``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.stem == "__init__" else name.rpartition(".")[0]
    found: set[str] = set()
    ours = {module for module, _ in _modules()}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.add(module)
            for alias in node.names:
                if f"{module}.{alias.name}" in ours:
                    found.add(f"{module}.{alias.name}")
    return found


GRAPH = {name: _imports(name, path) for name, path in _modules()}


def _top(module: str) -> str:
    return module.partition(".")[0]


@pytest.mark.parametrize("name", sorted(GRAPH))
def test_imports_go_down_the_floors_only(name: str) -> None:
    package = _top(name)
    for imported in GRAPH[name]:
        top = _top(imported)
        if top in FLOOR and top != package:
            assert FLOOR[top] < FLOOR[package], f"{name} imports {imported} (same floor or above)"
        if package == "smtp_proto" and top not in LOADER_ALLOWED.get(name, set()):
            assert top not in CORE_FORBIDDEN, f"the core module {name} imports {imported}"
            assert top == "smtp_proto" or top in sys.stdlib_module_names, (
                f"the core module {name} imports {imported}, not in the standard library")
        if package == "smtp_server":
            assert top not in LAYER_FORBIDDEN, f"the layer module {name} imports {imported}"


def test_no_import_cycles() -> None:
    ours = {name: {m for m in deps if m in GRAPH and m != name} for name, deps in GRAPH.items()}
    # A package __init__ re-exports its modules; a module importing its own
    # package's __init__ would be a cycle too, so the edges stay as they are.
    visiting: list[str] = []
    done: set[str] = set()

    def visit(node: str) -> None:
        if node in done:
            return
        if node in visiting:
            cycle = [*visiting[visiting.index(node):], node]
            raise AssertionError("import cycle: " + " -> ".join(cycle))
        visiting.append(node)
        for dep in sorted(ours[node]):
            visit(dep)
        visiting.pop()
        done.add(node)

    for name in sorted(ours):
        visit(name)


def test_the_static_check_sees_a_cycle() -> None:
    """The graph builder resolves relative imports: the driver's layers are
    edges in it (so a cycle among them would be seen)."""
    assert "smtp_anyio._driver_base" in GRAPH["smtp_anyio._driver_data"]
    assert "smtp_anyio._driver_data" in GRAPH["smtp_anyio._driver"]
    assert "smtp_server._tls" in GRAPH["smtp_server._options"]


def _loaded_by(statement: str) -> set[str]:
    """Modules a fresh interpreter loads for ``statement``, from
    ``-X importtime`` (what ``python -X importtime -c ...`` shows a user)."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", statement],
        capture_output=True, text=True, cwd=ROOT, check=True,
    )
    names = set()
    for line in result.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip())
    assert names, result.stderr[:500]
    return names


def test_import_smtp_sync_loads_neither_anyio_nor_asyncio() -> None:
    loaded = _loaded_by("import smtp_sync")
    assert "smtp_sync" in loaded and "smtp_server" in loaded
    assert not {"anyio", "asyncio", "sniffio", "trio", "smtp_anyio"} & loaded


def test_import_smtp_proto_loads_neither_ssl_nor_socket() -> None:
    loaded = _loaded_by("import smtp_proto")
    assert "smtp_proto" in loaded
    assert not {"ssl", "socket", "asyncio", "threading", "selectors", "anyio"} & loaded


def test_import_smtp_server_loads_no_backend() -> None:
    loaded = _loaded_by("import smtp_server")
    assert not {"anyio", "asyncio", "trio", "smtp_anyio", "smtp_sync"} & loaded


def test_public_names_are_the_same_objects_in_both_backends() -> None:
    import smtp_anyio
    import smtp_server
    import smtp_sync

    for name in ("SMTPError", "MessageAbortedError", "TLSConfig"):
        assert getattr(smtp_anyio, name) is getattr(smtp_sync, name) is getattr(smtp_server, name)
    assert smtp_sync.MessageStream is smtp_anyio.BlockingMessageStream
    assert smtp_anyio.BlockingMessageStream is smtp_server.BlockingMessageStream
    for package in (smtp_anyio, smtp_server, smtp_sync):
        missing = [n for n in package.__all__ if not hasattr(package, n)]
        assert not missing, f"{package.__name__}.__all__ names what it lacks: {missing}"


@pytest.mark.parametrize(
    "path",
    [p for package in (*PACKAGES, "fuzz") for p in sorted((ROOT / package).glob("*.py"))],
    ids=lambda p: f"{p.parent.name}/{p.name}",
)
def test_no_file_is_over_the_size_limit(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{path.name}: {lines} lines; split it by concern"
