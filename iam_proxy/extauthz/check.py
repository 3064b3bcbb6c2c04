"""One external authorization check, free of any wire format: what Envoy asks and what it is told.

    gRPC CheckRequest | HTTP-mode request -> Check -> Decide -> Verdict -> CheckResponse | HTTP answer

The front doors (grpc_service.py, http_service.py) translate wire to `Check` and `Verdict` to wire;
`Decide` is the only thing they call, so they do not know how a decision is made.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Check:
    method: str
    host: str
    path: str  # as the client sent it, with the query string
    headers: list[tuple[str, str]]  # lower-case names, in order (gRPC mode: with Envoy's pseudo-headers)
    client: str  # the original client's address
    via: str | None  # the Envoy that asks (None: the client itself, as for websockets)
    scheme: str = "http"
    protocol: str = "HTTP/1.1"
    body: bytes = b""
    # What Envoy knows beyond the request, in opa-envoy-plugin's input shape (protojson names):
    # contextExtensions, metadataContext, tlsSession, source.principal, ... (gRPC mode only).
    attributes: dict[str, Any] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        return next((value for key, value in self.headers if key == name), None)


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    status: int  # 200 when allowed; the refusal's status otherwise
    decision_id: str
    # allowed: set on the request Envoy sends upstream, and removed from it
    upstream_headers: list[tuple[str, str]] = field(default_factory=list)
    remove_headers: list[str] = field(default_factory=list)
    # for the client: the policy's response_headers_to_add when allowed, the refusal's headers when not
    client_headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""  # the refusal's body
    dynamic_metadata: dict[str, Any] | None = None
    # allowed, for a front door that forwards itself (websockets): every header the proxy would send
    # upstream, the route (id, upstream URL for this request), the identity (as audit events
    # summarise it) and when it expires (epoch seconds)
    forward_headers: list[tuple[str, str]] = field(default_factory=list)
    route: dict[str, str] | None = None
    upstream_url: str | None = None
    identity: dict[str, Any] | None = None
    expires_at: float | None = None


def as_text(raw: bytes) -> str:
    """A header's bytes as a Check holds them; `as_bytes` gives back the same bytes."""
    return raw.decode("utf-8", "surrogateescape")


def as_bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


class Decide(Protocol):
    """Authenticate, decide and audit one check; never raises (a failure is a refusal, audited)."""

    async def __call__(self, check: Check) -> Verdict: ...
