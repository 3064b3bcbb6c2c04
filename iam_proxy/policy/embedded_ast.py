"""Load-time checks of the embedded engine that need the policy's syntax tree (OPA's parse of it,
opa_tool.parse), where embedded_lint.py's token scan cannot be exact.

- A call result bound to a variable that nothing uses (`x := to_number(s)`, `to_number(s, x)`,
  `_ = f(y)`): when the call fails, OPA makes the expression undefined, so the rule does not hold;
  rego-cpp lets the rule succeed (OPA's conformance cases `casts/to_number: bad input`,
  `strings/format_int: err: bad base`). Refused, naming the rule and the variable. Such a binding
  is dead code (`opa check --strict` refuses the `:=` form too), so the refusal costs nothing a
  policy needs. When the variable is used, rego-cpp is right, and the policy loads.
"""

from __future__ import annotations

import collections
from typing import Any, Iterator

from .source import PolicyProblem


def unused_call_results(trees: dict[str, dict[str, Any]]) -> list[PolicyProblem]:
    problems = []
    # a name that is a rule or an import is a reference, not a variable the rule binds
    global_names = {"input", "data"} | {_head_name(rule) for tree in trees.values() for rule in tree.get("rules") or []}
    global_names |= {imported.get("alias") or _name(imported.get("path") or {}).rsplit(".", 1)[-1]
                     for tree in trees.values() for imported in tree.get("imports") or []}
    for file, tree in trees.items():
        for rule in tree.get("rules") or []:
            uses = collections.Counter(_vars(rule))
            name = _head_name(rule)
            for row, var, call in _call_bindings(rule):
                if uses[var] == 1 and var not in global_names:
                    shown = "_" if var.startswith("$") else var
                    problems.append(PolicyProblem(file, row, (
                        f"rule {name}: {shown} takes the result of {call}(...) and is never used: when the call "
                        "fails the embedded engine lets the rule succeed (OPA: undefined); use the value or drop it")))
    return problems


def _head_name(rule: dict[str, Any]) -> str:
    head = rule.get("head") or {}
    ref = head.get("ref") or [{}]
    return str(head.get("name") or ref[0].get("value") or "?")


def _vars(node: Any) -> Iterator[str]:
    if isinstance(node, list):
        for item in node:
            yield from _vars(item)
    elif isinstance(node, dict):
        if node.get("type") == "var" and isinstance(node.get("value"), str):
            yield node["value"]
        for key, value in node.items():
            if key != "location":
                yield from _vars(value)


def _name(term: dict[str, Any]) -> str:
    ref = term.get("value") if term.get("type") == "ref" else []
    return ".".join(str(t.get("value")) for t in ref) if isinstance(ref, list) else ""


def _call_bindings(node: Any) -> Iterator[tuple[int, str, str]]:
    """(row, variable, function) for every `var := call`, `var = call` and `call(args..., var)`."""
    if isinstance(node, list):
        for item in node:
            yield from _call_bindings(item)
        return
    if not isinstance(node, dict):
        return
    terms = node.get("terms")
    if isinstance(terms, list) and terms and terms[0].get("type") == "ref":
        row = (node.get("location") or {}).get("row", 0)
        operator = _name(terms[0])
        if operator in ("assign", "eq") and len(terms) == 3:
            for var, value in ((terms[1], terms[2]), (terms[2], terms[1])):
                if var.get("type") == "var" and value.get("type") == "call":
                    yield row, var["value"], _name(value["value"][0])
        elif len(terms) > 1 and terms[-1].get("type") == "var":
            # a variable used once as an argument is an output: as an input it would be unsafe, and
            # `opa check` has refused that already
            yield row, terms[-1]["value"], operator
    for key, value in node.items():
        if key != "location":
            yield from _call_bindings(value)
