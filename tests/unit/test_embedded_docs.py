"""The embedded engine's refusals as docs/policies.md shows them, run as written."""

from __future__ import annotations

import asyncio

import pytest

from iam_proxy.policy.embedded import EmbeddedEngine
from iam_proxy.policy.source import PolicyLoadError, PolicySource
from snippets import snippet


def load(name: str) -> EmbeddedEngine:
    return EmbeddedEngine(None, ["gw/limits/allow"], source=PolicySource({"limits.rego": snippet(name).text}, {},
                                                                          "docs", ()))


def test_an_unused_call_result_is_refused_naming_the_rule_and_the_variable():
    with pytest.raises(PolicyLoadError, match=r"limits.rego:6: rule allow: x takes the result of to_number"):
        load("embedded-refused-unused-result")


def test_the_fixed_policy_loads_and_decides_as_opa():
    engine = load("embedded-fixed-unused-result")
    decide = lambda limit: asyncio.run(engine.decide("gw/limits/allow", {"limit": limit})).value  # noqa: E731
    assert (decide("unlimited"), decide("5")) == (False, True)
