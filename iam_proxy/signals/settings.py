"""The `signals:` section: the transmitters whose Security Event Tokens the proxy acts on."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from . import REFRESHING, REVOKING


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _http_url(value: str | None) -> str | None:
    if value is not None and not re.match(r"^https?://[^/\s]+", value):
        raise ValueError("must be an http:// or https:// URL")
    return value


class TransmitterSettings(_Model):
    id: str
    issuer: str  # every SET's `iss` must be exactly this
    audience: str  # every SET's `aud` must contain this
    # The transmitter's /.well-known/ssf-configuration: gives jwks_uri and the stream endpoints.
    configuration_url: str | None = None
    jwks_uri: str | None = None  # unless configuration_url gives it
    algorithms: list[Literal["RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
                             "ES256", "ES384", "ES512", "EdDSA"]] = ["RS256"]
    delivery: Literal["push", "poll"] = "push"
    # push: the `Authorization` value the transmitter sends with each SET (unset: the signature alone).
    push_authorization: SecretStr | None = None
    # push with manage_stream: the URL the transmitter reaches /.iam/ssf/events at.
    push_endpoint_url: str | None = None
    poll_url: str | None = None  # poll: unless the stream (manage_stream) gives it
    poll_interval_seconds: float = Field(default=2.0, gt=0, le=300)
    poll_max_events: int = Field(default=100, ge=1, le=1000)
    # Sent as `Authorization: Bearer` to the transmitter's poll and management endpoints.
    bearer_token: SecretStr | None = None
    # Create (or reuse) a stream through the SSF management API (configuration_endpoint).
    manage_stream: bool = False
    events_requested: list[str] = sorted(REVOKING | REFRESHING)
    leeway_seconds: int = Field(default=60, ge=0, le=600)
    http_timeout_seconds: float = Field(default=5.0, gt=0, le=60)

    _urls = field_validator("configuration_url", "jwks_uri", "push_endpoint_url", "poll_url")(
        classmethod(lambda cls, value: _http_url(value)))

    @model_validator(mode="after")
    def _consistent(self) -> "TransmitterSettings":
        if self.configuration_url is None and self.jwks_uri is None:
            raise ValueError("jwks_uri: set configuration_url or jwks_uri")
        if self.manage_stream and self.configuration_url is None:
            raise ValueError("manage_stream: needs configuration_url (its configuration_endpoint)")
        if self.delivery == "poll" and self.poll_url is None and not self.manage_stream:
            raise ValueError("poll_url: poll delivery needs poll_url (or manage_stream)")
        if self.delivery == "push" and self.manage_stream and self.push_endpoint_url is None:
            raise ValueError("push_endpoint_url: a managed push stream needs the URL the transmitter pushes to")
        return self


class SignalsSettings(_Model):
    transmitters: list[TransmitterSettings] = Field(min_length=1)
    # A revocation is remembered this long: at least the longest lifetime of a token it refuses.
    revocation_ttl_seconds: int = Field(default=86400, ge=60)
    # SET ids seen (per issuer), to act on each SET once.
    jti_cache_entries: int = Field(default=100_000, ge=100)
    max_set_bytes: int = Field(default=64 * 1024, ge=1024)
    # A journal of revocations: shared by the workers of one host (needed with listeners.workers > 1)
    # and read back at startup, so a restart does not forget them.
    state_file: Path | None = None

    @model_validator(mode="after")
    def _unique(self) -> "SignalsSettings":
        for field in ("id", "issuer"):
            values = [getattr(t, field) for t in self.transmitters]
            for i, value in enumerate(values):
                if value in values[:i]:
                    raise ValueError(f"transmitters[{i}].{field}: duplicate {value!r}")
        return self
