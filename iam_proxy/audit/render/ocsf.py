"""OCSF 1.1 events: Authentication (class 3002) when a credential was refused, API Activity (6003)
for everything else. Severity: Informational when allowed, Low when policy denied, Medium for a
refused credential, High when the proxy or a dependency failed.

The documents validate against the published OCSF 1.1.0 schema (tests/audit/test_audit_schemas.py):
no JSON nulls (an unknown value is left out), only the attributes each class defines, and what the
schema cannot say (an HTTP method outside its list, the route, the decision) goes under `unmapped`.
A caller that was never identified is the user "unknown" (type Unknown): both classes require a user.
"""

from __future__ import annotations

import re
from typing import Any

from ... import __version__
from .common import epoch_ms, ip_or_none, split_host

OCSF_VERSION = "1.1.0"
API_ACTIVITY, AUTHENTICATION = 6003, 3002
CATEGORY = {API_ACTIVITY: 6, AUTHENTICATION: 3}  # Application Activity; Identity & Access Management
API_ACTIVITY_BY_METHOD = {"POST": 1, "GET": 2, "HEAD": 2, "OPTIONS": 2, "PUT": 3, "PATCH": 3, "DELETE": 4}
HTTP_METHODS = frozenset({"OPTIONS", "GET", "HEAD", "POST", "PUT", "DELETE", "TRACE", "CONNECT"})  # OCSF 1.1
SEVERITY = {"informational": 1, "low": 2, "medium": 3, "high": 4}
# auth_protocol_id: 2 Kerberos, 4 OpenID, 5 SAML, 6 OAuth 2.0, 99 Other
AUTH_PROTOCOL = {"jwt": 6, "introspection": 6, "oidc": 4, "saml": 5, "kerberos": 2, "ldap": 99, "x509": 99,
                 "apikey": 99}
UNKNOWN_USER = {"name": "unknown", "type_id": 0, "type": "Unknown"}
_EMAIL = re.compile(r"^[a-zA-Z0-9_.+-]+@[a-zA-Z0-9-]+\.[a-zA-Z0-9-.]+$")  # OCSF 1.1 email_t


def _email(identity: dict[str, Any]) -> str | None:
    email = identity.get("email")
    return email if email and _EMAIL.match(email) else None


def _prune(node: Any) -> Any:
    """`node` without None values (OCSF has no nulls: an unknown attribute is absent)."""
    if isinstance(node, dict):
        return {k: _prune(v) for k, v in node.items() if v is not None}
    if isinstance(node, list):
        return [_prune(v) for v in node if v is not None]
    return node


def _endpoint(address: str | None) -> dict[str, Any]:
    """An address that is not an IP (masked by a privacy rule, say) is kept as the endpoint's name."""
    ip = ip_or_none(address)
    return {"ip": ip} if ip else {"name": address or "unknown"}


def _user(identity: dict[str, Any]) -> dict[str, Any]:
    if not identity:
        return UNKNOWN_USER
    user = {"uid": identity.get("sub"), "name": identity.get("username"), "email_addr": _email(identity)}
    if identity.get("groups"):
        user["groups"] = [{"name": g} for g in identity["groups"]]
    return user if user["uid"] or user["name"] else {**UNKNOWN_USER, "email_addr": user["email_addr"]}


def render(event: dict[str, Any]) -> dict[str, Any]:
    identity = event.get("identity") or {}
    http = event.get("http") or {}
    route = event.get("route") or {}
    outcome, status, method = event.get("outcome"), event.get("status"), http.get("method") or ""
    if status == 401:
        class_uid, activity_id, activity_name, severity = AUTHENTICATION, 1, "Logon", "medium"
    else:
        class_uid = API_ACTIVITY
        activity_id = API_ACTIVITY_BY_METHOD.get(method, 99)
        activity_name = {1: "Create", 2: "Read", 3: "Update", 4: "Delete"}.get(activity_id, "Other")
        severity = {"allowed": "informational", "denied": "low"}.get(outcome or "", "high")
    success = outcome == "allowed"
    hostname, port = split_host(http.get("host"))
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
        "time": epoch_ms(event.get("timestamp")),
        "message": f"{method} {http.get('path')} {outcome} ({event.get('reason')})",
        "metadata": {
            "version": OCSF_VERSION,
            "uid": event.get("decision_id"),
            "correlation_uid": event.get("request_id") or None,
            "product": {"name": "iam-proxy", "vendor_name": "iam-proxy", "version": __version__},
            "log_name": "audit",
        },
        "src_endpoint": _endpoint((event.get("client") or {}).get("address")),
        "http_request": {"http_method": method if method in HTTP_METHODS else None,
                         "user_agent": http.get("user_agent"),
                         "url": {"path": http.get("path"), "query_string": http.get("query") or None,
                                 "hostname": hostname, "port": port}},
        "unmapped": {"route": event.get("route"), "decision": event.get("decision"),
                     "upstream": event.get("upstream"), "latency_ms": event.get("latency_ms"),
                     "response": event.get("response"),
                     "http_method": method if method not in HTTP_METHODS else None,
                     "host": http.get("host") if hostname is None else None,
                     "email": identity.get("email") if identity.get("email") != _email(identity) else None,
                     "disposition": "Allowed" if success else "Blocked"},
    }
    if class_uid == AUTHENTICATION:
        doc["user"] = _user(identity)
        doc["service"] = {"name": route.get("id") or "iam-proxy"}
        doc["auth_protocol_id"] = AUTH_PROTOCOL.get(identity.get("method"), 0)
        doc["auth_protocol"] = identity.get("method")
    else:
        doc["actor"] = {"user": _user(identity)}
        doc["api"] = {"operation": method or "unknown",
                      "request": {"uid": event.get("request_id") or event.get("decision_id")},
                      "response": {"code": status}}
    return _prune(doc)
