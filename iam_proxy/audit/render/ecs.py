"""Elastic Common Schema (8.x) field names for the native event.

What ECS has no field for stays under `iam_proxy.*` (custom fields go in their own namespace).
Checked against the published ECS 8.11 field definitions (tests/audit/test_audit_schemas.py):
every field exists with its type, `event.category` / `event.type` are allowed and expected together
(an access decision is category `api` + `web`, type `access` + `allowed`/`denied`/`error`; a refused
credential is category `authentication` + `api`, type `start` + `denied`), and an address that is
not an IP (masked by a privacy rule, say) is only in `*.address`, never in an `ip` field.
"""

from __future__ import annotations

from typing import Any

from ... import __version__
from .common import ip_or_none, split_host

ECS_VERSION = "8.11.0"


def _drop_empty(node: Any) -> Any:
    if isinstance(node, dict):
        out = {k: _drop_empty(v) for k, v in node.items()}
        return {k: v for k, v in out.items() if v not in (None, {}, [], "")}
    return node


def _categories(outcome: str | None, authn_failure: bool) -> tuple[list[str], list[str]]:
    if authn_failure:
        return ["authentication", "api"], ["start", "denied"]
    return ["api", "web"], ["access", {"allowed": "allowed", "denied": "denied"}.get(outcome or "", "error")]


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
    category, types = _categories(outcome, authn_failure)
    domain, port = split_host(http.get("host"))
    doc = {
        "@timestamp": event.get("timestamp"),
        "ecs": {"version": ECS_VERSION},
        "event": {
            "id": event.get("decision_id"),
            "kind": "event",
            "category": category,
            "type": types,
            "outcome": {"allowed": "success", "denied": "failure"}.get(outcome, "unknown"),
            "action": f"http-{(http.get('method') or '').lower()}",
            "reason": event.get("reason"),
            "duration": int(latency_ms * 1_000_000) if latency_ms is not None else None,
            "dataset": "iam_proxy.audit",
            "module": "iam_proxy",
        },
        "http": {"request": {"method": http.get("method"), "id": event.get("request_id")},
                 "response": {"status_code": event.get("status")}},
        "url": {"path": http.get("path"), "query": http.get("query") or None, "domain": domain, "port": port},
        "user_agent": {"original": http.get("user_agent")},
        "source": {"address": client.get("address"), "ip": ip_or_none(client.get("address"))},
        "client": {"address": client.get("peer"), "ip": ip_or_none(client.get("peer"))},
        "user": {"id": identity.get("sub"), "name": identity.get("username"), "email": identity.get("email"),
                 "roles": identity.get("roles") or None},
        "group": {"name": ",".join(identity.get("groups") or []) or None},
        "rule": {"name": decision.get("path"), "version": decision.get("revision")},
        "observer": {"hostname": labels.get("hostname"), "product": "iam-proxy", "vendor": "iam-proxy",
                     "type": "proxy", "version": labels.get("version", __version__)},
        "service": {"name": (event.get("route") or {}).get("id")},
        "iam_proxy": {
            "kind": event.get("kind", "request"),  # request, shadow (replay/shadow.py), signal (signals/)
            "route": event.get("route"),
            "decision": decision,
            "identity": {"method": identity.get("method"), "issuer": identity.get("iss"),
                         "provider": identity.get("provider"), "groups": identity.get("groups") or None},
            "upstream": upstream,
            "facts": event.get("facts"),  # what a refusal showed the client (a token's aud, ...)
        },
    }
    doc = _drop_empty(doc)
    if "input" in event:
        doc.setdefault("iam_proxy", {})["input"] = event["input"]
    return doc
