"""The embedded engine's refusals as docs/policies.md shows them, run as written."""

from __future__ import annotations

import asyncio

import pytest

from iam_proxy.policy import opa_tool
from iam_proxy.policy.embedded import EmbeddedEngine
from iam_proxy.policy.source import PolicyLoadError, PolicySource
from snippets import snippet


def load(name: str) -> EmbeddedEngine:
    return EmbeddedEngine(None, ["gw/limits/allow"], source=PolicySource({"limits.rego": snippet(name).text}, {},
                                                                          "docs", ()))


@pytest.fixture(params=["opa", "no opa"])
def opa_binary(request, monkeypatch):
    """With `opa` the refusal comes from OPA's syntax tree; without it (make run installs none), from
    the token scan: the same policy is refused either way, because rego-cpp would allow it."""
    if request.param == "no opa":
        monkeypatch.setattr(opa_tool, "find", lambda: None)
    return request.param


def test_an_unused_call_result_is_refused_naming_the_rule_and_the_variable(opa_binary):
    with pytest.raises(PolicyLoadError, match=r"limits.rego:6: rule allow: x takes the result of to_number"):
        load("embedded-refused-unused-result")


@pytest.mark.parametrize("body, refused", [
    ("_ = to_number(input.limit)", True),
    ("to_number(input.limit) = x", True),
    ("x := units.parse_bytes(input.limit)", True),
    ("x := to_number(input.limit)\n\tx > 0", False),
    ("[x] := [to_number(input.limit)]\n\tx > 0", False),
])
def test_without_opa_the_token_scan_refuses_each_unused_form(monkeypatch, body, refused):
    monkeypatch.setattr(opa_tool, "find", lambda: None)
    text = f"package gw.limits\n\nimport rego.v1\n\nallow if {{\n\t{body}\n}}\n"
    source = PolicySource({"limits.rego": text}, {}, "t", ())
    if refused:
        with pytest.raises(PolicyLoadError, match=r"limits.rego:6: rule allow: \S+ takes the result of"):
            EmbeddedEngine(None, ["gw/limits/allow"], source=source)
    else:
        engine = EmbeddedEngine(None, ["gw/limits/allow"], source=source)
        assert asyncio.run(engine.decide("gw/limits/allow", {"limit": "5"})).value is True


def test_the_fixed_policy_loads_and_decides_as_opa(opa_binary):
    engine = load("embedded-fixed-unused-result")
    decide = lambda limit: asyncio.run(engine.decide("gw/limits/allow", {"limit": limit})).value  # noqa: E731
    assert (decide("unlimited"), decide("5")) == (False, True)
