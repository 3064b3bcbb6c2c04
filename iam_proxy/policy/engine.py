"""The engine interface, and `decide()`: engine result -> strictly parsed Decision, failing closed.

An engine returns the raw value at a decision path, or raises one of the errors below; `decide`
turns every failure into a denial with a distinct reason code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import PolicyError
from .decision import Decision, MalformedDecision, parse_decision


class UndefinedDecision(Exception):
    """The decision path has no value for this input."""


class PolicyEvaluationError(Exception):
    """The engine failed while evaluating (conflict, engine error, bad output)."""


@dataclass(frozen=True, slots=True)
class EngineResult:
    value: Any
    revision: str
    engine: str


class PolicyEngine(Protocol):
    name: str

    @property
    def revision(self) -> str: ...

    @property
    def ready(self) -> bool: ...

    async def decide(self, path: str, policy_input: dict[str, Any]) -> EngineResult: ...

    def reload_if_changed(self) -> bool: ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class DecisionOutcome:
    decision: Decision
    path: str
    revision: str
    engine: str


async def decide(engine: PolicyEngine, path: str, policy_input: dict[str, Any]) -> DecisionOutcome:
    try:
        result = await engine.decide(path, policy_input)
    except UndefinedDecision:
        raise PolicyError("policy_undefined", detail=f"decision {path} is undefined") from None
    except PolicyEvaluationError as exc:
        raise PolicyError("policy_error", detail=f"decision {path}: {exc}") from None
    try:
        decision = parse_decision(result.value)
    except MalformedDecision as exc:
        raise PolicyError("policy_malformed", detail=f"decision {path}: {exc}") from None
    return DecisionOutcome(decision=decision, path=path, revision=result.revision, engine=result.engine)
