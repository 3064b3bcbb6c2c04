"""What the policies read, from OPA's own parse of them: the parts of the input, and reads of values
that change without the input changing (the clock, randomness, the network).

The full input (opa-envoy-plugin attributes, every request header, the identity, the route) has
about 70 keys, and rego-cpp spends most of a decision parsing it. A policy reads a handful of them.
`analyse` asks the pinned `opa` binary for each module's syntax tree (`opa parse --format json`,
bounded in time and memory) and collects every reference to `input`: plain refs, refs through
`import input.x as y` aliases, refs inside functions, rule heads, comprehensions, `every`, `with`
values and template strings (`$"{input.user}"`). `project` keeps only the subtrees those references
start from. Evaluating the projection gives the same decision as the whole document, because every
value a reference can reach is still there, unchanged, and every absent value is still absent. The
same projection keys the decision cache, so two requests that differ only in what no rule looks at
share one entry.

A reference is kept whole from where it stops being static (`input.a[x]` keeps all of `a`). When
the analysis cannot be sure, the answer is WHOLE (the whole input) and the decider does not cache:
a bare `input` (`x := input`, `walk(input, ...)`, `input[k]`, `f(input)`), a module OPA cannot
parse, no `opa` binary, or a parse that runs out of time or memory. The one exception is
`object.get(input, <literal key or path>, default)`, a common null-safe read, which reads just that
path. The target of `with input as ...` (tests) replaces the input rather than reading it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

from . import opa_tool

# A tree of the parts read: key -> subtree, or True for "all of it". None: the whole document.
Reads = Union[dict[str, Any], None]
WHOLE: Reads = None

# Built-ins whose result depends on the time, randomness or the world outside the input.
VOLATILE_BUILTINS = frozenset({
    "time.now_ns", "rand.intn", "uuid.rfc4122", "http.send", "net.lookup_ip_addr", "opa.runtime",
    "io.jwt.decode_verify", "crypto.x509.parse_and_verify_certificates",
    "crypto.x509.parse_and_verify_certificates_with_options",
})


@dataclass(frozen=True)
class PolicyReads:
    input: Reads  # the parts of the input read, or WHOLE
    volatile: tuple[str, ...]  # `file:line: what` for every read of a value the input does not fix
    unsure: str = ""  # why the analysis fell back to WHOLE, if it did for a reason other than a bare input


def analyse(modules: dict[str, str], opa: str | None = None) -> PolicyReads:
    """What `modules` read; WHOLE (and a reason in `unsure`) when OPA cannot tell."""
    try:
        trees = opa_tool.parse({f: t for f, t in modules.items() if not f.endswith("_test.rego")}, opa)
    except opa_tool.OpaUnavailable as exc:
        return PolicyReads(WHOLE, (), str(exc))
    return reads_of(trees)


def reads_of(trees: dict[str, dict[str, Any]]) -> PolicyReads:
    """What the modules with these syntax trees (opa_tool.parse) read."""
    walker = _Walker()
    for file, tree in trees.items():
        walker.module(file, tree)
    return PolicyReads(WHOLE if walker.whole else walker.tree, tuple(walker.volatile))


def input_reads(modules: dict[str, str]) -> Reads:
    return analyse(modules).input


class _Walker:
    def __init__(self) -> None:
        self.tree: dict[str, Any] = {}
        self.whole = False
        self.volatile: list[str] = []
        self.file = ""
        self.aliases: dict[str, list[str]] = {}  # `import input.a.b as c`: c -> ["a", "b"]

    def module(self, file: str, tree: dict[str, Any]) -> None:
        self.file = file
        self.aliases = {}
        for imported in tree.get("imports") or []:
            ref = imported.get("path", {}).get("value") or []
            if ref and ref[0].get("value") == "input" and all(t.get("type") == "string" for t in ref[1:]):
                path = [t["value"] for t in ref[1:]]
                name = imported.get("alias") or (path[-1] if path else "input")
                if name != "input":
                    self.aliases[name] = path
            elif ref and ref[0].get("value") == "input":
                self.whole = True
        for rule in tree.get("rules") or []:
            self.walk(rule)

    def walk(self, node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                self.walk(item)
            return
        if not isinstance(node, dict):
            return
        if "target" in node and "value" in node and "type" not in node:  # a `with`: the target is replaced
            self.walk(node["value"])
            return
        kind = node.get("type")
        if kind == "var" and (node.get("value") == "input" or node.get("value") in self.aliases):
            self._read(self.aliases.get(node["value"], []))
            return
        if kind == "ref":
            self._ref(node["value"])
            return
        if kind == "call" or (isinstance(node.get("terms"), list) and node["terms"]):
            self._call(node["value"] if kind == "call" else node["terms"], node)
            return
        for key, value in node.items():
            if key != "location":
                self.walk(value)

    def _ref(self, terms: list[dict[str, Any]]) -> None:
        head = terms[0]
        name = head.get("value") if head.get("type") == "var" else None
        if name == "input" or name in self.aliases:
            path = [*self.aliases.get(name, [])] if name != "input" else []
            for term in terms[1:]:
                if term.get("type") != "string":
                    break
                path.append(term["value"])
            self._read(path)
            self.walk(terms[1:])
            return
        self.walk(terms)

    def _call(self, terms: list[Any], node: dict[str, Any]) -> None:
        operator = terms[0]
        name = ".".join(str(t.get("value")) for t in operator.get("value", [])) if operator.get("type") == "ref" else ""
        if name in VOLATILE_BUILTINS:
            row = (operator.get("location") or node.get("location") or {}).get("row", 0)
            self.volatile.append(f"{self.file}:{row}: {name}")
        if name == "object.get" and len(terms) == 4 and _is_input(terms[1]) and _literal_path(terms[2]) is not None:
            self._read(_literal_path(terms[2]))
            self.walk(terms[3])
            return
        for key, value in node.items():
            if key not in ("location", "value", "terms"):
                self.walk(value)
        self.walk(terms)

    def _read(self, path: list[str]) -> None:
        if not path:
            self.whole = True
            return
        node = self.tree
        for key in path[:-1]:
            child = node.get(key)
            if child is True:
                return
            node = node.setdefault(key, {})
        node[path[-1]] = True


def _is_input(term: dict[str, Any]) -> bool:
    ref = term.get("value") if term.get("type") == "ref" else [term]
    return isinstance(ref, list) and len(ref) == 1 and ref[0].get("type") == "var" and ref[0].get("value") == "input"


def _literal_path(term: dict[str, Any]) -> list[str] | None:
    if term.get("type") == "string":
        return [term["value"]]
    if term.get("type") == "array" and term["value"] and all(t.get("type") == "string" for t in term["value"]):
        return [t["value"] for t in term["value"]]
    return None


def covers(reads: Reads, path: list[str]) -> bool:
    """Whether a read in `reads` can see the value at `path` (the path itself, a prefix or a part)."""
    node: Any = reads
    for key in path:
        if node is None or node is True:
            return True
        if key not in node:
            return False
        node = node[key]
    return True


def project(document: dict[str, Any], reads: Reads) -> dict[str, Any]:
    """`document` cut down to `reads` (the document itself for WHOLE)."""
    if reads is None:
        return document
    return _project(document, reads)


def _project(document: dict[str, Any], tree: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, subtree in tree.items():
        if key not in document:
            continue
        value = document[key]
        out[key] = _project(value, subtree) if subtree is not True and isinstance(value, dict) else value
    return out
