"""Errors that carry their own HTTP status and a stable reason code.

    ProxyError                      status, reason, public message
    ├── ConfigError                 bad config or policy at startup (CLI exit 2); never reaches a client
    ├── BadRequest (400)            path_not_normalized, bad_request
    ├── RouteNotFound (404)         no_route
    ├── RouteAmbiguous (500)        more than one route matched: fail closed
    ├── AuthenticationRequired (401)   no credential a route accepts
    ├── InvalidCredential (401)     credential of a known kind, but bad (token_expired, bad_signature, ...)
    ├── AuthUnavailable (503)       a dependency of authentication is down (JWKS unreachable, ...)
    ├── AccessDenied (403 or policy's http_status)
    ├── PolicyError (403)           undefined or malformed decision, engine failure: fail closed
    │                               (503 for policy_unavailable and policy_timeout: OPA down or slow)
    ├── AuditUnavailable (503)      the audit spool is full (overflow: block) or the audit file unwritable
    ├── UpstreamTimeout (504)
    └── UpstreamUnavailable (502)

Clients see `reason` and the public `message`, never `detail` (which goes to the log only).
"""

from __future__ import annotations

from typing import Any


class ProxyError(Exception):
    status: int = 500
    reason: str = "internal_error"
    message: str = "The request could not be processed."
    # What the client may see beside the reason to act on it (a token's `aud` and the accepted
    # ones); never a credential. Shown in the problem body, the log, the audit event and `explain`.
    facts: dict[str, Any] = {}

    def __init__(self, reason: str | None = None, *, message: str | None = None,
                 detail: str | None = None, status: int | None = None) -> None:
        if reason is not None:
            self.reason = reason
        if message is not None:
            self.message = message
        if status is not None:
            self.status = status
        self.detail = detail
        super().__init__(f"{self.reason}: {detail or self.message}")


class ConfigError(ProxyError):
    reason = "config_error"

    def __init__(self, message: str) -> None:
        super().__init__(message=message, detail=message)

    def __str__(self) -> str:
        return self.message


class BadRequest(ProxyError):
    status, reason, message = 400, "bad_request", "The request is malformed."


class RouteNotFound(ProxyError):
    status, reason, message = 404, "no_route", "No route matches this request."


class RouteAmbiguous(ProxyError):
    status, reason, message = 500, "route_ambiguous", "The request matches more than one route."


class AuthenticationRequired(ProxyError):
    status, reason, message = 401, "credential_missing", "Authentication is required."


class InvalidCredential(ProxyError):
    status, reason, message = 401, "invalid_credential", "The credential is not valid."


class AuthUnavailable(ProxyError):
    status, reason, message = 503, "authn_unavailable", "Authentication is temporarily unavailable."


class AccessDenied(ProxyError):
    status, reason, message = 403, "policy_denied", "Access denied by policy."

    def __init__(self, reasons: list[str], *, status: int = 403, headers: dict[str, str] | None = None,
                 body: str | None = None) -> None:
        super().__init__(status=status)
        self.reasons = reasons
        self.headers = headers or {}
        self.body = body


class PolicyError(ProxyError):
    status, reason, message = 403, "policy_error", "Access denied: the policy decision could not be made."


class UpstreamTimeout(ProxyError):
    status, reason, message = 504, "upstream_timeout", "The upstream did not answer in time."


class AuditUnavailable(ProxyError):
    status, reason, message = 503, "audit_unavailable", "The request cannot be audited right now."


class UpstreamUnavailable(ProxyError):
    status, reason, message = 502, "upstream_unavailable", "The upstream could not be reached."
