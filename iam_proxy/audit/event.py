"""The native audit event: one JSON object per request (allowed, denied or errored).

Field names follow OPA's decision log where they overlap (`decision_id`, `path`, `input`, `result`,
`bundles`, `labels`, `timestamp`, `metrics`), so OPA tooling can read them.
"""

from __future__ import annotations

import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any

from .. import __version__
from ..context import RequestContext, RequestDescription
from ..core.decision import DecisionOutcome
from ..core.redaction import changed_pointers, mask_input, mask_query_string
from ..core.timestamps import rfc3339_utc

HOSTNAME = socket.gethostname()
LABELS = {"app": "iam-proxy", "version": __version__, "hostname": HOSTNAME}


def build_event(*, ctx: RequestContext | None, request: RequestDescription, status: int, outcome: str,
                reason: str, decision: DecisionOutcome | None, policy_input: dict[str, Any] | None,
                policy_revision: str | None, client_address: str | None, dry_run: bool = False,
                include_input: bool = True, response: str = "complete",
                facts: dict[str, Any] | None = None) -> dict[str, Any]:
    """`outcome` is allowed, denied or error; `reason` is the stable reason code; `response` is
    "complete" (recorded just before the response's last byte left) or "incomplete" (the response
    never completed: the client went away, or the upstream broke off mid-body)."""
    now = time.time()
    if ctx is not None:
        method, path, query = ctx.method, ctx.raw_path, ctx.query_string
        host, request_id, decision_id = ctx.host, ctx.request_id, ctx.decision_id
        peer, started = ctx.via or ctx.peer, ctx.started  # via: the front proxy that asked /.iam/auth
        user_agent = ctx.headers.get("user-agent")
    else:  # the request could not even be parsed
        method, path = request.method, request.path
        query = request.query_string.decode("latin-1")
        host = request_id = ""
        decision_id = str(uuid.uuid4())
        peer = request.via or request.peer
        started = None
        user_agent = None
    route = ctx.route if ctx is not None else None
    identity = ctx.identity if ctx is not None else None
    result: Any = None
    reasons: list[str] = []
    if decision is not None:
        result = decision.decision.raw
        reasons = list(decision.decision.reasons)
    event: dict[str, Any] = {
        "decision_id": decision_id,
        "timestamp": rfc3339_utc(now, digits=6),
        "request_id": request_id,
        "outcome": outcome,
        "reason": reason,
        "status": status,
        "response": response,
        "route": {"id": route.id, "upstream": route.settings.upstream} if route is not None else None,
        "http": {"method": method, "host": host, "path": path, "query": mask_query_string(query),
                 "user_agent": user_agent},
        "client": {"address": client_address or peer, "peer": peer},
        "identity": identity.summary() if identity is not None else None,
        "decision": {
            "allowed": outcome == "allowed",
            "reasons": reasons,
            "path": decision.path if decision is not None else (route.settings.policy.path if route else None),
            "engine": decision.engine if decision is not None else None,
            "revision": decision.revision if decision is not None else policy_revision,
            "dry_run": dry_run,
            "cached": decision.cached if decision is not None else False,
        },
        "upstream": {"status": ctx.upstream_status if ctx else None,
                     "latency_ms": ctx.upstream_latency_ms if ctx else None},
        "latency_ms": round((time.perf_counter() - started) * 1000, 3) if started else None,
        # OPA decision-log compatible fields
        "path": decision.path if decision is not None else None,
        "result": result,
        "bundles": {"policies": {"revision": policy_revision}} if policy_revision else {},
        "labels": LABELS,
        "metrics": {},
    }
    if facts:  # what the refusal showed the client beside its reason (errors.ProxyError.facts)
        event["facts"] = facts
    if include_input and policy_input is not None:
        event["input"] = mask_input(policy_input)
        # What the live decision saw and this event does not show: a replay cannot use these values.
        event["input_redacted"] = changed_pointers(policy_input, event["input"])
    return event


def endpoint_event(*, ctx: RequestContext | None, request: RequestDescription, status: int, outcome: str,
                   reason: str, response: str = "complete") -> dict[str, Any]:
    """The event for a request to one of the proxy's own endpoints (/.iam/...): no policy was asked."""
    return build_event(ctx=ctx, request=request, status=status, outcome=outcome, reason=reason, decision=None,
                       policy_input=None, policy_revision=None, client_address=None, response=response)


@dataclass
class AuditDraft:
    """A request's audit event, less what only its response knows (the status, whether it completed).

    The pipeline's decision fills it; the front door that answers completes it exactly once, as the
    response's last byte is about to leave (audit/writeahead.py)."""

    request: RequestDescription
    ctx: RequestContext | None = None
    outcome: str = "error"
    reason: str = "internal_error"
    decision: DecisionOutcome | None = None
    policy_input: dict[str, Any] | None = None
    policy_revision: str | None = None
    client_address: str | None = None
    dry_run: bool = False
    include_input: bool = True
    facts: dict[str, Any] | None = None  # what a refusal showed the client beside its reason

    def event(self, status: int, response: str) -> dict[str, Any]:
        return build_event(ctx=self.ctx, request=self.request, status=status, outcome=self.outcome,
                           reason=self.reason, decision=self.decision, policy_input=self.policy_input,
                           policy_revision=self.policy_revision, client_address=self.client_address,
                           dry_run=self.dry_run, include_input=self.include_input, response=response,
                           facts=self.facts)
