"""The shipped policies decide alike in every in-process engine (rego-cpp, OPA's library, OPA's Wasm)."""

from __future__ import annotations

import asyncio

import pytest

from iam_proxy.policy.embedded import EmbeddedEngine
from iam_proxy.policy.opa_lib import OpaLibEngine
from iam_proxy.policy.engine import PolicyEvaluationError, UndefinedDecision
from iam_proxy.policy.opa_wasm import OpaWasmEngine
from iam_proxy.policy.source import PolicySource
from support import REPO

ENGINES = [EmbeddedEngine, OpaLibEngine, OpaWasmEngine]

FINANCE = {"identity": {"sub": "alice", "groups": ["finance"], "roles": []}, "parsed_path": ["api", "invoices", "1"],
           "attributes": {"request": {"http": {"method": "GET", "path": "/api/invoices/1", "headers": {}}}},
           "route": {"labels": {}}}
SALES = {**FINANCE, "identity": {"sub": "bob", "groups": ["sales"], "roles": []}}


@pytest.mark.parametrize("engine_class", ENGINES)
def test_decisions_data_false_and_undefined_are_opas(engine_class):
    engine = engine_class(None, ["t/allow", "t/deny"], source=PolicySource({"t.rego": (
        'package t\n\ndefault allow := false\n\nallow if input.user in data.admins\n\n'
        'deny if $"{input.user}" == "mallory"\n')}, {"admins": ["alice"]}, "r", ()))

    def decide(path: str, policy_input: dict):
        return asyncio.run(engine.decide(path, policy_input)).value

    assert (decide("t/allow", {"user": "alice"}), decide("t/allow", {"user": "bob"})) == (True, False)
    assert decide("t/deny", {"user": "mallory"}) is True
    with pytest.raises(UndefinedDecision):
        decide("t/deny", {"user": "alice"})
    # an entry point the policy does not have: undefined (rego-cpp fails the evaluation; both deny)
    with pytest.raises(UndefinedDecision if engine_class is not EmbeddedEngine else PolicyEvaluationError):
        decide("t/nothing_here", {})


@pytest.mark.parametrize("engine_class", ENGINES)
def test_the_shipped_policies_decide_alike(engine_class):
    engine = engine_class(REPO / "policies", ["iam/authz/decision"])

    def decide(policy_input: dict) -> dict:
        return asyncio.run(engine.decide("iam/authz/decision", policy_input)).value

    assert decide(FINANCE)["allowed"] is True
    denied = decide(SALES)
    assert denied["allowed"] is False and denied["reasons"] == ["user bob may not GET /api/invoices/1"]
