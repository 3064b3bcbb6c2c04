"""Every code block in docs/ is either run by a test (named) or marked as output.

Users copy what the docs show; a block nobody runs is a block that can rot. These tests keep the
docs honest: an unnamed block, a name no test asks for, or a name used twice fails here.
"""

from __future__ import annotations

import ast
from collections import Counter
from functools import cache
from pathlib import Path

from tests.snippets import all_snippets

ROOT = Path(__file__).resolve().parents[2]


@cache
def _string_literals_in_tests() -> frozenset[str]:
    found: set[str] = set()
    for path in [*(ROOT / "tests").rglob("*.py"), *(ROOT / "bench").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                found.add(node.value)
    return frozenset(found)


def test_docs_have_code_blocks_to_check():
    assert len(all_snippets()) > 50


def test_every_block_is_named_or_marked_output():
    unclaimed = [str(s) for s in all_snippets() if not s.name and not s.output]
    assert not unclaimed, "blocks neither named <!-- snippet: NAME --> nor marked <!-- output -->:\n" + \
        "\n".join(unclaimed)


def test_every_name_is_unique():
    counts = Counter(s.name for s in all_snippets() if s.name)
    assert not [name for name, n in counts.items() if n > 1]


def test_every_named_block_is_used_by_a_test():
    literals = _string_literals_in_tests()
    unused = [f"{s.name} ({s})" for s in all_snippets() if s.name and s.name not in literals]
    assert not unused, "named blocks that no test asks for:\n" + "\n".join(unused)
