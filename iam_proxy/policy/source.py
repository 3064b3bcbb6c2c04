"""Policy sources on disk: Rego modules and data documents, with a revision digest.

Data files follow OPA's layout rule: `a/b/data.json` (or `.yaml`) is mounted at `data.a.b`.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import orjson
import yaml

from ..core.errors import ConfigError


@dataclass(frozen=True)
class PolicyProblem:
    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


class PolicyLoadError(ConfigError):
    def __init__(self, errors: list[PolicyProblem]) -> None:
        self.errors = errors
        super().__init__("; ".join(str(e) for e in errors))


@dataclass(frozen=True)
class PolicySource:
    modules: dict[str, str]  # display path -> Rego text
    data: dict[str, Any]
    revision: str
    stamp: tuple[tuple[str, int, int], ...]  # (path, mtime_ns, size) of everything read

    @cached_property
    def fingerprint(self) -> str:
        """A digest of the modules and data: the same content gives the same text in every process,
        whatever its revision string says (a bundle may keep its revision across changes)."""
        return hashlib.sha256(orjson.dumps({"modules": self.modules, "data": self.data},
                                           default=repr, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)).hexdigest()[:32]

    def line_of(self, file: str, byte_offset: int) -> int:
        return self.modules.get(file, "").encode()[:byte_offset].count(b"\n") + 1


def scan(root: Path) -> tuple[tuple[str, int, int], ...]:
    """A cheap fingerprint of the tree, compared to decide whether to reload."""
    entries = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and (path.suffix == ".rego" or path.name in ("data.json", "data.yaml", "data.yml")):
            st = path.stat()
            entries.append((str(path), st.st_mtime_ns, st.st_size))
    return tuple(entries)


def _mount(data: dict[str, Any], parts: list[str], value: Any, where: str) -> None:
    node = data
    for part in parts:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise PolicyLoadError([PolicyProblem(where, 1, f"data conflicts at {'.'.join(parts)}")])
    if not isinstance(value, dict):
        if parts:
            raise PolicyLoadError([PolicyProblem(where, 1, "a data document must be an object")])
    for key, v in value.items():
        if key in node and isinstance(node[key], dict) and isinstance(v, dict):
            _mount(node, [key], v, where)
        else:
            node[key] = v


def load_source(root: Path, include_tests: bool = False) -> PolicySource:
    if not root.is_dir():
        raise PolicyLoadError([PolicyProblem(str(root), 0, "policy directory does not exist")])
    modules: dict[str, str] = {}
    data: dict[str, Any] = {}
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if not path.is_file():
            continue
        rel = path.relative_to(root)
        if path.suffix == ".rego":
            if path.name.endswith("_test.rego") and not include_tests:
                continue
            text = path.read_text()
            modules[str(path)] = text
        elif path.name in ("data.json", "data.yaml", "data.yml"):
            text = path.read_text()
            try:
                value = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
            except (json.JSONDecodeError, yaml.YAMLError) as exc:
                line = getattr(exc, "lineno", None) or getattr(getattr(exc, "problem_mark", None), "line", 0) + 1
                raise PolicyLoadError([PolicyProblem(str(path), line, f"invalid data document: {exc}")]) from None
            _mount(data, list(rel.parent.parts), value or {}, str(path))
        else:
            continue
        digest.update(str(rel).encode() + b"\0" + text.encode() + b"\0")
    if not modules:
        raise PolicyLoadError([PolicyProblem(str(root), 0, "no .rego files found")])
    return PolicySource(modules=modules, data=data, revision=digest.hexdigest()[:16], stamp=scan(root))


_COMMENT_OR_STRING = re.compile(r'#[^\n]*|"(?:\\.|[^"\\\n])*"|`[^`]*`')


def code_only(text: str) -> str:
    """The text with comments and string literals blanked (same length, so offsets still hold)."""
    return _COMMENT_OR_STRING.sub(lambda m: " " * len(m.group(0)) if "\n" not in m.group(0)
                                  else re.sub(r"[^\n]", " ", m.group(0)), text)


_CALL = re.compile(r"(?<![\w.])([a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)+)\s*\(")


def dotted_calls(text: str) -> list[tuple[str, int]]:
    """Every `ns.name(` call in code, with its line, e.g. [("net.cidr_contains", 12)]."""
    code = code_only(text)
    return [(m.group(1), code[:m.start()].count("\n") + 1) for m in _CALL.finditer(code)]


_WITH_VALUE = re.compile(r"(?<![\w.])as\s+([a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)+)(?![\w.(])")


def with_replacements(text: str) -> list[tuple[str, int]]:
    """Every dotted name a `with` puts in place of another (`with time.now_ns as opa.runtime`), with its line."""
    code = code_only(text)
    return [(m.group(1), code[:m.start()].count("\n") + 1) for m in _WITH_VALUE.finditer(code)]
