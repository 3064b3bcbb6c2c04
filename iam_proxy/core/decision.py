"""A policy decision, as every stage reads it: whether the request may pass, why, and what the
policy asks to add or remove (policy/decision.py parses it strictly from an engine's result)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reasons: tuple[str, ...] = ()
    headers: dict[str, str] = field(default_factory=dict)
    request_headers_to_remove: tuple[str, ...] = ()
    response_headers_to_add: dict[str, str] = field(default_factory=dict)
    http_status: int | None = None
    body: str | None = None
    raw: Any = None


@dataclass(frozen=True, slots=True)
class DecisionOutcome:
    """A decision and where it came from: the decision path, the policy revision, the engine."""

    decision: Decision
    path: str
    revision: str
    engine: str
    cached: bool = False
