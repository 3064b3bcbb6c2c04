"""Forwarding: the identity headers and the signed assertion the upstream receives."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from .base import Model


class AssertionSettings(Model):
    header: str = "X-Iam-Assertion"
    # ES256 (ECDSA P-256) is what every JOSE library verifies. Ed25519 is for upstreams that prefer
    # it (under load it costs about what ES256 does: docs/performance.md); EdDSA is the same
    # signature under RFC 8037's name, for verifiers that do not know RFC 9864's.
    algorithm: Literal["ES256", "Ed25519", "EdDSA"] = "ES256"
    # PEM private key for the algorithm (EC P-256, or Ed25519); an ephemeral key is made when absent
    key_file: Path | None = None
    issuer: str = "iam-proxy"
    ttl_seconds: int = Field(default=60, ge=5, le=3600)
    # 0: one assertion per request (`jti` = its decision id). Above 0: an assertion with the same
    # claims and audience is reused for this long, so it always keeps at least half its lifetime.
    reuse_seconds: int = Field(default=0, ge=0)

    @field_validator("reuse_seconds")
    @classmethod
    def _within_half_the_lifetime(cls, value: int, info: ValidationInfo) -> int:
        ttl = info.data.get("ttl_seconds")
        if ttl is not None and value > ttl // 2:
            raise ValueError(f"at most half of ttl_seconds ({ttl // 2}), so that a reused assertion "
                             "still has time to be checked")
        return value


class IdentityHeaders(Model):
    user: str = "X-Forwarded-User"
    email: str = "X-Forwarded-Email"
    groups: str = "X-Forwarded-Groups"
    preferred_username: str = "X-Forwarded-Preferred-Username"
    # Sent only on routes with pass_access_token: the bearer token (or the session's access token).
    access_token: str = "X-Forwarded-Access-Token"
    # Inbound headers to strip besides the built-in identity families (iam_proxy/header_safety.py):
    # exact names, or "prefix*"; compared case-insensitively with `_` and `.` read as `-`.
    spoofable: list[str] = []
    # Inbound header names containing `_` or `.` are dropped (as nginx does): backends that map headers
    # to variables read them as the `-` name. true keeps them (the spoof list still applies).
    keep_underscored_names: bool = False
    assertion: AssertionSettings = AssertionSettings()

    @field_validator("user", "email", "groups", "preferred_username", "access_token")
    @classmethod
    def _token(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9-]+", value):
            raise ValueError("must be a header name of letters, digits and '-'")
        return value
