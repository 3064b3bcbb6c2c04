"""The code blocks of docs/, by name, so tests run them exactly as a user would copy them.

A block is named by an HTML comment on the line before its fence:

    <!-- snippet: nginx-forward-auth -->
    ```nginx
    ...
    ```

Blocks that show output (what a command prints, an example event) are marked `<!-- output -->`
instead; they are examples to read, not text to copy. tests/docs/test_snippets_claimed.py holds
every other block to being named and run by a test.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"
_MARK = re.compile(r"^<!--\s*(snippet:\s*(?P<name>[\w.-]+)|(?P<output>output))\s*-->\s*$")
_FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>```+|~~~+)(?P<lang>[\w+-]*)")


@dataclass(frozen=True)
class Snippet:
    doc: str          # path under docs/, e.g. "deployment.md"
    line: int         # line of the opening fence (1-based)
    lang: str
    text: str
    name: str | None  # from <!-- snippet: NAME -->
    output: bool      # marked <!-- output -->

    def __str__(self) -> str:
        return f"docs/{self.doc}:{self.line} ({self.lang or 'no language'})"


def _blocks(path: Path) -> list[Snippet]:
    lines = path.read_text().splitlines()
    out: list[Snippet] = []
    i = 0
    while i < len(lines):
        opened = _FENCE.match(lines[i])
        if not opened:
            i += 1
            continue
        fence, indent = opened["fence"], opened["indent"]
        mark = _MARK.match(lines[i - 1].strip()) if i > 0 else None
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith(fence):
            body.append(lines[j][len(indent):] if lines[j].startswith(indent) else lines[j])
            j += 1
        out.append(Snippet(doc=str(path.relative_to(DOCS)), line=i + 1, lang=opened["lang"],
                           text="\n".join(body) + "\n", name=mark["name"] if mark else None,
                           output=bool(mark and mark["output"])))
        i = j + 1
    return out


@cache
def all_snippets() -> tuple[Snippet, ...]:
    return tuple(s for path in sorted(DOCS.rglob("*.md")) for s in _blocks(path))


def snippet(name: str) -> Snippet:
    """The block named `name`; a test that asks for a name the docs lost fails, loudly."""
    found = [s for s in all_snippets() if s.name == name]
    if len(found) != 1:
        raise LookupError(f"docs/ has {len(found)} blocks named {name!r} (want exactly one)")
    return found[0]
