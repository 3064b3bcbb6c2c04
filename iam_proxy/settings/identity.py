"""Identity providers (OIDC/OAuth issuers) and how their claims map to the Identity."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator

from .base import Model
from .presets import preset_claims


class ClaimMapping(Model):
    """Where each Identity field comes from in a token's claims (dotted paths)."""

    sub: str = "sub"
    username: str | None = "preferred_username"
    email: str | None = "email"
    name: str | None = "name"
    groups: list[str] = ["groups"]
    roles: list[str] = ["roles"]
    scopes: list[str] = ["scope", "scp"]
    tenant: str | None = None
    # Identity.attributes gets these claims verbatim (name -> claim path).
    attributes: dict[str, str] = {}
    # A token carrying any of these claims is refused (`claims_incomplete`): for example Entra ID's
    # `_claim_names.groups`, which says the group list was too long and was left out.
    reject_if_present: list[str] = []


class ClaimPreset(Model):
    """Fills a provider's `claims` for a known IdP (see settings/presets.py and docs/idp/)."""

    name: Literal["keycloak", "entra-id", "okta", "auth0", "ping"]
    client_id: str | None = None  # keycloak: also read resource_access.<client_id>.roles
    namespace: str | None = None  # auth0: the custom-claim namespace, e.g. "https://example.com/"
    token_version: Literal["v1", "v2"] = "v2"  # entra-id: v1 tokens name the user in `upn`
    groups_overage: Literal["deny", "ignore"] = "deny"  # entra-id: refuse, or go on without groups


class OIDCClientSettings(Model):
    """This proxy as an OIDC relying party of the provider (browser sign-in, introspection)."""

    client_id: str
    client_secret: SecretStr | None = None  # None: a public client (PKCE only)
    display_name: str | None = None  # shown on the sign-in chooser


class JWTProvider(Model):
    id: str
    issuer: str
    discovery: bool = False
    jwks_uri: str | None = None
    jwks_file: Path | None = None
    audiences: list[str] = Field(min_length=1)
    algorithms: list[Literal["RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
                             "ES256", "ES384", "ES512", "EdDSA"]] = ["RS256"]
    leeway_seconds: int = Field(default=30, ge=0, le=300)
    require_exp: bool = True
    # A token living longer than this (exp minus iat/nbf, or minus now) is refused: token_lifetime_too_long.
    max_token_lifetime_seconds: int = Field(default=86400, ge=60)
    claims: ClaimMapping = ClaimMapping()
    preset: ClaimPreset | None = None  # fills `claims` (which must then be left out)
    client: OIDCClientSettings | None = None
    jwks_refresh_seconds: float = Field(default=300, gt=0)
    jwks_min_refetch_seconds: float = Field(default=10, ge=0)
    http_timeout_seconds: float = Field(default=5, gt=0, le=60)

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("preset") is not None:
            if "claims" in data:
                raise ValueError("set preset or claims, not both")
            data = {**data, "claims": preset_claims(data["preset"])}
        return data

    @model_validator(mode="after")
    def _one_key_source(self) -> "JWTProvider":
        sources = [self.discovery, self.jwks_uri is not None, self.jwks_file is not None]
        if sum(bool(s) for s in sources) != 1:
            raise ValueError("set exactly one of discovery, jwks_uri, jwks_file")
        return self
