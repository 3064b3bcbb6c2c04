"""The opa-wasm engine: OPA's own compiler to WebAssembly, run in process by wasmtime (real opa binary)."""

from __future__ import annotations

import asyncio
import time

import pytest

from iam_proxy.policy.engine import PolicyEvaluationError
from iam_proxy.policy.opa_wasm import OpaWasmEngine, _Aborted, _sprintf
from iam_proxy.policy.source import PolicyLoadError, PolicySource


def engine(text: str, *paths: str, data: dict | None = None) -> OpaWasmEngine:
    return OpaWasmEngine(None, list(paths), source=PolicySource({"t.rego": text}, data or {}, "r", ()))


def decide(e: OpaWasmEngine, path: str, policy_input: dict):
    return asyncio.run(e.decide(path, policy_input)).value


def test_what_rego_cpp_gets_wrong_opa_wasm_gets_right():
    e = engine('package t\n\nr := strings.replace_n({"a": "b", "b": "a"}, input.s)\n\n'
               'u := object.union({"b": {"c": 1}}, {"b": {"d": 2}})\n', "t/r", "t/u")
    assert decide(e, "t/r", {"s": "abba"}) == "baab"
    assert decide(e, "t/u", {}) == {"b": {"c": 1, "d": 2}}


def test_a_conflict_fails_the_evaluation():
    e = engine("package t\n\nc := 1\n\nc := 2 if input.x\n", "t/c")
    assert decide(e, "t/c", {}) == 1
    with pytest.raises(PolicyEvaluationError, match="conflict"):
        decide(e, "t/c", {"x": True})


def test_a_built_in_left_to_the_host_is_refused_at_load_unless_this_host_has_it():
    with pytest.raises(PolicyLoadError, match="built-ins graphql.is_valid are not inside OPA's Wasm module"):
        engine('package t\n\ng := graphql.is_valid("type Query { a: Int }", "{ a }")\n', "t/g")
    e = engine('package t\n\nm := sprintf("%s may %s (%d%%)", [input.u, "read", 5])\n\n'
               'same if time.now_ns() == time.now_ns()\n\nlate if time.now_ns() > input.t\n', "t/m", "t/same", "t/late")
    assert decide(e, "t/m", {"u": "alice"}) == "alice may read (5%)"
    assert decide(e, "t/same", {}) is True
    assert decide(e, "t/late", {"t": time.time_ns() - 10**9}) is True


def test_sprintf_formats_only_what_it_is_sure_of():
    assert _sprintf("%v/%v/%v", ["a", 1, True]) == "a/1/true"
    for format_, values in [("%.2f", [1.5]), ("%s", [1.5]), ("%v", [[1]]), ("%s %s", ["a"]), ("%s", ["a", "b"]),
                            ("50%", [])]:
        with pytest.raises(_Aborted):
            _sprintf(format_, values)
