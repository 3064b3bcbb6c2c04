"""`routes[].policy.shadow`: a candidate policy evaluated beside the route's live one (shadow.py)."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class ShadowPolicySettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    dir: Path | None = None  # a policy directory (reloaded when it changes), for the embedded engine
    bundle: Path | None = None  # a bundle file (.tar.gz): a bundle revision, for the embedded engine
    opa_url: str | None = None  # an OPA server serving the candidate
    path: str | None = None  # the candidate's decision path; unset: the route's
    sample_rate: float = Field(default=1.0, ge=0, le=1)  # the share of decisions shadowed
    queue_size: int = Field(default=1000, ge=1)  # decisions waiting for the shadow; more are dropped, counted

    @model_validator(mode="after")
    def _one_source(self) -> "ShadowPolicySettings":
        if sum(x is not None for x in (self.dir, self.bundle, self.opa_url)) != 1:
            raise ValueError("set exactly one of dir, bundle, opa_url")
        if self.opa_url is not None and not re.match(r"^https?://[^/\s]+", self.opa_url):
            raise ValueError("opa_url must be an http:// or https:// URL")
        return self

    @field_validator("path")
    @classmethod
    def _slashes(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip("/").replace(".", "/").removeprefix("data/")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*", value):
            raise ValueError("must look like 'package/path/rule'")
        return value
