"""OCSF 1.1 events: Authentication (class 3002) when a credential was refused, API Activity (6003)
for everything else. Severity: Informational when allowed, Low when policy denied, Medium for a
refused credential, High when the proxy or a dependency failed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ... import __version__

OCSF_VERSION = "1.1.0"
API_ACTIVITY, AUTHENTICATION = 6003, 3002
CATEGORY = {API_ACTIVITY: 6, AUTHENTICATION: 3}  # Application Activity; Identity & Access Management
API_ACTIVITY_BY_METHOD = {"POST": 1, "GET": 2, "HEAD": 2, "OPTIONS": 2, "PUT": 3, "PATCH": 3, "DELETE": 4}
SEVERITY = {"informational": 1, "low": 2, "medium": 3, "high": 4}


def _epoch_ms(timestamp: str | None) -> int | None:
    if not timestamp:
        return None
    return int(datetime.fromisoformat(timestamp).timestamp() * 1000)


def render(event: dict[str, Any]) -> dict[str, Any]:
    identity = event.get("identity") or {}
    http = event.get("http") or {}
    decision = event.get("decision") or {}
    client = event.get("client") or {}
    outcome = event.get("outcome")
    status = event.get("status")
    if status == 401:
        class_uid, activity_id, activity_name = AUTHENTICATION, 1, "Logon"
        severity = "medium"
    else:
        class_uid = API_ACTIVITY
        activity_id = API_ACTIVITY_BY_METHOD.get(http.get("method") or "", 99)
        activity_name = {1: "Create", 2: "Read", 3: "Update", 4: "Delete"}.get(activity_id, "Other")
        severity = {"allowed": "informational", "denied": "low"}.get(outcome or "", "high")
    success = outcome == "allowed"
    user = None
    if identity:
        user = {"uid": identity.get("sub"), "name": identity.get("username"), "email_addr": identity.get("email")}
        if identity.get("groups"):
            user["groups"] = [{"name": g} for g in identity["groups"]]
    doc: dict[str, Any] = {
        "class_uid": class_uid,
        "category_uid": CATEGORY[class_uid],
        "activity_id": activity_id,
        "activity_name": activity_name,
        "type_uid": class_uid * 100 + activity_id,
        "severity_id": SEVERITY[severity],
        "severity": severity.capitalize(),
        "status_id": 1 if success else 2,
        "status": "Success" if success else "Failure",
        "status_code": str(status),
        "status_detail": event.get("reason"),
        "time": _epoch_ms(event.get("timestamp")),
        "message": f"{http.get('method')} {http.get('path')} {outcome} ({event.get('reason')})",
        "metadata": {
            "version": OCSF_VERSION,
            "uid": event.get("decision_id"),
            "correlation_uid": event.get("request_id"),
            "product": {"name": "iam-proxy", "vendor_name": "iam-proxy", "version": __version__},
            "log_name": "audit",
        },
        "src_endpoint": {"ip": client.get("address")},
        "http_request": {"http_method": http.get("method"), "user_agent": http.get("user_agent"),
                         "url": {"path": http.get("path"), "query_string": http.get("query") or None,
                                 "hostname": http.get("host")}},
        "http_response": {"code": status},
        "unmapped": {"route": event.get("route"), "decision": decision,
                     "upstream": event.get("upstream"), "latency_ms": event.get("latency_ms")},
    }
    if class_uid == AUTHENTICATION:
        doc["user"] = user or {"name": None}
        doc["auth_protocol"] = identity.get("method") if identity else None
        doc["is_mfa"] = None
    else:
        doc["actor"] = {"user": user} if user else {}
        doc["api"] = {"operation": http.get("method"), "request": {"uid": event.get("request_id")},
                      "response": {"code": status}}
        doc["disposition_id"] = 1 if success else 2  # Allowed, Blocked
    return {k: v for k, v in doc.items() if v is not None}
