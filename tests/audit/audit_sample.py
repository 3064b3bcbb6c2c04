"""A native audit event as build_event makes it, for unit tests of renderers, privacy and sinks."""

from __future__ import annotations

import uuid
from typing import Any


def sample_event(**overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "decision_id": str(uuid.uuid4()),
        "timestamp": "2026-11-26T05:00:00.123456Z",
        "request_id": "req-1",
        "outcome": "allowed",
        "reason": "allowed",
        "status": 200,
        "route": {"id": "api", "upstream": "http://127.0.0.1:9"},
        "http": {"method": "GET", "host": "api.example", "path": "/api/invoices/1", "query": "a=1",
                 "user_agent": "curl/8"},
        "client": {"address": "192.0.2.10", "peer": "127.0.0.1"},
        "identity": {"sub": "alice", "method": "jwt", "iss": "https://idp", "provider": "dev",
                     "username": "alice", "email": "alice@example.org", "groups": ["finance"], "roles": []},
        "decision": {"allowed": True, "reasons": [], "path": "iam/authz/decision", "engine": "embedded",
                     "revision": "abc", "dry_run": False},
        "upstream": {"status": 200, "latency_ms": 1.5},
        "latency_ms": 2.5,
        "path": "iam/authz/decision",
        "result": True,
        "bundles": {},
        "labels": {"app": "iam-proxy", "version": "0.1.0", "hostname": "h"},
        "metrics": {},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(event.get(key), dict):
            event[key] = {**event[key], **value}
        else:
            event[key] = value
    return event
