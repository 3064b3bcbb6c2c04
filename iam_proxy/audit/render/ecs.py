"""Elastic Common Schema (8.x) field names for the native event.

What ECS has no field for stays under `iam_proxy.*` (custom fields go in their own namespace).
"""

from __future__ import annotations

from typing import Any

from ... import __version__

ECS_VERSION = "8.11.0"


def _drop_empty(node: Any) -> Any:
    if isinstance(node, dict):
        out = {k: _drop_empty(v) for k, v in node.items()}
        return {k: v for k, v in out.items() if v not in (None, {}, [], "")}
    return node


def render(event: dict[str, Any]) -> dict[str, Any]:
    identity = event.get("identity") or {}
    http = event.get("http") or {}
    decision = event.get("decision") or {}
    client = event.get("client") or {}
    upstream = event.get("upstream") or {}
    labels = event.get("labels") or {}
    outcome = event.get("outcome")
    authn_failure = event.get("status") == 401
    latency_ms = event.get("latency_ms")
    doc = {
        "@timestamp": event.get("timestamp"),
        "ecs": {"version": ECS_VERSION},
        "event": {
            "id": event.get("decision_id"),
            "kind": "event",
            "category": ["authentication", "web"] if authn_failure else ["web", "iam"],
            "type": ["access", "allowed" if outcome == "allowed" else "denied"] if outcome != "error"
            else ["access", "error"],
            "outcome": {"allowed": "success", "denied": "failure"}.get(outcome, "unknown"),
            "action": f"http-{(http.get('method') or '').lower()}",
            "reason": event.get("reason"),
            "duration": int(latency_ms * 1_000_000) if latency_ms is not None else None,
            "dataset": "iam_proxy.audit",
            "module": "iam_proxy",
        },
        "http": {"request": {"method": http.get("method"), "id": event.get("request_id")},
                 "response": {"status_code": event.get("status")}},
        "url": {"path": http.get("path"), "query": http.get("query") or None, "domain": http.get("host")},
        "user_agent": {"original": http.get("user_agent")},
        "source": {"ip": client.get("address")},
        "client": {"ip": client.get("peer")},
        "user": {"id": identity.get("sub"), "name": identity.get("username"), "email": identity.get("email"),
                 "roles": identity.get("roles") or None},
        "group": {"name": ",".join(identity.get("groups") or []) or None},
        "rule": {"name": decision.get("path"), "version": decision.get("revision")},
        "observer": {"hostname": labels.get("hostname"), "product": "iam-proxy", "vendor": "iam-proxy",
                     "type": "proxy", "version": labels.get("version", __version__)},
        "service": {"name": (event.get("route") or {}).get("id")},
        "iam_proxy": {
            "route": event.get("route"),
            "decision": decision,
            "identity": {"method": identity.get("method"), "issuer": identity.get("iss"),
                         "provider": identity.get("provider"), "groups": identity.get("groups") or None},
            "upstream": upstream,
        },
    }
    doc = _drop_empty(doc)
    if "input" in event:
        doc.setdefault("iam_proxy", {})["input"] = event["input"]
    return doc
