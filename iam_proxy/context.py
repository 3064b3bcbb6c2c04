"""What the pipeline knows about one request.

`RequestDescription` is the request as a front door received it (method, path, headers, peer, TLS
facts), free of any server's objects: the HTTP proxy and forward-auth make it from an ASGI scope, an
ext_authz server would make it from a CheckRequest. `RequestContext` is built once from it and
filled in as the stages go.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote

from .core.errors import BadRequest

if TYPE_CHECKING:
    from .core.identity import Identity
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


@dataclass(frozen=True, slots=True)
class RequestDescription:
    method: str
    scheme: str
    raw_path: bytes  # as sent, percent-encoded; may carry the query
    query_string: bytes
    headers: list[tuple[bytes, bytes]]
    peer: str
    http_version: str = "1.1"
    client_cert_chain: tuple[str, ...] = ()  # PEM, leaf first, verified by our own TLS handshake
    via: str | None = None  # the front proxy that described this request to /.iam/auth

    @classmethod
    def from_scope(cls, scope: dict[str, Any]) -> "RequestDescription":
        tls = (scope.get("extensions") or {}).get("tls", {})
        return cls(method=scope.get("method", ""), scheme=scope.get("scheme", "http"),
                   raw_path=scope.get("raw_path") or scope.get("path", "").encode(),
                   query_string=scope.get("query_string", b""), headers=scope.get("headers", []),
                   peer=(scope.get("client") or ("0.0.0.0", 0))[0],
                   http_version=scope.get("http_version", "1.1"),
                   client_cert_chain=tuple(tls.get("client_cert_chain") or ()), via=scope.get("iam.via"))

    @property
    def path(self) -> str:
        """The path as sent, without the query (for the audit of a request that could not be read)."""
        return self.raw_path.decode("latin-1").split("?", 1)[0]


_SLASHES = re.compile("//+")


def merge_slashes(path: str) -> str:
    """`/api//invoices/1` is `/api/invoices/1`, as nginx (merge_slashes on) and most routers read it:
    the route, the policy and the upstream all see the one form."""
    return _SLASHES.sub("/", path) if "//" in path else path


def _has_dot_segments(path: str) -> bool:
    return any(seg in (".", "..") for seg in path.split("/"))


def random_uuid() -> str:
    """`str(uuid.uuid4())` without building a UUID object (a third of the time, on every request)."""
    octets = bytearray(os.urandom(16))
    octets[6] = octets[6] & 0x0F | 0x40  # version 4
    octets[8] = octets[8] & 0x3F | 0x80  # RFC 4122 variant
    text = octets.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def context_from_scope(scope: dict[str, Any]) -> RequestContext:
    return request_context(RequestDescription.from_scope(scope))


def request_context(request: RequestDescription) -> RequestContext:
    """The context of a request; BadRequest when its path could mean one thing to us and another to
    the upstream."""
    raw_headers = request.headers
    headers: dict[str, str] = {}
    for name, value in raw_headers:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text

    raw_path = request.path
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

    request_id = headers.get("x-request-id") or os.urandom(16).hex()
    if len(request_id) > 128 or not request_id.isprintable():
        request_id = os.urandom(16).hex()
    return RequestContext(
        request_id=request_id,
        decision_id=random_uuid(),
        method=request.method,
        scheme=request.scheme,
        host=headers.get("host", ""),
        raw_path=raw_path,
        path=decoded,
        query_string=request.query_string.decode("latin-1"),
        headers=headers,
        raw_headers=raw_headers,
        peer=request.peer,
        http_version=request.http_version,
        client_cert_chain=list(request.client_cert_chain),
        via=request.via,
    )
