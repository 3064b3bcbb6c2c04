"""RequestContext: what the pipeline knows about one request, built once from the ASGI scope."""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote

from .errors import BadRequest

if TYPE_CHECKING:
    from .authn.identity import Identity
    from .routes.matcher import CompiledRoute


@dataclass(slots=True)
class RequestContext:
    request_id: str
    decision_id: str
    method: str
    scheme: str
    host: str
    raw_path: str  # as sent, percent-encoded, without the query
    path: str  # decoded
    query_string: str
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    raw_headers: list[tuple[bytes, bytes]]
    peer: str
    http_version: str
    started: float = field(default_factory=time.perf_counter)
    received_at: float = field(default_factory=time.time)
    route: "CompiledRoute | None" = None
    identity: "Identity | None" = None
    # Filled as the pipeline goes; the audit event reads them.
    decision: Any = None
    upstream_status: int | None = None
    upstream_latency_ms: float | None = None
    # The verified client certificate (PEM, leaf first) from our own TLS handshake; an x509
    # authenticator may set it from a trusted front proxy's header once it has verified it.
    client_cert_chain: list[str] = field(default_factory=list)
    # Headers an authenticator adds to the response that goes back to the client (for example a
    # Negotiate mutual-authentication token).
    response_headers: dict[str, str] = field(default_factory=dict)
    # Request headers (lower-case) whose credential an authenticator consumed and that must not reach
    # the upstream: a Basic password checked against LDAP, an API key.
    consumed_headers: set[str] = field(default_factory=set)
    # The access token an authenticator verified (bearer JWT, introspected token, session), sent
    # upstream only on routes with pass_access_token.
    access_token: str | None = None
    # The front proxy that described this request to /.iam/auth (its address), None otherwise.
    via: str | None = None
    # Why a credential of ours gave no identity without being bad (a logged-out session cookie:
    # session_revoked); the 401 says so instead of credential_missing.
    missing_reason: str | None = None

    @property
    def parsed_path(self) -> list[str]:
        return [unquote(p) for p in self.raw_path.split("/")[1:]] if self.raw_path != "/" else []

    @property
    def parsed_query(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for name, value in parse_qsl(self.query_string, keep_blank_values=True):
            out.setdefault(name, []).append(value)
        return out

    @property
    def path_with_query(self) -> str:
        return f"{self.raw_path}?{self.query_string}" if self.query_string else self.raw_path


_SLASHES = re.compile("//+")


def merge_slashes(path: str) -> str:
    """`/api//invoices/1` is `/api/invoices/1`, as nginx (merge_slashes on) and most routers read it:
    the route, the policy and the upstream all see the one form."""
    return _SLASHES.sub("/", path) if "//" in path else path


def _has_dot_segments(path: str) -> bool:
    return any(seg in (".", "..") for seg in path.split("/"))


def context_from_scope(scope: dict[str, Any]) -> RequestContext:
    raw_headers: list[tuple[bytes, bytes]] = scope["headers"]
    headers: dict[str, str] = {}
    for name, value in raw_headers:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text

    raw_path_bytes = scope.get("raw_path") or scope["path"].encode()
    raw_path = raw_path_bytes.decode("latin-1").split("?", 1)[0]
    lowered = raw_path.lower()
    # Encoded separators and NULs let a path mean one thing to us and another to the upstream.
    if "%2f" in lowered or "%5c" in lowered or "%00" in lowered or "\\" in raw_path:
        raise BadRequest("path_not_normalized", message="Encoded separators are not allowed in the path.")
    if not raw_path.startswith("/"):
        raise BadRequest("path_not_normalized", message="The path must be absolute and free of dot segments.")
    raw_path = merge_slashes(raw_path)
    decoded = unquote(raw_path)
    if _has_dot_segments(raw_path) or _has_dot_segments(decoded):
        raise BadRequest("path_not_normalized", message="The path must be absolute and free of dot segments.")

    client = scope.get("client") or ("0.0.0.0", 0)
    request_id = headers.get("x-request-id") or uuid.uuid4().hex
    if len(request_id) > 128 or not request_id.isprintable():
        request_id = uuid.uuid4().hex
    return RequestContext(
        request_id=request_id,
        decision_id=str(uuid.uuid4()),
        method=scope["method"],
        scheme=scope.get("scheme", "http"),
        host=headers.get("host", ""),
        raw_path=raw_path,
        path=decoded,
        query_string=scope.get("query_string", b"").decode("latin-1"),
        headers=headers,
        raw_headers=raw_headers,
        peer=client[0],
        http_version=scope.get("http_version", "1.1"),
        client_cert_chain=list((scope.get("extensions") or {}).get("tls", {}).get("client_cert_chain") or []),
    )
