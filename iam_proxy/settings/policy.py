"""Policy: the engines (auto, embedded, opa-lib, opa-wasm, OPA), the decision cache, bundles and the decision log."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from ..core.extras import opa_library
from .base import Model
from .validators import http_url


class OpaServerSettings(Model):
    """A remote OPA server, asked over its REST data API (`POST /v1/data/<path>`)."""

    url: str  # base URL, e.g. http://127.0.0.1:8181
    timeout_seconds: float = Field(default=0.25, gt=0, le=30)  # per decision, queueing included
    max_concurrency: int = Field(default=64, ge=1)  # decisions in flight; more wait (within the timeout)
    max_connections: int = Field(default=32, ge=1)  # pooled keep-alive connections
    token: SecretStr | None = None  # sent as `Authorization: Bearer` (opa run --authentication=token)
    health_interval_seconds: float = Field(default=2.0, gt=0)

    _http_url = field_validator("url")(http_url)


class DecisionCacheSettings(Model):
    """Sizes the decision cache (on by default for routes on the embedded engine; `policy.cache`)."""

    max_entries: int = Field(default=10_000, ge=1)
    ttl_seconds: float = Field(default=10.0, gt=0)
    # Request headers left out of the cache key (they change per request but never decide).
    volatile_headers: list[str] = ["x-request-id", "traceparent", "tracestate", "x-b3-traceid",
                                   "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled", "x-amzn-trace-id"]

    @field_validator("volatile_headers")
    @classmethod
    def _lower(cls, value: list[str]) -> list[str]:
        return [h.lower() for h in value]


class BundleVerificationSettings(Model):
    """Check `.signatures.json` as OPA does; an unsigned or tampered bundle is refused."""

    algorithm: Literal["RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
                       "ES256", "ES384", "ES512", "HS256", "HS384", "HS512"] = "RS256"
    public_key_file: Path | None = None  # PEM public key or certificate (RS*, PS*, ES*)
    secret: SecretStr | None = None  # shared secret (HS*)
    key_id: str = "default"  # must match the signature's keyid (`opa build --signing-key`'s default)
    scope: str | None = None  # must equal the signature's scope when set
    exclude_files: list[str] = []  # glob patterns of files that need not be signed

    @model_validator(mode="after")
    def _one_key(self) -> "BundleVerificationSettings":
        if self.algorithm.startswith("HS"):
            if self.secret is None or self.public_key_file is not None:
                raise ValueError(f"{self.algorithm} needs secret (and no public_key_file)")
        elif self.public_key_file is None or self.secret is not None:
            raise ValueError(f"{self.algorithm} needs public_key_file (and no secret)")
        return self


class BundleSettings(Model):
    """An OPA bundle (.tar.gz with .manifest, data.json, *.rego) from a file or an HTTP URL."""

    file: Path | None = None
    url: str | None = None
    poll_interval_seconds: float = Field(default=30.0, gt=0)  # URL polling (with If-None-Match)
    timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    max_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    verification: BundleVerificationSettings | None = None

    @model_validator(mode="after")
    def _one_source(self) -> "BundleSettings":
        if (self.file is None) == (self.url is None):
            raise ValueError("set exactly one of file, url")
        if self.url is not None and not re.match(r"^https?://[^/\s]+", self.url):
            raise ValueError("url must be an http:// or https:// URL")
        return self


class DecisionLogSettings(Model):
    """OPA-compatible decision-log events (EventV1), one JSON object per line."""

    path: Path


class PolicySettings(Model):
    engine: Literal["auto", "embedded", "opa-lib", "opa-wasm", "opa"] = "auto"
    dir: Path = Path("policies")
    bundle: BundleSettings | None = None  # replaces dir as the embedded engine's source
    reload_interval_seconds: float = Field(default=1.0, ge=0)  # 0 = no reload
    opa: OpaServerSettings | None = None
    cache: DecisionCacheSettings = DecisionCacheSettings()
    decision_log: DecisionLogSettings | None = None

    @model_validator(mode="after")
    def _one_source(self) -> "PolicySettings":
        if self.bundle is not None and "dir" in self.model_fields_set:
            raise ValueError("set dir or bundle, not both")
        return self

    @property
    def default_engine(self) -> str:
        """`engine` with `auto` resolved: OPA's own evaluator where its library is built, else rego-cpp."""
        if self.engine != "auto":
            return self.engine
        return "opa-lib" if opa_library() is not None else "embedded"
