"""Re-decide recorded requests under a candidate policy, with exactly the input the live decision saw.

Each event is one of:

    skipped        the policy was never asked (no route, no or bad credential, a /.iam endpoint)
    cannot_replay  the event does not hold what the decision needs: no input was recorded, or the
                   candidate reads an input value the event redacted (redacted.py)
    unchanged      the candidate decides as the live policy did (allowed or denied)
    flip           allow_to_deny or deny_to_allow

A live policy failure (timeout, error, malformed answer) counts as the deny it caused, and so does
a candidate's.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Iterable

from ..errors import ConfigError, PolicyError
from ..policy.decision import MalformedDecision, parse_decision
from ..policy.engine import PolicyEngine, decide
from .candidate import Candidate
from .redacted import blocking


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    reasons: tuple[str, ...]


@dataclass
class Replayed:
    event: dict[str, Any]
    status: str  # skipped | cannot_replay | unchanged | flip
    live: Verdict | None = None
    candidate: Verdict | None = None
    cause: str = ""  # why it cannot be replayed
    redacted: list[str] = field(default_factory=list)

    @property
    def direction(self) -> str:
        if self.live is None or self.candidate is None or self.live.allowed == self.candidate.allowed:
            return ""
        return "allow_to_deny" if self.live.allowed else "deny_to_allow"


def live_verdict(event: dict[str, Any]) -> Verdict | None:
    """What the live policy decided (not what the request became: a dry run, or an upstream error
    after an allow, leaves the policy's answer in `result`). None: the policy was never asked."""
    decision = event.get("decision") or {}
    asked = (event.get("result") is not None or event.get("input") is not None
             or str(event.get("reason", "")).startswith("policy_"))
    if not decision.get("path") or not asked:
        return None
    if event.get("result") is None:  # the live policy failed: it denied, with this reason code
        return Verdict(False, (str(event.get("reason", "")),))
    try:
        parsed = parse_decision(event["result"])
    except MalformedDecision:
        return Verdict(False, ("policy_malformed",))
    return Verdict(parsed.allowed, tuple(parsed.reasons))


# The engine could not answer: not a decision of the candidate's, so never a flip.
UNANSWERED = frozenset({"policy_unavailable", "policy_timeout"})


async def decide_verdict(engine: PolicyEngine, path: str, policy_input: dict[str, Any]) -> Verdict:
    """The engine's verdict; a failure is the deny it would cause, with its reason code."""
    try:
        outcome = await decide(engine, path, policy_input)
    except PolicyError as exc:
        return Verdict(False, (exc.reason,))
    return Verdict(outcome.decision.allowed, tuple(outcome.decision.reasons))


async def replay_one(candidate: Candidate, event: dict[str, Any]) -> Replayed:
    live = live_verdict(event)
    if live is None:
        return Replayed(event, "skipped")
    if event.get("input") is None:
        return Replayed(event, "cannot_replay", live, cause="input_not_recorded")
    hidden = blocking(candidate.reads(event["decision"]["path"]), event)
    if hidden:
        return Replayed(event, "cannot_replay", live, cause="reads_redacted", redacted=hidden)
    verdict = await decide_verdict(candidate.engine, event["decision"]["path"], event["input"])
    if verdict.reasons and verdict.reasons[0] in UNANSWERED:
        raise ConfigError(f"--policies: the candidate engine did not answer ({verdict.reasons[0]})")
    return Replayed(event, "flip" if verdict.allowed != live.allowed else "unchanged", live, verdict)


def decision_paths(events: Iterable[dict[str, Any]]) -> list[str]:
    return sorted({p for e in events if (p := (e.get("decision") or {}).get("path"))})


async def replay(candidate: Candidate, events: list[dict[str, Any]], concurrency: int = 8) -> list[Replayed]:
    """In the events' order; an OPA server is asked `concurrency` decisions at a time (the embedded
    engine evaluates one at a time whatever this says)."""
    slots = asyncio.Semaphore(concurrency)

    async def one(event: dict[str, Any]) -> Replayed:
        async with slots:
            return await replay_one(candidate, event)

    return list(await asyncio.gather(*(one(event) for event in events)))
