"""The modules a decision can depend on: its own package, and every package it refers to through
`data.` (imports and inline references), followed transitively.

A policy directory often holds more than one decision (the quick start's `iam.authz` beside an
opa-envoy-plugin `envoy.authz` that reads the Authorization header); only what the replayed decision
can reach says which input values it reads. A module that refers to `data` dynamically (`data[x]`,
a bare `data`) could reach anything: then every module counts.
"""

from __future__ import annotations

import re

from ..policy.input_reads import Reads, input_reads
from ..policy.source import code_only

_PACKAGE = re.compile(r"^\s*package\s+([\w.]+)", re.M)
_DATA_REF = re.compile(r"(?<![\w.])data((?:\.\w+)*)")


def _refs(code: str) -> tuple[set[str], bool]:
    """The packages referred to, and whether a reference is dynamic (`data[x]`, a bare `data`)."""
    refs: set[str] = set()
    dynamic = False
    for match in _DATA_REF.finditer(code):
        dotted = match.group(1).lstrip(".")
        if dotted:
            refs.add(dotted)  # `data.a.b[x]` stays within a.b, which `_related` covers
        else:
            dynamic = True
    return refs, dynamic


def _related(package: str, ref: str) -> bool:
    """`data.a.b.rule` reaches package a.b; `data.a` reaches every package under a."""
    return ref == package or ref.startswith(package + ".") or package.startswith(ref + ".")


def reachable_modules(modules: dict[str, str], entrypoint: str) -> dict[str, str]:
    parsed = {}
    for name, text in modules.items():
        code = code_only(text)
        package = _PACKAGE.search(code)
        parsed[name] = (package.group(1) if package else "", *_refs(code))
    wanted = {entrypoint.replace("/", ".")}
    chosen: dict[str, str] = {}
    grew = True
    while grew:
        grew = False
        for name, (package, refs, dynamic) in parsed.items():
            if name in chosen or not any(_related(package, ref) for ref in wanted):
                continue
            if dynamic:
                return dict(modules)
            chosen[name] = modules[name]
            wanted |= refs
            grew = True
    return chosen


def reads_for(modules: dict[str, str], entrypoint: str) -> Reads:
    """The parts of the input the decision at `entrypoint` can read."""
    return input_reads(reachable_modules(modules, entrypoint))
