"""Authenticators: one settings model per credential kind, chosen by `type`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import Field, SecretStr, field_validator, model_validator

from ..core.extras import require_module
from .base import Model
from .directory import LdapAuthenticatorSettings
from .saml import SAMLAuthenticatorSettings
from .x509 import X509AuthenticatorSettings


class JWTAuthenticatorSettings(Model):
    type: Literal["jwt"]
    providers: list[str] = Field(min_length=1)
    header: str = "authorization"
    # Token digest -> verified identity, bounded by the token's own exp.
    cache_entries: int = Field(default=10_000, ge=0)


class AnonymousAuthenticatorSettings(Model):
    type: Literal["anonymous"]
    subject: str = "anonymous"


class KerberosAuthenticatorSettings(Model):
    type: Literal["kerberos"]
    keytab: Path
    # The acceptor principal, e.g. HTTP/proxy.example.org@EXAMPLE.ORG; None = any key in the keytab.
    service_principal: str | None = None
    realms: list[str] = []  # client realms accepted; empty = any realm the KDC vouches for
    realm_tenants: dict[str, str] = {}  # realm -> Identity.tenant; other realms map to themselves
    strip_realm: bool = True  # Identity.username without "@REALM"
    max_token_bytes: int = Field(default=64 * 1024, ge=1024, le=1024 * 1024)

    @field_validator("type")
    @classmethod
    def _gssapi_installed(cls, value: str) -> str:
        require_module("gssapi", "kerberos")
        return value


class ApiKeyAuthenticatorSettings(Model):
    """API keys from a key file managed by `iam-proxy apikey`; only HMAC-SHA256(pepper, key) is stored."""

    type: Literal["apikey"]
    file: Path
    pepper: SecretStr = Field(min_length=16)  # e.g. "${IAM_PROXY_APIKEY_PEPPER}"
    header: str = "X-API-Key"
    # With a scheme, the header value must be "<scheme> <key>" (e.g. header Authorization, scheme
    # ApiKey); a value with another scheme is left to the route's other authenticators.
    scheme: str | None = None
    reload_interval_seconds: float = Field(default=2.0, ge=0)  # key file re-read when it changes; 0 = never

    @model_validator(mode="after")
    def _scheme_on_authorization(self) -> "ApiKeyAuthenticatorSettings":
        if self.header.lower() == "authorization" and not self.scheme:
            raise ValueError("header Authorization needs a scheme (e.g. ApiKey), or Bearer and Basic "
                             "credentials would be read as API keys")
        return self


class OIDCSessionAuthenticatorSettings(Model):
    """Browser sign-in (authorization code + PKCE) and the session cookie it leaves behind."""

    type: Literal["oidc_session"]
    providers: list[str] = Field(min_length=1)  # more than one: the user picks on /.iam/login
    scopes: list[str] = ["openid", "profile", "email"]
    # Where the IdP may send the browser after logout (absolute URLs); empty: /.iam/signed-out.
    post_logout_redirect_uris: list[str] = []
    refresh_after_seconds: float = Field(default=300, gt=0)  # re-read identity from the IdP this often
    refresh_before_expiry_seconds: float = Field(default=30, ge=0)
    login_timeout_seconds: int = Field(default=600, ge=30, le=3600)  # state/nonce lifetime


class IntrospectionAuthenticatorSettings(Model):
    """Opaque bearer tokens checked at the provider's RFC 7662 endpoint (client from provider.client)."""

    type: Literal["introspection"]
    provider: str
    endpoint: str | None = None  # default: the discovery document's introspection_endpoint
    auth_method: Literal["client_secret_basic", "client_secret_post"] = "client_secret_basic"
    header: str = "authorization"
    audiences: list[str] = []  # when set, `aud` must name one of them
    client_ids: list[str] = []  # when set, `client_id` must be one of them
    token_types: list[str] = ["bearer", "access_token"]  # `token_type`, when present, must be one
    cache_ttl_seconds: float = Field(default=60, ge=0, le=3600)  # never beyond the token's exp
    cache_entries: int = Field(default=10_000, ge=0)
    timeout_seconds: float = Field(default=3, gt=0, le=30)


AuthenticatorSettings = Annotated[
    Union[JWTAuthenticatorSettings, AnonymousAuthenticatorSettings, X509AuthenticatorSettings,
          KerberosAuthenticatorSettings, LdapAuthenticatorSettings, ApiKeyAuthenticatorSettings,
          OIDCSessionAuthenticatorSettings, IntrospectionAuthenticatorSettings, SAMLAuthenticatorSettings],
    Field(discriminator="type"),
]
