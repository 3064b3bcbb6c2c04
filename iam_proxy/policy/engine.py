"""The engine interface, and `decide()`: engine result -> strictly parsed Decision, failing closed.

An engine returns the raw value at a decision path, or raises one of the errors below; `decide`
turns every failure into a denial with a distinct reason code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from ..core.decision import Decision, DecisionOutcome
from ..core.errors import PolicyError
from .decision import MalformedDecision, parse_decision


class UndefinedDecision(Exception):
    """The decision path has no value for this input."""


class PolicyEvaluationError(Exception):
    """The engine failed while evaluating (conflict, engine error, bad output)."""


class EngineUnavailable(Exception):
    """The engine could not be asked: connection refused or reset, 5xx, not ready."""


class EngineTimeout(Exception):
    """The engine did not answer within the per-decision timeout (its late answer is discarded)."""


class MalformedEngineResponse(Exception):
    """The engine answered, but not in its protocol's shape (not JSON, unexpected keys)."""


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


async def decide(engine: PolicyEngine, path: str, policy_input: dict[str, Any]) -> DecisionOutcome:
    return interpret(await ask(engine, path, policy_input), path)


async def ask(engine: PolicyEngine, path: str, policy_input: dict[str, Any]) -> EngineResult:
    """The engine's raw result; every way of not getting one is a PolicyError with its reason code."""
    try:
        return await engine.decide(path, policy_input)
    except UndefinedDecision:
        raise PolicyError("policy_undefined", detail=f"decision {path} is undefined") from None
    except PolicyEvaluationError as exc:
        raise PolicyError("policy_error", detail=f"decision {path}: {exc}") from None
    except EngineTimeout as exc:
        raise PolicyError("policy_timeout", status=503, detail=f"decision {path}: {exc}") from None
    except EngineUnavailable as exc:
        raise PolicyError("policy_unavailable", status=503, detail=f"decision {path}: {exc}") from None
    except MalformedEngineResponse as exc:
        raise PolicyError("policy_malformed", detail=f"decision {path}: {exc}") from None


def interpret(result: EngineResult, path: str, cached: bool = False) -> DecisionOutcome:
    """Parse the raw result strictly; a malformed decision is a PolicyError (it denies)."""
    try:
        decision = parse_decision(result.value)
    except MalformedDecision as exc:
        raise PolicyError("policy_malformed", detail=f"decision {path}: {exc}") from None
    return DecisionOutcome(decision=decision, path=path, revision=result.revision, engine=result.engine,
                           cached=cached)
