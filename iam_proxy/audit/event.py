"""The native audit event: one JSON object per request (allowed, denied or errored).

Field names follow OPA's decision log where they overlap (`decision_id`, `path`, `input`, `result`,
`bundles`, `labels`, `timestamp`, `metrics`), so OPA tooling can read them.
"""

from __future__ import annotations

import socket
import time
import uuid
from datetime import datetime, timezone
from typing import Any

from .. import __version__
from ..context import RequestContext
from ..policy.engine import DecisionOutcome
from ..redaction import changed_pointers, mask_input, mask_query_string

HOSTNAME = socket.gethostname()
LABELS = {"app": "iam-proxy", "version": __version__, "hostname": HOSTNAME}


def _timestamp(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def build_event(*, ctx: RequestContext | None, scope: dict[str, Any], status: int, outcome: str,
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
        method, path = scope.get("method", ""), scope.get("path", "")
        query = scope.get("query_string", b"").decode("latin-1")
        host = request_id = ""
        decision_id = str(uuid.uuid4())
        peer = (scope.get("client") or ("", 0))[0]
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
        "timestamp": _timestamp(now),
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


def endpoint_event(*, ctx: RequestContext | None, scope: dict[str, Any], status: int, outcome: str,
                   reason: str, response: str = "complete") -> dict[str, Any]:
    """The event for a request to one of the proxy's own endpoints (/.iam/...): no policy was asked."""
    return build_event(ctx=ctx, scope=scope, status=status, outcome=outcome, reason=reason, decision=None,
                       policy_input=None, policy_revision=None, client_address=None, response=response)
