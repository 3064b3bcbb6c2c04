"""The pinned `opa` binary as the policies' compiler of record: it checks them (`opa check`: syntax,
unsafe variables, undefined functions, types) and shows what they read (`opa parse`, see
input_reads.py). Every run is bounded in time and memory (bounded.py).

Without an `opa` binary the embedded engine still loads policies, but more conservatively: its own
token checks stand in for `opa check` (they refuse some correct policies), and the whole input is
handed over with the decision cache off.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import orjson

from .bounded import BoundExceeded, ChildFailed, run_process_bounded
from .source import PolicyProblem

TIMEOUT_SECONDS = 10.0
MEMORY_BYTES = 1 << 30


class OpaUnavailable(Exception):
    """No opa binary, or it failed in a way that says nothing about the policies."""


def find() -> str | None:
    from .testing import find_opa

    return find_opa()


def run(opa: str, *args: str) -> bytes:
    return run_process_bounded([opa, *args], TIMEOUT_SECONDS, MEMORY_BYTES)


def _write(modules: dict[str, str], directory: Path) -> dict[str, str]:
    """The modules as files in `directory`; the map from file name back to the module's name."""
    names = {}
    for i, (name, text) in enumerate(modules.items()):
        path = directory / f"m{i}.rego"
        path.write_text(text)
        names[str(path)] = name
    return names


def check(modules: dict[str, str], opa: str | None = None) -> list[PolicyProblem]:
    """What OPA refuses in `modules` (empty: nothing); OpaUnavailable when it cannot be asked."""
    opa = opa or find()
    if opa is None:
        raise OpaUnavailable("no opa binary")
    with tempfile.TemporaryDirectory(prefix="iam-proxy-check-") as tmp:
        names = _write(modules, Path(tmp))
        try:
            run(opa, "check", "--format", "json", *names)
            return []
        except BoundExceeded as exc:
            return [PolicyProblem(next(iter(modules)), 0, f"opa check did not finish ({exc.what}); refused")]
        except ChildFailed as exc:
            try:
                errors = orjson.loads(str(exc))["errors"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                raise OpaUnavailable(str(exc)[:300]) from None
    problems = []
    for error in errors:
        where = error.get("location") or {}
        file = names.get(where.get("file", ""), where.get("file", "?"))
        problems.append(PolicyProblem(file, where.get("row", 0), f"{error.get('message')} (OPA: {error.get('code')})"))
    return problems


def parse(modules: dict[str, str], opa: str | None = None) -> dict[str, dict[str, Any]]:
    """Each module's syntax tree as OPA's parser gives it, with locations; OpaUnavailable on failure."""
    opa = opa or find()
    if opa is None:
        raise OpaUnavailable("no opa binary to parse the policies with")
    trees = {}
    with tempfile.TemporaryDirectory(prefix="iam-proxy-parse-") as tmp:
        for path, name in _write(modules, Path(tmp)).items():
            try:
                trees[name] = orjson.loads(run(opa, "parse", "--format", "json", "--json-include",
                                                "locations,-comments", path))
            except (BoundExceeded, ChildFailed, orjson.JSONDecodeError) as exc:
                raise OpaUnavailable(f"{name}: opa parse failed: {str(exc).splitlines()[0][:200]}") from None
    return trees
