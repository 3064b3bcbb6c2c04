"""RequestContext: what the pipeline knows about one request, built once from the ASGI scope."""

from __future__ import annotations

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


def _has_dot_segments(path: str) -> bool:
    return any(seg in (".", "..") for seg in path.split("/"))


def forward_auth_scope(scope: dict[str, Any]) -> dict[str, Any]:
    """The original request described by a forward-auth subrequest, as a scope of its own.

    nginx `auth_request` sends X-Original-URI and X-Original-Method (set them in the location);
    Traefik and Caddy send X-Forwarded-Method, X-Forwarded-Uri, X-Forwarded-Host, X-Forwarded-Proto.
    """
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
    uri = headers.get("x-original-uri") or headers.get("x-forwarded-uri")
    method = headers.get("x-original-method") or headers.get("x-forwarded-method") or "GET"
    if not uri or not uri.startswith("/"):
        raise BadRequest("forward_auth_uri_missing",
                         message="Forward-auth requests need X-Original-URI or X-Forwarded-Uri.")
    path, _, query = uri.partition("?")
    rewritten = [(k, v) for k, v in scope["headers"] if k.lower() != b"host"]
    host = headers.get("x-forwarded-host") or headers.get("host", "")
    rewritten.append((b"host", host.encode("latin-1")))
    return {**scope, "method": method.upper(), "path": unquote(path), "raw_path": path.encode("latin-1"),
            "query_string": query.encode("latin-1"), "headers": rewritten,
            "scheme": headers.get("x-forwarded-proto", scope.get("scheme", "http"))}


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
    decoded = unquote(raw_path)
    if not raw_path.startswith("/") or _has_dot_segments(raw_path) or _has_dot_segments(decoded):
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
