"""The rules of docs/architecture.md, enforced: the import layers (import-linter), no import cycle
anywhere in the package, and strict types on the core and the pipeline (mypy)."""

from __future__ import annotations

import shlex
import subprocess
import sys
import tomllib

import grimp

from snippets import snippet
from support import REPO

def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300)


def test_the_drawing_is_the_contract():
    contract = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"][0]
    assert contract["type"] == "layers"
    assert snippet("architecture-layers").text.splitlines() == contract["layers"]


def test_the_documented_checks_pass():
    """docs/architecture.md's commands, as written: the layers hold and the seams are strictly typed."""
    for line in snippet("architecture-check").text.splitlines():
        result = run(*shlex.split(line))
        assert result.returncode == 0, f"{line}: {result.stdout[-4000:]}"
        assert "Contracts: 1 kept, 0 broken." in result.stdout or result.stdout.startswith("Success: no issues")


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in graph.find_modules_directly_imported_by(module):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    sys.setrecursionlimit(10_000)
    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return found


def test_no_module_imports_itself_back():
    # imports made for type checking only (`if TYPE_CHECKING:`) never run, so they close no cycle
    graph = grimp.build_graph("iam_proxy", cache_dir=None, exclude_type_checking_imports=True)
    # a package's __init__ re-exporting its own modules is not a cycle between modules
    for package in [m for m in graph.modules if graph.find_children(m)]:
        for child in graph.find_children(package):
            if graph.direct_import_exists(importer=package, imported=child):
                graph.remove_import(importer=package, imported=child)
    assert _cycles(graph) == []


def test_cycle_finder_sees_a_cycle():
    graph = grimp.ImportGraph()
    for importer, imported in [("a.x", "a.y"), ("a.y", "a.z"), ("a.z", "a.x")]:
        graph.add_import(importer=importer, imported=imported)
    assert _cycles(graph) == [["a.x", "a.y", "a.z"]]
