"""The rules of docs/architecture.md, enforced: the import layers (import-linter), no import cycle
anywhere in the package, strict types on the core and the pipeline (mypy), no module over 400 lines
and no block of six lines written twice."""

from __future__ import annotations

import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

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


MAX_MODULE_LINES = 400
REPEAT_WINDOW = 6  # significant lines (not blank, comments, imports, docstring quotes or lone brackets)


def _significant(line: str) -> bool:
    text = line.strip()
    return bool(text) and not text.startswith(("#", "import ", "from ", '"""', "@")) and \
        text not in (")", "]", "}", "),", "],", "},", "else:", "try:", "finally:", "return", "pass")


def test_no_module_is_over_400_lines():
    long = {str(p.relative_to(REPO)): n for p in (REPO / "iam_proxy").rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"split these modules: {long}"


def repeated_blocks(root: Path) -> dict[tuple[str, ...], list[str]]:
    seen: dict[tuple[str, ...], list[str]] = {}
    for path in sorted(root.rglob("*.py")):
        lines = [(n, text.strip()) for n, text in enumerate(path.read_text().splitlines(), 1) if _significant(text)]
        for k in range(len(lines) - REPEAT_WINDOW + 1):
            block = tuple(text for _, text in lines[k:k + REPEAT_WINDOW])
            seen.setdefault(block, []).append(f"{path.relative_to(root.parent)}:{lines[k][0]}")
    return {block: where for block, where in seen.items() if len(where) > 1}


def test_no_block_of_six_lines_is_written_twice():
    repeated = repeated_blocks(REPO / "iam_proxy")
    assert not repeated, "\n".join(" and ".join(where) for where in repeated.values())


def test_the_repeat_finder_sees_a_repeat(tmp_path):
    body = "".join(f"    x{i} = f({i})\n" for i in range(REPEAT_WINDOW))
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text(f"def a():\n{body}")
    (tmp_path / "pkg" / "b.py").write_text(f"def b():\n    # the same lines\n{body}")
    assert list(repeated_blocks(tmp_path / "pkg").values()) == [["pkg/a.py:2", "pkg/b.py:3"]]
