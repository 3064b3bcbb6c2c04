"""Routes: what a request must match, its authenticators, enrichers, policy and upstream."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from .base import Model
from .shadow import ShadowPolicySettings
from .validators import http_url


class RouteMatch(Model):
    hosts: list[str] = []  # exact names or "*.example.com"; empty = any host
    # A glob over the decoded path: "*" is one segment, "**" any number of segments.
    path: str = "/**"
    methods: list[str] = []  # empty = any method

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must start with '/'")
        return value

    @field_validator("methods")
    @classmethod
    def _upper(cls, value: list[str]) -> list[str]:
        return [m.upper() for m in value]


class RoutePolicy(Model):
    # The decision path, as in OPA: "iam/authz/decision" or "envoy/authz/allow".
    path: str = "iam/authz/decision"
    dry_run: bool = False
    # "embedded", "opa-lib", "opa-wasm" or "opa"; unset = policy.engine.
    engine: Literal["embedded", "opa-lib", "opa-wasm", "opa"] | None = None
    # Cache this route's decisions (see policy.cache). Unset: on for the embedded engine, whose
    # revision the proxy controls; true is refused for engine "opa".
    cache: bool | None = None
    # A candidate policy evaluated beside this one, after the response (docs/policies.md, shadow policies).
    shadow: ShadowPolicySettings | None = None

    @field_validator("path")
    @classmethod
    def _slashes(cls, value: str) -> str:
        value = value.strip("/").replace(".", "/")
        if value.startswith("data/"):
            value = value[len("data/"):]
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*", value):
            raise ValueError("must look like 'package/path/rule'")
        return value


class Route(Model):
    id: str
    match: RouteMatch = RouteMatch()
    upstream: str
    authenticators: list[str] = Field(min_length=1)
    enrichers: list[str] = []  # run in order after authentication (see the top-level `enrichers`)
    policy: RoutePolicy = RoutePolicy()
    timeout_seconds: float = Field(default=30, gt=0)
    connect_timeout_seconds: float = Field(default=5, gt=0)
    preserve_host: bool = False
    # Removed from the path sent upstream when the path starts with it as whole segments
    # ("/api" turns "/api/v1" into "/v1", and leaves "/apiv2" alone).
    strip_prefix: str | None = None
    labels: dict[str, str] = {}
    # The client's Authorization header stays at the proxy unless this is true.
    pass_authorization: bool = False
    # Send the verified access token upstream in identity_headers.access_token (oauth2-proxy's
    # pass_access_token): the bearer token, or the browser session's access token.
    pass_access_token: bool = False
    # Method-override headers (X-HTTP-Method-Override, ...) are dropped unless this is true; then the
    # policy decides on the overridden method, and the header is forwarded.
    method_override: bool = False
    # The `aud` of the X-Iam-Assertion sent to this route's upstream (default: the route id).
    assertion_audience: str | None = None

    _http_url = field_validator("upstream")(http_url)

    @field_validator("strip_prefix")
    @classmethod
    def _prefix(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith("/") or "//" in value:
            raise ValueError("must be a path starting with '/'")
        return value.rstrip("/") or None
