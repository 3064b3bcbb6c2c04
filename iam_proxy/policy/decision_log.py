"""OPA-compatible decision logs: one `EventV1` JSON object per policy decision, one per line.

Field names are OPA's (https://www.openpolicyagent.org/docs/management-decision-logs): `decision_id`,
`path`, `input`, `result`, `bundles`, `labels`, `timestamp`, `metrics`, `requested_by`, plus `error`
for a decision that could not be made, `masked` (JSON pointers of what was masked, as OPA's mask
policy reports it) and `custom` (the proxy's outcome, reason code, engine, cache and dry-run flags).
Credentials are masked before the event is built; the raw input never reaches the file.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

import orjson

from .. import __version__
from ..core.redaction import mask_input, masked_pointers

log = logging.getLogger("iam_proxy.decision_log")

INSTANCE_ID = f"{os.uname().nodename}-{os.getpid()}"


def decision_log_event(audit_event: dict[str, Any], policy_input: dict[str, Any]) -> dict[str, Any]:
    """The EventV1 for one request whose policy was evaluated (built from its audit event)."""
    decision = audit_event.get("decision") or {}
    event: dict[str, Any] = {
        "decision_id": audit_event["decision_id"],
        "labels": {"id": INSTANCE_ID, "version": __version__, "app": "iam-proxy"},
        "path": decision.get("path"),
        "input": audit_event.get("input") or mask_input(policy_input),
        "bundles": audit_event.get("bundles") or {},
        "timestamp": audit_event["timestamp"],
        "requested_by": (audit_event.get("client") or {}).get("address", ""),
        "metrics": {"timer_server_handler_ns": int((audit_event.get("latency_ms") or 0) * 1_000_000)},
        "custom": {"outcome": audit_event.get("outcome"), "reason": audit_event.get("reason"),
                   "engine": decision.get("engine"), "cached": bool(decision.get("cached")),
                   "dry_run": bool(decision.get("dry_run")), "route": (audit_event.get("route") or {}).get("id"),
                   "request_id": audit_event.get("request_id")},
    }
    masked = masked_pointers(policy_input)
    if masked:
        event["masked"] = masked
    if audit_event.get("result") is not None:
        event["result"] = audit_event["result"]
    elif audit_event.get("reason", "").startswith("policy_") and audit_event.get("reason") != "policy_denied":
        event["error"] = {"code": audit_event["reason"], "message": "the policy decision could not be made"}
    return event


class DecisionLogWriter:
    """Appends one JSON line per decision; a write failure is logged, never raised into a request."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file = open(path, "ab")
        self._lock = threading.Lock()

    def emit(self, audit_event: dict[str, Any], policy_input: dict[str, Any]) -> None:
        try:
            line = orjson.dumps(decision_log_event(audit_event, policy_input)) + b"\n"
            with self._lock:
                self._file.write(line)
                self._file.flush()
        except Exception:  # noqa: BLE001 - a decision-log bug must not fail the request
            log.exception("could not write decision log event")

    def close(self) -> None:
        with self._lock:
            self._file.close()
